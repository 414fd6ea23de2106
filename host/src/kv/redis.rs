//! The Redis backend: buckets as key prefixes on a Redis server, so several
//! hosts share one state. Each Redis key is
//! `wasm-host:app:APP:BUCKET:KEY` (or `wasm-host:shared:BUCKET:KEY`); app and
//! bucket names hold no `:`, so prefixes never overlap.
//!
//! One auto-reconnecting connection per scope carries every request,
//! pipelined.
//!
//! `rediss://` is Redis over TLS (rustls), checking the server against the
//! Mozilla roots, or, with `?ca=/path/ca.pem` at the end of the URL, against
//! the CA certificates in that PEM file only (a private CA, as managed Redis
//! services and test servers use).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Script, TlsCertificates};

use super::{Backend, KeyPage, KvError, KvFuture, LIST_PAGE};

/// How long to wait for a connection, and for an answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Sets `KEYS[1]` to `ARGV[3]` if it holds `ARGV[2]`, or, with `ARGV[1]` =
/// "absent", if it is unset; answers 1 when it did.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == 'absent' then matches = (current == false) else matches = (current == ARGV[2]) end
if matches then redis.call('SET', KEYS[1], ARGV[3]) return 1 end
return 0
";

/// A connection to a Redis server, serving one scope.
pub struct Redis {
    conn: ConnectionManager,
    prefix: Arc<str>,
    url: Arc<str>,
    swap: Arc<Script>,
}

fn failed(url: &str, e: impl std::fmt::Display) -> KvError {
    KvError::new(format!("Redis at {url} failed: {e}"))
}

/// `url` without its `ca=` query parameter, and that parameter's value.
/// The path is taken as written (no percent-decoding).
fn split_ca(url: &str) -> (String, Option<&str>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut ca = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("ca=") {
            Some(path) => {
                ca = Some(path);
                false
            }
            None => true,
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), ca)
    } else {
        (format!("{base}?{}", rest.join("&")), ca)
    }
}

/// The client for `url`, trusting the CA file named by `?ca=` if any.
pub(super) fn client(url: &str) -> Result<redis::Client, KvError> {
    let (plain, ca) = split_ca(url);
    let Some(ca) = ca else {
        return redis::Client::open(plain).map_err(|e| failed(url, e));
    };
    if !plain.starts_with("rediss://") {
        return Err(KvError::new(format!(
            "Redis at {url}: `ca=` needs TLS; write rediss://"
        )));
    }
    let pem = std::fs::read(ca)
        .map_err(|e| KvError::new(format!("Redis at {url}: cannot read the CA file {ca}: {e}")))?;
    let certs = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(plain, certs).map_err(|e| failed(url, e))
}

impl Redis {
    /// Connects to `url`; every key gets `prefix`.
    pub async fn connect(url: &str, prefix: String) -> Result<Self, KvError> {
        let client = client(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| {
                KvError::new(format!(
                    "cannot reach Redis at {url}: {e}; is the server running?"
                ))
            })?;
        tracing::debug!(url, prefix, "Redis key-value store connected");
        Ok(Self {
            conn,
            prefix: prefix.into(),
            url: url.into(),
            swap: Arc::new(Script::new(SWAP)),
        })
    }

    fn key(&self, bucket: &str, key: &str) -> String {
        format!("{}{bucket}:{key}", self.prefix)
    }

    /// Sends `cmd` and reads its answer as `T`.
    fn run<T: FromRedisValue + Send + 'static>(&self, cmd: Cmd) -> KvFuture<T> {
        let mut conn = self.conn.clone();
        let url = self.url.clone();
        Box::pin(async move {
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| failed(&url, e))
        })
    }

    /// Sends `cmd` and ignores its answer.
    fn run_unit(&self, cmd: Cmd) -> KvFuture<()> {
        let sent = self.run::<redis::Value>(cmd);
        Box::pin(async move { sent.await.map(drop) })
    }
}

