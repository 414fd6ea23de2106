//! The admin listener through the real binary: Prometheus metrics checked
//! against known traffic and reloads, and health and readiness, readiness
//! turning 503 while the host drains at shutdown.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{Host, get, write_version};

/// Scrapes `/metrics` into sample → value, checking the text format as it
/// goes: every sample line is `name{labels} number`, and every family has
/// HELP and TYPE lines.
async fn scrape(admin: &str) -> HashMap<String, f64> {
    let answer = get(admin, "/metrics").await.unwrap();
    assert_eq!(answer.status, 200);
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in answer.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').expect("sample and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let family = sample.split('{').next().unwrap();
        assert!(
            typed.iter().any(|t| family.starts_with(t.as_str())),
            "no TYPE line before {line}"
        );
        samples.insert(sample.to_string(), value);
    }
    samples
}

/// Checks that each sample is there with its expected value.
fn expect_samples(samples: &HashMap<String, f64>, expected: &[(&str, f64)]) {
    for &(key, value) in expected {
        let found = samples
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {samples:?}"));
        assert_eq!(*found, value, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &["--no-watch", "--admin", "127.0.0.1:0"]);
    let admin = host.admin_addr();
    assert_eq!(get(&admin, "/healthz").await.unwrap().status, 200);
    assert_eq!(get(&admin, "/readyz").await.unwrap().body, "ready\n");
    assert_eq!(get(&admin, "/nope").await.unwrap().status, 404);

    for _ in 0..4 {
        assert_eq!(get(&host.addr, "/").await.unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&host.addr, "/trap").await.unwrap().status, 500);
    }
    let m = scrape(&admin).await;
    expect_samples(
        &m,
        &[
            (
                r#"wasm_host_requests_total{app="faulty",generation="1",class="2xx"}"#,
                4.0,
            ),
            (
                r#"wasm_host_requests_total{app="faulty",generation="1",class="5xx"}"#,
                2.0,
            ),
            (
                r#"wasm_host_request_duration_seconds_count{app="faulty"}"#,
                6.0,
            ),
            (
                r#"wasm_host_request_duration_seconds_bucket{app="faulty",le="+Inf"}"#,
                6.0,
            ),
            ("wasm_host_ready", 1.0),
            // The optimized engine's pool holds no instance between requests.
            (r#"wasm_host_pool_core_instances{tier="optimized"}"#, 0.0),
        ],
    );

    // One reload that works, one refused; the old version drains away.
    let v2 = dir.path().join("v2.wasm");
    write_version(&v2, "faulty", "v2");
    host.reload_ok(&v2);
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    assert!(!host.reload(Some(&garbage)).status.success());
    host.wait_log("version retired", Duration::from_secs(10));
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "faulty v2\n");

    let m = scrape(&admin).await;
    expect_samples(
        &m,
        &[
            (r#"wasm_host_reloads_total{app="faulty",outcome="ok"}"#, 1.0),
            (
                r#"wasm_host_reloads_total{app="faulty",outcome="refused"}"#,
                1.0,
            ),
            (r#"wasm_host_drains_total{app="faulty"}"#, 1.0),
            (r#"wasm_host_forced_ends_total{app="faulty"}"#, 0.0),
            (
                r#"wasm_host_requests_total{app="faulty",generation="2",class="2xx"}"#,
                1.0,
            ),
            (
                r#"wasm_host_request_duration_seconds_count{app="faulty"}"#,
                7.0,
            ),
        ],
    );
    assert!(
        m.keys().any(|k| k.starts_with("wasm_host_version_info{")
            && k.contains(r#"generation="2",state="live""#)),
        "{m:?}"
    );
    // v1 is kept compiled for a rollback, and says so.
    assert!(
        m.keys()
            .filter(|k| k.starts_with("wasm_host_version_info{") && k.contains(r#"generation="1""#))
            .all(|k| k.contains(r#"state="retired""#)),
        "v1 listed as still running: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_while_shutdown_drains() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("slow.wasm");
    write_version(&app, "slow", "v1");
    let mut host = Host::start(&app, &["--admin", "127.0.0.1:0"]);
    let admin = host.admin_addr();
    let addr = host.addr.clone();
    let slow = tokio::spawn(async move { get(&addr, "/?ms=2000").await });
    host.wait_in_flight(1).await;
    host.signal(libc::SIGTERM);
    host.wait_log("shutting down gracefully", Duration::from_secs(5));
    let readyz = get(&admin, "/readyz").await.unwrap();
    assert_eq!(
        (readyz.status, readyz.body.as_str()),
        (503, "shutting down\n")
    );
    assert_eq!(get(&admin, "/healthz").await.unwrap().status, 200);
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(host.wait_exit(Duration::from_secs(10)).success());
}
