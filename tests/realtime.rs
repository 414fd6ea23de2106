//! WebSockets and held streams through the real binary, with real
//! WebSocket clients (tokio-tungstenite) and the chat example: connections
//! stay open through reloads while every message is answered once, a
//! broken version leaves them talking to the old one, published events
//! reach WebSocket and server-sent-event subscribers across reloads
//! (including those a draining version publishes), and the documented
//! limits (slow reader, message size) and SIGTERM close as they say.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::{Host, get, send, write_version};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `path` on `addr`.
async fn open(addr: &str, path: &str) -> Ws {
    let (ws, response) = connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("WebSocket to {path}: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message, within `within`; panics on anything else.
async fn next_text(ws: &mut Ws, within: Duration) -> String {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Sends `echo:<tag>` and returns the generation that answered.
async fn echo(ws: &mut Ws, tag: &str) -> u64 {
    ws.send(Message::text(format!("echo:{tag}")))
        .await
        .expect("send");
    let answer = next_text(ws, Duration::from_secs(10)).await;
    let (generation, echoed) = answer
        .strip_prefix("gen")
        .and_then(|rest| rest.split_once(':'))
        .unwrap_or_else(|| panic!("unexpected answer {answer}"));
    assert_eq!(echoed, tag, "the answer is for another message");
    generation.parse().expect("a generation number")
}

/// The close code the server sends next (skipping anything else), within
/// `within`.
async fn close_code(ws: &mut Ws, within: Duration) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_websockets_stay_open_through_fifty_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v0");
    let host = Host::start(&app, &["--no-watch"]);

    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(open(&host.addr, "/ws").await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, mut ws) in clients.into_iter().enumerate() {
        let (stop, answered) = (stop.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut newest = 0;
            while !stop.load(Ordering::Relaxed) && seq < 10_000 {
                let generation = echo(&mut ws, &format!("{i}-{seq}")).await;
                assert!(
                    generation >= newest,
                    "an older version answered after a newer one"
                );
                newest = generation;
                seq += 1;
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ws, newest)
        }));
    }

    // One more client measures how soon after each swap answers come from
    // the new version.
    let mut probe = open(&host.addr, "/ws").await;
    for round in 1..=50u64 {
        write_version(&app, "chat", &format!("v{round}"));
        host.reload_ok(&app);
        let generation = echo(&mut probe, &format!("probe-{round}")).await;
        assert_eq!(
            generation,
            round + 1,
            "the first message after reload {round} was answered by generation {generation}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let (mut ws, _) = task.await.expect("a client failed");
        // Still open, and on the last version: one more round trip, then a
        // clean close.
        assert_eq!(echo(&mut ws, "last").await, 51);
        ws.close(None).await.expect("close");
    }
    assert!(answered.load(Ordering::Relaxed) >= 200 * 20);
    // Every old version retired: connections never pin one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = host.status_json();
    let versions = status["apps"][0]["versions"].as_array().unwrap();
    assert!(
        versions.iter().all(|v| v["state"] != "draining"),
        "{versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_version_is_refused_and_connections_keep_talking() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    let mut ws = open(&host.addr, "/ws").await;
    assert_eq!(echo(&mut ws, "before").await, 1);

    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0 not a component").unwrap();
    let refused = host.reload(Some(&broken));
    assert!(!refused.status.success());
    assert_eq!(echo(&mut ws, "after").await, 1);
    // A new connection opens on the old version too.
    let mut fresh = open(&host.addr, "/ws").await;
    assert_eq!(echo(&mut fresh, "fresh").await, 1);
}

/// Reads a held server-sent-event stream, collecting `data:` lines.
async fn sse_reader(addr: String) -> (tokio::task::JoinHandle<Vec<String>>, Arc<AtomicBool>) {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("/events")
        .header("host", &addr)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.expect("GET /events");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(b"text/event-stream".as_slice())
    );
    assert!(
        response.headers().get("grip-hold").is_none(),
        "GRIP headers are the host's, not the client's"
    );
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let task = tokio::spawn(async move {
        use http_body_util::BodyExt;
        let mut body = response.into_body();
        let mut text = String::new();
        let mut events = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        text.push_str(&String::from_utf8_lossy(data));
                        while let Some(end) = text.find("\n\n") {
                            let event: String = text.drain(..end + 2).collect();
                            events.extend(
                                event
                                    .lines()
                                    .filter_map(|l| l.strip_prefix("data: "))
                                    .map(str::to_string),
                            );
                        }
                    }
                }
                Ok(_) => break,
                Err(_) => continue,
            }
        }
        events
    });
    (task, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_reach_every_subscriber_once_across_twenty_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v0");
    let host = Host::start(&app, &["--no-watch", "--admin", "127.0.0.1:0"]);
    let admin = host.admin_addr();

    let mut sockets = Vec::new();
    for i in 0..5 {
        sockets.push(open(&host.addr, &format!("/ws?name=w{i}")).await);
    }
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(sse_reader(host.addr.clone()).await);
    }
    // Subscriptions are made when the app answers OPEN; one round trip
    // makes sure each is in place.
    for ws in &mut sockets {
        echo(ws, "ready").await;
    }

    let mut expected = Vec::new();
    for round in 0..20 {
        // From outside, in Pushpin's publish format.
        let outside = format!("admin-{round}");
        let body = serde_json::json!({"items": [{"channel": "room", "formats": {
            "ws-message": {"content": outside},
            "http-stream": {"content": format!("data: {outside}\n\n")},
        }}]});
        let published = send(&admin, "POST", "/publish/", body.to_string().into_bytes())
            .await
            .expect("publish");
        assert_eq!(published.status, 200, "{:?}", published.body);
        expected.push(outside);
        // From a request of the app.
        let inside = format!("guest-{round}");
        let answer = send(&host.addr, "POST", "/publish", inside.clone().into_bytes())
            .await
            .expect("POST /publish");
        assert_eq!(answer.status, 204);
        expected.push(inside);
        // From work the version does after its response, published while
        // it drains (the reload right after retires it).
        sockets[0]
            .send(Message::text(format!("later:bg-{round}")))
            .await
            .unwrap();
        expected.push(format!("later:bg-{round}"));
        write_version(&app, "chat", &format!("v{}", round + 1));
        host.reload_ok(&app);
    }

    for (i, ws) in sockets.iter_mut().enumerate() {
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            seen.push(next_text(ws, Duration::from_secs(10)).await);
        }
        let mut got = seen.clone();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want, "WebSocket {i} missed or doubled events");
        // Items of one publisher arrive in the order published.
        let admin_order: Vec<_> = seen.iter().filter(|s| s.starts_with("admin-")).collect();
        let mut sorted = admin_order.clone();
        sorted.sort_by_key(|s| s[6..].parse::<u32>().unwrap());
        assert_eq!(admin_order, sorted);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, (task, done)) in streams.into_iter().enumerate() {
        done.store(true, Ordering::Relaxed);
        let mut got = task.await.unwrap();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want, "event stream {i} missed or doubled events");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v1");
    let host = Host::start(&app, &["--no-watch", "--ws-max-message", "1KiB"]);
    let mut big = open(&host.addr, "/ws").await;
    let mut other = open(&host.addr, "/ws").await;
    let _ = big.send(Message::text("x".repeat(4096))).await;
    assert_eq!(
        close_code(&mut big, Duration::from_secs(5)).await,
        Some(CloseCode::Size)
    );
    assert_eq!(echo(&mut other, "fine").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_and_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v1");
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--admin",
            "127.0.0.1:0",
            "--ws-send-queue",
            "8",
        ],
    );
    let admin = host.admin_addr();
    let mut slow = open(&host.addr, "/ws").await;
    let mut reader = open(&host.addr, "/ws").await;
    echo(&mut slow, "ready").await;
    echo(&mut reader, "ready").await;
    // The slow client never reads: its socket buffers fill, then its
    // queue of 8, and the host closes it instead of buffering more.
    let payload = "y".repeat(60_000);
    let mut published = 0;
    for _ in 0..200 {
        let body = serde_json::json!({"items": [{"channel": "room", "formats": {"ws-message": {"content": payload}}}]});
        send(&admin, "POST", "/publish/", body.to_string().into_bytes())
            .await
            .expect("publish");
        published += 1;
        // The reader keeps up.
        assert_eq!(
            next_text(&mut reader, Duration::from_secs(5)).await.len(),
            payload.len()
        );
        let metrics = get(&admin, "/metrics").await.unwrap().body;
        if metrics.lines().any(|l| {
            l.starts_with(
                "wasm_host_websockets_closed_total{app=\"chat\",reason=\"slow_reader\"} 1",
            )
        }) {
            break;
        }
    }
    assert!(published < 200, "the slow client was never closed");
    // What the slow client finds when it reads at last: the messages that
    // fit in the buffers, then the end.
    let mut tail = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => tail += 1,
            Ok(Some(Ok(Message::Close(frame)))) => {
                if let Some(f) = frame {
                    assert_eq!(f.code, CloseCode::Policy);
                }
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the slow client's connection was left open"),
        }
    }
    assert!(tail < published, "{tail} of {published}");
    assert_eq!(echo(&mut reader, "still").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_after_in_flight_work() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v1");
    let mut host = Host::start(&app, &["--no-watch"]);
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = open(&host.addr, "/ws").await;
        echo(&mut ws, "ready").await;
        sockets.push(ws);
    }
    host.signal(libc::SIGTERM);
    let mut codes = Vec::new();
    for ws in &mut sockets {
        codes.push(close_code(ws, Duration::from_secs(10)).await);
    }
    assert_eq!(codes, vec![Some(CloseCode::Away); 3]);
    assert!(host.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_fan_out_through_redis_to_every_host_once() {
    let redis = support::redis::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("chat.wasm");
    write_version(&app, "chat", "v1");
    let args = [
        "--no-watch",
        "--admin",
        "127.0.0.1:0",
        "--keyvalue",
        redis.url.as_str(),
    ];
    let (a, b) = (Host::start(&app, &args), Host::start(&app, &args));
    let mut on_a = open(&a.addr, "/ws").await;
    let mut on_b = open(&b.addr, "/ws").await;
    echo(&mut on_a, "ready").await;
    echo(&mut on_b, "ready").await;
    // Each host's Redis subscription is up once its own publish comes back.
    for (host, ws) in [(&a, &mut on_a), (&b, &mut on_b)] {
        let mut back = false;
        for attempt in 0..50 {
            let probe = format!("probe-{attempt}");
            send(&host.addr, "POST", "/publish", probe.clone().into_bytes())
                .await
                .expect("POST /publish");
            if let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout(Duration::from_millis(200), ws.next()).await
            {
                assert!(t.starts_with("probe-"), "{t}");
                back = true;
                break;
            }
        }
        assert!(back, "publishes never came back through Redis");
    }
    // Drain the probes the other client got meanwhile.
    for ws in [&mut on_a, &mut on_b] {
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(300), ws.next()).await
        {
            assert!(t.starts_with("probe-"), "{t}");
        }
    }

    let mut expected = Vec::new();
    for i in 0..10 {
        let from_guest = format!("from-a-{i}");
        send(&a.addr, "POST", "/publish", from_guest.clone().into_bytes())
            .await
            .expect("POST /publish on a");
        expected.push(from_guest);
        let from_outside = format!("from-b-admin-{i}");
        let body = serde_json::json!({"items": [{"channel": "room", "formats": {"ws-message": {"content": from_outside}}}]});
        let answer = send(&b.admin_addr(), "POST", "/publish/", body.to_string().into_bytes())
            .await
            .expect("publish on b");
        assert_eq!(answer.status, 200);
        expected.push(from_outside);
    }
    expected.sort();
    for (name, ws) in [("a", &mut on_a), ("b", &mut on_b)] {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.push(next_text(ws, Duration::from_secs(5)).await);
        }
        // Nothing more: no item came twice.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), ws.next())
                .await
                .is_err(),
            "host {name} got an extra item"
        );
        got.sort();
        assert_eq!(got, expected, "host {name}");
    }
}
