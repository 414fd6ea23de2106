//! The app's source crate, for `wasm-host serve DIR`: builds it with cargo
//! for `wasm32-wasip2`, and on every save builds it again and asks the app
//! to reload the result.
//!
//! A failed build changes nothing: cargo's own messages reach the host's
//! stderr once, as the compiler wrote them, and the live version keeps
//! serving. This module runs `cargo build` and nothing else, and knows
//! nothing of how a reload works.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{Event, RecursiveMode, Watcher};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::control::watch;

/// Quiet time after the last save before a rebuild starts: editors write a
/// file in a burst of a few events within milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The target every app is built for.
const TARGET: &str = "wasm32-wasip2";

/// A Rust crate that builds into the app's component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCrate {
    dir: PathBuf,
}

/// Why a build gave no component.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo could not be started.
    #[error(
        "cannot run cargo ({0}); install Rust from https://rustup.rs, then `rustup target add wasm32-wasip2`"
    )]
    NoCargo(std::io::Error),
    /// Cargo ran and failed; its messages went to stderr.
    #[error("the build of {0} failed; the compiler's messages are above")]
    Failed(String),
    /// Cargo succeeded but made no component for this crate.
    #[error(
        "building {0} made no .wasm component; it must be a binary crate (src/main.rs) or a cdylib"
    )]
    NoComponent(String),
}

impl SourceCrate {
    /// The crate in `dir`, which must hold a `Cargo.toml`.
    pub fn open(dir: &Path) -> Result<Self> {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve the path {}", dir.display()))?;
        if !dir.join("Cargo.toml").is_file() {
            anyhow::bail!(
                "{} is a directory without a Cargo.toml; pass a .wasm component or the directory of a Rust crate",
                dir.display()
            );
        }
        Ok(Self { dir })
    }

    /// The crate's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The crate's name as the host shows it: its directory's name.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_string())
    }

    /// Runs `cargo build --release --target wasm32-wasip2` and returns the
    /// component it made. `quiet` drops cargo's progress lines (errors and
    /// warnings still show).
    pub async fn build(&self, quiet: bool) -> Result<PathBuf, BuildError> {
        let manifest = self.dir.join("Cargo.toml");
        // Through rustup's `cargo`, which picks the crate's toolchain.
        let mut cargo = Command::new("cargo");
        cargo
            .arg("build")
            .arg("--release")
            .args(["--target", TARGET])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--message-format=json-render-diagnostics")
            .arg(if std::io::stderr().is_terminal() {
                "--color=always"
            } else {
                "--color=never"
            })
            // Run where the crate is, so its own rust-toolchain.toml counts,
            // and let rustup pick the toolchain from there rather than the
            // one the host happened to be started with.
            .current_dir(&self.dir)
            .env_remove("RUSTUP_TOOLCHAIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if quiet {
            cargo.arg("--quiet");
        }
        let mut child = cargo.spawn().map_err(BuildError::NoCargo)?;
        let mut component = None;
        if let Some(stdout) = child.stdout.take() {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(path) = component_of(&line, &manifest) {
                    component = Some(path);
                }
            }
        }
        let status = child.wait().await.map_err(BuildError::NoCargo)?;
        if !status.success() {
            return Err(BuildError::Failed(self.dir.display().to_string()));
        }
        component.ok_or_else(|| BuildError::NoComponent(self.dir.display().to_string()))
    }
}

