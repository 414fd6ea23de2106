//! Admission limits through the real binary: a full app answers 503 with
//! Retry-After (not an error from the instance pool), a queue holds
//! requests for a turn and gives up at its timeout, and bodies over
//! `--max-body` get 413 whether or not they declare their length.

mod support;

use std::time::Duration;

use support::{Host, get, send, write_version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_app_queues_then_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let host = Host::start(
        &app,
        &["--no-watch", "--max-concurrency", "2", "--max-queue", "2"],
    );

    let spawn = |path: &'static str| {
        let addr = host.addr.clone();
        tokio::spawn(async move { send(&addr, "GET", path, Vec::new()).await })
    };
    let running: Vec<_> = (0..2).map(|_| spawn("/?ms=5000")).collect();
    host.wait_in_flight(2).await;
    let queued: Vec<_> = (0..2).map(|_| spawn("/?ms=0")).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two run, two wait: the next ones are turned away at once.
    for _ in 0..3 {
        let reply = send(&host.addr, "GET", "/?ms=0", Vec::new()).await.unwrap();
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.headers["retry-after"], "1");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(text.contains("--max-concurrency"), "{text}");
    }
    for task in running.into_iter().chain(queued) {
        let reply = task.await.unwrap().unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert_eq!(get(&host.addr, "/?ms=0").await.unwrap().status, 200);
    assert!(host.log_lines(&["pool"]).is_empty(), "{}", host.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_gives_up_at_the_queue_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--max-concurrency",
            "1",
            "--queue-timeout",
            "200ms",
        ],
    );
    let addr = host.addr.clone();
    let running = tokio::spawn(async move { get(&addr, "/?ms=2000").await });
    host.wait_in_flight(1).await;
    let reply = send(&host.addr, "GET", "/?ms=0", Vec::new()).await.unwrap();
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(String::from_utf8_lossy(&reply.body).contains("--queue-timeout"));
    assert_eq!(running.await.unwrap().unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let host = Host::start(&app, &["--no-watch", "--max-body", "1KiB"]);

    let small = send(&host.addr, "POST", "/echo", vec![b'a'; 1000])
        .await
        .unwrap();
    assert_eq!((small.status, small.body.len()), (200, 1000));
    let big = send(&host.addr, "POST", "/echo", vec![b'a'; 2000])
        .await
        .unwrap();
    assert_eq!(big.status, 413, "{big:?}");
    assert!(String::from_utf8_lossy(&big.body).contains("--max-body"));

    // Chunked, no declared length: cut off where it passes the limit.
    let (status, text) = chunked_post(&host.addr, "/count", 8, 512).await;
    assert_eq!(status, 413, "{text}");
    let (status, text) = chunked_post(&host.addr, "/count", 2, 256).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("512"), "{text}");
}

/// Waits until the app reports `n` pieces of work in flight.
/// POSTs `chunks` chunks of `size` bytes with chunked transfer coding on a
/// raw connection; returns the status and the whole response text.
async fn chunked_post(addr: &str, path: &str, chunks: usize, size: usize) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", "b".repeat(size));
        // The host may answer and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text));
    let _ = read.await.expect("response within 10 s");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
