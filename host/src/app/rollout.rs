//! Gradual rollout: which version a request goes to while a canary runs
//! beside the live version, and when a canary's errors call for an
//! automatic abort.
//!
//! Only decisions on values passed in. This module never swaps a version
//! and never reaches into the app; the app asks it and acts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

use crate::runtime::version::Version;

/// A request with this header (a generation number) goes to that
/// generation, if it is live or the canary: smoke tests of a canary at 0%.
pub const PIN_HEADER: HeaderName = HeaderName::from_static("x-wasm-host-generation");

/// The header whose value keeps one client on one version, unless the
/// canary names another.
pub const DEFAULT_STICKY_HEADER: &str = "x-wasm-host-key";

/// Shares are counted in parts per million, so 0.1% still splits evenly.
const SCALE: u64 = 1_000_000;

/// How a canary runs: set by `wasm-host reload --canary`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryPlan {
    /// Share of new requests, in percent (0 to 100, fractions allowed).
    pub percent: f64,
    /// A request with this header is split by the header's value, so the
    /// same value always lands on the same version.
    pub sticky_header: String,
    /// Abort the canary by itself when its errors pass a bound.
    pub auto_abort: Option<AbortRule>,
}

/// When a canary is aborted without being asked: its share of 5xx
/// responses over the last `window` passed `max_error_percent`, with at
/// least `min_requests` answered in that window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbortRule {
    /// The highest tolerated share of 5xx responses, in percent.
    pub max_error_percent: f64,
    /// How far back the share is measured.
    pub window: Duration,
    /// Fewer responses than this in the window prove nothing yet.
    pub min_requests: u64,
}

impl CanaryPlan {
    /// Checks the plan's values.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.percent) {
            return Err(format!(
                "--canary {} is not a percentage from 0 to 100",
                self.percent
            ));
        }
        HeaderName::try_from(self.sticky_header.as_str()).map_err(|_| {
            format!(
                "--sticky-header `{}` is not a valid header name",
                self.sticky_header
            )
        })?;
        if let Some(rule) = &self.auto_abort {
            if !(0.0..100.0).contains(&rule.max_error_percent) {
                return Err(format!(
                    "--abort-above {} is not a percentage below 100",
                    rule.max_error_percent
                ));
            }
            if rule.window.is_zero() {
                return Err("--abort-window must be greater than zero".into());
            }
            // The CLI bounds the flag; a control client may send any value.
            crate::app::limits::check_duration_bound(rule.window)
                .map_err(|e| format!("--abort-window {e}"))?;
        }
        Ok(())
    }
}

/// A version taking a share of new requests beside the live one.
pub struct Canary {
    /// The canary version.
    pub version: Arc<Version>,
    /// How it runs.
    pub plan: CanaryPlan,
    /// The file it came from; the app's path once it is promoted.
    pub path: std::path::PathBuf,
    share: u64,
    sticky: HeaderName,
    /// Requests without a sticky key seen so far, for the even split.
    unkeyed: AtomicU64,
}

impl Canary {
    /// A canary of `version` from `path` run by `plan` (validated before).
    pub fn new(
        version: Arc<Version>,
        plan: CanaryPlan,
        path: std::path::PathBuf,
    ) -> Result<Self, String> {
        plan.validate()?;
        let sticky = HeaderName::try_from(plan.sticky_header.as_str())
            .map_err(|e| format!("bad sticky header: {e}"))?;
        Ok(Self {
            share: (plan.percent / 100.0 * SCALE as f64).round() as u64,
            version,
            plan,
            path,
            sticky,
            unkeyed: AtomicU64::new(0),
        })
    }

    /// Whether the request with `headers` goes to the canary. A sticky key
    /// decides by its hash; without one, requests are spread evenly by
    /// count, so any run of N requests holds the share to within one.
    pub fn takes(&self, headers: &HeaderMap) -> bool {
        match headers.get(&self.sticky) {
            Some(key) => bucket(key.as_bytes()) < self.share,
            None => spread(self.unkeyed.fetch_add(1, Relaxed), self.share),
        }
    }
}

