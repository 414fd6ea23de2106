//! The Node peers: a server that PM2 runs in cluster mode, two workers on
//! one port. `bench/node-chat/` (a `ws` server) is the chat example's peer,
//! `bench/node-express/` (an Express app) the JavaScript app's.
//!
//! PM2 keeps a daemon and its state in `PM2_HOME`; every command here runs
//! with a private one in the benchmark's scratch folder, so a user's own
//! PM2 (and its process list) is never touched, and the daemon is ended
//! with `pm2 kill` when the cluster is dropped.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procfs;

/// The longest any one `npm` or `pm2` command may take. `pm2 reload` of
/// two workers takes a few seconds here; a stuck one must not hang the
/// benchmark.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// A PM2 cluster of `server.js`, killed (with its daemon) on drop.
pub struct Pm2Cluster {
    dir: PathBuf,
    pm2: PathBuf,
    home: PathBuf,
    /// What `GET /` answers with, up to the build number.
    answer: String,
    /// Where the workers listen.
    pub addr: SocketAddr,
}

/// Versions of what the peer runs, for the report.
pub struct Versions {
    /// `node --version`.
    pub node: String,
    /// The installed `pm2` package.
    pub pm2: String,
    /// The peer's own packages (`ws`, `express`), each with its version.
    pub packages: Vec<(String, String)>,
}

impl Versions {
    /// The installed version of the peer's package `name`.
    pub fn package(&self, name: &str) -> &str {
        self.packages
            .iter()
            .find(|(n, _)| n == name)
            .map_or("?", |(_, v)| v.as_str())
    }
}

/// Installs the peer's packages into `dir/node_modules` with `npm ci` (the
/// versions pinned in its lock file) unless `pm2` and `packages` are there
/// already, and returns what it runs.
pub fn prepare(dir: &Path, packages: &[&str]) -> Result<Versions> {
    let node = output(Command::new("node").arg("--version"))
        .context("node is not installed (apt-get install nodejs npm)")?;
    let modules = dir.join("node_modules");
    if !modules.join(".bin/pm2").is_file() || packages.iter().any(|p| !modules.join(p).is_dir()) {
        println!(
            "installing the Node peer's packages (npm ci in {})",
            dir.display()
        );
        let mut ci = Command::new("npm");
        ci.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
        run(&mut ci).with_context(|| format!("npm ci in {} failed", dir.display()))?;
    }
    let version = |package: &str| -> Result<String> {
        output(
            Command::new("node")
                .arg("-p")
                .arg(format!("require('{package}/package.json').version"))
                .current_dir(dir),
        )
    };
    Ok(Versions {
        node,
        pm2: version("pm2")?,
        packages: packages
            .iter()
            .map(|p| Ok((p.to_string(), version(p)?)))
            .collect::<Result<_>>()?,
    })
}

impl Pm2Cluster {
    /// Starts the cluster from `dir/ecosystem.config.js` on `addr` with
    /// `BUILD=build`, PM2's state in `home`, and waits until it answers
    /// with that build: a body starting `{answer}{build} `.
    pub fn start(
        dir: &Path,
        home: &Path,
        addr: SocketAddr,
        build: u64,
        answer: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(home)?;
        let cluster = Self {
            dir: dir.to_path_buf(),
            pm2: dir.join("node_modules/.bin/pm2"),
            home: home.to_path_buf(),
            answer: answer.to_string(),
            addr,
        };
        // Built before the start, so a failed start still kills the
        // daemon it may have left behind.
        run(&mut cluster.command(&["start", "ecosystem.config.js"], build))
            .context("pm2 start failed")?;
        cluster.wait_for_build(build, Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// `pm2 reload ecosystem.config.js` with `BUILD=build`: PM2 replaces
    /// the workers one at a time. Returns once the command has finished.
    pub fn reload(&self, build: u64) -> Result<()> {
        run(&mut self.command(&["reload", "ecosystem.config.js"], build))
            .context("pm2 reload failed")
    }

    /// A `pm2` command with the private home and the peer's settings.
    fn command(&self, args: &[&str], build: u64) -> Command {
        let mut cmd = Command::new(&self.pm2);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("PM2_HOME", &self.home)
            .env("PORT", self.addr.port().to_string())
            .env("BUILD", build.to_string());
        cmd
    }

    /// Whether `body` is an answer of build `build`.
    pub fn is_build(&self, body: &str, build: u64) -> bool {
        body.strip_prefix(&self.answer)
            .and_then(|rest| rest.strip_prefix(&build.to_string()))
            .is_some_and(|rest| rest.starts_with(' '))
    }

    /// The daemon and its workers (every process below the daemon).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let file = self.home.join("pm2.pid");
        let daemon: u32 = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", file.display()))?;
        let mut pids = vec![daemon];
        pids.extend(procfs::descendants(daemon)?);
        Ok(pids)
    }

    /// Polls `GET /` until a worker answers with `build`.
    fn wait_for_build(&self, build: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if get_root(self.addr).is_ok_and(|body| self.is_build(&body, build)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the PM2 cluster on {} did not answer with build {build} within {timeout:?}",
            self.addr
        )
    }
}

impl Drop for Pm2Cluster {
    fn drop(&mut self) {
        // `kill` stops the workers and the daemon of this PM2_HOME only.
        if let Err(e) = run(&mut self.command(&["kill"], 0)) {
            eprintln!(
                "pm2 kill failed ({e:#}); its daemon may still run with PM2_HOME={}",
                self.home.display()
            );
        }
    }
}

/// The body of `GET /` on `addr` (one request on a new connection).
pub fn get_root(addr: SocketAddr) -> Result<String> {
    use std::io::Write;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Runs `cmd` to completion within [`COMMAND_TIMEOUT`], its output kept
/// out of the benchmark's (and shown only if it fails).
pub fn run(cmd: &mut Command) -> Result<()> {
    let log = unlinked_file()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let mut text = String::new();
        let mut log = log;
        use std::io::Seek;
        log.rewind()?;
        log.read_to_string(&mut text)?;
        bail!("{cmd:?} exited with {status}:\n{text}");
    }
    Ok(())
}

/// An anonymous file for a command's output (unlinked at once, so nothing
/// is left behind).
fn unlinked_file() -> Result<std::fs::File> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("wasm-host-bench-cmd-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// The trimmed standard output of `cmd`, which must succeed.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
