//! Property tests ("fuzzing" on the stable toolchain) of the two parsers
//! that take text from outside the process: the config file
//! (`config_file::parse`) and the control protocol's request line
//! (`control::parse_request`).
//!
//! Inputs start from real config snippets and real control requests, then
//! get mutated (bytes inserted, removed, duplicated, swapped for values
//! that have broken parsers before: huge numbers, absurd durations, odd
//! Unicode, newlines), so most cases get past the TOML or JSON syntax and
//! into the checks behind it. The property is the same for both: the
//! parser never panics, and a refusal always says something.
//!
//! Bounded so `cargo test` stays quick: a fixed number of cases per
//! property (`FUZZ_CASES`, default 2048, raise it for a longer local run)
//! and a time budget per property.

use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use wasm_host::config::file::{Overrides, parse};
use wasm_host::control::socket::{ControlRequest, parse_request};

/// Real config files, as the README and the tests write them.
const CONFIG_SEEDS: &[&str] = &[
    r#"
listen = "127.0.0.1:9000"

[app.shop]
component = "a.wasm"
hosts = ["shop.test"]
env = { GREETING = "hi" }
dirs = { "/static" = "static" }
max_memory = "64MiB"
max_concurrency = 10
max_body = "1KiB"

[app.blog]
component = "a.wasm"
path = "/blog"
watch = false
"#,
    r#"[app.one]
component = "a.wasm"
request_timeout = "5s"
drain_timeout = "30s"
ready_timeout = "10s"
queue_timeout = "250ms"
max_queue = 100
reuse_instances = 4
keyvalue = "memory"
shared_buckets = ["sessions"]
config = { greeting = "hello" }
allow_http = ["api.example.com:443", "127.0.0.1:9000"]
"#,
    r#"admin = "127.0.0.1:9100"
control = "ctl.sock"
cache_dir = "cache"
data_dir = "data"
tier_up_above = "0"
watch_config = false

[app.api]
component = "oci://127.0.0.1:5000/team/api:v1"
watch_tag = "30s"
listen = ["127.0.0.1:8081", "127.0.0.1:8082"]
keyvalue = "redis://127.0.0.1:6379"
"#,
    "[app.x]\ncomponent = \"a.wasm\"\nmax_memroy = \"1G\"\n",
    "[app.a]\ncomponent = \"a.wasm\"\nmax_concurrency = 600\n[app.b]\ncomponent = \"a.wasm\"\npath = \"/b\"\nmax_concurrency = 400\n",
];

/// Real control requests, as the CLI sends them.
const CONTROL_SEEDS: &[&str] = &[
    r#"{"cmd":"reload","app":null,"path":null,"canary":null}"#,
    r#"{"cmd":"reload","app":"shop","path":"/srv/shop-v2.wasm","canary":{"percent":10.0,"sticky_header":"x-wasm-host-sticky","auto_abort":{"max_error_percent":5.0,"window":{"secs":30,"nanos":0},"min_requests":20}}}"#,
    r#"{"cmd":"reload","path":"oci://127.0.0.1:5000/team/api:v2"}"#,
    r#"{"cmd":"promote","app":"shop"}"#,
    r#"{"cmd":"abort"}"#,
    r#"{"cmd":"rollback","app":null}"#,
    r#"{"cmd":"status","app":"blog"}"#,
    r#"{"cmd":"apply-config","path":"/etc/wasm-host.toml"}"#,
    r#"{"cmd":"apply-config","path":null}"#,
];

/// Values that have broken parsers before, spliced into the seeds.
const NASTY: &[&str] = &[
    "18446744073709551615s",
    "18446744073709551616",
    "99999999999999999999999h",
    "-1",
    "0",
    "1e308",
    "NaN",
    "null",
    "\"\"",
    "\"\n\"",
    "[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'''",
    "\\u0000",
    "\u{0}",
    "\u{1b}[31m",
    "\u{2028}",
    "é",
    "𝕏",
    "..",
    "/",
    "oci://",
    "redis://",
    "[app.",
    "component = ",
    "\"cmd\":",
    "\"secs\":18446744073709551615,\"nanos\":4294967295",
    "{\"secs\":1,\"nanos\":1000000000}",
    "1KiB",
    "0.0.0.0:0",
    "[::1]:80",
];

