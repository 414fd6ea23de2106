//! A WASI 0.3 app on the `wasip3` crate: it exports `wasi:http/handler`, so
//! the host runs many of its requests at once on one instance.
//!
//! Routes (each answer names the stamped version, see examples/stamp):
//! - `GET /`: `hello vX from 0.3`;
//! - `GET /slow?ms=N`: answers after N ms (default 1000), naming the
//!   instance that ran it;
//! - `GET /background?ms=N&notify=http://HOST:PORT/PATH`: answers at once,
//!   then works N ms (default 500) after the response and finally calls
//!   `GET http://HOST:PORT/PATH?version=vX`;
//! - `GET /stream?chunks=N&ms=M`: a body of N lines (default 5), M ms
//!   apart (default 100);
//! - `GET /trap?ms=N`: traps after N ms (default 0), ending its instance;
//! - `GET /loop`: spins forever without yielding;
//! - `GET /instance`: the instance's id and how many requests it took;
//! - `GET /count`: counts a visit in the host's key-value store
//!   (`wasi:keyvalue`, shared by every instance and version);
//! - `GET /greeting`: the app's `greeting` value (`wasi:config`);
//! - `GET /generation`: the generation the host gave this version.
//!
//! It also exports the host's lifecycle hooks: `init` refuses a version
//! stamped `bad`, and `drain` says goodbye in the log.
//!
//! State in statics (the instance id, the count) is shared by every request
//! running on the same instance, and gone with the instance.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Request, Response, Scheme};
use wasip3::{wit_future, wit_stream};

wasip3::http::service::export!(App);

struct App;

/// The host's own interfaces (wit/app.wit): key-value state, `wasi:config`,
/// what a version knows about itself, and the lifecycle hooks.
mod host {
    wasip3::wit_bindgen::generate!({
        path: "../../wit",
        world: "wasm-host:app/hooks",
        runtime_path: "wasip3::wit_bindgen::rt",
        generate_all,
    });
}

use host::exports::wasm_host::app::lifecycle;
use host::wasi::keyvalue::{atomics, store};
use host::wasm_host::app::info;

impl lifecycle::Guest for App {
    fn init() -> Result<(), String> {
        match stamp::version() {
            "bad" => Err("bad refuses to start".into()),
            _ => Ok(()),
        }
    }

    fn drain() {
        eprintln!(
            "drain: generation {} of {} says goodbye",
            info::generation(),
            info::app_name()
        );
    }
}

host::export!(App with_types_in host);

/// Requests this instance has taken.
static TAKEN: AtomicU64 = AtomicU64::new(0);

impl wasip3::exports::http::handler::Guest for App {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        TAKEN.fetch_add(1, Ordering::Relaxed);
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let version = stamp::version();
        let answer = match path {
            "/" => text(200, format!("hello {version} from 0.3\n")),
            "/slow" => {
                let ms = number(query, "ms").unwrap_or(1000);
                sleep(ms).await;
                text(
                    200,
                    format!("slow {version} after {ms} ms on instance {}\n", instance()),
                )
            }
            "/background" => {
                let ms = number(query, "ms").unwrap_or(500);
                let notify = param(query, "notify").map(str::to_string);
                // Runs on after `handle` returns: the host counts it as the
                // instance's work and waits for it before a reload retires
                // this version.
                wasip3::spawn_local(async move {
                    sleep(ms).await;
                    if let Some(url) = notify
                        && let Err(e) = tell(&url, version).await
                    {
                        eprintln!("background: notify {url} failed: {e}");
                    }
                });
                text(200, format!("background {version} accepted\n"))
            }
            "/stream" => {
                let chunks = number(query, "chunks").unwrap_or(5);
                let ms = number(query, "ms").unwrap_or(100);
                stream(chunks, ms, version)
            }
            "/trap" => {
                sleep(number(query, "ms").unwrap_or(0)).await;
                panic!("trap asked for by /trap");
            }
            "/loop" => loop {
                std::hint::spin_loop();
            },
            "/instance" => text(
                200,
                format!(
                    "instance {} took {}\n",
                    instance(),
                    TAKEN.load(Ordering::Relaxed)
                ),
            ),
            "/count" => match count() {
                Ok(n) => text(200, format!("{n}\n")),
                Err(e) => text(500, format!("{e}\n")),
            },
            "/greeting" => match host::wasi::config::store::get("greeting") {
                Ok(Some(greeting)) => text(200, format!("{greeting}\n")),
                Ok(None) => text(404, "no greeting configured\n".into()),
                Err(e) => text(500, format!("{e:?}\n")),
            },
            "/generation" => text(200, format!("generation {}\n", info::generation())),
            _ => text(404, format!("no route for {path}\n")),
        };
        Ok(answer)
    }
}

/// One more visit, counted in the host's key-value store.
fn count() -> Result<u64, String> {
    let bucket = store::open("default").map_err(|e| format!("{e:?}"))?;
    atomics::increment(&bucket, "hits", 1).map_err(|e| format!("{e:?}"))
}

/// A random id for this instance, made on first use.
fn instance() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(wasip3::random::random::get_random_u64)
}

async fn sleep(ms: u64) {
    if ms > 0 {
        wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
    }
}

/// A text response whose body is written once `handle` has returned it.
fn text(status: u16, body: String) -> Response {
    let (mut contents, reader) = wit_stream::new();
    let response = respond(status, reader);
    wasip3::spawn_local(async move {
        let _ = contents.write_all(body.into_bytes()).await;
    });
    response
}

/// `chunks` lines, `ms` apart, each sent as it is made.
fn stream(chunks: u64, ms: u64, version: &'static str) -> Response {
    let (mut contents, reader) = wit_stream::new();
    let response = respond(200, reader);
    wasip3::spawn_local(async move {
        for i in 1..=chunks {
            let line = format!("chunk {i} of {chunks} from {version}\n");
            // What comes back was not taken: the client went away.
            if !contents.write_all(line.into_bytes()).await.is_empty() {
                return;
            }
            if i < chunks {
                sleep(ms).await;
            }
        }
    });
    response
}

fn respond(status: u16, contents: wasip3::wit_bindgen::StreamReader<u8>) -> Response {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .unwrap_or_else(|_| Fields::new());
    // No trailers: the writer is dropped, so the reader gets the default.
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(contents), trailers);
    let _ = response.set_status_code(status);
    response
}

/// Makes `GET {url}?version={version}` (url: `http://HOST:PORT/PATH`) and
/// checks the answer.
async fn tell(url: &str, version: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers, None);
    request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(&format!("{path}?version={version}"))))
        .map_err(|()| format!("{url} is not a valid request target"))?;
    let response = wasip3::http::client::send(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    match response.get_status_code() {
        200..=299 => Ok(()),
        status => Err(format!("answered {status}")),
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn number(query: &str, name: &str) -> Option<u64> {
    param(query, name)?.parse().ok()
}

// A binary crate needs a `main`; the host never calls it (it calls the
// exported handler).
fn main() {}
