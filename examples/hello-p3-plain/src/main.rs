//! The WASI 0.3 hello the benchmark serves with wasm-host and with
//! `wasmtime serve` alike: it exports `wasi:http/service` and imports only
//! WASI, so any 0.3 host can run it. (`hello-p3` also imports the host's
//! own interfaces, which `wasmtime serve` does not provide.)
//!
//! Every request is answered `hello vX from 0.3` (the stamped version, see
//! examples/stamp).

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(App);

struct App;

impl wasip3::exports::http::handler::Guest for App {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let body = format!("hello {} from 0.3\n", stamp::version());
        let (mut contents, reader) = wit_stream::new();
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .unwrap_or_else(|_| Fields::new());
        // No trailers: dropping the writer resolves the future to `ok(none)`.
        let (_, trailers) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(reader), trailers);
        // The body is written once `handle` has handed the response over:
        // a stream's write waits for its reader, which the host only gets
        // from the returned response.
        wasip3::spawn_local(async move {
            let _ = contents.write_all(body.into_bytes()).await;
        });
        Ok(response)
    }
}

// A binary crate needs a `main`; the host never calls it (it calls the
// exported handler).
fn main() {}
