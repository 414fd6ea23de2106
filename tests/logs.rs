//! Logs through the real binary: per-app log files (guest output and host
//! events with their generation, `wasm-host logs` and `logs -f`, rotation
//! by size); `--log-format json`; the access log (flag and config-file
//! key, switched in place); the client-address header guests get; and the
//! W3C `traceparent` carried from incoming to outgoing requests.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{BIN, Host, free_addr, get, send_with, write_version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_generations_follow_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(
        &app,
        &["--no-watch", "--log-max-size", "4KiB", "--log-keep", "2"],
    );
    assert_eq!(get(&host.addr, "/log").await.unwrap().status, 200);
    let v2 = dir.path().join("v2.wasm");
    write_version(&v2, "faulty", "v2");
    host.reload_ok(&v2);
    assert_eq!(get(&host.addr, "/log").await.unwrap().status, 200);

    // The access log is off unless asked for.
    assert!(
        host.log_lines(&["access"]).is_empty(),
        "{}",
        host.log_text()
    );

    let printed = host.ctl_ok(&["logs", "-n", "100"]);
    for needle in [
        "[faulty#1] faulty says hello on stdout",
        "[faulty#1] faulty says hello on stderr",
        "[faulty#2] faulty says hello on stdout",
    ] {
        assert!(printed.contains(needle), "{needle:?} missing:\n{printed}");
    }
    let live = printed
        .lines()
        .find(|l| l.contains("version live") && l.contains("generation=2"))
        .unwrap_or_else(|| panic!("no host event for generation 2:\n{printed}"));
    // Each line starts with its time.
    assert!(live.starts_with("20"), "{live}");

    // -f prints what is written after it started.
    let mut follow = Command::new(BIN)
        .args(["logs", "-f", "-n", "0", "--control"])
        .arg(&host.control)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    get(&host.addr, "/log").await.unwrap();
    let seen = rx.recv_timeout(Duration::from_secs(10));
    let _ = follow.kill();
    let _ = follow.wait();
    let seen = seen.expect("logs -f printed the new line");
    assert!(seen.contains("[faulty#2] faulty says hello"), "{seen}");

    // Rotation keeps each file under the size and a bounded number of them.
    for _ in 0..60 {
        get(&host.addr, "/log").await.unwrap();
    }
    let logs = host.log_dir();
    let current = std::fs::metadata(logs.join("faulty.log")).unwrap().len();
    assert!(current <= 4096, "faulty.log has {current} bytes");
    assert!(logs.join("faulty.log.2").exists());
    assert!(!logs.join("faulty.log.3").exists());
}

/// A well-formed `traceparent`.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// Another one, which the guest sets on its own outgoing request.
const OWN_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// A malformed one (upper-case hex), which the host must ignore.
const BAD_TRACE: &str = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";

/// An HTTP/1.1 server on 127.0.0.1 that answers `pong` and reports the
/// `traceparent` values of each request it gets (one list per request).
fn recording_server() -> (String, mpsc::Receiver<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(read_half) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let (mut traces, mut line) = (Vec::new(), String::new());
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("traceparent")
                {
                    traces.push(value.trim().to_string());
                }
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\npong\n",
            );
            if tx.send(traces).is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

/// `GET path` with the raw header lines `extra` on a fresh connection;
/// returns the connection's own address and the body of the 200 answer.
fn raw_get(addr: &str, path: &str, extra: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = stream.local_addr().unwrap().to_string();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{extra}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{reply}");
    (local, body.to_string())
}

/// The host's stderr lines of `kind` (JSON format) for which `pred` holds,
/// once there are at least `n` of them (waits at most 10 s).
fn json_lines(host: &Host, kind: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let matching = || -> Vec<Value> {
        host.log_lines(&[kind])
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == kind && pred(v))
            .collect()
    };
    wait_until(|| Some(matching()).filter(|lines| lines.len() >= n))
        .unwrap_or_else(|| panic!("fewer than {n} {kind} lines:\n{}", host.log_text()))
}

