//! The admin listener (`--admin ADDR`): `/healthz`, `/readyz` and
//! Prometheus `/metrics`, on an address apart from the app's traffic.
//!
//! `/readyz` turns 503 as soon as shutdown begins, while the host still
//! drains, so a load balancer in front stops sending new traffic first. It
//! only reads the app; it never reloads or changes it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::engine::Runtime;
use crate::metrics::{self, VersionView};

/// Serves admin requests on `listener` until the task is dropped; ready
/// until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    runtime: Runtime,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (app, runtime, shutdown) = (app.clone(), runtime.clone(), shutdown.clone());
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let answer = answer(req.uri().path(), &app, &runtime, &shutdown);
            async move { Ok::<_, Infallible>(answer) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn answer(
    path: &str,
    app: &App,
    runtime: &Runtime,
    shutdown: &CancellationToken,
) -> Response<Full<Bytes>> {
    let ready = !shutdown.is_cancelled();
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if ready => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        "/metrics" => {
            let mut response = text(StatusCode::OK, render(app, runtime, ready));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn render(app: &App, runtime: &Runtime, ready: bool) -> String {
    let live = app.live();
    let draining = app.draining();
    fn view<'a>(v: &'a crate::version::Version, state: &'static str) -> VersionView<'a> {
        VersionView {
            generation: v.generation(),
            state,
            digest: v.digest().short(),
            in_flight: v.work().running(),
            counters: v.counters(),
        }
    }
    let mut versions = vec![view(&live, "live")];
    versions.extend(draining.iter().map(|v| view(v, "draining")));
    metrics::render(
        app.name(),
        app.metrics(),
        &versions,
        &runtime.pools(),
        ready,
    )
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
