//! A JavaScript app on wasm-host against the same app on Node: the
//! examples/js-app component (Hono and `@wasm-host/sdk`, built by the host
//! from its sources) against `bench/node-express/` (the same routes on
//! Express) run by PM2 in cluster mode with two workers, with the same
//! clients in the same run.
//!
//! - Build: a copy of examples/js-app gets its packages (`npm ci
//!   --ignore-scripts`) and `wasm-host serve DIR` builds and serves it, as
//!   a user would. Then, under load, its package.json version goes from
//!   1.0.0 to 2.0.0 (and a line is added to its source): the host's own
//!   rebuild loop builds and swaps the new version. The two builds' files
//!   (`.wasm-host/js-app.wasm`) are the components every later part serves.
//! - Reuse: the same copy is served once more with `--reuse-instances`, so
//!   the host builds it with `--reuse` (the bundle answers
//!   `wasi:http/incoming-handler` itself and an instance serves request
//!   after request); that component is a third server in the throughput
//!   runs.
//! - Throughput and CPU: `GET /` with keep-alive connections (`wrk -t1`
//!   when installed), `--rounds` times rotating the order; CPU per
//!   request is the servers' user plus system time (`/proc/PID/stat`: the
//!   host's process; PM2's daemon and workers) over the run divided by the
//!   requests answered.
//! - Deploying a new build under load: `--js-reloads` reloads each, under
//!   the benchmark's own keep-alive client. wasm-host takes a never-seen
//!   component every time (one of the two builds with a custom section
//!   holding a nonce, so no cache has its code), half of them precompiled
//!   first (`wasm-host compile`, the deploy recipe) and half not; each goes
//!   live with `wasm-host reload FILE`. PM2 takes `pm2 reload
//!   ecosystem.config.js` with `BUILD` bumped. Measured: the command's
//!   time, the time from the command to the first answer of the new build,
//!   and the requests that failed.
//! - Resident memory: the host's process, and PM2's daemon plus workers,
//!   at rest after the start and again after the reloads.
//!
//! This module measures and writes its section of the report; the targets
//! table reads the medians from it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::load::{self, LoadResult, LoadSpec};
use crate::pm2::{self, Pm2Cluster};
use crate::procfs;
use crate::realtime::ms;
use crate::report::{median, ratio_lines};
use crate::servers::{self, Kind, Server, Tools};

/// The server names in the report.
const HOST: &str = "wasm-host (fresh instance per request)";
const HOST_REUSE: &str = "wasm-host (built with reuse, up to 1000 requests per instance)";
/// `--reuse-instances` of the reuse server.
const REUSE_USES: &str = "1000";
const NODE: &str = "Express, PM2 cluster (2 workers)";
/// What the Node peer's `GET /` starts with, up to its build number.
const NODE_ANSWER: &str = "hello from express gen";
/// What js-app answers with, up to its version.
const HOST_ANSWER: &str = "hello from js-app ";
/// Load before each reload, and after the new build's first answer.
const REST: Duration = Duration::from_secs(1);
/// Warm-up before each measured throughput run (JIT, caches, pools).
const WARM_UP: Duration = Duration::from_secs(1);
/// The longest one reload trial may run (its load stops then).
const TRIAL_LIMIT: Duration = Duration::from_secs(120);
/// How long a version may take to get optimized code after going live.
const TIER_UP_LIMIT: Duration = Duration::from_secs(300);
/// How long the rebuild after a save may take.
const BUILD_LIMIT: Duration = Duration::from_secs(300);

/// What to run, from the command line.
pub struct Options {
    /// Length of each throughput run.
    pub duration: Duration,
    /// Concurrent client connections.
    pub connections: usize,
    /// Throughput rounds over both servers.
    pub rounds: usize,
    /// Reloads each server goes through under load.
    pub reloads: usize,
}

/// One throughput run against one server.
pub struct Run {
    /// Requests answered per second.
    pub rps: f64,
    /// Latency median, ms.
    pub p50: f64,
    /// See `p50`.
    pub p99: f64,
    /// Failed requests.
    pub errors: u64,
    /// The server processes' CPU time per answered request, µs.
    pub cpu_us: f64,
}

