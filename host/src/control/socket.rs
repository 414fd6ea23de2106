//! The local control protocol between `wasm-host reload|status` and a
//! running host: one JSON request and one JSON reply per line, over a Unix
//! socket that only its owner may use (mode 0600).
//!
//! The server side turns requests into calls on the app; it does not know
//! how a reload works. The client side is what the CLI commands use.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::app::rollout::CanaryPlan;
use crate::app::{App, ReloadOutcome};
use crate::control::pull;
use crate::control::upgrade::{self, UpgradeAsk};
use crate::hosting::apps::Apps;
use crate::hosting::listener::Backoff;
use crate::oci::{Puller, Reference};
use crate::ops::metrics::{self, Refused};

/// Longest request line the host reads. A request is a command, an app
/// name and a path: a few hundred bytes; the cap keeps a client from
/// making the host buffer a gigabyte.
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// How long a client may take to send its request line (and to take its
/// reply), so a client that connects and goes quiet holds nothing for long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest reply line a client reads: a status of many apps is some
/// kilobytes; more means the other end is not a wasm-host.
const MAX_REPLY_LINE: u64 = 16 << 20;

/// The user this process runs as.
pub(crate) fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The host answers its own user and root (root can read and signal the
/// host anyway); the socket's mode 0600 already keeps others out where the
/// file system is honest, this holds where it is not.
fn server_trusts(peer: u32) -> bool {
    peer == own_uid() || peer == 0
}

/// A client talks only to a host run by its own user, root included: root
/// trusting a socket another user made is exactly the impostor case.
fn client_trusts(peer: u32) -> bool {
    peer == own_uid()
}

/// A request from a CLI command to the host. `app` names the app; it may
/// be left out when the host runs only one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Reload from `path`, or from the current path when absent; with
    /// `canary`, start the new version as a canary.
    Reload {
        /// The app.
        #[serde(default)]
        app: Option<String>,
        /// An absolute path to a new component file.
        path: Option<PathBuf>,
        /// Run the new version beside the live one, on a share of requests.
        #[serde(default)]
        canary: Option<CanaryPlan>,
    },
    /// Make the canary live.
    Promote {
        /// The app.
        #[serde(default)]
        app: Option<String>,
    },
    /// Drop the canary.
    Abort {
        /// The app.
        #[serde(default)]
        app: Option<String>,
    },
    /// Bring back the version the last reload or promote replaced.
    Rollback {
        /// The app.
        #[serde(default)]
        app: Option<String>,
    },
    /// Read the config file again (or `path`) and apply it.
    ApplyConfig {
        /// Another config file to apply, absolute.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// Report what runs (one app, or all).
    Status {
        /// The app.
        #[serde(default)]
        app: Option<String>,
    },
    /// Hand the sockets and apps to a new host binary, then drain away.
    Upgrade {
        /// The new binary; absent for the path this host was started from.
        #[serde(default)]
        binary: Option<PathBuf>,
        /// Seconds the new binary may take to load every app.
        #[serde(default)]
        wait_s: Option<u64>,
    },
}

/// What applying a config did, app by app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Apps that were added and started.
    pub started: Vec<String>,
    /// Apps removed from the config, now draining away.
    pub stopped: Vec<String>,
    /// Apps whose component changed, reloaded.
    pub reloaded: Vec<String>,
    /// Apps whose settings changed, started again with them.
    pub restarted: Vec<String>,
    /// Apps left as they were.
    pub unchanged: Vec<String>,
    /// Apps whose reload was refused (`app: why`); they keep serving.
    pub refused: Vec<String>,
}

/// An ask to apply the config file again (or another file), with the
/// channel its outcome goes back on: sent by the control socket and the
/// config watch, carried out on the supervisor.
pub struct ConfigAsk {
    /// The file to read; `None` for the one the host was started with.
    pub path: Option<PathBuf>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Applied, String>>,
}

/// The control socket used when `--control` is not given:
/// `$XDG_RUNTIME_DIR/wasm-host.sock`, else `control.sock` in
/// [`private_control_dir`].
pub fn default_control_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Path::new(&dir).join("wasm-host.sock");
    }
    private_control_dir().join("control.sock")
}

/// `$TMPDIR/wasm-host-$UID` (`/tmp/wasm-host-$UID` without `TMPDIR`): the
/// directory of the default control socket when there is no
/// `XDG_RUNTIME_DIR`. In a shared `/tmp` a socket file could be created
/// first by another user; a directory of our own, mode 0700, cannot (the
/// host refuses one that another user owns or that others may enter).
pub fn private_control_dir() -> PathBuf {
    let uid = own_uid();
    std::env::temp_dir().join(format!("wasm-host-{uid}"))
}

