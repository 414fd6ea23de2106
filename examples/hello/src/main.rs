//! The smallest app: answers every request with its version.
//!
//! Built on this project's SDK; the tests rewrite the version stamp in the
//! compiled bytes to make as many distinct versions as they need.
use wasm_host_sdk::Request;

fn hello(_request: Request) -> String {
    format!("hello from {}\n", stamp::version())
}

wasm_host_sdk::app!(hello);
