//! Watching files by their contents: the loop the config-file watch and the
//! certificate watch share.
//!
//! The directories holding the files are watched, not the files, and what
//! decides is the bytes behind each path, not the events: an editor's save,
//! `mv new old`, and kubelet's update of a ConfigMap or Secret (a new
//! timestamped directory, then an atomic rename of the `..data` symlink, so
//! the file's own name sees no event) all come down to "these bytes differ
//! from the ones seen last". A burst of events is one change. This module
//! only notices; what a change means is the caller's.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::control::watch;
use crate::runtime::component_file;
use crate::runtime::digest::Digest;

/// Whether a watch goes on after a change was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep watching.
    Continue,
    /// Stop: whoever the changes were for is gone.
    Stop,
}

/// Largest file this watch reads: config files and certificates are a few
/// KB; anything this large is not one.
const MAX_WATCHED: u64 = 16 << 20;

/// The digest of the bytes behind `file` (symlinks followed), or `None`
/// while it cannot be read (between a delete and a recreate) or is not a
/// regular file of a sane size: read through the one guarded reader, so a
/// FIFO or `/dev/zero` put in its place cannot block or exhaust the host.
fn fingerprint(file: &Path) -> Option<Digest> {
    component_file::read_blocking(file, MAX_WATCHED)
        .ok()
        .map(|bytes| Digest::of(&bytes))
}

/// The fingerprints of `files`, read on a blocking thread.
async fn fingerprints(files: Arc<[PathBuf]>) -> Vec<Option<Digest>> {
    let count = files.len();
    tokio::task::spawn_blocking(move || files.iter().map(|f| fingerprint(f)).collect())
        .await
        .unwrap_or_else(|_| vec![None; count])
}

/// Watches `files` until `stop` fires (or `changed` says [`Next::Stop`]).
/// After each burst of events has been quiet for `debounce`, calls
/// `changed` if every file can be read and the contents of any differ from
/// those seen last. The contents count as seen whatever `changed` makes of
/// them, so a bad file is reported once, and the next edit is tried afresh.
pub fn spawn<F, Fut>(
    files: Vec<PathBuf>,
    debounce: Duration,
    stop: CancellationToken,
    mut changed: F,
) -> Result<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Next> + Send,
{
    let (mut watcher, mut events) = watch::watcher()?;
    let dirs: BTreeSet<PathBuf> = files.iter().map(|f| watch::parent(f)).collect();
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch the directory {}", dir.display()))?;
    }
    let files: Arc<[PathBuf]> = files.into();
    let mut seen: Vec<_> = files.iter().map(|f| fingerprint(f)).collect();
    tokio::spawn(async move {
        // Owned by the task: dropping it would end the watch.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                event = events.recv() => {
                    if event.is_none() || !watch::settle(&mut events, debounce).await {
                        break;
                    }
                }
            }
            let now = fingerprints(files.clone()).await;
            if now.iter().any(Option::is_none) || now == seen {
                continue;
            }
            seen = now;
            if changed().await == Next::Stop {
                break;
            }
        }
    });
    Ok(())
}
