//! Key-value state that outlives versions: what an app's `wasi:keyvalue`
//! buckets hold, where, and who may see them.
//!
//! Buckets belong to the app, not to a version: the old and the new version
//! see the same data while they overlap, and a draining version's late
//! writes land where the new one reads. The data lives in one of three
//! backends ([`StoreChoice`]) behind the [`Backend`] trait; [`Stores`] keeps
//! one open handle per database or server for the whole host.
//!
//! Bucket names, keys and values come from guests and are untrusted: this
//! module checks them ([`Keyvalue::open`], [`Bucket`]) before a backend sees
//! them. It knows nothing of versions, requests or WIT; the guest-facing
//! bindings are in `kv::guest`.

mod embedded;

pub use embedded::wait_for_old_host;
pub(crate) mod guest;
mod memory;
mod redis;

/// A Redis client for `url` (`redis://` or `rediss://`, with `?ca=FILE`
/// trusted for TLS), for other parts of the host that talk to the same
/// server as the app's buckets.
pub fn redis_client(url: &str) -> Result<::redis::Client, KvError> {
    redis::client(url)
}

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

/// Longest key a guest may use, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest value a guest may store, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Most keys one batch call may name.
pub const MAX_BATCH: usize = 1000;
/// Longest bucket name, in bytes.
pub const MAX_BUCKET_NAME: usize = 64;
/// The bucket a guest gets when it opens the empty identifier.
pub const DEFAULT_BUCKET: &str = "default";
/// Keys one `list-keys` call returns at most; the cursor pages on.
pub const LIST_PAGE: usize = 1000;

/// Why a key-value operation failed; the text is what the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

impl KvError {
    fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

/// What a key-value operation gives back.
pub type KvResult<T> = Result<T, KvError>;

/// A backend's pending answer.
pub type KvFuture<T> = BoxFuture<'static, KvResult<T>>;

/// One page of keys and where the next page starts, if there is one.
pub type KeyPage = (Vec<String>, Option<u64>);

/// A place where buckets live. Every method takes a bucket name that was
/// already checked, and keys and values within the limits; one backend
/// value serves one scope (an app's own buckets, or the shared ones).
///
/// Counters are stored as decimal text, so a counter set by one backend's
/// `increment` reads the same through `get` on any backend.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`, if it is set.
    fn get(&self, bucket: Arc<str>, key: String) -> KvFuture<Option<Vec<u8>>>;
    /// Sets `key` to `value`; durable once the future resolves.
    fn set(&self, bucket: Arc<str>, key: String, value: Vec<u8>) -> KvFuture<()>;
    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, bucket: Arc<str>, key: String) -> KvFuture<()>;
    /// Whether `key` is set.
    fn exists(&self, bucket: Arc<str>, key: String) -> KvFuture<bool>;
    /// Up to [`LIST_PAGE`] keys from `cursor` on.
    fn list_keys(&self, bucket: Arc<str>, cursor: Option<u64>) -> KvFuture<KeyPage>;
    /// Adds `delta` to the counter at `key` (a missing key counts as 0) and
    /// returns the new count, as one atomic step.
    fn increment(&self, bucket: Arc<str>, key: String, delta: u64) -> KvFuture<u64>;
    /// Sets `key` to `new` if its value is `expected` (`None`: the key is
    /// unset), as one atomic step; returns whether it did.
    fn compare_and_swap(
        &self,
        bucket: Arc<str>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvFuture<bool>;
    /// The values of `keys`, in order.
    fn get_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<Vec<Option<Vec<u8>>>>;
    /// Sets every pair, all at once where the backend can.
    fn set_many(&self, bucket: Arc<str>, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<()>;
    /// Removes every key.
    fn delete_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<()>;
}

/// Which backend an app's buckets live in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum StoreChoice {
    /// A crash-safe file under the host's data directory; needs no server.
    #[default]
    Embedded,
    /// Process memory: gone when the host stops. For tests and demos.
    Memory,
    /// A Redis server, so several hosts share state.
    Redis(String),
}

