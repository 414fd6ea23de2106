//! One HTTP request on a 0.3 version: handed to one of the version's
//! instances, and the answer (or the reason there is none) mapped to HTTP.
//!
//! The request's work guard and admission turn are held until the response
//! body has gone out (or was dropped): the body streams from the instance.
//! Work the guest does after that is held by its instance (see
//! [`super::pool`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::handler::{ExpirationError, InstantiationError};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use super::End;
use super::pool::Ticket;
use crate::runtime::http::{OverTls, Response, plain};
use crate::runtime::version::Version;
use crate::runtime::work::WorkGuard;

/// Runs `req` on one of `version`'s instances, holding `guard` and `turn`
/// until the response body is done.
pub(crate) async fn handle<B>(
    version: Arc<Version>,
    guard: WorkGuard,
    turn: OwnedSemaphorePermit,
    req: hyper::Request<B>,
) -> Response
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let Some(instances) = version.instances() else {
        // Only a version of the other world has none; the caller chose.
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the version is not a WASI 0.3 component\n".into(),
        );
    };
    let req = with_origin(req).map(|body| body.map_err(Into::into).boxed_unsync());
    let ticket = Arc::new(Ticket::default());
    match instances.handle(ticket.clone(), req).await {
        Ok(response) => {
            version.count_served();
            response.map(|body| {
                Held {
                    body,
                    _held: (guard, turn),
                }
                .boxed_unsync()
            })
        }
        Err(error) => failure(&version, &ticket, &error),
    }
}

/// The answer for a request that got no response from the guest.
fn failure(version: &Version, ticket: &Ticket, error: &wasmtime::Error) -> Response {
    let generation = version.generation();
    if let Some(code) = error.downcast_ref::<ErrorCode>() {
        return guest_error(code);
    }
    if error.is::<ExpirationError>() {
        tracing::warn!(
            generation,
            "0.3 request got no answer within the request timeout"
        );
        return timed_out(version);
    }
    if let Some(failed) = error.downcast_ref::<InstantiationError<Arc<Ticket>>>() {
        tracing::warn!(generation, error = %failed, "0.3 instance could not start");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the app could not start an instance for this request\n".into(),
        );
    }
    // The instance went away under this request: say why, from what the
    // instance recorded as it ended. It is counted even when this request
    // heard of the failure before the instance's end was recorded (seen in
    // CI: two of four requests on a trapped instance).
    let end = ticket.end();
    version.counters().poisoned_request();
    match end {
        Some(End::Forced) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app version was stopped by the drain deadline before it answered\n".into(),
        ),
        Some(End::TimedOut) => timed_out(version),
        Some(End::Trapped(_)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the app failed while handling this request or one running beside it on the same instance\n"
                .into(),
        ),
        None => {
            tracing::warn!(generation, error = %format!("{error:#}"), "0.3 request failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the app failed while handling this request\n".into(),
            )
        }
    }
}

fn timed_out(version: &Version) -> Response {
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "the app did not answer within {:?} (--request-timeout)\n",
            version.request_timeout()
        ),
    )
}

/// Maps an error the guest returned instead of a response.
fn guest_error(code: &ErrorCode) -> Response {
    let status = match code {
        ErrorCode::HttpRequestDenied => StatusCode::FORBIDDEN,
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ErrorCode::HttpRequestBodySize(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(status, format!("the app reported an error: {code:?}\n"))
}

/// The request with a full URI: a 0.3 guest reads scheme and authority from
/// the request itself, and an HTTP/1.1 request line has neither. The scheme
/// is the host's knowledge (TLS or not), the authority the `Host` header's.
fn with_origin<B>(mut req: hyper::Request<B>) -> hyper::Request<B> {
    let scheme = if req.extensions().get::<OverTls>().is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = req.uri().clone().into_parts();
    if parts.authority.is_none() {
        parts.authority = req
            .headers()
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<Authority>().ok());
    }
    parts.scheme = Some(scheme);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    // Without an authority there is no full URI to give: the guest gets
    // the path alone, as it came.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// A response body that holds the request's work guard and admission turn
/// until it is done or dropped.
struct Held<B> {
    body: B,
    _held: (WorkGuard, OwnedSemaphorePermit),
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_scheme_and_authority() {
        let req = hyper::Request::get("/a?b=1")
            .header("host", "example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(
            with_origin(req).uri().to_string(),
            "http://example.com:8080/a?b=1"
        );
        let mut req = hyper::Request::get("/")
            .header("host", "x")
            .body(())
            .unwrap();
        req.extensions_mut().insert(OverTls);
        assert_eq!(with_origin(req).uri().to_string(), "https://x/");
        // No Host: left as it came.
        let req = hyper::Request::get("/p").body(()).unwrap();
        assert_eq!(with_origin(req).uri().to_string(), "/p");
    }
}
