//! A real Pushpin (Debian's `pushpin` package) on loopback in front of one
//! backend, as a plain HTTP proxy that speaks WebSocket-over-HTTP to it:
//! its own config in a temporary directory, its client and publish ports
//! chosen free, its internal ZeroMQ sockets as files in that directory, so
//! parallel tests (and a packaged Pushpin, if one runs) never meet.
//! Stopped on drop.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key Pushpin signs its `Grip-Sig` with (`sig_key`), which the
/// backend is given as `--grip-key`.
pub const SIG_KEY: &str = "wasm-host-test";

/// How long Pushpin may take to accept connections on both ports.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running Pushpin (its `pushpin` runner and the services it starts).
pub struct Pushpin {
    child: Child,
    addr: String,
    publish_addr: String,
    dir: tempfile::TempDir,
}

impl Pushpin {
    /// Starts Pushpin forwarding everything to `backend` (`127.0.0.1:PORT`)
    /// with WebSockets turned into WebSocket-over-HTTP (`over_http`), and
    /// waits until its client and publish ports accept connections.
    pub fn start(backend: &str) -> Pushpin {
        Self::start_with(backend, &super::free_addr())
    }

    /// Like [`Pushpin::start`], with the publish endpoint on
    /// `publish_addr` (chosen before the backend starts, so the backend can
    /// be told where to publish).
    pub fn start_with(backend: &str, publish_addr: &str) -> Pushpin {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let publish_addr = publish_addr.to_string();
        // Two ports free now; the same one twice is unlikely but possible.
        let addr = (0..10)
            .map(|_| super::free_addr())
            .find(|other| *other != publish_addr)
            .expect("a second free loopback port");
        let publish_port = publish_addr
            .rsplit_once(':')
            .map(|(_, port)| port)
            .expect("a port");
        let run = root.join("run");
        let ipc = |name: &str| format!("ipc://{}/{name}", run.display());
        // The packaged internal.conf points the proxy at a system zurl
        // (/var/run/zurl); this instance starts its own (`services`) and
        // reaches it through its run directory. The handler's ZeroMQ
        // sockets, TCP in the packaged config, are files there too.
        let conf = format!(
            "[global]
include=/usr/lib/pushpin/internal.conf
rundir={run}
ipc_prefix=pushpin-
port_offset=0

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port={addr}
logdir={log}
log_level=2

[proxy]
routesfile=routes
sig_iss=pushpin
sig_key={SIG_KEY}
zurl_out_specs={zurl_in}
zurl_out_stream_specs={zurl_in_stream}
zurl_in_specs={zurl_out}

[handler]
push_in_spec={push_in}
push_in_sub_specs={push_in_sub}
push_in_http_addr=127.0.0.1
push_in_http_port={publish_port}
command_spec={command}
stats_spec={stats}
",
            run = run.display(),
            log = root.join("log").display(),
            zurl_in = ipc("pushpin-zurl-in"),
            zurl_in_stream = ipc("pushpin-zurl-in-stream"),
            zurl_out = ipc("pushpin-zurl-out"),
            push_in = ipc("pushpin-push-in"),
            push_in_sub = ipc("pushpin-push-in-sub"),
            command = ipc("pushpin-command"),
            stats = ipc("pushpin-stats"),
        );
        let file = root.join("pushpin.conf");
        std::fs::write(&file, conf).expect("write pushpin.conf");
        std::fs::write(root.join("routes"), format!("* {backend},over_http\n"))
            .expect("write routes");
        let log = root.join("pushpin.log");
        let out = File::create(&log).expect("create pushpin.log");
        let err = out.try_clone().expect("clone the log file");
        let child = Command::new("pushpin")
            .arg(format!("--config={}", file.display()))
            // The services' output in the one log, beside the runner's.
            .arg("--merge-output")
            .current_dir(root)
            // Its own process group, so a SIGKILL fallback on drop reaches
            // the services too.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("pushpin runs (tests/run.sh installs it: `apt-get install pushpin`)");
        let mut pushpin = Pushpin {
            child,
            addr,
            publish_addr,
            dir,
        };
        pushpin.wait_until_accepting();
        pushpin
    }

    /// `127.0.0.1:PORT` clients connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT` of its GRIP publish endpoint (`POST /publish/`).
    pub fn publish_addr(&self) -> &str {
        &self.publish_addr
    }

    /// The last `lines` lines of its log (the runner's and the services',
    /// merged), for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pushpin.log")
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for addr in [self.addr.clone(), self.publish_addr.clone()] {
            while std::net::TcpStream::connect(&addr).is_err() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "pushpin exited ({status}) before {addr} accepted; its log ends:\n{}",
                        self.log_tail(40)
                    );
                }
                if Instant::now() >= deadline {
                    panic!(
                        "pushpin did not accept on {addr} within {START_TIMEOUT:?}; its log ends:\n{}",
                        self.log_tail(40)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Accepting is the front (condure) only: the proxy behind it joins
        // over ZeroMQ a moment later, and until then a request gets its
        // connection closed (seen in CI on a loaded machine). Ready means a
        // request through it reaches the backend.
        while !self.answers_200("/") {
            if Instant::now() >= deadline {
                panic!(
                    "pushpin accepted on {} but passed no request to the backend within {START_TIMEOUT:?}; its log ends:\n{}",
                    self.addr,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `GET path` through Pushpin answers `200`: a response the
    /// backend holds (`Grip-Hold`) goes through Pushpin's handler, which
    /// joins the proxy a moment after the proxy joins the front (seen in
    /// CI: a `500` for the first held stream).
    pub fn wait_until_answering(&self, path: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.answers_200(path) {
            if Instant::now() >= deadline {
                panic!(
                    "GET {path} through pushpin did not answer 200 within {START_TIMEOUT:?}; its log ends:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `GET path` through Pushpin gets a `200`.
    fn answers_200(&self, path: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
    }
}

/// The last `lines` lines of the file at `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SIGTERM to the runner, which stops its services and then itself.
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The whole group the runner leads (it and the services it
        // started), which the spawn above made ours.
        // SAFETY: as above; a negative pid names our child's process group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
