//! Upgrading the host binary without a gap (`wasm-host upgrade`, SIGUSR2):
//! the running host starts the new binary with the same arguments, lets it
//! inherit the listening sockets and the control socket, hands it what
//! each app runs (see `control::handoff`), and waits for its answer. Only
//! a "ready" makes the old process stop accepting and drain; anything else
//! (the binary does not start, an app does not load, no answer in time)
//! stops the new process and leaves the old one serving, with the reason.
//!
//! Written here rather than on `shellflip` or `ecdysis`: both re-execute
//! `argv[0]`, so neither can start a binary at another path
//! (`--binary`); `ecdysis` kills a successor that is not ready within a
//! fixed 5 s, while a cold compile of a 12.8 MB JavaScript component was
//! measured at 4–11 s on these machines; and both take restart requests
//! on a socket of their own, outside the control protocol that checks the
//! caller's uid and reports errors. The part they share with this module,
//! fork+exec with inherited descriptors, is a dozen lines.
//!
//! This module starts and watches the successor; it does not stop the old
//! host's listeners or apps (`serve` does, once this reports ready).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::control::handoff::{Answer, Handoff, LINK_VAR};

/// How long a successor may take to load every app, unless the ask says.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// An ask to upgrade: sent by the control socket and by SIGUSR2, carried
/// out by `serve`, which holds the sockets.
pub struct UpgradeAsk {
    /// The binary to start; `None` for the path this host was started from.
    pub binary: Option<PathBuf>,
    /// How long the new process may take to be ready.
    pub wait: Duration,
    /// The new process's id, or why there is none.
    pub reply: oneshot::Sender<Result<u32, String>>,
}

static OWN_BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Records the path this process was started by. Call at start-up, before
/// the working directory could change. It is `argv[0]` made absolute, not
/// `/proc/self/exe`: once a deploy replaces the file or moves a symlink,
/// `/proc/self/exe` names the old binary, while the path names the new
/// one, which is what an upgrade starts.
pub fn remember_own_binary() {
    OWN_BINARY.get_or_init(started_as);
}

/// The binary an upgrade starts when none is named.
pub fn own_binary() -> Result<PathBuf> {
    OWN_BINARY
        .get_or_init(started_as)
        .clone()
        .ok_or_else(|| anyhow!("cannot tell which binary this host runs; pass --binary PATH"))
}

/// `argv[0]` as a path: relative to the working directory when it has a
/// slash, else found on `PATH` (as the shell found it); the resolved
/// executable when neither works.
fn started_as() -> Option<PathBuf> {
    let arg0 = PathBuf::from(std::env::args_os().next()?);
    if arg0.components().count() > 1 {
        return std::path::absolute(&arg0).ok();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&arg0))
                .find(|candidate| candidate.is_file())
        })
        .and_then(|found| std::path::absolute(found).ok())
        .or_else(|| std::env::current_exe().ok())
}

/// Starts `binary` as this host's successor with `handoff`, and waits up
/// to `wait` for it to be ready. Returns its process id. On any failure
/// the successor is killed, and the error says why.
pub async fn start_successor(binary: &Path, handoff: &Handoff, wait: Duration) -> Result<u32> {
    check_runnable(binary)?;
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().context("cannot make the upgrade link")?;
    let mut inherit = handoff.fds();
    inherit.push(theirs.as_raw_fd());
    let mut command = tokio::process::Command::new(binary);
    command
        .args(std::env::args_os().skip(1))
        .env(LINK_VAR, theirs.as_raw_fd().to_string())
        // The watchdog belongs to the main process, which the successor
        // becomes; this variable would name the old one.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec; only fcntl, which is
    // async-signal-safe, on numbers collected before the fork.
    unsafe {
        command.pre_exec(move || keep_across_exec(&inherit));
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    tracing::info!(binary = %binary.display(), pid, "upgrade: started the new binary; waiting for it to load every app");

    ours.set_nonblocking(true)
        .context("cannot set up the upgrade link")?;
    let link = tokio::net::UnixStream::from_std(ours).context("cannot set up the upgrade link")?;
    let answer = tokio::time::timeout(wait, exchange(link, handoff)).await;
    let why = match answer {
        Ok(Ok(Answer::Ready)) => {
            // Forgotten, not dropped: dropping would kill it
            // (kill_on_drop), and from here on it outlives this process.
            std::mem::forget(child);
            return Ok(pid);
        }
        Ok(Ok(Answer::Failed(why))) => why,
        Ok(Err(e)) => format!("{e:#}"),
        Err(_) => format!("it was not ready within {}s", wait.as_secs()),
    };
    let status = stop(&mut child, pid).await;
    bail!(
        "the new binary {} did not take over{status}: {why}; this host keeps serving",
        binary.display()
    )
}

/// Stops a successor that did not take over: SIGTERM first, so one that
/// already accepted connections drains them (the sockets are shared), then
/// SIGKILL after a bound. Returns its exit status for the message.
async fn stop(child: &mut tokio::process::Child, pid: u32) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!(" ({status})");
    }
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        return format!(" ({status})");
    }
    let _ = child.start_kill();
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => format!(" ({status})"),
        _ => String::new(),
    }
}

/// Sends the handoff and reads the one-line answer.
async fn exchange(link: tokio::net::UnixStream, handoff: &Handoff) -> Result<Answer> {
    let (read, mut write) = link.into_split();
    let mut line = serde_json::to_string(handoff).context("cannot encode the handoff")?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .context("the new binary exited before it took the handoff")?;
    let mut answer = Vec::new();
    BufReader::new(read.take(1 << 20))
        .read_until(b'\n', &mut answer)
        .await
        .context("cannot read the new binary's answer")?;
    if answer.is_empty() {
        bail!("it exited before it was ready (its error is in the log above)");
    }
    serde_json::from_slice(&answer).context("the new binary answered something unreadable")
}

/// Clears close-on-exec on `fds`, in the forked child.
fn keep_across_exec(fds: &[RawFd]) -> std::io::Result<()> {
    for fd in fds {
        // SAFETY: fcntl on descriptors open in the parent at the fork.
        if unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A clear error for a binary that cannot be run, before anything starts.
fn check_runnable(binary: &Path) -> Result<()> {
    let meta = std::fs::metadata(binary)
        .with_context(|| format!("cannot upgrade to {}", binary.display()))?;
    if !meta.is_file() {
        bail!("cannot upgrade to {}: not a regular file", binary.display());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!(
            "cannot upgrade to {}: not executable (chmod +x it)",
            binary.display()
        );
    }
    Ok(())
}
