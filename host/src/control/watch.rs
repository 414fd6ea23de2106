//! The file watch: reloads the app when its component file changes.
//!
//! Watches the file's directory (not the file), so in-place writes, atomic
//! renames (`mv new.wasm app.wasm`) and editors that delete and recreate are
//! all seen. Bursts of events are debounced into one reload; a file caught
//! half-written fails validation in the app, and the events of the write that
//! completes it trigger the next attempt. Follows the app to a new path when
//! a reload names one. It knows nothing of how a reload works.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Quiet time after the last event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// A file watcher whose events arrive on a channel.
pub(crate) fn watcher() -> Result<(RecommendedWatcher, mpsc::UnboundedReceiver<Event>)> {
    let (tx, events) = mpsc::unbounded_channel::<Event>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
        Ok(event) => {
            let _ = tx.send(event);
        }
        Err(e) => tracing::warn!(error = %e, "file watch error"),
    })
    .context("cannot start the file watch")?;
    Ok((watcher, events))
}

/// Waits until no event has come for `quiet`, swallowing the burst; false
/// when the watch has ended.
pub(crate) async fn settle(events: &mut mpsc::UnboundedReceiver<Event>, quiet: Duration) -> bool {
    loop {
        match tokio::time::timeout(quiet, events.recv()).await {
            Ok(Some(_)) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Starts watching the app's component file, until `stop` fires.
pub fn spawn(app: Arc<App>, stop: CancellationToken) -> Result<()> {
    let (mut watcher, mut events) = watcher()?;

    let mut paths = app.path();
    let mut target = paths.borrow_and_update().clone();
    watch_dir(&mut watcher, &target)?;
    tracing::info!(path = %target.display(), "watching the component file for changes");

    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = paths.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let next = paths.borrow_and_update().clone();
                    retarget(&mut watcher, &target, &next);
                    target = next;
                }
                event = events.recv() => {
                    let Some(event) = event else { break };
                    if !touches(&event, &target) {
                        continue;
                    }
                    if !settle(&mut events, DEBOUNCE).await {
                        return;
                    }
                    if !target.exists() {
                        // Deleted, and not (yet) recreated: nothing to load.
                        continue;
                    }
                    tracing::info!(path = %target.display(), "component file changed: reloading");
                    // The app logs the outcome, refused or not.
                    let _ = app.reload(None).await;
                }
            }
        }
    });
    Ok(())
}

fn watch_dir(watcher: &mut RecommendedWatcher, file: &Path) -> Result<()> {
    let dir = parent(file);
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch the directory {}", dir.display()))
}

/// Moves the watch when the app's file moves to another directory.
fn retarget(watcher: &mut RecommendedWatcher, old: &Path, new: &Path) {
    if parent(old) == parent(new) {
        return;
    }
    let _ = watcher.unwatch(&parent(old));
    match watch_dir(watcher, new) {
        Ok(()) => tracing::info!(path = %new.display(), "watching the new component file"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "file watch lost"),
    }
}

/// The directory a watch on `file` must watch (`.` for a bare name).
pub(crate) fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event of this kind may have changed a file's contents. Reads
/// (our own included) and metadata-only changes do not count.
pub(crate) fn writes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    }
}

/// Whether `event` may have changed the contents at `target`.
fn touches(event: &Event, target: &Path) -> bool {
    writes(&event.kind)
        && event
            .paths
            .iter()
            .any(|p| p.file_name() == target.file_name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn writes_and_renames_count_reads_do_not() {
        let target = Path::new("/srv/app.wasm");
        let yes = [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ];
        for kind in yes {
            assert!(touches(&event(kind, "/srv/app.wasm"), target), "{kind:?}");
        }
        let no = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ];
        for kind in no {
            assert!(!touches(&event(kind, "/srv/app.wasm"), target), "{kind:?}");
        }
        let other = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(!touches(&event(other, "/srv/other.wasm"), target));
    }
}