/// The host's reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum ControlReply {
    /// The change succeeded (or found nothing changed).
    Reloaded(ReloadOutcome),
    /// The request failed; the live version keeps serving.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// What runs now.
    Status(StatusReport),
    /// What applying a config file did.
    Applied(Applied),
    /// A new host process took over; this one drains and exits.
    Upgraded {
        /// The new process's id.
        pid: u32,
    },
}

/// A snapshot of the host and its apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The host process.
    pub host: HostStatus,
    /// One entry per app.
    pub apps: Vec<AppStatus>,
}

/// A snapshot of the host process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Its process id.
    pub pid: u32,
    /// Resident memory of the whole process, bytes.
    pub rss_bytes: u64,
    /// Where the per-app log files are, if kept.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
}

/// A snapshot of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The app's name.
    pub app: String,
    /// The component file of the live version, which a reload naming no
    /// file (or SIGHUP, or the file watch) reads.
    pub path: PathBuf,
    /// Seconds since the app started.
    pub uptime_s: f64,
    /// Reloads that put a new version live (or a canary up).
    pub reloads_ok: u64,
    /// Reloads that found the file unchanged.
    pub reloads_unchanged: u64,
    /// Reloads refused; the live version kept serving.
    pub reloads_refused: u64,
    /// The canary's share of new requests in percent, if a canary runs.
    pub canary_percent: Option<f64>,
    /// Live first, then the canary, the draining ones, and the one kept for
    /// a rollback (`retired`).
    pub versions: Vec<VersionStatus>,
    /// Where the app's key-value buckets live.
    #[serde(default)]
    pub keyvalue: String,
    /// The registry reference the live version was pulled from, pinned to
    /// its digest; `None` for a local file.
    #[serde(default)]
    pub source: Option<String>,
    /// WebSocket connections the host holds open for the app. They belong
    /// to no version: each batch of their events goes to the live one.
    #[serde(default)]
    pub websockets_open: usize,
}

/// A snapshot of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStatus {
    /// Generation number.
    pub generation: u64,
    /// Content digest.
    pub digest: String,
    /// `live`, `canary`, `draining` or `retired`.
    pub state: String,
    /// Pieces of work running now (requests and background work).
    pub in_flight: usize,
    /// Requests answered.
    pub served: u64,
    /// Seconds since it was loaded.
    pub uptime_s: u64,
    /// Bytes of compiled code it keeps mapped.
    pub code_bytes: usize,
    /// `optimized` (Cranelift) or `baseline` (Winch, until optimized code
    /// takes over).
    #[serde(default)]
    pub tier: String,
    /// The WASI world it serves: `0.2` or `0.3`.
    #[serde(default)]
    pub world: String,
    /// WASI 0.3 instances alive (each may still run work after its
    /// responses); 0 for 0.2.
    #[serde(default)]
    pub instances: usize,
    /// Instance reuse was asked for but turned off: an instance of this
    /// version failed a request after serving one.
    #[serde(default)]
    pub reuse_off: bool,
    /// WebSocket messages from clients this version handled.
    #[serde(default)]
    pub messages_in: u64,
    /// WebSocket messages this version sent in its answers.
    #[serde(default)]
    pub messages_out: u64,
    /// The component file its code was loaded from (for a rolled-back
    /// generation, that of the generation it revives).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The registry reference that file was pulled by, pinned; `None` for
    /// a local file.
    #[serde(default)]
    pub source: Option<String>,
}

/// The host's end of the control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Keep the file on drop: it is not this process's to remove (taken
    /// over and not serving yet, or handed on to a successor).
    keep_file: Arc<AtomicBool>,
}

