//! One hosted application: the pointer to its live version, an optional
//! canary beside it, the versions still draining, the previous version kept
//! for a rollback, and the pipeline that changes them (in [`pipeline`]).
//!
//! Changes of one app (reload, promote, abort, rollback) run one at a time
//! on a worker task. The app never parses command lines and never knows
//! which trigger asked for a change.

pub mod held;
pub mod limits;
mod pipeline;
pub mod rollout;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use self::held::Held;
use self::limits::{Admission, Capped, Limits, Refusal};
use self::rollout::{Canary, CanaryPlan};
use crate::kv::{Keyvalue, KvSettings};
use crate::ops::metrics::{AppMetrics, Rejection};
use crate::runtime::engine::Runtime;
use crate::runtime::request::{self, Response};
use crate::runtime::state::Shared;
use crate::runtime::version::{LoadError, Loadable, State, Version, VersionSettings};
use crate::runtime::work::WorkGuard;

/// Settings of one app, validated by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct AppSettings {
    /// Name used in logs and guest output prefixes.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// How long a draining version may keep running before it is force-ended.
    pub drain_timeout: Duration,
    /// What each version needs besides its bytes.
    pub version: VersionSettings,
    /// Admission limits: concurrency, queue, body size.
    pub limits: Limits,
    /// Where the app's key-value buckets live.
    pub keyvalue: KvSettings,
    /// Bounds on the WebSocket connections the host holds for the app.
    pub realtime: crate::realtime::Limits,
    /// The key a GRIP proxy in front of the app (Pushpin) signs its
    /// `Grip-Sig` with; requests it signs may carry WebSocket events and
    /// get `Grip-*` answers to hold themselves. `None`: no proxy is
    /// trusted, and WebSocket events come only from the host.
    pub grip_key: Option<Arc<str>>,
    /// A GRIP proxy's publish endpoint: what the app publishes goes there
    /// too, to reach the connections the proxy holds.
    pub grip_publish: Option<crate::realtime::forward::Endpoint>,
}

/// The result of a change (reload, promote, abort, rollback) that did not
/// fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// The generation now live, or the new canary's.
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
    /// Whether `generation` runs as a canary beside the live version.
    #[serde(default)]
    pub canary: bool,
    /// The generation that stopped taking requests, if one did.
    #[serde(default)]
    pub retired: Option<u64>,
    /// For a rollback: the generation whose code now runs again.
    #[serde(default)]
    pub revived_from: Option<u64>,
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
    /// The new version failed a check. The check is part of the message,
    /// not a chained source, so `{:#}` does not print it twice.
    #[error("{path}: {check}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The failed check.
        check: LoadError,
    },
    /// The host is shutting down and takes no more reloads.
    #[error("the host is shutting down")]
    ShuttingDown,
    /// A plain reload while a canary runs would leave two new versions.
    #[error(
        "generation {0} is running as a canary; `wasm-host promote` or `wasm-host abort` it first (or reload with --canary to replace it)"
    )]
    CanaryRunning(u64),
    /// Promote or abort with no canary.
    #[error("no canary is running; start one with `wasm-host reload NEW.wasm --canary 10`")]
    NoCanary,
    /// A canary of the very bytes that are live.
    #[error("{0} is the live version already; a canary of it would change nothing")]
    CanaryIsLive(PathBuf),
    /// Rollback with nothing to go back to.
    #[error(
        "there is no previous version to roll back to: only a version replaced by a reload or promote since the host started is kept"
    )]
    NoPrevious,
    /// The previous version failed its readiness check again.
    #[error("the previous version (generation {generation}) could not be brought back: {check}")]
    Revive {
        /// The generation that was to come back.
        generation: u64,
        /// Why it could not.
        check: LoadError,
    },
    /// The canary's settings are wrong.
    #[error("{0}")]
    BadPlan(String),
}

