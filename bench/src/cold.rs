//! The cold reload of a large component under load: how soon the new
//! version serves, what its compile does to the other traffic's p99, and
//! how long until optimized code takes over.
//!
//! Each trial reloads a never-seen version (a new stamp), so nothing comes
//! from a cache. This module only measures; the report renders.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::load::{self, LoadSpec};
use crate::report::{Cold, ColdTrial};
use crate::servers::{Kind, Server, Tools};

/// Cold reloads measured; the report shows each and the median.
const TRIALS: usize = 3;

/// `wasmtime compile` runs per compiler for the reference time (median).
const REFERENCE_RUNS: usize = 3;

/// How long a trial waits for optimized code before giving up on it.
const TIER_UP_LIMIT: Duration = Duration::from_secs(120);

/// Runs [`TRIALS`] cold reloads of `big` on a host first serving
/// `component`, each under `connections` keep-alive connections, with
/// `rest` of load before the reload and after optimized code took over.
pub fn measure(
    tools: &Tools,
    component: &Path,
    big: &Path,
    rest: Duration,
    connections: usize,
) -> Result<Cold> {
    let bytes = std::fs::read(big).context("big.wasm was not built")?;
    // Reference first, on a quiet machine, as the numbers were taken.
    let reference = tools.wasmtime.as_ref().map(|w| {
        (
            median_compile(w, big, "cranelift"),
            median_compile(w, big, "winch"),
        )
    });
    let server = Server::start(&Kind::WasmHost(vec![]), tools, component)?;
    let mut trials = Vec::new();
    for n in 0..TRIALS {
        let version = format!("big{n}");
        let path = tools.scratch.join(format!("{version}.wasm"));
        let stamped = stamp::restamp(&bytes, &version).context("big.wasm carries no stamp")?;
        std::fs::write(&path, stamped)?;
        let trial = trial(&server, &path, &version, rest, connections)?;
        println!(
            "cold reload {}/{TRIALS}: compiled in {} ms, serving after {:?}, optimized after {:?}; p99 {:.2} ms at rest, {:.2} ms while compiling; {} errors",
            n + 1,
            trial.compile_ms,
            trial.serving,
            trial.optimized_after,
            trial.rest_p99_ms,
            trial.compiling_p99_ms,
            trial.errors
        );
        trials.push(trial);
    }
    Ok(Cold {
        size: bytes.len() as u64,
        trials,
        reference,
    })
}

/// One reload of `path` (answering `big VERSION`) under load.
fn trial(
    server: &Server,
    path: &Path,
    version: &str,
    rest: Duration,
    connections: usize,
) -> Result<ColdTrial> {
    let stop = Arc::new(AtomicBool::new(false));
    let spec = LoadSpec {
        addr: server.addr,
        connections,
        // The run stops itself once optimized code has served a while.
        duration: rest * 2 + TIER_UP_LIMIT,
        keep_alive: true,
        stop: Some(stop.clone()),
    };
    let (result, sent, outcome, done, optimized) = std::thread::scope(|scope| -> Result<_> {
        let loader = scope.spawn(|| load::run(&spec));
        std::thread::sleep(rest);
        let sent = Instant::now();
        let outcome = server.reload(path);
        let done = Instant::now();
        let optimized = outcome
            .as_ref()
            .ok()
            .and_then(|_| wait_optimized(server, sent + TIER_UP_LIMIT));
        std::thread::sleep(rest);
        stop.store(true, Ordering::Relaxed);
        let result = loader
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        Ok((result, sent, outcome?, done, optimized))
    })?;
    let since_start = |at: Instant| at.saturating_duration_since(result.started);
    let p99 = |from: Instant, to: Instant| {
        result
            .window(since_start(from), since_start(to) + load::BUCKET)
            .value_at_quantile(0.99) as f64
            / 1000.0
    };
    let rest_p99_ms = result.window(Duration::ZERO, rest).value_at_quantile(0.99) as f64 / 1000.0;
    let serving = result.first_answer(&format!("big {version}"), sent);
    Ok(ColdTrial {
        compile_ms: outcome.compile_ms,
        serving: serving.map(|at| at.saturating_duration_since(sent)),
        rest_p99_ms,
        compiling_p99_ms: p99(sent, done),
        optimized_after: optimized.map(|at| at.saturating_duration_since(sent)),
        optimizing_p99_ms: optimized.map(|at| p99(done, at)),
        errors: result.errors,
    })
}

/// Polls the host until its live version runs optimized code, or `until`.
fn wait_optimized(server: &Server, until: Instant) -> Option<Instant> {
    while Instant::now() < until {
        let status = server.status().ok()?;
        let live = status.versions.iter().find(|v| v.state == "live")?;
        if live.tier == "optimized" {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Median wall time of `wasmtime compile` with `compiler` over
/// [`REFERENCE_RUNS`] runs, without its cache.
fn median_compile(wasmtime: &Path, component: &Path, compiler: &str) -> Option<Duration> {
    let out = std::env::temp_dir().join(format!("wasm-host-bench-{compiler}.cwasm"));
    let mut times = Vec::new();
    for _ in 0..REFERENCE_RUNS {
        let started = Instant::now();
        let status = Command::new(wasmtime)
            .arg("compile")
            .args(["-C", "cache=n", "-C"])
            .arg(format!("compiler={compiler}"))
            .arg("-o")
            .arg(&out)
            .arg(component)
            .status()
            .ok()?;
        let took = started.elapsed();
        if !status.success() {
            return None;
        }
        times.push(took);
    }
    let _ = std::fs::remove_file(&out);
    times.sort();
    times.get(times.len() / 2).copied()
}
