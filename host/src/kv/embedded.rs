//! The embedded backend: one redb file per scope, one table per bucket.
//!
//! Writes go to a single writer thread that commits them in groups: every
//! write waiting when a commit starts rides in it, so one fsync covers many
//! requests. A write is answered only after its commit returned, and redb
//! commits are durable on return, so an acknowledged write survives a
//! `kill -9` or a power cut. Reads run on the blocking pool against the
//! last committed state.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use tokio::sync::oneshot;

use super::memory::page;
use super::{Backend, KeyPage, KvError, KvFuture, KvResult, LIST_PAGE, add_to_counter};

/// Writes one commit may carry at most.
const MAX_GROUP: usize = 512;

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
    db: Arc<Database>,
    writes: mpsc::Sender<Write>,
}

fn failed(e: impl std::fmt::Display) -> KvError {
    KvError::new(format!("the embedded store failed: {e}"))
}

impl Embedded {
    /// Opens (or creates) the database at `path` and starts its writer.
    pub async fn open(path: PathBuf) -> KvResult<Self> {
        let shown = path.display().to_string();
        let db = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    KvError::new(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            Database::create(&path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => KvError::new(format!(
                    "{} is in use by another process; give each host its own --data-dir, or share state through Redis",
                    path.display()
                )),
                other => KvError::new(format!("cannot open {}: {other}", path.display())),
            })
        })
        .await
        .map_err(failed)??;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let for_writer = db.clone();
        std::thread::Builder::new()
            .name("wasm-host-kv-writer".into())
            .spawn(move || write_loop(&for_writer, &queue))
            .map_err(|e| KvError::new(format!("cannot start the writer for {shown}: {e}")))?;
        tracing::debug!(path = %shown, "embedded key-value store open");
        Ok(Self { db, writes })
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
        read: impl FnOnce(Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>) -> KvResult<T>
        + Send
        + 'static,
    ) -> KvFuture<T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let txn = db.begin_read().map_err(failed)?;
                match txn.open_table(Def::new(&bucket)) {
                    Ok(table) => read(Some(table)),
                    Err(TableError::TableDoesNotExist(_)) => read(None),
                    Err(e) => Err(failed(e)),
                }
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
            Some(t) => Ok(t
                .get(key.as_str())
                .map_err(failed)?
                .map(|v| v.value().to_vec())),
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
            Some(t) => Ok(t.get(key.as_str()).map_err(failed)?.is_some()),
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
            for entry in t.iter().map_err(failed)?.skip(skip).take(LIST_PAGE + 1) {
                let (key, _) = entry.map_err(failed)?;
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
                .map(|k| {
                    Ok(t.get(k.as_str())
                        .map_err(failed)?
                        .map(|v| v.value().to_vec()))
                })
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
fn write_loop(db: &Database, queue: &mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        match commit(db, &group) {
            Ok(results) => {
                for (write, result) in group.into_iter().zip(results) {
                    let _ = write.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = group.len(), "key-value commit failed");
                for write in group {
                    let _ = write.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies `group` in one transaction. The outer error (storage trouble)
/// fails the whole group, nothing written; an inner one (a counter that is
/// not a number) fails only its own write, which then changes nothing.
fn commit(db: &Database, group: &[Write]) -> KvResult<Vec<KvResult<Done>>> {
    let txn = db.begin_write().map_err(failed)?;
    let mut results = Vec::with_capacity(group.len());
    for write in group {
        let mut table = txn.open_table(Def::new(&write.bucket)).map_err(failed)?;
        let result = match &write.op {
            Op::Set(key, value) => {
                table
                    .insert(key.as_str(), value.as_slice())
                    .map_err(failed)?;
                Ok(Done::Nothing)
            }
            Op::Delete(key) => {
                table.remove(key.as_str()).map_err(failed)?;
                Ok(Done::Nothing)
            }
            Op::Increment(key, delta) => {
                let stored = table.get(key.as_str()).map_err(failed)?;
                let next = add_to_counter(key, stored.as_ref().map(|v| v.value()), *delta);
                drop(stored);
                match next {
                    Ok(n) => {
                        let text = n.to_string();
                        table
                            .insert(key.as_str(), text.as_bytes())
                            .map_err(failed)?;
                        Ok(Done::Count(n))
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Swap(key, expected, new) => {
                let stored = table.get(key.as_str()).map_err(failed)?;
                let matches = stored.as_ref().map(|v| v.value()) == expected.as_deref();
                drop(stored);
                if matches {
                    table.insert(key.as_str(), new.as_slice()).map_err(failed)?;
                }
                Ok(Done::Swapped(matches))
            }
            Op::SetMany(pairs) => {
                for (key, value) in pairs {
                    table
                        .insert(key.as_str(), value.as_slice())
                        .map_err(failed)?;
                }
                Ok(Done::Nothing)
            }
            Op::DeleteMany(keys) => {
                for key in keys {
                    table.remove(key.as_str()).map_err(failed)?;
                }
                Ok(Done::Nothing)
            }
        };
        results.push(result);
    }
    txn.commit().map_err(failed)?;
    Ok(results)
}
