//! What every request shares, whichever the world of the version that
//! serves it: the response type, the TLS marker, and the host's own short
//! answers.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::WasiBody;

/// The response type the server sends (the same body type in both worlds).
pub type Response = hyper::Response<WasiBody>;

/// Marks a request that arrived over TLS, so the guest is told `https`.
/// The listener inserts it as a request extension; without it the scheme
/// is `http`. (A marker rather than the URI's scheme: an HTTP/1.1 request
/// line carries none, and an h2 client's `:scheme` is its own claim.)
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// A short text response made by the host itself.
pub(crate) fn plain(status: StatusCode, text: String) -> Response {
    let body = Full::new(Bytes::from(text))
        .map_err(Into::into)
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