/// A change of an app's versions.
#[derive(Debug)]
enum Op {
    /// Load a new version from `path` (or the current path): live, or a
    /// canary run by `canary`.
    Reload {
        path: Option<PathBuf>,
        canary: Option<CanaryPlan>,
    },
    /// Make the canary live.
    Promote,
    /// Drop the canary; `only` restricts it to that generation, `why` says
    /// what asked (for the log).
    Abort { only: Option<u64>, why: String },
    /// Bring back the version the last reload or promote replaced.
    Rollback,
}

impl Op {
    /// What the log calls it.
    fn name(&self) -> &'static str {
        match self {
            Op::Reload { .. } => "reload",
            Op::Promote => "promote",
            Op::Abort { .. } => "abort",
            Op::Rollback => "rollback",
        }
    }

    /// Whether this ask may share one run with other plain reloads.
    fn coalesces(&self) -> bool {
        matches!(self, Op::Reload { canary: None, .. })
    }
}

/// One ask for a change, with the channel its outcome goes back on.
struct Ask {
    op: Op,
    reply: oneshot::Sender<Result<ReloadOutcome, ReloadError>>,
}

/// One hosted application.
pub struct App {
    settings: AppSettings,
    runtime: Runtime,
    live: ArcSwap<Version>,
    /// A version taking a share of new requests, if one runs.
    canary: ArcSwapOption<Canary>,
    draining: Arc<Mutex<Vec<Arc<Version>>>>,
    /// The version the last reload or promote replaced, kept compiled so a
    /// rollback needs no compile.
    previous: Mutex<Option<Arc<Version>>>,
    /// The last generation number handed out.
    generations: AtomicU64,
    drains: TaskTracker,
    asks: mpsc::UnboundedSender<Ask>,
    /// What a reload naming no file reads: the file of the live version.
    path: watch::Sender<PathBuf>,
    /// The component file each generation was loaded from (a revived one:
    /// that of the generation it revives), for status and for moving
    /// `path` along when a rollback or promote changes the live version.
    sources: Mutex<HashMap<u64, PathBuf>>,
    /// Held by a change and by shutdown, so nothing can swap in a version
    /// after shutdown has drained the live one; `true` once closed.
    pipeline: tokio::sync::Mutex<bool>,
    /// Where changes and tier-ups run.
    control_plane: tokio::runtime::Handle,
    /// Shared with drain tasks, which record their outcome.
    metrics: Arc<AppMetrics>,
    /// Turns to run a guest; shared by every version of the app.
    admission: Admission,
    started: Instant,
    /// The app's buckets, which every version shares.
    keyvalue: Arc<Keyvalue>,
    /// Whether the listener logs each request of this app (an access
    /// line); a config reload switches it without touching the versions.
    access_log: AtomicBool,
    /// Its channels and held connections, which outlive every version.
    held: Arc<Held>,
}

/// The generation that served a request, as an extension of its response,
/// for the access log. Absent when no version was chosen (the request was
/// refused at admission).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedBy {
    /// The version's generation.
    pub generation: u64,
}

