//! The control plane under odd files and hostile clients, through the real
//! binary: a FIFO, /dev/zero and an oversized file named in a reload, a
//! control line of megabytes, a silent client, a silent host, running out
//! of file descriptors, an impostor control socket, a default socket
//! directory made by another user, and a rollback that a bare reload or
//! SIGHUP must not undo. Each asserts that the host keeps serving.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Host, free_addr, get, write_version};

/// The uid of `nobody`, which owns the impostor's files.
const OTHER_UID: u32 = 65534;

/// Runs `wasm-host ARGS…` and kills it if it has not exited within
/// `limit`; returns its output and how long it ran.
fn run_within(args: &[&str], env: &[(&str, &Path)], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wasm-host");
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "wasm-host {args:?} still running after {limit:?}; killed.\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    (out, started.elapsed())
}

/// `wasm-host ARGS… --control SOCKET` against `host`, bounded.
fn ctl_within(host: &Host, args: &[&str], limit: Duration) -> (Output, Duration) {
    let control = host.control.to_str().expect("utf-8 path");
    let mut all = args.to_vec();
    all.extend(["--control", control]);
    run_within(&all, &[], limit)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that status, an HTTP request and (if given) /healthz all
/// answer promptly.
async fn still_serving(host: &Host, admin: Option<&str>) {
    let (out, took) = ctl_within(host, &["status", "--json"], Duration::from_secs(15));
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    assert!(took < Duration::from_secs(5), "status took {took:?}");
    let answer = tokio::time::timeout(Duration::from_secs(5), get(&host.addr, "/"))
        .await
        .expect("GET / within 5s")
        .expect("GET /");
    assert_eq!(answer.status, 200, "{answer:?}");
    if let Some(admin) = admin {
        let health = tokio::time::timeout(Duration::from_secs(5), get(admin, "/healthz"))
            .await
            .expect("/healthz within 5s")
            .expect("/healthz");
        assert_eq!(health.status, 200, "{health:?}");
    }
}

/// Reads the counter of `reason` in `wasm_host_control_refused_total`.
async fn refused_count(admin: &str, reason: &str) -> u64 {
    let metrics = get(admin, "/metrics").await.expect("/metrics");
    let needle = format!("wasm_host_control_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {needle} in /metrics:\n{}", metrics.body))
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().expect("utf-8 path")).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

// Item 4: odd files named in a reload.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_fifo_is_refused_and_the_host_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.wasm");
    write_version(&v1, "hello", "v1");
    let admin = free_addr();
    let host = Host::start(&v1, &["--no-watch", "--admin", &admin]);
    let fifo = dir.path().join("app.wasm");
    mkfifo(&fifo);

    let (out, took) = ctl_within(
        &host,
        &["reload", fifo.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "a FIFO was reloaded: {out:?}");
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(5),
        "refusing a FIFO took {took:?}"
    );
    still_serving(&host, Some(&admin)).await;
    assert_eq!(refused_count(&admin, "component_not_regular_file").await, 1);
    let answer = get(&host.addr, "/").await.unwrap();
    assert_eq!(answer.body.trim(), "hello from v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_dev_zero_or_an_oversized_file_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.wasm");
    write_version(&v1, "hello", "v1");
    let cap = std::fs::metadata(&v1).unwrap().len() + 4096;
    let admin = free_addr();
    let host = Host::start(
        &v1,
        &[
            "--no-watch",
            "--admin",
            &admin,
            "--max-component-size",
            &cap.to_string(),
        ],
    );

    let (out, took) = ctl_within(&host, &["reload", "/dev/zero"], Duration::from_secs(20));
    assert!(!out.status.success(), "/dev/zero was reloaded: {out:?}");
    assert!(
        stderr(&out).contains("character device, not a regular file"),
        "{}",
        stderr(&out)
    );
    assert!(
        took < Duration::from_secs(5),
        "refusing /dev/zero took {took:?}"
    );

    // A sparse file: large, but costs no disk.
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(8 << 30)
        .unwrap();
    let (out, took) = ctl_within(
        &host,
        &["reload", huge.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "an 8 GiB file was reloaded: {out:?}");
    assert!(
        stderr(&out).contains("--max-component-size"),
        "{}",
        stderr(&out)
    );
    assert!(
        took < Duration::from_secs(5),
        "refusing 8 GiB took {took:?}"
    );

    still_serving(&host, Some(&admin)).await;
    assert_eq!(refused_count(&admin, "component_not_regular_file").await, 1);
    assert_eq!(refused_count(&admin, "component_too_large").await, 1);
    let status = host.status_json();
    assert_eq!(status["apps"][0]["versions"][0]["generation"], 1);
    assert_eq!(status["apps"][0]["reloads_refused"], 2);
}

// Item 4: hostile control clients, and a silent host.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_control_line_is_refused_and_the_host_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.wasm");
    write_version(&v1, "hello", "v1");
    let admin = free_addr();
    let host = Host::start(&v1, &["--no-watch", "--admin", &admin]);

    let stream = UnixStream::connect(&host.control).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    // 2 MB with no newline; the host stops reading at its cap, so this
    // write may fail once it has answered and closed.
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..32 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .expect("a reply to a 2 MB line within 15s");
    assert!(
        reply.contains("longer than 1048576 bytes"),
        "reply: {reply:?}"
    );
    drop(stream);
    let _ = flood.join();

    // A client that connects and says nothing is answered and let go.
    let silent = UnixStream::connect(&host.control).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut reply = String::new();
    BufReader::new(&silent)
        .read_line(&mut reply)
        .expect("the host answers a silent client");
    assert!(reply.contains("did not arrive"), "reply: {reply:?}");
    assert!(started.elapsed() < Duration::from_secs(15));

    still_serving(&host, Some(&admin)).await;
    assert_eq!(refused_count(&admin, "control_line_too_long").await, 1);
    assert_eq!(refused_count(&admin, "control_client_slow").await, 1);
}

