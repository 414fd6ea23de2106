//! The save-to-live loop of `wasm-host serve DIR`: watches the app's source
//! and, on every save, builds it again and asks the app to reload the
//! result.
//!
//! A failed build changes nothing: the builder's messages reach the host's
//! stderr once and the live version keeps serving. How a build is done is
//! [`crate::build`]'s business, how a reload is done the app's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{Event, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::build::Source;
use crate::control::watch;

/// Quiet time after the last save before a rebuild starts: editors write a
/// file in a burst of a few events within milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches the source's files and rebuilds and reloads on every save.
/// `component` is the file the first build made; the builder's output is
/// not watched, or every build would start the next.
pub fn spawn(
    app: Arc<App>,
    source: Source,
    component: &Path,
    stop: CancellationToken,
) -> Result<()> {
    let (mut watcher, mut events) = watch::watcher()?;
    watcher
        .watch(source.dir(), RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", source.dir().display()))?;
    let component = component.to_path_buf();
    tracing::info!(dir = %source.dir().display(), "watching the app's sources: saving rebuilds and reloads");

    tokio::spawn(async move {
        // Owned by the task: dropping it would end the watch.
        let _watcher = watcher;
        while let Some(event) = tokio::select! {
            event = events.recv() => event,
            _ = stop.cancelled() => None,
        } {
            if !is_edit(&event, &source, &component) {
                continue;
            }
            if !watch::settle(&mut events, DEBOUNCE).await {
                return;
            }
            rebuild(&app, &source).await;
        }
    });
    Ok(())
}

/// One save's worth of work: build, then reload what was built.
async fn rebuild(app: &App, source: &Source) {
    tracing::info!(dir = %source.dir().display(), "source changed: building");
    let started = Instant::now();
    let component: PathBuf = match source.build(true).await {
        Ok(component) => component,
        Err(e) => {
            tracing::warn!(
                generation = app.live().generation(),
                "{e}; the live version keeps serving"
            );
            return;
        }
    };
    let build_ms = started.elapsed().as_millis() as u64;
    // The app logs the outcome of the reload, refused or not.
    if let Ok(outcome) = app.reload(Some(component)).await {
        tracing::info!(
            generation = outcome.generation,
            build_ms,
            save_to_live_ms = started.elapsed().as_millis() as u64,
            "rebuilt"
        );
    }
}

/// Whether `event` is a write to one of the app's own files: not build
/// output, dependencies, version-control or editor scratch files.
fn is_edit(event: &Event, source: &Source, component: &Path) -> bool {
    watch::writes(&event.kind)
        && event.paths.iter().any(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let scratch = name.ends_with('~')
                || name.ends_with(".swp")
                || name.ends_with(".swx")
                || name == "4913";
            !scratch && !source.is_output(path, component)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind};

    fn write(path: &Path) -> Event {
        Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any))).add_path(path.into())
    }

    #[test]
    fn edits_are_source_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), "{}").unwrap();
        let source = Source::open(dir.path(), Path::new("/t")).unwrap();
        let root = source.dir().to_path_buf();
        let component = root.join(".wasm-host/app.wasm");
        assert!(is_edit(
            &write(&root.join("src/app.js")),
            &source,
            &component
        ));
        assert!(is_edit(
            &write(&root.join("package.json")),
            &source,
            &component
        ));
        for not_an_edit in [
            ".wasm-host/app.wasm",
            ".git/index",
            "src/.app.js.swp",
            "src/app.js~",
            "node_modules/hono/index.js",
        ] {
            let event = write(&root.join(not_an_edit));
            assert!(!is_edit(&event, &source, &component), "{not_an_edit}");
        }
        let read = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
            .add_path(root.join("src/app.js"));
        assert!(!is_edit(&read, &source, &component));
    }
}
