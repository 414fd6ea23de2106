//! One loaded version of an app: its compiled component, pre-instance, state
//! and live-work count.
//!
//! Loading runs the checks a version must pass before it may take traffic:
//! it is a component, it compiles, it exports an HTTP handler of WASI 0.2
//! (`wasi:http/incoming-handler`) or 0.3 (`wasi:http/handler`), which
//! decides its [`World`], it links, and it instantiates within the ready
//! timeout. A version never reaches back into its app: the app decides when
//! it goes live or drains.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::handler::ProxyHandler;

use crate::ops::metrics::VersionCounters;
use crate::runtime::digest::Digest;
use crate::runtime::engine::{Runtime, Tier};
use crate::runtime::guest_log::GuestLog;
use crate::runtime::image;
use crate::runtime::lifecycle;
use crate::runtime::outgoing::OutgoingPolicy;
use crate::runtime::p2::WarmPool;
use crate::runtime::p3::P3Settings;
use crate::runtime::p3::pool::{Instances, Pool};
use crate::runtime::pool::EngineKey;
use crate::runtime::state::{AppServices, HostState, Shared};
use crate::runtime::store::Stores;
use crate::runtime::work::WorkCounter;
use crate::runtime::world::{Linked, World};

/// Why a candidate version was refused. Every variant says what was wrong
/// and, where it can, what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error(
        "not a WebAssembly file: it does not start with the `\\0asm` header (is this the right file?)"
    )]
    NotWasm,
    /// A core module where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component: build it for the `wasm32-wasip2` target, or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// The component failed to validate or compile.
    #[error("invalid component (is the file complete?): {0}")]
    Invalid(String),
    /// The component exports an HTTP handler of neither world.
    #[error(
        "the component does not export `wasi:http/incoming-handler@0.2.x` (WASI 0.2) or `wasi:http/handler@0.3.x` (WASI 0.3), so it cannot serve HTTP; its exports are: {0}"
    )]
    NoHandler(String),
    /// An import the host does not provide, or another link failure.
    #[error("the component cannot be linked: {0}")]
    Link(String),
    /// The engine its world and memory need could not be made.
    #[error("the host could not set up the engine this component runs on: {0}")]
    Engine(String),
    /// Instantiation trapped or failed.
    #[error("the component failed its readiness check: {0}")]
    NotReady(String),
    /// The app's `init` hook refused to start.
    #[error("the app's init hook refused to start: {0}")]
    InitRefused(String),
    /// The app's key-value store cannot be opened.
    #[error("{0}")]
    State(String),
    /// Instantiation did not finish within the ready timeout.
    #[error("the component did not become ready within {0:?} (see --ready-timeout)")]
    ReadyTimeout(Duration),
}

/// Where a version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Compiled and checked, not yet taking traffic.
    Loading = 0,
    /// Receives every new request.
    Live = 1,
    /// Finishes what it started; receives nothing new.
    Draining = 2,
    /// All its work has ended; it is about to be dropped (or kept compiled
    /// for a rollback).
    Retired = 3,
    /// Receives a share of new requests beside the live version.
    Canary = 4,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => State::Loading,
            1 => State::Live,
            2 => State::Draining,
            4 => State::Canary,
            _ => State::Retired,
        }
    }

    /// Whether a version in this state may be given new requests.
    pub fn takes_requests(self) -> bool {
        matches!(self, State::Live | State::Canary)
    }

    /// The lower-case name shown by `status` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            State::Loading => "loading",
            State::Live => "live",
            State::Draining => "draining",
            State::Retired => "retired",
            State::Canary => "canary",
        }
    }
}

