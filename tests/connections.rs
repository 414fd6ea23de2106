//! Abuse of the listener and of the request path, through the real binary:
//! clients that queue and hang up, stay silent, idle, trickle bodies, open
//! too many connections, send bare-LF or duplicate-Host requests or a
//! broken HTTP/2 preface, and guests that return without answering. Each
//! test asserts the host cuts off only the offender and keeps serving
//! everyone else.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Host, get, send, write_version};

/// Reads from `stream` until the peer closes it or `timeout` passes;
/// returns what arrived and whether it closed.
fn read_to_close(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// One raw HTTP/1.1 exchange on a fresh connection: the bytes back, until
/// the host closes the connection (bounded).
fn raw(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let (got, _) = read_to_close(&mut stream, Duration::from_secs(5));
    String::from_utf8_lossy(&got).into_owned()
}

/// A counter of the admin listener's metrics, by its full series name.
async fn metric(admin: &str, series: &str) -> u64 {
    let text = get(admin, "/metrics").await.unwrap().body;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_that_hang_up_give_their_places_back() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let host = Host::start(
        &app,
        &["--no-watch", "--max-concurrency", "2", "--max-queue", "5"],
    );
    // Two turns taken for a while; five clients queue behind them, then
    // give up and hang up.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = host.addr.clone();
            tokio::spawn(async move { get(&addr, "/?ms=1500").await })
        })
        .collect();
    host.wait_in_flight(2).await;
    let mut quitters = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&host.addr).unwrap();
        stream
            .write_all(b"GET /?ms=10 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        quitters.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(quitters);
    for b in busy {
        assert_eq!(b.await.unwrap().unwrap().status, 200);
    }
    // The queue is whole again: two run, five wait, none is refused.
    let burst: Vec<_> = (0..7)
        .map(|_| {
            let addr = host.addr.clone();
            tokio::spawn(async move { get(&addr, "/?ms=300").await })
        })
        .collect();
    for b in burst {
        let answer = b.await.unwrap().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let admin = support::free_addr();
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--admin",
            &admin,
        ],
    );
    // Connects and never sends a byte.
    let mut silent = TcpStream::connect(&host.addr).unwrap();
    // An HTTP/2 client that says hello, then idles.
    let mut idle = TcpStream::connect(&host.addr).unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    // Others are served meanwhile.
    assert_eq!(get(&host.addr, "/").await.unwrap().status, 200);

    let (_, closed) = read_to_close(&mut silent, Duration::from_secs(5));
    assert!(closed, "a silent connection stayed open");
    let (frames, closed) = read_to_close(&mut idle, Duration::from_secs(5));
    assert!(closed, "an idle HTTP/2 connection stayed open");
    assert!(frame_types(&frames).contains(&7), "no GOAWAY before close");

    assert!(metric(&admin, "wasm_host_cutoffs_total{reason=\"header_timeout\"}").await >= 1);
    assert!(metric(&admin, "wasm_host_cutoffs_total{reason=\"idle_timeout\"}").await >= 1);
    assert_eq!(get(&host.addr, "/").await.unwrap().status, 200);
}

