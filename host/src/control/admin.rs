//! The admin listener (`--admin ADDR`): `/healthz`, `/readyz` and
//! Prometheus `/metrics`, on an address apart from the app's traffic.
//!
//! `/readyz` turns 503 as soon as shutdown begins, while the host still
//! drains, so a load balancer in front stops sending new traffic first. It
//! only reads the apps; it never reloads or changes one.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hosting::apps::Apps;
use crate::hosting::listener::Backoff;
use crate::ops::metrics::{self, AppView, VersionView};
use crate::runtime::engine::Runtime;

/// Serves admin requests on `listener` until the task is dropped; ready
/// until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    apps: Arc<Apps>,
    runtime: Runtime,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new("admin listener");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => {
                backoff.reset();
                conn
            }
            Err(e) => {
                backoff.pause(&e).await;
                continue;
            }
        };
        let (apps, runtime, shutdown) = (apps.clone(), runtime.clone(), shutdown.clone());
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let answer = answer(req.uri().path(), &apps, &runtime, &shutdown);
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
    apps: &Apps,
    runtime: &Runtime,
    shutdown: &CancellationToken,
) -> Response<Full<Bytes>> {
    let ready = !shutdown.is_cancelled();
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if ready => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        "/metrics" => {
            let mut response = text(StatusCode::OK, render(apps, runtime, ready));
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

fn render(apps: &Apps, runtime: &Runtime, ready: bool) -> String {
    let apps = apps.all();
    let versions: Vec<_> = apps.iter().map(|app| app.versions()).collect();
    let views: Vec<AppView<'_>> = apps
        .iter()
        .zip(&versions)
        .map(|(app, versions)| AppView {
            name: app.name(),
            metrics: app.metrics(),
            versions: versions
                .iter()
                .map(|v| VersionView {
                    generation: v.generation(),
                    state: v.state().name(),
                    digest: v.digest().short(),
                    world: v.world().name(),
                    instances: v.instances_alive(),
                    in_flight: v.work().running(),
                    counters: v.counters(),
                })
                .collect(),
        })
        .collect();
    metrics::render(&views, &runtime.pools(), ready)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