/// Polls `check` until it gives something, for at most 10 s.
fn wait_until<T>(check: impl Fn() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_access_lines_client_address_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let (upstream, seen) = recording_server();
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--log-format",
            "json",
            "--access-log",
            "--allow-http",
            &upstream,
            // A reused instance must not carry one request's trace into
            // the next (the malformed-trace call below checks that).
            "--reuse-instances",
            "8",
        ],
    );

    // The guest sees the real peer, not the copies the client forged.
    let (local, body) = raw_get(
        &host.addr,
        "/header/wasm-host-client-addr",
        "wasm-host-client-addr: 6.6.6.6:666\r\nWasm-Host-Client-Addr: 7.7.7.7:7\r\n",
    );
    assert_eq!(body, format!("{local}\n"));
    let line = json_lines(&host, "access", 1, |v| {
        v["path"] == "/header/wasm-host-client-addr"
    })
    .remove(0);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "access");
    assert_eq!(line["app"], "api");
    assert_eq!(line["generation"], 1);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], body.len() as u64);
    assert_eq!(line["client"], local.as_str());
    assert!(
        line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert!(
        line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
    assert!(line.get("traceparent").is_none(), "{line}");

    // An incoming traceparent goes on to the guest's outgoing request...
    let call = format!("/upstream?url=http://{upstream}/a");
    let reply = send_with(&host.addr, "GET", &call, &[("traceparent", TRACE)], vec![])
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"upstream said: pong\n");
    let got = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got, [TRACE]);
    // ...unless the guest set its own...
    let call = format!("/upstream?url=http://{upstream}/b&traceparent={OWN_TRACE}");
    let reply = send_with(&host.addr, "GET", &call, &[("traceparent", TRACE)], vec![])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let got = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got, [OWN_TRACE]);
    // ...and a malformed one is neither passed on nor logged.
    let call = format!("/upstream?url=http://{upstream}/c");
    let reply = send_with(
        &host.addr,
        "GET",
        &call,
        &[("traceparent", BAD_TRACE)],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let got = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(got.is_empty(), "{got:?}");
    let calls = json_lines(&host, "access", 3, |v| v["path"] == "/upstream");
    let traces: Vec<Option<&str>> = calls.iter().map(|v| v["traceparent"].as_str()).collect();
    assert_eq!(traces, [Some(TRACE), Some(TRACE), None]);

    // After a reload the lines name the new generation; a guest's 404 is
    // logged with its status and body size.
    let v2 = dir.path().join("v2.wasm");
    write_version(&v2, "api", "v2");
    host.reload_ok(&v2);
    let missing = get(&host.addr, "/nowhere").await.unwrap();
    assert_eq!(missing.status, 404);
    let line = json_lines(&host, "access", 1, |v| v["path"] == "/nowhere").remove(0);
    assert_eq!(line["status"], 404);
    assert_eq!(line["generation"], 2);
    assert_eq!(line["bytes"], missing.body.len() as u64);

    // Guest output on stderr is JSON too, with its app and generation.
    let faulty = dir.path().join("faulty.wasm");
    write_version(&faulty, "faulty", "f1");
    host.reload_ok(&faulty);
    assert_eq!(get(&host.addr, "/log").await.unwrap().status, 200);
    let said = json_lines(&host, "guest", 1, |v| {
        v["message"] == "faulty says hello on stdout"
    })
    .remove(0);
    assert_eq!(
        (&said["app"], &said["generation"]),
        (&"api".into(), &3.into())
    );

    // Every line on stderr, and every line of host.log, is one JSON object;
    // the per-app file keeps its text and no access lines.
    for line in host.log_text().lines() {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            parsed["kind"].is_string() && parsed["level"].is_string(),
            "{line}"
        );
    }
    let host_log = std::fs::read_to_string(host.log_dir().join("host.log")).unwrap();
    let parsed: Vec<Value> = host_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        parsed
            .iter()
            .any(|v| v["kind"] == "access" && v["path"] == "/nowhere"),
        "{host_log}"
    );
    let app_log = std::fs::read_to_string(host.log_dir().join("api.log")).unwrap();
    assert!(
        app_log.contains("[api#3] faulty says hello on stdout"),
        "{app_log}"
    );
    assert!(!app_log.contains("/nowhere"), "{app_log}");
}

