//! `wasm-host serve`: puts the parts together (listeners, apps, triggers,
//! control socket, admin listener) and runs until a shutdown signal, then
//! drains and returns. A config reload asked over the control socket is
//! carried out here, by the supervisor; so is a binary upgrade, after
//! which this process drains away while its successor serves.
//!
//! Order matters: the control socket and every listener are taken first, so
//! a busy port or a second host fails before any compile; every app's first
//! version must load before the first connection is accepted.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::file::{self, Overrides};
use crate::config::{ServeConfig, default_cache_dir};
use crate::control::handoff::{Handoff, Passed, PassedControl, PassedSocket, Successor};
use crate::control::socket::{Applied, Asks, ConfigAsk, ControlSocket};
use crate::control::upgrade::{self, UpgradeAsk};
use crate::hosting::activation::Inherited;
use crate::oci::Puller;
use crate::ops::systemd;
use crate::runtime::engine::Runtime;
use crate::supervisor::Supervisor;
use crate::{control::admin, control::config_watch, control::signals};

/// Serves `config` until SIGTERM/SIGINT, then drains every version.
/// `overrides` are the command-line host settings that win over a config
/// file's, on every re-read.
/// `inherited` holds the listening sockets the parent passed in, if any;
/// `takeover`, what an old host passed on in a binary upgrade and the
/// link to tell it when this one serves.
pub async fn serve(
    config: ServeConfig,
    overrides: Overrides,
    mut inherited: Inherited,
    takeover: Option<(Arc<Successor>, Passed)>,
) -> Result<()> {
    // Caught first, so a SIGTERM while the first versions load is a
    // graceful shutdown, not the default action's kill.
    let caught = signals::Signals::catch()?;
    crate::hosting::listener::raise_open_file_limit(config.connections.max_connections);
    let (successor, mut passed) = match takeover {
        Some((successor, passed)) => (Some(successor), passed),
        None => (None, Passed::default()),
    };
    inherited.add_upgraded(std::mem::take(&mut passed.listeners));
    if successor.is_some() {
        // The old process keeps its embedded key-value files open until its
        // last request has drained; first uses here wait that long for them.
        let longest_drain = config
            .apps
            .iter()
            .map(|a| a.settings.drain_timeout)
            .max()
            .unwrap_or_default();
        crate::kv::wait_for_old_host(longest_drain + Duration::from_secs(10));
    }
    let control = match passed.control.take() {
        Some((path, listener)) if path == config.control => ControlSocket::passed(listener, &path)?,
        Some((path, _)) => {
            tracing::warn!(old = %path.display(), "the control socket path changed; binding the new one");
            ControlSocket::bind(&config.control)?
        }
        None => ControlSocket::bind(&config.control)?,
    };
    let bound = Supervisor::bind(&config.apps, &[], &mut inherited).await?;
    for addr in inherited.unused() {
        tracing::warn!(%addr, "a passed socket matches no app's listen address; it stays unused");
    }
    // An old host's socket that no app here listens on would take
    // connections nobody accepts once the old host is gone.
    inherited.close_upgraded();
    let admin = match (config.admin, passed.admin.take()) {
        (Some(addr), Some((was, listener))) if was == addr => Some(
            TcpListener::from_std(listener)
                .with_context(|| format!("cannot use the passed admin socket {addr}"))?,
        ),
        (Some(addr), _) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for --admin; is another server using it?")
        })?),
        (None, _) => None,
    };
    let passable_admin = match (&admin, config.admin) {
        (Some(listener), Some(addr)) => Some(PassedSocket {
            addr,
            bound: listener.local_addr().ok(),
            fd: listener.as_raw_fd(),
        }),
        _ => None,
    };
    let runtime = Runtime::new(&config.engine)?;
    // The control plane (reloads, drains, the control socket) gets a thread
    // of its own: under full load it must not wait behind request tasks.
    let control_plane = ControlPlane::start()?;
    let shutdown = CancellationToken::new();
    // Pulled components sit beside the compiled code, by digest.
    let pulls = config
        .engine
        .cache_dir
        .clone()
        .unwrap_or_else(default_cache_dir)
        .join("oci");
    let puller = Arc::new(Puller::new(pulls));
    let mut supervisor = Supervisor::new(
        runtime.clone(),
        control_plane.handle().clone(),
        shutdown.clone(),
        puller.clone(),
        config.connections.clone(),
    );
    // Everything that may fail is set up before the first app starts
    // accepting: a process that took sockets over from an old host must not
    // fail after it has taken connections.
    let (asks, mut config_asks) = mpsc::channel::<ConfigAsk>(4);
    if let (Some(file), true) = (&config.file, config.watch_config) {
        config_watch::spawn(file.clone(), asks.clone(), shutdown.clone())?;
    }
    let asks = config.file.is_some().then_some(asks);
    supervisor.carry(std::mem::take(&mut passed.apps));
    supervisor.apply(config.apps.clone(), bound).await?;
    let apps = supervisor.table();

    let (upgrades, mut upgrade_asks) = mpsc::channel::<UpgradeAsk>(1);
    signals::spawn(
        caught,
        apps.clone(),
        asks.clone(),
        upgrades.clone(),
        shutdown.clone(),
    );
    let (control_path, control_fd) = control.passable();
    let keep_control_file = control.keep_file();
    let control_task = control_plane.spawn(control.serve(
        apps.clone(),
        puller,
        Asks {
            config: asks,
            upgrade: upgrades,
        },
        shutdown.clone(),
    ));
    // On the control plane too: health checks must answer under full load,
    // and keep answering (not ready) while the host drains.
    let admin_task = match admin {
        Some(listener) => {
            let addr = listener
                .local_addr()
                .context("cannot read the admin address")?;
            tracing::info!(%addr, "admin: http://{addr}/metrics, /healthz, /readyz");
            Some(control_plane.spawn(admin::serve(
                listener,
                apps.clone(),
                runtime,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    tracing::info!(control = %config.control.display(), "control socket ready");
    // Every listener accepts and every app's first version is live.
    match &successor {
        // The old process tells systemd this one is the service now.
        Some(successor) => {
            successor.ready();
            keep_control_file.store(false, Ordering::Release);
        }
        None => systemd::ready("serving"),
    }
    // Pinged from the control plane: if it hangs, the pings stop and
    // systemd restarts the host.
    let watchdog_task = systemd::watchdog_interval().map(|every| {
        tracing::info!(every = ?every, "pinging the systemd watchdog");
        control_plane.spawn(systemd::watchdog(every))
    });

    let mut file = config.file.clone();
    let mut upgraded = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(ask) = config_asks.recv() => {
                let path = ask.path.or_else(|| file.clone());
                systemd::reloading("applying the config file");
                let outcome = reapply(&mut supervisor, path.clone(), &overrides, &mut inherited).await;
                match &outcome {
                    Ok(_) => {
                        systemd::ready("config file applied");
                        file = path;
                    }
                    Err(e) => systemd::ready(&format!(
                        "config file not applied; serving as before: {e:#}"
                    )),
                }
                let _ = ask.reply.send(outcome.map_err(|e| format!("{e:#}")));
            }
            Some(ask) = upgrade_asks.recv() => {
                let control = PassedControl { path: control_path.clone(), fd: control_fd };
                apps.set_upgrading(true);
                let outcome = tokio::select! {
                    outcome = hand_over(&supervisor, passable_admin, control, ask.binary, ask.wait) => outcome,
                    _ = shutdown.cancelled() => Err(anyhow!("the host began shutting down")),
                };
                match outcome {
                    Ok(pid) => {
                        keep_control_file.store(true, Ordering::Release);
                        systemd::handed_over(pid);
                        tracing::info!(pid, "upgrade: the new process serves; this one stops accepting and drains");
                        let _ = ask.reply.send(Ok(pid));
                        upgraded = Some(pid);
                        shutdown.cancel();
                        break;
                    }
                    Err(e) => {
                        apps.set_upgrading(false);
                        tracing::warn!("upgrade refused: {e:#}");
                        let _ = ask.reply.send(Err(format!("{e:#}")));
                    }
                }
            }
        }
    }
    // Asks that came while the loop was busy get an answer, not silence.
    let why = match upgraded {
        Some(pid) => format!("the host was upgraded; process {pid} serves now: ask it"),
        None => "the host is shutting down".to_string(),
    };
    config_asks.close();
    while let Ok(ask) = config_asks.try_recv() {
        let _ = ask.reply.send(Err(why.clone()));
    }
    upgrade_asks.close();
    while let Ok(ask) = upgrade_asks.try_recv() {
        let _ = ask.reply.send(Err(why.clone()));
    }
    if let Some(task) = watchdog_task {
        // The drain may outlast the watchdog's timeout; systemd's stop
        // timeout bounds it from here on (or the new process pings).
        task.abort();
    }
    let admin_task = match upgraded {
        // The new process answers health checks on the shared socket; this
        // one's "not ready" would tell a load balancer the host is going.
        Some(_) => {
            if let Some(task) = admin_task {
                task.abort();
            }
            None
        }
        None => {
            systemd::stopping();
            admin_task
        }
    };
    supervisor.shutdown().await;
    // Answers the requests it has begun, then stops; dropping the control
    // socket removes its file unless a successor serves on it.
    let _ = control_task.await;
    if let Some(task) = admin_task {
        task.abort();
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the successor with every socket and what each app runs.
async fn hand_over(
    supervisor: &Supervisor,
    admin: Option<PassedSocket>,
    control: PassedControl,
    binary: Option<PathBuf>,
    wait: Duration,
) -> Result<u32> {
    let apps = supervisor.to_carry().map_err(anyhow::Error::msg)?;
    let binary = match binary {
        Some(binary) => binary,
        None => upgrade::own_binary()?,
    };
    let handoff = Handoff {
        listeners: supervisor.passable(),
        admin,
        control: Some(control),
        apps,
    };
    upgrade::start_successor(&binary, &handoff, wait).await
}

/// Reads the config file at `path` and makes the supervisor run it.
async fn reapply(
    supervisor: &mut Supervisor,
    path: Option<PathBuf>,
    overrides: &Overrides,
    inherited: &mut Inherited,
) -> Result<Applied> {
    let path = path.ok_or_else(|| anyhow!("this host was not started with --config"))?;
    let config = file::load(&path, overrides)?;
    let bound = Supervisor::bind(&config.apps, &supervisor.addresses(), inherited).await?;
    let applied = supervisor.apply(config.apps, bound).await?;
    tracing::info!(file = %path.display(), ?applied, "config applied");
    Ok(applied)
}

/// The runtime of the control plane, on its own thread.
struct ControlPlane {
    handle: tokio::runtime::Handle,
    /// Taken on drop.
    runtime: Option<tokio::runtime::Runtime>,
}

impl ControlPlane {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasm-host-control")
            .enable_all()
            .build()
            .context("cannot start the control-plane runtime")?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(future)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would panic; let it wind
        // down in the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