impl App {
    /// Loads generation `first` (1 for a new app; more when an app is
    /// started again with new settings) from `settings.path` and starts the
    /// change worker on `control_plane`, a runtime apart from the one
    /// serving requests, so a reload under full load does not queue behind
    /// request tasks. Fails, with the reason, if the version cannot load.
    pub async fn start(
        runtime: Runtime,
        settings: AppSettings,
        first: u64,
        control_plane: &tokio::runtime::Handle,
        keyvalue: Arc<Keyvalue>,
    ) -> Result<Arc<Self>, ReloadError> {
        let path = settings.path.clone();
        let (bytes, digest) = pipeline::read_component(&path).await?;
        let component = Loadable::new(bytes, digest);
        let held = Held::new(settings.realtime.clone());
        if let Some(endpoint) = &settings.grip_publish {
            crate::realtime::forward::start(held.hub(), endpoint.clone());
        }
        if let crate::kv::StoreChoice::Redis(url) = &settings.keyvalue.choice
            && let Err(e) = crate::realtime::fanout::start(held.hub(), url, &settings.name)
        {
            tracing::warn!(app = %settings.name, error = %e, "publishes stay on this host: Redis cannot be used for them");
        }
        let version = pipeline::load_version(
            &runtime,
            &settings,
            Shared {
                keyvalue: keyvalue.clone(),
                hub: held.hub().clone(),
            },
            &path,
            component.clone(),
            first,
        )
        .await?;
        version.set_state(State::Live);
        tracing::info!(app = %settings.name, generation = first, digest = %digest.short(), "version live");

        let (asks, rx) = mpsc::unbounded_channel();
        let version = Arc::new(version);
        let app = Arc::new(Self {
            live: ArcSwap::new(version.clone()),
            canary: ArcSwapOption::empty(),
            draining: Arc::default(),
            previous: Mutex::new(None),
            generations: AtomicU64::new(first),
            drains: TaskTracker::new(),
            asks,
            sources: Mutex::new(HashMap::from([(first, path.clone())])),
            path: watch::Sender::new(path),
            pipeline: tokio::sync::Mutex::new(false),
            admission: Admission::new(settings.limits.clone()),
            runtime,
            settings,
            control_plane: control_plane.clone(),
            metrics: Arc::default(),
            started: Instant::now(),
            keyvalue,
            access_log: AtomicBool::new(false),
            held,
        });
        control_plane.spawn(pipeline::worker(Arc::downgrade(&app), rx));
        app.tier_up(&version, component);
        Ok(app)
    }

    /// Its channels and the connections held open for it.
    pub fn held(&self) -> &Arc<Held> {
        &self.held
    }

    /// What its versions share: buckets and channels.
    fn shared(&self) -> Shared {
        Shared {
            keyvalue: self.keyvalue.clone(),
            hub: self.held.hub().clone(),
        }
    }