/// How a reload trial deployed the new build.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// `wasm-host compile`, then `wasm-host reload`.
    Precompiled,
    /// `wasm-host reload` of a component no cache has.
    Cold,
    /// `pm2 reload`.
    Pm2,
}

impl How {
    fn label(self) -> &'static str {
        match self {
            How::Precompiled => "`wasm-host compile`, then `wasm-host reload`",
            How::Cold => "`wasm-host reload`, not precompiled",
            How::Pm2 => "`pm2 reload ecosystem.config.js`, BUILD bumped",
        }
    }
}

/// One new build deployed under load.
pub struct Trial {
    /// How it was deployed.
    pub how: How,
    /// `wasm-host compile`'s time, before the load.
    pub precompile: Option<Duration>,
    /// The reload command's own time.
    pub command: Duration,
    /// From the reload command to the first answer of the new build.
    pub first_new: Option<Duration>,
    /// Requests that failed during the trial.
    pub errors: u64,
    /// Requests answered during the trial.
    pub answered: u64,
    /// p99 from the reload command to the end of the trial, ms.
    pub p99: f64,
    /// p99 of the second of load before the command, ms.
    pub p99_rest: f64,
}

impl Trial {
    /// p99 while the new build goes live over p99 just before.
    pub fn p99_ratio(&self) -> f64 {
        self.p99 / self.p99_rest.max(1e-3)
    }
}

/// One server's reloads and memory.
pub struct Side {
    /// The server.
    pub name: &'static str,
    /// Processes counted (the host; PM2's daemon and workers).
    pub processes: usize,
    /// Resident memory at rest after the start, KiB.
    pub rss_rest: u64,
    /// Resident memory after the reloads, KiB.
    pub rss_after: u64,
    /// The reloads.
    pub trials: Vec<Trial>,
}

/// The host's own build of the app.
pub struct Build {
    /// From `wasm-host serve DIR` to the first answer (the first build,
    /// and the toolchain's install if this machine had none).
    pub first: Duration,
    /// The component's size, bytes.
    pub size: u64,
    /// From the save to the first answer of the rebuilt version, under
    /// load.
    pub save_to_live: Option<Duration>,
    /// Requests that failed around the save.
    pub save_errors: u64,
    /// Requests answered around the save.
    pub save_answered: u64,
}

