//! The embedded backend: one redb file per scope, one table per bucket.
//!
//! Writes go to a single writer thread that commits them in groups: every
//! write waiting when a commit starts rides in it, so one fsync covers many
//! requests. A write is answered only after its commit returned, and redb
//! commits are durable on return, so an acknowledged write survives a
//! `kill -9` or a power cut. Reads run on the blocking pool against the
//! last committed state.
//!
//! A failed write to the file (a full disk, an I/O error) leaves a redb
//! handle refusing everything after it (`PreviousIo`) for as long as it
//! lives. So the handle is dropped and the file reopened right after such a
//! failure: redb's repair brings back the last committed state, and once
//! space is back writes succeed again without a restart. A reopen that fails
//! is tried again on a later operation, at most once per
//! [`REOPEN_RETRY`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use tokio::sync::oneshot;

use super::memory::page;
use super::{Backend, KeyPage, KvError, KvFuture, KvResult, LIST_PAGE, add_to_counter};

/// Writes one commit may carry at most.
const MAX_GROUP: usize = 512;

/// After a reopen failed, how long operations answer with an error before
/// the next attempt (each one may run redb's repair of the whole file).
const REOPEN_RETRY: Duration = Duration::from_millis(500);

/// How long a reopen waits for reads still holding the broken handle; the
/// file can be opened again only once that handle is gone.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

type Def<'a> = TableDefinition<'a, &'static str, &'static [u8]>;

/// A write waiting for the writer thread.
enum Op {
    Set(String, Vec<u8>),
    Delete(String),
    Increment(String, u64),
    Swap(String, Option<Vec<u8>>, Vec<u8>),
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
}

/// What a write gives back.
enum Done {
    Nothing,
    Count(u64),
    Swapped(bool),
}

struct Write {
    bucket: Arc<str>,
    op: Op,
    reply: oneshot::Sender<KvResult<Done>>,
}

/// An open database file.
pub struct Embedded {
    file: Arc<DbFile>,
    writes: mpsc::Sender<Write>,
}

/// The database file and its current handle, shared by the writer thread
/// and the reads.
struct DbFile {
    path: PathBuf,
    /// `None` after a file error until a reopen succeeds.
    handle: RwLock<Option<Arc<Database>>>,
    /// When a failed reopen may be tried again.
    retry_at: Mutex<Option<Instant>>,
    /// A broken handle is being closed and the file reopened.
    recovering: AtomicBool,
}

fn failed(e: impl std::fmt::Display) -> KvError {
    KvError::new(format!("the embedded store failed: {e}"))
}

/// Whether `e` came from the file itself, after which redb's handle refuses
/// every later operation until it is reopened.
fn from_the_file(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

/// How long an open waits for the old host to let go of the file, in
/// milliseconds, and that host's process id: both 0 unless this host took
/// over from an old one in a binary upgrade, which holds its files until
/// its last request has drained.
static TAKEOVER_WAIT_MS: AtomicU64 = AtomicU64::new(0);
static OLD_HOST: AtomicU32 = AtomicU32::new(0);

/// Makes opens wait up to `wait` for a file the old host (this process's
/// parent, `wasm-host upgrade`) still holds: its requests still in flight
/// keep their store.
pub fn wait_for_old_host(wait: Duration) {
    TAKEOVER_WAIT_MS.store(wait.as_millis() as u64, Ordering::Relaxed);
    OLD_HOST.store(std::os::unix::process::parent_id(), Ordering::Relaxed);
}

/// Whether the old host this one took over from still runs: it is the
/// parent until it exits.
pub(crate) fn old_host_running() -> bool {
    let old = OLD_HOST.load(Ordering::Relaxed);
    old != 0 && std::os::unix::process::parent_id() == old
}

fn open_file(path: &Path) -> KvResult<Database> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KvError::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    let wait = Duration::from_millis(TAKEOVER_WAIT_MS.load(Ordering::Relaxed));
    let started = Instant::now();
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if old_host_running() && started.elapsed() < wait =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(KvError::new(format!(
                    "{} is in use by another process; give each host its own --data-dir, or share state through Redis",
                    path.display()
                )));
            }
            Err(other) => {
                return Err(KvError::new(format!(
                    "cannot open {}: {other}",
                    path.display()
                )));
            }
        }
    }
}

impl DbFile {
    /// The handle to use now; reopens the file first when an earlier
    /// failure closed it (at most once per [`REOPEN_RETRY`]).
    fn handle(&self) -> KvResult<Arc<Database>> {
        if let Some(db) = self.read_slot().as_ref() {
            return Ok(db.clone());
        }
        if self.recovering.load(Ordering::Acquire) {
            return Err(unavailable());
        }
        self.reopen()
    }