impl FromStr for StoreChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "embedded" => Ok(Self::Embedded),
            "memory" => Ok(Self::Memory),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                ::redis::Client::open(url)
                    .map_err(|e| format!("`{url}` is not a usable Redis URL: {e}"))?;
                Ok(Self::Redis(url.to_string()))
            }
            other => Err(format!(
                "unknown key-value store `{other}`: use `embedded`, `memory` or a `redis://HOST:PORT` or `rediss://HOST:PORT` URL"
            )),
        }
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => f.write_str("embedded"),
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) => f.write_str(url),
        }
    }
}

/// An app's key-value settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvSettings {
    /// The backend.
    pub choice: StoreChoice,
    /// The host's data directory: the embedded backend keeps an app's
    /// buckets in `DIR/APP/keyvalue.redb` and shared ones in
    /// `DIR/shared-keyvalue.redb`.
    pub data_dir: PathBuf,
    /// Buckets this app shares with every other app naming them.
    pub shared: Vec<String>,
}

impl KvSettings {
    /// The file holding `app`'s own buckets with the embedded backend.
    pub fn app_file(&self, app: &str) -> PathBuf {
        self.data_dir.join(app).join("keyvalue.redb")
    }

    /// The file holding the shared buckets with the embedded backend.
    pub fn shared_file(&self) -> PathBuf {
        self.data_dir.join("shared-keyvalue.redb")
    }
}

/// Checks a bucket name from a guest or a config file; the empty name is
/// [`DEFAULT_BUCKET`].
pub fn check_bucket_name(name: &str) -> KvResult<&str> {
    if name.is_empty() {
        return Ok(DEFAULT_BUCKET);
    }
    let allowed = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if name.len() > MAX_BUCKET_NAME || !allowed || name.starts_with('.') {
        return Err(KvError::new(format!(
            "bucket name `{}` is not allowed: use 1 to {MAX_BUCKET_NAME} letters, digits, `_`, `-` or `.`, not starting with `.`",
            name.escape_debug()
        )));
    }
    Ok(name)
}

