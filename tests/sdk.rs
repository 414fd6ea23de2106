//! Apps written on the guest SDK, through the real binary: the router and
//! its answers, bodies streamed both ways, outgoing calls, `init` refusing
//! to start without its setting, and SDK and plain `wstd` apps swapping on
//! one host.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

use support::{BIN, Host, get, send, write_version};

/// A one-shot-per-connection HTTP server on 127.0.0.1 that answers `pong`.
fn pong_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(5) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\npong\n",
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_params_errors_and_streamed_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let port = pong_server();
    let allow = format!("127.0.0.1:{port}");
    let host = Host::start(&app, &["--no-watch", "--allow-http", &allow]);
    let addr = &host.addr;

    let root = send(addr, "GET", "/", vec![]).await.unwrap();
    assert_eq!(root.status, 200);
    assert_eq!(&root.body[..], b"api v1\n");
    assert_eq!(root.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(root.headers["content-length"], "7");

    assert_eq!(get(addr, "/users/a%20b").await.unwrap().body, "user a b\n");
    assert_eq!(
        get(addr, "/files/docs/guide.txt").await.unwrap().body,
        "file docs/guide.txt\n"
    );
    assert_eq!(get(addr, "/nowhere").await.unwrap().status, 404);
    let wrong_method = send(addr, "DELETE", "/users/1", vec![]).await.unwrap();
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "GET");
    // HEAD is answered by the GET route, without a body.
    let head = send(addr, "HEAD", "/", vec![]).await.unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));

    // 4 MiB streamed in and straight back out.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let echo = send(addr, "POST", "/echo", big.clone()).await.unwrap();
    assert_eq!(echo.status, 200);
    assert!(echo.body == big, "the echoed body differs");
    let counted = send(addr, "POST", "/count", big).await.unwrap();
    let text = String::from_utf8_lossy(&counted.body).into_owned();
    assert!(text.starts_with("4194304 bytes in "), "{text}");
    let pieces: usize = text.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(pieces > 1, "the body was read in one piece: {text}");

    let streamed = send(addr, "GET", "/stream?chunks=500", vec![])
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&streamed.body).into_owned();
    assert_eq!(body.lines().count(), 500);
    assert_eq!(body.lines().last(), Some("line 499"));
    assert!(streamed.headers.get("content-length").is_none());

    let upstream = get(addr, &format!("/upstream?url=http://{allow}/ping"))
        .await
        .unwrap();
    assert_eq!(upstream.body, "upstream said: pong\n");
    assert_eq!(get(addr, "/upstream").await.unwrap().status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_plain_wstd_apps_swap_on_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = dir.path().join("hello.wasm");
    let wstd = dir.path().join("faulty.wasm");
    write_version(&sdk, "hello", "v1");
    write_version(&wstd, "faulty", "w1");
    let host = Host::start(&sdk, &["--no-watch"]);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    host.reload_ok(&wstd);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty w1\n");
    host.reload_ok(&sdk);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
}

#[test]
fn init_without_its_setting_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("lifecycle.wasm");
    write_version(&app, "lifecycle", "v1");
    let out = Command::new(BIN)
        .arg("serve")
        .arg(&app)
        .args(["--listen", "127.0.0.1:0", "--no-watch", "--no-cache"])
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .env_remove("GREETING")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the setting GREETING is missing in v1: serve with --env GREETING=..."),
        "{stderr}"
    );
}
