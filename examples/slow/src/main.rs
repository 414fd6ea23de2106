//! Answers after `?ms=N` milliseconds (default 1000), naming its version.
//!
//! Used to hold a request open across a reload.
use wasm_host_sdk::wstd::task::sleep;
use wasm_host_sdk::wstd::time::Duration;
use wasm_host_sdk::{Request, RequestExt};

async fn slow(request: Request) -> String {
    let ms = request
        .query("ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    sleep(Duration::from_millis(ms)).await;
    format!("slow {} after {ms} ms\n", stamp::version())
}

wasm_host_sdk::app!(slow);
