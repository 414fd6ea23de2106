//! Several hosts behind a load balancer, through the real binaries: nginx
//! on loopback in front of three `wasm-host serve` processes under steady
//! load; a rolling deploy host by host with nothing but `wasm-host reload`,
//! then one host stopped with SIGTERM and started again. The load must see
//! no error at nginx, and every answer must come from a known version.
//! Prints what it measured (the README's "Running a fleet" quotes it).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::nginx::Nginx;
use support::{H1, Host, free_addr, get, write_version};

/// Clients sending requests through nginx, each on its own connection.
const CLIENTS: usize = 8;
/// The load stops by itself after this long, whatever the test does.
const LOAD_CAP: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Tally {
    /// Answers by body.
    bodies: BTreeMap<String, u64>,
    /// Failures as the client saw them (status, or transport error).
    errors: Vec<String>,
    /// Answers from v1 to requests sent after the last host was reloaded.
    stale: u64,
}

fn write_config(file: &Path, addr: &str, component: &Path) {
    std::fs::write(
        file,
        format!(
            "watch_config = false\nlisten = \"{addr}\"\n[app.shop]\ncomponent = \"{}\"\nwatch = false\ndrain_timeout = \"10s\"\n",
            component.display()
        ),
    )
    .unwrap();
}

/// Steady load through `addr` until `stop`, or the cap.
fn spawn_load(
    addr: String,
    tally: Arc<Mutex<Tally>>,
    deployed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (addr, tally, deployed, stop) =
                (addr.clone(), tally.clone(), deployed.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_CAP {
                    let after_deploy = deployed.load(Ordering::Relaxed);
                    let outcome = match conn.as_mut() {
                        Some(c) => H1::get(c, "/").await,
                        None => match H1::connect(&addr).await {
                            Ok(c) => H1::get(conn.insert(c), "/").await,
                            Err(e) => Err(e),
                        },
                    };
                    let mut tally = tally.lock().unwrap();
                    match outcome {
                        Ok(answer) if answer.status == 200 => {
                            if after_deploy && answer.body.contains("v1") {
                                tally.stale += 1;
                            }
                            *tally.bodies.entry(answer.body).or_default() += 1;
                        }
                        Ok(answer) => tally
                            .errors
                            .push(format!("{}: {}", answer.status, answer.body)),
                        Err(e) => {
                            tally.errors.push(e);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_behind_nginx_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One code cache for the fleet, which the deploy script fills with
    // `wasm-host compile` before each reload.
    let cache = dir.path().join("cache");
    let (v1, v2) = (dir.path().join("v1.wasm"), dir.path().join("v2.wasm"));
    write_version(&v1, "hello", "v1");
    write_version(&v2, "hello", "v2");
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let files: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("host{i}.toml")))
        .collect();
    let mut hosts: Vec<Host> = addrs
        .iter()
        .zip(&files)
        .map(|(addr, file)| {
            write_config(file, addr, &v1);
            Host::start_config(file, &["--cache-dir", cache.to_str().unwrap()])
        })
        .collect();
    let nginx = Nginx::start(&addrs);
    assert_eq!(get(&nginx.addr, "/").await.unwrap().body, "hello from v1\n");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let (deployed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = spawn_load(
        nginx.addr.clone(),
        tally.clone(),
        deployed.clone(),
        stop.clone(),
    );
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The rolling deploy, one host at a time, by the operators' script
    // (nothing but `wasm-host reload`, each host checked before the next).
    let bin_dir = Path::new(support::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/rolling-deploy.sh");
    let mut deploy = std::process::Command::new("bash");
    deploy
        .arg(&script)
        .args(["shop", v2.to_str().unwrap()])
        .args(hosts.iter().map(|h| &h.control))
        .env("PATH", path)
        .env("PAUSE", "0.5")
        .env("COMPILE_ARGS", format!("--cache-dir {}", cache.display()));
    for (i, addr) in addrs.iter().enumerate() {
        deploy.env(format!("CHECK_URL_{}", i + 1), format!("http://{addr}/"));
    }
    let out = tokio::task::spawn_blocking(move || deploy.output())
        .await
        .unwrap()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_host: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("live on the new version"))
        .collect();
    assert_eq!(per_host.len(), 3, "{said}");
    // The first host's compile made the code; the others found it.
    assert_eq!(said.matches("compiled into").count(), 1, "{said}");
    assert_eq!(said.matches("was already in").count(), 2, "{said}");
    for (i, addr) in addrs.iter().enumerate() {
        assert_eq!(
            get(addr, "/").await.unwrap().body,
            "hello from v2\n",
            "host {i}"
        );
        // The config management of a real fleet would write this too, so
        // a restart comes back on the new version.
        write_config(&files[i], addr, &v2);
    }
    deployed.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One host goes away (SIGTERM: not ready, drain, exit) and comes back.
    let t = Instant::now();
    hosts[1].signal(libc::SIGTERM);
    let status = hosts[1].wait_exit(Duration::from_secs(20));
    assert!(status.success(), "host 1 exited with {status}");
    let stopped = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    hosts[1] = Host::start_config(&files[1], &["--cache-dir", cache.to_str().unwrap()]);
    let restarted = t.elapsed();
    assert_eq!(get(&addrs[1], "/").await.unwrap().body, "hello from v2\n");
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.await.unwrap();
    }
    let elapsed = began.elapsed();
    let answered: u64 = tally.lock().unwrap().bodies.values().sum();
    // nginx writes a request's log line just after sending its answer, so
    // the last few lines may trail the client by a moment.
    let settled = Instant::now() + Duration::from_secs(2);
    while (nginx.access_log().lines().count() as u64) < answered + 1 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tally = tally.lock().unwrap();
    let log = nginx.access_log();
    let nginx_lines: Vec<&str> = log.lines().collect();
    let nginx_errors = nginx_lines
        .iter()
        .filter(|l| !l.starts_with("200 "))
        .count();
    let retried = nginx_lines.iter().filter(|l| l.contains(',')).count();
    eprintln!(
        "fleet: {answered} requests through nginx in {:.1}s ({:.0}/s), {} client errors, {nginx_errors} non-200 at nginx, {retried} retried by nginx on another host; answers by version: {:?}",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64(),
        tally.errors.len(),
        tally.bodies
    );
    for line in &per_host {
        eprintln!("fleet: {line}");
    }
    eprintln!(
        "fleet: host 1 SIGTERM to exit {} ms, restart to listening {} ms",
        stopped.as_millis(),
        restarted.as_millis()
    );

    assert!(
        tally.errors.is_empty(),
        "errors: {:?}",
        &tally.errors[..tally.errors.len().min(10)]
    );
    assert_eq!(nginx_errors, 0, "nginx logged failures");
    assert!(
        answered > 500,
        "too little load to mean anything: {answered}"
    );
    assert_eq!(
        nginx_lines.len() as u64,
        answered + 1,
        "nginx saw other requests"
    );
    let known = ["hello from v1\n", "hello from v2\n"];
    assert!(
        tally.bodies.keys().all(|b| known.contains(&b.as_str())),
        "unknown answers: {:?}",
        tally.bodies
    );
    assert!(tally.bodies.contains_key(known[0]) && tally.bodies.contains_key(known[1]));
    assert_eq!(tally.stale, 0, "v1 answered after every host was on v2");
}