    /// Counts WebSocket messages handled by generation `generation`:
    /// `received` from clients, `sent` in its answer.
    pub fn count_messages(&self, generation: u64, received: usize, sent: usize) {
        self.held.received(received);
        if let Some(version) = self
            .versions()
            .into_iter()
            .find(|v| v.generation() == generation)
        {
            version.counters().websocket_messages(received, sent);
        }
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether each request of this app is logged as an access line.
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Turns the access log of this app on or off.
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// The app's key-value state.
    pub fn keyvalue(&self) -> &Keyvalue {
        &self.keyvalue
    }

    /// The settings the app runs with.
    pub fn settings(&self) -> &AppSettings {
        &self.settings
    }

    /// How long the app has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The version taking new requests now.
    pub fn live(&self) -> Arc<Version> {
        self.live.load_full()
    }

    /// The canary version, if one runs.
    pub fn canary(&self) -> Option<Arc<Version>> {
        self.canary.load().as_ref().map(|c| c.version.clone())
    }

    /// The canary's share of new requests in percent, if one runs.
    pub fn canary_percent(&self) -> Option<f64> {
        self.canary.load().as_ref().map(|c| c.plan.percent)
    }

    /// Versions that stopped taking requests but still run work.
    pub fn draining(&self) -> Vec<Arc<Version>> {
        self.draining.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Every version the app holds: live, canary, draining, and the one
    /// kept for a rollback (state `retired`), in that order.
    pub fn versions(&self) -> Vec<Arc<Version>> {
        let mut all = vec![self.live()];
        all.extend(self.canary());
        all.extend(self.draining());
        if let Ok(previous) = self.previous.lock()
            && let Some(previous) = previous.as_ref()
            && !all.iter().any(|v| Arc::ptr_eq(v, previous))
        {
            all.push(previous.clone());
        }
        all
    }

    /// The component path the live version came from, which a reload
    /// naming no file reads again; changes when a reload names a new file,
    /// and when a rollback or promote puts a version of another file live.
    pub fn path(&self) -> watch::Receiver<PathBuf> {
        self.path.subscribe()
    }

    /// The component file generation `generation` was loaded from (for a
    /// revived generation, the file of the one it revives), while the app
    /// still holds that generation.
    pub fn source_of(&self, generation: u64) -> Option<PathBuf> {
        self.sources.lock().ok()?.get(&generation).cloned()
    }

    /// Records that `generation` was loaded from `path`.
    fn set_source(&self, generation: u64, path: &std::path::Path) {
        if let Ok(mut sources) = self.sources.lock() {
            sources.insert(generation, path.to_path_buf());
        }
    }

    /// Forgets the sources of generations the app no longer holds.
    fn prune_sources(&self) {
        let held: Vec<u64> = self.versions().iter().map(|v| v.generation()).collect();
        if let Ok(mut sources) = self.sources.lock() {
            sources.retain(|generation, _| held.contains(generation));
        }
    }

    /// Asks for a reload from `path` (or the current path) and waits for the
    /// outcome of the run that serves this ask.
    pub async fn reload(&self, path: Option<PathBuf>) -> Result<ReloadOutcome, ReloadError> {
        self.ask(Op::Reload { path, canary: None }).await
    }

    /// Loads a new version from `path` (or the current path) as a canary run
    /// by `plan`. A canary of the same bytes as the running canary only
    /// changes its plan (e.g. a larger share).
    pub async fn start_canary(
        &self,
        path: Option<PathBuf>,
        plan: CanaryPlan,
    ) -> Result<ReloadOutcome, ReloadError> {
        plan.validate().map_err(ReloadError::BadPlan)?;
        self.ask(Op::Reload {
            path,
            canary: Some(plan),
        })
        .await
    }

    /// Makes the canary live; the old live version drains.
    pub async fn promote(&self) -> Result<ReloadOutcome, ReloadError> {
        self.ask(Op::Promote).await
    }

    /// Drops the canary; the live version takes every request again.
    pub async fn abort(&self) -> Result<ReloadOutcome, ReloadError> {
        self.ask(Op::Abort {
            only: None,
            why: "asked".into(),
        })
        .await
    }

    /// Brings back the version the last reload or promote replaced, as a
    /// new generation running its already compiled code.
    pub async fn rollback(&self) -> Result<ReloadOutcome, ReloadError> {
        self.ask(Op::Rollback).await
    }

    async fn ask(&self, op: Op) -> Result<ReloadOutcome, ReloadError> {
        let (reply, outcome) = oneshot::channel();
        self.asks
            .send(Ask { op, reply })
            .map_err(|_| ReloadError::ShuttingDown)?;
        outcome.await.map_err(|_| ReloadError::ShuttingDown)?
    }

    /// Serves one request on the version it is routed to, within the
    /// app's limits.
    pub async fn handle<B>(&self, req: hyper::Request<B>) -> Response
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = Instant::now();
        let limits = self.admission.limits();
        if let Some(max) = limits.max_body
            && limits::declared_length(req.headers()).is_some_and(|len| len > max)
        {
            self.metrics.rejected(Rejection::BodyTooLarge);
            return self.too_large(max);
        }
        let turn = match self.admission.admit().await {
            Ok(turn) => turn,
            Err(refusal) => return self.busy(refusal),
        };
        let (version, guard) = match self.enter(req.headers()) {
            Ok(entered) => entered,
            Err(why) => return request::plain(StatusCode::MISDIRECTED_REQUEST, why),
        };
        let mut response = match limits.max_body {
            None => request::handle(version.clone(), guard, turn, req, limits.hangup_grace).await,
            Some(max) => {
                // A body without a declared length is cut off where it
                // passes the limit; the guest sees a body-size error.
                let hit = Arc::new(AtomicBool::new(false));
                let req = req.map(|body| Capped::new(body, max, hit.clone()));
                let response =
                    request::handle(version.clone(), guard, turn, req, limits.hangup_grace).await;
                if hit.load(Ordering::Relaxed) && response.status().is_server_error() {
                    self.metrics.rejected(Rejection::BodyTooLarge);
                    self.too_large(max)
                } else {
                    response
                }
            }
        };
        version.counters().record(response.status());
        self.metrics.observe_latency(started.elapsed());
        response.extensions_mut().insert(ServedBy {
            generation: version.generation(),
        });
        response
    }

    fn too_large(&self, max: u64) -> Response {
        request::plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} allows ({max} bytes, --max-body)\n",
                self.settings.name
            ),
        )
    }

    /// 503 with `Retry-After`, saying which limit was hit.
    fn busy(&self, refusal: Refusal) -> Response {
        let limits = self.admission.limits();
        let why = match refusal {
            Refusal::Busy => {
                self.metrics.rejected(Rejection::Busy);
                format!(
                    "{} is running its limit of {} requests and {} more are waiting (--max-concurrency, --max-queue); retry shortly\n",
                    self.settings.name, limits.max_concurrency, limits.max_queue
                )
            }
            Refusal::QueueTimeout => {
                self.metrics.rejected(Rejection::QueueTimeout);
                format!(
                    "{} had no free turn within {:?} (--queue-timeout); retry shortly\n",
                    self.settings.name, limits.queue_timeout
                )
            }
        };
        let mut response = request::plain(StatusCode::SERVICE_UNAVAILABLE, why);
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        response
    }

    /// The app's counters, for metrics.
    pub fn metrics(&self) -> &AppMetrics {
        &self.metrics
    }

    /// Routes a request (pin header, canary share, else live) and counts a
    /// piece of work on the chosen version, such that a version a drain has
    /// seen idle never gets new work: if the version stopped taking requests
    /// between the choice and the count, the count is undone and the choice
    /// made again.
    fn enter(&self, headers: &http::HeaderMap) -> Result<(Arc<Version>, WorkGuard), String> {
        let pin = rollout::pinned(headers).map_err(|text| {
            format!(
                "{}: `{text}` is not a generation number\n",
                rollout::PIN_HEADER
            )
        })?;
        loop {
            let canary = self.canary.load();
            let version = match (pin, canary.as_deref()) {
                (Some(g), Some(c)) if c.version.generation() == g => c.version.clone(),
                (Some(g), _) => {
                    let live = self.live.load_full();
                    if live.generation() != g {
                        return Err(format!(
                            "generation {g} of {} takes no requests (live: {}); see `wasm-host status`\n",
                            self.settings.name,
                            live.generation()
                        ));
                    }
                    live
                }
                (None, Some(c)) if c.takes(headers) => c.version.clone(),
                (None, _) => self.live.load_full(),
            };
            let guard = version.work().enter();
            if version.state().takes_requests() {
                return Ok((version, guard));
            }
        }
    }

    /// Drains every version, the live one and any canary included, and
    /// waits until all their work has ended or been force-ended. Call after
    /// the server has stopped taking requests.
    pub async fn shutdown(&self) {
        let mut closed = self.pipeline.lock().await;
        if !*closed {
            *closed = true;
            if let Some(canary) = self.canary.swap(None) {
                self.retire(canary.version.clone(), true);
            }
            self.retire(self.live(), true);
            if let Ok(mut previous) = self.previous.lock() {
                previous.take();
            }
        }
        drop(closed);
        self.drains.close();
        self.drains.wait().await;
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
        let in_flight = old.running();
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
            let deadline = crate::runtime::work::deadline_after(started, drain_timeout);
            if !old.wait_idle(deadline).await {
                forced = old.running();
                tracing::warn!(app = %name, generation = old.generation(), forced, "drain deadline passed; ending remaining work");
                old.force_end();
                // Forced guests stop at their next epoch tick; this bound
                // only guards against a host bug keeping a guard alive.
                old.wait_idle(tokio::time::Instant::now() + Duration::from_secs(5))
                    .await;
            }
            old.set_state(State::Retired);
            if hook {
                metrics.drained(started.elapsed(), forced as u64);
            }
            if let Ok(mut draining) = draining.lock() {
                draining.retain(|v| !Arc::ptr_eq(v, &old));
            }
            // Logged last, once every view of the host agrees it is retired.
            tracing::info!(
                app = %name,
                generation = old.generation(),
                requests_drained = old.served() - served_before,
                drain_ms = started.elapsed().as_millis() as u64,
                forced,
                "version retired"
            );
        });
    }
}
