//! Optimized machine code on disk, one file per component digest, so a
//! restarted host (or a reload of a version no longer linked in memory)
//! skips compiling.
//!
//! Files are stored uncompressed and loaded by mapping them into memory, so
//! loading costs about the same for a 300 KB component as for a 30 MB one.
//! The folder is named for the engine's compatibility hash (wasmtime version
//! and every setting that changes code), so code is only ever loaded by an
//! engine that could have produced it.
//!
//! This module stores and loads files; it does not decide what to compile.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::version::Digest;

/// Bytes of code kept for one engine before the least recently used files
/// are removed.
const SIZE_LIMIT: u64 = 1 << 30;

/// Extension of a finished code file.
const EXTENSION: &str = "cwasm";

/// The on-disk code of one engine.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    /// The cache for `engine`'s code under `root`.
    pub fn new(root: &Path, engine: &Engine) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir: root.join(format!("{:016x}", hasher.finish())),
        }
    }

    fn path(&self, digest: Digest) -> PathBuf {
        self.dir.join(format!("{digest}.{EXTENSION}"))
    }

    /// Whether code for `digest` is on disk.
    pub fn contains(&self, digest: Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The code for `digest`, if it is on disk and `engine` accepts it. A
    /// file the engine refuses is removed. Blocks on file I/O.
    pub fn load(&self, engine: &Engine, digest: Digest) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        // SAFETY: files in this folder are written only by `store`, from
        // `Component::serialize` of an engine with this folder's
        // compatibility hash; the folder belongs to the host (the same trust
        // wasmtime's own cache places in its folder). wasmtime still checks
        // the header and engine settings and refuses a mismatch.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                // Least recently used goes first when the cache is full.
                let touched = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()));
                if let Err(e) = touched {
                    tracing::debug!(path = %path.display(), error = %e, "cannot touch cached code");
                }
                Some(component)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cached code refused; compiling again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the code of `component` for `digest`, then trims the cache to
    /// its size limit. Failing only costs a compile later, so it is logged.
    /// Blocks on file I/O.
    pub fn store(&self, digest: Digest, component: &Component) {
        if let Err(e) = self.write(digest, component) {
            tracing::warn!(dir = %self.dir.display(), error = %format!("{e:#}"), "cannot cache compiled code");
            return;
        }
        if let Err(e) = self.trim(SIZE_LIMIT) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "cannot trim the code cache");
        }
    }

    fn write(&self, digest: Digest, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        std::fs::create_dir_all(&self.dir)?;
        // Written aside and renamed, so a reader never maps half a file.
        let partial = self
            .dir
            .join(format!("{digest}.{}.partial", std::process::id()));
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, self.path(digest))?;
        Ok(())
    }

    /// Removes the least recently used files until at most `limit` bytes
    /// remain, and partial files left by a crash.
    fn trim(&self, limit: u64) -> std::io::Result<()> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            match path.extension().and_then(|e| e.to_str()) {
                Some(EXTENSION) => files.push((used, meta.len(), path)),
                Some("partial") if used.elapsed().is_ok_and(|age| age.as_secs() > 3600) => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= limit {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_removes_the_least_recently_used_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache {
            dir: dir.path().to_path_buf(),
        };
        let now = SystemTime::now();
        for (name, age) in [("old", 30), ("mid", 20), ("new", 10)] {
            let path = dir.path().join(format!("{name}.{EXTENSION}"));
            std::fs::write(&path, [0u8; 100]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(age))
                .unwrap();
        }
        cache.trim(250).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["mid.cwasm", "new.cwasm"]);
    }
}
