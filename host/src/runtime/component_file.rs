//! Reading a component file named by an operator, a deploy script or a
//! file watch: the one way the host reads one.
//!
//! Whatever sits at the path is untrusted: a FIFO would block a plain
//! `open` until a writer shows up, `/dev/zero` never ends, and a huge file
//! would be read whole into memory. So the file is opened without blocking
//! (`O_NONBLOCK`), the opened descriptor (not the path, which may change
//! in between) must be a regular file no larger than the host's size cap,
//! and the read runs on a blocking thread under a deadline, so a stuck disk
//! or network file system never stalls the thread that runs reloads,
//! status and health checks.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ops::metrics::{self, Refused};

/// Default cap on a component file's size. Components are about 0.1 to
/// 40 MB; this leaves room for large ones while keeping a wrong path (a
/// disk image, a log) from being read into memory.
pub const DEFAULT_MAX_SIZE: u64 = 512 << 20;

/// How long reading one component may take before the reload is refused.
/// A local disk reads 512 MiB in a few seconds; a hung network file system
/// never answers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The size cap in force, set once from `--max-component-size`. Host-wide
/// like a process limit, so every reader (start-up, reloads from the
/// control socket, watches, signals, config applies) sees the same bound
/// without threading it through each app's settings.
static MAX_SIZE: AtomicU64 = AtomicU64::new(DEFAULT_MAX_SIZE);

/// Sets the size cap for every later read (`--max-component-size`).
pub fn set_max_size(bytes: u64) {
    MAX_SIZE.store(bytes.max(1), Ordering::Relaxed);
}

/// The size cap in force.
pub fn max_size() -> u64 {
    MAX_SIZE.load(Ordering::Relaxed)
}

/// Why a component file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, inspecting or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file: a FIFO, device, socket or directory.
    #[error("it is a {0}, not a regular file; pass the path of a .wasm component")]
    NotRegular(&'static str),
    /// Larger than the cap.
    #[error(
        "it is larger than the {max}-byte limit on components ({size} bytes or more); raise --max-component-size if this is really a component"
    )]
    TooLarge {
        /// The file's size (at least).
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The read did not finish in time.
    #[error("reading it took longer than {}s; is its disk or file system stuck?", .0.as_secs())]
    TimedOut(Duration),
}

/// Reads the component at `path`, within the size cap and [`READ_TIMEOUT`],
/// on a blocking thread. Must be called within a Tokio runtime.
pub async fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    read_within(path.to_path_buf(), max_size(), READ_TIMEOUT).await
}

/// [`read`] with an explicit cap and deadline.
async fn read_within(path: PathBuf, max: u64, timeout: Duration) -> Result<Vec<u8>, ReadError> {
    let reading = tokio::task::spawn_blocking(move || read_blocking(&path, max));
    let result = match tokio::time::timeout(timeout, reading).await {
        // The blocking thread is left to finish or fail on its own; nothing
        // waits for it, and the file is closed when it returns.
        Err(_) => Err(ReadError::TimedOut(timeout)),
        Ok(Err(joined)) => Err(ReadError::Io(std::io::Error::other(joined))),
        Ok(Ok(result)) => result,
    };
    if let Err(e) = &result {
        match e {
            ReadError::NotRegular(_) => metrics::refused(Refused::ComponentNotRegular),
            ReadError::TooLarge { .. } => metrics::refused(Refused::ComponentTooLarge),
            ReadError::TimedOut(_) => metrics::refused(Refused::ComponentReadTimeout),
            ReadError::Io(_) => {}
        }
    }
    result
}

/// The checks and the read, blocking: for a thread that may block.
pub fn read_blocking(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a FIFO with no writer returns at once instead of
    // waiting for one. O_NOCTTY: a terminal never becomes ours.
    let mut file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    // fstat of what was opened, so a path swapped after a check cannot
    // slip a device in.
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_dir() {
            "directory"
        } else {
            "special file"
        }));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max,
        });
    }
    // The file may grow while it is read: read at most one byte past the
    // cap, which tells a file that grew over it from one that did not.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file).take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.wasm");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_blocking(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_blocking(&file, 9),
            Err(ReadError::TooLarge { size: 10, max: 9 })
        ));
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_blocking(&fifo, 1 << 20),
            Err(ReadError::NotRegular("FIFO"))
        ));
        assert!(matches!(
            read_blocking(Path::new("/dev/zero"), 1 << 20),
            Err(ReadError::NotRegular("character device"))
        ));
        assert!(matches!(
            read_blocking(dir.path(), 1 << 20),
            Err(ReadError::NotRegular("directory"))
        ));
    }
}