/// The `.wasm` file named by one line of cargo's JSON output, if the line
/// reports an artifact of the crate at `manifest`.
fn component_of(line: &str, manifest: &Path) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    if Path::new(message.get("manifest_path")?.as_str()?) != manifest {
        return None;
    }
    let executable = message.get("executable").and_then(|e| e.as_str());
    let files = message.get("filenames")?.as_array()?;
    executable
        .into_iter()
        .chain(files.iter().filter_map(|f| f.as_str()))
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// Watches the crate's files and rebuilds and reloads on every save.
/// `component` is the file the first build made; the directory it was
/// built into is not watched, or every build would start the next.
pub fn spawn(
    app: Arc<App>,
    source: SourceCrate,
    component: &Path,
    stop: CancellationToken,
) -> Result<()> {
    let (mut watcher, mut events) = watch::watcher()?;
    watcher
        .watch(source.dir(), RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", source.dir().display()))?;
    // <target>/wasm32-wasip2/release/app.wasm
    let build_dir = component
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| source.dir().join("target"));
    tracing::info!(dir = %source.dir().display(), "watching the crate's sources: saving rebuilds and reloads");

    tokio::spawn(async move {
        // Owned by the task: dropping it would end the watch.
        let _watcher = watcher;
        while let Some(event) = tokio::select! {
            event = events.recv() => event,
            _ = stop.cancelled() => None,
        } {
            if !is_edit(&event, source.dir(), &build_dir) {
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
async fn rebuild(app: &App, source: &SourceCrate) {
    tracing::info!(dir = %source.dir().display(), "source changed: building");
    let started = Instant::now();
    let component = match source.build(true).await {
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

/// Whether `event` is a write to one of the crate's own files: not the
/// build output, not version-control or editor scratch files.
fn is_edit(event: &Event, root: &Path, build_dir: &Path) -> bool {
    watch::writes(&event.kind)
        && event.paths.iter().any(|path| {
            let Ok(inside) = path.strip_prefix(root) else {
                return false;
            };
            if path.starts_with(build_dir) {
                return false;
            }
            let hidden_or_built = inside.components().any(|c| {
                let c = c.as_os_str().to_string_lossy();
                c.starts_with('.') || c == "target"
            });
            let name = inside
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let scratch = name.ends_with('~')
                || name.ends_with(".swp")
                || name.ends_with(".swx")
                || name == "4913";
            !hidden_or_built && !scratch
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, DataChange, ModifyKind};

    fn write(path: &str) -> Event {
        Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any))).add_path(path.into())
    }

    #[test]
    fn edits_are_source_writes_only() {
        let root = Path::new("/src/app");
        let built = Path::new("/src/app/target");
        assert!(is_edit(&write("/src/app/src/main.rs"), root, built));
        assert!(is_edit(&write("/src/app/Cargo.toml"), root, built));
        for not_an_edit in [
            "/src/app/target/wasm32-wasip2/release/app.wasm",
            "/src/app/.git/index",
            "/src/app/src/.main.rs.swp",
            "/src/app/src/main.rs~",
            "/src/elsewhere/main.rs",
        ] {
            assert!(!is_edit(&write(not_an_edit), root, built), "{not_an_edit}");
        }
        let read = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
            .add_path("/src/app/src/main.rs".into());
        assert!(!is_edit(&read, root, built));
        // A build directory outside `target/` is skipped too.
        let elsewhere = Path::new("/src/app/out");
        assert!(!is_edit(&write("/src/app/out/x.wasm"), root, elsewhere));
    }

    #[test]
    fn finds_this_crates_component_in_cargo_output() {
        let manifest = Path::new("/src/app/Cargo.toml");
        let bin = r#"{"reason":"compiler-artifact","manifest_path":"/src/app/Cargo.toml","filenames":["/t/app.wasm"],"executable":"/t/app.wasm"}"#;
        assert_eq!(
            component_of(bin, manifest),
            Some(PathBuf::from("/t/app.wasm"))
        );
        let dep = r#"{"reason":"compiler-artifact","manifest_path":"/reg/wstd/Cargo.toml","filenames":["/t/libwstd.rlib"],"executable":null}"#;
        assert_eq!(component_of(dep, manifest), None);
        let cdylib = r#"{"reason":"compiler-artifact","manifest_path":"/src/app/Cargo.toml","filenames":["/t/app.wasm","/t/libapp.rlib"],"executable":null}"#;
        assert_eq!(
            component_of(cdylib, manifest),
            Some(PathBuf::from("/t/app.wasm"))
        );
        assert_eq!(component_of("not json", manifest), None);
        let finished = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(component_of(finished, manifest), None);
    }
}
