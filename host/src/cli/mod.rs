//! The command line: parses arguments and calls the library. No logic of
//! its own beyond printing results and choosing exit codes.

pub mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::app::limits::Limits;
use crate::app::rollout::{AbortRule, CanaryPlan, DEFAULT_STICKY_HEADER};
use crate::config::file::Overrides;
use crate::config::{
    self, DEFAULT_LISTEN, ServeConfig, ServeInput, parse_duration, parse_env, parse_host_port,
    parse_size,
};
use crate::control::handoff::{Passed, Successor};
use crate::control::socket::{self, Applied, ControlReply, ControlRequest, StatusReport};
use crate::hosting::activation::Inherited;
use crate::hosting::connection::ConnectionLimits;
use crate::kv::StoreChoice;
use crate::oci::Reference;
use crate::ops::log_format::{self, EscapedFields, HostFile, JsonLines, LogFormat};
use crate::ops::logfile::{self, ACCESS_TARGET, LogSettings};
use crate::realtime::Limits as RealtimeLimits;
use crate::runtime::engine::Runtime;

/// Host HTTP apps compiled to WebAssembly components, and swap versions with
/// zero downtime.
#[derive(Debug, Parser)]
#[command(name = "wasm-host", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  wasm-host serve app.wasm\n  wasm-host reload\n  wasm-host reload new.wasm --canary 10\n  wasm-host promote\n  wasm-host rollback\n  wasm-host status\n\nLog detail: set WASM_HOST_LOG (e.g. WASM_HOST_LOG=debug)."
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
    /// Ask a running host to reload (or to start a canary), and print the
    /// outcome.
    #[command(
        after_help = "Exits 0 when the new version is live (or the file is unchanged), 1 when the\nreload was refused; the old version keeps serving then.\n\nExamples:\n  wasm-host reload\n  wasm-host reload build/app-v2.wasm\n  wasm-host reload shop build/shop-v2.wasm --canary 10 --abort-above 5\n  wasm-host reload --control /run/wasm-host/shop.sock"
    )]
    Reload(ReloadArgs),
    /// Make the running canary live; the old live version drains.
    Promote(AppArgs),
    /// Drop the running canary; the live version takes every request again.
    Abort(AppArgs),
    /// Bring back the version the last reload or promote replaced, from
    /// its kept compiled code (no recompile); it runs as a new generation.
    Rollback(AppArgs),
    /// Print the log of one app (or all): guest output and host events,
    /// with time and generation; -f keeps following.
    #[command(
        after_help = "Examples:\n  wasm-host logs\n  wasm-host logs shop -f\n  wasm-host logs -n 200"
    )]
    Logs(LogsArgs),
    /// Show what a running host runs: versions by state, requests, memory.
    #[command(after_help = "Examples:\n  wasm-host status\n  wasm-host status shop --json")]
    Status(StatusArgs),
    /// Replace the running host's own binary without a gap: the new binary
    /// takes over the sockets and the apps (same generations), then the old
    /// process drains and exits. SIGUSR2 does the same.
    #[command(
        after_help = "Exits 0 once the new process serves, 1 when it could not take over; the old\nprocess keeps serving then.\n\nExamples:\n  wasm-host upgrade                      (the binary at the path the host was started from)\n  wasm-host upgrade --binary /opt/wasm-host/2.0/wasm-host"
    )]
    Upgrade(UpgradeArgs),
    /// Compile a component into the on-disk code cache ahead of a deploy,
    /// so the reload that follows skips the compile (and a component that
    /// would not load is caught now).
    #[command(
        after_help = "Use the same --cache-dir and --max-memory as the host that will serve it.\n\nExamples:\n  wasm-host compile build/app.wasm && wasm-host reload build/app.wasm\n  wasm-host compile app.wasm --cache-dir /var/cache/wasm-host"
    )]
    Compile(CompileArgs),
}

