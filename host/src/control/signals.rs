//! Unix signals as triggers: SIGHUP re-reads the config file when the host
//! runs one (as nginx does), else reloads every app from its current path;
//! SIGUSR2 upgrades the host to the binary at the path it was started
//! from; SIGTERM and SIGINT start a graceful shutdown (a second one exits
//! at once).
//!
//! This module only turns signals into calls; it knows nothing of how a
//! reload or a shutdown works. A config re-read is asked of `serve`, which
//! tells systemd around it as around every config apply; a component reload
//! is told to systemd here.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::control::socket::ConfigAsk;
use crate::control::upgrade::UpgradeAsk;
use crate::hosting::apps::Apps;
use crate::ops::systemd;

/// The signals the host handles, caught from the moment this is made: a
/// SIGTERM that arrives while the first versions still load waits here
/// instead of killing the process with the default action.
pub struct Signals {
    hup: Signal,
    usr2: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Starts catching SIGHUP, SIGUSR2, SIGTERM and SIGINT.
    pub fn catch() -> Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            usr2: signal(SignalKind::user_defined2())
                .context("cannot install the SIGUSR2 handler")?,
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }
}

/// Acts on the caught signals: SIGHUP asks on `config` to apply the config
/// file again when the host runs one, else reloads every app from its
/// current path; SIGUSR2 asks on `upgrade` for a binary upgrade;
/// SIGTERM/SIGINT cancel `shutdown`.
pub fn spawn(
    signals: Signals,
    apps: Arc<Apps>,
    config: Option<mpsc::Sender<ConfigAsk>>,
    upgrade: mpsc::Sender<UpgradeAsk>,
    shutdown: CancellationToken,
) {
    let Signals {
        mut hup,
        mut usr2,
        mut term,
        mut int,
    } = signals;
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            tracing::info!("SIGUSR2: upgrading to the binary this host was started from");
            let (reply, outcome) = oneshot::channel();
            let ask = UpgradeAsk {
                binary: None,
                wait: crate::control::upgrade::DEFAULT_WAIT,
                reply,
            };
            if upgrade.send(ask).await.is_err() {
                break;
            }
            // `serve` logs the outcome either way.
            if outcome.await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &config {
                Some(asks) => {
                    if !reread_config(asks).await {
                        break;
                    }
                }
                None => reload_components(&apps).await,
            }
        }
    });
    tokio::spawn(async move {
        let mut asked = false;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if asked {
                tracing::warn!(
                    signal = name,
                    "second shutdown signal: exiting now without draining"
                );
                std::process::exit(1);
            }
            asked = true;
            // Cancel before logging: whoever reads the log line may at once
            // ask /readyz, and must see the host as shutting down.
            shutdown.cancel();
            tracing::info!(
                signal = name,
                "shutting down gracefully: draining in-flight work"
            );
        }
    });
}

/// Asks `serve` to apply the config file again and logs the outcome; false
/// once `serve` no longer takes asks (it is shutting down).
async fn reread_config(asks: &mpsc::Sender<ConfigAsk>) -> bool {
    tracing::info!("SIGHUP: re-reading the config file");
    let (reply, outcome) = oneshot::channel();
    if asks.send(ConfigAsk { path: None, reply }).await.is_err() {
        return false;
    }
    match outcome.await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(
                "SIGHUP: the config file was not applied; everything runs as before: {e}"
            );
            true
        }
        Err(_) => false,
    }
}

/// Reloads every app from its current path, all at once, and tells
/// systemd when every one has finished and how many were refused.
async fn reload_components(apps: &Apps) {
    systemd::reloading("SIGHUP: reloading every app");
    let all = apps.all();
    let reloads = all.iter().map(|app| {
        tracing::info!(app = %app.name(), "SIGHUP: reloading");
        let app = app.clone();
        // The app logs the outcome; only the count is needed here.
        async move { app.reload(None).await.is_ok() }
    });
    let outcomes = futures::future::join_all(reloads).await;
    let refused = outcomes.iter().filter(|ok| !**ok).count();
    let status = if refused == 0 {
        format!("SIGHUP: {} app(s) reloaded", outcomes.len())
    } else {
        format!(
            "SIGHUP: {refused} of {} app(s) refused their reload; they serve as before",
            outcomes.len()
        )
    };
    systemd::ready(&status);
}