/// Waits (at most 10 s) for a text access line containing every one of
/// `needles`.
fn text_access(host: &Host, needles: &[&str]) -> String {
    host.wait_log_where(Duration::from_secs(10), |l| {
        l.contains(" INFO access ") && needles.iter().all(|n| l.contains(n))
    })
    .unwrap_or_else(|| panic!("no access line with {needles:?}:\n{}", host.log_text()))
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_set_per_app_in_a_config_file_and_switched_in_place() {
    let dir = tempfile::tempdir().unwrap();
    write_version(&dir.path().join("a.wasm"), "hello", "a");
    write_version(&dir.path().join("b.wasm"), "hello", "b");
    let addr = free_addr();
    let file = dir.path().join("wasm-host.toml");
    let write = |top: &str, a: &str, b: &str| {
        let text = format!(
            "listen = \"{addr}\"\nwatch_config = false\n{top}\n\
             [app.a]\ncomponent = \"a.wasm\"\nhosts = [\"a.test\"]\nwatch = false\n{a}\n\
             [app.b]\ncomponent = \"b.wasm\"\nhosts = [\"b.test\"]\nwatch = false\n{b}\n"
        );
        std::fs::write(&file, text).unwrap();
    };
    write("", "access_log = true", "");
    let host = Host::start_config(&file, &[]);
    let at = |name: &'static str| {
        let addr = host.addr.clone();
        async move {
            let reply = send_with(&addr, "GET", "/x", &[("host", name)], vec![])
                .await
                .unwrap();
            (reply.status, reply.body.len())
        }
    };

    assert_eq!(at("b.test").await.0, 200);
    let (status, bytes) = at("a.test").await;
    assert_eq!(status, 200);
    // Text lines: time first, then the fields.
    let line = text_access(&host, &["app=a "]);
    assert!(line.starts_with("20"), "{line}");
    for field in [
        "generation=1 ",
        "method=GET ",
        "path=/x ",
        "status=200 ",
        &format!("bytes={bytes} "),
        "client=127.0.0.1:",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field:?} missing: {line}");
    }
    // A request no app takes is logged (no app named) since an app on the
    // listener logs its own.
    assert_eq!(at("c.test").await.0, 404);
    let unrouted = text_access(&host, &["path=/x ", "status=404 "]);
    assert!(!unrouted.contains("app="), "{unrouted}");
    // b logs nothing: by the time a's second line is out, b's would be too.
    at("a.test").await;
    wait_until(|| (host.log_lines(&[" INFO access ", "app=a "]).len() >= 2).then_some(()))
        .expect("a second access line for a");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        host.log_lines(&[" INFO access ", "app=b "]).is_empty(),
        "{}",
        host.log_text()
    );
    let host_log = std::fs::read_to_string(host.log_dir().join("host.log")).unwrap();
    assert!(
        host_log.contains(" INFO access app=a generation=1"),
        "{host_log}"
    );

    // The file-wide default on, a's own key off: switched without a
    // restart (same generations), and b logs from now on while a stops.
    write("access_log = true", "access_log = false", "");
    let said = host.ctl_ok(&["reload", "--config"]);
    assert!(said.contains("unchanged: a, b"), "{said}");
    let status = host.status_json();
    for app in status["apps"].as_array().unwrap() {
        assert_eq!(app["versions"][0]["generation"], 1, "{app}");
    }
    let a_lines = host.log_lines(&[" INFO access ", "app=a "]).len();
    at("b.test").await;
    text_access(&host, &["app=b ", "generation=1 "]);
    at("a.test").await;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        host.log_lines(&[" INFO access ", "app=a "]).len(),
        a_lines,
        "{}",
        host.log_text()
    );
}
