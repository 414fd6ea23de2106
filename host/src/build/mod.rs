//! Builds an app's component from its source, for `wasm-host serve DIR`: a
//! Rust crate with cargo ([`rust`]), a JavaScript app with the pinned
//! componentize-js toolchain ([`javascript`], [`toolchain`]).
//!
//! A build either gives a component file or says why not; the compiler's own
//! messages go to the host's stderr once. This layer runs builders and
//! nothing else: it knows nothing of watching, reloading or the apps.

pub mod javascript;
pub mod rust;
pub mod toolchain;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub use javascript::JsApp;
pub use rust::RustCrate;

/// Where an app's component comes from when the host builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Rust crate (a directory with a `Cargo.toml`).
    Rust(RustCrate),
    /// A JavaScript app (a directory with a `package.json`, or one `.js`,
    /// `.mjs` or `.ts` file).
    JavaScript(JsApp),
}

/// Why a build gave no component.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo could not be started.
    #[error(
        "cannot run cargo ({0}); install Rust from https://rustup.rs, then `rustup target add wasm32-wasip2`"
    )]
    NoCargo(std::io::Error),
    /// A tool the build needs is missing or unusable; the text says which
    /// and what to do.
    #[error("{0}")]
    Tool(String),
    /// The builder ran and failed; its messages went to stderr.
    #[error("the build of {0} failed; its messages are above")]
    Failed(String),
    /// The builder succeeded but made no component for this app.
    #[error(
        "building {0} made no .wasm component; it must be a binary crate (src/main.rs) or a cdylib"
    )]
    NoComponent(String),
}

impl Source {
    /// The source at `path`: a Rust crate or a JavaScript app directory, or
    /// a JavaScript file. `toolchains` is where the JavaScript toolchain is
    /// installed and cached.
    pub fn open(path: &Path, toolchains: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join("Cargo.toml").is_file() {
                return Ok(Self::Rust(RustCrate::open(path)?));
            }
            if path.join("package.json").is_file() {
                return Ok(Self::JavaScript(JsApp::open(path, toolchains)?));
            }
            bail!(
                "{} is a directory with neither a Cargo.toml nor a package.json; pass a .wasm component, a Rust crate's directory, or a JavaScript app's directory or file",
                path.display()
            );
        }
        Ok(Self::JavaScript(JsApp::open(path, toolchains)?))
    }

    /// The same source, built for instance reuse when `reuse` is set: a
    /// JavaScript app then answers `wasi:http/incoming-handler` from its
    /// bundle, so one instance serves request after request (see
    /// `js/toolchain/reuse.js`). A Rust crate builds the same either way.
    pub fn for_reuse(self, reuse: bool) -> Self {
        match self {
            Self::JavaScript(j) => Self::JavaScript(j.for_reuse(reuse)),
            rust => rust,
        }
    }

    /// Whether `path` names a source the host builds rather than a
    /// component: a directory, or a JavaScript or TypeScript file.
    pub fn is_source(path: &Path) -> bool {
        path.is_dir() || javascript::is_script(path)
    }

    /// The directory whose files are the source: saving one rebuilds.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Rust(c) => c.dir(),
            Self::JavaScript(j) => j.dir(),
        }
    }

    /// The app's name as the host shows it.
    pub fn name(&self) -> String {
        match self {
            Self::Rust(c) => c.name(),
            Self::JavaScript(j) => j.name(),
        }
    }

    /// Builds the component and returns its path. `quiet` drops progress
    /// lines (errors and warnings still show).
    pub async fn build(&self, quiet: bool) -> Result<PathBuf, BuildError> {
        match self {
            Self::Rust(c) => c.build(quiet).await,
            Self::JavaScript(j) => j.build().await,
        }
    }

    /// Whether `path`, inside [`dir`](Self::dir), is the builder's own
    /// output or scratch (not an edit). `component` is what the last build
    /// made.
    pub fn is_output(&self, path: &Path, component: &Path) -> bool {
        let Ok(inside) = path.strip_prefix(self.dir()) else {
            return true;
        };
        let generated = match self {
            // <target>/wasm32-wasip2/release/app.wasm
            Self::Rust(_) => component
                .ancestors()
                .nth(3)
                .is_some_and(|target| path.starts_with(target)),
            Self::JavaScript(j) => path.starts_with(j.out_dir()),
        };
        generated
            || inside.components().any(|c| {
                let c = c.as_os_str().to_string_lossy();
                c.starts_with('.') || c == "target" || c == "node_modules"
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_dependencies_are_not_edits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        let source = Source::open(dir.path(), Path::new("/nonexistent")).unwrap();
        let root = source.dir().to_path_buf();
        let component = root.join("target/wasm32-wasip2/release/x.wasm");
        assert!(!source.is_output(&root.join("src/main.rs"), &component));
        assert!(!source.is_output(&root.join("Cargo.toml"), &component));
        for output in [
            "target/wasm32-wasip2/release/x.wasm",
            ".git/index",
            "node_modules/a/index.js",
        ] {
            assert!(source.is_output(&root.join(output), &component), "{output}");
        }
        assert!(source.is_output(Path::new("/elsewhere/main.rs"), &component));
    }

    #[test]
    fn a_directory_of_neither_kind_is_refused_with_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let err = Source::open(dir.path(), Path::new("/nonexistent")).unwrap_err();
        assert!(format!("{err:#}").contains("package.json"), "{err:#}");
    }
}