#[derive(Debug, Args)]
struct CompileArgs {
    /// The component to compile.
    #[arg(value_name = "APP.wasm")]
    component: PathBuf,
    /// The code cache to fill [default: $XDG_CACHE_HOME/wasm-host, else
    /// ~/.cache/wasm-host], as `serve --cache-dir`.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// As `serve --max-memory`: the code depends on it.
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_size)]
    max_memory: usize,
}

#[derive(Debug, Args)]
struct UpgradeArgs {
    /// The new binary [default: the path the running host was started
    /// from, where a deploy has put the new one].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// How long the new binary may take to load every app before the
    /// upgrade is called off.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "2m")]
    wait: Duration,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The component to serve (a .wasm exporting wasi:http/incoming-handler
    /// of WASI 0.2 or wasi:http/handler of WASI 0.3),
    /// the directory of a Rust crate to build with cargo for
    /// wasm32-wasip2, serve, and rebuild on every save, or a component in
    /// an OCI registry (oci://REGISTRY/REPO:TAG or …@sha256:DIGEST).
    #[arg(
        value_name = "APP.wasm|DIR|oci://…",
        required_unless_present = "config"
    )]
    component: Option<PathBuf>,
    /// Serve the apps of a config file (TOML; see the README) instead of
    /// one app. --control, --admin and the cache flags still apply; the
    /// per-app flags are set in the file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["component", "listen", "no_watch", "drain_timeout", "ready_timeout", "request_timeout", "allow_http", "env", "max_memory", "reuse_instances", "instance_concurrency", "instance_uses", "instance_idle", "tier_up_above", "no_tier_up", "max_concurrency", "max_queue", "queue_timeout", "max_body", "hangup_grace", "ws_max_connections", "ws_max_message", "ws_ping_interval", "ws_idle_timeout", "ws_send_queue", "grip_key", "grip_publish", "keyvalue", "shared_bucket", "config_var", "watch_tag", "tls_cert", "tls_key"])]
    config: Option<PathBuf>,
    /// Address to accept HTTP/1.1 and HTTP/2 (h2c) connections on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Control socket for `wasm-host reload` and `status`
    /// [default: $XDG_RUNTIME_DIR/wasm-host.sock, else
    /// $TMPDIR/wasm-host-$UID/control.sock, in a private directory].
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
    /// For an oci:// component named by tag: ask the registry this often
    /// (give or take a quarter, so a fleet does not swap in lockstep)
    /// whether the tag moved, and reload when it did.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    watch_tag: Option<Duration>,
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
    /// WASI 0.3 apps: requests one instance may run at once (it takes a
    /// second only while the first waits, and never past the guest's
    /// backpressure).
    #[arg(long, value_name = "N", default_value_t = crate::runtime::p3::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=1000))]
    instance_concurrency: u32,
    /// WASI 0.3 apps: requests one instance serves in all before it is
    /// replaced by a fresh one.
    #[arg(long, value_name = "N", default_value_t = crate::runtime::p3::DEFAULT_USES, value_parser = clap::value_parser!(u32).range(1..))]
    instance_uses: u32,
    /// WASI 0.3 apps: how long an idle instance is kept for the next
    /// request.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    instance_idle: Duration,
    /// Components larger than SIZE go live on quickly compiled (Winch) code
    /// and switch to optimized (Cranelift) code, compiled in the background,
    /// once it is ready; 0 does this for every component [default: 1MiB,
    /// and 0 when serving a crate, so a save goes live sooner].
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero)]
    tier_up_above: Option<usize>,
    /// Always wait for optimized code before a version goes live.
    #[arg(long, conflicts_with = "tier_up_above")]
    no_tier_up: bool,
    /// Requests that may run a guest at once (background work included);
    /// more wait in a queue.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_concurrency, value_parser = parse_concurrency)]
    max_concurrency: usize,
    /// Requests that may wait for a turn; beyond that they get 503 with
    /// Retry-After at once.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_queue)]
    max_queue: usize,
    /// How long a request may wait for a turn before it gets 503 with
    /// Retry-After.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    queue_timeout: Duration,
    /// Largest request body; a larger one gets 413 [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_body: Option<usize>,
    /// How long the guest of a request whose client went away before the
    /// answer may go on; then it is stopped and its turn freed. Work a
    /// guest does after it has answered is never cut short this way.
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = parse_duration)]
    hangup_grace: Duration,
    /// WebSocket connections the app may hold open at once; more are
    /// answered 503.
    #[arg(long, value_name = "N", default_value_t = RealtimeLimits::default().max_connections, value_parser = parse_connections)]
    ws_max_connections: usize,
    /// Largest message a WebSocket client may send; a larger one closes
    /// its connection with 1009.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    ws_max_message: usize,
    /// How often a quiet WebSocket client is pinged.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    ws_ping_interval: Duration,
    /// How long a WebSocket client may send nothing, not even a pong,
    /// before it is closed with 1001.
    #[arg(long, value_name = "DUR", default_value = "90s", value_parser = parse_duration)]
    ws_idle_timeout: Duration,
    /// Messages waiting to be written to one WebSocket client; one that
    /// reads slower is closed with 1008 instead of being buffered for.
    #[arg(long, value_name = "N", default_value_t = RealtimeLimits::default().send_queue, value_parser = parse_connections)]
    ws_send_queue: usize,
    /// Trust a GRIP proxy (Pushpin) in front of the host: requests whose
    /// `Grip-Sig` is an HS256 token signed with this key (Pushpin's
    /// `sig_key`) may carry WebSocket events, and their answers keep their
    /// `Grip-*` headers for the proxy to hold. Without it, WebSocket events
    /// from the network are refused.
    #[arg(
        long,
        value_name = "KEY",
        env = "WASM_HOST_GRIP_KEY",
        hide_env_values = true
    )]
    grip_key: Option<String>,
    /// A GRIP proxy's publish endpoint (Pushpin's
    /// `http://127.0.0.1:5561/publish/`): what the app publishes goes
    /// there too, to reach the connections the proxy holds.
    #[arg(long, value_name = "URL")]
    grip_publish: Option<crate::realtime::forward::Endpoint>,
    /// Client connections one listener keeps open at once; more are
    /// answered 503 and closed at once.
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().max_connections, value_parser = parse_connections)]
    max_connections: usize,
    /// How long a connection may take to send a request head, from when it
    /// opens or from its previous answer; then it is closed.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// How long a connection with no request in flight may stay open
    /// without sending anything.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// How long a request body may take to arrive, plus one second for
    /// every 64 KiB received; a body that falls behind gets 408.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Serve HTTPS: the PEM certificate chain (leaf first). Watched: a new
    /// valid pair is served from the next handshake on. Needs --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Directory of the per-app log files (APP.log, rotated by size)
    /// [default: $XDG_STATE_HOME/wasm-host/logs, else ~/.local/state/wasm-host/logs].
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Rotate an app's log file when it reaches SIZE.
    #[arg(long, value_name = "SIZE", default_value = "10MiB", value_parser = parse_size)]
    log_max_size: usize,
    /// Rotated log files kept per app.
    #[arg(long, value_name = "N", default_value_t = 5)]
    log_keep: u32,
    /// How the host writes its log lines on stderr and in host.log:
    /// `text`, or `json` (one JSON object per line, guest output on stderr
    /// included; see the README for the keys).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
    /// Log one line per request (app, generation, status, duration, bytes,
    /// client address, traceparent) in the host's log. With --config, for
    /// every app (else `access_log` in the file says).
    #[arg(long)]
    access_log: bool,
    /// Where the app's wasi:keyvalue buckets live: `embedded` (a
    /// crash-safe file in the data directory), `memory` (gone when the
    /// host stops), or `redis://HOST:PORT` (shared by every host using it;
    /// `rediss://HOST:PORT` over TLS, `?ca=CA.pem` to trust a private CA).
    #[arg(long, value_name = "STORE", default_value = "embedded", value_parser = parse_store)]
    keyvalue: StoreChoice,
    /// Share the bucket NAME with every other app on the same store, instead
    /// of giving this app its own (repeatable).
    #[arg(long = "shared-bucket", value_name = "NAME")]
    shared_bucket: Vec<String>,
    /// Give the app the wasi:config value KEY (repeatable).
    #[arg(long = "config-var", value_name = "KEY=VALUE", value_parser = config::parse_config_var)]
    config_var: Vec<(String, String)>,
    /// Largest component file a reload (or start) reads; anything larger,
    /// and anything not a regular file (a FIFO, a device), is refused.
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_size)]
    max_component_size: usize,
    /// Directory of the embedded key-value files (APP/keyvalue.redb)
    /// [default: $XDG_DATA_HOME/wasm-host, else ~/.local/share/wasm-host].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    text.parse()
}

