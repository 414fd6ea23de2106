//! Shared pieces of the end-to-end tests: building the example apps,
//! stamping versions into them, running the real `wasm-host` binary, and
//! small HTTP/1.1 and HTTP/2 clients. Everything talks to 127.0.0.1 only and
//! every wait is bounded.
#![allow(dead_code)]

pub mod nginx;
pub mod notify;
pub mod pushpin;
pub mod redis;
pub mod registry;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// The `wasm-host` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wasm-host");

/// Builds the example apps once per test binary and returns the folder that
/// holds their `.wasm` files.
pub fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples-target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(repo.join("examples/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example apps failed");
        target.join("wasm32-wasip2/release")
    })
}

/// The built example `name` (e.g. `hello`).
pub fn example(name: &str) -> Vec<u8> {
    let path = examples_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `bytes` of an example with `version` stamped in (see examples/stamp).
pub fn stamp(bytes: &[u8], version: &str) -> Vec<u8> {
    stamp::restamp(bytes, version).expect("the component carries a version stamp")
}

/// Writes example `name` stamped with `version` to `path`.
pub fn write_version(path: &Path, name: &str, version: &str) {
    std::fs::write(path, stamp(&example(name), version)).expect("write component");
}

/// Runs the `openssl` command with `args` in `dir` (test certificates);
/// panics with its output on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback `127.0.0.1:PORT` with a port free right now, for a server
/// the test starts on it.
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .to_string()
}

/// Request lines a listener got, each with the moment it arrived.
pub type Seen = Arc<std::sync::Mutex<Vec<(Instant, String)>>>;

/// A listener that records the request lines it gets, with their time.
pub fn notify_listener() -> (u16, Seen) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let book = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            book.lock()
                .unwrap()
                .push((Instant::now(), line.trim().to_string()));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

/// Log lines of a running host, with the moment each was read.
#[derive(Default)]
struct LogBook {
    lines: Mutex<Vec<(Instant, String)>>,
    grew: Condvar,
}

/// A running `wasm-host serve`, killed on drop.
pub struct Host {
    child: Child,
    /// The address it listens on.
    pub addr: String,
    /// Its control socket.
    pub control: PathBuf,
    logs: Arc<LogBook>,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Starts `wasm-host serve component` on a free port with a private
    /// control socket, plus `args`, and waits until it listens.
    pub fn start(component: &Path, args: &[&str]) -> Host {
        Self::start_env(component, args, &[])
    }

