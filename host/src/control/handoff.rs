//! The handoff between a host and its successor in a binary upgrade: what
//! the old process tells the new one (which inherited descriptors are its
//! listening sockets and control socket, and which generation of which
//! file each app runs), and the one-line answer the new process sends back
//! (ready, or why not).
//!
//! This module is the new process's side and the message format. Starting
//! the successor is `control::upgrade`; using the sockets and generations
//! is `serve`'s and the supervisor's. It never binds or loads anything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The variable naming the descriptor of the link to the old process.
pub const LINK_VAR: &str = "WASM_HOST_UPGRADE_FD";

/// Longest handoff the new process reads: a few hundred bytes per app.
const MAX_HANDOFF: u64 = 16 << 20;

/// How long the new process waits for the handoff once started.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);

/// What the old process hands over, sent as one JSON line.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Handoff {
    /// Listening sockets of the apps, by the address the config names
    /// (which may have port 0).
    pub listeners: Vec<PassedSocket>,
    /// The admin listener, if the host runs one.
    pub admin: Option<PassedSocket>,
    /// The control socket.
    pub control: Option<PassedControl>,
    /// What each app runs now.
    pub apps: Vec<CarriedApp>,
}

/// A listening TCP socket passed as an inherited descriptor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PassedSocket {
    /// The address as configured.
    pub addr: SocketAddr,
    /// The address the socket is bound to (another one than configured for
    /// a socket systemd passed as the only one).
    #[serde(default)]
    pub bound: Option<SocketAddr>,
    /// The descriptor number in the new process.
    pub fd: RawFd,
}

/// The control socket passed as an inherited descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassedControl {
    /// Its path.
    pub path: PathBuf,
    /// The descriptor number in the new process.
    pub fd: RawFd,
}

/// The live version of one app, carried on by the new process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedApp {
    /// The app.
    pub name: String,
    /// Its live generation, which the new process serves under the same
    /// number (and counts on from).
    pub generation: u64,
    /// The component file that generation was loaded from.
    pub path: PathBuf,
    /// The pinned registry reference that file was pulled by, if any.
    pub source: Option<String>,
}

impl Handoff {
    /// Every descriptor named, for the old process to let the new one
    /// inherit.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd).collect();
        fds.extend(self.admin.map(|a| a.fd));
        fds.extend(self.control.as_ref().map(|c| c.fd));
        fds
    }
}

/// The new process's answer, one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// Every app loaded and every listener accepts.
    Ready,
    /// The new process cannot serve; it exits.
    Failed(String),
}

/// The new process's end of the link to the old one, to answer on.
pub struct Successor {
    link: Mutex<Option<UnixStream>>,
}

/// What a new process took over from the old one, now owned here.
#[derive(Default)]
pub struct Passed {
    /// App listeners by configured address.
    pub listeners: Vec<(SocketAddr, TcpListener)>,
    /// The admin listener, by configured address.
    pub admin: Option<(SocketAddr, TcpListener)>,
    /// The control socket and its path.
    pub control: Option<(PathBuf, UnixListener)>,
    /// What each app ran in the old process.
    pub apps: Vec<CarriedApp>,
}

impl Successor {
    /// Reads the handoff when this process was started by an upgrade
    /// (`None` otherwise), and takes ownership of the descriptors it names.
    /// Call at start-up before any thread starts: it changes the
    /// environment.
    pub fn from_env() -> Result<Option<(Self, Passed)>> {
        let Some(text) = std::env::var_os(LINK_VAR) else {
            return Ok(None);
        };
        // SAFETY: start-up, before any other thread reads the environment.
        unsafe { std::env::remove_var(LINK_VAR) };
        let fd: RawFd = text
            .to_str()
            .and_then(|t| t.parse().ok())
            .filter(|fd| *fd > 2)
            .with_context(|| {
                format!("{LINK_VAR}={text:?} is not a descriptor number; it is set only by `wasm-host upgrade`")
            })?;
        close_on_exec(fd).with_context(|| format!("{LINK_VAR}={fd} names no open descriptor"))?;
        // SAFETY: the old process passed this descriptor for us alone.
        let link = unsafe { UnixStream::from_raw_fd(fd) };
        let handoff = read_handoff(&link)?;
        let passed = take_passed(handoff, fd)?;
        tracing::info!(
            listeners = passed.listeners.len(),
            apps = passed.apps.len(),
            "taking over from the old process"
        );
        Ok(Some((
            Self {
                link: Mutex::new(Some(link)),
            },
            passed,
        )))
    }

    /// Tells the old process this one serves; it then stops accepting and
    /// drains.
    pub fn ready(&self) {
        self.answer(&Answer::Ready);
    }

    /// Tells the old process this one cannot serve, and why; it keeps
    /// serving.
    pub fn failed(&self, why: &str) {
        self.answer(&Answer::Failed(why.to_string()));
    }

