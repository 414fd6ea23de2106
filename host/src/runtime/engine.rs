//! The wasmtime [`Engine`]s of the process and the [`Linker`]s versions
//! are linked with (over the per-store [`HostState`]): per compiler tier,
//! one engine for WASI 0.2 components, one for WASI 0.2 components that
//! start from a large memory snapshot (their own instance pool, see
//! [`crate::runtime::pool::Memory`]), and one for WASI 0.3.
//!
//! Why two: an engine with the component model's concurrency support turns
//! every call into a guest into a concurrent call with its task
//! bookkeeping, which 0.2 guests never use. Measured on the 0.2 hello
//! example (release builds, `wrk -t1 -c16`, the server's CPU time per
//! request over 2 x 4 alternating rounds on a busy 2-core machine): built
//! without component-model-async 116-143 µs, with it on one engine 144-171
//! µs, with an engine per world 123-145 µs. So 0.2 components compile and
//! run on an engine with `concurrency_support(false)`, and only 0.3 ones
//! pay for what they use.
//!
//! Each engine is made the first time a component needs it (the 0.2
//! engine at start, to find a bad setting there): every engine reserves
//! its pool's address space and runs an epoch ticker thread, which a host
//! serving no JavaScript or no 0.3 app never needs.
//!
//! This module knows nothing of apps, versions or reloads: it only turns
//! settings into an engine that can compile and run components.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, ProfilingStrategy, Strategy};

use crate::ops::metrics::PoolView;
use crate::runtime::code_cache::CodeCache;
use crate::runtime::cpu::{self, Urgency};
use crate::runtime::digest::Digest;
use crate::runtime::incremental::IncrementalCache;
use crate::runtime::pool::{self, EngineKey, FREED_MEMORY_BUDGET, Memory};
use crate::runtime::state::HostState;
use crate::runtime::world::{Linked, World};

/// How often the engine's epoch advances. Every running guest yields to the
/// async executor at each tick, which is what lets a timeout or a forced
/// drain stop even a guest spinning in a tight loop.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of the engine, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_memory: usize,
    /// Instances that may exist at once, across every version alive.
    pub max_instances: u32,
    /// Where compiled code is cached on disk, keyed by content and engine
    /// settings, so a restarted host skips compiling; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Components larger than this many bytes start on quickly compiled
    /// (Winch) code and move to optimized (Cranelift) code once it is ready;
    /// `None` always waits for optimized code.
    pub baseline_above: Option<usize>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_memory: 512 << 20,
            max_instances: 1000,
            cache_dir: None,
            baseline_above: None,
        }
    }
}

/// Linked components kept in memory, so reloading a recent version (a
/// rollback, or flipping between two builds) costs neither a compile nor a
/// link.
const MEMORY_CACHE_ENTRIES: usize = 4;

/// Bytes of code those may hold beyond the newest two: a JavaScript
/// component's code is ~37 MB, and with four kept a host serving one
/// JavaScript app grew by 178 MB over 5 deploys, by 111 MB with this bound
/// (debug host, `/proc/PID/status` after each version's optimized code).
const MEMORY_CACHE_BYTES: usize = 64 << 20;

/// A linked component and the digest of the bytes it came from.
type Remembered = (Digest, Linked);

/// The engines, their linkers, and the tickers that drive epoch
/// interruption.
#[derive(Clone)]
pub struct Runtime {
    optimized: PerEngine<Tier>,
    baseline: Option<PerEngine<Tier>>,
    baseline_above: Option<usize>,
    /// Most recently used first.
    linked: Arc<Mutex<Vec<Remembered>>>,
    /// Optimized code on disk, per engine; `None` without a cache.
    code: Option<PerEngine<CodeCache>>,
}

/// How a [`PerEngine`] makes its thing for a key.
type Make<T> = dyn Fn(EngineKey) -> Result<T> + Send + Sync;

