//! WASI 0.3 components through the real binary (examples/hello-p3, built
//! with the `wasip3` crate): served with many requests per instance,
//! reloaded under load between 0.3 versions and to and from 0.2, slow
//! requests and work after the response across a swap, a trap that takes
//! its instance down, an endless loop ended by the request timeout, and the
//! drain deadline.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Answer, H1, H2, Host, example, get, notify_listener, stamp, write_version};
use tokio::sync::Mutex;

/// The value of the metrics sample whose line starts with `sample`.
async fn metric(admin: &str, sample: &str) -> Option<f64> {
    let answer = get(admin, "/metrics").await.ok()?;
    answer
        .body
        .lines()
        .find(|line| line.starts_with(sample))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

/// Sends `n` GETs of `path`, `gap` apart, each on its own connection, and
/// returns their tasks. Staggered so that each finds the instance the
/// first one started waiting for its next request, rather than all of them
/// arriving before it exists.
fn staggered(
    addr: &str,
    path: &str,
    n: usize,
    gap: Duration,
) -> Vec<tokio::task::JoinHandle<Result<Answer, String>>> {
    (0..n)
        .map(|i| {
            let (addr, path) = (addr.to_string(), path.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(gap * i as u32).await;
                get(&addr, &path).await
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_wasi_03_component_and_shows_its_world() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v1");
    let host = Host::start(&app, &["--no-watch", "--admin", "127.0.0.1:0"]);
    let admin = host.admin_addr();

    let hello = get(&host.addr, "/").await.unwrap();
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "hello v1 from 0.3\n")
    );
    // A body streamed in pieces arrives whole, in order.
    let streamed = get(&host.addr, "/stream?chunks=3&ms=50").await.unwrap();
    assert_eq!(
        streamed.body,
        "chunk 1 of 3 from v1\nchunk 2 of 3 from v1\nchunk 3 of 3 from v1\n"
    );
    let missing = get(&host.addr, "/nowhere").await.unwrap();
    assert_eq!(missing.status, 404);
    // HTTP/2 too.
    let mut h2 = H2::connect(&host.addr).await.unwrap();
    assert_eq!(h2.get("/").await.unwrap().body, "hello v1 from 0.3\n");

    let loaded = host.wait_log("version loaded", Duration::from_secs(5));
    assert!(
        loaded.contains("world=\"0.3\"") || loaded.contains("world=0.3"),
        "{loaded}"
    );
    let status = host.status_json();
    assert_eq!(status["apps"][0]["versions"][0]["world"], "0.3");
    let table = host.ctl_ok(&["status"]);
    assert!(
        table.contains("world") && table.contains(" 0.3 "),
        "{table}"
    );
    let info = get(&admin, "/metrics").await.unwrap().body;
    assert!(
        info.lines()
            .any(|l| l.starts_with("wasm_host_version_info{")
                && l.contains(r#"generation="1""#)
                && l.contains(r#"world="0.3""#)),
        "{info}"
    );
    let alive = metric(
        &admin,
        r#"wasm_host_instances_alive{app="hello-p3",generation="1"}"#,
    )
    .await;
    assert!(alive.is_some_and(|n| n >= 1.0), "{alive:?}");
    // Sequential requests share instances: far fewer than requests.
    let made = metric(
        &admin,
        r#"wasm_host_instances_total{app="hello-p3",generation="1"}"#,
    )
    .await
    .expect("instances counted");
    assert!(
        (1.0..=3.0).contains(&made),
        "{made} instances for 5 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_neither_world_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    let neither = dir.path().join("no-handler.wasm");
    std::fs::write(&neither, example("no-handler")).unwrap();
    let out = host.reload(Some(&neither));
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        // Worded as before for 0.2 (tests/reload.rs looks for it), with
        // the 0.3 export beside it.
        said.contains("does not export `wasi:http/incoming-handler@0.2.x`")
            && said.contains("`wasi:http/handler@0.3.x`"),
        "{said}"
    );
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello v1 from 0.3\n"
    );
}

/// What one load loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    versions: Mutex<BTreeSet<String>>,
}

impl Tally {
    async fn record(&self, kind: &str, answer: Result<Answer, String>) {
        match answer {
            // 0.2 hello answers `hello from vN`, 0.3 `hello vN from 0.3`.
            Ok(a) if a.status == 200 && a.body.starts_with("hello ") => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.versions.lock().await.insert(a.body.trim().to_string());
            }
            other => self
                .failures
                .lock()
                .await
                .push(format!("{kind}: {other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_between_03_versions_and_to_and_from_02_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v0");
    let host = Host::start(&app, &["--no-watch"]);
    let addr = host.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let fresh = Arc::new(Tally::default());
    let keepalive = Arc::new(Tally::default());
    let h2 = Arc::new(Tally::default());
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (addr, stop, tally) = (addr.clone(), stop.clone(), fresh.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tally.record("fresh", get(&addr, "/").await).await;
            }
        }));
    }
    for _ in 0..3 {
        let (addr, stop, tally) = (addr.clone(), stop.clone(), keepalive.clone());
        loops.push(tokio::spawn(async move {
            let mut conn = H1::connect(&addr).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                tally.record("keep-alive", conn.get("/").await).await;
            }
        }));
    }
    let shared = H2::connect(&addr).await.expect("h2 connect");
    for _ in 0..3 {
        let (mut conn, stop, tally) = (shared.clone(), stop.clone(), h2.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tally.record("h2", conn.get("/").await).await;
            }
        }));
    }

    let (p3, p2) = (example("hello-p3"), example("hello"));
    let started = Instant::now();
    // The first half between 0.3 versions, the second alternating worlds.
    for n in 1..=50u64 {
        let (bytes, world) = if n <= 25 || n % 2 == 1 {
            (&p3, "p3")
        } else {
            (&p2, "p2")
        };
        let next = dir.path().join(format!("{world}-{n}.wasm"));
        std::fs::write(&next, stamp(bytes, &format!("v{n}"))).unwrap();
        let said = host.reload_ok(&next);
        assert!(said.contains(&format!("generation {}", n + 1)), "{said}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    eprintln!("50 reloads in {:?}", started.elapsed());

    let mut seen = BTreeSet::new();
    for (name, tally) in [("fresh", &fresh), ("keep-alive", &keepalive), ("h2", &h2)] {
        let failures = tally.failures.lock().await;
        assert!(
            failures.is_empty(),
            "{name}: {} failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        let ok = tally.ok.load(Ordering::Relaxed);
        let versions = tally.versions.lock().await;
        eprintln!("{name}: {ok} ok across {} versions", versions.len());
        assert!(ok >= 100, "{name}: only {ok} requests ran");
        assert!(versions.len() >= 10, "{name}: saw only {versions:?}");
        seen.extend(versions.iter().cloned());
    }
    // Both worlds answered under load, the last version included.
    assert!(seen.iter().any(|v| v.ends_with("from 0.3")), "{seen:?}");
    assert!(
        seen.iter().any(|v| v.starts_with("hello from v")),
        "{seen:?}"
    );
    assert!(seen.contains("hello v49 from 0.3"), "{seen:?}");
    let last = get(&addr, "/").await.unwrap();
    assert_eq!(last.body, "hello from v50\n");
    // Every old version was retired, none by force.
    let deadline = Instant::now() + Duration::from_secs(15);
    while host.log_lines(&["version retired"]).len() < 50 {
        assert!(
            Instant::now() < deadline,
            "not all 50 old versions retired:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retired = host.log_lines(&["version retired"]);
    assert!(
        retired.iter().all(|l| l.contains("forced=0")),
        "{retired:?}"
    );
    let status = host.status_json();
    assert_eq!(status["apps"][0]["versions"][0]["world"], "0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_slow_requests_on_one_instance_finish_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello-p3.wasm");
    let v2 = dir.path().join("hello-p3-2.wasm");
    write_version(&v1, "hello-p3", "v1");
    write_version(&v2, "hello-p3", "v2");
    let host = Host::start(&v1, &["--no-watch"]);

    let slow = staggered(&host.addr, "/slow?ms=4000", 8, Duration::from_millis(100));
    // All eight are running (each counts, and so does their instance).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = host.status_json();
    let live = &before["apps"][0]["versions"][0];
    assert_eq!(live["in_flight"], 8, "{before}");
    assert_eq!(live["instances"], 1, "{before}");
    host.reload_ok(&v2);

    // New requests answer from v2 while v1 works on the eight.
    let fast = get(&host.addr, "/slow?ms=0").await.unwrap();
    assert!(fast.body.starts_with("slow v2 after 0 ms"), "{}", fast.body);
    let report = host.status_json();
    let versions = report["apps"][0]["versions"].as_array().unwrap();
    assert_eq!(versions[1]["generation"], 1);
    assert_eq!(versions[1]["state"], "draining");
    assert!(
        host.log_lines(&["version retired", "generation=1"])
            .is_empty()
    );

    let mut instances = BTreeSet::new();
    for task in slow {
        let answer = task.await.unwrap().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            answer
                .body
                .starts_with("slow v1 after 4000 ms on instance "),
            "{}",
            answer.body
        );
        instances.insert(answer.body.trim().rsplit(' ').next().unwrap().to_string());
    }
    assert_eq!(instances.len(), 1, "the eight ran on {instances:?}");
    let retired = host.wait_log("version retired", Duration::from_secs(5));
    assert!(
        retired.contains("generation=1") && retired.contains("forced=0"),
        "{retired}"
    );
    assert!(retired.contains("requests_drained=8"), "{retired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_after_the_response_finishes_before_the_version_retires() {
    let (port, seen) = notify_listener();
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello-p3.wasm");
    let v2 = dir.path().join("hello-p3-2.wasm");
    write_version(&v1, "hello-p3", "v1");
    write_version(&v2, "hello-p3", "v2");
    let allow = format!("127.0.0.1:{port}");
    let host = Host::start(&v1, &["--no-watch", "--allow-http", &allow]);

    let asked = Instant::now();
    let answer = get(
        &host.addr,
        &format!("/background?ms=3000&notify=http://127.0.0.1:{port}/done"),
    )
    .await
    .unwrap();
    assert_eq!(answer.body, "background v1 accepted\n");
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "the response waited for the work after it"
    );
    host.reload_ok(&v2);
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello v2 from 0.3\n"
    );

    let (retired_at, retired) = host
        .wait_log_where(Duration::from_secs(10), |l| {
            l.contains("version retired") && l.contains("generation=1")
        })
        .expect("v1 retired");
    let notified = seen.lock().unwrap().clone();
    let v1_done = notified
        .iter()
        .find(|(_, line)| line.contains("version=v1"))
        .unwrap_or_else(|| panic!("v1's work after the response never finished: {notified:?}"));
    assert!(
        v1_done.0 <= retired_at,
        "v1 was retired before its work after the response finished"
    );
    assert!(v1_done.0.duration_since(asked) >= Duration::from_millis(2900));
    assert!(retired.contains("forced=0"), "{retired}");

    // An address not allowed is denied to a 0.3 guest as to a 0.2 one.
    let denied = get(&host.addr, "/background?ms=0&notify=http://127.0.0.1:9/x")
        .await
        .unwrap();
    assert_eq!(denied.status, 200);
    host.wait_log("outgoing request denied", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_its_instance_requests_and_the_host_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v1");
    let host = Host::start(&app, &["--no-watch", "--admin", "127.0.0.1:0"]);
    let admin = host.admin_addr();

    // Three slow requests, then one that traps, all on one instance.
    let mut tasks = staggered(&host.addr, "/slow?ms=5000", 3, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let addr = host.addr.clone();
    tasks.push(tokio::spawn(
        async move { get(&addr, "/trap?ms=300").await },
    ));

    let asked = Instant::now();
    for task in tasks {
        let answer = task.await.unwrap().unwrap();
        assert_eq!(answer.status, 500, "{}", answer.body);
    }
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "the failed requests waited for their end"
    );
    // The next request gets a fresh instance.
    let after = get(&host.addr, "/").await.unwrap();
    assert_eq!(
        (after.status, after.body.as_str()),
        (200, "hello v1 from 0.3\n")
    );

    let traps = metric(
        &admin,
        r#"wasm_host_instances_ended_total{app="hello-p3",generation="1",reason="trap"}"#,
    )
    .await;
    assert_eq!(traps, Some(1.0));
    let failed = metric(
        &admin,
        r#"wasm_host_instance_failed_requests_total{app="hello-p3",generation="1"}"#,
    )
    .await
    .unwrap_or(0.0);
    assert!(
        failed >= 3.0,
        "{failed} requests counted as failed by the trap"
    );
    host.wait_log("0.3 instance ended early", Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_ends_at_the_request_timeout_with_its_instance() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v1");
    let host = Host::start(
        &app,
        &[
            "--no-watch",
            "--request-timeout",
            "2s",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = host.admin_addr();

    let addr = host.addr.clone();
    let slow = tokio::spawn(async move { get(&addr, "/slow?ms=20000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let looping = get(&host.addr, "/loop").await.unwrap();
    let took = asked.elapsed();
    assert_eq!(looping.status, 504, "{}", looping.body);
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "the loop ended after {took:?}"
    );
    // The request beside it on the same instance ended with it.
    let beside = slow.await.unwrap().unwrap();
    assert_eq!(beside.status, 504, "{}", beside.body);

    let after = get(&host.addr, "/").await.unwrap();
    assert_eq!(after.status, 200);
    let ended = metric(
        &admin,
        r#"wasm_host_instances_ended_total{app="hello-p3",generation="1",reason="timeout"}"#,
    )
    .await;
    assert_eq!(ended, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_ends_an_old_instance_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello-p3.wasm");
    let v2 = dir.path().join("hello-p3-2.wasm");
    write_version(&v1, "hello-p3", "v1");
    write_version(&v2, "hello-p3", "v2");
    let host = Host::start(
        &v1,
        &[
            "--no-watch",
            "--drain-timeout",
            "1s",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let admin = host.admin_addr();

    let addr = host.addr.clone();
    let slow = tokio::spawn(async move { get(&addr, "/slow?ms=20000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.reload_ok(&v2);
    let cut = slow.await.unwrap().unwrap();
    assert_eq!(cut.status, 503, "{}", cut.body);
    let retired = host.wait_log("version retired", Duration::from_secs(5));
    assert!(
        retired.contains("generation=1") && !retired.contains("forced=0"),
        "{retired}"
    );
    let forced = metric(&admin, r#"wasm_host_forced_ends_total{app="hello-p3"}"#).await;
    assert!(forced.is_some_and(|n| n >= 1.0), "{forced:?}");
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello v2 from 0.3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_keyvalue_and_config_work_for_03_guests() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello-p3.wasm");
    write_version(&v1, "hello-p3", "v1");
    let host = Host::start(&v1, &["--no-watch", "--config-var", "greeting=hi"]);

    assert_eq!(get(&host.addr, "/greeting").await.unwrap().body, "hi\n");
    assert_eq!(
        get(&host.addr, "/generation").await.unwrap().body,
        "generation 1\n"
    );
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "1\n");
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "2\n");

    // init refusing keeps v1 serving, with the guest's reason.
    let bad = dir.path().join("bad.wasm");
    write_version(&bad, "hello-p3", "bad");
    let out = host.reload(Some(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("bad refuses to start"),
        "{stderr}"
    );
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello v1 from 0.3\n"
    );

    // A good version: the count carries on, v1 hears drain exactly once,
    // before it retires.
    let v2 = dir.path().join("hello-p3-2.wasm");
    write_version(&v2, "hello-p3", "v2");
    host.reload_ok(&v2);
    assert_eq!(get(&host.addr, "/count").await.unwrap().body, "3\n");
    assert_eq!(
        get(&host.addr, "/generation").await.unwrap().body,
        "generation 2\n"
    );
    let (goodbye_at, _) = host
        .wait_log_where(Duration::from_secs(5), |l| {
            l.contains("drain: generation 1 of hello-p3 says goodbye")
        })
        .expect("v1's drain hook ran");
    let (retired_at, _) = host
        .wait_log_where(Duration::from_secs(5), |l| {
            l.contains("version retired") && l.contains("generation=1")
        })
        .expect("v1 retired");
    assert!(goodbye_at <= retired_at);
    assert_eq!(host.log_lines(&["drain: generation 1"]).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_03_version_goes_live_on_quick_code_and_moves_to_optimized_code() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v1");
    let host = Host::start(&app, &["--no-watch", "--tier-up-above", "0"]);
    let loaded = host.wait_log("version loaded", Duration::from_secs(5));
    assert!(loaded.contains("baseline"), "{loaded}");
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hello v1 from 0.3\n"
    );
    host.wait_log("now on optimized code", Duration::from_secs(60));
    let answer = get(&host.addr, "/stream?chunks=2&ms=10").await.unwrap();
    assert_eq!(answer.body, "chunk 1 of 2 from v1\nchunk 2 of 2 from v1\n");
    let status = host.status_json();
    assert_eq!(status["apps"][0]["versions"][0]["tier"], "optimized");
    assert_eq!(status["apps"][0]["versions"][0]["world"], "0.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_03_requests_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello-p3.wasm");
    write_version(&app, "hello-p3", "v1");
    let mut host = Host::start(&app, &["--no-watch"]);
    let addr = host.addr.clone();
    let slow = tokio::spawn(async move { get(&addr, "/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    host.signal(libc::SIGTERM);
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.starts_with("slow v1 after 1500 ms"),
        "{}",
        answer.body
    );
    let status = host.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

/// A 0.3 component from a second toolchain: Python, by componentize-py
/// (tests/support/python-component.sh installs it from PyPI and caches
/// the build between runs). It loads as 0.3, answers, and runs several
/// slow requests at once on its instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_python_03_component_built_by_componentize_py() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/support/python-component.sh");
    let built = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        built.status.success(),
        "building the Python component failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let built = String::from_utf8(built.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("python.wasm");
    std::fs::copy(built.trim(), &app).expect("copy the component");
    let host = Host::start(&app, &["--no-watch"]);

    let hello = get(&host.addr, "/").await.unwrap();
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "hello from python\n")
    );
    assert_eq!(get(&host.addr, "/nowhere").await.unwrap().status, 404);
    let slow = staggered(&host.addr, "/slow?ms=300", 8, Duration::from_millis(10));
    for answer in slow {
        let answer = answer.await.unwrap().unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "slow done\n"));
    }
    let status = host.status_json();
    assert_eq!(status["apps"][0]["app"], "python");
    assert_eq!(status["apps"][0]["versions"][0]["world"], "0.3");
}
