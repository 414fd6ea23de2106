//! The config-file watch: applies the file the host was started with again
//! when its contents change, as `wasm-host reload --config` would.
//!
//! Watches the file's directory, not the file, and compares contents, not
//! events: an editor's save, `mv new.toml wasm-host.toml`, and kubelet's
//! ConfigMap update (a new timestamped directory, then an atomic rename of
//! the `..data` symlink, so the file's own name never sees an event) all
//! come down to "the bytes behind this path differ from the bytes last
//! applied". A burst of events is one change, and a change that leaves the
//! bytes as they were applies nothing. This module only asks; `serve`
//! applies, and reports a bad file the same way as for a manual reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::control::socket::ConfigAsk;
use crate::control::watch;
use crate::runtime::digest::Digest;

/// Quiet time after the last event before the file is read: kubelet's swap
/// and an editor's save are each a burst of events.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The digest of the bytes behind `file` (symlinks followed), or `None`
/// while it cannot be read, e.g. between a delete and a recreate.
fn fingerprint(file: &Path) -> Option<Digest> {
    std::fs::read(file).ok().map(|bytes| Digest::of(&bytes))
}

/// Watches `file` until `stop` fires, asking on `asks` to apply it again
/// each time its contents change.
pub fn spawn(file: PathBuf, asks: mpsc::Sender<ConfigAsk>, stop: CancellationToken) -> Result<()> {
    let (mut watcher, mut events) = watch::watcher()?;
    let dir = watch::parent(&file);
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch the directory {}", dir.display()))?;
    let mut applied = fingerprint(&file);
    tracing::info!(file = %file.display(), "watching the config file: a change is applied in place");

    tokio::spawn(async move {
        // Owned by the task: dropping it would end the watch.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                event = events.recv() => {
                    if event.is_none() || !watch::settle(&mut events, DEBOUNCE).await {
                        break;
                    }
                }
            }
            let now = fingerprint(&file);
            if now.is_none() || now == applied {
                continue;
            }
            // Remembered before the outcome is known: a broken file is
            // reported once, not again on every unrelated event, and the
            // next edit that changes it is tried afresh.
            applied = now;
            tracing::info!(file = %file.display(), "config file changed: applying it");
            let (reply, outcome) = oneshot::channel();
            let ask = ConfigAsk {
                path: Some(file.clone()),
                reply,
            };
            if asks.send(ask).await.is_err() {
                break;
            }
            match outcome.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(
                    file = %file.display(),
                    "the changed config file was not applied; everything runs as before: {e}"
                ),
                Err(_) => break,
            }
        }
    });
    Ok(())
}
