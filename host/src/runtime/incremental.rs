//! Cranelift's per-function compile cache, kept on disk: a component that
//! shares most of its functions with one compiled before compiles only the
//! functions that differ. Two builds of a JavaScript app share the whole
//! engine (StarlingMonkey) and differ in the snapshot's data, so the second
//! costs a fraction of the first.
//!
//! One file per entry, named by the SHA-256 of Cranelift's key, so several
//! processes (a serving host and `wasm-host compile` in a deploy script)
//! share the folder without a lock: a file is written under a temporary
//! name and renamed into place. An entry is machine code the host will run,
//! and a file on disk is untrusted input, so each file starts with the
//! SHA-256 of the rest; a file that does not match is removed and counts as
//! a miss. The folder is trimmed to [`SIZE_LIMIT`] by age when a host
//! starts.
//!
//! This module stores and loads entries; it does not decide what to
//! compile.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use wasmtime::CacheStore;

/// Bytes of entries kept before the oldest are removed.
const SIZE_LIMIT: u64 = 1 << 30;

/// Largest entry read back: one function's compiled code and metadata.
const ENTRY_LIMIT: u64 = 64 << 20;

/// The cache in one folder.
#[derive(Debug)]
pub struct IncrementalCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl IncrementalCache {
    /// The cache in `dir` (created if missing), trimmed to its size limit.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        trim(dir, SIZE_LIMIT);
        Ok(Self {
            dir: dir.to_path_buf(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Hits and misses since the last call, reset to zero.
    pub fn take_counts(&self) -> (u64, u64) {
        (
            self.hits.swap(0, Ordering::Relaxed),
            self.misses.swap(0, Ordering::Relaxed),
        )
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name: String = Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // Two levels, so no folder holds tens of thousands of files.
        self.dir.join(&name[..2]).join(&name[2..])
    }

    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.len() > ENTRY_LIMIT {
            let _ = std::fs::remove_file(path);
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        let (stored, value) = bytes.split_at_checked(32)?;
        if Sha256::digest(value).as_slice() != stored {
            tracing::warn!(file = %path.display(), "a compile cache entry is damaged; removed, compiling that function again");
            let _ = std::fs::remove_file(path);
            return None;
        }
        Some(value.to_vec())
    }
}

impl CacheStore for IncrementalCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        match self.read(&self.path(key)) {
            Some(value) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Cow::Owned(value))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let Some(parent) = path.parent() else {
            return false;
        };
        if std::fs::create_dir_all(parent).is_err() {
            return false;
        }
        let mut bytes = Vec::with_capacity(32 + value.len());
        bytes.extend_from_slice(&Sha256::digest(&value));
        bytes.extend_from_slice(&value);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return false;
        }
        std::fs::rename(&tmp, &path).is_ok()
    }
}

/// Removes the least recently written entries until the folder holds at
/// most `limit` bytes.
fn trim(dir: &Path, limit: u64) {
    let mut files = Vec::new();
    let mut total = 0;
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(meta) = entry.metadata() {
                total += meta.len();
                let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                files.push((when, meta.len(), entry.path()));
            }
        }
    }
    if total <= limit {
        return;
    }
    files.sort();
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    tracing::info!(dir = %dir.display(), "compile cache trimmed to its size limit");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IncrementalCache::open(dir.path()).unwrap();
        assert!(cache.get(b"key").is_none());
        assert!(cache.insert(b"key", b"code".to_vec()));
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"code"[..]));
        assert_eq!(cache.take_counts(), (1, 1));
        // A flipped byte: removed, and a miss.
        let path = cache.path(b"key");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(cache.get(b"key").is_none());
        assert!(!path.exists());
        // A truncated file too.
        std::fs::write(&path, b"short").unwrap();
        assert!(cache.get(b"key").is_none());
    }

    #[test]
    fn trimming_removes_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IncrementalCache::open(dir.path()).unwrap();
        for i in 0..4u8 {
            cache.insert(&[i], vec![i; 100]);
            let when =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64 * 10);
            let file = std::fs::File::options()
                .write(true)
                .open(cache.path(&[i]))
                .unwrap();
            file.set_modified(when).unwrap();
        }
        trim(dir.path(), 300);
        assert!(cache.get(&[0]).is_none());
        assert!(cache.get(&[3]).is_some());
    }
}