fn parse_store(text: &str) -> Result<StoreChoice, String> {
    text.parse()
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// Only this app.
    #[arg(value_name = "APP")]
    app: Option<String>,
    /// Keep printing lines as they are written.
    #[arg(short, long)]
    follow: bool,
    /// Lines to print from the end of each file first.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 50)]
    lines: usize,
    #[command(flatten)]
    control: ControlArgs,
}

/// A concurrency limit: at least 1, and within the instance pool (1000
/// slots, shared with draining versions and readiness checks).
fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=900) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a number from 1 to 900 (the instance pool has 1000 slots, shared with draining versions)"
        )),
    }
}

fn parse_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=1_000_000) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a number from 1 to 1000000 (each connection takes an open file)"
        )),
    }
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
    /// [default: $XDG_RUNTIME_DIR/wasm-host.sock, else
    /// $TMPDIR/wasm-host-$UID/control.sock, in a private directory].
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    /// Give up when the host has not replied within DUR [default: 10s for
    /// status and logs, 1m for promote, abort and rollback, 10m for reload,
    /// which may pull and compile a large component].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    timeout: Option<Duration>,
}

/// How long `status` and `logs` wait for the host: it answers them at once
/// unless it is stuck.
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long promote, abort and rollback wait: no compile, but a rollback
/// runs the revived version's init hook.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a reload waits: a pull and an optimizing compile of a large
/// component can take minutes.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(600);