    /// Like [`Host::start`], with extra environment variables for the host.
    pub fn start_env(component: &Path, args: &[&str], env: &[(&str, &Path)]) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        Self::start_with(component, &control, args, env, dir)
    }

    /// Like [`Host::start_env`] with a chosen control socket.
    pub fn start_with(
        component: &Path,
        control: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
        dir: tempfile::TempDir,
    ) -> Host {
        let mut serve: Vec<std::ffi::OsString> = vec![component.into()];
        serve.extend(["--listen", "127.0.0.1:0"].map(Into::into));
        serve.extend(args.iter().map(Into::into));
        Self::spawn(&serve, control, env, dir)
    }

    /// Starts `wasm-host serve --config FILE` plus `args` with a private
    /// control socket and cache; waits until a listener is up.
    pub fn start_config(file: &Path, args: &[&str]) -> Host {
        Self::start_config_env(file, args, &[])
    }

    /// Like [`Host::start_config`], with extra environment variables.
    pub fn start_config_env(file: &Path, args: &[&str], env: &[(&str, &Path)]) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        let mut serve: Vec<std::ffi::OsString> = vec!["--config".into(), file.into()];
        serve.extend(args.iter().map(Into::into));
        Self::spawn(&serve, &control, env, dir)
    }

    fn spawn(
        serve: &[std::ffi::OsString],
        control: &Path,
        env: &[(&str, &Path)],
        dir: tempfile::TempDir,
    ) -> Host {
        let mut command = Command::new(BIN);
        command.arg("serve").args(serve);
        // Key-value files stay private to the test unless it names a place
        // (a config file names its own).
        if !serve.iter().any(|a| a == "--data-dir" || a == "--config") {
            command.arg("--data-dir").arg(dir.path().join("data"));
        }
        // A private compile and pull cache, unless the test shares one.
        if !serve.iter().any(|a| a == "--cache-dir") {
            command.arg("--cache-dir").arg(dir.path().join("cache"));
        }
        let mut child = command
            .arg("--control")
            .arg(control)
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .env("WASM_HOST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasm-host");
        let logs = Arc::new(LogBook::default());
        let stderr = child.stderr.take().expect("stderr piped");
        let book = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("host| {line}");
                book.lines.lock().unwrap().push((Instant::now(), line));
                book.grew.notify_all();
            }
        });
        let mut host = Host {
            child,
            addr: String::new(),
            control: control.to_path_buf(),
            logs,
            _dir: dir,
        };
        // Generous: serving a crate directory builds it first.
        // `http://` or, for a TLS listener, `https://`.
        let line = host.wait_log("listening on http", Duration::from_secs(240));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|url| url.split_once("://"))
            .map(|(_, rest)| rest)
            .expect("address follows")
            // Text ends the address at a space, a JSON line at its quote.
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .expect("address")
            .to_string();
        host.addr = addr;
        host
    }

    /// Waits for a log line containing `needle`; panics with the log on timeout.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_where(timeout, |l| l.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no log line with {needle:?} within {timeout:?}:\n{}",
                    self.log_text()
                )
            })
            .1
    }

    /// Waits for a log line for which `pred` holds; returns when it was read.
    pub fn wait_log_where(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.logs.lines.lock().unwrap();
        loop {
            if let Some(found) = lines.iter().find(|(_, l)| pred(l)) {
                return Some(found.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self
                .logs
                .grew
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| needles.iter().all(|n| l.contains(n)))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        let lines = self.logs.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `wasm-host reload [path]` against this host.
    pub fn reload(&self, path: Option<&Path>) -> Output {
        let path = path.map(|p| p.to_str().expect("utf-8 path"));
        self.ctl(&[&["reload"], path.as_slice()].concat())
    }

    /// Runs `wasm-host ARGS… --control SOCKET` against this host.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--control")
            .arg(&self.control)
            .output()
            .expect("run wasm-host")
    }

    /// Like [`Host::ctl`], insisting on success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "wasm-host {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `wasm-host status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.ctl_ok(&["status", "--json"]);
        serde_json::from_str(&out).expect("status --json prints JSON")
    }

    /// The admin address the host logged (it was started with `--admin`).
    pub fn admin_addr(&self) -> String {
        let line = self.wait_log("admin: http://", Duration::from_secs(5));
        line.split("admin: http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("address in the admin line")
            .to_string()
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most 5 s) until the first app's live version has `n`
    /// requests in flight, so a test knows its slow request is being worked
    /// on rather than still waiting to be read.
    pub async fn wait_in_flight(&self, n: u64) {
        for _ in 0..100 {
            let status = self.status_json();
            if status["apps"][0]["versions"][0]["in_flight"].as_u64() == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never saw {n} in flight");
    }

    /// Runs `wasm-host reload path` and insists that it succeeded.
    pub fn reload_ok(&self, path: &Path) -> String {
        self.ctl_ok(&["reload", path.to_str().expect("utf-8 path")])
    }

    /// Sends `signal` to the host.
    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the host to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory of the host's per-app log files.
    pub fn log_dir(&self) -> PathBuf {
        self._dir.path().join("logs")
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

fn request(addr: &str, path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(Empty::new())
        .expect("request")
}

/// Waits for a sent request's response and reads it whole.
async fn answer(
    sent: impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) -> Result<Answer, String> {
    let response = sent.await.map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `None` for a request hyper reports canceled: the connection closed (or
/// the server said GOAWAY) before the request went out, so the server never
/// saw it, and a client sends it again on a new connection (as hyper-util's
/// pooled client does). Otherwise the answer, read whole.
async fn unsent_or_answer(
    sent: hyper::Result<hyper::Response<hyper::body::Incoming>>,
) -> Option<Result<Answer, String>> {
    match sent {
        Err(e) if e.is_canceled() => None,
        // HTTP/2's REFUSED_STREAM: the server took no part of the stream
        // (sent after its GOAWAY), which RFC 9113 §8.7 makes safe to retry.
        Err(e) if format!("{e:?}").contains("REFUSED_STREAM") => None,
        Err(e) => Some(Err(format!("send: {e:?}"))),
        sent => Some(answer(std::future::ready(sent)).await),
    }
}

/// A TCP connection to `addr`, ready for a hyper client handshake.
async fn open(addr: &str) -> Result<TokioIo<TcpStream>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(TokioIo::new(stream))
}

/// GET on a fresh HTTP/1.1 connection.
pub async fn get(addr: &str, path: &str) -> Result<Answer, String> {
    let mut conn = H1::connect(addr).await?;
    conn.get(path).await
}

/// A keep-alive HTTP/1.1 connection.
pub struct H1 {
    addr: String,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl H1 {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: &str) -> Result<H1, String> {
        let (sender, conn) = hyper::client::conn::http1::handshake(open(addr).await?)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(H1 {
            addr: addr.to_string(),
            sender,
        })
    }

    /// GET on this connection.
    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        answer(self.sender.send_request(request(&self.addr, path))).await
    }

    /// Like [`H1::get`], but `None` when the server closed the connection
    /// before the request was sent (a client then opens a new one).
    pub async fn try_get(&mut self, path: &str) -> Option<Result<Answer, String>> {
        self.sender.ready().await.ok()?;
        unsent_or_answer(self.sender.send_request(request(&self.addr, path)).await).await
    }

    /// Whether the connection may still take a request.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// An HTTP/2 (h2c, prior knowledge) connection; clones share it.
#[derive(Clone)]
pub struct H2 {
    addr: String,
    sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

impl H2 {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: &str) -> Result<H2, String> {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), open(addr).await?)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(H2 {
            addr: addr.to_string(),
            sender,
        })
    }

    /// GET as a new stream on this connection.
    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        answer(self.sender.send_request(request(&self.addr, path))).await
    }

    /// Like [`H2::get`], but `None` when the server said GOAWAY (or closed)
    /// before the stream was sent (a client then opens a new connection).
    pub async fn try_get(&mut self, path: &str) -> Option<Result<Answer, String>> {
        self.sender.ready().await.ok()?;
        unsent_or_answer(self.sender.send_request(request(&self.addr, path)).await).await
    }

    /// Whether the connection may still take a stream.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// A whole HTTP answer with its headers and raw body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Sends `method path` with `body` on a fresh HTTP/1.1 connection.
pub async fn send(addr: &str, method: &str, path: &str, body: Vec<u8>) -> Result<Reply, String> {
    send_with(addr, method, path, &[], body).await
}

/// Like [`send`], with extra request headers.
pub async fn send_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(open(addr).await?)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::builder().method(method).uri(path);
    let request = match headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        true => request,
        false => request.header(hyper::header::HOST, addr),
    };
    let request = headers
        .iter()
        .fold(request, |r, (name, value)| r.header(*name, *value))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Polls `GET path` on fresh connections until the body contains `needle`.
pub async fn wait_for_body(addr: &str, path: &str, needle: &str, timeout: Duration) -> Answer {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        match get(addr, path).await {
            Ok(answer) if answer.body.contains(needle) => return answer,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no answer containing {needle:?} within {timeout:?}; last: {last:?}");
}