/// One of a thing for each [`EngineKey`] (WASI 0.2 with either memory
/// pool, and WASI 0.3, whose instances take many requests each, so their
/// memory is reset rarely and one pool serves every 0.3 component), each
/// made on first use. Clones share what was made.
#[derive(Clone)]
struct PerEngine<T> {
    made: Arc<[OnceLock<T>; 3]>,
    /// Held while one is made, so that two loads never make the same one.
    making: Arc<Mutex<()>>,
    make: Arc<Make<T>>,
}

impl<T> PerEngine<T> {
    fn new(make: impl Fn(EngineKey) -> Result<T> + Send + Sync + 'static) -> Self {
        Self {
            made: Arc::default(),
            making: Arc::default(),
            make: Arc::new(make),
        }
    }

    /// The thing for `key`, made now if it is not yet. Making an engine
    /// blocks for a few milliseconds (its linker): control-plane work.
    fn get(&self, key: EngineKey) -> Result<&T> {
        let slot = &self.made[match (key.world, key.memory) {
            (World::P2, Memory::Dirty) => 0,
            (World::P2, Memory::Snapshot) => 1,
            (World::P3, _) => 2,
        }];
        if let Some(made) = slot.get() {
            return Ok(made);
        }
        let making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if slot.get().is_none() {
            let _ = slot.set((self.make)(key)?);
        }
        drop(making);
        slot.get()
            .context("an engine was made but not kept (a bug in wasm-host)")
    }

    /// What was made so far.
    fn made(&self) -> impl Iterator<Item = &T> {
        self.made.iter().filter_map(OnceLock::get)
    }
}

impl Runtime {
    /// The slots each tier's pooling allocators have in use (all its
    /// engines summed), for metrics.
    pub fn pools(&self) -> Vec<PoolView> {
        std::iter::once((&self.optimized, false))
            .chain(self.baseline.as_ref().map(|tiers| (tiers, true)))
            .map(|(tiers, baseline)| {
                let mut view = PoolView {
                    tier: tier_name(baseline),
                    core_instances: 0,
                    memories: 0,
                    tables: 0,
                };
                for tier in tiers.made() {
                    if let Some(pool) = tier.engine().pooling_allocator_metrics() {
                        view.core_instances += pool.core_instances();
                        view.memories += pool.memories();
                        view.tables += pool.tables();
                    }
                }
                view
            })
            .collect()
    }

