//! The command line: parses arguments and calls the library. No logic of
//! its own beyond printing results and choosing exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, DEFAULT_LISTEN, ServeConfig, ServeInput, parse_duration, parse_env, parse_host_port,
    parse_size,
};
use crate::control::{self, ControlReply, ControlRequest, StatusReport};

/// Host HTTP apps compiled to WebAssembly components, and swap versions with
/// zero downtime.
#[derive(Debug, Parser)]
#[command(name = "wasm-host", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  wasm-host serve app.wasm\n  wasm-host reload\n  wasm-host status\n\nLog detail: set WASM_HOST_LOG (e.g. WASM_HOST_LOG=debug)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a wasi:http component, reloading it when the file changes; or
    /// build a crate, serve it, and rebuild and reload it on every save.
    #[command(
        after_help = "Examples:\n  wasm-host serve app.wasm\n  wasm-host serve ./my-app            (a crate: build, serve, rebuild on save)\n  wasm-host serve app.wasm --listen 0.0.0.0:3000 --drain-timeout 10s\n  wasm-host serve app.wasm --allow-http api.example.com:443 --no-watch"
    )]
    Serve(Box<ServeArgs>),
    /// Ask a running host to reload, and print the outcome.
    #[command(
        after_help = "Exits 0 when the new version is live (or the file is unchanged), 1 when the\nreload was refused; the old version keeps serving then.\n\nExamples:\n  wasm-host reload\n  wasm-host reload build/app-v2.wasm\n  wasm-host reload --control /run/wasm-host/shop.sock"
    )]
    Reload(ReloadArgs),
    /// Show the versions a running host has: live and draining.
    #[command(after_help = "Examples:\n  wasm-host status\n  wasm-host status --json")]
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The component to serve (a .wasm exporting wasi:http/incoming-handler),
    /// or the directory of a Rust crate to build with cargo for
    /// wasm32-wasip2, serve, and rebuild on every save.
    #[arg(value_name = "APP.wasm|DIR")]
    component: PathBuf,
    /// Address to accept HTTP/1.1 and HTTP/2 (h2c) connections on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Control socket for `wasm-host reload` and `status`
    /// [default: $XDG_RUNTIME_DIR/wasm-host.sock, else /tmp/wasm-host-$UID.sock].
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    /// Serve /healthz, /readyz and Prometheus /metrics on this address (off
    /// unless given). /readyz answers 503 once shutdown begins.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Do not reload when the component file changes (serving a crate: do
    /// not rebuild when its sources change).
    #[arg(long)]
    no_watch: bool,
    /// How long an old version may finish its work after a reload (and
    /// every version at shutdown) before what is left is force-ended.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How long a new version may take to instantiate before its reload is
    /// refused.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// How long one request may run, work after the response included; a
    /// request with no answer by then gets 504.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Let guests make outgoing HTTP requests to HOST:PORT (repeatable).
    /// Without it, every outgoing request is denied.
    #[arg(long = "allow-http", value_name = "HOST:PORT", value_parser = parse_host_port)]
    allow_http: Vec<String>,
    /// Give guests the environment variable NAME, with VALUE or else the
    /// value it has in the host's environment (repeatable). Guests see no
    /// other variables.
    #[arg(long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Largest linear memory one instance may grow to; a guest that needs
    /// more fails that request with 500.
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_size)]
    max_memory: usize,
    /// Directory of the on-disk compilation cache (keyed by content and
    /// engine settings), so a restarted host does not compile again
    /// [default: $XDG_CACHE_HOME/wasm-host, else ~/.cache/wasm-host].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not cache compiled code on disk.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
    /// Let one instance serve up to N requests in sequence instead of a
    /// fresh instance per request. Only for apps whose handler is safe to
    /// call repeatedly (state in globals carries over between requests).
    /// An instance that traps or times out is always discarded, and
    /// instances never cross versions.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    reuse_instances: u32,
    /// Components larger than SIZE go live on quickly compiled (Winch) code
    /// and switch to optimized (Cranelift) code, compiled in the background,
    /// once it is ready; 0 does this for every component [default: 1MiB,
    /// and 0 when serving a crate, so a save goes live sooner].
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero)]
    tier_up_above: Option<usize>,
    /// Always wait for optimized code before a version goes live.
    #[arg(long, conflicts_with = "tier_up_above")]
    no_tier_up: bool,
}

