//! The supervisor: keeps the apps and listeners one host runs (and each
//! app's triggers) as its config says, and changes them when a new config
//! is applied:
//! added apps start, removed apps drain away, apps whose component path
//! changed reload, apps whose settings changed start again beside the old
//! one (which then drains), and nothing unchanged is touched.
//!
//! A change that cannot be made whole (a busy address, a new app that does
//! not load) is refused before any running app or listener is touched. The
//! supervisor starts and stops apps; it never reaches into how an app reloads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::AppConfig;
use crate::control::handoff::{CarriedApp, PassedSocket};
use crate::control::socket::Applied;
use crate::control::{pull, source, tls_watch, watch};
use crate::hosting::activation::Inherited;
use crate::hosting::apps::Apps;
use crate::hosting::connection::ConnectionLimits;
use crate::hosting::listener;
use crate::hosting::routes::RouteTable;
use crate::hosting::tls::{self, CertSlot, CertTable, SniResolver};
use crate::kv::Stores;
use crate::oci::{Puller, Reference};
use crate::runtime::engine::Runtime;

struct Running {
    app: Arc<App>,
    config: AppConfig,
    /// Ends the app's file watch (and its certificate watch).
    watch: CancellationToken,
    /// The app's TLS certificate, swapped in place when its files change.
    tls: Option<Arc<CertSlot>>,
}

struct Listening {
    /// The listening socket's descriptor and address, for a handoff; open
    /// while `task` runs.
    fd: RawFd,
    bound: SocketAddr,
    table: Arc<ArcSwap<RouteTable>>,
    /// The certificates of a TLS listener, by host name.
    tls: Option<Arc<SniResolver>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running apps and listeners of a host.
pub struct Supervisor {
    runtime: Runtime,
    control_plane: tokio::runtime::Handle,
    shutdown: CancellationToken,
    apps: Vec<(String, Running)>,
    listeners: BTreeMap<SocketAddr, Listening>,
    table: Arc<Apps>,
    /// Apps draining away after a config change.
    retiring: TaskTracker,
    /// Open key-value stores, shared by every app using the same one.
    stores: Stores,
    /// Pulls the apps named by `oci://` reference.
    puller: Arc<Puller>,
    /// Bounds on the connections of every listener.
    connections: ConnectionLimits,
    /// What the apps ran in the process this one took over from; used by
    /// the first apply only.
    carried: HashMap<String, CarriedApp>,
}

impl Supervisor {
    /// An empty supervisor; `shutdown` stops every listener it will start.
    pub fn new(
        runtime: Runtime,
        control_plane: tokio::runtime::Handle,
        shutdown: CancellationToken,
        puller: Arc<Puller>,
        connections: ConnectionLimits,
    ) -> Self {
        Self {
            connections,
            runtime,
            control_plane,
            shutdown,
            apps: Vec::new(),
            listeners: BTreeMap::new(),
            table: Arc::new(Apps::new(Vec::new())),
            retiring: TaskTracker::new(),
            stores: Stores::new(),
            puller,
            carried: HashMap::new(),
        }
    }

    /// Makes the next apply start these apps at the generation and from
    /// the file the old process ran (a binary upgrade), instead of at
    /// generation 1 from the config's file.
    pub fn carry(&mut self, apps: Vec<CarriedApp>) {
        self.carried = apps.into_iter().map(|a| (a.name.clone(), a)).collect();
    }

    /// What each app runs, for a successor to carry on. Refused while a
    /// canary runs: the successor would start only the live version.
    pub fn to_carry(&self) -> Result<Vec<CarriedApp>, String> {
        let mut carried = Vec::new();
        for (name, running) in &self.apps {
            let app = &running.app;
            if let Some(canary) = app.canary() {
                return Err(format!(
                    "app `{name}` runs canary generation {}; promote or abort it before upgrading the host",
                    canary.generation()
                ));
            }
            let generation = app.live().generation();
            let path = app
                .source_of(generation)
                .unwrap_or_else(|| app.path().borrow().clone());
            let source = self.puller.reference_of(&path).map(|r| r.to_string());
            carried.push(CarriedApp {
                name: name.clone(),
                generation,
                path,
                source,
            });
        }
        Ok(carried)
    }

    /// The listening sockets, by configured address, for a successor.
    pub fn passable(&self) -> Vec<PassedSocket> {
        self.listeners
            .iter()
            .map(|(addr, l)| PassedSocket {
                addr: *addr,
                bound: Some(l.bound),
                fd: l.fd,
            })
            .collect()
    }

