//! The accept loop: HTTP/1.1 (keep-alive) and HTTP/2 cleartext on one
//! listener, each request dispatched by the listener's route table to an
//! app, and by the app to its version at the time the request arrives — so
//! a connection opened before a reload sends its next request to the new
//! version, and one opened before a config reload to the new app.
//!
//! The server knows nothing of reloads; it asks the table and the app per
//! request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::request::{self, Response};
use crate::routes::{self, RouteTable};

/// Accepts connections on `listener` and serves them with the apps of
/// `table` until `shutdown` fires; then stops accepting and lets open
/// connections finish their in-flight requests, for at most `grace`.
pub async fn run(
    listener: TcpListener,
    table: Arc<ArcSwap<RouteTable>>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new());
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    let graceful = GracefulShutdown::new();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning, and keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let table = table.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let app = table.load().pick(&req).cloned();
            async move {
                Ok::<_, Infallible>(match app {
                    Some(app) => app.handle(req).await,
                    None => no_app(&req),
                })
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!("stopped accepting connections; waiting for open connections to finish");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
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