/// What a version needs to know besides its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionSettings {
    /// Name of the app, used in guest log prefixes.
    pub app: Arc<str>,
    /// Bound on the readiness check.
    pub ready_timeout: Duration,
    /// Bound on everything one request runs, background work included.
    pub request_timeout: Duration,
    /// Where guests may send outgoing HTTP requests.
    pub outgoing: OutgoingPolicy,
    /// Requests one 0.2 instance may serve in sequence; 1 means a fresh
    /// instance for every request.
    pub reuse: u32,
    /// How a 0.3 version shares its instances between requests.
    pub p3: P3Settings,
    /// Environment variables every instance sees (`--env`); nothing else of
    /// the host's environment reaches a guest.
    pub env: Arc<[(String, String)]>,
    /// Host directories guests may read: (host path, path the guest sees).
    pub dirs: Arc<[(std::path::PathBuf, String)]>,
    /// A memory limit per instance below the engine's, if the app has one.
    pub max_memory: Option<usize>,
    /// The values `wasi:config/store` gives guests.
    pub config: Arc<[(String, String)]>,
}

/// A component's bytes, named by their digest, with what one pass over them
/// found before compiling (see [`image::read`]): which engine compiles it,
/// and whether its builder made it to serve many requests per instance.
/// Cheap to clone.
#[derive(Clone)]
pub struct Loadable {
    /// The component.
    pub bytes: Arc<[u8]>,
    /// Their digest.
    pub digest: Digest,
    /// The engine it compiles and runs on.
    pub key: EngineKey,
    /// It carries [`image::REUSE_SECTION`].
    pub built_for_reuse: bool,
}

impl Loadable {
    /// Reads `bytes` (whose digest is `digest`) once.
    pub fn new(bytes: Arc<[u8]>, digest: Digest) -> Self {
        let image = image::read(&bytes);
        Loadable {
            key: EngineKey::of(World::engine_for(&bytes), image.as_ref()),
            built_for_reuse: image.is_some_and(|image| image.built_for_reuse),
            bytes,
            digest,
        }
    }
}

/// One loaded, checked version of an app.
pub struct Version {
    generation: u64,
    digest: Digest,
    compile_time: Duration,
    cached: bool,
    /// Its code was read from the on-disk cache rather than compiled.
    from_disk: bool,
    baseline: bool,
    /// Its builder marked it as able to serve many requests per instance.
    built_for_reuse: bool,
    linked: Linked,
    settings: VersionSettings,
    stores: Arc<Stores>,
    state: AtomicU8,
    /// Requests in flight, and the work a 0.2 guest does after its answer.
    work: Arc<WorkCounter>,
    /// 0.3 instances alive: each holds the work its guest does after its
    /// responses, which the host cannot see task by task.
    alive: Arc<WorkCounter>,
    /// Cancelled by the drain deadline: every guest still running stops.
    cancel: CancellationToken,
    /// Cancelled when the version stops taking requests, so idle 0.3
    /// instances go at once instead of after their idle time.
    retiring: CancellationToken,
    served: AtomicU64,
    /// Shared with this generation's tier-up copy, so its counts carry on.
    counters: Arc<VersionCounters>,
    /// Idle 0.2 instances kept for reuse.
    warm: WarmPool,
    /// The instances of a 0.3 version; `None` for 0.2.
    instances: Option<Instances>,
    loaded_at: Instant,
}

impl Version {
    /// Compiles, links and readiness-checks `bytes` as generation
    /// `generation`. Compilation runs off the threads that serve requests
    /// (large components at low priority, see [`Tier::compile`]).
    /// Optimized code for `digest` linked recently is reused; otherwise, with
    /// `baseline`, the code comes from the quick (Winch) tier and is not
    /// added to the cache of linked components.
    pub async fn load(
        runtime: &Runtime,
        component: Loadable,
        generation: u64,
        settings: VersionSettings,
        shared: Shared,
        baseline: bool,
    ) -> Result<Self, LoadError> {
        let Loadable {
            bytes,
            digest,
            key,
            built_for_reuse,
        } = component;
        check_header(&bytes)?;
        let started = Instant::now();
        // Optimized code linked recently wins over compiling anything.
        let recalled = runtime.recall(digest);
        let cached = recalled.is_some();
        let tier = runtime
            .tier(baseline && !cached, key)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let (linked, from_disk) = match recalled {
            Some(linked) => (linked, false),
            None => {
                let (linked, from_disk) = link(runtime, tier, bytes, digest).await?;
                if !tier.is_baseline() {
                    runtime.remember(digest, &linked);
                }
                (linked, from_disk)
            }
        };
        let mut version = Self::assemble(
            generation,
            digest,
            tier.engine().clone(),
            linked,
            tier.is_baseline(),
            settings,
            shared,
        );
        version.compile_time = started.elapsed();
        version.built_for_reuse = built_for_reuse;
        version.cached = cached;
        version.from_disk = from_disk;
        version.open_state().await?;
        version.check_ready().await?;
        Ok(version)
    }

