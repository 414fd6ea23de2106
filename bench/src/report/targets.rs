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
    goal: String,
    measured: String,
    met: Option<bool>,
}

impl Target {
    fn new(goal: impl Into<String>, measured: Option<(String, bool)>) -> Self {
        let goal = goal.into();
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
        let mut targets = vec![
            Target::new(
                "fresh instance per request, keep-alive: ≥ 1.5× tuned `wasmtime serve` (stretch 2×)",
                self.p2
                    .ratio_of("wasm-host", "wasmtime serve (tuned)", true)
                    .map(|r| (format!("{r:.2}×"), r >= 1.5)),
            ),
            Target::new(
                "fresh instance per request, keep-alive: ≥ 3.5× `wasmtime serve` with defaults",
                self.p2
                    .ratio_of("wasm-host", "wasmtime serve (defaults)", true)
                    .map(|r| (format!("{r:.2}×"), r >= 3.5)),
            ),
            Target::new(
                "WASI 0.3 hello, keep-alive: ≥ 1.5× `wasmtime serve` with its defaults on the same component (stretch 2×)",
                self.p3
                    .ratio_of("wasm-host", "wasmtime serve (defaults)", true)
                    .map(|r| {
                        let stretch = if r >= 2.0 { "met" } else { "not met" };
                        (format!("{r:.2}× (stretch {stretch})"), r >= 1.5)
                    }),
            ),
            Target::new(
                "reload latency p50 ≤ 5 ms for a cached component (command → first answer of the new version, under load)",
                self.storm
                    .as_ref()
                    .and_then(|s| median(s.latency_ms.iter().copied()))
                    .map(|p50| (format!("{p50:.2} ms"), p50 <= 5.0)),
            ),
        ];
        // One pair per component reloaded cold: the targets were set on the
        // Rust one; the others are held to the same bounds.
        if self.cold.is_empty() {
            targets.extend(cold_targets("a multi-MB component", None, None));
        }
        for c in &self.cold {
            targets.extend(cold_targets(
                &c.label,
                c.serving_over_winch(),
                c.p99_ratio(),
            ));
        }
        targets.extend([
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
        ]);
        targets.extend(self.javascript_targets());
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
}

impl Report {
    /// The JavaScript section's targets: wasm-host against the same app on
    /// Express under PM2 cluster mode.
    fn javascript_targets(&self) -> [Target; 6] {
        use crate::javascript::How;
        let js = self.javascript.as_ref();
        let first = |how: How| {
            js.and_then(|j| j.first_new(how))
                .map(|s| (format!("{s:.2} s"), s <= 0.5))
        };
        let rps = |reuse: bool| {
            js.and_then(|j| j.rps_ratio(reuse))
                .map(|r| (format!("{r:.2}×"), r >= 0.6))
        };
        [
            Target::new(
                "JavaScript: first new answer ≤ 0.5 s after the deploy (`wasm-host compile`, then `wasm-host reload`; command → first answer of the new build under load, median)",
                first(How::Precompiled),
            ),
            Target::new(
                "JavaScript: first new answer ≤ 0.5 s after `wasm-host reload` of a build not precompiled (median)",
                first(How::Cold),
            ),
            Target::new(
                "JavaScript: p99 of other traffic while a precompiled build goes live ≤ 2× at rest (from the reload command on, over the second of load before it; median of the trials)",
                js.and_then(|j| j.p99_ratio(How::Precompiled))
                    .map(|r| (format!("{r:.2}×"), r <= 2.0)),
            ),
            Target::new(
                "JavaScript: ≥ 0.6× PM2's req/s with a fresh instance per request (js-app against the same app on Express, PM2 cluster of 2 workers; median of the rounds)",
                rps(false),
            ),
            Target::new(
                "JavaScript: ≥ 0.6× PM2's req/s, js-app built with `--reuse` and served with `--reuse-instances` (median of the rounds)",
                rps(true),
            ),
            Target::new(
                "JavaScript: resident memory ≤ PM2's (daemon and workers), at rest and after the reloads",
                js.and_then(|j| j.memory())
                    .map(|((host, node), (host_after, node_after))| {
                        let mib = |k: u64| k as f64 / 1024.0;
                        (
                            format!(
                                "at rest {:.0} vs {:.0} MiB; after the reloads {:.0} vs {:.0} MiB",
                                mib(host),
                                mib(node),
                                mib(host_after),
                                mib(node_after)
                            ),
                            host <= node && host_after <= node_after,
                        )
                    }),
            ),
        ]
    }
}

/// The two cold-reload targets for the component `label`, given the
/// medians measured (time to serve over Winch's compile time, p99 while
/// compiling over p99 at rest).
fn cold_targets(label: &str, serving: Option<f64>, p99: Option<f64>) -> [Target; 2] {
    let within = |r: f64| (format!("{r:.2}×"), r <= 2.0);
    [
        Target::new(
            format!(
                "cold reload of {label}: serving within 2× Winch's compile time (median of the trials)"
            ),
            serving.map(within),
        ),
        Target::new(
            format!(
                "cold reload of {label}: p99 of other traffic while it compiles ≤ 2× at rest (median of the trials)"
            ),
            p99.map(within),
        ),
    ]
}
