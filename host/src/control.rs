//! The local control protocol between `wasm-host reload|status` and a
//! running host: one JSON request and one JSON reply per line, over a Unix
//! socket that only its owner may use (mode 0600).
//!
//! The server side turns requests into calls on the app; it does not know
//! how a reload works. The client side is what the CLI commands use.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::app::{App, ReloadOutcome};
use crate::apps::Apps;
use crate::fleet::Applied;
use crate::oci::{Puller, Reference};
use crate::pull;
use crate::rollout::CanaryPlan;
use crate::serve::ConfigAsk;

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
    /// The component file of the live version.
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
}

/// The host's end of the control socket.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket left by a crashed host and
    /// refusing to start beside a live one.
    pub fn bind(path: &Path) -> Result<Self> {
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the directory {}", dir.display()))?;
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
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Answers requests about `apps` until `shutdown` fires; asks to apply
    /// the config file go to `config` (absent when the host runs no config
    /// file).
    pub async fn serve(
        self,
        apps: Arc<Apps>,
        puller: Arc<Puller>,
        config: Option<mpsc::Sender<ConfigAsk>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let (apps, puller, config) = (apps.clone(), puller.clone(), config.clone());
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &apps, &puller, config.as_ref()).await {
                    tracing::warn!(error = %format!("{e:#}"), "control request failed");
                }
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request from `stream`, acts on it, writes the reply.
async fn answer(
    stream: UnixStream,
    apps: &Apps,
    puller: &Puller,
    config: Option<&mpsc::Sender<ConfigAsk>>,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(request) => match act(request, apps, puller, config).await {
            Ok(reply) => reply,
            Err(error) => ControlReply::Failed { error },
        },
        Err(e) => ControlReply::Failed {
            error: format!("malformed control request: {e}"),
        },
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Carries out one request on the app it names.
async fn act(
    request: ControlRequest,
    apps: &Apps,
    puller: &Puller,
    config: Option<&mpsc::Sender<ConfigAsk>>,
) -> Result<ControlReply, String> {
    let changed = |result: Result<ReloadOutcome, crate::app::ReloadError>| {
        result
            .map(ControlReply::Reloaded)
            .map_err(|e| e.to_string())
    };
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
        ControlRequest::Promote { app } => changed(apps.find(app.as_deref())?.promote().await),
        ControlRequest::Abort { app } => changed(apps.find(app.as_deref())?.abort().await),
        ControlRequest::Rollback { app } => changed(apps.find(app.as_deref())?.rollback().await),
        ControlRequest::ApplyConfig { path } => {
            let config = config.ok_or(
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
        ControlRequest::Status { app } => {
            let chosen = match app {
                Some(name) => vec![apps.find(Some(&name))?],
                None => apps.all().to_vec(),
            };
            Ok(ControlReply::Status(StatusReport {
                host: HostStatus {
                    pid: std::process::id(),
                    rss_bytes: resident_bytes(),
                    log_dir: crate::logfile::dir(),
                },
                apps: chosen.iter().map(|app| status(app, puller)).collect(),
            }))
        }
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

/// Sends `request` to the host on `socket` and waits for its reply.
pub async fn send(socket: &Path, request: &ControlRequest) -> Result<ControlReply> {
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
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .context("the host closed the control connection without replying")?;
    if line.is_empty() {
        bail!("the host closed the control connection without replying");
    }
    serde_json::from_str(&line).context("the host sent a reply this client does not understand")
}