fn check_key(key: &str) -> KvResult<()> {
    if key.len() > MAX_KEY {
        return Err(KvError::new(format!(
            "key of {} bytes is too long: the limit is {MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> KvResult<()> {
    if value.len() > MAX_VALUE {
        return Err(KvError::new(format!(
            "value of {} bytes is too large: the limit is {MAX_VALUE}",
            value.len()
        )));
    }
    Ok(())
}

fn check_batch(len: usize) -> KvResult<()> {
    if len > MAX_BATCH {
        return Err(KvError::new(format!(
            "batch of {len} keys is too large: the limit is {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// Whose buckets a backend value serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    App(String),
    Shared,
}

/// The host's open databases and connections, so every app (and an app
/// restarted with new settings while its old self drains) uses one handle
/// per file or server.
#[derive(Clone, Default)]
pub struct Stores {
    open: Arc<Mutex<HashMap<StoreKey, Weak<dyn Backend>>>>,
}

/// What tells one open store from another: the backend, its file (for the
/// embedded one) and whose buckets it serves.
type StoreKey = (StoreChoice, PathBuf, Scope);

impl Stores {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key-value view of `app`; opens nothing until first used.
    pub fn for_app(&self, app: &str, settings: KvSettings) -> Arc<Keyvalue> {
        Arc::new(Keyvalue {
            app: app.to_string(),
            settings,
            stores: self.clone(),
            own: OnceCell::new(),
            shared: OnceCell::new(),
        })
    }

    async fn backend(&self, settings: &KvSettings, scope: Scope) -> KvResult<Arc<dyn Backend>> {
        let path = match (&settings.choice, &scope) {
            (StoreChoice::Embedded, Scope::App(app)) => settings.app_file(app),
            (StoreChoice::Embedded, Scope::Shared) => settings.shared_file(),
            _ => PathBuf::new(),
        };
        let key = (settings.choice.clone(), path.clone(), scope.clone());
        if let Some(open) = self.lookup(&key) {
            return Ok(open);
        }
        let made: Arc<dyn Backend> = match &settings.choice {
            StoreChoice::Embedded => Arc::new(embedded::Embedded::open(path).await?),
            StoreChoice::Memory => Arc::new(memory::Memory::default()),
            StoreChoice::Redis(url) => {
                let prefix = match &scope {
                    // `:` ends the app part, so it must not occur within it.
                    Scope::App(app) => format!(
                        "wasm-host:app:{}:",
                        app.replace('%', "%25").replace(':', "%3A")
                    ),
                    Scope::Shared => "wasm-host:shared:".to_string(),
                };
                Arc::new(redis::Redis::connect(url, prefix).await?)
            }
        };
        let mut open = self
            .open
            .lock()
            .map_err(|_| KvError::new("the key-value registry is unusable after a panic"))?;
        // Another request may have opened it meanwhile: keep the first, so
        // there is one handle per database.
        if let Some(first) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(first);
        }
        open.retain(|_, weak| weak.strong_count() > 0);
        open.insert(key, Arc::downgrade(&made));
        Ok(made)
    }

    fn lookup(&self, key: &StoreKey) -> Option<Arc<dyn Backend>> {
        self.open.lock().ok()?.get(key).and_then(Weak::upgrade)
    }
}

/// One app's key-value state: its own buckets and the shared ones it names.
/// Every version of the app holds the same `Keyvalue`.
pub struct Keyvalue {
    app: String,
    settings: KvSettings,
    stores: Stores,
    own: OnceCell<Arc<dyn Backend>>,
    shared: OnceCell<Arc<dyn Backend>>,
}

impl fmt::Debug for Keyvalue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyvalue")
            .field("app", &self.app)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Keyvalue {
    /// Where the buckets live, for `status`: the store (with its file, for
    /// the embedded one) and the shared buckets.
    pub fn describe(&self) -> String {
        let store = match &self.settings.choice {
            StoreChoice::Embedded => {
                format!("embedded {}", self.settings.app_file(&self.app).display())
            }
            other => other.to_string(),
        };
        if self.settings.shared.is_empty() {
            store
        } else {
            format!(
                "{store}, shared buckets: {}",
                self.settings.shared.join(", ")
            )
        }
    }

    /// Opens the app's own backend now (a version that imports
    /// `wasi:keyvalue` calls this at load), so a missing server or a
    /// database held by another process refuses the version with a clear
    /// error instead of failing its requests.
    pub async fn ready(&self) -> anyhow::Result<()> {
        if self.settings.choice == StoreChoice::Embedded && embedded::old_host_running() {
            // The old host holds the file until it has drained, and it
            // drains only once this process is ready: the first use opens
            // it, waiting for the old host if need be.
            return Ok(());
        }
        self.own_backend().await.map(drop).map_err(|e| {
            anyhow::anyhow!(
                "the app's key-value store ({}) cannot be opened: {e}",
                self.settings.choice
            )
        })
    }

    async fn own_backend(&self) -> KvResult<&Arc<dyn Backend>> {
        self.own
            .get_or_try_init(|| {
                self.stores
                    .backend(&self.settings, Scope::App(self.app.clone()))
            })
            .await
    }

    /// Opens bucket `identifier` (the empty one is [`DEFAULT_BUCKET`]): a
    /// shared bucket if the app's settings name it, the app's own otherwise.
    pub async fn open(&self, identifier: &str) -> KvResult<Bucket> {
        let name = check_bucket_name(identifier)?;
        let backend = if self.settings.shared.iter().any(|s| s == name) {
            self.shared
                .get_or_try_init(|| self.stores.backend(&self.settings, Scope::Shared))
                .await?
        } else {
            self.own_backend().await?
        };
        Ok(Bucket {
            name: Arc::from(name),
            backend: backend.clone(),
        })
    }
}

/// An open bucket, as a guest holds it: every call checks its input against
/// the limits before the backend sees it.
pub struct Bucket {
    name: Arc<str>,
    backend: Arc<dyn Backend>,
}

impl Bucket {
    /// See [`Backend::get`].
    pub fn get(&self, key: String) -> KvResult<KvFuture<Option<Vec<u8>>>> {
        check_key(&key)?;
        Ok(self.backend.get(self.name.clone(), key))
    }

    /// See [`Backend::set`].
    pub fn set(&self, key: String, value: Vec<u8>) -> KvResult<KvFuture<()>> {
        check_key(&key)?;
        check_value(&value)?;
        Ok(self.backend.set(self.name.clone(), key, value))
    }

    /// See [`Backend::delete`].
    pub fn delete(&self, key: String) -> KvResult<KvFuture<()>> {
        check_key(&key)?;
        Ok(self.backend.delete(self.name.clone(), key))
    }

    /// See [`Backend::exists`].
    pub fn exists(&self, key: String) -> KvResult<KvFuture<bool>> {
        check_key(&key)?;
        Ok(self.backend.exists(self.name.clone(), key))
    }

    /// See [`Backend::list_keys`].
    pub fn list_keys(&self, cursor: Option<u64>) -> KvFuture<KeyPage> {
        self.backend.list_keys(self.name.clone(), cursor)
    }

    /// See [`Backend::increment`].
    pub fn increment(&self, key: String, delta: u64) -> KvResult<KvFuture<u64>> {
        check_key(&key)?;
        Ok(self.backend.increment(self.name.clone(), key, delta))
    }

    /// See [`Backend::compare_and_swap`].
    pub fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvResult<KvFuture<bool>> {
        check_key(&key)?;
        check_value(&new)?;
        Ok(self
            .backend
            .compare_and_swap(self.name.clone(), key, expected, new))
    }

    /// See [`Backend::get_many`].
    pub fn get_many(&self, keys: Vec<String>) -> KvResult<KvFuture<Vec<Option<Vec<u8>>>>> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        Ok(self.backend.get_many(self.name.clone(), keys))
    }

    /// See [`Backend::set_many`].
    pub fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvResult<KvFuture<()>> {
        check_batch(pairs.len())?;
        for (key, value) in &pairs {
            check_key(key)?;
            check_value(value)?;
        }
        Ok(self.backend.set_many(self.name.clone(), pairs))
    }

    /// See [`Backend::delete_many`].
    pub fn delete_many(&self, keys: Vec<String>) -> KvResult<KvFuture<()>> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        Ok(self.backend.delete_many(self.name.clone(), keys))
    }
}

/// Parses a counter's stored text; `key` names it in the error.
fn parse_counter(key: &str, stored: Option<&[u8]>) -> KvResult<u64> {
    let Some(bytes) = stored else { return Ok(0) };
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| {
            KvError::new(format!(
                "cannot increment `{}`: its value is not a decimal counter",
                key.escape_debug()
            ))
        })
}

/// Adds `delta` to a stored counter, refusing overflow.
fn add_to_counter(key: &str, stored: Option<&[u8]>, delta: u64) -> KvResult<u64> {
    parse_counter(key, stored)?
        .checked_add(delta)
        .ok_or_else(|| {
            KvError::new(format!(
                "cannot increment `{}`: the counter would overflow",
                key.escape_debug()
            ))
        })
}

/// The data directory used when none is given: `$XDG_DATA_HOME/wasm-host`,
/// else `~/.local/share/wasm-host`, else `./wasm-host-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("wasm-host");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Path::new(&home).join(".local/share/wasm-host"),
        None => PathBuf::from("wasm-host-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_checked() {
        assert_eq!(check_bucket_name(""), Ok(DEFAULT_BUCKET));
        assert_eq!(check_bucket_name("users.v2"), Ok("users.v2"));
        for bad in ["../etc", "a/b", ".hidden", "sp ace", "x:y", &"b".repeat(65)] {
            let err = check_bucket_name(bad).expect_err(bad);
            assert!(err.0.contains("is not allowed"), "{err}");
        }
    }

    #[test]
    fn counters_refuse_text_and_overflow() {
        assert_eq!(add_to_counter("k", None, 5), Ok(5));
        assert_eq!(add_to_counter("k", Some(b"41"), 1), Ok(42));
        assert!(add_to_counter("k", Some(b"x"), 1).is_err());
        assert!(add_to_counter("k", Some(u64::MAX.to_string().as_bytes()), 1).is_err());
    }

    #[test]
    fn store_choices_parse_and_explain_mistakes() {
        assert_eq!("memory".parse(), Ok(StoreChoice::Memory));
        assert_eq!(
            "redis://127.0.0.1:6379".parse(),
            Ok(StoreChoice::Redis("redis://127.0.0.1:6379".into()))
        );
        let err = "sqlite".parse::<StoreChoice>().expect_err("unknown");
        assert!(err.contains("use `embedded`"), "{err}");
    }
}
