//! Embeds the JavaScript toolchain (`js/toolchain`), the JavaScript SDK
//! (`js/sdk`) and the host's WIT (`wit/`) into the binary, so `wasm-host
//! serve DIR` can build a JavaScript app with no checkout of this repository
//! beside it. Only the files a clean checkout has are taken: `node_modules`,
//! build output and dotfiles left by a local `npm ci` stay out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let repo = manifest.join("..");
    let mut files = Vec::new();
    for (root, prefix) in [
        ("js/toolchain", "toolchain"),
        ("js/sdk", "sdk"),
        ("wit", "wit"),
    ] {
        let dir = repo.join(root);
        println!("cargo:rerun-if-changed={}", dir.display());
        collect(&dir, &dir, prefix, &mut files);
    }
    files.sort();
    let mut out = String::from("/// Embedded files: (path in the toolchain folder, contents).\n");
    out.push_str("pub(super) const FILES: &[(&str, &[u8])] = &[\n");
    for (name, path) in &files {
        let _ = writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("embedded_js.rs");
    if let Err(e) = std::fs::write(&target, out) {
        panic!("cannot write {}: {e}", target.display());
    }
}

/// Adds the files under `dir` as (`prefix`/relative path, absolute path).
fn collect(root: &Path, dir: &Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || ["node_modules", "build", "dist"].contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, prefix, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            let absolute = std::fs::canonicalize(&path).unwrap_or(path);
            files.push((format!("{prefix}/{relative}"), absolute));
        }
    }
}