    /// Sets up the engines (pooling allocator, epoch interruption;
    /// Cranelift, plus Winch for quick first code) and their linkers
    /// holding all of WASI 0.2 (and 0.3 on the 0.3 engine) plus wasi:http,
    /// each with its epoch ticker. Only the optimized 0.2 engine is made
    /// now, so that a setting no engine can take fails here; the others
    /// are made on first use.
    pub fn new(settings: &EngineSettings) -> Result<Self> {
        let tiers = if settings.baseline_above.is_some() {
            2
        } else {
            1
        };
        // Three engines per tier (see `PerEngine`).
        let budget = FREED_MEMORY_BUDGET / (tiers * 3);
        // Cranelift's per-function cache, beside the code cache; one for
        // both worlds (its keys cover everything that changes the code).
        let incremental = match &settings.cache_dir {
            Some(dir) => match IncrementalCache::open(&dir.join("functions")) {
                Ok(cache) => Some(Arc::new(cache)),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot use the per-function compile cache ({e}); compiling without it");
                    None
                }
            },
            None => None,
        };
        let both = |strategy| -> PerEngine<Tier> {
            let incremental = incremental
                .clone()
                .filter(|_| strategy == Strategy::Cranelift);
            let settings = settings.clone();
            PerEngine::new(move |key| {
                Tier::new(&settings, strategy, budget, key, incremental.clone())
            })
        };
        let optimized = both(Strategy::Cranelift);
        optimized.get(EngineKey::P2)?;
        let baseline = settings.baseline_above.map(|_| both(Strategy::Winch));
        let code = settings.cache_dir.as_ref().map(|dir| {
            let (dir, optimized) = (dir.join("code"), optimized.clone());
            PerEngine::new(move |key| Ok(CodeCache::new(&dir, &optimized.get(key)?.engine)))
        });
        Ok(Self {
            optimized,
            baseline,
            baseline_above: settings.baseline_above,
            linked: Arc::default(),
            code,
        })
    }

    /// Whether `bytes` (of `digest`) should first be compiled quickly
    /// (baseline code), then swapped to optimized code when that is ready:
    /// only large components, and only if their optimized code is not in
    /// the on-disk cache already (then loading it is quicker still).
    pub fn wants_baseline(&self, len: usize, digest: Digest, key: EngineKey) -> bool {
        self.baseline.is_some()
            && self.baseline_above.is_some_and(|above| len > above)
            && !self.optimized_is_on_disk(digest, key)
    }

    fn optimized_is_on_disk(&self, digest: Digest, key: EngineKey) -> bool {
        self.code_cache(key)
            .is_some_and(|code| code.contains(digest))
    }

    /// The on-disk cache of optimized code for `key`'s engine, if there
    /// is one (and its engine could be made: if not, [`Runtime::tier`]
    /// says why).
    pub fn code_cache(&self, key: EngineKey) -> Option<&CodeCache> {
        self.code.as_ref().and_then(|code| code.get(key).ok())
    }

    /// The tier that compiles with Winch (fast to compile, slower code) or
    /// with Cranelift (optimized code), for components of `key`; made now
    /// if no component needed it before.
    pub fn tier(&self, baseline: bool, key: EngineKey) -> Result<&Tier> {
        match (&self.baseline, baseline) {
            (Some(tiers), true) => tiers.get(key),
            _ => self.optimized.get(key),
        }
    }

    /// The linked component for `digest`, if one was remembered recently.
    pub fn recall(&self, digest: Digest) -> Option<Linked> {
        let mut linked = self.linked.lock().ok()?;
        let at = linked.iter().position(|(d, _)| *d == digest)?;
        let entry = linked.remove(at);
        let pre = entry.1.clone();
        linked.insert(0, entry);
        Some(pre)
    }

    /// Remembers a linked component, forgetting the least recently used one
    /// beyond [`MEMORY_CACHE_ENTRIES`].
    pub fn remember(&self, digest: Digest, pre: &Linked) {
        if let Ok(mut linked) = self.linked.lock() {
            linked.retain(|(d, _)| *d != digest);
            linked.insert(0, (digest, pre.clone()));
            linked.truncate(MEMORY_CACHE_ENTRIES);
            // The newest two (the live version and the one a rollback
            // goes back to) stay whatever their size; older ones only
            // while the code kept stays within the budget.
            let mut bytes = 0;
            let keep = linked
                .iter()
                .take_while(|(_, pre)| {
                    bytes += pre.code_size();
                    bytes <= MEMORY_CACHE_BYTES
                })
                .count()
                .max(2);
            linked.truncate(keep);
        }
    }
}

/// The variable that names a profiler for guest code (see [`profiler`]).
pub const PROFILE_VAR: &str = "WASM_HOST_PROFILE";

/// Whether `perf` learns the names of compiled guest functions:
/// `WASM_HOST_PROFILE=perfmap` writes them to `/tmp/perf-PID.map`, which
/// `perf report` reads. Without it, `perf` sees guest code as anonymous
/// addresses, and a JavaScript app's time is all there (its engine runs
/// as guest code). An unknown value is reported (once: engines are made
/// one by one as apps need them) and ignored.
fn profiler() -> ProfilingStrategy {
    static CHOSEN: OnceLock<ProfilingStrategy> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let asked = std::env::var(PROFILE_VAR).ok();
        profiler_named(asked.as_deref()).unwrap_or_else(|other| {
            tracing::warn!(
                "{PROFILE_VAR}={other:?} names no profiler this host has: use perfmap; profiling stays off"
            );
            ProfilingStrategy::None
        })
    })
}

