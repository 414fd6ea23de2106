//! `wasm-host serve`: puts the parts together for one app and runs until a
//! shutdown signal, then drains and returns.
//!
//! Order matters: the listener and the control socket are taken first, so a
//! busy port or a second host fails before any compile; the first version
//! must load before the first connection is accepted.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::apps::Apps;
use crate::config::ServeConfig;
use crate::control::ControlSocket;
use crate::engine::Runtime;
use crate::{admin, server, signals, source, watch};

/// Serves `config` until SIGTERM/SIGINT, then drains every version.
pub async fn serve(mut config: ServeConfig) -> Result<()> {
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {}; is another server using it? (pass --listen with another address)",
            config.listen
        )
    })?;
    let control = ControlSocket::bind(&config.control)?;
    let admin = match config.admin {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for --admin; is another server using it?")
        })?),
        None => None,
    };
    let runtime = Runtime::new(&config.engine)?;
    let engines = runtime.clone();
    // The control plane (reloads, drains, the control socket) gets a thread
    // of its own: under full load it must not wait behind request tasks.
    let control_plane = ControlPlane::start()?;
    if let Some(source) = &config.source {
        tracing::info!(dir = %source.dir().display(), "building the app");
        config.app.path = source.build(false).await?;
    }

    let app = App::start(runtime, config.app.clone(), control_plane.handle())
        .await
        .context("the app's first version could not be loaded")?;
    let shutdown = CancellationToken::new();
    signals::spawn(app.clone(), shutdown.clone())?;
    match (&config.source, config.watch) {
        (Some(crate_dir), true) => source::spawn(app.clone(), crate_dir.clone(), &config.app.path)?,
        (None, true) => watch::spawn(app.clone())?,
        (_, false) => {}
    }
    let apps = Arc::new(Apps::new(vec![app.clone()]));
    let control_task = control_plane.spawn(control.serve(apps.clone(), shutdown.clone()));
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
                engines,
                shutdown.clone(),
            )))
        }
        None => None,
    };

    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    tracing::info!(
        app = %app.name(),
        %addr,
        control = %config.control.display(),
        "listening on http://{addr}"
    );
    server::run(
        listener,
        Arc::clone(&app),
        shutdown.clone(),
        config.app.drain_timeout,
    )
    .await;
    app.shutdown().await;
    // Dropping the control socket removes its file.
    control_task.abort();
    let _ = control_task.await;
    if let Some(task) = admin_task {
        task.abort();
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
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
