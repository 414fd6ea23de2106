//! The load generator: a fixed number of HTTP/1.1 connections for a fixed
//! time, on one client thread (like `wrk -t1`), so every server under test
//! faces the same client cost.
//!
//! It records latencies, errors, a per-100 ms timeline, and the moment each
//! distinct response body was first seen (which is how reload latency is
//! measured: the body names the version).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Width of one timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

/// A request with no answer within this counts as failed, and its
/// connection is dropped. A server can take a request and never answer:
/// Node's cluster primary, during a `pm2 reload`, sometimes accepts a
/// connection and never hands it to a worker. Without a limit such a
/// request would hold the load run open forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What load to send.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Server address.
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// Reuse each connection (keep-alive) or open one per request.
    pub keep_alive: bool,
    /// Ends the run early when set.
    pub stop: Option<Arc<AtomicBool>>,
}

/// One timeline bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Latencies of the requests answered with 200 in this bucket, µs.
    pub latency: Histogram<u64>,
    /// Failed requests.
    pub errors: u64,
}

/// What a load run saw.
pub struct LoadResult {
    /// When the load started.
    pub started: Instant,
    /// How long it ran.
    pub elapsed: Duration,
    /// Requests answered with 200.
    pub ok: u64,
    /// Failed requests (connection errors and non-200 answers).
    pub errors: u64,
    /// Latency of successful requests, µs.
    pub latency: Histogram<u64>,
    /// Per-[`BUCKET`] counts.
    pub timeline: Vec<Bucket>,
    /// Every successful answer: when it came and which body it had (an
    /// index into `bodies`).
    pub answers: Vec<(Instant, u32)>,
    /// The distinct bodies seen.
    pub bodies: Vec<String>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// When the first answer with `body` came at or after `since`.
    pub fn first_answer(&self, body: &str, since: Instant) -> Option<Instant> {
        let id = self.bodies.iter().position(|b| b == body)? as u32;
        let start = self.answers.partition_point(|(at, _)| *at < since);
        self.answers[start..]
            .iter()
            .find(|(_, b)| *b == id)
            .map(|(at, _)| *at)
    }

    /// A latency percentile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Latencies of the buckets from `from` to `to` after the start, merged.
    pub fn window(&self, from: Duration, to: Duration) -> Histogram<u64> {
        let mut merged = histogram();
        let first = (from.as_millis() / BUCKET.as_millis()) as usize;
        let last = (to.as_millis() / BUCKET.as_millis()) as usize;
        for bucket in self.timeline.iter().take(last).skip(first) {
            let _ = merged.add(&bucket.latency);
        }
        merged
    }
}

struct Shared {
    latency: Histogram<u64>,
    buckets: Vec<Histogram<u64>>,
    errors: Vec<u64>,
    answers: Vec<(Instant, u32)>,
    body_ids: HashMap<String, u32>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `spec` on a new client thread and returns what it saw.
pub fn run(spec: &LoadSpec) -> anyhow::Result<LoadResult> {
    let spec = spec.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(drive(spec))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

async fn drive(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let buckets = (spec.duration.as_millis() / BUCKET.as_millis()) as usize + 2;
    let shared = Arc::new(Mutex::new(Shared {
        latency: histogram(),
        buckets: (0..buckets).map(|_| histogram()).collect(),
        errors: vec![0; buckets],
        answers: Vec::new(),
        body_ids: HashMap::new(),
    }));
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut tasks = Vec::new();
    for _ in 0..spec.connections {
        let shared = shared.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
            let stopped = || {
                spec.stop
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed))
            };
            while Instant::now() < deadline && !stopped() {
                let asked = Instant::now();
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, one_request(&spec, &mut conn))
                    .await
                    .unwrap_or(Err(()));
                let done = Instant::now();
                let bucket =
                    (done.duration_since(started).as_millis() / BUCKET.as_millis()) as usize;
                let failed = {
                    let mut s = shared.lock().expect("load stats lock");
                    let bucket = bucket.min(s.buckets.len() - 1);
                    match outcome {
                        Ok(body) => {
                            let us = (done.duration_since(asked).as_micros() as u64).max(1);
                            let _ = s.latency.record(us);
                            let _ = s.buckets[bucket].record(us);
                            let next = s.body_ids.len() as u32;
                            let id = *s.body_ids.entry(body).or_insert(next);
                            s.answers.push((done, id));
                            false
                        }
                        Err(()) => {
                            s.errors[bucket] += 1;
                            true
                        }
                    }
                };
                if failed {
                    conn = None;
                    // Do not spin on a dead server.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if !spec.keep_alive {
                    conn = None;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();
    let s = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("load stats still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("load stats poisoned"))?;
    let timeline = s
        .buckets
        .iter()
        .zip(&s.errors)
        .map(|(h, &errors)| Bucket {
            latency: h.clone(),
            errors,
        })
        .collect();
    Ok(LoadResult {
        started,
        elapsed,
        ok: s.latency.len(),
        errors: s.errors.iter().sum(),
        latency: s.latency,
        timeline,
        answers: s.answers,
        bodies: {
            let mut bodies = vec![String::new(); s.body_ids.len()];
            for (body, id) in s.body_ids {
                bodies[id as usize] = body;
            }
            bodies
        },
    })
}

/// Sends one GET, connecting first if needed; returns the body of a 200.
async fn one_request(
    spec: &LoadSpec,
    conn: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
) -> Result<String, ()> {
    // A connection the server closed between requests (its answer said
    // `Connection: close`) is replaced, as a pooled client would; the
    // request was never sent on it.
    if conn.as_ref().is_some_and(|c| c.is_closed()) {
        *conn = None;
    }
    if conn.is_none() {
        let stream = TcpStream::connect(spec.addr).await.map_err(|_| ())?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ())?;
        tokio::spawn(driver);
        *conn = Some(sender);
    }
    let sender = conn.as_mut().ok_or(())?;
    sender.ready().await.map_err(|_| ())?;
    let mut req = hyper::Request::get("/")
        .body(Empty::new())
        .map_err(|_| ())?;
    req.headers_mut().insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_static("bench"),
    );
    if !spec.keep_alive {
        req.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    let response = sender.send_request(req).await.map_err(|_| ())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| ())?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(());
    }
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}
