//! The file watch: reloads the app when its component file changes.
//!
//! Watches the file's directory (not the file), so in-place writes, atomic
//! renames (`mv new.wasm app.wasm`) and editors that delete and recreate are
//! all seen. Bursts of events are debounced into one reload; a file caught
//! half-written fails validation in the app, and the events of the write that
//! completes it trigger the next attempt. Follows the app to a new path when
//! a reload names one. It knows nothing of how a reload works.
//!
//! A path that goes through a symlink (kubelet's `app.wasm -> ..data/app.wasm`
//! with `..data` swapped by an atomic rename, or git-sync's link to a fresh
//! worktree) changes without any event naming the file: the swap renames
//! another entry. So the directory holding each symlink on the way is
//! watched too, and after a burst the file behind the path is compared with
//! the one last loaded (where it resolves to, its inode, size and mtime):
//! one reload per swap, none for the clean-up of the old directory.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    let mut watched = watch_dirs(&mut watcher, &BTreeSet::new(), &target, false)?;
    let mut behind = Behind::of(&target);
    tracing::info!(path = %target.display(), "watching the component file for changes");

    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = paths.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    target = paths.borrow_and_update().clone();
                    watched = retarget(&mut watcher, &watched, &target, false);
                    behind = Behind::of(&target);
                }
                event = events.recv() => {
                    let Some(event) = event else { break };
                    let named = touches(&event, &target);
                    // Through a symlink, any entry changing may be a swap.
                    let maybe_swap = !matches!(event.kind, EventKind::Access(_))
                        && !links_on_the_way(&target).is_empty();
                    if !named && !maybe_swap {
                        continue;
                    }
                    if !settle(&mut events, DEBOUNCE).await {
                        return;
                    }
                    if !target.exists() {
                        // Deleted, and not (yet) recreated: nothing to load.
                        continue;
                    }
                    let now = Behind::of(&target);
                    // An event that names the file is a write to reload
                    // (the app tells unchanged bytes apart); any other
                    // burst counts only if it swapped what the path means.
                    if !named && now == behind {
                        continue;
                    }
                    if now.as_ref().map(|b| &b.resolved) != behind.as_ref().map(|b| &b.resolved) {
                        // A symlink on the way now leads elsewhere: watch
                        // the directories the path goes through now.
                        watched = retarget(&mut watcher, &watched, &target, true);
                    }
                    behind = now;
                    tracing::info!(path = %target.display(), "component file changed: reloading");
                    // The app logs the outcome, refused or not.
                    let _ = app.reload(None).await;
                }
            }
        }
    });
    Ok(())
}

/// What a component path leads to, to tell a symlink swap from noise.
#[derive(Debug, PartialEq, Eq)]
struct Behind {
    resolved: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Behind {
    /// `None` while the path leads nowhere (mid-swap, or deleted).
    fn of(path: &Path) -> Option<Behind> {
        let resolved = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&resolved).ok()?;
        Some(Behind {
            resolved,
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// The symlinks `path` goes through: itself and its ancestors, as written
/// (relative links are followed from where they sit).
fn links_on_the_way(path: &Path) -> Vec<PathBuf> {
    let mut links = Vec::new();
    let mut at = Some(path.to_path_buf());
    // Bounded like the kernel's own symlink limit, so a loop cannot spin.
    for _ in 0..40 {
        let Some(here) = at.take() else { break };
        match std::fs::symlink_metadata(&here) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let Ok(to) = std::fs::read_link(&here) else {
                    break;
                };
                links.push(here.clone());
                // `..data/app.wasm` from `app.wasm`: go on through what
                // it names, which may be a symlink too (`..data`).
                at = Some(parent(&here).join(to));
            }
            _ => {
                at = here
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
            }
        }
    }
    links
}

/// The directories a watch on `file` needs: its own, and the one holding
/// each symlink on the way, where a swap shows up as a rename.
fn dirs_for(file: &Path) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::from([parent(file)]);
    dirs.extend(links_on_the_way(file).iter().map(|link| parent(link)));
    dirs
}

/// Watches the directories `file` needs beyond those in `old` and drops the
/// ones it no longer needs; returns what is watched now. Only the file's
/// own directory must be watchable. With `swapped`, a directory already
/// watched whose path goes through a symlink is watched afresh: the watch
/// followed the link as it was, to a directory that is now the old one.
fn watch_dirs(
    watcher: &mut RecommendedWatcher,
    old: &BTreeSet<PathBuf>,
    file: &Path,
    swapped: bool,
) -> Result<BTreeSet<PathBuf>> {
    let own = parent(file);
    let mut now = BTreeSet::new();
    for dir in dirs_for(file) {
        let through_link = std::fs::canonicalize(&dir).ok().as_ref() != Some(&dir);
        if old.contains(&dir) && !(swapped && through_link) {
            // Kept as is: unwatching and watching again could miss an event.
            now.insert(dir);
            continue;
        }
        let _ = watcher.unwatch(&dir);
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                now.insert(dir);
            }
            Err(e) if dir == own => {
                return Err(e)
                    .with_context(|| format!("cannot watch the directory {}", dir.display()));
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a directory a symlink of the component sits in")
            }
        }
    }
    for dir in old.difference(&now) {
        let _ = watcher.unwatch(dir);
    }
    Ok(now)
}

/// Moves the watch when the app's file moves, or when a symlink on its way
/// now leads elsewhere.
fn retarget(
    watcher: &mut RecommendedWatcher,
    old: &BTreeSet<PathBuf>,
    new: &Path,
    swapped: bool,
) -> BTreeSet<PathBuf> {
    match watch_dirs(watcher, old, new, swapped) {
        Ok(now) => {
            if now != *old {
                tracing::info!(path = %new.display(), "watching the new component file");
            }
            now
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "file watch lost");
            BTreeSet::new()
        }
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