#[test]
fn status_gives_up_on_a_host_that_never_replies() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stuck.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts and reads, never replies.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let socket = socket.to_str().unwrap();
    let (out, took) = run_within(
        &["status", "--control", socket, "--timeout", "1s"],
        &[],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no reply"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Without --timeout, status still gives up on its own.
    let (out, took) = run_within(
        &["status", "--control", socket],
        &[],
        Duration::from_secs(40),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("within 10s"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.wasm");
    write_version(&v1, "hello", "v1");
    let host = Host::start(&v1, &["--no-watch"]);
    let pid = host.status_json()["host"]["pid"].as_u64().unwrap() as i32;
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;

    // Leave the host a few descriptors, then use them up with silent
    // control clients: the next accepts fail with EMFILE.
    let mut was = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut was) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let set_limit = |soft: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: was.rlim_max,
        };
        // SAFETY: valid pointers; the test owns the host.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set_limit(open + 3);
    let clients: Vec<UnixStream> = (0..20)
        .filter_map(|_| UnixStream::connect(&host.control).ok())
        .collect();
    assert!(!clients.is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let warnings = host.log_lines(&["control socket accept failed"]).len();
    set_limit(was.rlim_cur);
    drop(clients);
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} accept warnings in 3s (expected a rate-limited few)"
    );
    still_serving(&host, None).await;
}

// Item 5: an impostor at the control socket's path.

/// A fake host on `socket` that answers every request with a status of
/// its own making.
fn impostor(socket: &Path) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = stream.write_all(
                br#"{"reply":"status","host":{"pid":1,"rss_bytes":0},"apps":[{"app":"IMPOSTOR","path":"/x","uptime_s":1,"reloads_ok":0,"reloads_unchanged":0,"reloads_refused":0,"canary_percent":null,"versions":[]}]}
"#,
            );
        }
    });
}

#[test]
fn status_refuses_a_control_socket_owned_by_another_user() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    impostor(&socket);
    std::os::unix::fs::chown(&socket, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let (out, _) = run_within(
        &["status", "--control", socket.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "trusted the impostor: {stdout}");
    assert!(!stdout.contains("IMPOSTOR"), "{stdout}");
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_default_socket_directory_must_be_private_and_ours() {
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let private = tmp.path().join(format!("wasm-host-{uid}"));
    std::fs::create_dir(&private).unwrap();
    impostor(&private.join("control.sock"));
    std::os::unix::fs::chown(&private, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    std::os::unix::fs::chown(private.join("control.sock"), Some(OTHER_UID), None).unwrap();
    let component = tmp.path().join("v1.wasm");
    write_version(&component, "hello", "v1");
    let data = tmp.path().join("data");
    let env = [("TMPDIR", tmp.path())];
    let serve_args = |component: &Path| {
        vec![
            "serve".to_string(),
            component.to_str().unwrap().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--no-cache".into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
            "--log-dir".into(),
            data.join("logs").to_str().unwrap().into(),
        ]
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = Command::new(BIN);
        command
            .args(&args)
            .env_remove("XDG_RUNTIME_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("{args:?} did not exit: {}", stderr(&out));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };

    // Owned by another user: serve refuses to start there, status refuses
    // to talk to what sits inside.
    let out = run(&serve_args(&component));
    assert!(
        !out.status.success(),
        "serve started in another user's directory"
    );
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );
    let out = run(&["status".to_string()]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("IMPOSTOR"));
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );

    // Ours, but open to others: refused too.
    std::fs::remove_file(private.join("control.sock")).unwrap();
    std::os::unix::fs::chown(&private, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = run(&serve_args(&component));
    assert!(
        !out.status.success(),
        "serve started in a world-writable directory"
    );
    assert!(
        stderr(&out).contains("open to other users"),
        "{}",
        stderr(&out)
    );
}

// Item 7: a rollback moves what the app reloads from.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_not_undone_by_a_bare_reload_or_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.wasm");
    let v2 = dir.path().join("v2.wasm");
    write_version(&v1, "hello", "v1");
    write_version(&v2, "hello", "v2");
    let host = Host::start(&v1, &["--no-watch"]);
    host.reload_ok(&v2);
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body.trim(),
        "hello from v2"
    );
    let said = host.ctl_ok(&["rollback"]);
    assert!(said.contains("generation 3 is live"), "{said}");

    let status = host.status_json();
    let app = &status["apps"][0];
    assert_eq!(app["path"], v1.to_str().unwrap(), "{status}");
    assert_eq!(app["versions"][0]["generation"], 3);
    assert_eq!(app["versions"][0]["path"], v1.to_str().unwrap(), "{status}");

    // A bare reload reads v1 again: nothing changes.
    let said = host.ctl_ok(&["reload"]);
    assert!(said.contains("unchanged"), "{said}");
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body.trim(),
        "hello from v1"
    );

    // SIGHUP likewise.
    host.signal(libc::SIGHUP);
    host.wait_log("SIGHUP: reloading", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.status_json()["apps"][0]["reloads_unchanged"] != 2 {
        assert!(Instant::now() < deadline, "{}", host.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = host.status_json();
    assert_eq!(
        status["apps"][0]["versions"][0]["generation"], 3,
        "{status}"
    );
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body.trim(),
        "hello from v1"
    );
}
