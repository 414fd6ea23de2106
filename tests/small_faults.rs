//! Smaller defects found by attacking a running host (issue 20, item 8),
//! each driven through the real binary: absurd durations, a full disk
//! under the embedded key-value store, the host's own log growing without
//! rotation, log lines forged through a file name, and one guest line
//! split over several log lines.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Host, example, get, send, write_version};

/// Runs `wasm-host ARGS…` that is expected to exit by itself; kills it
/// and fails after `timeout`.
fn run_bounded(args: &[&std::ffi::OsStr], timeout: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasm-host");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "wasm-host {args:?} still ran after {timeout:?}; it should have refused to start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn absurd_durations_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    for flag in [
        "--drain-timeout",
        "--ready-timeout",
        "--request-timeout",
        "--queue-timeout",
    ] {
        let out = run_bounded(
            &[
                "serve".as_ref(),
                app.as_os_str(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                flag.as_ref(),
                "18446744073709551615s".as_ref(),
            ],
            Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("longer than 24h"),
            "{flag}: {stderr}"
        );
    }

    // The same bound holds in the config file, with the value's line.
    let file = dir.path().join("wasm-host.toml");
    std::fs::write(
        &file,
        "[app.hello]\ncomponent = \"hello.wasm\"\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"18446744073709551615s\"\n",
    )
    .unwrap();
    let out = run_bounded(
        &["serve".as_ref(), "--config".as_ref(), file.as_os_str()],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("wasm-host.toml:4: `18446744073709551615s` is longer than 24h"),
        "{stderr}"
    );
}

/// The longest accepted drain timeout still drains (at once, when the old
/// version is idle) and reloads keep working: the deadline arithmetic does
/// not overflow at the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_drain_timeout_still_reloads_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch", "--drain-timeout", "24h"]);
    for version in ["v2", "v3"] {
        let next = dir.path().join(format!("{version}.wasm"));
        write_version(&next, "hello", version);
        host.reload_ok(&next);
        support::wait_for_body(
            &host.addr,
            "/",
            &format!("from {version}"),
            Duration::from_secs(10),
        )
        .await;
    }
    host.wait_log("version retired", Duration::from_secs(10));
    assert!(
        host.log_lines(&["panicked"]).is_empty(),
        "{}",
        host.log_text()
    );
}

