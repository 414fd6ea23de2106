//! `wasm-host-bench`: measures wasm-host against its peers on this machine,
//! in one run, and writes a Markdown report and an SVG chart.
//!
//! Run with `cargo run --release -p wasm-host-bench`. It builds the release
//! `wasm-host` and the example apps, then measures throughput and latency
//! (keep-alive and a new connection per request) for wasm-host, `wasmtime
//! serve` with default and tuned pooling flags (when `wasmtime` is
//! installed; `$WASMTIME` picks one), and a native hyper server, on a WASI
//! 0.2 hello and, with each server's defaults, on a WASI 0.3 one; reload
//! latency and latency during a reload storm; cold reloads of large
//! components (Rust, componentize-js and componentize-py ones) under load
//! against Winch's own compile time; resident memory after 1 and after many
//! reloads; the host's own binary upgrade against a restart, under
//! load; WebSocket messages/s and what a reload costs connected clients,
//! on the chat example against Node `ws` under PM2; and a JavaScript app
//! (examples/js-app, built by the host) against the same app on Express
//! under PM2: req/s, CPU per request, a new build's first answer under
//! load, and resident memory. The report opens with the targets
//! and whether each was met in this run.

mod cold;
mod guests;
mod javascript;
mod load;
mod native;
mod p3;
mod pm2;
mod procfs;
mod realtime;
mod report;
mod servers;
mod upgrade;
mod wrk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use load::{LoadResult, LoadSpec};
use servers::{Kind, Server, Tools};

/// Benchmark wasm-host against wasmtime serve and a native hyper server.
#[derive(Parser, Debug)]
#[command(name = "wasm-host-bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Length of each measured load run.
    #[arg(long, default_value = "5s", value_parser = wasm_host::config::parse_duration)]
    duration: Duration,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Rounds over all servers (alternating order); tables show the mean,
    /// ratios the median of the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Interval of the reload storm.
    #[arg(long, default_value = "100ms", value_parser = wasm_host::config::parse_duration)]
    reload_every: Duration,
    /// Reloads before the second memory reading.
    #[arg(long, default_value_t = 1000)]
    reloads: usize,
    /// Where to write REPORT.md and the chart.
    #[arg(long, default_value = "bench/report")]
    out: PathBuf,
    /// WebSocket clients of the realtime section.
    #[arg(long, default_value_t = 64)]
    ws_clients: usize,
    /// Messages per second per client in the realtime reload run.
    #[arg(long, default_value_t = 20)]
    ws_rate: u32,
    /// Length of the realtime reload run (longer if the reloads take long).
    #[arg(long, default_value = "10s", value_parser = wasm_host::config::parse_duration)]
    ws_reload_run: Duration,
    /// Reloads of each server in the JavaScript section.
    #[arg(long, default_value_t = 6)]
    js_reloads: usize,
    /// Run only these sections (repeatable) [default: all].
    #[arg(long, value_enum)]
    only: Vec<Section>,
}