/// Everything this section measured.
pub struct Javascript {
    options: (usize, Duration, usize, usize, bool),
    versions: Option<pm2::Versions>,
    build: Build,
    runs: Vec<(&'static str, Vec<Run>)>,
    sides: Vec<Side>,
    notes: Vec<String>,
}

/// Flags of every wasm-host server of this section: the app's key-value
/// buckets in memory, its log in the scratch folder.
fn host_flags(tools: &Tools) -> Vec<String> {
    vec![
        "--keyvalue".into(),
        "memory".into(),
        "--log-dir".into(),
        tools.scratch.join("logs").display().to_string(),
    ]
}

/// Measures the section; the Node side is skipped (with a note) when Node
/// or its packages cannot be had.
pub fn measure(opts: &Options, tools: &Tools, repo: &Path) -> Result<Javascript> {
    let node_dir = repo.join("bench/node-express");
    let mut notes = Vec::new();
    let versions = match pm2::prepare(&node_dir, &["express"]) {
        Ok(v) => {
            println!(
                "node peer: node {}, express {}, pm2 {}",
                v.node,
                v.package("express"),
                v.pm2
            );
            Some(v)
        }
        Err(e) => {
            let note = format!("the Node peer was skipped: {e:#}");
            println!("{note}");
            notes.push(note);
            None
        }
    };
    let (build, builds) = build(tools, repo, opts.connections)?;
    let reusable = match build_for_reuse(tools) {
        Ok(path) => Some(path),
        Err(e) => {
            let note = format!("the reuse build was skipped: {e:#}");
            println!("{note}");
            notes.push(note);
            None
        }
    };

    let mut names = vec![HOST];
    if reusable.is_some() {
        names.push(HOST_REUSE);
    }
    if versions.is_some() {
        names.push(NODE);
    }
    let mut runs: Vec<(&'static str, Vec<Run>)> = names.iter().map(|n| (*n, vec![])).collect();
    for round in 0..opts.rounds {
        for i in 0..names.len() {
            // Rotate the order so no server always runs on a warmer machine.
            let at = (i + round) % names.len();
            let run = if names[at] == HOST {
                let server = host(tools, &builds[0], &[])?;
                throughput(opts, tools, server.addr, &[server.pid()])?
            } else if let (HOST_REUSE, Some(component)) = (names[at], &reusable) {
                let server = host(tools, component, &["--reuse-instances", REUSE_USES])?;
                throughput(opts, tools, server.addr, &[server.pid()])?
            } else {
                let cluster = node(tools, &node_dir)?;
                throughput(opts, tools, cluster.addr, &cluster.pids()?)?
            };
            println!(
                "round {} {:<40} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  CPU {:.0} µs/request",
                round + 1,
                names[at],
                run.rps,
                run.p50,
                run.p99,
                run.errors,
                run.cpu_us
            );
            runs[at].1.push(run);
        }
    }

    let mut sides = vec![host_reloads(opts, tools, &builds)?];
    if versions.is_some() {
        sides.push(node_reloads(opts, tools, &node_dir)?);
    }
    Ok(Javascript {
        options: (
            opts.connections,
            opts.duration,
            opts.rounds,
            opts.reloads,
            tools.wrk.is_some(),
        ),
        versions,
        build,
        runs,
        sides,
        notes,
    })
}

/// wasm-host serving `component` with `extra` flags, once its code is
/// optimized.
fn host(tools: &Tools, component: &Path, extra: &[&str]) -> Result<Server> {
    let mut flags = host_flags(tools);
    flags.extend(extra.iter().map(|f| f.to_string()));
    let server = Server::start(&Kind::WasmHost(flags), tools, component)?;
    server.wait_optimized(TIER_UP_LIMIT)?;
    Ok(server)
}

/// The PM2 cluster at build 1, its state in the scratch folder.
fn node(tools: &Tools, dir: &Path) -> Result<Pm2Cluster> {
    let home = tools.scratch.join("pm2-express");
    Pm2Cluster::start(dir, &home, servers::free_addr()?, 1, NODE_ANSWER)
}

/// Copies examples/js-app, installs its packages, and has the host build
/// it (`wasm-host serve DIR`), then build it again after a save under
/// load. Returns what that took and the two builds' components.
fn build(tools: &Tools, repo: &Path, connections: usize) -> Result<(Build, [PathBuf; 2])> {
    let app = tools.scratch.join("js-app");
    let source = repo.join("examples/js-app");
    std::fs::create_dir_all(app.join("src"))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(file), app.join(file))
            .with_context(|| format!("cannot copy examples/js-app/{file}"))?;
    }
    for entry in std::fs::read_dir(source.join("src"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), app.join("src").join(entry.file_name()))?;
    }
    println!("js-app: npm ci --ignore-scripts in {}", app.display());
    pm2::run(
        Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&app),
    )
    .context("npm ci for the copy of examples/js-app failed")?;

    println!("js-app: wasm-host serve DIR (the host builds the app)");
    let started = Instant::now();
    let server = Server::start(&Kind::WasmHostApp(host_flags(tools)), tools, &app)?;
    wait_for(
        server.addr,
        |b| b.starts_with(&format!("{HOST_ANSWER}1.0.0 ")),
        BUILD_LIMIT,
    )?;
    let first = started.elapsed();
    let built = app.join(".wasm-host/js-app.wasm");
    let v1 = tools.scratch.join("js-app-1.wasm");
    std::fs::copy(&built, &v1).with_context(|| format!("{} is missing", built.display()))?;
    let size = std::fs::metadata(&v1)?.len();
    println!(
        "js-app: first build served after {:.1} s ({:.1} MB)",
        first.as_secs_f64(),
        size as f64 / 1e6
    );

    println!("js-app: a save under load (version 1.0.0 → 2.0.0); the host rebuilds it");
    let is_new = |b: &str| b.starts_with(&format!("{HOST_ANSWER}2.0.0 "));
    let trial = under_load(server.addr, connections, BUILD_LIMIT, &is_new, || {
        save_version_2(&app)
    })?;
    println!(
        "js-app: save → first answer of the new build {}, {} failed of {}",
        ms(trial.first_new),
        trial.errors,
        trial.answered + trial.errors
    );
    let v2 = tools.scratch.join("js-app-2.wasm");
    std::fs::copy(&built, &v2)?;
    Ok((
        Build {
            first,
            size,
            save_to_live: trial.first_new,
            save_errors: trial.errors,
            save_answered: trial.answered,
        },
        [v1, v2],
    ))
}

