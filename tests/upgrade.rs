//! Host binary upgrades through the real binary (`wasm-host upgrade`,
//! SIGUSR2): under load from keep-alive, fresh-connection and HTTP/2
//! clients, with slow requests and background work in flight on the old
//! process, the new process takes over the sockets with no failed request
//! and no long wait for a new connection, the slow requests and the
//! background work finish on the old process, and the apps keep their
//! generations. A new binary that cannot take over changes nothing.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::notify::Notify;
use support::{BIN, H1, H2, Host, get, notify_listener, write_version};

/// Held by each test for its whole run: the load test times waits of a
/// few milliseconds, which another test's compile on the same two cores
/// would drown.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Kills a host process the test did not start itself (the successor) when
/// the test ends, however it ends.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test learned from the host.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// The process id that follows `marker` in `text` (the upgrade's answer or
/// its log line).
fn pid_after(text: &str, marker: &str) -> u32 {
    text.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid after {marker:?} in {text:?}"))
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// A config with three apps on one listener: `hello` at `/`, `slow` at
/// `/slow`, `background` at `/bg` (which may call back to `notify`).
fn write_config(dir: &Path, notify_port: u16) -> std::path::PathBuf {
    write_version(&dir.join("hello.wasm"), "hello", "v1");
    write_version(&dir.join("slow.wasm"), "slow", "v1");
    write_version(&dir.join("background.wasm"), "background", "v1");
    let file = dir.join("wasm-host.toml");
    std::fs::write(
        &file,
        format!(
            r#"listen = "127.0.0.1:0"
[app.hello]
component = "hello.wasm"
watch = false
[app.slow]
component = "slow.wasm"
path = "/slow"
watch = false
[app.background]
component = "background.wasm"
path = "/bg"
watch = false
allow_http = ["127.0.0.1:{notify_port}"]
"#
        ),
    )
    .unwrap();
    file
}

/// A keep-alive client connection, HTTP/1.1 or HTTP/2.
enum Conn {
    H1(H1),
    H2(H2),
}

impl Conn {
    async fn open(addr: &str, http2: bool) -> Result<Conn, String> {
        Ok(if http2 {
            Conn::H2(H2::connect(addr).await?)
        } else {
            Conn::H1(H1::connect(addr).await?)
        })
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::H1(c) => c.is_open(),
            Conn::H2(c) => c.is_open(),
        }
    }

    async fn try_get(&mut self, path: &str) -> Option<Result<support::Answer, String>> {
        match self {
            Conn::H1(c) => c.try_get(path).await,
            Conn::H2(c) => c.try_get(path).await,
        }
    }
}

/// What the load clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: Mutex<Vec<String>>,
    /// Longest time from connect to a whole answer on a fresh connection,
    /// in microseconds: [0] at rest before the upgrade, [1] from the
    /// upgrade command until the old process exited, [2] after.
    longest_fresh_us: [AtomicU64; 3],
    /// Which of those phases the run is in.
    phase: std::sync::atomic::AtomicUsize,
}

impl Tally {
    fn longest(&self, phase: usize) -> Duration {
        Duration::from_micros(self.longest_fresh_us[phase].load(Ordering::Relaxed))
    }
}

/// Runs the clients until `stop` (at most 90 s): keep-alive HTTP/1.1 and
/// HTTP/2 clients reconnect when the server closes their connection
/// between requests (the clean goodbye) and count any request that was
/// sent and not answered 200 as failed.
fn start_load(
    addr: &str,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut tasks = Vec::new();
    let done = move |stop: &AtomicBool| stop.load(Ordering::Relaxed) || Instant::now() > deadline;
    let check = |tally: &Tally, what: &str, answer: Result<support::Answer, String>| match answer {
        Ok(a) if a.status == 200 && a.body.starts_with("hello from") => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(a) => tally
            .failed
            .lock()
            .unwrap()
            .push(format!("{what}: {} {}", a.status, a.body)),
        Err(e) => tally.failed.lock().unwrap().push(format!("{what}: {e}")),
    };
    for (clients, http2) in [(3, false), (2, true)] {
        for _ in 0..clients {
            let (addr, stop, tally) = (addr.to_string(), stop.clone(), tally.clone());
            let what = if http2 { "h2" } else { "keep-alive" };
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                while !done(&stop) {
                    let c = match conn.as_mut() {
                        Some(c) if c.is_open() => c,
                        _ => match Conn::open(&addr, http2).await {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                let failure = format!("{what} connect: {e}");
                                tally.failed.lock().unwrap().push(failure);
                                continue;
                            }
                        },
                    };
                    match c.try_get("/").await {
                        // Closed by the server before this request was
                        // sent: not a failure, a reconnect.
                        None => conn = None,
                        Some(answer) => check(&tally, what, answer),
                    }
                }
            }));
        }
    }
    for _ in 0..2 {
        let (addr, stop, tally) = (addr.to_string(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            while !done(&stop) {
                let began = Instant::now();
                let answer = get(&addr, "/").await;
                let took = began.elapsed().as_micros() as u64;
                let phase = tally.phase.load(Ordering::Relaxed);
                tally.longest_fresh_us[phase].fetch_max(took, Ordering::Relaxed);
                check(&tally, "fresh", answer);
            }
        }));
    }
    tasks
}

