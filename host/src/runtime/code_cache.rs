//! Optimized machine code on disk, one file per component digest, so a
//! restarted host (or a reload of a version no longer linked in memory)
//! skips compiling.
//!
//! A file on disk is untrusted input: a bad disk, a stray write or a torn
//! copy turns it into machine code the host would jump into, crashing on
//! every start. So each `<digest>.cwasm` has the SHA-256 of its bytes
//! beside it, in `<digest>.cwasm.sha256` (`sha256sum` format, so
//! `sha256sum -c` checks it by hand too). A load reads the file into
//! memory, checks it against that digest, and deserializes only the bytes
//! it checked; a missing or wrong digest is logged with the file's name,
//! both files are removed, and the caller compiles again and stores fresh
//! ones. Reading and hashing cost about 1 ms per MB of code (SHA-256 runs
//! at about 1 GB/s with the CPU's SHA instructions), far less than a
//! compile, and a file is read only when a version is not linked in memory.
//!
//! The folder is named for the engine's compatibility hash (wasmtime
//! version and every setting that changes code), so code is only ever
//! loaded by an engine that could have produced it.
//!
//! This module stores and loads files; it does not decide what to compile.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::runtime::digest::Digest;

/// Bytes of code kept for one engine before the least recently used files
/// are removed.
const SIZE_LIMIT: u64 = 1 << 30;

/// Extension of a finished code file.
const EXTENSION: &str = "cwasm";

/// Extension added to a code file's name for the file holding its digest.
const CHECK_EXTENSION: &str = "sha256";

/// Largest digest file read: one `sha256sum` line is under 200 bytes.
const CHECK_FILE_LIMIT: u64 = 4096;

