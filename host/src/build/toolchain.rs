//! The JavaScript toolchain: the builder script, the SDK and the WIT the
//! host embeds (see `host/build.rs`), written out into a cache folder named
//! by their hash, with the npm packages the builder pins (componentize-js,
//! esbuild) installed there once by `npm ci`.
//!
//! Installing is done once per toolchain and machine, under a file lock so
//! two hosts starting at once do not both install. This module installs; it
//! does not build apps.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::BuildError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_js.rs"));
}

/// The oldest Node.js componentize-js and the builder run on.
const NODE_MAJOR: u32 = 20;

/// Marks a finished install; a folder without it is redone.
const DONE: &str = ".installed";

/// An installed toolchain.
#[derive(Clone, Debug)]
pub struct Toolchain {
    dir: PathBuf,
}

impl Toolchain {
    /// The builder script.
    pub fn builder(&self) -> PathBuf {
        self.dir.join("toolchain/build.mjs")
    }

    /// The SDK package the builder resolves `@wasm-host/sdk` to.
    pub fn sdk(&self) -> PathBuf {
        self.dir.join("sdk")
    }

    /// The WIT folder (`app.wit`, `deps/`) the builder builds against.
    pub fn wit(&self) -> PathBuf {
        self.dir.join("wit")
    }
}

/// The folder, under `root`, of the toolchain this binary embeds.
pub fn location(root: &Path) -> PathBuf {
    let mut hash = Sha256::new();
    for (name, bytes) in embedded::FILES {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    root.join(hex)
}

/// The installed toolchain under `root`, installing it first if needed.
/// Blocking: runs `node` and `npm`.
pub fn ensure(root: &Path) -> Result<Toolchain, BuildError> {
    check_node()?;
    let dir = location(root);
    if dir.join(DONE).is_file() {
        return Ok(Toolchain { dir });
    }
    let fail = |what: &str, e: std::io::Error| {
        BuildError::Tool(format!(
            "cannot {what} for the JavaScript toolchain in {}: {e}; check that the folder is writable (or set XDG_CACHE_HOME)",
            root.display()
        ))
    };
    std::fs::create_dir_all(root).map_err(|e| fail("create a folder", e))?;
    let lock = std::fs::File::create(root.join(".lock")).map_err(|e| fail("create a lock", e))?;
    lock.lock().map_err(|e| fail("take the lock", e))?;
    // Another host may have installed it while this one waited.
    if dir.join(DONE).is_file() {
        return Ok(Toolchain { dir });
    }
    install(&dir).map_err(|e| {
        // A failed install leaves nothing half made for the next try.
        let _ = std::fs::remove_dir_all(scratch_of(&dir));
        match e {
            Install::Io(what, e) => fail(what, e),
            Install::Tool(error) => error,
        }
    })?;
    Ok(Toolchain { dir })
}

enum Install {
    Io(&'static str, std::io::Error),
    Tool(BuildError),
}

/// Where `dir` is assembled before it is renamed into place.
fn scratch_of(dir: &Path) -> PathBuf {
    dir.with_extension(format!("tmp-{}", std::process::id()))
}

fn install(dir: &Path) -> Result<(), Install> {
    let scratch = scratch_of(dir);
    let _ = std::fs::remove_dir_all(&scratch);
    for (name, bytes) in embedded::FILES {
        let path = scratch.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Install::Io("create a folder", e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Install::Io("write a file", e))?;
    }
    tracing::info!(
        dir = %dir.display(),
        "installing the JavaScript toolchain (componentize-js, esbuild) with npm, once for this machine"
    );
    let started = std::time::Instant::now();
    let log_path = scratch.join("npm-install.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Install::Io("write the npm log", e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Install::Io("write the npm log", e))?;
    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(scratch.join("toolchain"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .map_err(|e| {
            Install::Tool(BuildError::Tool(format!(
                "cannot run npm ({e}); install Node.js {NODE_MAJOR} or later with npm (Debian: apt-get install nodejs npm)"
            )))
        })?;
    if !status.success() {
        let tail = std::fs::read_to_string(&log_path)
            .ok()
            .and_then(|text| text.lines().last().map(str::to_owned))
            .unwrap_or_default();
        return Err(Install::Tool(BuildError::Tool(format!(
            "npm could not install the JavaScript toolchain (log: {}): {tail}; is the npm registry reachable?",
            log_path.display()
        ))));
    }
    let mut done =
        std::fs::File::create(scratch.join(DONE)).map_err(|e| Install::Io("write a file", e))?;
    let _ = writeln!(done, "{}", started.elapsed().as_secs());
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&scratch, dir).map_err(|e| Install::Io("move the install in place", e))?;
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        "JavaScript toolchain installed"
    );
    Ok(())
}

/// Checks that `node` runs and is new enough.
fn check_node() -> Result<(), BuildError> {
    let missing = |why: String| {
        BuildError::Tool(format!(
            "{why}; building a JavaScript app needs Node.js {NODE_MAJOR} or later with npm on PATH (Debian: apt-get install nodejs npm)"
        ))
    };
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| missing(format!("cannot run node ({e})")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= NODE_MAJOR => Ok(()),
        _ => Err(missing(format!("node --version said {:?}", text.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_holds_builder_sdk_and_wit() {
        let names: Vec<&str> = embedded::FILES.iter().map(|(n, _)| *n).collect();
        for needed in [
            "toolchain/build.mjs",
            "toolchain/package.json",
            "toolchain/package-lock.json",
            "sdk/package.json",
            "wit/app.wit",
            "wit/deps/http.wit",
        ] {
            assert!(names.contains(&needed), "{needed} not embedded: {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("node_modules")));
        // The folder is named by the contents: the same binary, the same one.
        assert_eq!(location(Path::new("/r")), location(Path::new("/r")));
    }
}
