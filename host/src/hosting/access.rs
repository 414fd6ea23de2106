//! What the host adds to each request it routes, and the access log.
//!
//! Every request gets the client's address in a header of the host's own,
//! [`CLIENT_ADDR`] (`IP:PORT` of the TCP peer); copies the client sent are
//! removed first, so a guest can trust it. A well-formed W3C `traceparent`
//! is attached to the request (as a [`TraceParent`] extension) for the
//! guest's outgoing requests and the access line.
//!
//! With the access log on, each request ends in one event with the target
//! [`ACCESS_TARGET`]: app, generation, method, path, status, duration,
//! response body bytes sent, client address and traceparent. It is written
//! when the response body is done (sent whole, or dropped because the
//! client went away), so the duration and the bytes are the real ones.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use crate::app::ServedBy;
use crate::ops::logfile::ACCESS_TARGET;
use crate::runtime::trace::TraceParent;

/// The request header that carries the client's address to the guest.
pub const CLIENT_ADDR: &str = "wasm-host-client-addr";

/// Readies `req` for its app: [`CLIENT_ADDR`] set to `peer` (whatever the
/// client sent under that name is dropped), and its `traceparent`, if well
/// formed, attached.
pub fn prepare<B>(req: &mut http::Request<B>, peer: SocketAddr) {
    let headers = req.headers_mut();
    // `remove` drops every value under the name, not only the first.
    headers.remove(CLIENT_ADDR);
    if let Ok(value) = HeaderValue::from_str(&peer.to_string()) {
        headers.insert(CLIENT_ADDR, value);
    }
    if let Some(trace) = TraceParent::from_headers(req.headers()) {
        req.extensions_mut().insert(trace);
    }
}

/// What is known of a request when it arrives, for its access line.
pub struct Arrival {
    app: Option<String>,
    method: Method,
    path: String,
    client: SocketAddr,
    trace: Option<TraceParent>,
    started: Instant,
}

impl Arrival {
    /// `req` from `client`, routed to `app` (`None`: no app takes it).
    /// Call after [`prepare`]. The path goes without its query, which often
    /// carries tokens.
    pub fn new<B>(app: Option<&str>, req: &http::Request<B>, client: SocketAddr) -> Self {
        Self {
            app: app.map(str::to_string),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            client,
            trace: req.extensions().get::<TraceParent>().cloned(),
            started: Instant::now(),
        }
    }

    /// Wraps the body of `response`, the answer to this request, so the
    /// access line is written once the body is done.
    pub fn log<B>(self, response: hyper::Response<B>) -> hyper::Response<Logged<B>> {
        let status = response.status();
        let generation = response
            .extensions()
            .get::<ServedBy>()
            .map(|s| s.generation);
        response.map(|inner| Logged {
            inner,
            bytes: 0,
            line: Some(AccessLine {
                arrival: self,
                status,
                generation,
            }),
        })
    }
}

/// One request's access line, waiting for its body's end.
struct AccessLine {
    arrival: Arrival,
    status: StatusCode,
    generation: Option<u64>,
}

impl AccessLine {
    fn write(self, bytes: u64) {
        let a = self.arrival;
        // Microseconds, shown as milliseconds with three decimals.
        let duration_ms = a.started.elapsed().as_micros() as f64 / 1000.0;
        tracing::info!(
            target: ACCESS_TARGET,
            app = a.app.as_deref().map(display),
            generation = self.generation,
            method = %a.method,
            path = %a.path,
            status = self.status.as_u16(),
            duration_ms,
            bytes,
            client = %a.client,
            traceparent = a.trace.as_ref().map(|t| display(t.as_str())),
            "access"
        );
    }
}

/// A response body that counts the bytes it hands out and writes the
/// request's access line when it ends or is dropped.
pub struct Logged<B> {
    inner: B,
    bytes: u64,
    /// Taken when written, so it is written once.
    line: Option<AccessLine>,
}

impl<B> Logged<B> {
    fn finish(&mut self) {
        if let Some(line) = self.line.take() {
            line.write(self.bytes);
        }
    }
}

impl<B> Body for Logged<B>
where
    B: Body + Unpin,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.remaining() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        self.finish();
    }
}