impl ControlArgs {
    fn socket(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(socket::default_control_path)
    }

    /// Sends `request` to the host, waiting at most `--timeout`, else
    /// `default`.
    async fn send(&self, request: &ControlRequest, default: Duration) -> Result<ControlReply> {
        socket::send(&self.socket(), request, self.timeout.unwrap_or(default)).await
    }
}

#[derive(Debug, Args)]
struct ReloadArgs {
    /// Apply the host's config file again (or FILE): added apps start,
    /// removed apps drain away, changed apps reload; nothing unchanged is
    /// touched.
    #[arg(long, value_name = "FILE", num_args = 0..=1, conflicts_with_all = ["targets", "canary"])]
    config: Option<Option<PathBuf>>,
    /// `[APP] [APP.wasm]`: the app to reload (may be left out when the host
    /// runs one app) and a new component to load instead of the current
    /// file; later reloads and the file watch follow it.
    #[arg(value_name = "APP|APP.wasm", num_args = 0..=2)]
    targets: Vec<String>,
    /// Start the new version as a canary taking PCT percent of new requests
    /// (0 to 100; 0 takes only requests pinned with the
    /// x-wasm-host-generation header). Again with the same file: change the
    /// share.
    #[arg(long, value_name = "PCT")]
    canary: Option<f64>,
    /// Requests carrying this header are split by its value, so one client
    /// stays on one version.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STICKY_HEADER, requires = "canary")]
    sticky_header: String,
    /// Abort the canary by itself when more than PCT percent of its
    /// responses over --abort-window are 5xx.
    #[arg(long, value_name = "PCT", requires = "canary")]
    abort_above: Option<f64>,
    /// The window --abort-above measures over.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration, requires = "abort_above")]
    abort_window: Duration,
    /// Fewer canary responses than this in the window never abort it.
    #[arg(long, value_name = "N", default_value_t = 20, requires = "abort_above")]
    abort_min_requests: u64,
    #[command(flatten)]
    control: ControlArgs,
}

