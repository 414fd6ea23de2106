//! A counter whose count survives reloads and host restarts, kept in the
//! host's key-value store (`wasi:keyvalue`) instead of in the instance.
//!
//! - `GET /` counts a visit and answers the new count;
//! - `GET /count` answers the count without changing it;
//! - `POST /later?key=K&ms=N` answers at once, then after N ms (default
//!   500) writes `K` = this version: work after the response, kept even if
//!   a reload replaced this version meanwhile;
//! - `GET /kv/:bucket/:key` and `PUT /kv/:bucket/:key` read and write any
//!   key of any bucket, so the host's limits can be tried from outside;
//! - `GET /stats` records a read in a JSON document updated with
//!   compare-and-swap, and answers it;
//! - `GET /greeting` answers the `greeting` value of the app's
//!   `wasi:config`.
use serde::{Deserialize, Serialize};
use wasm_host_sdk::kv::{Bucket, KvError};
use wasm_host_sdk::wstd::task::sleep;
use wasm_host_sdk::wstd::time::Duration;
use wasm_host_sdk::{Error, Request, RequestExt, Router, StatusCode, after_response};

/// The key the count lives under, in the `default` bucket.
const HITS: &str = "hits";

fn routes() -> Router {
    Router::new()
        .get("/", |_: Request| -> Result<String, KvError> {
            let count = Bucket::open("default")?.increment(HITS, 1)?;
            Ok(format!("{count}\n"))
        })
        .get("/count", |_: Request| -> Result<String, KvError> {
            let count = Bucket::open("default")?.get_string(HITS)?;
            Ok(format!("{}\n", count.unwrap_or_else(|| "0".into())))
        })
        .post("/later", later)
        .get("/kv/:bucket/:key", read)
        .put("/kv/:bucket/:key", write)
        .get("/stats", stats)
        .get("/greeting", |_: Request| {
            match wasm_host_sdk::config::get("greeting") {
                Ok(Some(text)) => (StatusCode::OK, format!("{text}\n")),
                Ok(None) => (StatusCode::NOT_FOUND, "no greeting configured\n".into()),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        })
}

fn later(req: Request) -> (StatusCode, String) {
    let Some(key) = req.query("key") else {
        return (StatusCode::BAD_REQUEST, "the query needs key=...\n".into());
    };
    let ms = req.query("ms").and_then(|v| v.parse().ok()).unwrap_or(500);
    let version = stamp::version();
    let answer = format!("{version} will write {key}\n");
    after_response(async move {
        sleep(Duration::from_millis(ms)).await;
        let written = Bucket::open("default").and_then(|b| b.set(&key, version));
        if let Err(e) = written {
            eprintln!("counter: late write of {key} failed: {e}");
        }
    });
    (StatusCode::ACCEPTED, answer)
}

fn read(req: Request) -> Result<(StatusCode, Vec<u8>), KvError> {
    let bucket = Bucket::open(req.param("bucket").unwrap_or_default())?;
    Ok(match bucket.get(req.param("key").unwrap_or_default())? {
        Some(value) => (StatusCode::OK, value),
        None => (StatusCode::NOT_FOUND, b"not set\n".to_vec()),
    })
}

async fn write(mut req: Request) -> Result<Result<StatusCode, KvError>, Error> {
    let value = req.body_mut().contents().await?.to_vec();
    let bucket = match Bucket::open(req.param("bucket").unwrap_or_default()) {
        Ok(bucket) => bucket,
        Err(e) => return Ok(Err(e)),
    };
    Ok(bucket
        .set(req.param("key").unwrap_or_default(), value)
        .map(|()| StatusCode::NO_CONTENT))
}

#[derive(Serialize, Deserialize)]
struct Stats {
    reads: u64,
    last_version: String,
}

fn stats(_: Request) -> Result<String, KvError> {
    let stats = Bucket::open("default")?.update_json("stats", |old: Option<Stats>| Stats {
        reads: old.map_or(0, |s| s.reads) + 1,
        last_version: stamp::version().to_string(),
    })?;
    Ok(format!(
        "{{\"reads\":{},\"last_version\":\"{}\"}}\n",
        stats.reads, stats.last_version
    ))
}

wasm_host_sdk::app! {
    handler: routes(),
}
