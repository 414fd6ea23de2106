//! Write HTTP apps for wasm-host as plain Rust
//! functions, and take part in your own hot swap.
//!
//! An app is a handler: a function from a [`Request`] to anything that
//! implements [`IntoResponse`], sync or `async`. The [`app!`] macro turns it
//! into a component exporting `wasi:http/incoming-handler` plus the host's
//! `wasm-host:app/lifecycle` hooks. Build it with
//! `cargo build --target wasm32-wasip2` and serve the `.wasm` file, or let
//! `wasm-host serve DIR` build, serve and rebuild it on every save.
//!
//! ```no_run
//! use wasm_host_sdk::{Request, RequestExt, Router, StatusCode};
//!
//! fn routes() -> Router {
//!     Router::new()
//!         .get("/", |_req: Request| "hello\n")
//!         .get("/hello/:name", hello)
//!         .post("/events", record)
//! }
//!
//! async fn hello(req: Request) -> String {
//!     let name = req.param("name").unwrap_or("stranger");
//!     format!("hello {name}, from generation {}\n", wasm_host_sdk::generation())
//! }
//!
//! async fn record(mut req: Request) -> Result<StatusCode, wasm_host_sdk::Error> {
//!     let event = req.body_mut().str_contents().await?.to_owned();
//!     // Runs after the client has its answer; the host waits for it
//!     // before it retires this version.
//!     wasm_host_sdk::after_response(async move {
//!         eprintln!("stored {} bytes", event.len());
//!     });
//!     Ok(StatusCode::ACCEPTED)
//! }
//!
//! fn init() -> Result<(), String> {
//!     std::env::var("GREETING")
//!         .map(drop)
//!         .map_err(|_| "set GREETING before deploying this version".to_string())
//! }
//!
//! fn drain() {
//!     eprintln!("generation {} is leaving", wasm_host_sdk::generation());
//! }
//!
//! wasm_host_sdk::app! {
//!     handler: routes(),
//!     init: init,
//!     drain: drain,
//! }
//! ```
//!
//! What the host does with each part:
//!
//! - **handler**: every request gets a fresh instance (state does not
//!   survive between requests unless the host reuses instances), so build
//!   per-request things freely; the handler expression is evaluated once
//!   per request.
//! - **[`after_response`]**: the work runs once the response body is sent;
//!   the request counts as in flight until it ends, so a reload never cuts
//!   it short (like `waitUntil` in a Worker).
//! - **init**: runs once when a version loads, before it takes traffic. An
//!   `Err`, a panic or running past `--ready-timeout` refuses the version;
//!   the running one keeps serving and `wasm-host reload` prints the text.
//! - **drain**: runs once when the version stops taking new requests; the
//!   version is not dropped before it returns.
//!
//! Bodies stream both ways: read a request with [`Body`]'s methods
//! (`contents`, `str_contents`, `json`, or frame by frame through
//! [`Body::into_boxed_body`] and [`BodyExt`]), and answer with
//! [`Body::from_stream`] to send a large body piece by piece (the streams
//! of [`futures_lite`] are re-exported), or pass a request's body on as a
//! response's to stream it straight through. Call other
//! services with [`Client`] (the host only lets an app reach the hosts named
//! with `--allow-http`). The async runtime, timers and I/O are those of
//! [`wstd`], re-exported whole.
//!
//! WebSockets and server-sent events live in [`realtime`]: the host holds
//! the connections and hands the app each batch of a WebSocket's events as
//! a request ([`realtime::serve`] answers it with a
//! [`realtime::SocketHandler`]); connections subscribe to channels, and
//! [`realtime::publish`] reaches every subscriber, from a handler or from
//! work after the response. Held streams ([`realtime::hold_stream`]) carry
//! server-sent events the same way. The protocol is Pushpin's, so the same
//! app also runs behind Pushpin.
//!
//! An app built with this crate imports `wasm-host:app/info`, so it runs on
//! wasm-host; a plain `wstd` or `wasip2` component runs on wasm-host too.

#![warn(missing_docs)]

mod background;
pub mod config;
mod handler;
mod hooks;
pub mod kv;
pub mod realtime;
mod response;
mod router;

pub use background::after_response;
pub use handler::Handler;
pub use hooks::{Hook, HookOutcome, app_name, generation};
pub use response::IntoResponse;
pub use router::{Params, RequestExt, Router};

pub use futures_lite;
pub use wstd;
/// The HTTP types: `http` crate types over the WASI body type.
pub use wstd::http;
pub use wstd::http::BodyExt;
pub use wstd::http::{Body, Client, Error, HeaderMap, HeaderValue, Method, StatusCode};
pub use wstd::runtime::block_on;

/// An incoming request, its body streaming in.
pub type Request = wstd::http::Request<Body>;

/// A response, its body sent (or streamed) after the status and headers.
pub type Response = wstd::http::Response<Body>;

/// The bindings of the host's own WIT, for the [`app!`] macro.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasm-host:app/hooks",
        pub_export_macro: true,
        export_macro_name: "__export_hooks",
        default_bindings_module: "::wasm_host_sdk::__bindings",
        generate_all,
    });
}

/// What the [`app!`] macro expands to; not a public API.
#[doc(hidden)]
pub mod __internal {
    pub use crate::__bindings::exports::wasm_host::app::lifecycle::Guest as LifecycleGuest;
    pub use crate::handler::serve;
    pub use crate::hooks::{run_drain, run_init};
    pub use wstd::__internal::wasip2;
    pub use wstd::__internal::wasip2::exports::http::incoming_handler::Guest as IncomingGuest;
    pub use wstd::__internal::wasip2::http::types::{IncomingRequest, ResponseOutparam};
}

/// Makes this crate's component: exports the handler as
/// `wasi:http/incoming-handler` and the optional `init` and `drain` hooks as
/// `wasm-host:app/lifecycle`.
///
/// `handler` is an expression giving a [`Handler`] (a function or a
/// [`Router`]), evaluated once per request. `init` and `drain` name
/// functions taking nothing, sync or `async`; `init` returns `()` or
/// `Result<(), E>` with `E: Display`. Use it once, at the top level of
/// `src/main.rs` (it provides `main`).
///
/// ```no_run
/// async fn hello(_req: wasm_host_sdk::Request) -> &'static str {
///     "hello\n"
/// }
/// wasm_host_sdk::app!(hello);
/// ```
#[macro_export]
macro_rules! app {
    ($handler:expr $(,)?) => {
        $crate::app!(handler: $handler);
    };
    (handler: $handler:expr $(, init: $init:expr)? $(, drain: $drain:expr)? $(,)?) => {
        struct __WasmHostApp;

        impl $crate::__internal::IncomingGuest for __WasmHostApp {
            fn handle(
                request: $crate::__internal::IncomingRequest,
                response_out: $crate::__internal::ResponseOutparam,
            ) {
                $crate::__internal::serve($handler, request, response_out)
            }
        }

        impl $crate::__internal::LifecycleGuest for __WasmHostApp {
            fn init() -> ::core::result::Result<(), ::std::string::String> {
                $( return $crate::__internal::run_init($init); )?
                #[allow(unreachable_code)]
                Ok(())
            }

            fn drain() {
                $( $crate::__internal::run_drain($drain); )?
            }
        }

        $crate::__internal::wasip2::http::proxy::export!(
            __WasmHostApp with_types_in $crate::__internal::wasip2
        );
        $crate::__bindings::__export_hooks!(__WasmHostApp with_types_in $crate::__bindings);

        /// Never called: the host calls the exports above. A binary crate
        /// needs a `main` all the same.
        #[allow(dead_code)]
        fn main() {}
    };
}
