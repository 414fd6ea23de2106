//! Handlers: what turns a request into a response, and the entry point the
//! [`app!`](crate::app) macro calls for each request.
//!
//! This module owns the order of a request's life (answer, then the work
//! after the response); it does not route and does not know about hooks.

use std::future::Future;
use std::pin::Pin;

use wstd::__internal::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use wstd::http::server::Responder;

use crate::{IntoResponse, Request, Response, StatusCode, background};

/// The future a type-erased handler returns.
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = Response>>>;

/// Anything that answers a request: a function (sync or `async`) from
/// [`Request`] to an [`IntoResponse`] value, or a [`Router`](crate::Router).
///
/// `M` only tells the sync and async function forms apart; it is inferred.
pub trait Handler<M>: 'static {
    /// Answers one request.
    fn call(&self, request: Request) -> ResponseFuture;
}

/// Marks handlers that return their answer directly.
#[doc(hidden)]
pub enum Plain {}

/// Marks handlers that return a future of their answer.
#[doc(hidden)]
pub enum Awaited {}

impl<F, R> Handler<(Plain, R)> for F
where
    F: Fn(Request) -> R + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request) -> ResponseFuture {
        let response = self(request).into_response();
        Box::pin(std::future::ready(response))
    }
}

impl<F, Fut> Handler<(Awaited, Fut)> for F
where
    F: Fn(Request) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: IntoResponse,
{
    fn call(&self, request: Request) -> ResponseFuture {
        let answer = self(request);
        Box::pin(async move { answer.await.into_response() })
    }
}

/// Headers a component may not send (the host refuses them, which would
/// fail the whole response); they are about the connection, which the host
/// owns, so they are dropped instead.
const CONNECTION_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// Answers one incoming request with `handler`, then runs the work queued
/// with [`after_response`](crate::after_response) before returning, so the
/// host counts that work as part of the request.
pub fn serve<H: Handler<M>, M>(
    handler: H,
    incoming: IncomingRequest,
    response_out: ResponseOutparam,
) {
    let responder = Responder::new(response_out);
    wstd::runtime::block_on(async move {
        let mut response = match wstd::http::request::try_from_incoming(incoming) {
            Ok(request) => handler.call(request).await,
            Err(e) => (
                StatusCode::BAD_REQUEST,
                format!("malformed request: {e:#}\n"),
            )
                .into_response(),
        };
        let headers = response.headers_mut();
        for name in CONNECTION_HEADERS {
            headers.remove(name);
        }
        if let Err(e) = responder.respond(response).await {
            // The client went away or the body stream failed; the work
            // queued for after the response still runs.
            eprintln!("wasm-host-sdk: sending the response failed: {e:#}");
        }
        background::run_queued().await;
    });
}
