//! Hot swaps through the real binary: reloads under load on fresh,
//! keep-alive and HTTP/2 connections; slow requests and background work
//! across a swap; refused versions; the drain deadline; SIGHUP.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{H1, H2, Host, example, get, notify_listener, stamp, wait_for_body, write_version};
use tokio::sync::Mutex;

/// What one load loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    versions: Mutex<BTreeSet<String>>,
}

impl Tally {
    async fn record(&self, kind: &str, answer: Result<support::Answer, String>) {
        match answer {
            Ok(a) if a.status == 200 && a.body.starts_with("hello from ") => {
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
async fn fifty_reloads_under_load_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v0");
    let host = Host::start(&app, &["--no-watch"]);
    let addr = host.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let fresh = Arc::new(Tally::default());
    let keepalive = Arc::new(Tally::default());
    let h2 = Arc::new(Tally::default());
    let mut loops = Vec::new();

    for _ in 0..3 {
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
    for _ in 0..4 {
        let (mut conn, stop, tally) = (shared.clone(), stop.clone(), h2.clone());
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tally.record("h2", conn.get("/").await).await;
            }
        }));
    }

    let hello = example("hello");
    let started = Instant::now();
    for n in 1..=50u64 {
        let next = dir.path().join(format!("hello-{n}.wasm"));
        std::fs::write(&next, stamp(&hello, &format!("v{n}"))).unwrap();
        let said = host.reload_ok(&next);
        assert!(said.contains(&format!("generation {}", n + 1)), "{said}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the load see the last version too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    eprintln!("50 reloads in {:?}", started.elapsed());

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
        // Routing is per request: connections opened before the reloads
        // saw many versions, the last one included.
        assert!(versions.len() >= 10, "{name}: saw only {versions:?}");
        assert!(
            versions.contains("hello from v50"),
            "{name}: never saw v50: {versions:?}"
        );
    }
    let last = get(&addr, "/").await.unwrap();
    assert_eq!(last.body, "hello from v50\n");
    // Every old version was retired.
    host.wait_log("generation=50", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.log_lines(&["version retired"]).len() < 50 {
        assert!(
            Instant::now() < deadline,
            "not all 50 old versions retired:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_started_on_v1_finishes_on_v1() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("slow.wasm");
    let v2 = dir.path().join("slow-2.wasm");
    write_version(&v1, "slow", "v1");
    write_version(&v2, "slow", "v2");
    let host = Host::start(&v1, &["--no-watch"]);

    let addr = host.addr.clone();
    let slow = tokio::spawn(async move { get(&addr, "/?ms=6000").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    host.reload_ok(&v2);

    // New requests go to v2 while v1 still works on the slow one.
    let fast = get(&host.addr, "/?ms=0").await.unwrap();
    assert_eq!(fast.body, "slow v2 after 0 ms\n");
    let report = host.status_json();
    let versions = report["apps"][0]["versions"].as_array().unwrap();
    assert_eq!(versions[0]["generation"], 2);
    assert_eq!(versions[0]["state"], "live");
    assert_eq!(versions[1]["generation"], 1);
    assert_eq!(versions[1]["state"], "draining");
    assert_eq!(versions[1]["in_flight"], 1);
    assert!(
        host.log_lines(&["version retired", "generation=1"])
            .is_empty()
    );

    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "slow v1 after 6000 ms\n");
    let retired = host.wait_log("version retired", Duration::from_secs(5));
    assert!(
        retired.contains("generation=1") && retired.contains("forced=0"),
        "{retired}"
    );
    assert!(retired.contains("requests_drained=1"), "{retired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_leaves_its_guest_the_hangup_grace() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    // Within the grace a guest nearly done finishes its work (see
    // tests/connections.rs for one stopped after it).
    let host = Host::start(&app, &["--no-watch", "--hangup-grace", "10s"]);
    let live = |host: &Host| {
        let report = host.status_json();
        let v = &report["apps"][0]["versions"][0];
        (
            v["in_flight"].as_u64().unwrap(),
            v["served"].as_u64().unwrap(),
        )
    };

    let asked = Instant::now();
    let mut client = std::net::TcpStream::connect(&host.addr).unwrap();
    client
        .write_all(b"GET /?ms=5000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nobody is there to read the answer, yet the guest works on.
    assert_eq!(live(&host), (1, 0));

    let deadline = Instant::now() + Duration::from_secs(10);
    while live(&host) != (0, 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live(&host), (0, 1), "the guest never answered");
    assert!(asked.elapsed() >= Duration::from_millis(4900));
    for end in ["guest trapped", "guest stopped"] {
        assert!(host.log_lines(&[end]).is_empty(), "{end}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_work_of_v1_finishes_before_v1_retires() {
    let (port, seen) = notify_listener();
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("background.wasm");
    let v2 = dir.path().join("background-2.wasm");
    write_version(&v1, "background", "v1");
    write_version(&v2, "background", "v2");
    let allow = format!("127.0.0.1:{port}");
    let host = Host::start(&v1, &["--no-watch", "--allow-http", &allow]);

    let asked = Instant::now();
    let answer = get(
        &host.addr,
        &format!("/?ms=5000&notify=http://127.0.0.1:{port}/done"),
    )
    .await
    .unwrap();
    assert_eq!(answer.body, "background v1 accepted\n");
    assert!(
        asked.elapsed() < Duration::from_millis(4000),
        "the response waited for the background work"
    );
    host.reload_ok(&v2);
    assert_eq!(
        get(&host.addr, "/?ms=0").await.unwrap().body,
        "background v2 accepted\n"
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
        .unwrap_or_else(|| panic!("v1's background work never finished: {notified:?}"));
    assert!(
        v1_done.0 <= retired_at,
        "v1 was retired before its background work finished"
    );
    assert!(v1_done.0.duration_since(asked) >= Duration::from_millis(4900));
    assert!(retired.contains("forced=0"), "{retired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_versions_are_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    let hello = example("hello");

    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        (
            "garbage.wasm",
            Some(b"this is not wasm at all".to_vec()),
            "not a WebAssembly file",
        ),
        (
            "core.wasm",
            Some(b"\0asm\x01\0\0\0".to_vec()),
            "core WebAssembly module, not a component",
        ),
        (
            "no-handler.wasm",
            Some(example("no-handler")),
            "does not export `wasi:http/incoming-handler",
        ),
        (
            "truncated.wasm",
            Some(hello[..hello.len() / 2].to_vec()),
            "invalid component",
        ),
        ("missing.wasm", None, "No such file"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        if let Some(bytes) = bytes {
            std::fs::write(&path, bytes).unwrap();
        }
        let out = host.reload(Some(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: reload should fail");
        assert!(
            stderr.contains(expected),
            "{name}: unexpected message: {stderr}"
        );
        assert!(stderr.contains("still serving"), "{name}: {stderr}");
        assert_eq!(
            get(&host.addr, "/").await.unwrap().body,
            "hello from v1\n",
            "{name}"
        );
        assert!(
            !host.log_lines(&["reload refused", name]).is_empty(),
            "{name}: refusal not logged"
        );
    }
    // A good version still goes through afterwards, as generation 2.
    let good = dir.path().join("good.wasm");
    std::fs::write(&good, stamp(&hello, "v2")).unwrap();
    assert!(host.reload_ok(&good).contains("generation 2"));
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v2\n");
    // The same bytes again change nothing.
    let again = host.reload_ok(&good);
    assert!(again.starts_with("unchanged: generation 2"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_forces_out_a_stuck_version() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("slow.wasm");
    let v2 = dir.path().join("slow-2.wasm");
    write_version(&v1, "slow", "v1");
    write_version(&v2, "slow", "v2");
    let host = Host::start(&v1, &["--no-watch", "--drain-timeout", "1s"]);

    let addr = host.addr.clone();
    let stuck = tokio::spawn(async move { get(&addr, "/?ms=30000").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let asked = Instant::now();
    host.reload_ok(&v2);
    // The drain clock starts at the swap, somewhere between the ask and the
    // answer (the compile in between takes longer on a busy machine).
    let swapped = Instant::now();
    assert_eq!(
        get(&host.addr, "/?ms=0").await.unwrap().body,
        "slow v2 after 0 ms\n"
    );

    let answer = stuck.await.unwrap().unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    let (most, least) = (asked.elapsed(), swapped.elapsed());
    assert!(
        most >= Duration::from_millis(900) && least < Duration::from_secs(4),
        "{most:?} since the ask, {least:?} since the answer"
    );
    let retired = host.wait_log("version retired", Duration::from_secs(5));
    assert!(
        retired.contains("generation=1") && retired.contains("forced=1"),
        "{retired}"
    );
    assert_eq!(
        get(&host.addr, "/?ms=0").await.unwrap().body,
        "slow v2 after 0 ms\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_from_the_current_path() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    write_version(&app, "hello", "v2");
    // With --no-watch, only the signal can pick the new file up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    host.signal(libc::SIGHUP);
    wait_for_body(&host.addr, "/", "hello from v2", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reload_asks_are_coalesced_and_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v0");
    let host = Host::start(&app, &["--no-watch"]);
    let hello = example("hello");
    let mut asks = Vec::new();
    for n in 1..=6 {
        let path = dir.path().join(format!("hello-{n}.wasm"));
        std::fs::write(&path, stamp(&hello, &format!("v{n}"))).unwrap();
        asks.push(
            std::process::Command::new(support::BIN)
                .arg("reload")
                .arg(&path)
                .arg("--control")
                .arg(&host.control)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut said = Vec::new();
    for ask in asks {
        let out = ask.wait_with_output().unwrap();
        assert!(out.status.success(), "an ask was refused or lost");
        said.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(
        said.iter().all(|s| s.starts_with("reloaded: generation")),
        "{said:?}"
    );
    // Whatever ran last is what serves, and it is one of the asked versions.
    let body = get(&host.addr, "/").await.unwrap().body;
    assert!(
        (1..=6).any(|n| body == format!("hello from v{n}\n")),
        "{body}"
    );
    let status = host.status_json();
    let generation = status["apps"][0]["versions"][0]["generation"].clone();
    // Its line may reach the test's log reader after the answers.
    let last = host.wait_log_where(Duration::from_secs(5), |l| {
        l.contains("version live") && l.contains(&format!("generation={generation} "))
    });
    assert!(
        last.is_some(),
        "generation {generation} never logged as live"
    );
    // Six asks while reloads run one at a time: fewer than six runs.
    let live = host.log_lines(&["version live"]);
    assert!(live.len() <= 7, "{live:?}");
    assert!(
        live.last()
            .unwrap()
            .contains(&format!("generation={generation} ")),
        "{live:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_a_recent_version_reuses_its_compiled_code() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.wasm");
    let b = dir.path().join("b.wasm");
    write_version(&a, "hello", "va");
    write_version(&b, "hello", "vb");
    let host = Host::start(&a, &["--no-watch"]);
    host.reload_ok(&b);
    assert!(host.reload_ok(&a).contains("generation 3"));
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from va\n");
    host.wait_log_where(Duration::from_secs(5), |l| {
        l.contains("version loaded") && l.contains("generation=3")
    });
    let loaded = host.log_lines(&["version loaded"]);
    assert_eq!(loaded.len(), 3, "{loaded:?}");
    assert!(loaded[0].contains("cached=false") && loaded[1].contains("cached=false"));
    assert!(
        loaded[2].contains("generation=3") && loaded[2].contains("cached=true"),
        "{loaded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_go_live_on_quick_code_and_move_to_optimized_code_unnoticed() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello.wasm");
    let v2 = dir.path().join("hello-2.wasm");
    write_version(&v1, "hello", "v1");
    write_version(&v2, "hello", "v2");
    let host = Host::start(&v1, &["--no-watch", "--tier-up-above", "0"]);
    let loaded = host.wait_log("version loaded", Duration::from_secs(5));
    assert!(
        loaded.contains("code=\"baseline\"") || loaded.contains("code=baseline"),
        "{loaded}"
    );
    host.wait_log("version optimized", Duration::from_secs(30));

    // Keep a connection busy across the reload and both swaps of v2.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = {
        let (addr, stop, tally) = (host.addr.clone(), stop.clone(), tally.clone());
        tokio::spawn(async move {
            let mut conn = H1::connect(&addr).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                tally.record("keep-alive", conn.get("/").await).await;
            }
        })
    };
    host.reload_ok(&v2);
    host.wait_log_where(Duration::from_secs(30), |l| {
        l.contains("version optimized") && l.contains("generation=2")
    })
    .expect("v2 moved to optimized code");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let failures = tally.failures.lock().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(tally.ok.load(Ordering::Relaxed) > 10);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v2\n");

    // Going back to v1 finds its optimized code in memory: no quick tier.
    host.reload_ok(&v1);
    // The reply can overtake the host's log line on its way to this test.
    host.wait_log_where(Duration::from_secs(5), |l| {
        l.contains("version loaded") && l.contains("generation=3")
    });
    let back = host.log_lines(&["version loaded", "generation=3"]);
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(
        back[0].contains("cached=true") && back[0].contains("optimized"),
        "{back:?}"
    );
}

/// The live version's tier, as `status --json` reports it.
fn live_tier(host: &Host) -> String {
    let status = host.status_json();
    let versions = status["apps"][0]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let live = versions
        .iter()
        .find(|v| v["state"] == "live")
        .unwrap_or_else(|| panic!("no live version in {status}"));
    live["tier"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_goes_live_on_optimized_code_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("hello.wasm");
    write_version(&v1, "hello", "v1");
    let cache = dir.path().join("cache");
    let args = [
        "--no-watch",
        "--tier-up-above",
        "0",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];

    let mut first = Host::start(&v1, &args);
    let loaded = first.wait_log("version loaded", Duration::from_secs(5));
    assert!(loaded.contains("baseline"), "{loaded}");
    first.wait_log("version optimized", Duration::from_secs(30));
    assert_eq!(live_tier(&first), "optimized");
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(10)).success());

    // Same bytes, same cache: no quick tier, no tier-up, straight to the
    // optimized code compiled by the first host.
    let second = Host::start(&v1, &args);
    let loaded = second.wait_log("version loaded", Duration::from_secs(5));
    assert!(loaded.contains("optimized"), "{loaded}");
    assert_eq!(live_tier(&second), "optimized");
    assert_eq!(
        get(&second.addr, "/").await.unwrap().body,
        "hello from v1\n"
    );
    assert!(second.log_lines(&["version optimized"]).is_empty());
    // One engine's code sits in one folder, a file per component.
    let engines: Vec<_> = std::fs::read_dir(cache.join("code")).unwrap().collect();
    assert_eq!(engines.len(), 1, "{engines:?}");
    let files: Vec<_> = std::fs::read_dir(engines[0].as_ref().unwrap().path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The code file and, beside it, the SHA-256 it is checked against.
    let mut files = files;
    files.sort();
    assert!(
        files.len() == 2 && files[0].ends_with(".cwasm") && files[1].ends_with(".cwasm.sha256"),
        "{files:?}"
    );

    // A damaged file is refused, removed and compiled again; the app serves.
    let mut second = second;
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(10)).success());
    let code = engines[0].as_ref().unwrap().path().join(&files[0]);
    std::fs::write(&code, b"not machine code").unwrap();
    let third = Host::start(&v1, &args);
    third.wait_log("cached code refused", Duration::from_secs(5));
    assert_eq!(get(&third.addr, "/").await.unwrap().body, "hello from v1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_gate_the_reload_and_hear_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("lifecycle.wasm");
    write_version(&v1, "lifecycle", "v1");
    let host = Host::start(
        &v1,
        &[
            "--no-watch",
            "--ready-timeout",
            "1s",
            "--env",
            "GREETING=hi",
        ],
    );
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hi: lifecycle v1 generation 1\n"
    );

    // init refusing, trapping and hanging: each refused, v1 keeps serving.
    for (version, expected) in [
        ("bad", "bad refuses to start"),
        ("trap", "failed its readiness check"),
        ("hang", "did not become ready within 1s"),
    ] {
        let path = dir.path().join(format!("{version}.wasm"));
        write_version(&path, "lifecycle", version);
        let out = host.reload(Some(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{version}: {stderr}");
        assert!(stderr.contains(expected), "{version}: {stderr}");
        assert_eq!(
            get(&host.addr, "/").await.unwrap().body,
            "hi: lifecycle v1 generation 1\n"
        );
    }

    // A good version: v1 hears drain exactly once, before it is retired.
    let v2 = dir.path().join("v2.wasm");
    write_version(&v2, "lifecycle", "v2");
    host.reload_ok(&v2);
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body,
        "hi: lifecycle v2 generation 2\n"
    );
    let (goodbye_at, _) = host
        .wait_log_where(Duration::from_secs(5), |l| {
            l.contains("drain: generation 1 of lifecycle says goodbye")
        })
        .expect("v1's drain hook ran");
    let (retired_at, _) = host
        .wait_log_where(Duration::from_secs(5), |l| {
            l.contains("version retired") && l.contains("generation=1")
        })
        .expect("v1 retired");
    assert!(goodbye_at <= retired_at);
    assert_eq!(host.log_lines(&["drain: generation 1"]).len(), 1);
    assert!(host.log_lines(&["drain: generation 2"]).is_empty());
}
