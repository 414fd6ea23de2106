//! Serving a WASI 0.2 version (`wasi:http/incoming-handler`): one request
//! per instance at a time, a fresh instance per request by default, or an
//! instance kept for the next request in sequence (`--reuse-instances`).
//!
//! The 0.2 handler gives its answer through a `response-outparam` and may go
//! on after it; the run is polled in the request's own task (no task hop on
//! the hot path) and handed to a task of its own only when it outlives the
//! answer. 0.3 versions never come here: see [`crate::runtime::p3`].

pub(crate) mod request;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::runtime::state::HostState;

/// Idle instances one version keeps for reuse, at most. Each holds a slot
/// of the pooling allocator, which every version alive shares.
const MAX_IDLE_INSTANCES: usize = 16;

/// How much a reused instance's memory may grow past its size when it was
/// made before it is dropped instead of kept: its size again, and at least
/// this. A long-lived guest heap only grows (a garbage collector's arenas,
/// a JavaScript engine's caches, handles a guest never drops), and a fresh
/// instance costs one reset, so an instance that has doubled goes.
const MIN_MEMORY_GROWTH: usize = 32 << 20;

/// Resources a reused instance may hold in its table between requests
/// before it is dropped instead of kept. A guest that drops what it made
/// holds a few dozen; StarlingMonkey's outgoing `fetch` leaves seven
/// behind per call until its instance ends, which this bounds (host
/// memory, which the guest's memory limit does not count).
const MAX_HELD_RESOURCES: usize = 1024;

/// An instance that served a request cleanly and may serve the next one
/// (instance reuse mode). Never shared across versions: it lives in the
/// pool of the version that made it.
pub(crate) struct Warm {
    /// The store the instance lives in.
    pub store: Store<HostState>,
    /// The instance.
    pub proxy: Proxy,
    /// Requests it has served.
    pub uses: u32,
}

impl Warm {
    /// Why it should not serve again, if it has outgrown reuse: its memory
    /// (see [`MIN_MEMORY_GROWTH`]) or the resources it holds (see
    /// [`MAX_HELD_RESOURCES`]).
    fn outgrown(&mut self) -> Option<&'static str> {
        let memory = self.store.data_mut().limits();
        let at_start = memory.memory_at_start();
        let allowed = at_start.max(MIN_MEMORY_GROWTH);
        if memory.memory() > at_start.saturating_add(allowed) {
            Some("its memory doubled")
        } else if self.store.data_mut().resources_held() > MAX_HELD_RESOURCES {
            Some("it holds too many resources (handles it never dropped)")
        } else {
            None
        }
    }
}

/// The idle instances of one 0.2 version, in reuse mode.
pub(crate) struct WarmPool {
    /// Requests one instance may serve in sequence; 1 keeps none.
    reuse: u32,
    idle: Mutex<Vec<Warm>>,
    /// Set once an instance failed a request after serving one: this
    /// component cannot be reused, and every request gets a fresh instance.
    off: AtomicBool,
}

impl WarmPool {
    /// A pool for instances that serve up to `reuse` requests each.
    pub fn new(reuse: u32) -> Self {
        Self {
            reuse,
            idle: Mutex::new(Vec::new()),
            off: AtomicBool::new(false),
        }
    }

    /// An idle instance to serve a request with, if reuse is on and one
    /// waits.
    pub fn take(&self) -> Option<Warm> {
        if self.reuse <= 1 || self.off.load(Ordering::Relaxed) {
            return None;
        }
        let mut warm = self.idle.lock().ok()?.pop()?;
        // A reused store's deadline must start afresh, like a new one's.
        warm.store.set_epoch_deadline(1);
        Some(warm)
    }

    /// Keeps an instance that served cleanly for the next request, unless
    /// it has served its share, its memory has outgrown reuse, the pool is
    /// full, or `open` is false (the version stopped taking requests).
    pub fn give_back(&self, mut warm: Warm, open: bool) {
        if warm.uses >= self.reuse || !open || self.off.load(Ordering::Relaxed) {
            return;
        }
        if let Some(why) = warm.outgrown() {
            let memory = warm.store.data_mut().limits();
            tracing::debug!(
                uses = warm.uses,
                memory_at_start = memory.memory_at_start(),
                memory = memory.memory(),
                why,
                "a reused instance is dropped; the next request gets a fresh one"
            );
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_INSTANCES
        {
            idle.push(warm);
        }
    }

    /// Turns reuse off for good after a reused instance failed for `why`:
    /// some components (an engine that keeps per-request state it never
    /// resets) answer the first request of an instance and no other. Logged
    /// once per version.
    pub fn turn_off(&self, app: &str, generation: u64, why: &str) {
        if self.reuse > 1 && !self.off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                app,
                generation,
                reason = why,
                "instance reuse turned off for this version: an instance that had served a request failed the next one; every request now gets a fresh instance"
            );
            self.clear();
        }
    }

    /// Whether reuse was turned off by [`WarmPool::turn_off`].
    pub fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// Drops every idle instance, returning their slots to the pool.
    pub fn clear(&self) {
        let idle = self.idle.lock().map(|mut idle| std::mem::take(&mut *idle));
        drop(idle);
    }
}