/// Why a cached code file was not used.
#[derive(Debug, thiserror::Error)]
enum Damage {
    /// No digest file beside the code (an older host wrote it, or a crash
    /// came between the two renames).
    #[error("no digest file beside it")]
    MissingDigest,
    /// The digest file does not start with 64 hex digits.
    #[error("its digest file is malformed")]
    MalformedDigest,
    /// The bytes changed since they were stored.
    #[error(
        "its bytes do not match the digest beside it (stored sha256 {stored}, file has {found})"
    )]
    Mismatch { stored: String, found: String },
    /// Larger than the whole cache may be: not a file this module wrote.
    #[error("it is {0} bytes, more than the cache may hold")]
    TooLarge(u64),
    /// It could not be read.
    #[error("it cannot be read: {0}")]
    Unreadable(std::io::Error),
}

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

    /// Whether code for `digest` is on disk, with its digest beside it. It
    /// may still be refused when loaded, if its bytes changed.
    pub fn contains(&self, digest: Digest) -> bool {
        let path = self.path(digest);
        path.is_file() && check_path(&path).is_file()
    }

    /// The code for `digest`, if it is on disk, matches the digest stored
    /// beside it, and `engine` accepts it. A file that fails either check
    /// is logged and removed, so the caller compiles and stores it again.
    /// Blocks on file I/O.
    pub fn load(&self, engine: &Engine, digest: Digest) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        let bytes = match read_verified(&path) {
            Ok(bytes) => bytes,
            Err(damage) => {
                tracing::warn!(path = %path.display(), problem = %damage, "cached code refused; compiling again");
                remove(&path);
                return None;
            }
        };
        // Deserialized from the very bytes that were hashed, never from the
        // file again: a second read, or a mapping (whose pages come from the
        // file lazily, as the code runs), could see other bytes than the
        // checked ones if the file changed in between, e.g. another host
        // sharing the folder, or the disk under us.
        //
        // SAFETY: `bytes` match the digest `store` wrote beside them, from
        // `Component::serialize` of an engine with this folder's
        // compatibility hash, in a folder that belongs to the host. wasmtime
        // still checks the header and engine settings and refuses a
        // mismatch.
        match unsafe { Component::deserialize(engine, &bytes) } {
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
                tracing::warn!(path = %path.display(), problem = %format!("{e:#}"), "cached code refused; compiling again");
                remove(&path);
                None
            }
        }
    }

    /// Writes the code of `component` for `digest`, with its digest beside
    /// it, then trims the cache to its size limit. Failing only costs a
    /// compile later, so it is logged. Blocks on file I/O.
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
        let bytes = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("cannot serialize the code")?;
        self.write_bytes(digest, &bytes)
    }

    fn write_bytes(&self, digest: Digest, bytes: &[u8]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.path(digest);
        let name = format!("{digest}.{EXTENSION}");
        // Both written aside and renamed, so a reader never sees half a
        // file. No fsync: a torn file after a crash fails its check and is
        // compiled again.
        let pid = std::process::id();
        let partial = self.dir.join(format!("{digest}.{pid}.partial"));
        let partial_check = self
            .dir
            .join(format!("{digest}.{pid}.{CHECK_EXTENSION}.partial"));
        std::fs::write(&partial, bytes)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::write(&partial_check, check_line(bytes, &name))
            .with_context(|| format!("cannot write {}", partial_check.display()))?;
        // Whatever order a reader catches the two renames in, new code with
        // an old digest (or the reverse) fails the check: it is compiled
        // again, never run unchecked.
        std::fs::rename(&partial_check, check_path(&path))
            .with_context(|| format!("cannot rename {}", partial_check.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot rename {}", partial.display()))?;
        Ok(())
    }

    /// Removes the least recently used code files (with their digests)
    /// until at most `limit` bytes remain, partial files left by a crash,
    /// and digest files whose code is gone.
    fn trim(&self, limit: u64) -> std::io::Result<()> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            // An hour leaves a writer between its two renames alone.
            let stale = used.elapsed().is_ok_and(|age| age.as_secs() > 3600);
            match path.extension().and_then(|e| e.to_str()) {
                Some(EXTENSION) => {
                    let check = std::fs::metadata(check_path(&path)).map_or(0, |m| m.len());
                    files.push((used, meta.len() + check, path));
                }
                Some(CHECK_EXTENSION) if stale && !path.with_extension("").exists() => {
                    let _ = std::fs::remove_file(&path);
                }
                Some("partial") if stale => {
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
            let _ = std::fs::remove_file(check_path(&path));
            total -= len;
        }
        Ok(())
    }
}

/// The digest file of the code file at `path`.
fn check_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(CHECK_EXTENSION);
    PathBuf::from(name)
}

/// The digest file's contents for `bytes` stored as `name`: one
/// `sha256sum` line.
fn check_line(bytes: &[u8], name: &str) -> String {
    format!("{}  {name}\n", Digest::of(bytes))
}

/// Whether `bytes` match the digest file contents `check`.
fn verify(bytes: &[u8], check: &str) -> Result<(), Damage> {
    let stored = check.split_whitespace().next().unwrap_or_default();
    if stored.len() != 64 || !stored.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Damage::MalformedDigest);
    }
    let found = Digest::of(bytes).to_string();
    if !stored.eq_ignore_ascii_case(&found) {
        return Err(Damage::Mismatch {
            stored: stored.to_string(),
            found,
        });
    }
    Ok(())
}

/// The bytes of the code file at `path`, read whole and checked against
/// the digest beside it.
fn read_verified(path: &Path) -> Result<Vec<u8>, Damage> {
    let check = match std::fs::File::open(check_path(path)) {
        Ok(file) => {
            let mut text = String::new();
            file.take(CHECK_FILE_LIMIT)
                .read_to_string(&mut text)
                .map_err(|_| Damage::MalformedDigest)?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Damage::MissingDigest);
        }
        Err(e) => return Err(Damage::Unreadable(e)),
    };
    let file = std::fs::File::open(path).map_err(Damage::Unreadable)?;
    let len = file.metadata().map_err(Damage::Unreadable)?.len();
    if len > SIZE_LIMIT {
        return Err(Damage::TooLarge(len));
    }
    // Bounded even if the file grows while it is read.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(SIZE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(Damage::Unreadable)?;
    verify(&bytes, &check)?;
    Ok(bytes)
}