/// A small tmpfs, unmounted (lazily, so a straggling open file cannot keep
/// it) when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a `size` tmpfs at `path`; `None` where this process may not
    /// mount (not root, or no mount namespace rights).
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        // Bounded: the disk is a few MiB.
        for _ in 0..1024 {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        // Whatever the last chunk left free, a byte at a time.
        for _ in 0..(64 << 10) {
            if file.write_all(&[0]).is_err() {
                break;
            }
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyvalue_writes_work_again_once_a_full_disk_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "4m") else {
        // Mounting needs root (CI runs as root); there is no other way to
        // make this very file system run out of space.
        eprintln!("cannot mount a tmpfs here; skipping the full-disk test");
        return;
    };
    let data = disk.path.join("data");
    let app = dir.path().join("counter.wasm");
    std::fs::write(&app, example("counter")).unwrap();
    let data_arg = data.to_str().unwrap();
    let host = Host::start(&app, &["--no-watch", "--data-dir", data_arg]);

    let put = |key: String, value: Vec<u8>| {
        let addr = host.addr.clone();
        async move {
            send(&addr, "PUT", &format!("/kv/default/{key}"), value)
                .await
                .map(|r| r.status)
        }
    };
    assert_eq!(put("kept".into(), b"before".to_vec()).await, Ok(204));

    let filler = disk.fill();
    // Values of fresh pages, so the store must grow into the full disk.
    let mut refused = None;
    for n in 0..20 {
        let status = put(format!("big{n}"), vec![b'x'; 256 << 10]).await.unwrap();
        if status != 204 {
            refused = Some(status);
            break;
        }
    }
    assert_eq!(
        refused,
        Some(500),
        "the full disk never failed a write:\n{}",
        host.log_text()
    );
    host.wait_log("key-value commit failed", Duration::from_secs(5));

    // Room again: writes succeed without a restart (the store reopens,
    // at most a retry interval later).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match put("after".into(), b"space is back".to_vec()).await {
            Ok(204) => break,
            other => assert!(
                Instant::now() < deadline,
                "writes still fail after space came back: {other:?}\n{}",
                host.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.wait_log("embedded key-value store reopened", Duration::from_secs(5));
    // What was acknowledged before the disk filled is still there, and
    // the counter keeps counting.
    let kept = get(&host.addr, "/kv/default/kept").await.unwrap();
    assert_eq!((kept.status, kept.body.as_str()), (200, "before"));
    let after = get(&host.addr, "/kv/default/after").await.unwrap();
    assert_eq!(after.body, "space is back");
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "1\n");
    drop(host);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_own_log_goes_to_a_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(
        &app,
        &["--no-watch", "--log-max-size", "4KiB", "--log-keep", "2"],
    );
    let logs = host.log_dir();
    // Written in the same call as the stderr line the start waited for;
    // allow a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let first = std::fs::read_to_string(logs.join("host.log")).unwrap_or_default();
        if first.contains("listening on http://") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host.log lacks the start-up lines: {first:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every trap is a host warning with a long error: enough lines to
    // rotate the file a few times over.
    for _ in 0..40 {
        assert_eq!(get(&host.addr, "/trap").await.unwrap().status, 500);
    }
    assert_eq!(get(&host.addr, "/").await.unwrap().status, 200);
    let current = std::fs::metadata(logs.join("host.log")).unwrap().len();
    assert!(current <= 4096, "host.log has {current} bytes");
    assert!(logs.join("host.log.1").exists());
    assert!(logs.join("host.log.2").exists());
    assert!(!logs.join("host.log.3").exists());
    let rotated = std::fs::read_to_string(logs.join("host.log.1")).unwrap();
    assert!(rotated.contains("guest trapped"), "{rotated}");
    // Each line starts with its time.
    assert!(rotated.lines().all(|l| l.starts_with("20")), "{rotated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_with_a_newline_forges_no_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    let forged = "2099-01-01T00:00:00.000000Z  INFO version live app=faulty generation=99";
    let path = dir.path().join(format!("x\n{forged}\r\x1b[2Kdone.wasm"));
    let out = host.reload(Some(&path));
    assert!(!out.status.success(), "a missing file reloaded");
    // The name is logged (escaped), so the check below is not vacuous.
    host.wait_log("generation=99", Duration::from_secs(10));
    let starts_forged = |text: &str| text.lines().any(|l| l.starts_with("2099-"));
    assert!(!starts_forged(&host.log_text()), "{}", host.log_text());
    assert!(
        host.log_lines(&["\x1b[2K"]).is_empty(),
        "{}",
        host.log_text()
    );
    // Nor in the files: the app's log and the host's.
    for file in ["faulty.log", "host.log"] {
        let text = std::fs::read_to_string(host.log_dir().join(file)).unwrap_or_default();
        assert!(text.contains("generation=99"), "{file}: {text}");
        assert!(!starts_forged(&text), "{file}: {text}");
    }
    // Multi-line errors (a trap's backtrace) are one line each, too.
    assert_eq!(get(&host.addr, "/trap").await.unwrap().status, 500);
    let trapped = host.wait_log("guest trapped", Duration::from_secs(10));
    assert!(trapped.contains("\\n"), "{trapped}");
    assert_eq!(get(&host.addr, "/").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_line_written_through_fresh_handles_stays_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    for _ in 0..3 {
        assert_eq!(get(&host.addr, "/split-log").await.unwrap().status, 200);
    }
    let whole = "[faulty#1] faulty writes one line in three pieces";
    host.wait_log(whole, Duration::from_secs(10));
    // Give a stray half line time to show before asserting there is none.
    assert_eq!(get(&host.addr, "/").await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(host.log_lines(&[whole]).len(), 3, "{}", host.log_text());
    assert!(
        host.log_lines(&["[faulty#1] one line"]).is_empty()
            && host.log_lines(&["[faulty#1] in three pieces"]).is_empty(),
        "{}",
        host.log_text()
    );
    let file = std::fs::read_to_string(host.log_dir().join("faulty.log")).unwrap();
    assert_eq!(file.matches(whole).count(), 3, "{file}");
}
