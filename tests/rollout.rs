//! Gradual rollout and rollback through the real binary: a canary's share
//! over 1000 requests, sticky keys, the pin header, promote, abort, the
//! automatic abort on 5xx, and a rollback that needs no compile.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use support::{Host, get, send_with, write_version};

/// Starts a host on hello v1 and writes hello v2 beside it.
fn hello_pair(dir: &Path) -> (Host, std::path::PathBuf) {
    let v1 = dir.join("v1.wasm");
    let v2 = dir.join("v2.wasm");
    write_version(&v1, "hello", "v1");
    write_version(&v2, "hello", "v2");
    (Host::start(&v1, &["--no-watch"]), v2)
}

/// The body of `GET /` with `headers`, which must be a 200.
async fn body_with(host: &Host, headers: &[(&str, &str)]) -> String {
    let reply = send_with(&host.addr, "GET", "/", headers, Vec::new())
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    String::from_utf8_lossy(&reply.body).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_takes_its_share_then_promote_makes_it_live() {
    let dir = tempfile::tempdir().unwrap();
    let (host, v2) = hello_pair(dir.path());
    let said = host.ctl_ok(&["reload", v2.to_str().unwrap(), "--canary", "10"]);
    assert!(said.contains("generation 2 is canary"), "{said}");

    let mut seen = BTreeMap::<String, u32>::new();
    for _ in 0..1000 {
        *seen.entry(body_with(&host, &[]).await).or_default() += 1;
    }
    let canary = seen.get("hello from v2").copied().unwrap_or(0);
    let live = seen.get("hello from v1").copied().unwrap_or(0);
    assert_eq!(canary + live, 1000, "{seen:?}");
    assert!(
        (90..=110).contains(&canary),
        "10% canary took {canary} of 1000"
    );

    let status = host.status_json();
    let app = &status["apps"][0];
    assert_eq!(app["canary_percent"], 10.0);
    let states: Vec<_> = app["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["generation"].as_u64().unwrap(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(states, [(1, "live".into()), (2, "canary".into())]);
    assert_eq!(app["versions"][1]["served"].as_u64(), Some(canary as u64));

    // A plain reload while a canary runs is refused, and says what to do.
    let refused = host.reload(Some(&v2));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("promote"),
        "{refused:?}"
    );

    let said = host.ctl_ok(&["promote"]);
    assert!(said.contains("generation 2 is live"), "{said}");
    for _ in 0..50 {
        assert_eq!(body_with(&host, &[]).await, "hello from v2");
    }
    assert!(!host.ctl(&["promote"]).status.success(), "no canary left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_on_one_version_and_abort_returns_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let (host, v2) = hello_pair(dir.path());
    host.ctl_ok(&["reload", v2.to_str().unwrap(), "--canary", "50"]);

    let mut by_key = BTreeMap::<String, BTreeSet<String>>::new();
    for round in 0..10 {
        for user in 0..20 {
            let key = format!("user-{user}");
            let body = body_with(&host, &[("x-wasm-host-key", &key)]).await;
            by_key.entry(key).or_default().insert(body);
            // Unkeyed requests in between must not move keyed ones.
            if round % 3 == 0 {
                body_with(&host, &[]).await;
            }
        }
    }
    assert!(by_key.values().all(|seen| seen.len() == 1), "{by_key:?}");
    let on_canary = by_key
        .values()
        .filter(|seen| seen.contains("hello from v2"))
        .count();
    assert!(
        (1..20).contains(&on_canary),
        "50% split put {on_canary} of 20 users on the canary"
    );

    let said = host.ctl_ok(&["abort"]);
    assert!(said.contains("generation 2 drains"), "{said}");
    for user in 0..20 {
        let key = format!("user-{user}");
        assert_eq!(
            body_with(&host, &[("x-wasm-host-key", &key)]).await,
            "hello from v1"
        );
    }
    host.wait_log("canary aborted", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_header_reaches_a_canary_at_zero_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (host, v2) = hello_pair(dir.path());
    host.ctl_ok(&["reload", v2.to_str().unwrap(), "--canary", "0"]);

    for _ in 0..100 {
        assert_eq!(body_with(&host, &[]).await, "hello from v1");
    }
    let pin = "x-wasm-host-generation";
    assert_eq!(body_with(&host, &[(pin, "2")]).await, "hello from v2");
    assert_eq!(body_with(&host, &[(pin, "1")]).await, "hello from v1");

    for (value, needle) in [("9", "generation 9"), ("two", "`two` is not a generation")] {
        let reply = send_with(&host.addr, "GET", "/", &[(pin, value)], Vec::new())
            .await
            .unwrap();
        assert_eq!(reply.status, 421, "{reply:?}");
        assert!(
            String::from_utf8_lossy(&reply.body).contains(needle),
            "{reply:?}"
        );
    }

    // The same file again with another share: a ramp-up, no new version.
    let said = host.ctl_ok(&["reload", v2.to_str().unwrap(), "--canary", "100"]);
    assert!(said.contains("generation 2 keeps running"), "{said}");
    for _ in 0..20 {
        assert_eq!(body_with(&host, &[]).await, "hello from v2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.wasm");
    let broken = dir.path().join("faulty.wasm");
    write_version(&v1, "hello", "v1");
    write_version(&broken, "faulty", "v2");
    let host = Host::start(&v1, &["--no-watch"]);
    host.ctl_ok(&[
        "reload",
        broken.to_str().unwrap(),
        "--canary",
        "50",
        "--abort-above",
        "20",
        "--abort-window",
        "10s",
        "--abort-min-requests",
        "10",
    ]);

    // faulty traps on /trap: half of these requests fail until the abort.
    let mut failed = 0;
    for _ in 0..200 {
        let answer = get(&host.addr, "/trap").await.unwrap();
        if answer.status == 500 {
            failed += 1;
        } else {
            assert_eq!(answer.body, "hello from v1\n");
        }
        if host
            .wait_log_where(Duration::ZERO, |l| l.contains("canary aborted"))
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let line = host.wait_log("canary aborted", Duration::from_secs(5));
    assert!(line.contains("automatic"), "{line}");
    assert!(failed >= 10, "the canary failed {failed} requests");
    for _ in 0..50 {
        let answer = get(&host.addr, "/trap").await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "hello from v1\n")
        );
    }
    let status = host.status_json();
    assert!(status["apps"][0]["canary_percent"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_brings_back_the_kept_version_without_reading_or_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch"]);

    let refused = host.ctl(&["rollback"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no previous version"),
        "{refused:?}"
    );

    write_version(&app, "hello", "v2");
    host.reload_ok(&app);
    assert_eq!(body_with(&host, &[]).await, "hello from v2");
    // The file is garbage now: a rollback must not need it.
    std::fs::write(&app, b"not wasm at all").unwrap();

    let said = host.ctl_ok(&["rollback"]);
    assert!(
        said.contains("generation 3 is live, running the code of generation 1"),
        "{said}"
    );
    for _ in 0..20 {
        assert_eq!(body_with(&host, &[]).await, "hello from v1");
    }
    assert!(
        host.log_lines(&["version loaded", "generation=3"])
            .is_empty(),
        "a rollback compiled:\n{}",
        host.log_text()
    );

    // Rolling back again returns to v2: the pair toggles.
    let said = host.ctl_ok(&["rollback"]);
    assert!(said.contains("code of generation 2"), "{said}");
    assert_eq!(body_with(&host, &[]).await, "hello from v2");
    let versions = host.status_json()["apps"][0]["versions"].clone();
    assert_eq!(versions[0]["generation"], 4);
    assert_eq!(versions[0]["state"], "live");
}
