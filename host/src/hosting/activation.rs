//! Socket activation: listening sockets handed to the host by its parent,
//! by systemd's `LISTEN_FDS` protocol or by the old host in a binary
//! upgrade, so the host binary itself can be restarted or upgraded while
//! the sockets stay open and connections wait in their backlog.
//!
//! Only takes the sockets over; binding the rest and serving is done
//! elsewhere.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

/// The first passed descriptor, by the protocol.
const FIRST_FD: RawFd = 3;

/// Listening TCP sockets passed in by the parent, not yet used.
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: Vec<TcpListener>,
    /// From an old host, by the address its config named (port 0 stays 0
    /// there, while the socket has a real port).
    upgraded: Vec<(SocketAddr, TcpListener)>,
}

impl Inherited {
    /// Takes the sockets named by `LISTEN_PID`/`LISTEN_FDS` (none unless
    /// `LISTEN_PID` is this process), and removes those variables so no
    /// child process (a cargo build) sees them.
    pub fn from_env() -> Self {
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        // SAFETY: removing variables before any thread reads the
        // environment concurrently; this runs at start-up.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
        let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        let count: RawFd = count.and_then(|n| n.parse().ok()).unwrap_or(0);
        if !ours || count <= 0 {
            return Self::default();
        }
        let mut listeners = Vec::new();
        for fd in FIRST_FD..FIRST_FD + count {
            // SAFETY: the protocol hands this process descriptors 3..3+N,
            // each owned by nobody else here.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            match (listener.local_addr(), listener.set_nonblocking(true)) {
                (Ok(addr), Ok(())) => {
                    tracing::info!(%addr, fd, "took over a listening socket from the parent (socket activation)");
                    listeners.push(listener);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(fd, error = %e, "passed descriptor is not a usable TCP socket; ignoring it");
                }
            }
        }
        Self {
            listeners,
            upgraded: Vec::new(),
        }
    }

    /// Closes the sockets from an old host that no app took.
    pub fn close_upgraded(&mut self) {
        self.upgraded.clear();
    }

    /// Adds the sockets an old host passed in an upgrade, by configured
    /// address.
    pub fn add_upgraded(&mut self, sockets: Vec<(SocketAddr, TcpListener)>) {
        self.upgraded.extend(sockets);
    }

    /// The passed socket for `addr`, if there is one. With `only` set and
    /// one socket passed, that socket serves `addr` whatever its address
    /// (`systemd-socket-activate -l 8080 wasm-host serve app.wasm`).
    pub fn take(&mut self, addr: SocketAddr, only: bool) -> Option<TcpListener> {
        if let Some(i) = self.upgraded.iter().position(|(a, _)| *a == addr) {
            return Some(self.upgraded.remove(i).1);
        }
        let found = self
            .listeners
            .iter()
            .position(|l| l.local_addr().is_ok_and(|a| a == addr));
        match found {
            Some(i) => Some(self.listeners.remove(i)),
            None if only && self.listeners.len() == 1 => self.listeners.pop(),
            None => None,
        }
    }

    /// Sockets passed but not used by any app.
    pub fn unused(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .chain(self.upgraded.iter().map(|(_, l)| l))
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}
