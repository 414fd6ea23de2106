//! Key-value state that survives reloads and restarts: the host's
//! `wasi:keyvalue` buckets, with typed helpers.
//!
//! Buckets belong to the app, not to a version: the version that replaced
//! this one reads what this one wrote, and writes made after a response
//! (see [`after_response`](crate::after_response)) are kept. Where the data
//! lives (a file, memory, or Redis) is the host's choice, per app.
//!
//! ```no_run
//! use wasm_host_sdk::kv::{Bucket, KvError};
//!
//! fn hit() -> Result<String, KvError> {
//!     let hits = Bucket::open("default")?.increment("hits", 1)?;
//!     Ok(format!("visit number {hits}\n"))
//! }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::wasi::keyvalue::{atomics, batch, store};
use crate::__bindings::wasm_host::app::keyvalue_cas;
use crate::response::IntoResponse;
use crate::{Response, StatusCode};

/// Why a key-value call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The host has no such store.
    NoSuchStore,
    /// The host refused access to the bucket.
    AccessDenied,
    /// The host refused the call (a key or value over its limits, a bad
    /// bucket name) or the store failed; the text says which.
    Other(String),
    /// A value could not be turned into or read back from JSON.
    Json(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchStore => f.write_str("no such key-value store"),
            Self::AccessDenied => f.write_str("access to the bucket was denied"),
            Self::Other(text) => f.write_str(text),
            Self::Json(text) => write!(f, "JSON value: {text}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<store::Error> for KvError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NoSuchStore => Self::NoSuchStore,
            store::Error::AccessDenied => Self::AccessDenied,
            store::Error::Other(text) => Self::Other(text),
        }
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("key-value error: {self}\n"),
        )
            .into_response()
    }
}

/// An open bucket of the app.
pub struct Bucket(store::Bucket);

impl Bucket {
    /// Opens the bucket `name` (`""` is the bucket `default`). Names are 1 to
    /// 64 letters, digits, `_`, `-` or `.`.
    pub fn open(name: &str) -> Result<Self, KvError> {
        Ok(Self(store::open(name)?))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.0.get(key)?)
    }

    /// The value of `key` as text, if set; invalid UTF-8 is replaced.
    pub fn get_string(&self, key: &str) -> Result<Option<String>, KvError> {
        Ok(self
            .get(key)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        Ok(self.0.set(key, value.as_ref())?)
    }

    /// Removes `key`; removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        Ok(self.0.delete(key)?)
    }

    /// Whether `key` is set.
    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.0.exists(key)?)
    }

    /// Every key of the bucket, page by page.
    pub fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.0.list_keys(cursor)?;
            all.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Adds `delta` to the counter at `key` (unset counts as 0) and returns
    /// the new count, atomically: concurrent increments, from any version
    /// or host sharing the store, are all counted.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
        Ok(atomics::increment(&self.0, key, delta)?)
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: unset), as
    /// one atomic step; `false` means someone else changed it first.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
    ) -> Result<bool, KvError> {
        Ok(keyvalue_cas::compare_and_swap(
            &self.0,
            key,
            expected,
            new.as_ref(),
        )?)
    }

    /// The values of `keys`, in order (at most 1000 keys).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let found = batch::get_many(&self.0, keys)?;
        Ok(found.into_iter().map(|kv| kv.map(|(_, v)| v)).collect())
    }

    /// Sets every pair (at most 1000).
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        Ok(batch::set_many(&self.0, pairs)?)
    }

    /// The value of `key` read as JSON, if set.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KvError::Json(e.to_string())),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value` written as JSON.
    pub fn set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Json(e.to_string()))?;
        self.set(key, bytes)
    }

    /// Replaces the JSON value at `key` with `change(current)`, retrying
    /// with compare-and-swap until no other writer came in between; returns
    /// what was stored.
    pub fn update_json<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> T,
    ) -> Result<T, KvError> {
        loop {
            let before = self.get(key)?;
            let current = match &before {
                Some(bytes) => {
                    Some(serde_json::from_slice(bytes).map_err(|e| KvError::Json(e.to_string()))?)
                }
                None => None,
            };
            let next = change(current);
            let bytes = serde_json::to_vec(&next).map_err(|e| KvError::Json(e.to_string()))?;
            if self.compare_and_swap(key, before.as_deref(), bytes)? {
                return Ok(next);
            }
        }
    }
}
