//! The targets, each beside what this run measured and whether it
//! was met, so a reader sees at the top of the report where the host stands.
//!
//! Only reads what the report recorded; measures nothing itself.

use std::fmt::Write as _;

use anyhow::Result;

use super::{Report, median};

/// One target: what it asks, what was measured, and whether it was met
/// (`None` when the run did not measure it).
struct Target {
    goal: &'static str,
    measured: String,
    met: Option<bool>,
}

impl Target {
    fn new(goal: &'static str, measured: Option<(String, bool)>) -> Self {
        match measured {
            Some((measured, met)) => Self {
                goal,
                measured,
                met: Some(met),
            },
            None => Self {
                goal,
                measured: "not measured in this run".into(),
                met: None,
            },
        }
    }
}

impl Report {
    /// Writes the targets table.
    pub(super) fn targets(&self, md: &mut String) -> Result<()> {
        let targets = [
            Target::new(
                "fresh instance per request, keep-alive: ≥ 1.5× tuned `wasmtime serve` (stretch 2×)",
                self.ratio("wasmtime serve (tuned)")
                    .map(|r| (format!("{r:.2}×"), r >= 1.5)),
            ),
            Target::new(
                "fresh instance per request, keep-alive: ≥ 3.5× `wasmtime serve` with defaults",
                self.ratio("wasmtime serve (defaults)")
                    .map(|r| (format!("{r:.2}×"), r >= 3.5)),
            ),
            Target::new(
                "reload latency p50 ≤ 5 ms for a cached component (command → first answer of the new version, under load)",
                self.storm
                    .as_ref()
                    .and_then(|s| median(s.latency_ms.iter().copied()))
                    .map(|p50| (format!("{p50:.2} ms"), p50 <= 5.0)),
            ),
            Target::new(
                "cold reload of a multi-MB component: serving within 2× Winch's compile time (median of the trials)",
                self.cold
                    .as_ref()
                    .and_then(|c| c.serving_over_winch())
                    .map(|r| (format!("{r:.2}×"), r <= 2.0)),
            ),
            Target::new(
                "p99 of other traffic while it compiles ≤ 2× at rest (median of the trials)",
                self.cold
                    .as_ref()
                    .and_then(|c| c.p99_ratio())
                    .map(|r| (format!("{r:.2}×"), r <= 2.0)),
            ),
            Target::new(
                "reload storm (every 100 ms): zero errors",
                self.storm
                    .as_ref()
                    .map(|s| (s.errors.to_string(), s.errors == 0)),
            ),
            Target::new(
                "reload storm: p99 ≤ 2× p99 at rest",
                self.storm.as_ref().map(|s| {
                    let r = s.storm_p99 / s.rest_p99.max(0.001);
                    (format!("{r:.2}×"), r <= 2.0)
                }),
            ),
            Target::new(
                "resident memory after 1000 reloads ≤ 1.1× after 1",
                self.memory.map(|(one, many, _, _)| {
                    let r = many as f64 / one.max(1) as f64;
                    (format!("{r:.2}×"), r <= 1.1)
                }),
            ),
        ];
        writeln!(md, "## Targets\n")?;
        writeln!(md, "| target | this run | met |\n|---|---:|:---:|")?;
        for t in &targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            writeln!(md, "| {} | {} | {met} |", t.goal, t.measured)?;
        }
        writeln!(md)?;
        Ok(())
    }

    /// wasm-host's keep-alive req/s over `peer`'s, the median of the rounds.
    fn ratio(&self, peer: &str) -> Option<f64> {
        self.ratio_of("wasm-host", peer, true)
    }
}
