//! Throughput runs driven by `wrk` (one thread), when it is installed.
//!
//! On two cores the client competes with the server for the CPU, so a
//! heavier client squeezes every server's rate toward the same number and
//! understates the differences between them. `wrk` costs less per request
//! than the benchmark's own client (which also keeps every answer's body
//! for the reload sections), so the throughput section uses it when it can,
//! as the issue's own measurements did. This module only runs `wrk` and
//! reads its numbers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::report::Summary;

/// Printed by the script at the end of a run, one `key value` per line.
const SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("requests %d\n", summary.requests))
  io.write(string.format("duration_us %d\n", summary.duration))
  io.write(string.format("errors %d\n", e.connect + e.read + e.write + e.status + e.timeout))
  io.write(string.format("p50_us %d\n", latency:percentile(50)))
  io.write(string.format("p99_us %d\n", latency:percentile(99)))
  io.write(string.format("p999_us %d\n", latency:percentile(99.9)))
end
"#;

/// Runs `wrk` with one thread and `connections` connections against
/// `addr` for `duration`; without `keep_alive`, every request asks to close
/// its connection, so each one opens a new connection.
pub fn run(
    wrk: &Path,
    scratch: &Path,
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    keep_alive: bool,
) -> Result<Summary> {
    let script = scratch.join("summary.lua");
    std::fs::write(&script, SCRIPT)?;
    let mut cmd = Command::new(wrk);
    cmd.args(["-t1", "-c"])
        .arg(connections.to_string())
        .arg("-d")
        // wrk takes whole seconds at best.
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script);
    if !keep_alive {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd
        .arg(format!("http://{addr}/"))
        .output()
        .context("cannot run wrk")?;
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .with_context(|| format!("wrk printed no {key}:\n{text}"))?
            .trim()
            .parse::<f64>()
            .with_context(|| format!("wrk's {key} is not a number"))
    };
    let requests = value("requests")?;
    let errors = value("errors")?;
    let seconds = value("duration_us")? / 1e6;
    Ok(Summary {
        rps: (requests - errors).max(0.0) / seconds.max(1e-6),
        p50: value("p50_us")? / 1000.0,
        p99: value("p99_us")? / 1000.0,
        p999: value("p999_us")? / 1000.0,
        errors: errors as u64,
    })
}