/// Where control asks that `serve` carries out go.
#[derive(Clone)]
pub struct Asks {
    /// Config applies; absent when the host runs no config file.
    pub config: Option<mpsc::Sender<ConfigAsk>>,
    /// Binary upgrades.
    pub upgrade: mpsc::Sender<UpgradeAsk>,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket left by a crashed host and
    /// refusing to start beside a live one.
    pub fn bind(path: &Path) -> Result<Self> {
        // The directory first: a socket in a directory another user
        // controls is theirs to replace.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if dir == private_control_dir() {
                ensure_private_dir(dir)?;
            } else {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create the directory {}", dir.display()))?;
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; refusing to replace it (pass --control with another path)",
                    path.display()
                );
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another wasm-host is already running on control socket {}; stop it first, or pass --control with another path",
                    path.display()
                ),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing stale control socket");
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove the stale control socket {}", path.display())
                    })?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot check the existing control socket {}",
                            path.display()
                        )
                    });
                }
            }
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(
            || {
                format!(
                    "cannot restrict control socket {} to its owner",
                    path.display()
                )
            },
        )?;
        Ok(Self::new(listener, path, false))
    }

    fn new(listener: UnixListener, path: &Path, keep_file: bool) -> Self {
        Self {
            listener,
            path: path.to_path_buf(),
            keep_file: Arc::new(AtomicBool::new(keep_file)),
        }
    }

    /// The control socket an old host passed on in an upgrade.
    pub fn passed(listener: std::os::unix::net::UnixListener, path: &Path) -> Result<Self> {
        let listener = UnixListener::from_std(listener)
            .with_context(|| format!("cannot use the passed control socket {}", path.display()))?;
        tracing::info!(path = %path.display(), "took over the control socket from the old process");
        // The old process still serves on it: if this one fails to start,
        // the file must stay.
        Ok(Self::new(listener, path, true))
    }

    /// Its path and descriptor, for a handoff.
    pub fn passable(&self) -> (PathBuf, std::os::fd::RawFd) {
        use std::os::fd::AsRawFd;
        (self.path.clone(), self.listener.as_raw_fd())
    }

    /// Whether to keep the socket file when this is dropped: set once a
    /// successor serves on it; cleared once a process that took the socket
    /// over serves (it is then the one to remove it).
    pub fn keep_file(&self) -> Arc<AtomicBool> {
        self.keep_file.clone()
    }

    /// Answers requests about `apps` until `shutdown` fires; asks to apply
    /// the config file go to `config` (absent when the host runs no config
    /// file).
    pub async fn serve(
        self,
        apps: Arc<Apps>,
        puller: Arc<Puller>,
        asks: Asks,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Backoff::new("control socket");
        let answers = tokio_util::task::TaskTracker::new();
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        backoff.reset();
                        stream
                    }
                    Err(e) => {
                        // Out of descriptors (EMFILE) or memory: the error
                        // repeats at once, so retrying at once would spin a
                        // core and flood the log.
                        tokio::select! {
                            _ = backoff.pause(&e) => {}
                            _ = shutdown.cancelled() => break,
                        }
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let (apps, puller, asks) = (apps.clone(), puller.clone(), asks.clone());
            answers.spawn(async move {
                if let Err(e) = answer(stream, &apps, &puller, &asks).await {
                    tracing::warn!(error = %format!("{e:#}"), "control request failed");
                }
            });
        }
        // Requests already taken get their reply (an upgrade's above all:
        // it is what stopped this loop), within a bound.
        answers.close();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, answers.wait()).await;
    }
}

