//! The servers under test, each run as its own process on loopback: this
//! project's `wasm-host`, `wasmtime serve` with default and tuned pooling
//! flags, and a native hyper hello server (the ceiling).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use wasm_host::app::ReloadOutcome;
use wasm_host::control::socket::{AppStatus, ControlReply, ControlRequest};

/// The flags that took `wasmtime serve` from ~7.9k to ~19.5k req/s here.
pub const WASMTIME_TUNED: &[&str] = &[
    "-O",
    "pooling-pagemap-scan=y",
    "-O",
    "pooling-memory-keep-resident=4194304",
    "-O",
    "pooling-table-keep-resident=1048576",
    "-O",
    "pooling-decommit-batch-size=128",
];

/// Which server to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `wasm-host serve`, with extra flags.
    WasmHost(Vec<String>),
    /// `wasm-host serve DIR` of an app's sources, with extra flags: the
    /// host builds the app, serves it, and rebuilds it on every save.
    WasmHostApp(Vec<String>),
    /// `wasmtime serve -Scli`, with extra flags.
    Wasmtime(Vec<String>),
    /// The native hyper hello server.
    Native,
}

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its control socket, for `wasm-host`.
    pub control: Option<PathBuf>,
}

/// Paths the servers need.
pub struct Tools {
    /// The `wasm-host` binary.
    pub wasm_host: PathBuf,
    /// The `wasmtime` binary, if found.
    pub wasmtime: Option<PathBuf>,
    /// The `wrk` load generator, if found (throughput runs use it).
    pub wrk: Option<PathBuf>,
    /// This benchmark's own binary (it serves the native hello).
    pub bench: PathBuf,
    /// A scratch directory.
    pub scratch: PathBuf,
}

impl Tools {
    /// The on-disk code cache every `wasm-host` server of the run uses.
    pub fn cache_dir(&self) -> PathBuf {
        self.scratch.join("cache")
    }
}

impl Server {
    /// Starts `kind` serving `component` and waits until it accepts.
    pub fn start(kind: &Kind, tools: &Tools, component: &Path) -> Result<Server> {
        Self::start_at(kind, tools, component, free_addr()?)
    }

