//! Cold reloads of large components under load: how soon the new version
//! serves, what its compile does to the other traffic's p99, and how long
//! until optimized code takes over.
//!
//! Each trial reloads a never-seen version, so nothing comes from a cache.
//! The Rust `big` example gets a new version stamp per trial; a component
//! without a stamp (the componentize-py one) gets a custom section holding
//! a nonce, which changes its digest and nothing else. This module only
//! measures; the report renders.

use std::path::{Path, PathBuf};
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

/// A component to reload cold, and the app it replaces.
pub struct Subject {
    /// How the report names it.
    pub label: String,
    /// The component file.
    pub path: PathBuf,
    /// What the host serves before each trial (the "other traffic").
    pub baseline: PathBuf,
    /// How the report names the baseline.
    pub traffic: String,
    /// How a never-seen version of it is made.
    pub fresh: Fresh,
    /// How long a trial waits for optimized code before giving up on it.
    pub tier_up_limit: Duration,
}

/// How [`Subject`] makes a never-seen version.
pub enum Fresh {
    /// A new version stamp (examples/stamp); the version answers
    /// `PREFIX VERSION`, so each trial's answer is its own.
    Stamp {
        /// The answer's first word.
        prefix: &'static str,
    },
    /// A custom section with a nonce appended; every version gives the
    /// same `answer`, so the baseline goes live again before each trial
    /// (else the new version's first answer could not be told apart).
    Nonce {
        /// The body of `GET /`.
        answer: String,
    },
}

impl Subject {
    /// Trial `n`'s component bytes and the answer that shows it serves.
    fn version(&self, bytes: &[u8], n: usize) -> Result<(Vec<u8>, String)> {
        match &self.fresh {
            Fresh::Stamp { prefix } => {
                let version = format!("{prefix}{n}");
                let stamped = stamp::restamp(bytes, &version)
                    .with_context(|| format!("{} carries no stamp", self.path.display()))?;
                Ok((stamped, format!("{prefix} {version}")))
            }
            Fresh::Nonce { answer } => {
                // Unique across runs too, though each run has its own cache.
                let nonce = format!("{}-{n}", std::process::id());
                Ok((
                    with_custom_section(bytes, "bench-nonce", nonce.as_bytes()),
                    answer.clone(),
                ))
            }
        }
    }
}

/// `component` with a custom section `name` holding `payload` appended. A
/// custom section may come anywhere in a component and means nothing to
/// the runtime; it only changes the bytes, so the digest the host's code
/// caches use.
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut contents = leb128(name.len() as u64);
    contents.extend_from_slice(name.as_bytes());
    contents.extend_from_slice(payload);
    let mut out = component.to_vec();
    // Section id 0 (custom), then the contents' size as unsigned LEB128.
    out.push(0);
    out.extend(leb128(contents.len() as u64));
    out.extend(contents);
    out
}

/// `value` as unsigned LEB128, as the binary format writes sizes.
fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Runs [`TRIALS`] cold reloads of `subject` on a host first serving its
/// baseline, each under `connections` keep-alive connections, with `rest`
/// of load before the reload and after optimized code took over.
pub fn measure(
    tools: &Tools,
    subject: &Subject,
    rest: Duration,
    connections: usize,
) -> Result<Cold> {
    let bytes = std::fs::read(&subject.path)
        .with_context(|| format!("cannot read {}", subject.path.display()))?;
    // Reference first, on a quiet machine, as the numbers were taken.
    let reference = tools.wasmtime.as_ref().map(|w| {
        (
            median_compile(w, &subject.path, "cranelift"),
            median_compile(w, &subject.path, "winch"),
        )
    });
    let server = Server::start(&Kind::WasmHost(vec![]), tools, &subject.baseline)?;
    let mut trials = Vec::new();
    for n in 0..TRIALS {
        let (version, answer) = subject.version(&bytes, n)?;
        let path = tools
            .scratch
            .join(format!("cold-{n}-{}", file_name(&subject.path)));
        std::fs::write(&path, version)?;
        if n > 0 && matches!(subject.fresh, Fresh::Nonce { .. }) {
            // Cached (it served first), so this swap compiles nothing.
            server.reload(&subject.baseline)?;
        }
        let trial = trial(
            &server,
            &path,
            &answer,
            rest,
            connections,
            subject.tier_up_limit,
        )?;
        println!(
            "cold reload of {} {}/{TRIALS}: compiled in {} ms, serving after {:?}, optimized after {:?}; p99 {:.2} ms at rest, {:.2} ms while compiling; {} errors",
            subject.label,
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
        label: subject.label.clone(),
        traffic: subject.traffic.clone(),
        size: bytes.len() as u64,
        trials,
        reference,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "component.wasm".into())
}

/// One reload of `path` (answering `answer`) under load.
fn trial(
    server: &Server,
    path: &Path,
    answer: &str,
    rest: Duration,
    connections: usize,
    tier_up_limit: Duration,
) -> Result<ColdTrial> {
    let stop = Arc::new(AtomicBool::new(false));
    let spec = LoadSpec {
        addr: server.addr,
        connections,
        // The run stops itself once optimized code has served a while.
        duration: rest * 2 + tier_up_limit,
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
            .and_then(|_| server.optimized_by(sent + tier_up_limit));
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
    let serving = result.first_answer(answer, sent);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_matches_the_spec_examples() {
        assert_eq!(leb128(0), [0]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(leb128(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn custom_section_is_appended_whole() {
        let out = with_custom_section(b"head", "n", b"xy");
        // id 0, size 4 (name length, "n", "xy"), then the contents.
        assert_eq!(out, b"head\x00\x04\x01nxy");
    }
}
