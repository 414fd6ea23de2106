//! systemd integration through the real binary: the test plays systemd's
//! side of `sd_notify` (a Unix datagram socket named in `NOTIFY_SOCKET`)
//! and checks what a `Type=notify-reload` unit relies on: READY=1 once the
//! host listens, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a
//! SIGHUP reload and a config apply, with STATUS= saying how it went,
//! STOPPING=1 on SIGTERM, and WATCHDOG=1 pings when WATCHDOG_USEC is set.
//! Also that SIGHUP re-reads a changed config file, as nginx's does.

mod support;

use std::path::Path;
use std::time::Duration;

use support::notify::Notify;
use support::{Host, free_addr, get, write_version};

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn status(msg: &str) -> &str {
    msg.lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or("")
}

/// A reload notification as `Type=notify-reload` wants it: RELOADING=1
/// with a monotonic timestamp.
fn assert_reloading(msg: &str) {
    assert!(has(msg, "RELOADING=1"), "{msg}");
    let usec = msg
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{msg}");
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_around_sighup_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.wasm");
    write_version(&app, "hello", "v1");
    let mut notify = Notify::bind();
    let mut host = Host::start_env(
        &app,
        &["--no-watch"],
        &[("NOTIFY_SOCKET", notify.path.as_path())],
    );
    let ready = notify.next(WAIT, |m| has(m, "READY=1"));
    // Ready means serving: the first request after it is answered.
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body.trim(),
        "hello from v1"
    );
    assert!(
        notify.seen.iter().all(|m| !has(m, "RELOADING=1")),
        "{:?} before {ready:?}",
        notify.seen
    );

    // SIGHUP on a single app: the component is read again, between
    // RELOADING=1 and READY=1.
    write_version(&app, "hello", "v2");
    host.signal(libc::SIGHUP);
    let reloading = notify.next(WAIT, |m| has(m, "RELOADING=1"));
    assert_reloading(&reloading);
    let done = notify.next(WAIT, |m| has(m, "READY=1"));
    assert!(status(&done).contains("1 app(s) reloaded"), "{done}");
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body.trim(),
        "hello from v2"
    );

    // A refused reload is still a finished reload, and STATUS says so.
    std::fs::write(&app, b"not a component").unwrap();
    host.signal(libc::SIGHUP);
    assert_reloading(&notify.next(WAIT, |m| has(m, "RELOADING=1")));
    let done = notify.next(WAIT, |m| has(m, "READY=1"));
    assert!(status(&done).contains("refused"), "{done}");
    assert_eq!(
        get(&host.addr, "/").await.unwrap().body.trim(),
        "hello from v2"
    );

    host.signal(libc::SIGTERM);
    notify.next(WAIT, |m| has(m, "STOPPING=1"));
    assert!(host.wait_exit(WAIT).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_at_half_the_interval_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.wasm");
    write_version(&app, "hello", "v1");

    let mut notify = Notify::bind();
    let _host = Host::start_env(
        &app,
        &["--no-watch"],
        &[
            ("NOTIFY_SOCKET", notify.path.as_path()),
            // 600 ms: pings every 300 ms.
            ("WATCHDOG_USEC", Path::new("600000")),
        ],
    );
    notify.next(WAIT, |m| has(m, "READY=1"));
    let pings = notify
        .drain(Duration::from_millis(1600))
        .into_iter()
        .filter(|m| has(m, "WATCHDOG=1"))
        .count();
    // About 5; fewer than 3 would let systemd's 600 ms lapse.
    assert!((3..=8).contains(&pings), "{pings} pings: {:?}", notify.seen);

    // Without WATCHDOG_USEC, no pings.
    let mut quiet = Notify::bind();
    let _host = Host::start_env(
        &app,
        &["--no-watch"],
        &[("NOTIFY_SOCKET", quiet.path.as_path())],
    );
    quiet.next(WAIT, |m| has(m, "READY=1"));
    let pings = quiet
        .drain(Duration::from_millis(800))
        .into_iter()
        .filter(|m| has(m, "WATCHDOG=1"))
        .count();
    assert_eq!(pings, 0, "{:?}", quiet.seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_a_changed_config_file() {
    let dir = tempfile::tempdir().unwrap();
    write_version(&dir.path().join("a1.wasm"), "hello", "a1");
    write_version(&dir.path().join("a2.wasm"), "hello", "a2");
    write_version(&dir.path().join("b.wasm"), "hello", "b");
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let file = dir.path().join("wasm-host.toml");
    // No config watch: only the signal may pick up the change.
    let config = |a: &str, with_b: bool| {
        let mut text = format!(
            "watch_config = false\n\n[app.a]\ncomponent = \"{a}.wasm\"\nlisten = \"{a_addr}\"\nwatch = false\n"
        );
        if with_b {
            text += &format!(
                "\n[app.b]\ncomponent = \"b.wasm\"\nlisten = \"{b_addr}\"\nwatch = false\n"
            );
        }
        text
    };
    std::fs::write(&file, config("a1", false)).unwrap();
    let mut notify = Notify::bind();
    let mut host = Host::start_config_env(&file, &[], &[("NOTIFY_SOCKET", notify.path.as_path())]);
    notify.next(WAIT, |m| has(m, "READY=1"));
    assert_eq!(
        get(&a_addr, "/").await.unwrap().body.trim(),
        "hello from a1"
    );
    assert!(
        get(&b_addr, "/").await.is_err(),
        "b serves before it is added"
    );

    // App a changes its component, app b is added: one SIGHUP does both.
    std::fs::write(&file, config("a2", true)).unwrap();
    host.signal(libc::SIGHUP);
    assert_reloading(&notify.next(WAIT, |m| has(m, "RELOADING=1")));
    let done = notify.next(WAIT, |m| has(m, "READY=1"));
    assert_eq!(status(&done), "config file applied", "{done}");
    assert_eq!(
        get(&a_addr, "/").await.unwrap().body.trim(),
        "hello from a2"
    );
    assert_eq!(get(&b_addr, "/").await.unwrap().body.trim(), "hello from b");

    // A broken file changes nothing, and STATUS says why.
    std::fs::write(&file, "[app.a]\ncomponent = 7\n").unwrap();
    host.signal(libc::SIGHUP);
    assert_reloading(&notify.next(WAIT, |m| has(m, "RELOADING=1")));
    let done = notify.next(WAIT, |m| has(m, "READY=1"));
    assert!(
        status(&done).starts_with("config file not applied"),
        "{done}"
    );
    assert_eq!(
        get(&a_addr, "/").await.unwrap().body.trim(),
        "hello from a2"
    );
    assert_eq!(get(&b_addr, "/").await.unwrap().body.trim(), "hello from b");

    host.signal(libc::SIGTERM);
    notify.next(WAIT, |m| has(m, "STOPPING=1"));
    assert!(host.wait_exit(WAIT).success());
}
