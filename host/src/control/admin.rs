//! The admin listener (`--admin ADDR`): `/healthz`, `/readyz` and
//! Prometheus `/metrics`, on an address apart from the app's traffic.
//!
//! `/readyz` turns 503 as soon as shutdown begins, while the host still
//! drains, so a load balancer in front stops sending new traffic first. It
//! only reads the apps; it never reloads or changes one.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::hosting::apps::Apps;
use crate::hosting::listener::Backoff;
use crate::ops::held_metrics::HeldView;
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
            let (apps, runtime, shutdown) = (apps.clone(), runtime.clone(), shutdown.clone());
            async move {
                let target =
                    publish_target(req.method(), req.uri().path()).map(|t| t.map(str::to_string));
                let answer = match target {
                    Some(target) => publish(req, target.as_deref(), &apps).await,
                    None => answer(req.uri().path(), &apps, &runtime, &shutdown),
                };
                Ok::<_, Infallible>(answer)
            }
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
            "not found; try /metrics, /healthz, /readyz, or POST /publish/\n".into(),
        ),
    }
}

/// Largest publish body taken.
const MAX_PUBLISH: usize = 1 << 20;

/// Which apps a `POST` publishes to: `/publish/` every app (as Pushpin's
/// endpoint, for a host serving one app), `/apps/NAME/publish/` one.
fn publish_target<'a>(method: &http::Method, path: &'a str) -> Option<Option<&'a str>> {
    if method != http::Method::POST {
        return None;
    }
    let path = path.trim_end_matches('/');
    if path == "/publish" {
        return Some(None);
    }
    let name = path.strip_prefix("/apps/")?.strip_suffix("/publish")?;
    (!name.is_empty() && !name.contains('/')).then_some(Some(name))
}

/// Publishes the GRIP items of `req` to the channels of `target` (one
/// app, or every app).
async fn publish(
    req: Request<hyper::body::Incoming>,
    target: Option<&str>,
    apps: &Apps,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_PUBLISH).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the publish body could not be read or is over {MAX_PUBLISH} bytes: {e}\n"),
            );
        }
    };
    let items = match crate::realtime::publish::parse(&body) {
        Ok(items) => items,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let all = apps.all();
    let chosen: Vec<_> = all
        .iter()
        .filter(|app| target.is_none_or(|name| app.name() == name))
        .collect();
    if let (Some(name), true) = (target, chosen.is_empty()) {
        return text(
            StatusCode::NOT_FOUND,
            format!("no app is named {name}; see `wasm-host status`\n"),
        );
    }
    for item in items {
        for app in &chosen {
            app.held().hub().publish(item.clone());
        }
    }
    text(StatusCode::OK, "Published\n".into())
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
            held: held_view(app),
        })
        .collect();
    metrics::render(&views, &runtime.pools(), ready)
}

fn held_view(app: &App) -> HeldView {
    let (held, hub) = (app.held().counts(), app.held().hub().counts());
    HeldView {
        open: held.open,
        opened: held.opened,
        messages_in: held.messages_in,
        messages_out: held.messages_out,
        closed_slow: held.closed_slow,
        closed_too_big: held.closed_too_big,
        published: hub.published,
        delivered: hub.delivered,
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
