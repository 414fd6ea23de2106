//! Answers at once, then keeps working after the response has gone out.
//!
//! `GET /?ms=N&notify=http://HOST:PORT/PATH` sends `background vX accepted`,
//! then works for N milliseconds (default 500) and finally makes an outgoing
//! `GET http://HOST:PORT/PATH?version=vX`, so whoever listens there sees that
//! the work after the response finished.
use wasm_host_sdk::wstd::task::sleep;
use wasm_host_sdk::wstd::time::Duration;
use wasm_host_sdk::{Body, Client, Error, Request, RequestExt, after_response, http};

async fn accept(request: Request) -> String {
    let ms = request
        .query("ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let notify = request.query("notify");
    let version = stamp::version();
    after_response(async move {
        sleep(Duration::from_millis(ms)).await;
        if let Some(url) = notify
            && let Err(e) = tell(&url, version).await
        {
            eprintln!("background: notify {url} failed: {e:#}");
        }
    });
    format!("background {version} accepted\n")
}

/// Makes `GET {url}?version={version}` and waits for its answer.
async fn tell(url: &str, version: &str) -> Result<(), Error> {
    let request = http::Request::get(format!("{url}?version={version}")).body(Body::empty())?;
    let response = Client::new().send(request).await?;
    if !response.status().is_success() {
        return Err(Error::msg(format!("answered {}", response.status())));
    }
    Ok(())
}

wasm_host_sdk::app!(accept);
