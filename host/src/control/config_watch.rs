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

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::control::content_watch::{self, Next};
use crate::control::socket::ConfigAsk;

/// Quiet time after the last event before the file is read: kubelet's swap
/// and an editor's save are each a burst of events.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `file` until `stop` fires, asking on `asks` to apply it again
/// each time its contents change.
pub fn spawn(file: PathBuf, asks: mpsc::Sender<ConfigAsk>, stop: CancellationToken) -> Result<()> {
    let shown = file.clone();
    content_watch::spawn(vec![file.clone()], DEBOUNCE, stop, move || {
        let (file, asks) = (file.clone(), asks.clone());
        async move {
            tracing::info!(file = %file.display(), "config file changed: applying it");
            let (reply, outcome) = oneshot::channel();
            let ask = ConfigAsk {
                path: Some(file.clone()),
                reply,
            };
            if asks.send(ask).await.is_err() {
                return Next::Stop;
            }
            match outcome.await {
                Ok(Ok(_)) => Next::Continue,
                Ok(Err(e)) => {
                    tracing::warn!(
                        file = %file.display(),
                        "the changed config file was not applied; everything runs as before: {e}"
                    );
                    Next::Continue
                }
                Err(_) => Next::Stop,
            }
        }
    })?;
    // Only once the watch is in place: a change made after this line is seen.
    tracing::info!(file = %shown.display(), "watching the config file: a change is applied in place");
    Ok(())
}
