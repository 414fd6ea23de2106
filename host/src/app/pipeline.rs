//! The changes of one app's versions, run one at a time: reload (live or
//! canary), promote, abort, rollback, the tier-up that swaps optimized code
//! in, and the canary's automatic abort.
//!
//! Plain reloads that queue up while another change runs are coalesced
//! into one run (the latest path wins) and every asker gets its outcome.
//! A change that fails leaves every slot as it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{App, AppSettings, Ask, Op, ReloadError, ReloadOutcome};
use crate::app::rollout::{Canary, CanaryPlan, ErrorWindow};
use crate::runtime::component_file;
use crate::runtime::digest::Digest;
use crate::runtime::engine::Runtime;
use crate::runtime::state::Shared;
use crate::runtime::version::{Loadable, State, Version};

/// How often a canary's counters are sampled for its automatic abort.
const ABORT_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Runs the app's changes one at a time.
pub(super) async fn worker(app: Weak<App>, mut asks: mpsc::UnboundedReceiver<Ask>) {
    let mut held: Option<Ask> = None;
    loop {
        let first = match held.take() {
            Some(ask) => ask,
            None => match asks.recv().await {
                Some(ask) => ask,
                None => break,
            },
        };
        let mut batch = vec![first];
        if batch[0].op.coalesces() {
            while let Ok(more) = asks.try_recv() {
                if !more.op.coalesces() {
                    held = Some(more);
                    break;
                }
                batch.push(more);
            }
        }
        let Some(app) = app.upgrade() else { break };
        let started = Instant::now();
        let (mut ops, replies): (Vec<Op>, Vec<_>) =
            batch.into_iter().map(|ask| (ask.op, ask.reply)).unzip();
        let op = if ops.len() > 1 {
            tracing::info!(app = %app.name(), asks = ops.len(), "coalesced reload asks into one run");
            let path = ops.iter().rev().find_map(|op| match op {
                Op::Reload { path, .. } => path.clone(),
                _ => None,
            });
            Op::Reload { path, canary: None }
        } else {
            match ops.pop() {
                Some(op) => op,
                None => continue,
            }
        };
        let what = op.name();
        let is_reload = matches!(op, Op::Reload { .. });
        let mut result = app.run(op).await;
        if let Ok(outcome) = &mut result {
            outcome.reload_us = started.elapsed().as_micros() as u64;
        }
        if is_reload {
            app.metrics
                .reloaded(result.is_ok(), result.as_ref().is_ok_and(|o| o.unchanged));
        }
        if let Err(error) = &result {
            tracing::warn!(app = %app.name(), reason = %error, "{what} refused");
        }
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

impl App {
    /// Runs one change with the pipeline lock held.
    async fn run(self: &Arc<Self>, op: Op) -> Result<ReloadOutcome, ReloadError> {
        let closed = self.pipeline.lock().await;
        if *closed {
            return Err(ReloadError::ShuttingDown);
        }
        let result = match op {
            Op::Reload { path, canary } => {
                let path = path.unwrap_or_else(|| self.path.borrow().clone());
                self.run_reload(path, canary).await
            }
            Op::Promote => self.run_promote(),
            Op::Abort { only, why } => self.run_abort(only, &why),
            Op::Rollback => self.run_rollback().await,
        };
        self.prune_sources();
        drop(closed);
        result
    }

    /// Read, digest, load, then swap in as live or start as a canary.
    async fn run_reload(
        self: &Arc<Self>,
        path: PathBuf,
        plan: Option<CanaryPlan>,
    ) -> Result<ReloadOutcome, ReloadError> {
        let name = &self.settings.name;
        let current = self.canary.load_full();
        if let (Some(canary), None) = (&current, &plan) {
            return Err(ReloadError::CanaryRunning(canary.version.generation()));
        }
        let (bytes, digest) = read_component(&path).await?;
        let component = Loadable::new(bytes, digest);
        let live = self.live();
        if digest == live.digest() {
            if plan.is_some() {
                return Err(ReloadError::CanaryIsLive(path));
            }
            tracing::info!(app = %name, generation = live.generation(), digest = %digest.short(), "reload: unchanged");
            // The same bytes under another name: later reloads read that.
            self.set_source(live.generation(), &path);
            self.path.send_if_modified(|p| replace(p, &path));
            return Ok(outcome(&live, &path, true));
        }
        if let (Some(plan), Some(canary)) = (&plan, &current)
            && canary.version.digest() == digest
        {
            // Same canary bytes: only its plan changes (e.g. a ramp-up).
            let version = canary.version.clone();
            self.set_canary(version.clone(), plan.clone(), path.clone())?;
            self.set_source(version.generation(), &path);
            tracing::info!(app = %name, generation = version.generation(), percent = plan.percent, "canary share changed");
            let mut done = outcome(&version, &path, true);
            done.canary = true;
            return Ok(done);
        }

        // Numbers are only used up by versions that load, so a refused
        // reload leaves no gap; the pipeline lock makes this race-free.
        let generation = self.generations.load(Ordering::SeqCst) + 1;
        let version = load_version(
            &self.runtime,
            &self.settings,
            self.shared(),
            &path,
            component.clone(),
            generation,
        )
        .await?;
        self.generations.store(generation, Ordering::SeqCst);
        self.set_source(generation, &path);
        let version = Arc::new(version);
        let mut done = outcome(&version, &path, false);
        match plan {
            Some(plan) => {
                let percent = plan.percent;
                done.retired = self.set_canary(version.clone(), plan, path.clone())?;
                done.canary = true;
                tracing::info!(app = %name, generation, digest = %digest.short(), percent, "canary live");
            }
            None => {
                done.retired = Some(self.swap_in(&version, true));
                self.path.send_if_modified(|p| replace(p, &path));
                tracing::info!(app = %name, generation, digest = %digest.short(), "version live");
            }
        }
        self.tier_up(&version, component);
        Ok(done)
    }

    /// Installs `version` as the canary run by `plan`, retiring a different
    /// canary it replaces (whose generation it returns), and starts the
    /// automatic abort if the plan asks for one.
    fn set_canary(
        self: &Arc<Self>,
        version: Arc<Version>,
        plan: CanaryPlan,
        path: PathBuf,
    ) -> Result<Option<u64>, ReloadError> {
        let canary =
            Arc::new(Canary::new(version.clone(), plan, path).map_err(ReloadError::BadPlan)?);
        version.set_state(State::Canary);
        let old = self.canary.swap(Some(canary.clone()));
        self.watch_canary(&canary);
        Ok(old
            .filter(|old| !Arc::ptr_eq(&old.version, &version))
            .map(|old| {
                self.retire(old.version.clone(), true);
                old.version.generation()
            }))
    }

    fn run_promote(&self) -> Result<ReloadOutcome, ReloadError> {
        let canary = self.canary.load_full().ok_or(ReloadError::NoCanary)?;
        let version = canary.version.clone();
        // Live first, then unlink the canary: a request routed to it in
        // between still finds it taking requests.
        let retired = self.swap_in(&version, true);
        self.canary.store(None);
        let path = self
            .source_of(version.generation())
            .unwrap_or_else(|| canary.path.clone());
        self.path.send_if_modified(|p| replace(p, &path));
        tracing::info!(app = %self.settings.name, generation = version.generation(), "canary promoted: version live");
        let mut done = outcome(&version, &path, false);
        done.retired = Some(retired);
        Ok(done)
    }

    fn run_abort(&self, only: Option<u64>, why: &str) -> Result<ReloadOutcome, ReloadError> {
        let current = self.canary.load_full().ok_or(ReloadError::NoCanary)?;
        let generation = current.version.generation();
        if only.is_some_and(|g| g != generation) {
            return Err(ReloadError::NoCanary);
        }
        self.canary.store(None);
        self.retire(current.version.clone(), true);
        tracing::info!(app = %self.settings.name, generation, why, "canary aborted");
        let live = self.live();
        let mut done = outcome(&live, &self.path.borrow(), false);
        done.retired = Some(generation);
        Ok(done)
    }

    async fn run_rollback(&self) -> Result<ReloadOutcome, ReloadError> {
        let previous = self
            .previous
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or(ReloadError::NoPrevious)?;
        let generation = self.generations.load(Ordering::SeqCst) + 1;
        let revived = previous
            .revive(generation)
            .await
            .map_err(|check| ReloadError::Revive {
                generation: previous.generation(),
                check,
            })?;
        self.generations.store(generation, Ordering::SeqCst);
        // What runs again came from the previous version's file, so that is
        // what a bare reload, SIGHUP or the file watch reads from now on;
        // left on the rolled-back file, the next SIGHUP would undo this.
        let path = self
            .source_of(previous.generation())
            .unwrap_or_else(|| self.path.borrow().clone());
        self.set_source(generation, &path);
        let revived = Arc::new(revived);
        if let Some(canary) = self.canary.swap(None) {
            self.retire(canary.version.clone(), true);
        }
        let retired = self.swap_in(&revived, true);
        tracing::info!(
            app = %self.settings.name,
            generation,
            revived_from = previous.generation(),
            digest = %previous.digest().short(),
            path = %path.display(),
            "rolled back: version live"
        );
        self.path.send_if_modified(|p| replace(p, &path));
        let mut done = outcome(&revived, &path, false);
        done.retired = Some(retired);
        done.revived_from = Some(previous.generation());
        Ok(done)
    }

    /// If `version` runs quickly compiled baseline code, compiles optimized
    /// code in the background and swaps it in under the same generation
    /// (live or canary) — unless a change or shutdown came first. Requests
    /// never notice: the baseline copy drains like any old version.
    pub(super) fn tier_up(self: &Arc<Self>, version: &Arc<Version>, component: Loadable) {
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
                component,
                generation,
                app.settings.version.clone(),
                app.shared(),
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
            let canary = app.canary.load_full();
            if *closed {
                return;
            } else if Arc::ptr_eq(&app.live.load(), &baseline) {
                app.swap_in_copy(&optimized);
            } else if let Some(canary) = canary.filter(|c| Arc::ptr_eq(&c.version, &baseline)) {
                let copy = Canary::new(optimized.clone(), canary.plan.clone(), canary.path.clone());
                let Ok(copy) = copy else { return };
                optimized.set_state(State::Canary);
                app.canary.store(Some(Arc::new(copy)));
                app.retire(baseline, false);
            } else {
                tracing::info!(app = %name, generation, "optimized code no longer needed: a newer version took over");
                return;
            }
            tracing::info!(
                app = %name,
                generation,
                compile_ms = optimized.compile_time().as_millis() as u64,
                "version optimized: now on optimized code"
            );
            drop(closed);
        });
    }

    /// Makes `version` live and retires the one it replaces, keeping that
    /// one for a rollback; returns its generation. Call with the pipeline
    /// lock held.
    fn swap_in(&self, version: &Arc<Version>, hook: bool) -> u64 {
        version.set_state(State::Live);
        let old = self.live.swap(version.clone());
        let generation = old.generation();
        if let Ok(mut previous) = self.previous.lock() {
            *previous = Some(old.clone());
        }
        self.retire(old, hook);
        generation
    }

    /// Swaps in the optimized copy of the live generation; the baseline
    /// copy drains without its `drain` hook and is not kept for rollback.
    fn swap_in_copy(&self, version: &Arc<Version>) {
        version.set_state(State::Live);
        let old = self.live.swap(version.clone());
        self.retire(old, false);
    }

    /// Samples the canary's responses while it runs, and aborts it when its
    /// plan's error bound is passed.
    fn watch_canary(self: &Arc<Self>, canary: &Arc<Canary>) {
        let Some(rule) = canary.plan.auto_abort.clone() else {
            return;
        };
        let app = Arc::downgrade(self);
        let generation = canary.version.generation();
        let counters = canary.version.clone();
        self.control_plane.spawn(async move {
            let mut window = ErrorWindow::new(rule);
            let mut tick = tokio::time::interval(ABORT_CHECK_EVERY);
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else { return };
                if app.canary().map(|v| v.generation()) != Some(generation) {
                    return;
                }
                let c = counters.counters();
                if let Some(tripped) = window.observe(Instant::now(), c.total(), c.class(5)) {
                    tracing::warn!(app = %app.name(), generation, %tripped, "canary failing: aborting it");
                    let why = format!("automatic: {tripped}");
                    let _ = app
                        .ask(Op::Abort {
                            only: Some(generation),
                            why,
                        })
                        .await;
                    return;
                }
            }
        });
    }
}