/// Has the host build the copy of js-app (at version 2.0.0 by now) once
/// more, served with `--reuse-instances` so that it builds with `--reuse`,
/// and returns that component.
fn build_for_reuse(tools: &Tools) -> Result<PathBuf> {
    let app = tools.scratch.join("js-app");
    println!("js-app: wasm-host serve DIR --reuse-instances {REUSE_USES} (built with --reuse)");
    let mut flags = host_flags(tools);
    flags.extend(["--reuse-instances".to_string(), REUSE_USES.to_string()]);
    let server = Server::start(&Kind::WasmHostApp(flags), tools, &app)?;
    wait_for(
        server.addr,
        |b| b.starts_with(&format!("{HOST_ANSWER}2.0.0 ")),
        BUILD_LIMIT,
    )?;
    drop(server);
    let built = app.join(".wasm-host/js-app.wasm");
    let reusable = tools.scratch.join("js-app-reuse.wasm");
    std::fs::copy(&built, &reusable).with_context(|| format!("{} is missing", built.display()))?;
    Ok(reusable)
}

/// Version 2.0.0 of the copied app: package.json's version (what `GET /`
/// answers with) and a line added to its source, saved as an editor would.
fn save_version_2(app: &Path) -> Result<()> {
    let manifest = app.join("package.json");
    let text = std::fs::read_to_string(&manifest)?;
    if !text.contains("\"version\": \"1.0.0\"") {
        bail!("examples/js-app/package.json has no version 1.0.0 to bump");
    }
    std::fs::write(
        &manifest,
        text.replace("\"version\": \"1.0.0\"", "\"version\": \"2.0.0\""),
    )?;
    let index = app.join("src/index.js");
    let mut source = std::fs::read_to_string(&index)?;
    source.push_str("// version 2.0.0: saved by the benchmark\n");
    std::fs::write(&index, source)?;
    Ok(())
}

/// Warms up, then one measured run on `addr` with the CPU time of `pids`
/// read before and after.
fn throughput(opts: &Options, tools: &Tools, addr: SocketAddr, pids: &[u32]) -> Result<Run> {
    let spec = |duration| LoadSpec {
        addr,
        connections: opts.connections,
        duration,
        keep_alive: true,
        stop: None,
    };
    load::run(&spec(WARM_UP))?;
    let before = procfs::cpu_seconds(pids);
    let (summary, seconds): (crate::report::Summary, f64) = match &tools.wrk {
        Some(wrk) => (
            crate::wrk::run(
                wrk,
                &tools.scratch,
                addr,
                opts.connections,
                opts.duration,
                true,
            )?,
            // wrk runs whole seconds.
            opts.duration.as_secs().max(1) as f64,
        ),
        None => {
            let result = load::run(&spec(opts.duration))?;
            ((&result).into(), result.elapsed.as_secs_f64())
        }
    };
    let cpu = procfs::cpu_seconds(pids) - before;
    let requests = (summary.rps * seconds).max(1.0);
    Ok(Run {
        rps: summary.rps,
        p50: summary.p50,
        p99: summary.p99,
        errors: summary.errors,
        cpu_us: cpu * 1e6 / requests,
    })
}

