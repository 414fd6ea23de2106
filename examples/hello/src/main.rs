//! The smallest app: answers every request with its version.
use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    Ok(Response::new(
        format!("hello from {}\n", stamp::version()).into(),
    ))
}
