//! [`IntoResponse`]: the values a handler may return instead of building a
//! [`Response`] by hand.

use wstd::http::HeaderValue;

use crate::{Body, Error, Response, StatusCode};

/// A value a handler can answer with.
///
/// Text becomes a `200 text/plain` response, bytes `application/octet-stream`,
/// a [`StatusCode`] an empty response with that status, `(StatusCode, body)`
/// sets both, and a `Result` answers with whichever side it holds. An
/// [`Error`] answers `500` and writes the error to stderr, so `?` works in
/// handlers that return `Result<_, Error>`.
pub trait IntoResponse {
    /// Makes the response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self;
        response
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        StatusCode::OK.into_response()
    }
}

/// A whole body in memory: its length is known, so the client gets a
/// `content-length` instead of a chunked body.
fn typed(bytes: Vec<u8>, content_type: &'static str) -> Response {
    let length = HeaderValue::from(bytes.len());
    let mut response = Response::new(bytes.into());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert("content-length", length);
    response
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        typed(self.into_bytes(), "text/plain; charset=utf-8")
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        typed(self.as_bytes().to_vec(), "text/plain; charset=utf-8")
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        typed(self, "application/octet-stream")
    }
}

impl IntoResponse for Body {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

impl<B: IntoResponse> IntoResponse for (StatusCode, B) {
    fn into_response(self) -> Response {
        let mut response = self.1.into_response();
        *response.status_mut() = self.0;
        response
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(answer) => answer.into_response(),
            Err(error) => error.into_response(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // The details go to the log, not to the client.
        eprintln!("wasm-host-sdk: handler failed: {self:#}");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
    }
}