/// Creates `dir` mode 0700 if it is missing, and refuses it unless it is a
/// real directory of this user that no one else may enter.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create the directory {}", dir.display()));
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect the directory {}", dir.display()))?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a symlink or a file); refusing to put the control socket there: remove it, or pass --control with another path",
            dir.display()
        );
    }
    if meta.uid() != own_uid() {
        bail!(
            "{} belongs to uid {}, not to this user (uid {}): another user may have made it to catch the control socket; remove it, or pass --control with another path",
            dir.display(),
            meta.uid(),
            own_uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is open to other users (mode {:o}); it must be private: `chmod 700` it, or pass --control with another path",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if !self.keep_file.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Turns one request line from a client into a request, or the message a
/// malformed one is answered with. Pure, so it can be fuzzed
/// (tests/fuzz.rs).
pub fn parse_request(line: &str) -> Result<ControlRequest, String> {
    serde_json::from_str::<ControlRequest>(line)
        .map_err(|e| format!("malformed control request: {e}"))
}

/// Reads one request from `stream`, acts on it, writes the reply.
async fn answer(stream: UnixStream, apps: &Apps, puller: &Puller, asks: &Asks) -> Result<()> {
    let peer = stream
        .peer_cred()
        .context("cannot read the control client's credentials")?;
    let (read, mut write) = stream.into_split();
    let reply = if !server_trusts(peer.uid()) {
        metrics::refused(Refused::ControlPeerUser);
        tracing::warn!(uid = peer.uid(), pid = ?peer.pid(), "control client of another user refused");
        ControlReply::Failed {
            error: format!(
                "this host takes control requests only from its own user (uid {}) and root, not uid {}",
                own_uid(),
                peer.uid()
            ),
        }
    } else {
        match read_request(read).await {
            Ok(request) => match act(request, apps, puller, asks).await {
                Ok(reply) => reply,
                Err(error) => ControlReply::Failed { error },
            },
            Err(error) => ControlReply::Failed { error },
        }
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    // A client that stops reading must not hold this task forever.
    tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(text.as_bytes()))
        .await
        .context("the control client did not take the reply in time")??;
    Ok(())
}

/// Reads one request line of at most [`MAX_REQUEST_LINE`] bytes within
/// [`REQUEST_TIMEOUT`]; the error is the reply to send.
async fn read_request(read: impl AsyncRead + Unpin) -> Result<ControlRequest, String> {
    let mut line = Vec::new();
    // One byte past the cap tells an over-long line from one at the cap.
    let mut reader = BufReader::new(read.take(MAX_REQUEST_LINE as u64 + 1));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => {
            metrics::refused(Refused::ControlClientSlow);
            return Err(format!(
                "the control request did not arrive within {}s; send one JSON line",
                REQUEST_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("cannot read the control request: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST_LINE {
        metrics::refused(Refused::ControlLineTooLong);
        return Err(format!(
            "the control request is longer than {MAX_REQUEST_LINE} bytes; a request is one short JSON line"
        ));
    }
    // Through `parse_request`, the function the fuzz suite drives.
    let line = std::str::from_utf8(&line)
        .map_err(|e| format!("malformed control request: not UTF-8 ({e})"))?;
    parse_request(line)
}

/// Carries out one request on the app it names.
async fn act(
    request: ControlRequest,
    apps: &Apps,
    puller: &Puller,
    asks: &Asks,
) -> Result<ControlReply, String> {
    let changed = |result: Result<ReloadOutcome, crate::app::ReloadError>| {
        result
            .map(ControlReply::Reloaded)
            .map_err(|e| e.to_string())
    };
    let changes = !matches!(
        request,
        ControlRequest::Status { .. } | ControlRequest::Upgrade { .. }
    );
    if changes {
        apps.check_not_upgrading()?;
    }
    match request {
        ControlRequest::Reload { app, path, canary } => {
            let app = apps.find(app.as_deref())?;
            let reference = match path.as_ref().and_then(|p| p.to_str()) {
                Some(text) if Reference::is_oci(text) => Some(text.parse::<Reference>()?),
                Some(_) => None,
                // No component named: a pulled app pulls its tag again.
                None => pull::retag(&app, puller),
            };
            if let Some(reference) = reference {
                return pull::reload(&app, puller, &reference, canary)
                    .await
                    .map(ControlReply::Reloaded);
            }
            let (named, as_canary) = (path.is_some(), canary.is_some());
            let result = match canary {
                Some(plan) => app.start_canary(path, plan).await,
                None => app.reload(path).await,
            };
            if result.is_ok() && named && !as_canary {
                puller.forget(app.name());
            }
            changed(result)
        }
        ControlRequest::Promote { app } => {
            let app = apps.find(app.as_deref())?;
            let result = app.promote().await;
            follow_live(&app, puller, &result);
            changed(result)
        }
        ControlRequest::Abort { app } => changed(apps.find(app.as_deref())?.abort().await),
        ControlRequest::Rollback { app } => {
            let app = apps.find(app.as_deref())?;
            let result = app.rollback().await;
            follow_live(&app, puller, &result);
            changed(result)
        }
        ControlRequest::ApplyConfig { path } => {
            let config = asks.config.as_ref().ok_or(
                "this host serves one app from the command line, not a config file; start it with `wasm-host serve --config FILE` to manage apps by file",
            )?;
            let (reply, outcome) = oneshot::channel();
            config
                .send(ConfigAsk { path, reply })
                .await
                .map_err(|_| "the host is shutting down".to_string())?;
            let applied = outcome
                .await
                .map_err(|_| "the host is shutting down".to_string())??;
            Ok(ControlReply::Applied(applied))
        }
        ControlRequest::Upgrade { binary, wait_s } => {
            let wait = wait_s.map_or(upgrade::DEFAULT_WAIT, Duration::from_secs);
            crate::app::limits::check_duration_bound(wait)
                .map_err(|e| format!("the upgrade wait {e}"))?;
            let (reply, outcome) = oneshot::channel();
            asks.upgrade
                .send(UpgradeAsk {
                    binary,
                    wait,
                    reply,
                })
                .await
                .map_err(|_| "the host is shutting down".to_string())?;
            let pid = outcome
                .await
                .map_err(|_| "the host is shutting down".to_string())??;
            Ok(ControlReply::Upgraded { pid })
        }
        ControlRequest::Status { app } => {
            let chosen = match app {
                Some(name) => vec![apps.find(Some(&name))?],
                None => apps.all().to_vec(),
            };
            Ok(ControlReply::Status(StatusReport {
                host: HostStatus {
                    pid: std::process::id(),
                    rss_bytes: resident_bytes(),
                    log_dir: crate::ops::logfile::dir(),
                },
                apps: chosen.iter().map(|app| status(app, puller)).collect(),
            }))
        }
    }
}

/// After a promote or rollback put another version live, a bare reload
/// and `--watch-tag` must follow what runs now: the reference its file was
/// pulled by, or none for a plain file.
fn follow_live(
    app: &App,
    puller: &Puller,
    result: &Result<ReloadOutcome, crate::app::ReloadError>,
) {
    if let Ok(outcome) = result {
        puller.follow(app.name(), &outcome.path);
    }
}

fn status(app: &App, puller: &Puller) -> AppStatus {
    let (reloads_ok, reloads_unchanged, reloads_refused) = app.metrics().reloads();
    let versions = app
        .versions()
        .iter()
        .map(|v| VersionStatus {
            generation: v.generation(),
            digest: v.digest().to_string(),
            state: v.state().name().to_string(),
            in_flight: v.work().running(),
            served: v.served(),
            uptime_s: v.uptime().as_secs(),
            code_bytes: v.code_bytes(),
            tier: v.tier().to_string(),
            world: v.world().name().to_string(),
            instances: v.instances_alive(),
            reuse_off: v.warm().is_off(),
            messages_in: v.counters().messages().0,
            messages_out: v.counters().messages().1,
            path: app.source_of(v.generation()),
            source: app
                .source_of(v.generation())
                .and_then(|p| puller.reference_of(&p))
                .map(|r| r.to_string()),
        })
        .collect();
    AppStatus {
        app: app.name().to_string(),
        path: app.path().borrow().clone(),
        uptime_s: app.uptime().as_secs_f64(),
        reloads_ok,
        reloads_unchanged,
        reloads_refused,
        canary_percent: app.canary_percent(),
        versions,
        keyvalue: app.keyvalue().describe(),
        source: puller.origin(app.name()).map(|r| r.to_string()),
        websockets_open: app.held().counts().open,
    }
}

/// Resident memory of this process, from /proc (0 where unavailable).
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Sends `request` to the host on `socket` and waits for its reply, at
/// most `timeout` in all. Only a socket owned by this user, served by a
/// process of this user, is trusted.
pub async fn send(
    socket: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply> {
    match tokio::time::timeout(timeout, exchange(socket, request)).await {
        Ok(reply) => reply,
        Err(_) => bail!(
            "no reply from the host on control socket {} within {}; it may be stuck, or busy with a long compile (pass --timeout to wait longer)",
            socket.display(),
            humantime::format_duration(timeout)
        ),
    }
}

async fn exchange(socket: &Path, request: &ControlRequest) -> Result<ControlReply> {
    // Owner first, without following a symlink: a socket another user put
    // at the path is not ours to talk to.
    if let Ok(meta) = std::fs::symlink_metadata(socket)
        && meta.uid() != own_uid()
    {
        bail!(
            "control socket {} belongs to uid {}, not to this user (uid {}); refusing to talk to it. If another user created it, remove it and restart the host, or pass --control with the socket your host uses",
            socket.display(),
            meta.uid(),
            own_uid()
        );
    }
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => bail!(
            "no wasm-host is running on control socket {} ({e}); start one with `wasm-host serve APP.wasm`, or pass --control with the socket it uses",
            socket.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot connect to control socket {}", socket.display()));
        }
    };
    // The owner check above races with a swap of the file; the peer's
    // credentials, taken by the kernel at connect, do not.
    let peer = stream.peer_cred().with_context(|| {
        format!(
            "cannot check who serves control socket {}",
            socket.display()
        )
    })?;
    if !client_trusts(peer.uid()) {
        bail!(
            "control socket {} is served by a process of uid {}, not of this user (uid {}); refusing to trust it",
            socket.display(),
            peer.uid(),
            own_uid()
        );
    }
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = Vec::new();
    BufReader::new(read.take(MAX_REPLY_LINE))
        .read_until(b'\n', &mut line)
        .await
        .context("the host closed the control connection without replying")?;
    if line.is_empty() {
        bail!("the host closed the control connection without replying");
    }
    serde_json::from_slice(&line).context("the host sent a reply this client does not understand")
}