    /// Like [`Server::start`], on `addr`.
    pub fn start_at(
        kind: &Kind,
        tools: &Tools,
        component: &Path,
        addr: SocketAddr,
    ) -> Result<Server> {
        let mut control = None;
        let mut cmd = match kind {
            Kind::WasmHost(extra) | Kind::WasmHostApp(extra) => {
                let sock = tools.scratch.join(format!("control-{}.sock", addr.port()));
                let mut c = Command::new(&tools.wasm_host);
                c.arg("serve")
                    .arg(component)
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--control")
                    .arg(&sock)
                    .arg("--cache-dir")
                    .arg(tools.cache_dir());
                if matches!(kind, Kind::WasmHost(_)) {
                    c.arg("--no-watch");
                }
                c.args(extra);
                control = Some(sock);
                c
            }
            Kind::Wasmtime(extra) => {
                let Some(wasmtime) = &tools.wasmtime else {
                    bail!("wasmtime is not installed");
                };
                let mut c = Command::new(wasmtime);
                c.arg("serve")
                    .arg("-Scli")
                    .arg("--addr")
                    .arg(addr.to_string())
                    .args(extra)
                    .arg(component);
                c
            }
            Kind::Native => {
                let mut c = Command::new(&tools.bench);
                c.arg("native-hello").arg("--listen").arg(addr.to_string());
                c
            }
        };
        // Each server's log goes to a file in the scratch folder, for when
        // a number looks wrong.
        let log = std::fs::File::create(tools.scratch.join(format!("server-{}.log", addr.port())))?;
        let child = cmd
            .env("WASM_HOST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {kind:?}"))?;
        let mut server = Server {
            child,
            addr,
            control,
        };
        // An app's first build comes before the host listens, and may
        // install the toolchain first.
        let limit = if matches!(kind, Kind::WasmHostApp(_)) {
            Duration::from_secs(600)
        } else {
            Duration::from_secs(120)
        };
        server.wait_accepting(limit)?;
        Ok(server)
    }

    fn wait_accepting(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "server for {} exited with {status} before it listened (its log: server-{}.log in the scratch folder)",
                    self.addr,
                    self.addr.port()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("server on {} did not start within {timeout:?}", self.addr)
    }

    /// Reloads a `wasm-host` server with the component at `path` and waits
    /// for its answer.
    pub fn reload(&self, path: &Path) -> Result<ReloadOutcome> {
        let request = ControlRequest::Reload {
            app: None,
            path: Some(path.to_path_buf()),
            canary: None,
        };
        match self.ask(&request)? {
            ControlReply::Reloaded(outcome) => Ok(outcome),
            other => bail!("reload failed: {other:?}"),
        }
    }

    /// The status of a `wasm-host` server's only app.
    pub fn status(&self) -> Result<AppStatus> {
        match self.ask(&ControlRequest::Status { app: None })? {
            ControlReply::Status(mut report) if !report.apps.is_empty() => {
                Ok(report.apps.swap_remove(0))
            }
            other => bail!("status failed: {other:?}"),
        }
    }

    /// Waits (at most `limit`) until the live version runs optimized code,
    /// so a throughput run does not measure the baseline compiler.
    pub fn wait_optimized(&self, limit: Duration) -> Result<()> {
        match self.optimized_by(Instant::now() + limit) {
            Some(_) => Ok(()),
            None => bail!("the live version was not on optimized code within {limit:?}"),
        }
    }

    /// Polls the host until its live version runs optimized code, or
    /// `until`; the moment it saw it.
    pub fn optimized_by(&self, until: Instant) -> Option<Instant> {
        while Instant::now() < until {
            let status = self.status().ok()?;
            let live = status.versions.iter().find(|v| v.state == "live")?;
            if live.tier == "optimized" {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Asks a `wasm-host` server to upgrade to the binary it runs; returns
    /// the new process's id.
    pub fn upgrade(&self) -> Result<u32> {
        let request = ControlRequest::Upgrade {
            binary: None,
            wait_s: None,
        };
        match self.ask(&request)? {
            ControlReply::Upgraded { pid } => Ok(pid),
            other => bail!("upgrade failed: {other:?}"),
        }
    }

    /// Stops the server with SIGTERM and waits (at most `timeout`) for it
    /// to exit, as `systemctl stop` would.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("server did not stop within {timeout:?}")
    }

    fn ask(&self, request: &ControlRequest) -> Result<ControlReply> {
        let control = self.control.as_deref().context("not a wasm-host server")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // A reload under load may compile a large component for minutes.
        let timeout = std::time::Duration::from_secs(600);
        rt.block_on(wasm_host::control::socket::send(control, request, timeout))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        crate::procfs::rss_kib(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (free when asked; the OS may hand it out again
/// before the caller binds it, which on an idle test machine it does not).
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Finds `wasmtime`: the file `$WASMTIME` names if set (so a run can pick
/// one version among several installed), else the first on PATH, else one
/// in the install folders `cargo install --root ~/.cache/wasmtime-cli` or
/// `~/.cache/wasmtime-48` made.
pub fn find_wasmtime() -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("WASMTIME").filter(|v| !v.is_empty()) {
        // An explicit choice that does not exist is reported, not replaced
        // by another wasmtime the reader did not ask for.
        let named = PathBuf::from(named);
        if !named.is_file() {
            eprintln!(
                "WASMTIME={} is not a file; `wasmtime serve` is skipped",
                named.display()
            );
            return None;
        }
        return Some(named);
    }
    on_path("wasmtime").or_else(|| {
        let home = std::env::var_os("HOME")?;
        [".cache/wasmtime-cli", ".cache/wasmtime-48"]
            .iter()
            .map(|root| Path::new(&home).join(root).join("bin/wasmtime"))
            .find(|p| p.is_file())
    })
}

/// What `wasmtime --version` prints (`wasmtime 48.0.8 (…)`), for the report.
pub fn wasmtime_version(wasmtime: &Path) -> Option<String> {
    let out = Command::new(wasmtime).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The program `name` in a directory of PATH, if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A `redis-server` on a free loopback port, saving nothing; killed on drop.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl RedisServer {
    /// Starts one in `dir`, if `redis-server` is installed.
    pub fn start(dir: &Path) -> Result<RedisServer> {
        let addr = free_addr()?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .context(
                "cannot start redis-server (install it with `apt-get install redis-server`)",
            )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisServer {
            child,
            url: format!("redis://{addr}"),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