/// The generation a request pins itself to, if it names one.
/// `Err` carries the header's text when it is not a generation number.
pub fn pinned(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(value) = headers.get(PIN_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("(not text)");
    text.trim().parse().map(Some).map_err(|_| text.to_string())
}

/// Whether the `n`th unkeyed request goes to a canary with `share` parts
/// per million: true when the running total of the share crosses a whole
/// request at `n`.
fn spread(n: u64, share: u64) -> bool {
    let (n, share, scale) = (n as u128, share as u128, SCALE as u128);
    (n + 1) * share / scale > n * share / scale
}

/// A stable bucket in `0..SCALE` for a sticky key (FNV-1a): the same key
/// lands in the same bucket in every host and every run.
fn bucket(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % SCALE
}

/// Samples of a canary's counters over time, to judge its error share over
/// a sliding window.
pub struct ErrorWindow {
    rule: AbortRule,
    samples: VecDeque<(Instant, u64, u64)>,
}

/// Why an auto-abort fired.
#[derive(Clone, Debug, PartialEq)]
pub struct Tripped {
    /// 5xx responses in the window.
    pub errors: u64,
    /// All responses in the window.
    pub requests: u64,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of its last {} responses were 5xx ({:.1}%)",
            self.errors,
            self.requests,
            self.errors as f64 * 100.0 / self.requests.max(1) as f64
        )
    }
}

impl ErrorWindow {
    /// An empty window for `rule`.
    pub fn new(rule: AbortRule) -> Self {
        Self {
            rule,
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample of the canary's totals (`requests` answered, of which
    /// `errors` were 5xx) taken at `now`; says whether the rule trips.
    pub fn observe(&mut self, now: Instant, requests: u64, errors: u64) -> Option<Tripped> {
        self.samples.push_back((now, requests, errors));
        // Keep one sample at or before the window's start as its baseline.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|&(at, _, _)| now.duration_since(at) >= self.rule.window)
        {
            self.samples.pop_front();
        }
        let &(_, first_requests, first_errors) = self.samples.front()?;
        let seen = Tripped {
            requests: requests.saturating_sub(first_requests),
            errors: errors.saturating_sub(first_errors),
        };
        let over = seen.errors as f64 * 100.0 > self.rule.max_error_percent * seen.requests as f64;
        (seen.requests >= self.rule.min_requests.max(1) && over).then_some(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_spread_holds_the_share_exactly() {
        for percent in [0.0, 1.0, 10.0, 33.3, 50.0, 100.0] {
            let share = (percent / 100.0 * SCALE as f64) as u64;
            let taken = (0..1000).filter(|&n| spread(n, share)).count();
            let expected = (1000.0 * percent / 100.0) as usize;
            assert!(taken.abs_diff(expected) <= 1, "{percent}%: {taken} of 1000");
        }
    }

    #[test]
    fn sticky_buckets_are_stable_and_spread() {
        assert_eq!(bucket(b"user-17"), bucket(b"user-17"));
        let share = SCALE / 4;
        let keys = (0..4000).map(|i| format!("user-{i}"));
        let taken = keys.filter(|k| bucket(k.as_bytes()) < share).count();
        assert!((800..1200).contains(&taken), "{taken} of 4000 at 25%");
    }

    #[test]
    fn pin_header_parses_or_says_what_it_got() {
        let mut headers = HeaderMap::new();
        assert_eq!(pinned(&headers), Ok(None));
        headers.insert(PIN_HEADER, "7".parse().unwrap());
        assert_eq!(pinned(&headers), Ok(Some(7)));
        headers.insert(PIN_HEADER, "seven".parse().unwrap());
        assert_eq!(pinned(&headers), Err("seven".to_string()));
    }

    #[test]
    fn error_window_trips_only_over_the_bound_with_enough_requests() {
        let rule = AbortRule {
            max_error_percent: 20.0,
            window: Duration::from_secs(10),
            min_requests: 10,
        };
        let mut window = ErrorWindow::new(rule);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(window.observe(at(0), 0, 0), None);
        // 5 of 5 failed: not enough requests yet.
        assert_eq!(window.observe(at(1), 5, 5), None);
        // 5 of 40: 12.5%, under the bound.
        assert_eq!(window.observe(at(2), 40, 5), None);
        // Old errors leave the window: 20 of 50 in the last 10 s.
        assert_eq!(
            window.observe(at(12), 90, 25),
            Some(Tripped {
                errors: 20,
                requests: 50
            })
        );
    }

    #[test]
    fn plans_are_checked() {
        let plan = |percent, header: &str| CanaryPlan {
            percent,
            sticky_header: header.into(),
            auto_abort: None,
        };
        assert!(plan(10.0, DEFAULT_STICKY_HEADER).validate().is_ok());
        assert!(plan(101.0, DEFAULT_STICKY_HEADER).validate().is_err());
        assert!(plan(10.0, "bad header").validate().is_err());
    }
}