impl ReloadArgs {
    /// Splits the positionals into an app name and a component path: with
    /// one, a value that looks like a file (ends in .wasm, has a `/`, or
    /// exists) is the path.
    fn app_and_path(&self) -> Result<(Option<String>, Option<PathBuf>)> {
        let (app, path) = match self.targets.as_slice() {
            [] => (None, None),
            [one] if looks_like_file(one) => (None, Some(one)),
            [one] => (Some(one.clone()), None),
            [app, path, ..] => (Some(app.clone()), Some(path)),
        };
        let path = match path {
            // A registry reference goes to the host as written; it pulls.
            Some(p) if Reference::is_oci(p) => {
                p.parse::<Reference>().map_err(anyhow::Error::msg)?;
                Some(PathBuf::from(p))
            }
            Some(p) => Some(
                std::path::absolute(p).with_context(|| format!("cannot resolve the path {p}"))?,
            ),
            None => None,
        };
        Ok((app, path))
    }

    fn plan(&self) -> Option<CanaryPlan> {
        Some(CanaryPlan {
            percent: self.canary?,
            sticky_header: self.sticky_header.clone(),
            auto_abort: self.abort_above.map(|max_error_percent| AbortRule {
                max_error_percent,
                window: self.abort_window,
                min_requests: self.abort_min_requests,
            }),
        })
    }
}

fn looks_like_file(text: &str) -> bool {
    text.ends_with(".wasm") || text.contains('/') || std::path::Path::new(text).is_file()
}

