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
use tokio_util::sync::CancellationToken;

use crate::app::{App, ReloadOutcome};

/// A request from a CLI command to the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Reload from `path`, or from the current path when absent.
    Reload {
        /// An absolute path to a new component file.
        path: Option<PathBuf>,
    },
    /// Report what runs.
    Status,
}

/// The host's reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum ControlReply {
    /// The reload succeeded (or found nothing changed).
    Reloaded(ReloadOutcome),
    /// The request failed; the live version keeps serving.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// What runs now.
    Status(StatusReport),
}

/// A snapshot of one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The app's name.
    pub app: String,
    /// The component file of the live version.
    pub path: PathBuf,
    /// The live version first, then the draining ones.
    pub versions: Vec<VersionStatus>,
}

/// A snapshot of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStatus {
    /// Generation number.
    pub generation: u64,
    /// Content digest.
    pub digest: String,
    /// `live` or `draining`.
    pub state: String,
    /// Pieces of work running now (requests and background work).
    pub in_flight: usize,
    /// Requests answered.
    pub served: u64,
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

    /// Answers requests for `app` until `shutdown` fires.
    pub async fn serve(self, app: Arc<App>, shutdown: CancellationToken) {
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
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &app).await {
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
async fn answer(stream: UnixStream, app: &App) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(ControlRequest::Reload { path }) => match app.reload(path).await {
            Ok(outcome) => ControlReply::Reloaded(outcome),
            Err(e) => ControlReply::Failed {
                error: e.to_string(),
            },
        },
        Ok(ControlRequest::Status) => ControlReply::Status(status(app)),
        Err(e) => ControlReply::Failed {
            error: format!("malformed control request: {e}"),
        },
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

fn status(app: &App) -> StatusReport {
    let describe = |v: &crate::version::Version, state: &str| VersionStatus {
        generation: v.generation(),
        digest: v.digest().to_string(),
        state: state.to_string(),
        in_flight: v.work().running(),
        served: v.served(),
    };
    let mut versions = vec![describe(&app.live(), "live")];
    versions.extend(app.draining().iter().map(|v| describe(v, "draining")));
    StatusReport {
        app: app.name().to_string(),
        path: app.path().borrow().clone(),
        versions,
    }
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
