//! A JavaScript (or TypeScript) app that builds into the app's component:
//! a directory with a `package.json`, or one script file. The embedded
//! builder bundles it with its npm dependencies (esbuild) and
//! pre-initializes StarlingMonkey with it (componentize-js).
//!
//! The component goes to `.wasm-host/` inside the app's directory, with the
//! bundle's source map beside it. This module runs the builder and nothing
//! else: it knows nothing of watching or reloading.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use super::BuildError;
use super::toolchain;

/// Where builds go inside the app's directory (hidden, so saves there are
/// not edits).
const OUT_DIR: &str = ".wasm-host";

/// A JavaScript app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsApp {
    dir: PathBuf,
    /// The entry script, when the app is one file; else the builder reads
    /// `package.json`.
    entry: Option<PathBuf>,
    name: String,
    /// Where the toolchain is installed.
    toolchains: PathBuf,
    /// Build with `--reuse`: the bundle answers requests itself, so an
    /// instance can serve more than one.
    reuse: bool,
}

/// Whether `path` names a JavaScript or TypeScript file.
pub fn is_script(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["js", "mjs", "ts", "mts"].contains(&e))
}

impl JsApp {
    /// The app at `path`: a directory holding a `package.json`, or a script.
    pub fn open(path: &Path, toolchains: &Path) -> Result<Self> {
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve the path {}", path.display()))?;
        let (dir, entry) = if path.is_dir() {
            (path, None)
        } else if is_script(&path) {
            let dir = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            (dir, Some(path))
        } else {
            bail!(
                "{} is neither a component nor a JavaScript app; pass a .wasm, a directory with a package.json or Cargo.toml, or a .js/.mjs/.ts file",
                path.display()
            );
        };
        let name = app_name(&dir, entry.as_deref())?;
        Ok(Self {
            dir,
            entry,
            name,
            toolchains: toolchains.to_path_buf(),
            reuse: false,
        })
    }

    /// The same app, built for instance reuse when `reuse` is set.
    pub fn for_reuse(self, reuse: bool) -> Self {
        Self { reuse, ..self }
    }

    /// The app's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The app's name: `name` in its `package.json` (without an npm scope),
    /// else the script's or the directory's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Where builds are written.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join(OUT_DIR)
    }

    /// Installs the toolchain if needed, then builds. The builder's messages
    /// (esbuild's errors with file:line:column) go to stderr.
    pub async fn build(&self) -> Result<PathBuf, BuildError> {
        let root = self.toolchains.clone();
        let toolchain = tokio::task::spawn_blocking(move || toolchain::ensure(&root))
            .await
            .map_err(|e| BuildError::Tool(format!("the toolchain install stopped: {e}")))??;
        let out_dir = self.out_dir();
        let out = out_dir.join(format!("{}.wasm", self.name));
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| BuildError::Tool(format!("cannot create {}: {e}", out_dir.display())))?;
        // A build folder in the app should not end up in its repository.
        let _ = std::fs::write(out_dir.join(".gitignore"), "*\n");
        let mut node = Command::new("node");
        node.arg(toolchain.builder())
            .arg("--app")
            .arg(&self.dir)
            .arg("--out")
            .arg(&out)
            .arg("--work-dir")
            .arg(out_dir.join("work"))
            .arg("--wit")
            .arg(toolchain.wit())
            .arg("--sdk")
            .arg(toolchain.sdk());
        if let Some(entry) = &self.entry {
            node.arg("--entry").arg(entry);
        }
        if self.reuse {
            node.arg("--reuse");
        }
        let status = node
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| BuildError::Tool(format!("cannot run node: {e}")))?;
        if !status.success() {
            return Err(BuildError::Failed(self.dir.display().to_string()));
        }
        if !out.is_file() {
            return Err(BuildError::Tool(format!(
                "the JavaScript builder reported success but wrote no {}",
                out.display()
            )));
        }
        Ok(out)
    }
}

/// The name the host shows for the app in `dir`.
fn app_name(dir: &Path, entry: Option<&Path>) -> Result<String> {
    let from_package = match entry {
        Some(_) => None,
        None => {
            let manifest = dir.join("package.json");
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", manifest.display()))?;
            json.get("name").and_then(|n| n.as_str()).map(str::to_owned)
        }
    };
    let fallback = entry
        .and_then(Path::file_stem)
        .or_else(|| dir.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let raw = from_package.or(fallback).unwrap_or_default();
    Ok(clean_name(&raw))
}

/// An npm name as an app name: the scope dropped, and only letters, digits,
/// `-`, `_` and `.` kept.
fn clean_name(raw: &str) -> String {
    let bare = raw.rsplit('/').next().unwrap_or(raw);
    let cleaned: String = bare
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches(|c| c == '.' || c == '-').to_string();
    if cleaned.is_empty() {
        "app".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_comes_from_package_json_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), r#"{"name":"@acme/shop"}"#).unwrap();
        let app = JsApp::open(dir.path(), Path::new("/t")).unwrap();
        assert_eq!(app.name(), "shop");
        let script = dir.path().join("server.mjs");
        std::fs::write(&script, "").unwrap();
        let app = JsApp::open(&script, Path::new("/t")).unwrap();
        assert_eq!(app.name(), "server");
        assert_eq!(app.dir(), std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(clean_name("my app!"), "my-app");
        assert_eq!(clean_name(""), "app");
    }

    #[test]
    fn a_broken_package_json_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), "{").unwrap();
        let err = JsApp::open(dir.path(), Path::new("/t")).unwrap_err();
        assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    }
}