/// The profiler `name` asks for; the name back when there is none such.
fn profiler_named(name: Option<&str>) -> Result<ProfilingStrategy, &str> {
    match name {
        None | Some("") | Some("none") => Ok(ProfilingStrategy::None),
        Some("perfmap") => Ok(ProfilingStrategy::PerfMap),
        Some(other) => Err(other),
    }
}

/// How status, logs and metrics name the quick (`true`) and the optimized
/// (`false`) tier.
pub fn tier_name(baseline: bool) -> &'static str {
    if baseline { "baseline" } else { "optimized" }
}

/// One code generator for one [`EngineKey`]: its engine and the linker
/// for it.
#[derive(Clone)]
pub struct Tier {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    baseline: bool,
    key: EngineKey,
    /// Cranelift's per-function cache, for the optimized tier with a
    /// cache folder.
    incremental: Option<Arc<IncrementalCache>>,
}

impl Tier {
    fn new(
        settings: &EngineSettings,
        strategy: Strategy,
        budget: usize,
        key: EngineKey,
        incremental: Option<Arc<IncrementalCache>>,
    ) -> Result<Self> {
        let world = key.world;
        let pool = pool::config(
            settings.max_instances,
            settings.max_memory,
            key.memory,
            budget,
        );

        let mut config = Config::new();
        config
            .strategy(strategy)
            .wasm_component_model(true)
            // WASI 0.3 components use the component model's async ABI
            // (streams, futures, async exports); 0.2 ones never do, and
            // without it their calls skip the task bookkeeping (see the
            // module docs).
            .concurrency_support(world == World::P3)
            .wasm_component_model_async(world == World::P3)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .profiler(profiler());
        if let Some(cache) = &incremental {
            config
                .enable_incremental_compilation(cache.clone())
                .map_err(anyhow::Error::from)
                .context("failed to turn on the per-function compile cache")?;
        }
        if matches!(strategy, Strategy::Winch) {
            // Winch still leaves the trampolines to Cranelift; this tier is
            // about compiling soon, so skip optimizing them too.
            config.cranelift_opt_level(OptLevel::None);
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("failed to create the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        // All of WASI 0.2, so components from any toolchain link; what they
        // may touch is decided per store by the WasiCtx, which grants nothing
        // by default.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link WASI 0.2")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link wasi:http")?;
        // And, for 0.3 components (which may import 0.2 interfaces too),
        // all of WASI 0.3 wasmtime provides (cli, clocks, filesystem,
        // random, sockets, http), under the same per-store WasiCtx and
        // outgoing-HTTP policy: the sandbox is one, whatever the world.
        if world == World::P3 {
            wasmtime_wasi::p3::add_to_linker(&mut linker)
                .map_err(anyhow::Error::from)
                .context("failed to link WASI 0.3")?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker)
                .map_err(anyhow::Error::from)
                .context("failed to link wasi:http 0.3")?;
        }
        crate::runtime::lifecycle::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link wasm-host:app/info")?;
        crate::runtime::channels::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("failed to link wasm-host:app/realtime")?;
        crate::kv::guest::add_to_linker(&mut linker, |state: &mut HostState| state.keyvalue())
            .map_err(anyhow::Error::from)
            .context("failed to link wasi:keyvalue")?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |state: &mut HostState| state.config())
            .map_err(anyhow::Error::from)
            .context("failed to link wasi:config")?;

        start_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            baseline: matches!(strategy, Strategy::Winch),
            key,
            incremental,
        })
    }

    /// Compiles `bytes`. Blocks: call it off the request-serving threads.
    ///
    /// How hard the compile may lean on the CPU depends on what it is for
    /// (see [`Urgency`]): traffic must keep the CPU while a large component
    /// compiles, yet the quick tier exists to go live soon.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let urgency = if self.baseline {
            Urgency::Quick
        } else if bytes.len() > cpu::LOW_PRIORITY_ABOVE {
            Urgency::Background
        } else {
            Urgency::Normal
        };
        if urgency == Urgency::Background {
            cpu::yield_to_requests(&cpu::COMPILE_BACKGROUND);
        }
        let compiled = match cpu::compile_pool(urgency) {
            // wasmtime's parallel compilation runs in whichever rayon pool
            // the call is installed in.
            Some(pool) => pool.install(|| Component::new(&self.engine, bytes)),
            None => Component::new(&self.engine, bytes),
        };
        if let Some(cache) = &self.incremental {
            // Shared by concurrent compiles, so a rough count when two run.
            let (hits, misses) = cache.take_counts();
            tracing::debug!(
                hits,
                misses,
                "functions from the per-function compile cache"
            );
        }
        return_freed_memory();
        compiled
    }

    /// This tier's engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker for this tier's engine.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// Whether this is the quick (Winch) tier.
    pub fn is_baseline(&self) -> bool {
        self.baseline
    }

    /// The world whose components this tier's engine runs.
    pub fn world(&self) -> World {
        self.key.world
    }

    /// Which engine this is.
    pub fn key(&self) -> EngineKey {
        self.key
    }
}