    fn read_slot(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<Database>>> {
        // The slot holds no invariant a panic could break halfway.
        self.handle.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Called with the handle an operation failed on: after a file error,
    /// that handle is useless, so it is closed and the file reopened.
    fn after_failure(&self, db: Arc<Database>, e: &redb::Error) {
        if !from_the_file(e) {
            return;
        }
        {
            let mut slot = self.handle.write().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(current) if Arc::ptr_eq(current, &db) => *slot = None,
                // Another failure already took it out.
                _ => return,
            }
            self.recovering.store(true, Ordering::Release);
        }
        tracing::warn!(path = %self.path.display(), error = %e, "embedded key-value store hit a file error; reopening it");
        // The file opens again only once the broken handle is closed. Reads
        // that fetched it before it broke fail quickly; wait a bounded
        // while for them to let go (no lock held, so none of them waits on
        // this).
        let until = Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&db) > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(db);
        // This first attempt is never held back by an earlier failed one.
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = self.reopen();
        self.recovering.store(false, Ordering::Release);
    }

    /// Opens the file again into the empty slot, unless an attempt failed
    /// less than [`REOPEN_RETRY`] ago.
    fn reopen(&self) -> KvResult<Arc<Database>> {
        let mut slot = self.handle.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(unavailable());
        }
        match open_file(&self.path) {
            Ok(db) => {
                *retry_at = None;
                let db = Arc::new(db);
                *slot = Some(db.clone());
                tracing::info!(path = %self.path.display(), "embedded key-value store reopened");
                Ok(db)
            }
            Err(e) => {
                *retry_at = Some(Instant::now() + REOPEN_RETRY);
                tracing::warn!(path = %self.path.display(), error = %e, "cannot reopen the embedded key-value store yet");
                Err(e)
            }
        }
    }
}

fn unavailable() -> KvError {
    KvError::new(
        "the embedded store is unavailable after a file error (is the disk full?); it is reopened on a later try",
    )
}

impl Embedded {
    /// Opens (or creates) the database at `path` and starts its writer.
    pub async fn open(path: PathBuf) -> KvResult<Self> {
        let shown = path.display().to_string();
        let (db, path) = tokio::task::spawn_blocking(move || open_file(&path).map(|db| (db, path)))
            .await
            .map_err(failed)??;
        let file = Arc::new(DbFile {
            path,
            handle: RwLock::new(Some(Arc::new(db))),
            retry_at: Mutex::new(None),
            recovering: AtomicBool::new(false),
        });
        let (writes, queue) = mpsc::channel();
        let for_writer = file.clone();
        std::thread::Builder::new()
            .name("wasm-host-kv-writer".into())
            .spawn(move || write_loop(&for_writer, &queue))
            .map_err(|e| KvError::new(format!("cannot start the writer for {shown}: {e}")))?;
        tracing::debug!(path = %shown, "embedded key-value store open");
        Ok(Self { file, writes })
    }

    fn write(&self, bucket: Arc<str>, op: Op) -> KvFuture<Done> {
        let (reply, answer) = oneshot::channel();
        let sent = self.writes.send(Write { bucket, op, reply });
        Box::pin(async move {
            sent.map_err(|_| KvError::new("the embedded store's writer has stopped"))?;
            answer
                .await
                .map_err(|_| KvError::new("the embedded store's writer has stopped"))?
        })
    }

    /// Runs `read` on the blocking pool against the last committed state of
    /// `bucket`; `None` means the bucket has never been written.
    fn read<T: Send + 'static>(
        &self,
        bucket: Arc<str>,
        read: impl FnOnce(
            Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>,
        ) -> Result<T, redb::Error>
        + Send
        + 'static,
    ) -> KvFuture<T> {
        let file = self.file.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let db = file.handle()?;
                let result = (|| {
                    let txn = db.begin_read()?;
                    match txn.open_table(Def::new(&bucket)) {
                        Ok(table) => read(Some(table)),
                        Err(TableError::TableDoesNotExist(_)) => read(None),
                        Err(e) => Err(e.into()),
                    }
                })();
                result.map_err(|e| {
                    let answer = failed(&e);
                    file.after_failure(db, &e);
                    answer
                })
            })
            .await
            .map_err(failed)?
        })
    }
}

fn count(done: KvFuture<Done>) -> KvFuture<u64> {
    Box::pin(async move {
        match done.await? {
            Done::Count(n) => Ok(n),
            _ => Err(KvError::new("the embedded store answered out of turn")),
        }
    })
}

fn nothing(done: KvFuture<Done>) -> KvFuture<()> {
    Box::pin(async move { done.await.map(drop) })
}

impl Backend for Embedded {
    fn get(&self, bucket: Arc<str>, key: String) -> KvFuture<Option<Vec<u8>>> {
        self.read(bucket, move |table| match table {
            Some(t) => Ok(t.get(key.as_str())?.map(|v| v.value().to_vec())),
            None => Ok(None),
        })
    }