/// Removes the code file at `path` and its digest; neither is trusted any
/// more.
fn remove(path: &Path) {
    for file in [path.to_path_buf(), check_path(path)] {
        if let Err(e) = std::fs::remove_file(&file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %file.display(), error = %e, "cannot remove refused cached code");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is: `(component)`.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn cache_in(dir: &Path) -> CodeCache {
        CodeCache {
            dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn verify_accepts_the_stored_bytes_only() {
        let bytes = vec![7u8; 10_000];
        let check = check_line(&bytes, "x.cwasm");
        assert!(verify(&bytes, &check).is_ok());
        // Upper-case hex, as some tools write it, is the same digest.
        assert!(verify(&bytes, &check.to_uppercase()).is_ok());

        let mut flipped = bytes.clone();
        flipped[5_000] ^= 0x01;
        assert!(matches!(
            verify(&flipped, &check),
            Err(Damage::Mismatch { .. })
        ));
        assert!(matches!(
            verify(&bytes[..9_999], &check),
            Err(Damage::Mismatch { .. })
        ));
        for malformed in ["", "\n", "abc  x.cwasm\n", &"z".repeat(64)] {
            assert!(
                matches!(verify(&bytes, malformed), Err(Damage::MalformedDigest)),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn read_verified_refuses_a_missing_digest_and_changed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let digest = Digest::of(b"component");
        let bytes: Vec<u8> = (0..=255u8).cycle().take(64 << 10).collect();
        cache.write_bytes(digest, &bytes).unwrap();
        let path = cache.path(digest);
        assert_eq!(read_verified(&path).unwrap(), bytes);

        let mut damaged = bytes.clone();
        damaged[32 << 10] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let err = read_verified(&path).unwrap_err();
        assert!(matches!(err, Damage::Mismatch { .. }), "{err}");

        std::fs::remove_file(check_path(&path)).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_verified(&path), Err(Damage::MissingDigest)));
    }

    #[test]
    fn a_damaged_file_is_refused_removed_and_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let engine = Engine::default();
        let digest = Digest::of(EMPTY_COMPONENT);
        let component = Component::new(&engine, EMPTY_COMPONENT).unwrap();
        cache.store(digest, &component);
        assert!(cache.contains(digest));
        assert!(cache.load(&engine, digest).is_some());

        let path = cache.path(digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.load(&engine, digest).is_none());
        assert!(!path.exists() && !check_path(&path).exists());

        cache.store(digest, &component);
        assert!(cache.load(&engine, digest).is_some());
    }

    #[test]
    fn trimming_removes_the_least_recently_used_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let now = SystemTime::now();
        for (name, age) in [("old", 30), ("mid", 20), ("new", 10)] {
            let path = dir.path().join(format!("{name}.{EXTENSION}"));
            std::fs::write(&path, [0u8; 100]).unwrap();
            std::fs::write(check_path(&path), check_line(&[0u8; 100], name)).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(age))
                .unwrap();
        }
        // A digest whose code is long gone, and one whose code is being
        // written right now.
        let orphan = dir
            .path()
            .join(format!("gone.{EXTENSION}.{CHECK_EXTENSION}"));
        std::fs::write(&orphan, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&orphan)
            .unwrap()
            .set_modified(now - std::time::Duration::from_secs(7200))
            .unwrap();
        let fresh = dir
            .path()
            .join(format!("coming.{EXTENSION}.{CHECK_EXTENSION}"));
        std::fs::write(&fresh, "").unwrap();

        // Each code file counts with its digest file (100 + ~76 bytes).
        cache.trim(400).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "coming.cwasm.sha256",
                "mid.cwasm",
                "mid.cwasm.sha256",
                "new.cwasm",
                "new.cwasm.sha256"
            ]
        );
    }
}
