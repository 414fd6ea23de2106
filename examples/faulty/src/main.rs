//! Misbehaves on demand, to show that a bad request hurts only itself.
//!
//! - `/trap`: panics, which traps the instance;
//! - `/loop`: spins forever without yielding;
//! - `/oom`: allocates until memory runs out;
//! - `/log`: writes a line to stdout and one to stderr, then answers;
//! - `/split-log`: writes one stderr line in three pieces, each through a
//!   fresh stderr handle (as some WASI bindings do per write), then answers;
//! - `/count`: answers how many requests this instance has served, which
//!   shows whether the host reuses instances;
//! - `/hoard`: keeps 48 MiB for the rest of the instance's life, then
//!   answers (an instance whose memory grows for good);
//! - anything else: answers with the version.
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use wstd::http::{Body, Error, Request, Response};

/// Requests this instance has handled.
static HANDLED: AtomicU32 = AtomicU32::new(0);

/// What `/hoard` keeps.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
    match request.uri().path() {
        "/count" => return Ok(Response::new(format!("count {handled}\n").into())),
        "/trap" => panic!("faulty app asked to trap"),
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "/log" => {
            println!("faulty says hello on stdout");
            eprintln!("faulty says hello on stderr");
        }
        "/hoard" => {
            if let Ok(mut hoard) = HOARD.lock() {
                hoard.push(vec![1u8; 48 << 20]);
            }
        }
        "/split-log" => {
            for piece in ["faulty writes ", "one line ", "in three pieces\n"] {
                let stderr = wasip2::cli::stderr::get_stderr();
                // A lost log line must not fail the request.
                let _ = stderr.blocking_write_and_flush(piece.as_bytes());
            }
        }
        _ => {}
    }
    Ok(Response::new(
        format!("faulty {}\n", stamp::version()).into(),
    ))
}