/// One change to a text.
#[derive(Clone, Debug)]
enum Mutation {
    /// Insert bytes of `NASTY[which]` at a position (a fraction of the length).
    Splice { at: f64, which: usize },
    /// Insert an arbitrary character.
    Char { at: f64, c: char },
    /// Remove a span.
    Cut { at: f64, len: usize },
    /// Repeat a span in place.
    Repeat { at: f64, len: usize, times: usize },
    /// Replace the number or quoted value after a position with a nasty one.
    Replace { at: f64, which: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..=1.0f64;
    prop_oneof![
        (at.clone(), 0..NASTY.len()).prop_map(|(at, which)| Mutation::Splice { at, which }),
        (at.clone(), any::<char>()).prop_map(|(at, c)| Mutation::Char { at, c }),
        (at.clone(), 1..40usize).prop_map(|(at, len)| Mutation::Cut { at, len }),
        (at.clone(), 1..30usize, 1..20usize).prop_map(|(at, len, times)| Mutation::Repeat {
            at,
            len,
            times
        }),
        (at, 0..NASTY.len()).prop_map(|(at, which)| Mutation::Replace { at, which }),
    ]
}

/// The char boundary at or before `fraction` of `text`.
fn position(text: &str, fraction: f64) -> usize {
    let mut at = ((text.len() as f64) * fraction) as usize;
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The char boundary at or before `at + len`.
fn end_of(text: &str, at: usize, len: usize) -> usize {
    let mut end = at.saturating_add(len).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn apply(mut text: String, mutations: &[Mutation]) -> String {
    for m in mutations {
        match *m {
            Mutation::Splice { at, which } => {
                let at = position(&text, at);
                text.insert_str(at, NASTY[which]);
            }
            Mutation::Char { at, c } => {
                let at = position(&text, at);
                text.insert(at, c);
            }
            Mutation::Cut { at, len } => {
                let at = position(&text, at);
                let end = end_of(&text, at, len);
                text.replace_range(at..end, "");
            }
            Mutation::Repeat { at, len, times } => {
                let at = position(&text, at);
                let end = end_of(&text, at, len);
                let span = text[at..end].repeat(times);
                text.insert_str(end, &span);
            }
            Mutation::Replace { at, which } => {
                // The value after the next `=` or `:`, up to the line's or
                // the pair's end: where the checks behind the syntax look.
                let from = position(&text, at);
                let Some(sep) = text[from..].find(['=', ':']).map(|i| from + i + 1) else {
                    continue;
                };
                let end = text[sep..]
                    .find(['\n', ',', '}'])
                    .map_or(text.len(), |i| sep + i);
                text.replace_range(sep..end, &format!(" \"{}\"", NASTY[which]));
            }
        }
    }
    text
}

/// Seeds from `seeds`, each with up to 8 mutations; also whole random text.
fn mutated(seeds: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..seeds.len(), prop::collection::vec(mutation(), 0..8))
            .prop_map(move |(seed, ms)| apply(seeds[seed].to_string(), &ms)),
        1 => any::<String>(),
    ]
}

/// Past this, the remaining cases of a property pass without running, so a
/// slow machine still finishes in bounded time.
const BUDGET: Duration = Duration::from_secs(20);

/// Cases per property; `FUZZ_CASES` raises it for a longer run.
fn runner() -> TestRunner {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2048);
    let config = Config {
        cases,
        // Failures are reported with their input; nothing is written to a
        // regressions file in the source tree.
        failure_persistence: None,
        ..Config::default()
    };
    // A fixed seed keeps CI deterministic; FUZZ_CASES runs explore more.
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// A directory with a component file and a static folder, so mutated
/// configs that name them get past the file checks.
fn workdir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.wasm"), b"not really wasm").expect("write");
        std::fs::create_dir(dir.path().join("static")).expect("mkdir");
        dir
    })
    .path()
}

#[test]
fn config_file_parser_never_panics_and_explains_refusals() {
    let file = workdir().join("wasm-host.toml");
    let started = Instant::now();
    let (accepted, refused) = (Cell::new(0u32), Cell::new(0u32));
    let result = runner().run(&mutated(CONFIG_SEEDS), |text| {
        if started.elapsed() > BUDGET {
            return Ok(());
        }
        match parse(&text, &file, &Overrides::default()) {
            Ok(config) => {
                prop_assert!(!config.apps.is_empty(), "accepted with no app:\n{text}");
                for app in &config.apps {
                    // Accepted durations are within the documented bound.
                    prop_assert!(
                        app.settings.drain_timeout <= wasm_host::app::limits::MAX_DURATION
                    );
                    prop_assert!(
                        app.settings.limits.queue_timeout <= wasm_host::app::limits::MAX_DURATION
                    );
                }
                accepted.set(accepted.get() + 1);
            }
            Err(e) => {
                prop_assert!(
                    !format!("{e:#}").trim().is_empty(),
                    "empty error for:\n{text}"
                );
                refused.set(refused.get() + 1);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "config file: {} accepted, {} refused in {:?}",
        accepted.get(),
        refused.get(),
        started.elapsed()
    );
    // The mutations must not only ever produce syntax errors.
    assert!(accepted.get() > 0, "no mutated config was accepted");
}

#[test]
fn control_request_parser_never_panics_and_explains_refusals() {
    let started = Instant::now();
    let (accepted, refused) = (Cell::new(0u32), Cell::new(0u32));
    let result = runner().run(&mutated(CONTROL_SEEDS), |line| {
        if started.elapsed() > BUDGET {
            return Ok(());
        }
        match parse_request(&line) {
            Ok(request) => {
                // What the host does next with a reload's plan must not
                // panic either, and a request survives a round trip.
                if let ControlRequest::Reload {
                    canary: Some(plan), ..
                } = &request
                {
                    let _ = plan.validate();
                }
                let again = serde_json::to_string(&request).expect("a request serializes");
                prop_assert!(parse_request(&again).is_ok(), "no round trip: {again}");
                accepted.set(accepted.get() + 1);
            }
            Err(e) => {
                prop_assert!(e.starts_with("malformed control request: "), "{e}");
                prop_assert!(e.len() > "malformed control request: ".len());
                refused.set(refused.get() + 1);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "control requests: {} accepted, {} refused in {:?}",
        accepted.get(),
        refused.get(),
        started.elapsed()
    );
    assert!(accepted.get() > 0, "no mutated request was accepted");
}
