//! A Rust crate that builds into the app's component: `cargo build
//! --release --target wasm32-wasip2`, and which `.wasm` that made.
//!
//! Cargo's own messages reach the host's stderr once, as the compiler wrote
//! them. This module runs cargo and nothing else: it knows nothing of
//! watching or reloading.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::BuildError;

/// The target every app is built for.
const TARGET: &str = "wasm32-wasip2";

/// A Rust crate that builds into the app's component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustCrate {
    dir: PathBuf,
}

impl RustCrate {
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

#[cfg(test)]
mod tests {
    use super::*;

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