    /// A new generation running this version's compiled code: no read, no
    /// compile, only the readiness check (and so the `init` hook) again.
    /// This is what makes a rollback a swap rather than a rebuild.
    pub async fn revive(&self, generation: u64) -> Result<Self, LoadError> {
        let mut version = Self::assemble(
            generation,
            self.digest,
            self.stores.engine.clone(),
            self.linked.clone(),
            self.baseline,
            self.settings.clone(),
            Shared {
                keyvalue: self.stores.services.keyvalue.clone(),
                hub: self.stores.services.hub.clone(),
            },
        );
        version.built_for_reuse = self.built_for_reuse;
        version.check_ready().await?;
        Ok(version)
    }

    /// A version of linked code with nothing run yet: counted as cached
    /// and compiled in no time until the caller says otherwise.
    fn assemble(
        generation: u64,
        digest: Digest,
        engine: Engine,
        linked: Linked,
        baseline: bool,
        settings: VersionSettings,
        shared: Shared,
    ) -> Self {
        let services = Arc::new(AppServices {
            app: settings.app.clone(),
            keyvalue: shared.keyvalue,
            hub: shared.hub,
            config: settings.config.iter().cloned().collect(),
        });
        let stores = Arc::new(Stores {
            engine,
            generation,
            log: GuestLog::new(&settings.app, generation),
            env: settings.env.clone(),
            dirs: settings.dirs.clone(),
            outgoing: settings.outgoing.clone(),
            max_memory: settings.max_memory,
            services,
        });
        let mut version = Self {
            generation,
            digest,
            compile_time: Duration::ZERO,
            cached: true,
            from_disk: false,
            baseline,
            built_for_reuse: false,
            linked,
            warm: WarmPool::new(settings.reuse),
            settings,
            stores,
            state: AtomicU8::new(State::Loading as u8),
            work: Arc::new(WorkCounter::default()),
            alive: Arc::new(WorkCounter::default()),
            cancel: CancellationToken::new(),
            retiring: CancellationToken::new(),
            served: AtomicU64::new(0),
            counters: Arc::default(),
            instances: None,
            loaded_at: Instant::now(),
        };
        version.instances = version.make_instances();
        version
    }

    /// The instance handler of a 0.3 version (none for 0.2), counting into
    /// this version's counters.
    fn make_instances(&self) -> Option<Instances> {
        let Linked::P3(pre) = &self.linked else {
            return None;
        };
        Some(ProxyHandler::new(Pool {
            stores: self.stores.clone(),
            pre: pre.clone(),
            alive: self.alive.clone(),
            forced: self.cancel.clone(),
            retiring: self.retiring.clone(),
            counters: self.counters.clone(),
            settings: self.settings.p3,
            request_timeout: self.settings.request_timeout,
        }))
    }

    /// Opens the app's key-value store if this version imports
    /// `wasi:keyvalue`, so a store that cannot be opened (a server down, a
    /// file held by another process) refuses the version up front.
    async fn open_state(&self) -> Result<(), LoadError> {
        let component = self.linked.instance_pre().component();
        let uses_keyvalue = component
            .component_type()
            .imports(&self.stores.engine)
            .any(|(name, _)| name.starts_with("wasi:keyvalue/"));
        if uses_keyvalue {
            self.stores
                .services
                .keyvalue
                .ready()
                .await
                .map_err(|e| LoadError::State(format!("{e:#}")))?;
        }
        Ok(())
    }

