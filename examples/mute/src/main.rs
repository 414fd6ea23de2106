//! A handler that can return without answering, written on the raw
//! `wasi:http` bindings because the SDKs always answer:
//!
//! - `/mute`: returns without setting a response;
//! - `/once`: answers only as the first request of its instance and returns
//!   without answering after that, as an engine that cannot serve twice
//!   (StarlingMonkey, under componentize-js) does;
//! - anything else: answers how many requests this instance has handled,
//!   which shows whether the host kept an instance that left one
//!   unanswered.
use std::sync::atomic::{AtomicU32, Ordering};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Requests this instance has handled.
static HANDLED: AtomicU32 = AtomicU32::new(0);

struct Mute;

impl Guest for Mute {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
        match request.path_with_query().as_deref() {
            Some("/mute") => return,
            Some("/once") if handled > 1 => return,
            _ => {}
        }
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(format!("count {handled}\n").as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Mute with_types_in wasip2);

/// Never called: the host calls the export above.
fn main() {}