/// Like [`parse_size`], but 0 is allowed.
fn parse_size_or_zero(text: &str) -> Result<usize, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    parse_size(text)
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// Control socket of the running host
    /// [default: $XDG_RUNTIME_DIR/wasm-host.sock, else /tmp/wasm-host-$UID.sock].
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
}

impl ControlArgs {
    fn socket(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(config::default_control_path)
    }
}

#[derive(Debug, Args)]
struct ReloadArgs {
    /// Reload from this component instead of the current file; later
    /// reloads and the file watch follow it.
    #[arg(value_name = "APP.wasm")]
    component: Option<PathBuf>,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    control: ControlArgs,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let config = ServeConfig::new(ServeInput {
                component: args.component,
                listen: args.listen,
                control: args.control,
                admin: args.admin,
                watch: !args.no_watch,
                drain_timeout: args.drain_timeout,
                ready_timeout: args.ready_timeout,
                request_timeout: args.request_timeout,
                allow_http: args.allow_http,
                env: args.env,
                max_memory: args.max_memory,
                cache_dir: args.cache_dir,
                no_cache: args.no_cache,
                reuse_instances: args.reuse_instances,
                tier_up_above: args.tier_up_above,
                no_tier_up: args.no_tier_up,
            })?;
            crate::serve::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => {
            let path = match args.component {
                Some(p) => Some(
                    std::path::absolute(&p)
                        .with_context(|| format!("cannot resolve the path {}", p.display()))?,
                ),
                None => None,
            };
            let reply =
                control::send(&args.control.socket(), &ControlRequest::Reload { path }).await?;
            Ok(print_reply(reply))
        }
        Command::Status(args) => {
            let reply = control::send(&args.control.socket(), &ControlRequest::Status).await?;
            match reply {
                ControlReply::Status(report) if args.json => {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(ExitCode::SUCCESS)
                }
                other => Ok(print_reply(other)),
            }
        }
    }
}

fn print_reply(reply: ControlReply) -> ExitCode {
    match reply {
        ControlReply::Reloaded(o) if o.unchanged => {
            println!(
                "unchanged: generation {} already runs {} (sha256:{})",
                o.generation,
                o.path.display(),
                &o.digest[..12.min(o.digest.len())]
            );
            ExitCode::SUCCESS
        }
        ControlReply::Reloaded(o) => {
            let compiled = if o.cached {
                "compiled code reused".to_string()
            } else {
                format!("compiled in {} ms", o.compile_ms)
            };
            println!(
                "reloaded: generation {} is live from {} (sha256:{}, {compiled}, swapped in {:.1} ms)",
                o.generation,
                o.path.display(),
                &o.digest[..12.min(o.digest.len())],
                o.reload_us as f64 / 1000.0
            );
            ExitCode::SUCCESS
        }
        ControlReply::Failed { error } => {
            eprintln!("reload refused: {error}\nthe previous version is still serving");
            ExitCode::FAILURE
        }
        ControlReply::Status(report) => {
            print_status(&report);
            ExitCode::SUCCESS
        }
    }
}

fn print_status(report: &StatusReport) {
    println!("app {} ({})", report.app, report.path.display());
    println!(
        "{:>4}  {:<12}  {:<9}  {:>9}  {:>9}",
        "gen", "digest", "state", "in-flight", "served"
    );
    for v in &report.versions {
        println!(
            "{:>4}  {:<12}  {:<9}  {:>9}  {:>9}",
            v.generation,
            &v.digest[..12.min(v.digest.len())],
            v.state,
            v.in_flight,
            v.served
        );
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("WASM_HOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
