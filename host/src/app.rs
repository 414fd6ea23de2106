//! One hosted application: the pointer to its live version, the versions
//! still draining, and the reload pipeline.
//!
//! Reloads of one app run one at a time on a worker task; asks that arrive
//! while one runs are coalesced into the next run (the latest path wins) and
//! every asker gets that run's outcome. The app never parses command lines
//! and never knows which trigger asked for a reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use crate::engine::Runtime;
use crate::metrics::AppMetrics;
use crate::request::{self, Response};
use crate::version::{Digest, LoadError, State, Version, VersionSettings};
use crate::work::WorkGuard;

/// Settings of one app, validated by the caller.
#[derive(Clone, Debug)]
pub struct AppSettings {
    /// Name used in logs and guest output prefixes.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// How long a draining version may keep running before it is force-ended.
    pub drain_timeout: Duration,
    /// What each version needs besides its bytes.
    pub version: VersionSettings,
}

/// The result of a reload that did not fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// The generation now live.
    pub generation: u64,
    /// Its content digest (SHA-256, hex).
    pub digest: String,
    /// Compilation time of the new version; 0 when unchanged or cached.
    pub compile_ms: u64,
    /// Whether the compiled and linked component came from memory.
    pub cached: bool,
    /// Time the host spent on the reload, from taking it up to the swap, µs.
    pub reload_us: u64,
    /// Whether the file had the live version's digest, so nothing changed.
    pub unchanged: bool,
    /// The file the live version came from.
    pub path: PathBuf,
}

/// Why a reload did not happen. The live version keeps serving in every case.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The new version failed a check.
    #[error("{path}: {source}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The failed check.
        source: LoadError,
    },
    /// The host is shutting down and takes no more reloads.
    #[error("the host is shutting down")]
    ShuttingDown,
}

/// One ask for a reload, with the channel its outcome goes back on.
struct ReloadAsk {
    path: Option<PathBuf>,
    reply: oneshot::Sender<Result<ReloadOutcome, ReloadError>>,
}

/// One hosted application.
pub struct App {
    settings: AppSettings,
    runtime: Runtime,
    live: ArcSwap<Version>,
    draining: Arc<Mutex<Vec<Arc<Version>>>>,
    drains: TaskTracker,
    asks: mpsc::UnboundedSender<ReloadAsk>,
    path: watch::Sender<PathBuf>,
    /// Held by a reload run and by shutdown, so no reload can swap in a
    /// version after shutdown has drained the live one; `true` once closed.
    pipeline: tokio::sync::Mutex<bool>,
    /// Where reloads and tier-ups run.
    control_plane: tokio::runtime::Handle,
    /// Shared with drain tasks, which record their outcome.
    metrics: Arc<AppMetrics>,
}