    /// Instantiates once in a throwaway store and calls the optional `init`
    /// hook, all within the ready timeout.
    async fn check_ready(&self) -> Result<(), LoadError> {
        let mut store = self.new_store();
        let timeout = self.settings.ready_timeout;
        let pre = self.linked.instance_pre();
        let ready = async {
            let instance = pre.instantiate_async(&mut store).await?;
            lifecycle::init(&mut store, pre.component(), &instance).await
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(refusal))) => Err(LoadError::InitRefused(refusal)),
            Ok(Err(e)) => Err(LoadError::NotReady(format!("{e:#}"))),
            Err(_) => Err(LoadError::ReadyTimeout(timeout)),
        }
    }

    /// The optional `drain` hook's run, if the component has the hook. It
    /// is counted as this version's work from the moment this returns, so a
    /// drain that starts right after waits for it; a drain deadline or the
    /// request timeout ends it.
    pub fn drain_hook(self: &Arc<Self>) -> Option<impl Future<Output = ()> + Send + 'static> {
        if !lifecycle::exports_hook(self.linked.instance_pre().component(), "drain") {
            return None;
        }
        let guard = self.work.enter();
        let version = self.clone();
        Some(async move {
            let _guard = guard;
            let pre = version.linked.instance_pre();
            let mut store = version.new_store();
            let call = async {
                let instance = pre.instantiate_async(&mut store).await?;
                lifecycle::drain(&mut store, pre.component(), &instance).await
            };
            let generation = version.generation;
            tokio::select! {
                biased;
                _ = version.cancel.cancelled() => {
                    tracing::warn!(generation, "drain hook stopped by the drain deadline");
                }
                result = tokio::time::timeout(version.settings.request_timeout, call) => match result {
                    Ok(Ok(())) => tracing::info!(generation, "drain hook ran"),
                    Ok(Err(e)) => tracing::warn!(generation, error = %format!("{e:#}"), "drain hook trapped"),
                    Err(_) => tracing::warn!(generation, "drain hook stopped at the request timeout"),
                },
            }
        })
    }

    /// A fresh store of this version (see [`Stores::new_store`]).
    pub(crate) fn new_store(&self) -> Store<HostState> {
        self.stores.new_store()
    }

    /// The idle 0.2 instances kept for reuse.
    pub(crate) fn warm(&self) -> &WarmPool {
        &self.warm
    }

    /// The instances of a 0.3 version; `None` for 0.2.
    pub(crate) fn instances(&self) -> Option<&Instances> {
        self.instances.as_ref()
    }

    /// The linked component, of either world.
    pub(crate) fn linked(&self) -> &Linked {
        &self.linked
    }

    /// The WASI world this version serves.
    pub fn world(&self) -> World {
        self.linked.world()
    }

    /// The generation number: 1 for the first version, one more per reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Content digest of the component.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// How long compilation took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Whether this version runs quickly compiled (Winch) code, to be
    /// replaced by optimized code when that is ready.
    pub fn is_baseline(&self) -> bool {
        self.baseline
    }

    /// Whether its builder marked it as able to serve many requests per
    /// instance (see [`image::REUSE_SECTION`]).
    pub fn built_for_reuse(&self) -> bool {
        self.built_for_reuse
    }

    /// The name of the tier its code comes from, as status shows it.
    pub fn tier(&self) -> &'static str {
        crate::runtime::engine::tier_name(self.baseline)
    }

    /// Whether the linked component came from the in-memory cache.
    pub fn was_cached(&self) -> bool {
        self.cached
    }

    /// The name of its app.
    pub fn app_name(&self) -> &str {
        &self.settings.app
    }

    /// Whether its code was read from the on-disk cache (filled by an
    /// earlier host, or by `wasm-host compile`) rather than compiled.
    pub fn code_from_disk(&self) -> bool {
        self.from_disk
    }

    /// How long ago this version was loaded.
    pub fn uptime(&self) -> Duration {
        self.loaded_at.elapsed()
    }

    /// Bytes of compiled machine code this version keeps mapped.
    pub fn code_bytes(&self) -> usize {
        let range = self.linked.instance_pre().component().image_range();
        range.end.addr() - range.start.addr()
    }

    /// Bound on one request's run, background work included.
    pub fn request_timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    /// The counter of this version's requests in flight (and a 0.2
    /// guest's work after its answer).
    pub fn work(&self) -> &Arc<WorkCounter> {
        &self.work
    }

    /// 0.3 instances alive now (0 for a 0.2 version).
    pub fn instances_alive(&self) -> usize {
        self.alive.running()
    }

    /// Everything the version still runs: requests, and its 0.3 instances
    /// (which hold the work after their responses).
    pub fn running(&self) -> usize {
        self.work.running() + self.alive.running()
    }

    /// Waits until the version runs nothing (see [`Version::running`]), or
    /// until `deadline`; returns whether it got there. Requests first: a
    /// 0.3 instance ends only after its last request, and a version that
    /// takes no requests gets no new instance once none is in flight.
    pub async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        self.work.wait_idle(deadline).await && self.alive.wait_idle(deadline).await
    }

    /// Cancelled when a drain gives up waiting: running guests stop.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Requests that got a response from this version.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(crate) fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses by status class, for metrics.
    pub fn counters(&self) -> &VersionCounters {
        &self.counters
    }

    /// This version, counting into `other`'s counters: for the optimized
    /// copy that takes over a generation from its baseline copy.
    pub(crate) fn continuing(mut self, other: &Version) -> Self {
        self.counters = other.counters.clone();
        self.loaded_at = other.loaded_at;
        // Made again so its instances count into the shared counters; the
        // copy has served nothing yet, so no instance is lost.
        self.instances = self.make_instances();
        self
    }

    /// Where the version is in its life.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// Moves the version to `state`. Leaving `Live`/`Canary` drops idle
    /// instances (0.3 ones as soon as their last task ends).
    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::SeqCst);
        if !state.takes_requests() {
            self.warm.clear();
            if state != State::Loading {
                self.retiring.cancel();
            }
        }
    }

    /// Ends every guest still running on this version.
    pub fn force_end(&self) {
        self.cancel.cancel();
    }
}

