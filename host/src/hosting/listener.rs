//! The accept loop: HTTP/1.1 (keep-alive) and HTTP/2 cleartext on one
//! listener, each request dispatched by the listener's route table to an
//! app, and by the app to its version at the time the request arrives — so
//! a connection opened before a reload sends its next request to the new
//! version, and one opened before a config reload to the new app.
//!
//! The server knows nothing of reloads; it asks the table and the app per
//! request.
//!
//! A TLS listener does its handshake inside the same connection path: the
//! handshake holds a `--max-connections` slot and must end within
//! `--header-timeout`; ALPN picks h2 or http/1.1, and each request is marked
//! [`OverTls`] so its guest sees `https`.
//!
//! Each request is readied for its app by `access::prepare` (the client's
//! address, the trace context), and logged by `access` when its app's
//! access log is on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hosting::access::{self, Arrival};
use crate::hosting::connection::{self, Activity, ConnectionLimits, Held, Opening, Paced, Watched};
use crate::hosting::hold::{self, Origin};
use crate::hosting::routes::{self, RouteTable};
use crate::hosting::websocket;
use crate::ops::metrics::{CONNECTIONS, Cutoff};
use crate::runtime::request::{self, OverTls, Response};

/// Accepts connections on `listener` and serves them with the apps of
/// `table`, within `limits`, until `shutdown` fires; then stops accepting
/// and lets open connections finish their in-flight requests, for at most
/// `grace`. With `tls`, every connection is a TLS one.
pub async fn run(
    listener: TcpListener,
    table: Arc<ArcSwap<RouteTable>>,
    shutdown: CancellationToken,
    grace: Duration,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(limits.header_timeout)
        .timer(hyper_util::rt::TokioTimer::new());
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        // WebSockets over HTTP/2 (RFC 8441).
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    let limits = Arc::new(limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut backoff = Backoff::new("listener");

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) => {
                // Out of file descriptors and the like: wait before the next
                // try (longer each time it fails again), keep serving what
                // is open, and say so once per pause rather than per try.
                backoff.pause(&e).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            CONNECTIONS.cut(Cutoff::MaxConnections);
            if tls.is_some() {
                // A cleartext 503 would be garbage to a TLS client, and a
                // handshake to send a real one is what the cap saves:
                // closing is the answer.
                drop(stream);
            } else {
                tokio::spawn(turn_away(stream, limits.max_connections));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (table, builder, limits, stop, tls) = (
            table.clone(),
            builder.clone(),
            limits.clone(),
            shutdown.clone(),
            tls.clone(),
        );
        connections.spawn(async move {
            let _slot = slot;
            let _counted = CONNECTIONS.opened();
            match tls {
                Some(tls) => serve_tls(stream, peer, &tls, table, &builder, &limits, stop).await,
                None => serve_connection(stream, peer, table, &builder, &limits, stop).await,
            }
        });
    }

    drop(listener);
    connections.close();
    tracing::info!("stopped accepting connections; waiting for open connections to finish");
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
    }
}

/// Serves one TLS connection: the handshake (bounded by the header
/// timeout, since a client that never finishes it would otherwise hold its
/// slot), then HTTP over it. No first-line sniff: the bytes are TLS records,
/// and hyper's own header timeout covers the request head after.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsAcceptor,
    table: Arc<ArcSwap<RouteTable>>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &ConnectionLimits,
    stop: CancellationToken,
) {
    let handshake = tokio::time::timeout(limits.header_timeout, tls.accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                CONNECTIONS.cut(Cutoff::NotHttp);
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                CONNECTIONS.cut(Cutoff::HeaderTimeout);
                tracing::debug!("TLS handshake not finished within the header timeout; dropped");
                return;
            }
        },
        _ = linger_after(&stop) => return,
    };
    serve_http(stream, peer, true, table, builder, limits, stop).await;
}

/// Serves one cleartext connection: checks how it opens, then serves HTTP
/// over it.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    table: Arc<ArcSwap<RouteTable>>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &ConnectionLimits,
    stop: CancellationToken,
) {
    let opening = tokio::select! {
        opening = connection::sniff(&stream, limits.header_timeout) => opening,
        _ = linger_after(&stop) => return,
    };
    match opening {
        Opening::Http => {}
        Opening::Closed => return,
        refused => {
            let why = match refused {
                Opening::Silent => Cutoff::HeaderTimeout,
                Opening::BareLf => Cutoff::BareLf,
                Opening::TooLong => Cutoff::LineTooLong,
                _ => Cutoff::NotHttp,
            };
            CONNECTIONS.cut(why);
            tracing::debug!(?refused, "connection refused before HTTP");
            if let Some(answer) = connection::refusal(refused) {
                let mut stream = stream;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
                let _ = stream.shutdown().await;
            }
            return;
        }
    }
    serve_http(stream, peer, false, table, builder, limits, stop).await;
}