impl App {
    /// Loads generation 1 from `settings.path` and starts the reload worker
    /// on `control_plane`, a runtime apart from the one serving requests, so
    /// a reload under full load does not queue behind request tasks.
    /// Fails, with the reason, if the first version cannot be loaded.
    pub async fn start(
        runtime: Runtime,
        settings: AppSettings,
        control_plane: &tokio::runtime::Handle,
    ) -> Result<Arc<Self>, ReloadError> {
        let path = settings.path.clone();
        let (bytes, digest) = read_component(&path)?;
        let first = load_version(&runtime, &settings, &path, bytes.clone(), digest, 1).await?;
        first.set_state(State::Live);
        tracing::info!(app = %settings.name, generation = 1, digest = %digest.short(), "version live");

        let (asks, rx) = mpsc::unbounded_channel();
        let first = Arc::new(first);
        let app = Arc::new(Self {
            live: ArcSwap::new(first.clone()),
            draining: Arc::default(),
            drains: TaskTracker::new(),
            asks,
            path: watch::Sender::new(path),
            pipeline: tokio::sync::Mutex::new(false),
            runtime,
            settings,
            control_plane: control_plane.clone(),
            metrics: Arc::default(),
        });
        control_plane.spawn(reload_worker(Arc::downgrade(&app), rx));
        app.tier_up(&first, bytes);
        Ok(app)
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The version taking new requests now.
    pub fn live(&self) -> Arc<Version> {
        self.live.load_full()
    }

    /// Versions that stopped taking requests but still run work.
    pub fn draining(&self) -> Vec<Arc<Version>> {
        self.draining.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// The component path the live version came from; changes when a reload
    /// names a new file.
    pub fn path(&self) -> watch::Receiver<PathBuf> {
        self.path.subscribe()
    }

    /// Asks for a reload from `path` (or the current path) and waits for the
    /// outcome of the run that serves this ask.
    pub async fn reload(&self, path: Option<PathBuf>) -> Result<ReloadOutcome, ReloadError> {
        let (reply, outcome) = oneshot::channel();
        self.asks
            .send(ReloadAsk { path, reply })
            .map_err(|_| ReloadError::ShuttingDown)?;
        outcome.await.map_err(|_| ReloadError::ShuttingDown)?
    }

    /// Serves one request on the live version.
    pub async fn handle(&self, req: hyper::Request<Incoming>) -> Response {
        let started = Instant::now();
        let (version, guard) = self.enter();
        let response = request::handle(version.clone(), guard, req).await;
        version.counters().record(response.status());
        self.metrics.observe_latency(started.elapsed());
        response
    }

    /// The app's counters, for metrics.
    pub fn metrics(&self) -> &AppMetrics {
        &self.metrics
    }

    /// Picks the live version and counts a piece of work on it, such that a
    /// version a drain has seen idle never gets new work: if the live pointer
    /// moved between the load and the count, the count is undone and the
    /// request goes to the new version instead.
    fn enter(&self) -> (Arc<Version>, WorkGuard) {
        loop {
            let version = self.live.load_full();
            let guard = version.work().enter();
            if Arc::ptr_eq(&version, &self.live.load()) {
                return (version, guard);
            }
        }
    }

    /// Drains every version, the live one included, and waits until all
    /// their work has ended or been force-ended. Call after the server has
    /// stopped taking requests.
    pub async fn shutdown(&self) {
        let mut closed = self.pipeline.lock().await;
        if !*closed {
            *closed = true;
            self.retire(self.live(), true);
        }
        drop(closed);
        self.drains.close();
        self.drains.wait().await;
    }

    /// One reload run: read, digest, load, swap, retire the old version.
    async fn run_reload(self: &Arc<Self>, path: PathBuf) -> Result<ReloadOutcome, ReloadError> {
        let closed = self.pipeline.lock().await;
        if *closed {
            return Err(ReloadError::ShuttingDown);
        }
        let name = &self.settings.name;
        let (bytes, digest) = read_component(&path)?;
        let current = self.live();
        if digest == current.digest() {
            tracing::info!(app = %name, generation = current.generation(), digest = %digest.short(), "reload: unchanged");
            self.path.send_if_modified(|p| replace(p, &path));
            return Ok(outcome(&current, &path, true));
        }

        let generation = current.generation() + 1;
        let version = load_version(
            &self.runtime,
            &self.settings,
            &path,
            bytes.clone(),
            digest,
            generation,
        )
        .await?;
        let version = Arc::new(version);
        self.swap_in(&version, true);
        self.path.send_if_modified(|p| replace(p, &path));
        tracing::info!(app = %name, generation, digest = %digest.short(), "version live");
        self.tier_up(&version, bytes);
        Ok(outcome(&version, &path, false))
    }

    /// If `version` runs quickly compiled baseline code, compiles optimized
    /// code in the background and swaps it in under the same generation —
    /// unless a reload or shutdown came first. Requests never notice: the
    /// baseline copy drains like any old version.
    fn tier_up(self: &Arc<Self>, version: &Arc<Version>, bytes: Arc<[u8]>) {
        if !version.is_baseline() {
            return;
        }
        let app = Arc::downgrade(self);
        let baseline = version.clone();
        self.control_plane.spawn(async move {
            let Some(app) = app.upgrade() else { return };
            let (name, generation) = (app.settings.name.clone(), baseline.generation());
            let loaded = Version::load(
                &app.runtime,
                bytes,
                baseline.digest(),
                generation,
                app.settings.version.clone(),
                false,
            )
            .await;
            let optimized = match loaded {
                Ok(v) => Arc::new(v.continuing(&baseline)),
                Err(e) => {
                    tracing::warn!(app = %name, generation, error = %e, "optimized code failed; staying on baseline code");
                    return;
                }
            };
            let closed = app.pipeline.lock().await;
            if *closed || !Arc::ptr_eq(&app.live.load(), &baseline) {
                tracing::info!(app = %name, generation, "optimized code no longer needed: a newer version took over");
                return;
            }
            app.swap_in(&optimized, false);
            tracing::info!(
                app = %name,
                generation,
                compile_ms = optimized.compile_time().as_millis() as u64,
                "version optimized: now on optimized code"
            );
            drop(closed);
        });
    }

    /// Makes `version` live and retires the one it replaces (calling its
    /// `drain` hook if `hook`, see [`App::retire`]). Call with the pipeline
    /// lock held.
    fn swap_in(&self, version: &Arc<Version>, hook: bool) {
        version.set_state(State::Live);
        let old = self.live.swap(version.clone());
        self.retire(old, hook);
    }

    /// Marks `old` draining and spawns the wait that retires it.
    /// `hook` says whether to call the guest's `drain` hook: not when the
    /// same generation lives on in a copy (tier-up), so that each generation
    /// hears `drain` exactly once.
    fn retire(&self, old: Arc<Version>, hook: bool) {
        old.set_state(State::Draining);
        // The hook's run counts as the old version's work before the drain
        // below starts waiting.
        if let Some(run) = old.drain_hook().filter(|_| hook) {
            self.drains.spawn(run);
        }
        let in_flight = old.work().running();
        tracing::info!(app = %self.settings.name, generation = old.generation(), in_flight, "version draining");
        if let Ok(mut draining) = self.draining.lock() {
            draining.push(old.clone());
        }
        let name = self.settings.name.clone();
        let drain_timeout = self.settings.drain_timeout;
        let draining = self.draining.clone();
        let metrics = self.metrics.clone();
        self.drains.spawn(async move {
            let started = tokio::time::Instant::now();
            let served_before = old.served();
            let mut forced = 0;
            if !old.work().wait_idle(started + drain_timeout).await {
                forced = old.work().running();
                tracing::warn!(app = %name, generation = old.generation(), forced, "drain deadline passed; ending remaining work");
                old.force_end();
                // Forced guests stop at their next epoch tick; this bound
                // only guards against a host bug keeping a guard alive.
                old.work()
                    .wait_idle(tokio::time::Instant::now() + Duration::from_secs(5))
                    .await;
            }
            old.set_state(State::Retired);
            if hook {
                metrics.drained(started.elapsed(), forced as u64);
            }
            tracing::info!(
                app = %name,
                generation = old.generation(),
                requests_drained = old.served() - served_before,
                drain_ms = started.elapsed().as_millis() as u64,
                forced,
                "version retired"
            );
            if let Ok(mut draining) = draining.lock() {
                draining.retain(|v| !Arc::ptr_eq(v, &old));
            }
        });
    }
}

/// Reads a component file and digests it.
///
/// A plain blocking read: it runs at start-up or on the control-plane thread,
/// never on a thread that serves requests.
fn read_component(path: &Path) -> Result<(Arc<[u8]>, Digest), ReloadError> {
    let bytes = std::fs::read(path).map_err(|e| ReloadError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let digest = Digest::of(&bytes);
    Ok((bytes.into(), digest))
}

/// Loads one version and logs the result either way.
async fn load_version(
    runtime: &Runtime,
    settings: &AppSettings,
    path: &Path,
    bytes: Arc<[u8]>,
    digest: Digest,
    generation: u64,
) -> Result<Version, ReloadError> {
    let name = &settings.name;
    // Large components start on quickly compiled code (unless optimized
    // code for them is at hand already, which `Version::load` prefers).
    let baseline = runtime.wants_baseline(bytes.len());
    let loaded = Version::load(
        runtime,
        bytes,
        digest,
        generation,
        settings.version.clone(),
        baseline,
    )
    .await;
    match loaded {
        Ok(version) => {
            tracing::info!(
                app = %name,
                generation,
                digest = %digest.short(),
                compile_ms = version.compile_time().as_millis() as u64,
                cached = version.was_cached(),
                code = if version.is_baseline() { "baseline" } else { "optimized" },
                "version loaded"
            );
            Ok(version)
        }
        Err(source) => Err(ReloadError::Refused {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn outcome(version: &Version, path: &Path, unchanged: bool) -> ReloadOutcome {
    ReloadOutcome {
        generation: version.generation(),
        digest: version.digest().to_string(),
        compile_ms: if unchanged || version.was_cached() {
            0
        } else {
            version.compile_time().as_millis() as u64
        },
        cached: version.was_cached(),
        reload_us: 0,
        unchanged,
        path: path.to_path_buf(),
    }
}

/// Sets `slot` to `path`; returns whether it changed.
fn replace(slot: &mut PathBuf, path: &Path) -> bool {
    if slot == path {
        return false;
    }
    *slot = path.to_path_buf();
    true
}

/// Runs reloads one at a time, coalescing asks that queue up meanwhile.
async fn reload_worker(app: Weak<App>, mut asks: mpsc::UnboundedReceiver<ReloadAsk>) {
    while let Some(first) = asks.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = asks.try_recv() {
            batch.push(more);
        }
        let Some(app) = app.upgrade() else { break };
        let started = Instant::now();
        let path = batch
            .iter()
            .rev()
            .find_map(|ask| ask.path.clone())
            .unwrap_or_else(|| app.path.borrow().clone());
        if batch.len() > 1 {
            tracing::info!(app = %app.name(), asks = batch.len(), "coalesced reload asks into one run");
        }
        let mut result = app.run_reload(path).await;
        if let Ok(outcome) = &mut result {
            outcome.reload_us = started.elapsed().as_micros() as u64;
        }
        app.metrics
            .reloaded(result.is_ok(), result.as_ref().is_ok_and(|o| o.unchanged));
        match &result {
            Ok(_) => {
                tracing::debug!(app = %app.name(), ms = started.elapsed().as_millis() as u64, "reload finished")
            }
            Err(error) => tracing::warn!(app = %app.name(), reason = %error, "reload refused"),
        }
        for ask in batch {
            let _ = ask.reply.send(result.clone());
        }
    }
}