#[derive(Debug, Args)]
struct AppArgs {
    /// The app (may be left out when the host runs one app).
    #[arg(value_name = "APP")]
    app: Option<String>,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Only this app.
    #[arg(value_name = "APP")]
    app: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    control: ControlArgs,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(format);
    crate::control::upgrade::remember_own_binary();
    // Before any thread starts: these read and clear the environment.
    let inherited = Inherited::from_env();
    let takeover = match Successor::from_env() {
        Ok(takeover) => takeover.map(|(successor, passed)| (Arc::new(successor), passed)),
        Err(e) => {
            eprintln!("error: cannot take over from the old process: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let successor = takeover.as_ref().map(|(s, _)| s.clone());
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
    match runtime.block_on(run(cli.command, inherited, takeover)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(successor) = successor {
                successor.failed(&format!("{e:#}"));
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(
    command: Command,
    inherited: Inherited,
    takeover: Option<(Arc<Successor>, Passed)>,
) -> Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            crate::runtime::component_file::set_max_size(args.max_component_size as u64);
            let logs = LogSettings {
                dir: args.log_dir.clone().unwrap_or_else(config::default_log_dir),
                max_bytes: args.log_max_size as u64,
                keep: args.log_keep,
            };
            logfile::init(logs.clone()).with_context(|| {
                format!(
                    "cannot create the log directory {}; pass --log-dir with a writable one",
                    logs.dir.display()
                )
            })?;
            let overrides = Overrides {
                control: args.control.clone(),
                admin: args.admin,
                cache_dir: args.cache_dir.clone(),
                no_cache: args.no_cache,
                data_dir: args.data_dir.clone(),
                access_log: args.access_log,
            };
            let config = match (&args.config, args.component) {
                (Some(file), _) => config::file::load(file, &overrides)?,
                (None, Some(component)) => ServeConfig::new(ServeInput {
                    component,
                    watch_tag: args.watch_tag,
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
                    p3: crate::runtime::p3::P3Settings {
                        concurrency: args.instance_concurrency,
                        uses: args.instance_uses,
                        idle: args.instance_idle,
                    },
                    tier_up_above: args.tier_up_above,
                    no_tier_up: args.no_tier_up,
                    limits: Limits {
                        max_concurrency: args.max_concurrency,
                        max_queue: args.max_queue,
                        queue_timeout: args.queue_timeout,
                        max_body: args.max_body.map(|n| n as u64),
                        hangup_grace: args.hangup_grace,
                    },
                    grip_key: args.grip_key,
                    grip_publish: args.grip_publish,
                    realtime: RealtimeLimits {
                        max_connections: args.ws_max_connections,
                        max_message: args.ws_max_message,
                        ping_interval: args.ws_ping_interval,
                        idle_timeout: args.ws_idle_timeout,
                        send_queue: args.ws_send_queue,
                    },
                    keyvalue: args.keyvalue,
                    data_dir: args.data_dir,
                    shared_buckets: args.shared_bucket,
                    config_vars: args.config_var,
                    tls_cert: args.tls_cert,
                    tls_key: args.tls_key,
                    access_log: args.access_log,
                })?,
                (None, None) => anyhow::bail!(
                    "name the app to serve (APP.wasm or a crate directory), or pass --config FILE"
                ),
            };
            let mut config = config;
            config.connections = ConnectionLimits {
                max_connections: args.max_connections,
                header_timeout: args.header_timeout,
                idle_timeout: args.idle_timeout,
                body_timeout: args.body_timeout,
            };
            crate::cli::serve::serve(config, overrides, inherited, takeover).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(ReloadArgs {
            config: Some(file),
            control,
            ..
        }) => {
            let path = match file {
                Some(p) => Some(
                    std::path::absolute(&p)
                        .with_context(|| format!("cannot resolve the path {}", p.display()))?,
                ),
                None => None,
            };
            let reply = control
                .send(&ControlRequest::ApplyConfig { path }, RELOAD_TIMEOUT)
                .await?;
            Ok(print_reply(reply, Step::Reload))
        }
        Command::Reload(args) => {
            let (app, path) = args.app_and_path()?;
            let canary = args.plan();
            if let Some(plan) = &canary {
                plan.validate().map_err(anyhow::Error::msg)?;
            }
            let what = if canary.is_some() {
                Step::Canary
            } else {
                Step::Reload
            };
            let request = ControlRequest::Reload { app, path, canary };
            let reply = args.control.send(&request, RELOAD_TIMEOUT).await?;
            Ok(print_reply(reply, what))
        }
        Command::Promote(args) => {
            let request = ControlRequest::Promote { app: args.app };
            let reply = args.control.send(&request, CHANGE_TIMEOUT).await?;
            Ok(print_reply(reply, Step::Promote))
        }
        Command::Abort(args) => {
            let request = ControlRequest::Abort { app: args.app };
            let reply = args.control.send(&request, CHANGE_TIMEOUT).await?;
            Ok(print_reply(reply, Step::Abort))
        }
        Command::Rollback(args) => {
            let request = ControlRequest::Rollback { app: args.app };
            let reply = args.control.send(&request, CHANGE_TIMEOUT).await?;
            Ok(print_reply(reply, Step::Rollback))
        }
        Command::Logs(args) => {
            let request = ControlRequest::Status { app: args.app };
            let report = match args.control.send(&request, QUICK_TIMEOUT).await? {
                ControlReply::Status(report) => report,
                other => return Ok(print_reply(other, Step::Status)),
            };
            let dir = report
                .host
                .log_dir
                .context("the running host keeps no log files")?;
            let files = report
                .apps
                .iter()
                .map(|a| (a.app.clone(), logfile::path_in(&dir, &a.app)))
                .collect();
            crate::ops::tail::run(files, args.lines, args.follow).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile(args) => compile(args).await,
        Command::Upgrade(args) => {
            let binary = match args.binary {
                Some(p) => Some(
                    std::path::absolute(&p)
                        .with_context(|| format!("cannot resolve the path {}", p.display()))?,
                ),
                None => None,
            };
            let request = ControlRequest::Upgrade {
                binary,
                wait_s: Some(args.wait.as_secs().max(1)),
            };
            // The host answers once the new process serves or gave up.
            let reply = args
                .control
                .send(&request, args.wait + CHANGE_TIMEOUT)
                .await?;
            match reply {
                ControlReply::Upgraded { pid } => {
                    println!(
                        "upgraded: process {pid} serves every app; the old process drains and exits"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                other => Ok(print_reply(other, Step::Upgrade)),
            }
        }
        Command::Status(args) => {
            let request = ControlRequest::Status { app: args.app };
            let reply = args.control.send(&request, QUICK_TIMEOUT).await?;
            match reply {
                ControlReply::Status(report) if args.json => {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(ExitCode::SUCCESS)
                }
                other => Ok(print_reply(other, Step::Status)),
            }
        }
    }
}

/// Which command a reply answers, for its wording.
#[derive(Clone, Copy, PartialEq)]
enum Step {
    Reload,
    Canary,
    Promote,
    Abort,
    Rollback,
    Status,
    Upgrade,
}

fn print_reply(reply: ControlReply, step: Step) -> ExitCode {
    let o = match reply {
        ControlReply::Reloaded(o) => o,
        ControlReply::Failed { error } => {
            let what = match step {
                Step::Reload | Step::Canary => "reload refused",
                Step::Promote => "promote refused",
                Step::Abort => "abort refused",
                Step::Rollback => "rollback refused",
                Step::Status => "status failed",
                Step::Upgrade => "upgrade refused",
            };
            eprintln!("{what}: {error}\nnothing changed: the live version is still serving");
            return ExitCode::FAILURE;
        }
        ControlReply::Upgraded { pid } => {
            println!("upgraded: process {pid} serves");
            return ExitCode::SUCCESS;
        }
        ControlReply::Status(report) => {
            print_status(&report);
            return ExitCode::SUCCESS;
        }
        ControlReply::Applied(applied) => return print_applied(&applied),
    };
    let digest = &o.digest[..12.min(o.digest.len())];
    let retired = o
        .retired
        .map(|g| format!("; generation {g} drains"))
        .unwrap_or_default();
    match step {
        Step::Canary if o.unchanged => println!(
            "canary: generation {} keeps running from {} with its new share",
            o.generation,
            o.path.display()
        ),
        _ if o.unchanged => println!(
            "unchanged: generation {} already runs {} (sha256:{digest})",
            o.generation,
            o.path.display()
        ),
        Step::Reload | Step::Canary => {
            let compiled = if o.cached {
                "compiled code reused".to_string()
            } else {
                format!("compiled in {} ms", o.compile_ms)
            };
            let role = if o.canary { "canary" } else { "live" };
            println!(
                "reloaded: generation {} is {role} from {} (sha256:{digest}, {compiled}, swapped in {:.1} ms){retired}",
                o.generation,
                o.path.display(),
                o.reload_us as f64 / 1000.0
            );
        }
        Step::Promote => println!(
            "promoted: generation {} is live (sha256:{digest}){retired}",
            o.generation
        ),
        Step::Abort => println!(
            "aborted: generation {} drains; generation {} keeps serving every request",
            o.retired.unwrap_or_default(),
            o.generation
        ),
        Step::Rollback => println!(
            "rolled back: generation {} is live, running the code of generation {} (sha256:{digest}, no compile, {:.1} ms){retired}",
            o.generation,
            o.revived_from.unwrap_or_default(),
            o.reload_us as f64 / 1000.0
        ),
        Step::Status | Step::Upgrade => {}
    }
    ExitCode::SUCCESS
}

fn print_applied(applied: &Applied) -> ExitCode {
    for (what, names) in [
        ("started", &applied.started),
        ("stopped (draining)", &applied.stopped),
        ("reloaded", &applied.reloaded),
        ("restarted with new settings", &applied.restarted),
        ("unchanged", &applied.unchanged),
    ] {
        if !names.is_empty() {
            println!("{what}: {}", names.join(", "));
        }
    }
    for refusal in &applied.refused {
        eprintln!("reload refused: {refusal}; that app keeps serving its live version");
    }
    if applied.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_status(report: &StatusReport) {
    println!(
        "host pid {}, resident memory {:.1} MiB",
        report.host.pid,
        report.host.rss_bytes as f64 / (1 << 20) as f64
    );
    for app in &report.apps {
        let canary = app
            .canary_percent
            .map(|p| format!(", canary at {p}%"))
            .unwrap_or_default();
        println!(
            "\napp {} ({}), up {}, reloads: {} ok, {} unchanged, {} refused{canary}",
            app.app,
            app.path.display(),
            humantime::format_duration(Duration::from_secs(app.uptime_s as u64)),
            app.reloads_ok,
            app.reloads_unchanged,
            app.reloads_refused
        );
        if let Some(source) = &app.source {
            println!("source: {source}");
        }
        if !app.keyvalue.is_empty() {
            println!("key-value store: {}", app.keyvalue);
        }
        println!(
            "{:>4}  {:<12}  {:<9}  {:<5}  {:>9}  {:>9}  {:>8}  {:>9}  {:<9}  from",
            "gen", "digest", "state", "world", "in-flight", "served", "up", "code", "tier"
        );
        for v in &app.versions {
            // Where the code came from: the pull's reference, else the file.
            let from = match (&v.source, &v.path) {
                (Some(source), _) => source.clone(),
                (None, Some(path)) => path.display().to_string(),
                (None, None) => String::new(),
            };
            println!(
                "{:>4}  {:<12}  {:<9}  {:<5}  {:>9}  {:>9}  {:>8}  {:>7.1}Mi  {:<9}  {}",
                v.generation,
                &v.digest[..12.min(v.digest.len())],
                v.state,
                v.world,
                v.in_flight,
                v.served,
                humantime::format_duration(Duration::from_secs(v.uptime_s)).to_string(),
                v.code_bytes as f64 / (1 << 20) as f64,
                v.tier,
                from
            );
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::Directive;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt};
    log_format::set_format(format);
    let asked = std::env::var("WASM_HOST_LOG").ok();
    let mut filter = asked
        .as_deref()
        .and_then(|text| EnvFilter::try_new(text).ok())
        // The file watcher's crate logs at info when a watched folder goes
        // away under it (a build's scratch folder), which is no news.
        .unwrap_or_else(|| EnvFilter::new("info,notify=warn"));
    // Access lines are only made when the access log was asked for, so they
    // pass at info whatever the level, unless WASM_HOST_LOG names them.
    if !asked.as_deref().is_some_and(|a| a.contains(ACCESS_TARGET))
        && let Ok(access) = format!("{ACCESS_TARGET}=info").parse::<Directive>()
    {
        filter = filter.add_directive(access);
    }
    let json = format == LogFormat::Json;
    // Field values are escaped so one event is always one line (a file name
    // with a newline must not forge a log line).
    let stderr_text = (!json).then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .fmt_fields(EscapedFields::new())
    });
    // The same lines in the rotated host.log, once `serve` set up the log
    // directory; the file stamps each line's time itself.
    let file_text = (!json).then(|| {
        fmt::layer()
            .with_writer(HostFile::stamped())
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .fmt_fields(EscapedFields::new())
    });
    // JSON lines carry their own time and escape everything themselves.
    let stderr_json = json.then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(JsonLines)
    });
    let file_json = json.then(|| {
        fmt::layer()
            .with_writer(HostFile::unstamped())
            .event_format(JsonLines)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr_text)
        .with(file_text)
        .with(stderr_json)
        .with(file_json)
        .with(logfile::AppEvents)
        .init();
}

/// `wasm-host compile`: fills the code cache with `args.component`'s
/// optimized code.
async fn compile(args: CompileArgs) -> Result<ExitCode> {
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(crate::config::default_cache_dir);
    let settings = crate::runtime::engine::EngineSettings {
        max_memory: args.max_memory,
        cache_dir: Some(cache_dir.clone()),
        ..Default::default()
    };
    let bytes = crate::runtime::component_file::read(&args.component)
        .await
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    let runtime = Runtime::new(&settings)?;
    let done = crate::runtime::precompile::precompile(&runtime, bytes.into())
        .await
        .with_context(|| format!("{} cannot be served", args.component.display()))?;
    let what = if done.already {
        "was already in"
    } else {
        "compiled into"
    };
    println!(
        "{} (WASI {}, {}) {what} {} in {} ms",
        args.component.display(),
        done.world.name(),
        done.digest.short(),
        cache_dir.display(),
        done.took.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}
