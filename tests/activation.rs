//! Socket activation through the real binary: the host serves on a
//! listening socket passed in as fd 3 (systemd's LISTEN_FDS protocol), and
//! a second host process takes the same socket over after the first one
//! exits, answering a connection that waited in the backlog meanwhile.

mod support;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{BIN, get, write_version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts `wasm-host serve app` with `socket` passed as fd 3, the way
/// systemd does: LISTEN_FDS=1 and LISTEN_PID naming the host itself (the
/// shell's pid, which `exec` keeps).
fn activated(app: &std::path::Path, socket: &TcpListener, dir: &std::path::Path, n: u32) -> Child {
    let fd = socket.as_raw_fd();
    let script = format!(
        "LISTEN_FDS=1 LISTEN_PID=$$ exec '{BIN}' serve '{}' --no-watch --control '{}' --cache-dir '{}' --log-dir '{}'",
        app.display(),
        dir.join(format!("control-{n}.sock")).display(),
        dir.join("cache").display(),
        dir.join("logs").display()
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .env("WASM_HOST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: dup2 is async-signal-safe; it runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().expect("spawn the activated host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_socket_is_served_and_survives_a_host_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    // The test plays systemd: it owns the socket for the whole test.
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();

    let mut first = activated(&app, &socket, dir.path(), 1);
    let answer =
        support::wait_for_body(&addr, "/", "hello from v1", Duration::from_secs(120)).await;
    assert_eq!(answer.status, 200);

    // Stop the first host; the socket stays open, held by "systemd".
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let status = first.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // A client connects while no host runs: it waits in the backlog.
    write_version(&app, "hello", "v2");
    let mut waiting = tokio::net::TcpStream::connect(&addr).await.unwrap();
    waiting
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();

    let mut second = activated(&app, &socket, dir.path(), 2);
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(120), waiting.read_to_string(&mut text))
        .await
        .expect("the waiting request is answered")
        .unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello from v2\n"), "{text}");
    assert_eq!(get(&addr, "/").await.unwrap().body, "hello from v2\n");

    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
}
