//! The in-memory backend: buckets in a map behind one lock. It survives
//! reloads (the app holds it) but not the host; for tests and demos.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Backend, KeyPage, KvError, KvFuture, KvResult, LIST_PAGE, add_to_counter};

type Buckets = HashMap<Arc<str>, BTreeMap<String, Vec<u8>>>;

/// Buckets held in process memory.
#[derive(Default)]
pub struct Memory {
    buckets: Mutex<Buckets>,
}

impl Memory {
    /// Runs `op` on the buckets under the lock, as one atomic step.
    fn with<T: Send + 'static>(&self, op: impl FnOnce(&mut Buckets) -> KvResult<T>) -> KvFuture<T> {
        let result = match self.buckets.lock() {
            Ok(mut buckets) => op(&mut buckets),
            Err(_) => Err(KvError::new(
                "the in-memory store is unusable after a panic",
            )),
        };
        Box::pin(std::future::ready(result))
    }
}

impl Backend for Memory {
    fn get(&self, bucket: Arc<str>, key: String) -> KvFuture<Option<Vec<u8>>> {
        self.with(move |b| Ok(b.get(&bucket).and_then(|m| m.get(&key)).cloned()))
    }

    fn set(&self, bucket: Arc<str>, key: String, value: Vec<u8>) -> KvFuture<()> {
        self.with(move |b| {
            b.entry(bucket).or_default().insert(key, value);
            Ok(())
        })
    }

    fn delete(&self, bucket: Arc<str>, key: String) -> KvFuture<()> {
        self.with(move |b| {
            if let Some(m) = b.get_mut(&bucket) {
                m.remove(&key);
            }
            Ok(())
        })
    }

    fn exists(&self, bucket: Arc<str>, key: String) -> KvFuture<bool> {
        self.with(move |b| Ok(b.get(&bucket).is_some_and(|m| m.contains_key(&key))))
    }

    fn list_keys(&self, bucket: Arc<str>, cursor: Option<u64>) -> KvFuture<KeyPage> {
        self.with(move |b| {
            let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
            let keys: Vec<String> = b
                .get(&bucket)
                .map(|m| m.keys().skip(skip).take(LIST_PAGE + 1).cloned().collect())
                .unwrap_or_default();
            Ok(page(keys, skip))
        })
    }

    fn increment(&self, bucket: Arc<str>, key: String, delta: u64) -> KvFuture<u64> {
        self.with(move |b| {
            let m = b.entry(bucket).or_default();
            let count = add_to_counter(&key, m.get(&key).map(Vec::as_slice), delta)?;
            m.insert(key, count.to_string().into_bytes());
            Ok(count)
        })
    }

    fn compare_and_swap(
        &self,
        bucket: Arc<str>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvFuture<bool> {
        self.with(move |b| {
            let m = b.entry(bucket).or_default();
            if m.get(&key) != expected.as_ref() {
                return Ok(false);
            }
            m.insert(key, new);
            Ok(true)
        })
    }

    fn get_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<Vec<Option<Vec<u8>>>> {
        self.with(move |b| {
            let m = b.get(&bucket);
            Ok(keys
                .iter()
                .map(|k| m.and_then(|m| m.get(k)).cloned())
                .collect())
        })
    }

    fn set_many(&self, bucket: Arc<str>, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<()> {
        self.with(move |b| {
            b.entry(bucket).or_default().extend(pairs);
            Ok(())
        })
    }

    fn delete_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<()> {
        self.with(move |b| {
            if let Some(m) = b.get_mut(&bucket) {
                keys.iter().for_each(|k| drop(m.remove(k)));
            }
            Ok(())
        })
    }
}

/// Turns up to `LIST_PAGE + 1` keys read from offset `skip` into a page and
/// the offset of the next one.
pub(super) fn page(mut keys: Vec<String>, skip: usize) -> KeyPage {
    if keys.len() > LIST_PAGE {
        keys.truncate(LIST_PAGE);
        let next = skip.saturating_add(LIST_PAGE) as u64;
        (keys, Some(next))
    } else {
        (keys, None)
    }
}
