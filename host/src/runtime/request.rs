//! One HTTP request on one version, whichever its world: the hand-off to
//! the world's own path ([`crate::runtime::p2`] or [`crate::runtime::p3`]).
//!
//! This module does not choose the version: the caller does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) use crate::runtime::http::plain;
pub use crate::runtime::http::{OverTls, Response};
use crate::runtime::version::Version;
use crate::runtime::work::WorkGuard;
use crate::runtime::world::Linked;

/// Runs `req` on `version`, holding `guard` (and `turn`, the app's
/// admission permit) for as long as the request runs. For a 0.2 version,
/// a guest whose client went away before it answered may go on for
/// `hangup_grace`, then it is stopped; a 0.3 request runs on in its
/// instance until it ends or the request timeout ends it (wasmtime 48 has
/// no way to cancel one task of an instance).
pub async fn handle<B>(
    version: Arc<Version>,
    guard: WorkGuard,
    turn: OwnedSemaphorePermit,
    req: hyper::Request<B>,
    hangup_grace: Duration,
) -> Response
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    match version.linked() {
        Linked::P2(_) => {
            crate::runtime::p2::request::handle(version, guard, turn, req, hangup_grace).await
        }
        Linked::P3(_) => crate::runtime::p3::request::handle(version, guard, turn, req).await,
    }
}