/// `text` with Redis glob characters escaped, for a SCAN pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Backend for Redis {
    fn get(&self, bucket: Arc<str>, key: String) -> KvFuture<Option<Vec<u8>>> {
        self.run(redis::cmd("GET").arg(self.key(&bucket, &key)).clone())
    }

    fn set(&self, bucket: Arc<str>, key: String, value: Vec<u8>) -> KvFuture<()> {
        self.run_unit(
            redis::cmd("SET")
                .arg(self.key(&bucket, &key))
                .arg(value)
                .clone(),
        )
    }

    fn delete(&self, bucket: Arc<str>, key: String) -> KvFuture<()> {
        self.run_unit(redis::cmd("DEL").arg(self.key(&bucket, &key)).clone())
    }

    fn exists(&self, bucket: Arc<str>, key: String) -> KvFuture<bool> {
        self.run(redis::cmd("EXISTS").arg(self.key(&bucket, &key)).clone())
    }

    fn list_keys(&self, bucket: Arc<str>, cursor: Option<u64>) -> KvFuture<KeyPage> {
        let start = self.key(&bucket, "");
        let pattern = format!("{}*", glob_escape(&start));
        let scan = self.run::<(u64, Vec<String>)>(
            redis::cmd("SCAN")
                .arg(cursor.unwrap_or(0))
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(LIST_PAGE)
                .clone(),
        );
        Box::pin(async move {
            let (next, keys) = scan.await?;
            let keys = keys
                .into_iter()
                .filter_map(|k| k.strip_prefix(&start).map(str::to_string))
                .collect();
            Ok((keys, (next != 0).then_some(next)))
        })
    }

    fn increment(&self, bucket: Arc<str>, key: String, delta: u64) -> KvFuture<u64> {
        let Ok(delta) = i64::try_from(delta) else {
            let refused = KvError::new(format!(
                "cannot increment `{}` by {delta}: Redis counters take steps up to {}",
                key.escape_debug(),
                i64::MAX
            ));
            return Box::pin(std::future::ready(Err(refused)));
        };
        let sent = self.run::<i64>(
            redis::cmd("INCRBY")
                .arg(self.key(&bucket, &key))
                .arg(delta)
                .clone(),
        );
        Box::pin(async move {
            let count = sent.await?;
            u64::try_from(count).map_err(|_| KvError::new("the counter is negative"))
        })
    }

    fn compare_and_swap(
        &self,
        bucket: Arc<str>,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> KvFuture<bool> {
        let mut conn = self.conn.clone();
        let url = self.url.clone();
        let swap = self.swap.clone();
        let key = self.key(&bucket, &key);
        Box::pin(async move {
            let mut call = swap.key(key);
            match &expected {
                Some(old) => call.arg("present").arg(old.as_slice()),
                None => call.arg("absent").arg(""),
            };
            let swapped: i64 = call
                .arg(new)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| failed(&url, e))?;
            Ok(swapped == 1)
        })
    }

    fn get_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let mut cmd = redis::cmd("MGET");
        for k in &keys {
            cmd.arg(self.key(&bucket, k));
        }
        self.run(cmd)
    }

    fn set_many(&self, bucket: Arc<str>, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<()> {
        if pairs.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in pairs {
            cmd.arg(self.key(&bucket, &k)).arg(v);
        }
        self.run_unit(cmd)
    }

    fn delete_many(&self, bucket: Arc<str>, keys: Vec<String>) -> KvFuture<()> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let mut cmd = redis::cmd("DEL");
        for k in &keys {
            cmd.arg(self.key(&bucket, k));
        }
        self.run_unit(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_parameter_is_taken_out_of_the_url() {
        assert_eq!(split_ca("redis://h:1"), ("redis://h:1".into(), None));
        assert_eq!(
            split_ca("rediss://h:1/0?ca=/etc/ca.pem"),
            ("rediss://h:1/0".into(), Some("/etc/ca.pem"))
        );
        assert_eq!(
            split_ca("rediss://h:1?protocol=resp3&ca=ca.pem"),
            ("rediss://h:1?protocol=resp3".into(), Some("ca.pem"))
        );
    }
}