/// Refuses non-wasm bytes and core modules with a reason a person can act on.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8 are version and layer: layer 0 is a core module.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Compiles (or, for optimized code, loads from the on-disk cache) and
/// links `bytes`, off the threads that serve requests; the exports decide
/// the world it is linked for.
/// Compiles `bytes` on `tier` (or reads its optimized code from the disk
/// cache, storing it there after a compile) and links it. Says whether the
/// code came from disk.
pub(crate) async fn link(
    runtime: &Runtime,
    tier: &Tier,
    bytes: Arc<[u8]>,
    digest: Digest,
) -> Result<(Linked, bool), LoadError> {
    let compiler = tier.clone();
    // Baseline code lives for seconds: not worth a disk write.
    let disk = runtime
        .code_cache(tier.key())
        .filter(|_| !tier.is_baseline())
        .cloned();
    let component = crate::runtime::engine::in_background(move || {
        if let Some(found) = disk
            .as_ref()
            .and_then(|d| d.load(compiler.engine(), digest))
        {
            return Ok((found, true));
        }
        let component = compiler.compile(&bytes)?;
        if let Some(disk) = &disk {
            disk.store(digest, &component);
        }
        Ok((component, false))
    })
    .await
    .map_err(|_| LoadError::Invalid("the compiler thread failed".to_string()))?
    .map_err(|e: wasmtime::Error| LoadError::Invalid(format!("{e:#}")))?;
    let (component, from_disk) = component;
    let world = World::of(tier.engine(), &component).map_err(LoadError::NoHandler)?;
    if world != tier.world() {
        // The bytes said one world and the compiled component another:
        // only a parser disagreement gets here; refuse rather than run it
        // on an engine that cannot.
        return Err(LoadError::Link(format!(
            "the component exports a WASI {} handler but was read as {}",
            world.name(),
            tier.world().name()
        )));
    }
    let instance_pre = tier
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| LoadError::Link(format!("{e:#}")))?;
    let linked = Linked::new(world, instance_pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
    Ok((linked, from_disk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_garbage_core_and_component_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0as"), Err(LoadError::NotWasm)));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn digest_prints_as_hex() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.short(), "e3b0c44298fc");
    }
}
