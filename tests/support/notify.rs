//! systemd's side of `sd_notify` for the end-to-end tests: a Unix
//! datagram socket to name in `NOTIFY_SOCKET`, and what arrived on it.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// systemd's end of the notification socket.
pub struct Notify {
    socket: UnixDatagram,
    /// Where the socket is bound.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    /// Every message received so far, in order.
    pub seen: Vec<String>,
}

impl Notify {
    pub fn bind() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify {
            socket,
            path,
            _dir: dir,
            seen: Vec::new(),
        }
    }

    /// Waits for the next message that satisfies `want`, skipping others
    /// (watchdog pings among them); panics with all messages on timeout.
    pub fn next(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if want(&msg) {
                return msg;
            }
        }
        panic!(
            "no matching notification within {timeout:?}; saw {:#?}",
            self.seen
        );
    }

    /// Messages that arrive within `window`.
    pub fn drain(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                got.push(msg);
            }
        }
        got
    }
}