/// Gives the memory a compile freed back to the kernel.
///
/// A compile of a large component (a 13 MB JavaScript one) allocates
/// hundreds of MB in many small pieces across the compile threads; glibc
/// keeps what is freed in its per-thread arenas, so a host that compiled
/// once stayed at ~600 MB resident (measured: 603 MB after a JavaScript
/// component's two compiles) while serving needs a fraction of that.
/// `malloc_trim` returns the free pages of every arena. It takes a few
/// milliseconds, once per compile, on the compile's own thread.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it
    // touches no live allocation and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs `work` on a new thread and waits for its result without blocking
/// the async executor.
pub async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = thread::Builder::new()
        .name("wasm-host-compile".into())
        .spawn(move || {
            let _ = tx.send(work());
        });
    // If no thread can be started, the dropped sender reports the failure.
    drop(spawned);
    rx.await
}

/// Advances the epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = thread::Builder::new()
        .name("wasm-host-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        // Without the ticker no deadline fires; say so loudly but keep
        // serving, since requests still complete normally.
        tracing::error!(error = %e, "could not start the epoch ticker; request timeouts will not fire");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_made_on_first_use_and_then_shared() {
        let runtime = Runtime::new(&EngineSettings::default()).unwrap();
        // The 0.2 engine at start, to find a bad setting there; no other.
        assert_eq!(runtime.optimized.made().count(), 1);
        let p3 = runtime.tier(false, EngineKey::P3).unwrap();
        assert_eq!(p3.world(), World::P3);
        assert_eq!(runtime.optimized.made().count(), 2);
        let again = runtime.tier(false, EngineKey::P3).unwrap();
        assert!(Engine::same(p3.engine(), again.engine()));
        // A clone shares what was made.
        let clone = runtime.clone();
        let snapshot = clone.tier(false, EngineKey::P2_SNAPSHOT).unwrap();
        assert_eq!(snapshot.key(), EngineKey::P2_SNAPSHOT);
        assert_eq!(runtime.optimized.made().count(), 3);
    }

    #[test]
    fn only_perfmap_turns_a_profiler_on() {
        assert!(matches!(profiler_named(None), Ok(ProfilingStrategy::None)));
        assert!(matches!(
            profiler_named(Some("")),
            Ok(ProfilingStrategy::None)
        ));
        assert!(matches!(
            profiler_named(Some("perfmap")),
            Ok(ProfilingStrategy::PerfMap)
        ));
        assert_eq!(profiler_named(Some("vtune")).err(), Some("vtune"));
    }
}