    /// Sends `answer` once; later answers are dropped.
    fn answer(&self, answer: &Answer) {
        let Some(mut link) = self.link.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let line = match serde_json::to_string(answer) {
            Ok(line) => line + "\n",
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the answer to the old process");
                return;
            }
        };
        if let Err(e) = link.write_all(line.as_bytes()) {
            // The old process gave up waiting (and will kill this one), or
            // died: nothing to tell.
            tracing::warn!(error = %e, "cannot answer the old process");
        }
    }
}

/// Takes ownership of each descriptor `handoff` names, checking each is
/// open, named once, and the kind of socket it is said to be. `link` is
/// the link's own descriptor.
fn take_passed(handoff: Handoff, link: RawFd) -> Result<Passed> {
    let mut seen = vec![link];
    let mut owned = |fd: RawFd| -> Result<RawFd> {
        if fd <= 2 || seen.contains(&fd) {
            bail!("the handoff names descriptor {fd} twice or a standard stream");
        }
        seen.push(fd);
        close_on_exec(fd).with_context(|| format!("passed descriptor {fd} is not open"))?;
        Ok(fd)
    };
    let mut listeners = Vec::new();
    for passed in &handoff.listeners {
        let listener = tcp_listener(owned(passed.fd)?, passed)?;
        listeners.push((passed.addr, listener));
    }
    let admin = match handoff.admin {
        Some(passed) => Some((passed.addr, tcp_listener(owned(passed.fd)?, &passed)?)),
        None => None,
    };
    let control = match &handoff.control {
        Some(passed) => {
            // SAFETY: checked to be open and named once.
            let listener = unsafe { UnixListener::from_raw_fd(owned(passed.fd)?) };
            let at = listener
                .local_addr()
                .context("the passed control descriptor is not a Unix socket")?;
            if at.as_pathname() != Some(passed.path.as_path()) {
                bail!(
                    "the passed control socket is bound to {:?}, not {}",
                    at.as_pathname(),
                    passed.path.display()
                );
            }
            listener
                .set_nonblocking(true)
                .context("cannot make the passed control socket non-blocking")?;
            Some((passed.path.clone(), listener))
        }
        None => None,
    };
    Ok(Passed {
        listeners,
        admin,
        control,
        apps: handoff.apps,
    })
}

/// Reads the one handoff line, bounded in size and time.
fn read_handoff(link: &UnixStream) -> Result<Handoff> {
    link.set_read_timeout(Some(HANDOFF_TIMEOUT))
        .context("cannot set a timeout on the upgrade link")?;
    let mut line = Vec::new();
    BufReader::new(link.take(MAX_HANDOFF))
        .read_until(b'\n', &mut line)
        .context("cannot read the handoff from the old process")?;
    if line.is_empty() {
        bail!("the old process sent no handoff (it exited or gave up)");
    }
    serde_json::from_slice(&line).context("the handoff from the old process is malformed")
}

/// Takes a passed listening TCP socket, checking it is one and is bound
/// where the handoff says.
fn tcp_listener(fd: RawFd, passed: &PassedSocket) -> Result<TcpListener> {
    let configured = passed.addr;
    // SAFETY: checked by the caller to be open and named once.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let local = listener
        .local_addr()
        .with_context(|| format!("passed descriptor {fd} for {configured} is not a TCP socket"))?;
    let same_place = match passed.bound {
        Some(bound) => local == bound,
        None => {
            local.ip() == configured.ip()
                && (configured.port() == 0 || local.port() == configured.port())
        }
    };
    if !same_place {
        bail!("passed descriptor {fd} is bound to {local}, not where the handoff says");
    }
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot make the passed socket for {configured} non-blocking"))?;
    Ok(listener)
}

/// Marks `fd` close-on-exec, so a process this one starts later (a crate
/// build) does not hold the sockets; fails if `fd` is not open.
fn close_on_exec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a number; an unopened one fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_round_trips_and_lists_its_descriptors() {
        let handoff = Handoff {
            listeners: vec![PassedSocket {
                addr: "127.0.0.1:0".parse().unwrap(),
                bound: Some("127.0.0.1:4000".parse().unwrap()),
                fd: 7,
            }],
            admin: Some(PassedSocket {
                addr: "127.0.0.1:9".parse().unwrap(),
                bound: None,
                fd: 8,
            }),
            control: Some(PassedControl {
                path: "/run/x.sock".into(),
                fd: 9,
            }),
            apps: vec![CarriedApp {
                name: "a".into(),
                generation: 4,
                path: "/srv/a.wasm".into(),
                source: None,
            }],
        };
        let text = serde_json::to_string(&handoff).unwrap();
        let back: Handoff = serde_json::from_str(&text).unwrap();
        assert_eq!(back.fds(), vec![7, 8, 9]);
        assert_eq!(back.apps, handoff.apps);
    }

    #[test]
    fn a_descriptor_that_is_not_open_is_refused() {
        assert!(close_on_exec(1 << 20).is_err());
    }
}
