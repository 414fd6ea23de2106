//! Answers after `?ms=N` milliseconds (default 1000), naming its version.
//!
//! Used to hold a request open across a reload.
use wstd::http::{Body, Error, Request, Response};
use wstd::time::Duration;

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let ms = query_ms(request.uri().query().unwrap_or("")).unwrap_or(1000);
    wstd::task::sleep(Duration::from_millis(ms)).await;
    Ok(Response::new(
        format!("slow {} after {ms} ms\n", stamp::version()).into(),
    ))
}

/// Reads `ms=N` from a query string.
fn query_ms(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
}