/// Reads a component file (through [`component_file`], which refuses what
/// is not a regular file of a sane size and bounds the read in time, off
/// this thread) and digests it.
pub(super) async fn read_component(path: &Path) -> Result<(Arc<[u8]>, Digest), ReloadError> {
    let bytes = component_file::read(path)
        .await
        .map_err(|e| ReloadError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let digest = Digest::of(&bytes);
    Ok((bytes.into(), digest))
}

/// Loads one version and logs the result either way.
pub(super) async fn load_version(
    runtime: &Runtime,
    settings: &AppSettings,
    shared: Shared,
    path: &Path,
    component: Loadable,
    generation: u64,
) -> Result<Version, ReloadError> {
    let name = &settings.name;
    let (digest, key) = (component.digest, component.key);
    // Large components start on quickly compiled code (unless optimized
    // code for them is at hand already: on disk, or linked in memory, which
    // `Version::load` prefers).
    let baseline = runtime.wants_baseline(component.bytes.len(), digest, component.key);
    let loaded = Version::load(
        runtime,
        component,
        generation,
        settings.version.clone(),
        shared,
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
                code_from_disk = version.code_from_disk(),
                code = version.tier(),
                world = version.world().name(),
                memory_reset = key.memory.name(),
                built_for_reuse = version.built_for_reuse(),
                "version loaded"
            );
            Ok(version)
        }
        Err(check) => Err(ReloadError::Refused {
            path: path.to_path_buf(),
            check,
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
        canary: false,
        retired: None,
        revived_from: None,
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
