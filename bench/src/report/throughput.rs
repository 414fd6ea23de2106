//! Throughput runs of one group of servers (the WASI 0.2 hello and its
//! peers, or the WASI 0.3 hello and its peers): the runs of every round,
//! their means for the tables, and the round-by-round ratios.
//!
//! Each group is its own table: a server's runs are matched round by round
//! with its peers' in the same group only, so the two groups' rows (which
//! share names such as `wasm-host`) never mix.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;

use super::{Summary, median};

/// The runs of one group, in the order the servers first ran.
#[derive(Default)]
pub(super) struct Table {
    runs: BTreeMap<(String, bool), Vec<Summary>>,
    order: Vec<String>,
}

impl Table {
    /// Records one run of `name`.
    pub(super) fn record(&mut self, name: &str, keep_alive: bool, run: Summary) {
        if !self.order.iter().any(|n| n == name) {
            self.order.push(name.to_string());
        }
        self.runs
            .entry((name.to_string(), keep_alive))
            .or_default()
            .push(run);
    }

    /// Whether nothing was recorded.
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    fn mean(&self, name: &str, keep_alive: bool) -> Option<Summary> {
        let runs = self.runs.get(&(name.to_string(), keep_alive))?;
        let n = runs.len() as f64;
        let avg = |f: fn(&Summary) -> f64| runs.iter().map(f).sum::<f64>() / n;
        Some(Summary {
            rps: avg(|r| r.rps),
            p50: avg(|r| r.p50),
            p99: avg(|r| r.p99),
            p999: avg(|r| r.p999),
            errors: runs.iter().map(|r| r.errors).sum(),
        })
    }

    /// `ours` req/s over `peer`'s, round by round: both ran in each round,
    /// back to back, so each ratio compares two servers on the same machine
    /// state, and the noise between rounds stays out of it.
    fn round_ratios(&self, ours: &str, peer: &str, keep_alive: bool) -> Vec<f64> {
        let runs = |name: &str| self.runs.get(&(name.to_string(), keep_alive));
        let (Some(ours), Some(peer)) = (runs(ours), runs(peer)) else {
            return Vec::new();
        };
        ours.iter()
            .zip(peer)
            .map(|(o, p)| o.rps / p.rps.max(f64::MIN_POSITIVE))
            .collect()
    }

    /// The median of [`Table::round_ratios`], if both servers ran.
    pub(super) fn ratio_of(&self, ours: &str, peer: &str, keep_alive: bool) -> Option<f64> {
        median(self.round_ratios(ours, peer, keep_alive))
    }

    /// Writes the table of means for one connection mode.
    pub(super) fn write(&self, md: &mut String, keep_alive: bool) -> Result<()> {
        writeln!(
            md,
            "| server | req/s | p50 ms | p99 ms | p99.9 ms | errors |\n|---|---:|---:|---:|---:|---:|"
        )?;
        for name in &self.order {
            if let Some(r) = self.mean(name, keep_alive) {
                writeln!(
                    md,
                    "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                    r.rps, r.p50, r.p99, r.p999, r.errors
                )?;
            }
        }
        writeln!(md)?;
        Ok(())
    }

    /// Writes one ratio line of `ours` against each other server `pick`
    /// takes: the median of the rounds, and their spread.
    pub(super) fn ratios(
        &self,
        md: &mut String,
        ours: &str,
        keep_alive: bool,
        pick: impl Fn(&&String) -> bool,
    ) -> Result<()> {
        for name in self.order.iter().filter(|n| *n != ours).filter(pick) {
            let rounds = self.round_ratios(ours, name, keep_alive);
            let Some(mid) = median(rounds.iter().copied()) else {
                continue;
            };
            let low = rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rounds.iter().copied().fold(0.0, f64::max);
            writeln!(
                md,
                "- {ours} / {name}: **{mid:.2}×** (median of {} rounds; lowest {low:.2}×, highest {high:.2}×)",
                rounds.len()
            )?;
        }
        Ok(())
    }
}
