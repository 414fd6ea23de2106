//! State that survives a hot swap, through the real binary and the
//! `counter` example: every increment counted once under reloads (embedded
//! file, memory and a real Redis), the count across a host restart and a
//! `kill -9`, two hosts on one Redis, a draining version's late write,
//! limits on keys, values and bucket names, isolation between apps, and
//! `wasi:config` values changed by `reload --config`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::redis::Redis;
use support::{BIN, H1, Host, example, get, send, send_with, stamp, write_version};
use tokio::sync::Mutex;

/// What the load loops saw: the count each `GET /` answered, and anything
/// that was not a 200 with a number.
#[derive(Default)]
struct Counts {
    seen: Mutex<Vec<u64>>,
    failures: Mutex<Vec<String>>,
    sent: AtomicU64,
}

impl Counts {
    async fn record(&self, answer: Result<support::Answer, String>) {
        match answer {
            Ok(a) if a.status == 200 => match a.body.trim().parse() {
                Ok(n) => self.seen.lock().await.push(n),
                Err(_) => self
                    .failures
                    .lock()
                    .await
                    .push(format!("body {:?}", a.body)),
            },
            other => self.failures.lock().await.push(format!("{other:?}")),
        }
    }
}

/// Runs two fresh-connection and two keep-alive loops of `GET /` on `addr`
/// until `stop`, each bounded to `limit` requests.
fn spawn_load(
    addr: &str,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
    limit: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut loops = Vec::new();
    for keep_alive in [false, false, true, true] {
        let (addr, counts, stop) = (addr.to_string(), counts.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut conn = if keep_alive {
                H1::connect(&addr).await.ok()
            } else {
                None
            };
            for _ in 0..limit {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                counts.sent.fetch_add(1, Ordering::Relaxed);
                let answer = match conn.as_mut() {
                    Some(conn) => conn.get("/").await,
                    None => get(&addr, "/").await,
                };
                counts.record(answer).await;
            }
        }));
    }
    loops
}

/// A scratch folder holding the `counter` example stamped `v1`, and its path.
fn counter_app() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("counter.wasm");
    write_version(&app, "counter", "v1");
    (dir, app)
}