/// Hands a connection from `peer` to hyper and watches it for idleness
/// and for the listener's shutdown; with `over_tls`, its requests are
/// marked [`OverTls`].
async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    over_tls: bool,
    table: Arc<ArcSwap<RouteTable>>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &ConnectionLimits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let body_timeout = limits.body_timeout;
    let watched = activity.clone();
    let h2 = Arc::new(AtomicBool::new(false));
    let (seen_h2, stopping) = (h2.clone(), stop.clone());
    // A WebSocket the app accepted, to run once hyper hands the socket
    // over; it runs in this task, so it counts against the listener's
    // connections and its shutdown grace like any connection.
    let accepted: Arc<std::sync::Mutex<Option<websocket::Accepted>>> = Arc::default();
    let upgrade = accepted.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if over_tls {
            req.extensions_mut().insert(OverTls);
        }
        let version = req.version();
        if version == http::Version::HTTP_2 {
            seen_h2.store(true, Ordering::Relaxed);
        }
        let in_flight = watched.request();
        access::prepare(&mut req, peer);
        let table = table.load();
        let app = table.pick(&req).cloned();
        // A request no app takes is logged if any app on this listener
        // logs its own.
        let logged = match &app {
            Some(app) => app.access_log(),
            None => table.apps().any(|a| a.access_log()),
        };
        let arrival = logged.then(|| Arrival::new(app.as_ref().map(|a| a.name()), &req, peer));
        let stopping = stopping.clone();
        let upgraded = accepted.clone();
        async move {
            let response = match app {
                _ if req
                    .headers()
                    .get_all(http::header::HOST)
                    .iter()
                    .nth(1)
                    .is_some() =>
                {
                    CONNECTIONS.cut(Cutoff::DuplicateHost);
                    request::plain(
                        http::StatusCode::BAD_REQUEST,
                        "a request may carry one Host header, not several\n".into(),
                    )
                }
                Some(app) if websocket::is_upgrade(&req) => {
                    let (response, accepted) = websocket::accept(app, req, stopping.clone()).await;
                    match accepted {
                        // One stream of a connection that serves on: the
                        // WebSocket runs beside it (and ends when `stop`
                        // fires, before the connection can finish).
                        Some(accepted) if version == http::Version::HTTP_2 => {
                            tokio::spawn(accepted);
                        }
                        Some(accepted) => {
                            if let Ok(mut slot) = upgraded.lock() {
                                *slot = Some(accepted);
                            }
                        }
                        None => {}
                    }
                    response
                }
                Some(app)
                    if hold::carries_events(&req) && hold::origin(&app, &req) == Origin::Client =>
                {
                    // Forged connection events (a made-up Connection-Id and
                    // state) would reach the app as a real connection's.
                    request::plain(
                        http::StatusCode::FORBIDDEN,
                        "WebSocket events come only from the host's own connections, or from a GRIP proxy trusted with --grip-key\n".into(),
                    )
                }
                Some(app) => {
                    let late = Arc::new(AtomicBool::new(false));
                    let origin = hold::origin(&app, &req);
                    let req = req.map(|body| Paced::new(body, body_timeout, late.clone()));
                    let response = app.handle(req).await;
                    // A trusted proxy holds what the app asks to be held.
                    let response = match origin {
                        Origin::Proxy => response,
                        Origin::Client => hold::hold(&app, response, stopping.clone()),
                    };
                    if late.load(Ordering::Relaxed) && response.status().is_server_error() {
                        CONNECTIONS.cut(Cutoff::BodyTimeout);
                        request::plain(
                            http::StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request body did not arrive in time (--body-timeout {body_timeout:?}, plus 1s per 64 KiB received)\n"
                            ),
                        )
                    } else {
                        response
                    }
                }
                None => no_app(&req),
            };
            let mut response = response;
            if stopping.is_cancelled() && version < http::Version::HTTP_2 {
                // The clean goodbye of HTTP/1: this answer, then the close.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            // The connection counts as busy until the answer is sent.
            let response = response.map(|body| Held::new(body, in_flight));
            Ok::<_, Infallible>(match arrival {
                Some(arrival) => arrival.log(response).map(BodyExt::boxed_unsync),
                None => response.map(BodyExt::boxed_unsync),
            })
        }
    });
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    // Once an idle connection is told to go (GOAWAY), how long its peer
    // may take to finish the goodbye before the socket is simply dropped.
    let mut drop_at: Option<tokio::time::Instant> = None;
    // After the listener stops, when an HTTP/1 connection's linger ends.
    let mut shutdown_at: Option<tokio::time::Instant> = None;
    loop {
        let idle_left = limits.idle_timeout.saturating_sub(activity.idle_for());
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                        CONNECTIONS.cut(Cutoff::HeaderTimeout);
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                let session = upgrade.lock().ok().and_then(|mut slot| slot.take());
                if let Some(session) = session {
                    session.await;
                }
                return;
            }
            _ = stop.cancelled(), if !closing => {
                closing = true;
                if h2.load(Ordering::Relaxed) {
                    // GOAWAY tells the client which streams were taken.
                    conn.as_mut().graceful_shutdown();
                } else {
                    // HTTP/1 has no goodbye for an idle connection: closing
                    // it now races a request already on its way, which the
                    // client sees as a reset. Its next request is answered
                    // with `Connection: close` (above); one that never comes
                    // is closed after the linger.
                    shutdown_at = Some(tokio::time::Instant::now() + CLOSE_LINGER);
                }
            }
            _ = sleep_until(shutdown_at), if shutdown_at.is_some() => {
                shutdown_at = None;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_left), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    CONNECTIONS.cut(Cutoff::IdleTimeout);
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(tokio::time::Instant::now() + IDLE_GOODBYE);
                }
            }
            _ = sleep_until(drop_at), if drop_at.is_some() => return,
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, since
/// every client connection takes a descriptor and the usual soft limit
/// (1024) is far below `--max-connections`; warns when even the hard limit
/// is below `wanted`, as then accepts fail (and back off) before the cap.
pub fn raise_open_file_limit(wanted: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if (limit.rlim_cur as u128) < wanted as u128 + 64 {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections = wanted,
            "the open-file limit is below --max-connections; raise it (LimitNOFILE= under systemd, ulimit -n) or lower --max-connections"
        );
    }
}