/// `status --json` of the host behind `control`.
fn status(control: &Path) -> serde_json::Value {
    let out = std::process::Command::new(BIN)
        .args(["status", "--json", "--control"])
        .arg(control)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn live_generation(status: &serde_json::Value, app: &str) -> u64 {
    let app = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app)
        .unwrap_or_else(|| panic!("no app {app} in {status}"));
    app["versions"][0]["generation"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_drops_nothing_and_keeps_generations() {
    let _serial = SERIAL.lock().await;
    let (notify_port, notified) = notify_listener();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), notify_port);
    let mut host = Host::start_config(&config, &[]);
    let old_pid = host.pid();
    // hello at generation 2, so carrying generations on is visible.
    let hello2 = dir.path().join("hello-2.wasm");
    write_version(&hello2, "hello", "v2");
    host.ctl_ok(&["reload", "hello", hello2.to_str().unwrap()]);
    assert_eq!(live_generation(&host.status_json(), "hello"), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = start_load(&host.addr, stop.clone(), tally.clone());
    // Long enough at rest to see this machine's own hiccups.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Slow requests and background work in flight on the old process.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let addr = host.addr.clone();
            tokio::spawn(async move { get(&addr, "/slow?ms=3000").await })
        })
        .collect();
    let accepted = get(
        &host.addr,
        &format!("/bg?ms=3000&notify=http://127.0.0.1:{notify_port}/done"),
    )
    .await
    .unwrap();
    assert_eq!(accepted.body, "background v1 accepted\n");
    tokio::time::sleep(Duration::from_millis(300)).await;

    tally.phase.store(1, Ordering::Relaxed);
    let began = Instant::now();
    let out = host.ctl_ok(&["upgrade"]);
    let upgrade_took = began.elapsed();
    let new_pid = pid_after(&out, "process ");
    let _reap = Reap(new_pid);
    assert_ne!(new_pid, old_pid);

    // The new process answers control requests and kept the generations.
    let now = status(&host.control);
    assert_eq!(now["host"]["pid"].as_u64(), Some(new_pid as u64), "{now}");
    assert_eq!(live_generation(&now, "hello"), 2);
    assert_eq!(live_generation(&now, "slow"), 1);

    // The slow requests finish, on the old process's version.
    for answer in slow {
        let answer = answer.await.unwrap().expect("slow request answered");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "slow v1 after 3000 ms\n")
        );
    }
    // The old process drains (its background work included) and exits.
    let exit = host.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "the old process exited with {exit}");
    let old_gone = Instant::now();
    tally.phase.store(2, Ordering::Relaxed);
    let done = notified.lock().unwrap().clone();
    let background = done
        .iter()
        .find(|(_, line)| line.contains("version=v1"))
        .unwrap_or_else(|| panic!("the background work never finished: {done:?}"));
    assert!(background.0 <= old_gone);
    assert!(alive(new_pid), "the new process must outlive the old one");

    // Load goes on against the new process alone for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let failed = tally.failed.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let (rest, during, after) = (tally.longest(0), tally.longest(1), tally.longest(2));
    eprintln!(
        "upgrade took {upgrade_took:?}; {ok} requests answered, {} failed; longest fresh connection: {rest:?} at rest, {during:?} during the upgrade and drain, {after:?} after",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert!(ok > 100, "too little load to mean anything: {ok}");
    // The bound is 100 ms. A debug build on a 2-core machine shared with
    // compiles has hiccups of its own, so a wait no longer than twice the
    // longest one at rest in the same run is that noise, not the upgrade.
    let bound = Duration::from_millis(100).max(rest * 2);
    assert!(
        during < bound,
        "a new connection waited {during:?} during the upgrade (at rest: {rest:?})"
    );

    // Generations count on in the new process.
    let hello3 = dir.path().join("hello-3.wasm");
    write_version(&hello3, "hello", "v3");
    let reloaded = std::process::Command::new(BIN)
        .args(["reload", "hello", hello3.to_str().unwrap(), "--control"])
        .arg(&host.control)
        .output()
        .unwrap();
    assert!(reloaded.status.success());
    assert_eq!(live_generation(&status(&host.control), "hello"), 3);
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_cannot_take_over_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    let script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    };
    let exits = script("exits.sh", "echo 'cannot start' >&2; exit 3");
    let hangs = script("hangs.sh", "exec sleep 60");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--binary".into(),
                dir.path().join("missing").display().to_string(),
            ],
            "No such file",
        ),
        (
            vec!["--binary".into(), plain.display().to_string()],
            "not executable",
        ),
        (
            vec!["--binary".into(), exits.display().to_string()],
            "exit status: 3",
        ),
        (
            vec![
                "--binary".into(),
                hangs.display().to_string(),
                "--wait".into(),
                "2s".into(),
            ],
            "not ready within 2s",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["upgrade"];
        all.extend(args.iter().map(String::as_str));
        let out = host.ctl(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.contains("upgrade refused"), "{args:?}: {stderr}");
        assert_eq!(
            host.status_json()["host"]["pid"].as_u64(),
            Some(host.pid() as u64)
        );
        assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    }

    // While a new binary loads, changes are held back (they would not
    // reach it), and said so.
    let waiting = {
        let (control, hangs) = (host.control.clone(), hangs.clone());
        std::thread::spawn(move || {
            std::process::Command::new(BIN)
                .args(["upgrade", "--wait", "3s", "--binary"])
                .arg(&hangs)
                .arg("--control")
                .arg(&control)
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let out = host.reload(Some(&app));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("being upgraded"), "{stderr}");
    assert!(!waiting.join().unwrap().status.success());
    host.ctl_ok(&["reload"]);

    // A canary in progress would not be carried: refused, with what to do.
    let v2 = dir.path().join("hello-2.wasm");
    write_version(&v2, "hello", "v2");
    host.ctl_ok(&["reload", v2.to_str().unwrap(), "--canary", "10"]);
    let out = host.ctl(&["upgrade"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("promote or abort it"), "{stderr}");
    host.ctl_ok(&["abort"]);

    // The real binary, but the app's file went bad since it loaded: the
    // new process says why, and the old one serves on.
    std::fs::write(&app, b"garbage").unwrap();
    let out = host.ctl(&["upgrade"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did not take over"), "{stderr}");
    assert!(stderr.contains("not a WebAssembly file"), "{stderr}");
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    assert!(host.control.exists(), "the control socket must stay");
    assert_eq!(
        host.status_json()["host"]["pid"].as_u64(),
        Some(host.pid() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_and_tells_systemd_the_new_main_pid() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v1");
    let mut notify = Notify::bind();
    let mut host = Host::start_env(&app, &["--no-watch"], &[("NOTIFY_SOCKET", &notify.path)]);
    notify.next(Duration::from_secs(10), |m| {
        m.lines().any(|l| l == "READY=1")
    });
    host.signal(libc::SIGUSR2);
    let line = host.wait_log("upgrade: the new process serves", Duration::from_secs(60));
    let new_pid = pid_after(&line, "pid=");
    let _reap = Reap(new_pid);
    let main_pid = format!("MAINPID={new_pid}");
    notify.next(Duration::from_secs(10), |m| {
        m.lines().any(|l| l == main_pid)
    });
    assert!(host.wait_exit(Duration::from_secs(30)).success());
    // The old process stopped without telling systemd the service stops.
    let late = notify.drain(Duration::from_millis(300));
    assert!(
        !notify.seen.iter().any(|m| m.contains("STOPPING=1")),
        "{late:?} / {:?}",
        notify.seen
    );
    assert_eq!(get(&host.addr, "/").await.unwrap().body, "hello from v1\n");
    assert_eq!(
        status(&host.control)["host"]["pid"].as_u64(),
        Some(new_pid as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keyvalue_state_carries_over_an_upgrade() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("counter.wasm");
    write_version(&app, "counter", "v1");
    let host = Host::start(&app, &["--no-watch"]);
    for n in 1..=5 {
        assert_eq!(get(&host.addr, "/").await.unwrap().body, format!("{n}\n"));
    }
    // Work after the response that writes to the store, in flight on the
    // old process while the new one takes over the same file.
    let later = support::send(&host.addr, "POST", "/later?key=late&ms=1500", Vec::new())
        .await
        .unwrap();
    assert_eq!(later.status, 202, "{later:?}");
    let out = host.ctl_ok(&["upgrade"]);
    let new_pid = pid_after(&out, "process ");
    let _reap = Reap(new_pid);
    // The new process waits for the old one to let go of the file, then
    // counts on.
    let sixth = get(&host.addr, "/").await.unwrap();
    assert_eq!((sixth.status, sixth.body.as_str()), (200, "6\n"));
    let late = get(&host.addr, "/kv/default/late").await.unwrap();
    assert_eq!((late.status, late.body.as_str()), (200, "v1"));
}