/// Reloads `host` ten times under load and checks that the counts answered
/// are exactly 1..=N, each once, and that the stored count is N.
async fn every_increment_counted_once(extra: &[&str]) {
    let (dir, app) = counter_app();
    let mut args = vec!["--no-watch"];
    args.extend_from_slice(extra);
    let host = Host::start(&app, &args);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let loops = spawn_load(&host.addr, &counts, &stop, 5_000);

    let counter = example("counter");
    for n in 2..=11u64 {
        let next = dir.path().join(format!("counter-{n}.wasm"));
        std::fs::write(&next, stamp(&counter, &format!("v{n}"))).unwrap();
        let said = host.reload_ok(&next);
        assert!(said.contains(&format!("generation {n}")), "{said}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }

    let failures = counts.failures.lock().await;
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let mut seen = counts.seen.lock().await.clone();
    let n = seen.len() as u64;
    assert!(n >= 50, "only {n} requests ran");
    seen.sort_unstable();
    let expected: Vec<u64> = (1..=n).collect();
    assert!(
        seen == expected,
        "counts are not 1..={n} each once: {:?}…",
        &seen[..seen.len().min(20)]
    );
    let stored = get(&host.addr, "/count").await.unwrap();
    assert_eq!(stored.body.trim(), n.to_string());
    eprintln!("{n} increments across 10 reloads, each counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_increment_is_counted_once_across_reloads_embedded() {
    every_increment_counted_once(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_increment_is_counted_once_across_reloads_in_memory() {
    every_increment_counted_once(&["--keyvalue", "memory"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_increment_is_counted_once_across_reloads_on_redis() {
    let redis = Redis::start();
    every_increment_counted_once(&["--keyvalue", &redis.url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_continues_across_a_host_restart() {
    let (dir, app) = counter_app();
    let data = dir.path().join("data");
    let args = ["--no-watch", "--data-dir", data.to_str().unwrap()];
    let mut host = Host::start(&app, &args);
    for n in 1..=3 {
        assert_eq!(get(&host.addr, "/").await.unwrap().body, format!("{n}\n"));
    }
    host.signal(libc::SIGTERM);
    assert!(host.wait_exit(Duration::from_secs(15)).success());
    assert!(data.join("counter/keyvalue.redb").is_file());

    let host = Host::start(&app, &args);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_increments_survive_kill_9() {
    let (dir, app) = counter_app();
    let data = dir.path().join("data");
    let args = ["--no-watch", "--data-dir", data.to_str().unwrap()];
    let mut host = Host::start(&app, &args);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let loops = spawn_load(&host.addr, &counts, &stop, 20_000);
    // Kill in the middle of the writes, once a good number is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts.seen.lock().await.len() < 200 {
        assert!(Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.signal(libc::SIGKILL);
    host.wait_exit(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let acknowledged = counts.seen.lock().await.iter().copied().max().unwrap();
    let sent = counts.sent.load(Ordering::Relaxed);

    let host = Host::start(&app, &args);
    let stored: u64 = get(&host.addr, "/count")
        .await
        .unwrap()
        .body
        .trim()
        .parse()
        .unwrap();
    eprintln!("acknowledged {acknowledged}, sent {sent}, stored after kill -9: {stored}");
    assert!(
        stored >= acknowledged,
        "lost acknowledged increments: {stored} < {acknowledged}"
    );
    assert!(
        stored <= sent,
        "more increments than requests: {stored} > {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_redis_share_one_counter() {
    let redis = Redis::start();
    let (_dir, app) = counter_app();
    let args = ["--no-watch", "--keyvalue", &redis.url];
    let (one, two) = (Host::start(&app, &args), Host::start(&app, &args));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = spawn_load(&one.addr, &counts, &stop, 100);
    loops.extend(spawn_load(&two.addr, &counts, &stop, 100));
    for l in loops {
        l.await.unwrap();
    }
    assert!(counts.failures.lock().await.is_empty());
    let mut seen = counts.seen.lock().await.clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=800).collect::<Vec<u64>>(),
        "one counter, each increment once"
    );
    for host in [&one, &two] {
        assert_eq!(get(&host.addr, "/count").await.unwrap().body, "800\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_writes_through_redis_over_tls() {
    // The server has no plaintext port: every write went over TLS.
    let redis = Redis::start_tls();
    let ca = redis.ca.as_ref().unwrap().to_str().unwrap();
    let (dir, app) = counter_app();
    let url = format!("{}?ca={ca}", redis.url);
    let host = Host::start(&app, &["--no-watch", "--keyvalue", &url]);
    for n in 1..=5 {
        assert_eq!(get(&host.addr, "/").await.unwrap().body, format!("{n}\n"));
    }
    // The state is in Redis, not the host: a second host sees it.
    drop(host);
    let host = Host::start(&app, &["--no-watch", "--keyvalue", &url]);
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "5\n");
    drop(host);

    // Without the test CA the server's certificate is not trusted (only
    // the Mozilla roots are), and the version is refused with the reason.
    let out = std::process::Command::new(support::BIN)
        .arg("serve")
        .arg(&app)
        .args(["--listen", "127.0.0.1:0", "--no-cache", "--no-watch"])
        .args(["--keyvalue", &redis.url])
        .arg("--control")
        .arg(dir.path().join("c.sock"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot reach Redis at rediss://"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_versions_late_write_is_kept() {
    let (dir, app) = counter_app();
    let host = Host::start(&app, &["--no-watch"]);
    let accepted = send(&host.addr, "POST", "/later?key=late&ms=8000", Vec::new())
        .await
        .unwrap();
    assert_eq!(accepted.status, 202);
    let v2 = dir.path().join("counter-2.wasm");
    write_version(&v2, "counter", "v2");
    host.reload_ok(&v2);
    // v1 is draining; its write has not happened yet.
    let early = get(&host.addr, "/kv/default/late").await.unwrap();
    assert_eq!(early.status, 404, "{early:?}");
    let retired = host.wait_log_where(Duration::from_secs(20), |l| {
        l.contains("version retired") && l.contains("generation=1 ")
    });
    let (_, retired) = retired.expect("v1 retires");
    assert!(retired.contains("forced=0"), "{retired}");
    let late = get(&host.addr, "/kv/default/late").await.unwrap();
    assert_eq!((late.status, late.body.as_str()), (200, "v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_keys_values_and_bad_bucket_names_are_refused_clearly() {
    let (_dir, app) = counter_app();
    let host = Host::start(&app, &["--no-watch"]);
    let cases = [
        (
            "PUT",
            "/kv/..%2Fescape/k".to_string(),
            vec![1],
            "bucket name `../escape` is not allowed",
        ),
        (
            "GET",
            "/kv/.hidden/k".to_string(),
            vec![],
            "bucket name `.hidden` is not allowed",
        ),
        (
            "GET",
            format!("/kv/{}/k", "b".repeat(65)),
            vec![],
            "is not allowed",
        ),
        (
            "GET",
            format!("/kv/default/{}", "k".repeat(1025)),
            vec![],
            "key of 1025 bytes is too long: the limit is 1024",
        ),
        (
            "PUT",
            "/kv/default/big".to_string(),
            vec![0; (1 << 20) + 1],
            "value of 1048577 bytes is too large: the limit is 1048576",
        ),
    ];
    for (method, path, body, says) in cases {
        let reply = send(&host.addr, method, &path, body).await.unwrap();
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 500, "{method} {path}: {text}");
        assert!(text.contains(says), "{method} {path}: {text}");
    }
    // Within the limits all is well, and the host kept serving.
    let fits = send(&host.addr, "PUT", "/kv/users.v2/k", vec![7; 1 << 20])
        .await
        .unwrap();
    assert_eq!(fits.status, 204);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_see_only_their_own_buckets_and_config_changes_reload() {
    let dir = tempfile::tempdir().unwrap();
    write_version(&dir.path().join("a.wasm"), "counter", "a");
    write_version(&dir.path().join("b.wasm"), "counter", "b");
    let file = dir.path().join("wasm-host.toml");
    let write_config = |greeting: &str| {
        let text = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "data"

[app.a]
component = "a.wasm"
hosts = ["a.test"]
shared_buckets = ["common"]
watch = false
[app.a.config]
greeting = "{greeting}"

[app.b]
component = "b.wasm"
hosts = ["b.test"]
shared_buckets = ["common"]
watch = false
"#
        );
        std::fs::write(&file, text).unwrap();
    };
    write_config("hello");
    let host = Host::start_config(&file, &[]);
    let call = |who: &'static str, method: &'static str, path: &'static str, body: &[u8]| {
        let (addr, body) = (host.addr.clone(), body.to_vec());
        async move {
            let reply = send_with(&addr, method, path, &[("host", who)], body)
                .await
                .unwrap();
            (
                reply.status,
                String::from_utf8_lossy(&reply.body).into_owned(),
            )
        }
    };
    assert_eq!(call("a.test", "GET", "/", b"").await, (200, "1\n".into()));
    assert_eq!(call("a.test", "GET", "/", b"").await, (200, "2\n".into()));
    assert_eq!(
        call("b.test", "GET", "/", b"").await,
        (200, "1\n".into()),
        "b has its own count"
    );
    assert_eq!(call("a.test", "PUT", "/kv/private/k", b"a's").await.0, 204);
    assert_eq!(
        call("b.test", "GET", "/kv/private/k", b"").await.0,
        404,
        "a's bucket is a's"
    );
    assert_eq!(
        call("a.test", "PUT", "/kv/common/k", b"for all").await.0,
        204
    );
    assert_eq!(
        call("b.test", "GET", "/kv/common/k", b"").await,
        (200, "for all".into())
    );
    assert!(dir.path().join("data/a/keyvalue.redb").is_file());
    assert!(dir.path().join("data/shared-keyvalue.redb").is_file());
    let status = host.status_json();
    let a = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "a")
        .unwrap();
    let store = a["keyvalue"].as_str().unwrap();
    assert!(
        store.starts_with("embedded ")
            && store.ends_with("a/keyvalue.redb, shared buckets: common"),
        "{store}"
    );

    assert_eq!(
        call("a.test", "GET", "/greeting", b"").await,
        (200, "hello\n".into())
    );
    assert_eq!(call("b.test", "GET", "/greeting", b"").await.0, 404);
    write_config("bonjour");
    host.ctl_ok(&["reload", "--config"]);
    assert_eq!(
        call("a.test", "GET", "/greeting", b"").await,
        (200, "bonjour\n".into())
    );
    // The new generation of a sees the state the old one left.
    assert_eq!(call("a.test", "GET", "/", b"").await, (200, "3\n".into()));
    assert_eq!(
        call("a.test", "GET", "/kv/private/k", b"").await,
        (200, "a's".into())
    );
}

#[test]
fn a_store_that_cannot_be_opened_stops_serve_with_the_reason() {
    let (dir, app) = counter_app();
    let serve = |extra: &[&str]| {
        Command::new(BIN)
            .arg("serve")
            .arg(&app)
            .args(["--listen", "127.0.0.1:0", "--no-cache"])
            .arg("--control")
            .arg(dir.path().join("c.sock"))
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .args(extra)
            .output()
            .unwrap()
    };
    // Nothing listens on port 1.
    let out = serve(&["--keyvalue", "redis://127.0.0.1:1"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("cannot reach Redis at redis://127.0.0.1:1"),
        "{text}"
    );

    let out = serve(&["--keyvalue", "sqlite"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("unknown key-value store `sqlite`"), "{text}");

    // A second host on the same data directory is refused, not corrupted.
    let data = dir.path().join("data");
    let _first = Host::start(&app, &["--no-watch", "--data-dir", data.to_str().unwrap()]);
    let out = serve(&["--data-dir", data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("is in use by another process"), "{text}");
}
