//! Serving through the real binary: both protocols, guest failures (trap,
//! endless loop, out of memory), guest output, outgoing HTTP policy, the
//! control socket, flag errors, and graceful shutdown on SIGTERM.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{BIN, H1, H2, Host, get, write_version};

fn hello_app(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http1_and_h2c_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&hello_app(&dir), &[]);
    let answer = get(&host.addr, "/").await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "hello from v1\n")
    );
    let mut h1 = H1::connect(&host.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(h1.get("/x").await.unwrap().body, "hello from v1\n");
    }
    let mut h2 = H2::connect(&host.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(h2.get("/y").await.unwrap().body, "hello from v1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_only_its_own_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &[]);
    let trap = get(&host.addr, "/trap").await.unwrap();
    assert_eq!(trap.status, 500, "{trap:?}");
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v1\n");
    host.wait_log("guest trapped", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_ends_at_the_request_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &["--request-timeout", "3s"]);
    let addr = host.addr.clone();
    let started = Instant::now();
    let spinning = tokio::spawn(async move { get(&addr, "/loop").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let asked = Instant::now();
        assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v1\n");
        assert!(
            asked.elapsed() < Duration::from_millis(2500),
            "a spinning guest starved others"
        );
    }
    let answer = spinning.await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_memory_fails_only_that_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &["--max-memory", "64MiB"]);
    let oom = get(&host.addr, "/oom").await.unwrap();
    assert_eq!(oom.status, 500, "{oom:?}");
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_is_prefixed_with_app_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &[]);
    assert_eq!(get(&host.addr, "/log").await.unwrap().status, 200);
    host.wait_log(
        "[faulty#1] faulty says hello on stdout",
        Duration::from_secs(5),
    );
    host.wait_log(
        "[faulty#1] faulty says hello on stderr",
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_outside_allow_http_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("background.wasm");
    write_version(&app, "background", "v1");
    // Allowed: some other port. The guest's target is not on the list.
    let host = Host::start(&app, &["--allow-http", "127.0.0.1:1"]);
    let answer = get(
        &host.addr,
        &format!("/?ms=0&notify=http://127.0.0.1:{port}/x"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let line = host.wait_log("background: notify", Duration::from_secs(5));
    assert!(line.contains("HttpRequestDenied"), "{line}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the denied request reached its target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_slow_request_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let mut host = Host::start(&app, &[]);
    let addr = host.addr.clone();
    let slow = tokio::spawn(async move { get(&addr, "/?ms=1500").await });
    host.wait_in_flight(1).await;
    host.signal(libc::SIGTERM);
    host.wait_log("stopped accepting connections", Duration::from_secs(5));
    assert!(
        get(&host.addr, "/?ms=0").await.is_err(),
        "new connections accepted after SIGTERM"
    );
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "slow v1 after 1500 ms\n")
    );
    let status = host.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(!host.control.exists(), "control socket left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_is_private_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let app = hello_app(&dir);
    let host = Host::start(&app, &[]);
    let mode = std::fs::metadata(&host.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let second = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--control"])
        .arg(&host.control)
        .arg(&app)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("another wasm-host is already running"),
        "{stderr}"
    );
    // The first host is unharmed.
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_control_socket_does_not_block_a_new_host() {
    let dir = tempfile::tempdir().unwrap();
    let app = hello_app(&dir);
    let sockdir = tempfile::tempdir().unwrap();
    let control = sockdir.path().join("stale.sock");
    // A socket file nobody listens on, as a crashed host leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&control).unwrap());
    assert!(control.exists());
    let host = Host::start_with(&app, &control, &[], &[], sockdir);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    host.wait_log("removing stale control socket", Duration::from_secs(1));
}

#[test]
fn reload_without_a_host_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["reload", "--control"])
        .arg(dir.path().join("nobody.sock"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no wasm-host is running on control socket"),
        "{stderr}"
    );
}

#[test]
fn bad_input_to_serve_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Command::new(BIN)
        .arg("serve")
        .arg(dir.path().join("nope.wasm"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let refused = Command::new(BIN)
        .arg("serve")
        .arg(&garbage)
        .args(["--listen", "127.0.0.1:0", "--control"])
        .arg(dir.path().join("c.sock"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("not a WebAssembly file"), "{stderr}");

    let bad_flag = Command::new(BIN)
        .args(["serve", "x.wasm", "--drain-timeout", "soon"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad_flag.stderr);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(stderr.contains("`soon` is not a duration"), "{stderr}");
}

#[test]
fn help_explains_every_serve_flag_with_defaults() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "127.0.0.1:8080",
        "--control",
        "--no-watch",
        "--drain-timeout",
        "30s",
        "--ready-timeout",
        "--request-timeout",
        "60s",
        "--allow-http",
        "Examples:",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_fresh_instance_unless_reuse_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");

    let fresh = Host::start(&app, &[]);
    for _ in 0..3 {
        assert_eq!(get(&fresh.addr, "/count").await.unwrap().body, "count 1\n");
    }
    drop(fresh);

    let reuse = Host::start(&app, &["--reuse-instances", "3"]);
    let mut counts = Vec::new();
    for _ in 0..4 {
        counts.push(get(&reuse.addr, "/count").await.unwrap().body);
    }
    // One instance serves three requests in sequence, then a new one starts.
    assert_eq!(counts, ["count 1\n", "count 2\n", "count 3\n", "count 1\n"]);
    // A trap discards the instance it happened in.
    assert_eq!(get(&reuse.addr, "/count").await.unwrap().body, "count 2\n");
    assert_eq!(get(&reuse.addr, "/trap").await.unwrap().status, 500);
    assert_eq!(get(&reuse.addr, "/count").await.unwrap().body, "count 1\n");
}
