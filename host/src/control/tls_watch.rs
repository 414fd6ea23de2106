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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::control::content_watch::{self, Next};
use crate::hosting::tls::CertSlot;

/// Quiet time after the last event before the files are read: a cert and
/// a key replaced one after the other are one change.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the files of `slot` until `stop` fires, swapping in each new
/// valid pair.
pub fn spawn(app: &str, slot: Arc<CertSlot>, stop: CancellationToken) -> Result<()> {
    let files = slot.files().clone();
    let app = app.to_string();
    let watched = vec![files.cert.clone(), files.key.clone()];
    content_watch::spawn(watched, DEBOUNCE, stop, move || {
        let (slot, app, cert) = (slot.clone(), app.clone(), files.cert.clone());
        async move {
            // Two file reads and a key parse: kept off the async threads.
            let reloaded = tokio::task::spawn_blocking(move || slot.reload())
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload did not finish: {e}")));
            match reloaded {
                Ok(()) => tracing::info!(
                    app = %app,
                    cert = %cert.display(),
                    "TLS certificate changed: new handshakes get the new one"
                ),
                Err(e) => tracing::warn!(
                    app = %app,
                    cert = %cert.display(),
                    "TLS certificate or key changed but the pair was refused; the old certificate keeps serving: {e:#}"
                ),
            }
            Next::Continue
        }
    })
}
