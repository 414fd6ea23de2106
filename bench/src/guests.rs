//! Components from other languages' toolchains, built (or found in their
//! caches) by the tests' support scripts: componentize-py's WASI 0.3 app
//! (`tests/support/python-component.sh`) and componentize-js's WASI 0.2
//! one (`tests/support/js-component.sh`). The cold section reloads them
//! beside the Rust `big` example.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What the JavaScript component is built to answer with: the script takes
/// a version, and the app answers `hello from js VERSION`.
pub const JS_VERSION: &str = "bench";

/// The componentize-py component (needs Python 3.10+, and PyPI on the
/// script's first run).
pub fn python(repo: &Path) -> Result<PathBuf> {
    built(repo, "tests/support/python-component.sh", &[])
}

/// The componentize-js component answering `hello from js` [`JS_VERSION`]
/// (needs Node.js 20+, and the npm registry on the script's first run).
pub fn javascript(repo: &Path) -> Result<PathBuf> {
    built(repo, "tests/support/js-component.sh", &[JS_VERSION])
}

/// Runs the support script `script` (relative to the repository) with
/// `args` and returns the path it prints as its last line.
fn built(repo: &Path, script: &str, args: &[&str]) -> Result<PathBuf> {
    let script = repo.join(script);
    // Its progress goes to our stderr; only the path comes on stdout.
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(printed.lines().last().unwrap_or_default().trim());
    if !path.is_file() {
        bail!("{} printed no component path", script.display());
    }
    Ok(path)
}