/// A part of the benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// Requests/s against the peers, WASI 0.2 and 0.3 rows.
    Throughput,
    /// Only the WASI 0.3 rows of the throughput section.
    P3,
    /// Latency and errors during a reload storm.
    Storm,
    /// Cold reloads of large components (Rust, JavaScript and Python)
    /// under load.
    Cold,
    /// Only the Python (componentize-py, WASI 0.3) component of the cold
    /// section.
    ColdPython,
    /// Only the JavaScript (componentize-js, WASI 0.2) component of the
    /// cold section.
    ColdJs,
    /// Memory after many reloads.
    Memory,
    /// Increments/s through each key-value backend.
    Keyvalue,
    /// The host's own binary upgrade against a restart, under load.
    Upgrade,
    /// WebSocket messages/s and the cost of a reload to connected clients,
    /// on the chat example against Node `ws` under PM2 cluster mode.
    Realtime,
    /// examples/js-app on wasm-host against the same app on Express under
    /// PM2 cluster mode: req/s, CPU per request, a new build's first answer
    /// under load, resident memory.
    Javascript,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Serve the native hello server (used by the benchmark itself).
    NativeHello {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::NativeHello { listen }) = cli.command {
        return native::serve(listen);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = std::env::temp_dir().join(format!("wasm-host-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let tools = prepare(&repo, &scratch)?;
    let hello = std::fs::read(repo.join("examples/target/wasm32-wasip2/release/hello.wasm"))
        .context("hello.wasm was not built")?;
    let component = scratch.join("hello.wasm");
    std::fs::write(&component, stamp(&hello, "v1")?)?;

    let mut report = report::Report::new(
        &cli.duration,
        cli.connections,
        cli.rounds,
        tools.wrk.is_some(),
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        report.command(&format!(
            "cargo run --release -p wasm-host-bench -- {}",
            args.join(" ")
        ));
    }
    match &tools.wasmtime {
        Some(p) => {
            let version = servers::wasmtime_version(p).unwrap_or_else(|| "unknown version".into());
            println!("peer: {} ({version})", p.display());
            report.note(&format!("`wasmtime serve`: {version}, {}", p.display()));
        }
        None => {
            let note = "wasmtime not found ($WASMTIME, PATH, ~/.cache/wasmtime-cli/bin): `wasmtime serve` was skipped (install it with `cargo install wasmtime-cli --version 48.0.8`)";
            println!("{note}");
            report.note(note);
        }
    }

    let wanted = |s: Section| cli.only.is_empty() || cli.only.contains(&s);
    if wanted(Section::Throughput) {
        let list = contenders(&tools);
        throughput(
            &cli,
            &tools,
            &list,
            &component,
            report::Wasi::P2,
            &mut report,
        )?;
    }
    // `--only throughput` takes the 0.3 rows too; `--only p3` only them.
    if wanted(Section::Throughput) || wanted(Section::P3) {
        let component = p3::hello(&repo, &scratch)?;
        let list = p3::contenders(&tools);
        throughput(
            &cli,
            &tools,
            &list,
            &component,
            report::Wasi::P3,
            &mut report,
        )?;
    }
    if wanted(Section::Storm) {
        storm(&cli, &tools, &component, &hello, &mut report)?;
    }
    if wanted(Section::Cold) {
        let big = cold::Subject {
            label: "`big` (Rust, WASI 0.2)".into(),
            path: repo.join("examples/target/wasm32-wasip2/release/big.wasm"),
            baseline: component.clone(),
            traffic: "`hello` (WASI 0.2) in the first trial, then the previous trial's version; after the swap, the new version".into(),
            fresh: cold::Fresh::Stamp { prefix: "big" },
            tier_up_limit: Duration::from_secs(120),
        };
        report.cold(cold::measure(&tools, &big, cli.duration, cli.connections)?);
    }
    // `--only cold` takes the JavaScript and Python components too;
    // `--only cold-js` or `--only cold-python` only that one.
    if wanted(Section::Cold) || wanted(Section::ColdJs) {
        cold_javascript(&cli, &tools, &repo, &component, &mut report)?;
    }
    if wanted(Section::Cold) || wanted(Section::ColdPython) {
        cold_python(&cli, &tools, &repo, &scratch, &mut report)?;
    }
    if wanted(Section::Memory) {
        memory(&cli, &tools, &component, &hello, &mut report)?;
    }
    if wanted(Section::Keyvalue) {
        let counter = repo.join("examples/target/wasm32-wasip2/release/counter.wasm");
        keyvalue(&cli, &tools, &counter, &mut report)?;
    }

    if wanted(Section::Upgrade) {
        let changes = upgrade::measure(&tools, &component, cli.duration, cli.connections / 2)?;
        report.upgrade(changes);
    }

    if wanted(Section::Realtime) {
        let chat = std::fs::read(repo.join("examples/target/wasm32-wasip2/release/chat.wasm"))
            .context("chat.wasm was not built")?;
        let options = realtime::Options {
            clients: cli.ws_clients,
            duration: cli.duration,
            rounds: cli.rounds,
            rate: cli.ws_rate,
            run: cli.ws_reload_run,
        };
        report.realtime(realtime::measure(&options, &tools, &repo, &chat)?);
    }

    if wanted(Section::Javascript) {
        let options = javascript::Options {
            duration: cli.duration,
            connections: cli.connections,
            rounds: cli.rounds,
            reloads: cli.js_reloads,
        };
        report.javascript(javascript::measure(&options, &tools, &repo)?);
    }

    std::fs::create_dir_all(&cli.out)?;
    report.write(&cli.out)?;
    println!(
        "\nreport written to {}",
        cli.out.join("REPORT.md").display()
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Builds the release host and the examples; finds the peers.
fn prepare(repo: &Path, scratch: &Path) -> Result<Tools> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args([
            "build",
            "--release",
            "-p",
            "wasm-host",
            "--bin",
            "wasm-host",
        ])
        .current_dir(repo);
    // `cargo run` gives this process the variables it gives any package
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...). Some build scripts (ring's)
    // rerun when those change, so passing them on would rebuild ring and all
    // above it, wasmtime's HTTP crate and the LTO link included, on every
    // switch between this and a plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build.status()?;
    if !status.success() {
        bail!("building the release wasm-host failed");
    }
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(repo.join("examples/Cargo.toml"))
        .args(["--workspace"])
        .arg("--target-dir")
        .arg(repo.join("examples/target"))
        .status()?;
    if !status.success() {
        bail!("building the example apps failed");
    }
    let bench = std::env::current_exe()?;
    let wasm_host = bench.with_file_name("wasm-host");
    if !wasm_host.is_file() {
        bail!("{} is missing after the build", wasm_host.display());
    }
    Ok(Tools {
        wasm_host,
        wasmtime: servers::find_wasmtime(),
        wrk: servers::on_path("wrk"),
        bench,
        scratch: scratch.to_path_buf(),
    })
}

fn stamp(component: &[u8], version: &str) -> Result<Vec<u8>> {
    stamp::restamp(component, version).context("hello.wasm carries no version stamp")
}

/// The servers to compare, by name. The instance-reuse modes are listed
/// apart: they give up a fresh instance per request.
fn contenders(tools: &Tools) -> Vec<(&'static str, Kind)> {
    let tuned = || servers::WASMTIME_TUNED.iter().map(|s| s.to_string());
    let mut list = vec![("wasm-host", Kind::WasmHost(vec![]))];
    if tools.wasmtime.is_some() {
        list.push(("wasmtime serve (defaults)", Kind::Wasmtime(vec![])));
        list.push(("wasmtime serve (tuned)", Kind::Wasmtime(tuned().collect())));
    }
    list.push(("native hyper (ceiling)", Kind::Native));
    list.push((
        "wasm-host, instance reuse",
        Kind::WasmHost(vec!["--reuse-instances".into(), "1000".into()]),
    ));
    if tools.wasmtime.is_some() {
        let mut reuse: Vec<String> = tuned().collect();
        reuse.extend(["--max-instance-reuse-count".into(), "1000".into()]);
        list.push((
            "wasmtime serve (tuned), instance reuse",
            Kind::Wasmtime(reuse),
        ));
    }
    list
}

/// Every server of `list` serving `component` in each round, recorded in
/// the report's `wasi` group.
fn throughput(
    cli: &Cli,
    tools: &Tools,
    list: &[(&'static str, Kind)],
    component: &Path,
    wasi: report::Wasi,
    report: &mut report::Report,
) -> Result<()> {
    for round in 0..cli.rounds {
        for i in 0..list.len() {
            // Alternate the order so no server always runs on a warmer machine.
            let (name, kind) = &list[(i + round) % list.len()];
            let server = Server::start(kind, tools, component)?;
            let spec = |keep_alive, duration| LoadSpec {
                addr: server.addr,
                connections: cli.connections,
                duration,
                keep_alive,
                stop: None,
            };
            load::run(&spec(true, Duration::from_secs(1)))?;
            for keep_alive in [true, false] {
                let result: report::Summary = match &tools.wrk {
                    Some(wrk) => wrk::run(
                        wrk,
                        &tools.scratch,
                        server.addr,
                        cli.connections,
                        cli.duration,
                        keep_alive,
                    )?,
                    None => (&load::run(&spec(keep_alive, cli.duration))?).into(),
                };
                println!(
                    "round {} {:<4} {name:<28} {:<10} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                    round + 1,
                    wasi.label(),
                    if keep_alive { "keep-alive" } else { "new-conn" },
                    result.rps,
                    result.p50,
                    result.p99,
                    result.errors
                );
                report.throughput(wasi, name, keep_alive, result);
            }
        }
    }
    Ok(())
}

/// `result`'s value, or `None` with a note in the report (and on stdout)
/// that `subject` was skipped and why.
fn or_skipped<T>(subject: &str, result: Result<T>, report: &mut report::Report) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let note = format!("{subject} was skipped: {e:#}");
            println!("{note}");
            report.note(&note);
            None
        }
    }
}

/// Cold reloads of the componentize-js component on a host serving the
/// 0.2 hello; skipped, with a note, where the component cannot be built.
fn cold_javascript(
    cli: &Cli,
    tools: &Tools,
    repo: &Path,
    hello: &Path,
    report: &mut report::Report,
) -> Result<()> {
    let Some(js) = or_skipped("The JavaScript component", guests::javascript(repo), report) else {
        return Ok(());
    };
    let subject = cold::Subject {
        label: "`js-hello` (componentize-js, WASI 0.2)".into(),
        path: js,
        baseline: hello.to_path_buf(),
        traffic: "`hello` (WASI 0.2), live again before each trial; after the swap, the JavaScript app itself, so the last columns include its own slower answers".into(),
        fresh: cold::Fresh::Nonce {
            answer: format!("hello from js {}", guests::JS_VERSION),
        },
        tier_up_limit: Duration::from_secs(300),
    };
    report.cold(cold::measure(
        tools,
        &subject,
        cli.duration,
        cli.connections,
    )?);
    Ok(())
}

/// Cold reloads of the componentize-py component on a host serving the
/// 0.3 hello; skipped, with a note, where the component cannot be built.
fn cold_python(
    cli: &Cli,
    tools: &Tools,
    repo: &Path,
    scratch: &Path,
    report: &mut report::Report,
) -> Result<()> {
    let Some(python) = or_skipped("The Python component", guests::python(repo), report) else {
        return Ok(());
    };
    let baseline = p3::hello(repo, scratch)?;
    let subject = cold::Subject {
        label: "`python-p3` (componentize-py, WASI 0.3)".into(),
        path: python,
        baseline,
        traffic: "`hello-p3-plain` (WASI 0.3), live again before each trial; after the swap, the Python app itself, so the last columns include its own slower answers".into(),
        fresh: cold::Fresh::Nonce {
            answer: "hello from python".into(),
        },
        // Its optimized code takes much longer than the Rust one's.
        tier_up_limit: Duration::from_secs(300),
    };
    report.cold(cold::measure(
        tools,
        &subject,
        cli.duration,
        cli.connections,
    )?);
    Ok(())
}

/// Load at rest, then the same load with a reload every `--reload-every`.
fn storm(
    cli: &Cli,
    tools: &Tools,
    component: &Path,
    hello: &[u8],
    report: &mut report::Report,
) -> Result<()> {
    let server = Server::start(&Kind::WasmHost(vec![]), tools, component)?;
    // Three versions taken in turn, compiled once up front, so the storm
    // measures the swap itself (the host keeps recent versions linked).
    let mut cycle = Vec::new();
    for n in 0..3 {
        let path = tools.scratch.join(format!("storm-{n}.wasm"));
        std::fs::write(&path, stamp(hello, &format!("s{n}"))?)?;
        server.reload(&path)?;
        cycle.push((format!("hello from s{n}"), path));
    }
    server.reload(component)?;
    let count = (cli.duration.as_millis() / cli.reload_every.as_millis()) as usize;
    let versions: Vec<_> = cycle.iter().cycle().take(count).cloned().collect();

    let spec = LoadSpec {
        addr: server.addr,
        connections: cli.connections,
        duration: cli.duration * 2,
        keep_alive: true,
        stop: None,
    };
    let reloads = std::thread::scope(|scope| -> Result<_> {
        let loader = scope.spawn(|| load::run(&spec));
        std::thread::sleep(cli.duration);
        let mut sent = Vec::new();
        for (body, path) in &versions {
            let at = Instant::now();
            let outcome = server.reload(path)?;
            sent.push((body.clone(), at, Duration::from_micros(outcome.reload_us)));
            std::thread::sleep(cli.reload_every.saturating_sub(at.elapsed()));
        }
        let result = loader
            .join()
            .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        Ok((result, sent))
    })?;
    let (result, sent) = reloads;
    let latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(body, at, _)| {
            result
                .first_answer(body, *at)
                .map(|seen| seen.saturating_duration_since(*at))
        })
        .collect();
    let commands: Vec<Duration> = sent.iter().map(|(_, _, took)| *took).collect();

    // Cold reloads: versions the host has never compiled.
    let mut cold = Vec::new();
    let mut cold_paths = Vec::new();
    for n in 0..5 {
        let path = tools.scratch.join(format!("cold-{n}.wasm"));
        std::fs::write(&path, stamp(hello, &format!("c{n}"))?)?;
        cold.push(Duration::from_micros(server.reload(&path)?.reload_us));
        cold_paths.push(path);
    }
    // The same five again, in order: each has just fallen out of the
    // in-memory cache, so its code comes from the on-disk cache.
    let mut disk = Vec::new();
    for path in &cold_paths {
        let outcome = server.reload(path)?;
        if !outcome.cached {
            disk.push(Duration::from_micros(outcome.reload_us));
        }
    }
    report.storm(
        &result,
        cli.duration,
        &latencies,
        &commands,
        &cold,
        &disk,
        sent.len(),
        &sent_offsets(&result, &sent),
    );
    Ok(())
}

fn sent_offsets(result: &LoadResult, sent: &[(String, Instant, Duration)]) -> Vec<Duration> {
    sent.iter()
        .map(|(_, at, _)| at.saturating_duration_since(result.started))
        .collect()
}

/// Resident memory after one reload and after `--reloads` reloads.
fn memory(
    cli: &Cli,
    tools: &Tools,
    component: &Path,
    hello: &[u8],
    report: &mut report::Report,
) -> Result<()> {
    let server = Server::start(&Kind::WasmHost(vec![]), tools, component)?;
    let other = tools.scratch.join("memory-b.wasm");
    std::fs::write(&other, stamp(hello, "vb")?)?;
    let exercise = || {
        load::run(&LoadSpec {
            addr: server.addr,
            connections: 4,
            duration: Duration::from_millis(500),
            keep_alive: true,
            stop: None,
        })
    };
    server.reload(&other)?;
    exercise()?;
    std::thread::sleep(Duration::from_millis(300));
    let after_one = server.rss_kib()?;
    let started = Instant::now();
    for n in 0..cli.reloads {
        server.reload(if n % 2 == 0 { component } else { &other })?;
        if n % 100 == 99 {
            exercise()?;
        }
    }
    let took = started.elapsed();
    exercise()?;
    std::thread::sleep(Duration::from_millis(300));
    let after_many = server.rss_kib()?;
    println!(
        "memory: {after_one} KiB after 1 reload, {after_many} KiB after {} more ({:.2}x); {} reloads took {:?}",
        cli.reloads,
        after_many as f64 / after_one as f64,
        cli.reloads,
        took
    );
    report.memory(after_one, after_many, cli.reloads, took);
    Ok(())
}

/// Increments per second through the `counter` example on each key-value
/// backend (Redis if `redis-server` is installed), and the count the store
/// holds afterwards, which must equal the increments answered.
fn keyvalue(cli: &Cli, tools: &Tools, counter: &Path, report: &mut report::Report) -> Result<()> {
    let redis = or_skipped("Redis", servers::RedisServer::start(&tools.scratch), report);
    let mut backends = vec![
        ("embedded", "embedded".to_string()),
        ("memory", "memory".to_string()),
    ];
    if let Some(redis) = &redis {
        backends.push(("redis", redis.url.clone()));
    }
    for (name, store) in backends {
        let data = tools.scratch.join(format!("data-{name}"));
        let flags = vec![
            "--keyvalue".to_string(),
            store,
            "--data-dir".to_string(),
            data.display().to_string(),
        ];
        let server = Server::start(&Kind::WasmHost(flags), tools, counter)?;
        let result = load::run(&LoadSpec {
            addr: server.addr,
            connections: cli.connections,
            duration: cli.duration,
            keep_alive: true,
            stop: None,
        })?;
        let stored = fetch_count(server.addr)?;
        println!(
            "keyvalue {name:<9} {:>9.0} increments/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  answered {}  stored {stored}",
            result.rps(),
            result.ms(0.5),
            result.ms(0.99),
            result.errors,
            result.ok
        );
        report.keyvalue(report::KvRun {
            backend: name.to_string(),
            rps: result.rps(),
            p50: result.ms(0.5),
            p99: result.ms(0.99),
            errors: result.errors,
            answered: result.ok,
            stored,
        });
    }
    Ok(())
}

/// The counter's stored count, from `GET /count`.
fn fetch_count(addr: std::net::SocketAddr) -> Result<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /count HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let body = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
    body.trim()
        .parse()
        .with_context(|| format!("GET /count answered {answer:?}"))
}