    /// The apps by name, for the control socket and the admin listener.
    pub fn table(&self) -> Arc<Apps> {
        self.table.clone()
    }

    /// The addresses listened on now.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners.keys().copied().collect()
    }

    /// Binds every address in `configs` not listened on yet, or takes it
    /// from the sockets the parent passed in. Done first, so a busy port
    /// fails before anything compiles.
    pub async fn bind(
        configs: &[AppConfig],
        taken: &[SocketAddr],
        inherited: &mut Inherited,
    ) -> Result<HashMap<SocketAddr, TcpListener>> {
        let mut bound = HashMap::new();
        let mut wanted: Vec<SocketAddr> = configs.iter().flat_map(|c| c.listen.clone()).collect();
        wanted.sort();
        wanted.dedup();
        let only = wanted.len() == 1;
        for addr in &wanted {
            if taken.contains(addr) {
                continue;
            }
            if let Some(listener) = inherited.take(*addr, only) {
                let listener = TcpListener::from_std(listener)
                    .with_context(|| format!("cannot use the passed socket for {addr}"))?;
                bound.insert(*addr, listener);
                continue;
            }
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on {addr}; is another server using it? (choose another address)"
                )
            })?;
            bound.insert(*addr, listener);
        }
        Ok(bound)
    }

    /// Makes the supervisor run `configs`, on listeners from `bound` (see
    /// [`Supervisor::bind`]) for addresses not listened on yet.
    pub async fn apply(
        &mut self,
        configs: Vec<AppConfig>,
        mut bound: HashMap<SocketAddr, TcpListener>,
    ) -> Result<Applied> {
        let mut applied = Applied::default();
        let (configs, pins) = self.pull(configs).await?;
        // Start what is new or changed first; until all of it loads,
        // nothing running is touched.
        let mut fresh: HashMap<String, Running> = HashMap::new();
        for config in &configs {
            let name = &config.settings.name;
            let old = self.running(name);
            let first = match old {
                Some(old) if same_except_path(&old.config, config) => continue,
                Some(old) => old.app.live().generation() + 1,
                None => self.carried.get(name).map_or(1, |c| c.generation),
            };
            match self.start(config.clone(), first).await {
                Ok(running) => {
                    fresh.insert(name.clone(), running);
                }
                Err(e) => {
                    for (_, started) in fresh {
                        started.app.shutdown().await;
                    }
                    return Err(e.context(format!("app `{name}` could not start; nothing changed")));
                }
            }
        }

        let mut next = Vec::new();
        let mut reloads = Vec::new();
        let mut old_apps = std::mem::take(&mut self.apps);
        for mut config in configs {
            let name = config.settings.name.clone();
            let old = old_apps
                .iter()
                .position(|(n, _)| *n == name)
                .map(|i| old_apps.remove(i).1);
            match (fresh.remove(&name), old) {
                (Some(running), Some(old)) => {
                    self.retire(old);
                    applied.restarted.push(name.clone());
                    next.push((name, running));
                }
                (Some(running), None) => {
                    applied.started.push(name.clone());
                    next.push((name, running));
                }
                (None, Some(mut old)) => {
                    keep_built_path(&old.config, &mut config);
                    // The access log is switched in place: neither a
                    // reload nor a restart.
                    old.app.set_access_log(config.access_log);
                    old.config.access_log = config.access_log;
                    if old.config == config {
                        applied.unchanged.push(name.clone());
                    } else {
                        reloads.push((old.app.clone(), config.settings.path.clone()));
                        old.config = config;
                    }
                    next.push((name, old));
                }
                (None, None) => {}
            }
        }
        for (name, old) in old_apps {
            applied.stopped.push(name);
            self.retire(old);
        }
        self.apps = next;
        self.route(&mut bound);
        self.table
            .set(self.apps.iter().map(|(_, r)| r.app.clone()).collect());
        for (name, pinned) in pins {
            match pinned {
                Some(pinned) => self.puller.remember(&name, &pinned),
                None => self.puller.forget(&name),
            }
        }

        for (app, path) in reloads {
            match app.reload(Some(path)).await {
                Ok(_) => applied.reloaded.push(app.name().to_string()),
                Err(e) => applied.refused.push(format!("{}: {e}", app.name())),
            }
        }
        self.carried.clear();
        Ok(applied)
    }

    /// Drains every app and stops every listener; returns when all work
    /// has ended.
    pub async fn shutdown(&mut self) {
        for (_, listening) in std::mem::take(&mut self.listeners) {
            listening.stop.cancel();
            let _ = listening.task.await;
        }
        for (_, running) in std::mem::take(&mut self.apps) {
            running.watch.cancel();
            running.app.shutdown().await;
        }
        self.retiring.close();
        self.retiring.wait().await;
    }

    /// Fills in the file of every app named by registry reference: pulled
    /// when the reference is new to the app, else the one it runs. Any
    /// failed pull refuses the whole config. Returns what each app now
    /// runs, where that changes: a pull, or (`None`) a file again.
    async fn pull(
        &self,
        mut configs: Vec<AppConfig>,
    ) -> Result<(Vec<AppConfig>, Vec<(String, Option<Reference>)>)> {
        let mut pins = Vec::new();
        for config in &mut configs {
            let name = &config.settings.name;
            if let (Some(carried), Some(_)) = (self.carried.get(name), &config.oci) {
                // What the old process pulled and ran: no pull again.
                config.settings.path = carried.path.clone();
                let pin = carried.source.as_deref().and_then(|s| s.parse().ok());
                pins.push((name.clone(), pin));
                continue;
            }
            let Some(reference) = &config.oci else {
                if self
                    .running(name)
                    .is_none_or(|old| old.config.oci.is_some())
                {
                    pins.push((name.clone(), None));
                }
                continue;
            };
            if let Some(old) = self
                .running(name)
                .filter(|old| old.config.oci.as_ref() == Some(reference))
            {
                config.settings.path = old.config.settings.path.clone();
                continue;
            }
            let pulled = self.puller.pull(reference).await.with_context(|| {
                format!("app `{name}`: cannot pull its component; nothing changed")
            })?;
            config.settings.path = pulled.path;
            pins.push((name.clone(), Some(pulled.reference)));
        }
        Ok((configs, pins))
    }

    fn running(&self, name: &str) -> Option<&Running> {
        self.apps.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    /// Builds (for a crate) and loads one app, and starts its watch.
    async fn start(&self, mut config: AppConfig, first: u64) -> Result<Running> {
        let mut settings = config.settings.clone();
        match (self.carried.get(&settings.name), &config.source) {
            // The file the old process ran (a binary upgrade); the config
            // keeps naming its own, so a later apply compares like with like.
            (Some(carried), _) => settings.path = carried.path.clone(),
            (None, Some(source)) => {
                tracing::info!(app = %settings.name, dir = %source.dir().display(), "building the app");
                config.settings.path = source.build(false).await?;
                settings.path = config.settings.path.clone();
            }
            (None, None) => {}
        }
        // Loaded before the app starts, so a pair that went bad since the
        // config was checked refuses the change without an app to undo.
        let tls = match &config.tls {
            Some(files) => Some(
                CertSlot::load(files.clone()).context("its TLS certificate could not be loaded")?,
            ),
            None => None,
        };
        let app = App::start(
            self.runtime.clone(),
            settings.clone(),
            first,
            &self.control_plane,
            self.stores
                .for_app(&config.settings.name, config.settings.keyvalue.clone()),
        )
        .await
        .map_err(anyhow::Error::from)
        .context("its first version could not be loaded")?;
        let stop = CancellationToken::new();
        let triggers = (|| -> Result<()> {
            match (&config.source, config.watch) {
                (Some(source_dir), true) => source::spawn(
                    app.clone(),
                    source_dir.clone(),
                    &settings.path,
                    stop.clone(),
                )?,
                (None, true) => watch::spawn(app.clone(), stop.clone())?,
                (_, false) => {}
            }
            if let (Some(_), Some(every)) = (&config.oci, config.watch_tag) {
                pull::watch_tag(app.clone(), self.puller.clone(), every, stop.clone());
            }
            if let Some(slot) = &tls {
                tls_watch::spawn(&config.settings.name, slot.clone(), stop.clone())?;
            }
            Ok(())
        })();
        if let Err(e) = triggers {
            // The app is up but would run without the triggers it was
            // configured with: stop what did start, and refuse.
            stop.cancel();
            app.shutdown().await;
            return Err(e);
        }
        app.set_access_log(config.access_log);
        Ok(Running {
            app,
            config,
            watch: stop,
            tls,
        })
    }

    /// Ends an app's watch and drains it away in the background.
    fn retire(&self, old: Running) {
        old.watch.cancel();
        tracing::info!(app = %old.app.name(), "app leaving: draining its versions");
        self.retiring.spawn(async move { old.app.shutdown().await });
    }

    /// Gives every address its table of apps: swaps tables in on running
    /// listeners, starts listeners from `bound` for new addresses, and
    /// stops listeners no app uses any more.
    fn route(&mut self, bound: &mut HashMap<SocketAddr, TcpListener>) {
        let mut tables: BTreeMap<SocketAddr, Vec<_>> = BTreeMap::new();
        let mut grace: BTreeMap<SocketAddr, Duration> = BTreeMap::new();
        let mut certs: BTreeMap<SocketAddr, Vec<_>> = BTreeMap::new();
        for (_, running) in &self.apps {
            for addr in &running.config.listen {
                if let Some(slot) = &running.tls {
                    certs
                        .entry(*addr)
                        .or_default()
                        .push((running.config.route.hosts.clone(), slot.clone()));
                }
                tables
                    .entry(*addr)
                    .or_default()
                    .push((running.config.route.clone(), running.app.clone()));
                let g = grace.entry(*addr).or_default();
                *g = (*g).max(running.config.settings.drain_timeout);
            }
        }
        let unused: Vec<_> = self
            .listeners
            .keys()
            .filter(|a| !tables.contains_key(a))
            .copied()
            .collect();
        for addr in unused {
            if let Some(listening) = self.listeners.remove(&addr) {
                tracing::info!(%addr, "no app uses this address any more: closing it");
                listening.stop.cancel();
                self.retiring.spawn(async move {
                    let _ = listening.task.await;
                });
            }
        }
        for (addr, entries) in tables {
            let table = RouteTable::new(entries);
            let certs = certs.remove(&addr).map(CertTable::new);
            if let Some(listening) = self.listeners.get(&addr) {
                listening.table.store(Arc::new(table));
                match (&listening.tls, certs) {
                    (Some(resolver), Some(certs)) => resolver.replace(certs),
                    (None, None) => {}
                    // The config file check refuses a mix on one address;
                    // turning a running listener's TLS on or off would need
                    // a new listener on the same port.
                    _ => tracing::warn!(
                        %addr,
                        "the apps on this address changed between TLS and cleartext; the listener keeps what it started with until the host restarts"
                    ),
                }
                continue;
            }
            let Some(listener) = bound.remove(&addr) else {
                tracing::warn!(%addr, "address was not bound; its apps are not reachable there");
                continue;
            };
            let table = Arc::new(ArcSwap::from_pointee(table));
            let stop = self.shutdown.child_token();
            let names: Vec<String> = table.load().apps().map(|a| a.name().to_string()).collect();
            let local = listener.local_addr().unwrap_or(addr);
            let fd = listener.as_raw_fd();
            let resolver = certs.map(SniResolver::new);
            let acceptor = match resolver.clone().map(tls::acceptor).transpose() {
                Ok(acceptor) => acceptor,
                Err(e) => {
                    tracing::warn!(%addr, "cannot set up TLS; its apps are not reachable there: {e:#}");
                    continue;
                }
            };
            let scheme = if acceptor.is_some() { "https" } else { "http" };
            tracing::info!(apps = %names.join(","), "listening on {scheme}://{local}");
            let task = tokio::spawn(listener::run(
                listener,
                table.clone(),
                stop.clone(),
                grace.get(&addr).copied().unwrap_or_default(),
                self.connections.clone(),
                acceptor,
            ));
            self.listeners.insert(
                addr,
                Listening {
                    fd,
                    bound: local,
                    table,
                    tls: resolver,
                    stop,
                    task,
                },
            );
        }
    }
}

/// Whether two configs of an app differ at most in the component path (and
/// the access log, which is switched in place), so a reload (not a
/// restart) brings the app up to date.
fn same_except_path(old: &AppConfig, new: &AppConfig) -> bool {
    let mut new = new.clone();
    new.settings.path = old.settings.path.clone();
    new.oci = old.oci.clone();
    new.access_log = old.access_log;
    *old == new
}

/// An app built from the same crate keeps the path of its last build: the
/// config names the crate, the app runs what was built from it.
fn keep_built_path(old: &AppConfig, new: &mut AppConfig) {
    if new.source.is_some() && new.source == old.source {
        new.settings.path = old.settings.path.clone();
    }
}