/// Resident memory of `pids` together, KiB (a process gone counts
/// nothing).
fn rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| procfs::rss_kib(p).ok()).sum()
}

/// A short load, then a pause, so a memory reading sees a server that has
/// served and settled.
fn exercise(addr: SocketAddr) -> Result<()> {
    load::run(&LoadSpec {
        addr,
        connections: 4,
        duration: Duration::from_millis(500),
        keep_alive: true,
        stop: None,
    })?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// The generation in js-app's answer `hello from js-app V (generation N)`.
fn generation(body: &str) -> Option<u64> {
    let (_, rest) = body.rsplit_once("(generation ")?;
    rest.trim_end().strip_suffix(')')?.parse().ok()
}

/// wasm-host's reloads: never-seen builds, precompiled and not in turn.
fn host_reloads(opts: &Options, tools: &Tools, builds: &[PathBuf; 2]) -> Result<Side> {
    let server = host(tools, &builds[0], &[])?;
    let control = server.control.clone().context("no control socket")?;
    exercise(server.addr)?;
    let pids = [server.pid()];
    let rss_rest = rss(&pids);
    let bytes = [std::fs::read(&builds[0])?, std::fs::read(&builds[1])?];
    let mut trials = Vec::new();
    for k in 1..=opts.reloads {
        let how = if k % 2 == 1 {
            How::Precompiled
        } else {
            How::Cold
        };
        let file = tools.scratch.join(format!("js-app-r{k}.wasm"));
        let nonce = format!("{}-{k}", std::process::id());
        std::fs::write(
            &file,
            crate::cold::with_custom_section(&bytes[k % 2], "bench-nonce", nonce.as_bytes()),
        )?;
        let precompile = match how {
            How::Precompiled => {
                let started = Instant::now();
                pm2::run(
                    Command::new(&tools.wasm_host)
                        .arg("compile")
                        .arg(&file)
                        .arg("--cache-dir")
                        .arg(tools.cache_dir()),
                )
                .context("wasm-host compile failed")?;
                Some(started.elapsed())
            }
            _ => None,
        };
        let live = generation(&pm2::get_root(server.addr)?)
            .context("js-app's answer names no generation")?;
        let is_new = |b: &str| generation(b).is_some_and(|g| g > live);
        let mut trial = under_load(server.addr, opts.connections, TRIAL_LIMIT, &is_new, || {
            pm2::run(
                Command::new(&tools.wasm_host)
                    .arg("reload")
                    .arg(&file)
                    .arg("--control")
                    .arg(&control),
            )
            .context("wasm-host reload failed")
        })?;
        trial.how = how;
        trial.precompile = precompile;
        print_trial(HOST, k, &trial);
        trials.push(trial);
        // The next trial starts on optimized code, as this one did.
        if server
            .optimized_by(Instant::now() + TIER_UP_LIMIT)
            .is_none()
        {
            bail!("reload {k}'s version had no optimized code within {TIER_UP_LIMIT:?}");
        }
    }
    exercise(server.addr)?;
    Ok(Side {
        name: HOST,
        processes: pids.len(),
        rss_rest,
        rss_after: rss(&pids),
        trials,
    })
}

/// PM2's reloads: `pm2 reload` with BUILD bumped each time.
fn node_reloads(opts: &Options, tools: &Tools, dir: &Path) -> Result<Side> {
    let cluster = node(tools, dir)?;
    exercise(cluster.addr)?;
    let pids = cluster.pids()?;
    let rss_rest = rss(&pids);
    let mut trials = Vec::new();
    for k in 1..=opts.reloads {
        let build = 1 + k as u64;
        let is_new = |b: &str| cluster.is_build(b, build);
        let mut trial = under_load(cluster.addr, opts.connections, TRIAL_LIMIT, &is_new, || {
            cluster.reload(build)
        })?;
        trial.how = How::Pm2;
        print_trial(NODE, k, &trial);
        trials.push(trial);
    }
    exercise(cluster.addr)?;
    // The workers after the reloads are new processes.
    let after = cluster.pids()?;
    Ok(Side {
        name: NODE,
        processes: after.len(),
        rss_rest,
        rss_after: rss(&after),
        trials,
    })
}

fn print_trial(name: &str, k: usize, t: &Trial) {
    println!(
        "reload {k} {name:<40} {:<48} precompile {}  command {:.0} ms  first new answer {}  failed {} of {}  p99 {:.2} ms",
        t.how.label(),
        ms(t.precompile),
        t.command.as_secs_f64() * 1000.0,
        ms(t.first_new),
        t.errors,
        t.answered + t.errors,
        t.p99
    );
}

/// Polls `GET /` on `addr` until an answer satisfies `is_new`.
fn wait_for(addr: SocketAddr, is_new: impl Fn(&str) -> bool, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pm2::get_root(addr).is_ok_and(|b| is_new(&b)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{addr} did not answer with the new build within {limit:?}")
}

/// Keep-alive load on `addr`: [`REST`] of it, then `deploy`, then until
/// the new build answers (at most `limit`) and [`REST`] more. The trial's
/// `how` and `precompile` are left for the caller.
fn under_load(
    addr: SocketAddr,
    connections: usize,
    limit: Duration,
    is_new: &dyn Fn(&str) -> bool,
    deploy: impl FnOnce() -> Result<()>,
) -> Result<Trial> {
    let stop = Arc::new(AtomicBool::new(false));
    let spec = LoadSpec {
        addr,
        connections,
        duration: limit + REST * 3,
        keep_alive: true,
        stop: Some(stop.clone()),
    };
    std::thread::scope(|scope| {
        let loader = scope.spawn(|| load::run(&spec));
        let deployed = (|| -> Result<(Instant, Duration)> {
            std::thread::sleep(REST);
            let at = Instant::now();
            deploy()?;
            let took = at.elapsed();
            wait_for(addr, is_new, limit)?;
            std::thread::sleep(REST);
            Ok((at, took))
        })();
        // Stop the load whatever happened, so its thread ends.
        stop.store(true, Ordering::Relaxed);
        let result = loader
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
        let (at, command) = deployed?;
        let since = at.saturating_duration_since(result.started);
        let p99 = |h: hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
        Ok(Trial {
            how: How::Pm2,
            precompile: None,
            command,
            first_new: first_matching(&result, at, is_new),
            errors: result.errors,
            answered: result.ok,
            p99: p99(result.window(since, result.elapsed + load::BUCKET)),
            p99_rest: p99(result.window(Duration::ZERO, since)),
        })
    })
}

/// From `since` to the first answer at or after it whose body satisfies
/// `is_new`.
fn first_matching(
    result: &LoadResult,
    since: Instant,
    is_new: &dyn Fn(&str) -> bool,
) -> Option<Duration> {
    let start = result.answers.partition_point(|(at, _)| *at < since);
    result.answers[start..]
        .iter()
        .find(|(_, id)| result.bodies.get(*id as usize).is_some_and(|b| is_new(b)))
        .map(|(at, _)| *at - since)
}

impl Javascript {
    /// wasm-host's side and PM2's, when both were measured.
    fn pair(&self) -> Option<(&Side, &Side)> {
        match &self.sides[..] {
            [host, node] => Some((host, node)),
            _ => None,
        }
    }

    /// Median over wasm-host's trials deployed `how` of the time from the
    /// reload command to the first answer of the new build, seconds.
    pub fn first_new(&self, how: How) -> Option<f64> {
        median(
            self.trials(how)
                .filter_map(|t| t.first_new)
                .map(|d| d.as_secs_f64()),
        )
    }

    /// The trials of either server deployed `how`.
    fn trials(&self, how: How) -> impl Iterator<Item = &Trial> {
        self.sides
            .iter()
            .flat_map(|s| &s.trials)
            .filter(move |t| t.how == how)
    }

    /// Median over wasm-host's trials deployed `how` of p99 from the reload
    /// command on over p99 in the second before it.
    pub fn p99_ratio(&self, how: How) -> Option<f64> {
        median(self.trials(how).map(Trial::p99_ratio))
    }

    /// The throughput runs of the server named `name`, if it ran.
    fn runs_of(&self, name: &str) -> Option<&[Run]> {
        self.runs
            .iter()
            .find(|(n, runs)| *n == name && !runs.is_empty())
            .map(|(_, runs)| runs.as_slice())
    }

    /// Median over the rounds of wasm-host's req/s over PM2's: with a
    /// fresh instance per request, or (`reuse`) the build made for reuse.
    pub fn rps_ratio(&self, reuse: bool) -> Option<f64> {
        let host = self.runs_of(if reuse { HOST_REUSE } else { HOST })?;
        let node = self.runs_of(NODE)?;
        median(host.iter().zip(node).map(|(h, n)| h.rps / n.rps.max(1e-9)))
    }

    /// Resident memory, KiB: wasm-host's and PM2's at rest, then after the
    /// reloads.
    pub fn memory(&self) -> Option<((u64, u64), (u64, u64))> {
        let (host, node) = self.pair()?;
        Some((
            (host.rss_rest, node.rss_rest),
            (host.rss_after, node.rss_after),
        ))
    }

    /// Writes this section of the report.
    pub fn write(&self, md: &mut String) -> Result<()> {
        let (connections, duration, rounds, reloads, wrk) = self.options;
        writeln!(
            md,
            "## JavaScript: examples/js-app on wasm-host against the same app on Express under PM2 cluster mode\n"
        )?;
        writeln!(
            md,
            "Command: `cargo run --release -p wasm-host-bench -- --only javascript`\n"
        )?;
        let peer = match &self.versions {
            Some(v) => format!(
                "Node {} with Express {} in `pm2` {} cluster mode, 2 workers (bench/node-express)",
                v.node,
                v.package("express"),
                v.pm2
            ),
            None => "no Node peer (see the note)".into(),
        };
        writeln!(
            md,
            "wasm-host serves examples/js-app (Hono and `@wasm-host/sdk`): as `serve DIR` builds it, a fresh instance per request (StarlingMonkey's fetch event answers once per instance); and built with `--reuse` (the bundle answers `wasi:http/incoming-handler` itself) and served with `--reuse-instances {REUSE_USES}`. The peer is {peer}, the same routes with the state in each worker's memory. All on 127.0.0.1.\n"
        )?;

        let b = &self.build;
        writeln!(md, "### The host's build of the app\n")?;
        writeln!(md, "| | value |\n|---|---:|")?;
        writeln!(
            md,
            "| `wasm-host serve DIR` → first answer (the first build; it installs the toolchain if the machine has none) | {:.1} s |",
            b.first.as_secs_f64()
        )?;
        writeln!(md, "| component size | {:.1} MB |", b.size as f64 / 1e6)?;
        writeln!(
            md,
            "| a save (version 1.0.0 → 2.0.0) → first answer of the rebuilt version, under load ({connections} keep-alive connections) | {} |",
            ms(b.save_to_live)
        )?;
        writeln!(
            md,
            "| requests failed around that save | {} of {} |\n",
            b.save_errors,
            b.save_errors + b.save_answered
        )?;

        let client = if wrk {
            "`wrk -t1`"
        } else {
            "the benchmark's own client (one thread)"
        };
        writeln!(
            md,
            "### Throughput and CPU per request (`GET /`, {connections} keep-alive connections, {client}, {duration:?} per run, {rounds} rounds rotating the order)\n"
        )?;
        writeln!(
            md,
            "| server | req/s | p50 ms | p99 ms | errors | CPU per request, µs |\n|---|---:|---:|---:|---:|---:|"
        )?;
        for (name, runs) in &self.runs {
            if runs.is_empty() {
                continue;
            }
            let n = runs.len() as f64;
            let avg = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / n;
            writeln!(
                md,
                "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.0} |",
                avg(|r| r.rps),
                avg(|r| r.p50),
                avg(|r| r.p99),
                runs.iter().map(|r| r.errors).sum::<u64>(),
                avg(|r| r.cpu_us)
            )?;
        }
        writeln!(
            md,
            "\nCPU per request: user plus system time of the server's processes (wasm-host's one process; PM2's daemon and both workers) over the run, divided by the requests answered. The client's own CPU is not counted.\n"
        )?;
        for ours in [HOST, HOST_REUSE] {
            let (Some(host), Some(node)) = (self.runs_of(ours), self.runs_of(NODE)) else {
                continue;
            };
            let ratios = |f: fn(&Run) -> f64| -> Vec<f64> {
                host.iter()
                    .zip(node)
                    .map(|(h, n)| f(h) / f(n).max(1e-9))
                    .collect()
            };
            let measures = [
                ("req/s", ratios(|r| r.rps)),
                ("CPU per request", ratios(|r| r.cpu_us)),
                ("p99", ratios(|r| r.p99)),
            ];
            ratio_lines(md, ours, NODE, &measures)?;
        }

        writeln!(
            md,
            "### Deploying a new build under load ({reloads} reloads each, {connections} keep-alive connections)\n"
        )?;
        writeln!(
            md,
            "| server | reload | how | precompile ms | command ms | command → first answer of the new build | failed requests | answered | p99 ms, the second before the command | p99 ms, from the command on |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for side in &self.sides {
            for (n, t) in side.trials.iter().enumerate() {
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.2} | {:.2} |",
                    side.name,
                    n + 1,
                    t.how.label(),
                    t.precompile
                        .map_or("–".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0)),
                    t.command.as_secs_f64() * 1000.0,
                    ms(t.first_new),
                    t.errors,
                    t.answered,
                    t.p99_rest,
                    t.p99
                )?;
            }
        }
        writeln!(md)?;
        for how in [How::Precompiled, How::Cold, How::Pm2] {
            let trials: Vec<&Trial> = self.trials(how).collect();
            if trials.is_empty() {
                continue;
            }
            let first = median(
                trials
                    .iter()
                    .filter_map(|t| t.first_new)
                    .map(|d| d.as_secs_f64()),
            );
            let command = median(trials.iter().map(|t| t.command.as_secs_f64()));
            let p99 = median(trials.iter().map(|t| t.p99_ratio())).unwrap_or(f64::NAN);
            writeln!(
                md,
                "- {}: command → first new answer, median **{}**; the command itself, median {}; failed requests {} in all; p99 from the command on over p99 the second before, median {p99:.2}×",
                how.label(),
                ms(first.map(Duration::from_secs_f64)),
                ms(command.map(Duration::from_secs_f64)),
                trials.iter().map(|t| t.errors).sum::<u64>()
            )?;
        }
        writeln!(
            md,
            "\nEach trial: {:?} of load, the reload command, load until a poller sees the new build and {:?} more. Each wasm-host reload takes a component no cache holds (one of the two builds plus a custom section holding a nonce); the next trial waits until the host runs optimized code for it. The first answer is the first the load client got from the new build (wasm-host's answer names the generation, the peer's the BUILD). A request fails when its connection breaks or its answer is not 200.\n",
            REST, REST
        )?;

        writeln!(md, "### Resident memory\n")?;
        writeln!(
            md,
            "| server | processes | at rest after the start | after {reloads} reloads |\n|---|---:|---:|---:|"
        )?;
        for side in &self.sides {
            writeln!(
                md,
                "| {} | {} | {:.1} MiB | {:.1} MiB |",
                side.name,
                side.processes,
                side.rss_rest as f64 / 1024.0,
                side.rss_after as f64 / 1024.0
            )?;
        }
        writeln!(
            md,
            "\nRSS from /proc/PID/status, summed over the processes (PM2: its daemon and workers), after a short load and a second's pause. The RSS of processes sharing pages counts those pages in each.\n"
        )?;
        for note in &self.notes {
            writeln!(md, "> {note}\n")?;
        }
        Ok(())
    }
}