/// The types of the HTTP/2 frames in `bytes`, in order.
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_get_503_and_the_rest_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch", "--max-connections", "2"]);
    let mut held = support::H1::connect(&host.addr).await.unwrap();
    assert_eq!(held.get("/").await.unwrap().status, 200);
    let _second = TcpStream::connect(&host.addr).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let turned_away = raw(&host.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(turned_away.starts_with("HTTP/1.1 503"), "{turned_away}");
    assert!(turned_away.contains("--max-connections"), "{turned_away}");
    // Those inside keep being served.
    assert_eq!(held.get("/").await.unwrap().status, 200);
    drop(held);
    drop(_second);
    // Room again once they are gone.
    support::wait_for_body(&host.addr, "/", "hello from v1", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_frees_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--body-timeout",
            "1s",
            "--max-concurrency",
            "1",
        ],
    );
    let mut slow = TcpStream::connect(&host.addr).unwrap();
    slow.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // A byte every 300 ms: never idle long, yet far behind the pace.
    while started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(b"x").is_err() {
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buf = [0u8; 1024];
        if let Ok(n) = slow.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // Its turn is free again for a well-behaved client.
    let reply = send(&host.addr, "POST", "/count", vec![b'y'; 10])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_client_hung_up_is_stopped_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--hangup-grace",
            "300ms",
            "--max-concurrency",
            "1",
        ],
    );
    let mut client = TcpStream::connect(&host.addr).unwrap();
    client
        .write_all(b"GET /?ms=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    host.wait_in_flight(1).await;
    client.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    let hung_up = Instant::now();
    // The only turn comes back soon, not after 20 s.
    let answer = get(&host.addr, "/?ms=10").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        hung_up.elapsed() < Duration::from_secs(5),
        "{:?}",
        hung_up.elapsed()
    );
    host.wait_log(
        "its client went away before the answer",
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_http2_stream_stops_its_guest_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--hangup-grace",
            "300ms",
            "--max-concurrency",
            "1",
        ],
    );
    let mut h2 = support::H2::connect(&host.addr).await.unwrap();
    // Giving up on the answer resets the stream (RST_STREAM); the
    // connection stays open.
    let gave_up = tokio::time::timeout(Duration::from_millis(500), h2.get("/?ms=20000")).await;
    assert!(gave_up.is_err(), "a 20 s request answered early");
    let reset = Instant::now();
    let answer = h2.get("/?ms=10").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        reset.elapsed() < Duration::from_secs(5),
        "{:?}",
        reset.elapsed()
    );
    host.wait_log(
        "its client went away before the answer",
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_duplicate_host_and_a_broken_h2_preface_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch"]);

    let bare = raw(&host.addr, b"GET / HTTP/1.1\nHost: x\n\n");
    assert!(bare.starts_with("HTTP/1.1 400"), "{bare}");
    assert!(bare.contains("bare LF"), "{bare}");

    let twice = raw(
        &host.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    assert!(twice.contains("one Host header"), "{twice}");

    // h2spec 3.5/2: an endpoint that gets a broken preface says GOAWAY
    // (PROTOCOL_ERROR) and closes.
    for preface in [
        &b"INVALID CONNECTION PREFACE\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ",
    ] {
        let mut stream = TcpStream::connect(&host.addr).unwrap();
        stream.write_all(preface).unwrap();
        let (frames, closed) = read_to_close(&mut stream, Duration::from_secs(5));
        assert!(closed);
        let goaway = frame_types(&frames).iter().position(|&t| t == 7);
        assert!(goaway.is_some(), "no GOAWAY in {frames:?}");
        assert_eq!(
            &frames[frames.len() - 4..],
            &[0, 0, 0, 1],
            "not PROTOCOL_ERROR"
        );
    }

    // Well-formed requests are untouched.
    let fine = raw(
        &host.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    assert_eq!(
        support::H2::connect(&host.addr)
            .await
            .unwrap()
            .get("/")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_returns_without_answering_is_logged_and_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("mute.wasm");
    std::fs::write(&app, support::example("mute")).unwrap();
    let host = Host::start(&app, &["--no-watch", "--reuse-instances", "10"]);
    // Instances serve in turn on one connection, so the warm one is reused.
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "count 1\n");
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "count 2\n");
    let muted = get(&host.addr, "/mute").await.unwrap();
    assert_eq!(muted.status, 500);
    assert!(
        muted.body.contains("without sending a response"),
        "{}",
        muted.body
    );
    host.wait_log(
        "guest returned without sending a response",
        Duration::from_secs(5),
    );
    // The instance that left a request unanswered was not kept.
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "count 1\n");
    assert_eq!(
        host.log_lines(&["guest returned without sending a response"])
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_serve_twice_costs_one_request_then_reuse_goes_off() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("mute.wasm");
    std::fs::write(&app, support::example("mute")).unwrap();
    let host = Host::start(&app, &["--no-watch", "--reuse-instances", "10"]);
    // `/once` answers only as its instance's first request, like an engine
    // that cannot serve twice.
    assert_eq!(get(&host.addr, "/once").await.unwrap().body, "count 1\n");
    let failed = get(&host.addr, "/once").await.unwrap();
    assert_eq!(failed.status, 500, "{}", failed.body);
    host.wait_log("instance reuse turned off", Duration::from_secs(5));
    // Every request from now on gets a fresh instance, and none fails.
    for _ in 0..10 {
        let answer = get(&host.addr, "/once").await.unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "count 1\n"));
    }
    let turned_off = host.log_lines(&["instance reuse turned off"]);
    assert_eq!(turned_off.len(), 1, "{turned_off:?}");
    assert!(turned_off[0].contains("returned without sending a response"));
    assert_eq!(
        host.status_json()["apps"][0]["versions"][0]["reuse_off"],
        true
    );
}

/// The faulty example, with the custom section `build.mjs --reuse` ends a
/// component with (id 0, size, name, payload) when `marked`.
fn faulty(dir: &std::path::Path, marked: bool) -> std::path::PathBuf {
    let mut bytes = support::example("faulty");
    if marked {
        let name = b"wasm-host:reuse";
        bytes.extend([0, (1 + name.len() + 1) as u8, name.len() as u8]);
        bytes.extend(name);
        bytes.push(b'1');
    }
    let app = dir.join("faulty.wasm");
    std::fs::write(&app, bytes).unwrap();
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_that_traps_or_keeps_growing_is_dropped_alone_when_built_for_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(
        &faulty(dir.path(), true),
        &["--no-watch", "--reuse-instances", "10"],
    );
    let loaded = host.wait_log("version loaded", Duration::from_secs(10));
    assert!(loaded.contains("built_for_reuse=true"), "{loaded}");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 1\n");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 2\n");
    assert_eq!(get(&host.addr, "/trap").await.unwrap().status, 500);
    // The instance that trapped is gone; the next one is fresh and is
    // reused in turn.
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 1\n");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 2\n");
    assert!(host.log_lines(&["instance reuse turned off"]).is_empty());
    assert_eq!(
        host.status_json()["apps"][0]["versions"][0]["reuse_off"],
        false
    );
    // An instance whose memory grew for good (48 MiB past a start of a few)
    // is not kept: the next request gets a fresh one.
    assert_eq!(get(&host.addr, "/hoard").await.unwrap().status, 200);
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 1\n");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 2\n");

    // Without the mark, the same trap on a reused instance turns reuse off.
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(
        &faulty(dir.path(), false),
        &["--no-watch", "--reuse-instances", "10"],
    );
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 1\n");
    assert_eq!(get(&host.addr, "/trap").await.unwrap().status, 500);
    let off = host.wait_log("instance reuse turned off", Duration::from_secs(5));
    assert!(off.contains("it trapped"), "{off}");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 1\n");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "count 1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_pauses_accepts_without_flooding_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    let pid = host.pid() as libc::pid_t;
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = |n: u64| {
        let new = libc::rlimit {
            rlim_cur: n,
            rlim_max: 20000,
        };
        // SAFETY: prlimit reads `new` and writes nothing back (null old).
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    limit(open_now + 4);
    // More connections than the host can take descriptors for.
    let crowd: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(&host.addr).ok())
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warnings = host.log_lines(&["accept failed"]).len();
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} accept warnings in 2 s"
    );
    drop(crowd);
    limit(20000);
    support::wait_for_body(&host.addr, "/", "hello from v1", Duration::from_secs(10)).await;
}
