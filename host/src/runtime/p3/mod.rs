//! Serving a WASI 0.3 version (`wasi:http/handler`): one instance takes
//! several requests at once, serves up to a number of them in all, and is
//! dropped when it has been idle a while.
//!
//! The scheduling of requests onto instances is wasmtime's
//! (`wasmtime_wasi_http::handler::ProxyHandler`, the machinery `wasmtime
//! serve` uses): it respects the guest's backpressure and only puts a second
//! request on an instance while the first waits on I/O. What this module
//! adds are the reload rules, per instance:
//!
//! - every instance counts as one piece of its version's work from before
//!   it is made until it is dropped, so a draining version retires only
//!   when its last instance has finished every task, the work a guest does
//!   after its responses included ([`pool::Pool`]);
//! - an instance of a version that stopped taking requests is dropped as
//!   soon as it is idle, rather than after the idle time;
//! - the drain deadline and the request timeout end an instance, with every
//!   request still on it; so does a trap. How an instance ended is kept
//!   ([`Fate`]) so each of its requests gets the right status, and it is
//!   counted.
//!
//! 0.2 versions never come here: see [`crate::runtime::p2`].

pub(crate) mod pool;
pub(crate) mod request;

use std::sync::OnceLock;
use std::time::Duration;

/// How a 0.3 version shares its instances between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P3Settings {
    /// Requests one instance may run at once.
    pub concurrency: u32,
    /// Requests one instance serves in all before it is dropped.
    pub uses: u32,
    /// How long an idle instance is kept for the next request.
    pub idle: Duration,
}

/// Requests one instance may run at once, by default: `wasmtime serve`'s
/// 16. An instance only takes another while its requests wait, so on a
/// CPU-bound guest this is a ceiling, not a target.
pub const DEFAULT_CONCURRENCY: u32 = 16;

/// Requests one instance serves in all, by default: more than `wasmtime
/// serve`'s 128, so fewer stores are made and instantiated. On the hello
/// example the CPU per request of 1000, 128 and 10000 uses was within the
/// noise of a busy 2-core machine (86-111 µs each, release build, `wrk
/// -t1 -c16`); a guest that leaks memory per request gives it back ten
/// times less often than with 128.
pub const DEFAULT_USES: u32 = 1000;

/// How long an idle instance waits for the next request, by default (as
/// `wasmtime serve`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(1);

impl Default for P3Settings {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            uses: DEFAULT_USES,
            idle: DEFAULT_IDLE,
        }
    }
}

/// Why an instance was ended before it finished its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The guest trapped (or a host call failed): the instance is poisoned.
    Trapped(String),
    /// A request or the work after it ran past the request timeout.
    TimedOut,
    /// The drain deadline passed.
    Forced,
}

impl End {
    /// How metrics name it.
    pub fn reason(&self) -> &'static str {
        match self {
            End::Trapped(_) => "trap",
            End::TimedOut => "timeout",
            End::Forced => "drain_deadline",
        }
    }
}

/// How one instance ended, once it has: shared between the instance and
/// every request it took, so a request whose instance went away can say why.
#[derive(Debug, Default)]
pub struct Fate {
    end: OnceLock<End>,
}

impl Fate {
    /// Records how the instance ended; the first cause wins (a timeout that
    /// then shows up as an error stays a timeout).
    pub fn set(&self, end: End) -> bool {
        self.end.set(end).is_ok()
    }

    /// How the instance ended, if it was ended.
    pub fn get(&self) -> Option<&End> {
        self.end.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_of_an_end_wins() {
        let fate = Fate::default();
        assert!(fate.get().is_none());
        assert!(fate.set(End::TimedOut));
        assert!(!fate.set(End::Trapped("later".into())));
        assert_eq!(fate.get(), Some(&End::TimedOut));
        assert_eq!(End::Forced.reason(), "drain_deadline");
    }
}
