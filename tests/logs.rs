//! Per-app log files through the real binary: guest output and host
//! events with their generation, `wasm-host logs` and `logs -f`, and
//! rotation by size.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{BIN, Host, get, write_version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_generations_follow_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("faulty.wasm");
    write_version(&app, "faulty", "v1");
    let host = Host::start(
        &app,
        &["--no-watch", "--log-max-size", "4KiB", "--log-keep", "2"],
    );
    assert_eq!(get(&host.addr, "/log").await.unwrap().status, 200);
    let v2 = dir.path().join("v2.wasm");
    write_version(&v2, "faulty", "v2");
    host.reload_ok(&v2);
    assert_eq!(get(&host.addr, "/log").await.unwrap().status, 200);

    let printed = host.ctl_ok(&["logs", "-n", "100"]);
    for needle in [
        "[faulty#1] faulty says hello on stdout",
        "[faulty#1] faulty says hello on stderr",
        "[faulty#2] faulty says hello on stdout",
    ] {
        assert!(printed.contains(needle), "{needle:?} missing:\n{printed}");
    }
    let live = printed
        .lines()
        .find(|l| l.contains("version live") && l.contains("generation=2"))
        .unwrap_or_else(|| panic!("no host event for generation 2:\n{printed}"));
    // Each line starts with its time.
    assert!(live.starts_with("20"), "{live}");

    // -f prints what is written after it started.
    let mut follow = Command::new(BIN)
        .args(["logs", "-f", "-n", "0", "--control"])
        .arg(&host.control)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    get(&host.addr, "/log").await.unwrap();
    let seen = rx.recv_timeout(Duration::from_secs(10));
    let _ = follow.kill();
    let _ = follow.wait();
    let seen = seen.expect("logs -f printed the new line");
    assert!(seen.contains("[faulty#2] faulty says hello"), "{seen}");

    // Rotation keeps each file under the size and a bounded number of them.
    for _ in 0..60 {
        get(&host.addr, "/log").await.unwrap();
    }
    let logs = host.log_dir();
    let current = std::fs::metadata(logs.join("faulty.log")).unwrap().len();
    assert!(current <= 4096, "faulty.log has {current} bytes");
    assert!(logs.join("faulty.log.2").exists());
    assert!(!logs.join("faulty.log.3").exists());
}
