//! The certificate watch: reads an app's TLS certificate and key again
//! when their contents change, and has the listener serve the new pair
//! from the next handshake on.
//!
//! Like the config watch, it watches the files' directories and compares
//! contents rather than trusting events, so `mv new.pem cert.pem`, an
//! editor's save and kubelet's Secret update (a new timestamped directory,
//! then an atomic rename of the `..data` symlink) are all seen. A pair that
//! does not load (a half-written file, a key of another certificate) is
//! refused with a warning and the old pair keeps serving. This module only
//! triggers: the swap itself is [`CertSlot::reload`], in the hosting layer.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::control::watch;
use crate::hosting::tls::CertSlot;
use crate::runtime::digest::Digest;

/// Quiet time after the last event before the files are read: a cert and
/// a key replaced one after the other are one change.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The digest of the bytes behind `file` (symlinks followed), or `None`
/// while it cannot be read.
fn fingerprint(file: &Path) -> Option<Digest> {
    std::fs::read(file).ok().map(|bytes| Digest::of(&bytes))
}

/// Watches the files of `slot` until `stop` fires, swapping in each new
/// valid pair.
pub fn spawn(app: &str, slot: Arc<CertSlot>, stop: CancellationToken) -> Result<()> {
    let (mut watcher, mut events) = watch::watcher()?;
    let files = slot.files().clone();
    let dirs: BTreeSet<_> = [watch::parent(&files.cert), watch::parent(&files.key)]
        .into_iter()
        .collect();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch the directory {}", dir.display()))?;
    }
    let app = app.to_string();
    let mut seen = (fingerprint(&files.cert), fingerprint(&files.key));
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
            let now = (fingerprint(&files.cert), fingerprint(&files.key));
            if now.0.is_none() || now.1.is_none() || now == seen {
                continue;
            }
            // Remembered whatever the outcome: a bad pair is reported once,
            // and the next change to either file is tried afresh.
            seen = now;
            match slot.reload() {
                Ok(()) => tracing::info!(
                    app = %app,
                    cert = %files.cert.display(),
                    "TLS certificate changed: new handshakes get the new one"
                ),
                Err(e) => tracing::warn!(
                    app = %app,
                    cert = %files.cert.display(),
                    "TLS certificate or key changed but the pair was refused; the old certificate keeps serving: {e:#}"
                ),
            }
        }
    });
    Ok(())
}