    fn set(&self, bucket: Arc<str>, key: String, value: Vec<u8>) -> KvFuture<()> {
        nothing(self.write(bucket, Op::Set(key, value)))
    }

    fn delete(&self, bucket: Arc<str>, key: String) -> KvFuture<()> {
        nothing(self.write(bucket, Op::Delete(key)))
    }

    fn exists(&self, bucket: Arc<str>, key: String) -> KvFuture<bool> {
        self.read(bucket, move |table| match table {
            Some(t) => Ok(t.get(key.as_str())?.is_some()),
            None => Ok(false),
        })
    }

    fn list_keys(&self, bucket: Arc<str>, cursor: Option<u64>) -> KvFuture<KeyPage> {
        self.read(bucket, move |table| {
            let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
            let Some(t) = table else {
                return Ok((Vec::new(), None));
            };
            let mut keys = Vec::new();
            for entry in t.iter()?.skip(skip).take(LIST_PAGE + 1) {
                let (key, _) = entry?;
                keys.push(key.value().to_string());
            }
            Ok(page(keys, skip))
        })
    }

    fn increment(&self, bucket: Arc<str>, key: String, delta: u64) -> KvFuture<u64> {
        count(self.write(bucket, Op::Increment(key, delta)))
    }

    fn compare_and_swap(
        &self,
        bucket: Arc<str>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvFuture<bool> {
        let done = self.write(bucket, Op::Swap(key, expected, new));
        Box::pin(async move {
            match done.await? {
                Done::Swapped(swapped) => Ok(swapped),
                _ => Err(KvError::new("the embedded store answered out of turn")),
            }
        })
    }

    fn get_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<Vec<Option<Vec<u8>>>> {
        self.read(bucket, move |table| {
            let Some(t) = table else {
                return Ok(vec![None; keys.len()]);
            };
            keys.iter()
                .map(|k| Ok(t.get(k.as_str())?.map(|v| v.value().to_vec())))
                .collect()
        })
    }

    fn set_many(&self, bucket: Arc<str>, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<()> {
        nothing(self.write(bucket, Op::SetMany(pairs)))
    }

    fn delete_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<()> {
        nothing(self.write(bucket, Op::DeleteMany(keys)))
    }
}

/// The writer thread: takes every write waiting, applies them in order in
/// one transaction, commits, then answers each. Ends when the store is
/// dropped.
fn write_loop(file: &DbFile, queue: &mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        let outcome = match file.handle() {
            Err(e) => Err((e, None)),
            Ok(db) => match commit(&db, &group) {
                Ok(results) => Ok(results),
                Err(e) => Err((failed(&e), Some((db, e)))),
            },
        };
        match outcome {
            Ok(results) => {
                for (write, result) in group.into_iter().zip(results) {
                    let _ = write.reply.send(result);
                }
            }
            Err((e, broke)) => {
                tracing::error!(error = %e, writes = group.len(), "key-value commit failed");
                for write in group {
                    let _ = write.reply.send(Err(e.clone()));
                }
                if let Some((db, cause)) = broke {
                    file.after_failure(db, &cause);
                }
            }
        }
    }
}

/// Applies `group` in one transaction. The outer error (storage trouble)
/// fails the whole group, nothing written; an inner one (a counter that is
/// not a number) fails only its own write, which then changes nothing.
fn commit(db: &Database, group: &[Write]) -> Result<Vec<KvResult<Done>>, redb::Error> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(group.len());
    for write in group {
        let mut table = txn.open_table(Def::new(&write.bucket))?;
        let result = match &write.op {
            Op::Set(key, value) => {
                table.insert(key.as_str(), value.as_slice())?;
                Ok(Done::Nothing)
            }
            Op::Delete(key) => {
                table.remove(key.as_str())?;
                Ok(Done::Nothing)
            }
            Op::Increment(key, delta) => {
                let stored = table.get(key.as_str())?;
                let next = add_to_counter(key, stored.as_ref().map(|v| v.value()), *delta);
                drop(stored);
                match next {
                    Ok(n) => {
                        let text = n.to_string();
                        table.insert(key.as_str(), text.as_bytes())?;
                        Ok(Done::Count(n))
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Swap(key, expected, new) => {
                let stored = table.get(key.as_str())?;
                let matches = stored.as_ref().map(|v| v.value()) == expected.as_deref();
                drop(stored);
                if matches {
                    table.insert(key.as_str(), new.as_slice())?;
                }
                Ok(Done::Swapped(matches))
            }
            Op::SetMany(pairs) => {
                for (key, value) in pairs {
                    table.insert(key.as_str(), value.as_slice())?;
                }
                Ok(Done::Nothing)
            }
            Op::DeleteMany(keys) => {
                for key in keys {
                    table.remove(key.as_str())?;
                }
                Ok(Done::Nothing)
            }
        };
        results.push(result);
    }
    txn.commit()?;
    Ok(results)
}
