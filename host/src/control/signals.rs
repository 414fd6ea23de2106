//! Unix signals as triggers: SIGHUP reloads from the current path;
//! SIGTERM and SIGINT start a graceful shutdown (a second one exits at once).
//!
//! This module only turns signals into calls; it knows nothing of how a
//! reload or a shutdown works.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::hosting::apps::Apps;

/// The signals the host handles, caught from the moment this is made: a
/// SIGTERM that arrives while the first versions still load waits here
/// instead of killing the process with the default action.
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Starts catching SIGHUP, SIGTERM and SIGINT.
    pub fn catch() -> Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        })
    }
}

/// Acts on the caught signals: SIGHUP reloads every app from its current
/// path; SIGTERM/SIGINT cancel `shutdown`.
pub fn spawn(signals: Signals, apps: Arc<Apps>, shutdown: CancellationToken) {
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            for app in apps.all().iter() {
                tracing::info!(app = %app.name(), "SIGHUP: reloading");
                let app = app.clone();
                // The app logs the outcome; nobody waits for it here.
                tokio::spawn(async move { app.reload(None).await });
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