/// How long a connection closed for idleness may take over its goodbye:
/// an HTTP/2 peer is sent GOAWAY and a ping, and one that never answers
/// must not hold its socket.
const IDLE_GOODBYE: Duration = Duration::from_secs(1);

/// Once the listener stops (shutdown, or a successor took over), how long
/// an idle HTTP/1 keep-alive connection waits for its client's next
/// request, which it answers with `Connection: close`. A client busy on
/// the connection sends within milliseconds; one idle this long is
/// closed as an idle connection would be.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Ends [`CLOSE_LINGER`] after `stop` fires. A connection accepted just
/// before the listener stopped has a client about to send its request (or
/// finish its handshake); dropping it at once would fail that request, so
/// it gets the linger to arrive, and its answer closes the connection.
async fn linger_after(stop: &CancellationToken) {
    stop.cancelled().await;
    tokio::time::sleep(CLOSE_LINGER).await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Answers a connection over the listener's cap with `503` and closes it,
/// without reading its request: the answer is all it costs.
async fn turn_away(mut stream: TcpStream, max: usize) {
    let body = format!(
        "this listener has its limit of {max} connections open (--max-connections); retry shortly\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// How long an accept loop waits after a failed accept: doubling from
/// 10 ms to 1 s while it keeps failing, with a warning when failures start
/// and at most one every 5 s after that (with the count in between). Every
/// accept loop of the host uses it.
#[derive(Debug)]
pub struct Backoff {
    what: &'static str,
    failures: u32,
    warned: Option<std::time::Instant>,
}

impl Backoff {
    /// The back-off of the accept loop of `what` (named in its warnings).
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            failures: 0,
            warned: None,
        }
    }

    /// Waits before the next accept and logs why.
    pub async fn pause(&mut self, error: &std::io::Error) {
        let wait = Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(5))
        {
            tracing::warn!(
                error = %error,
                failures = self.failures,
                "{} accept failed (out of file descriptors?); pausing accepts",
                self.what
            );
            self.warned = Some(std::time::Instant::now());
        }
        tokio::time::sleep(wait).await;
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "{} accepting again", self.what);
        }
        self.failures = 0;
        self.warned = None;
    }
}

/// The answer for a request no route of this listener takes.
fn no_app<B>(req: &hyper::Request<B>) -> Response {
    let text = format!(
        "no app on this address serves host {} path {}\n",
        routes::request_host(req).unwrap_or("(none)"),
        req.uri().path()
    );
    request::plain(http::StatusCode::NOT_FOUND, text)
}
