//! TLS termination: HTTPS over HTTP/1.1 and h2 (ALPN) with the guest
//! seeing `https`, certificates swapped on disk while serving, 50 reloads
//! and 5 certificate swaps under TLS load with no failed request, a client
//! that never finishes its handshake, and SNI choosing among apps'
//! certificates on one listener. Certificates come from the `openssl`
//! CLI, signed by a CA made for each test; clients trust only that CA.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Host, free_addr, get, openssl, write_version};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, crypto::ring};

/// A test CA in `dir` (`ca.pem`, `ca.key`).
fn make_ca(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=wasm-host test CA",
        ],
    );
    dir.join("ca.pem")
}

/// A leaf for `name` signed by the CA in `dir`: `{stem}.pem` and
/// `{stem}.key`.
fn make_leaf(dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf) {
    let (key, csr, pem, ext) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
        format!("{stem}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// The DER of the first certificate in a PEM file.
fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem)
        .expect("a certificate")
        .as_ref()
        .to_vec()
}

/// A client that trusts only `ca` and offers `alpn`.
fn connector(ca: &Path, alpn: &[&[u8]]) -> TlsConnector {
    TlsConnector::from(client_config(ca, alpn))
}

/// The settings of a client that trusts only `ca` and offers `alpn`.
fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` naming `name` (SNI); bounded.
async fn tls_connect(
    ca: &Path,
    alpn: &[&[u8]],
    addr: &str,
    name: &str,
) -> Result<TlsStream<TcpStream>, String> {
    let connect = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        connector(ca, alpn)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

fn peer_der(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("a peer certificate")[0]
        .as_ref()
        .to_vec()
}

fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn get_request(host: &str, path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::new())
        .unwrap()
}

/// An HTTP/1.1 client over an open TLS connection.
struct H1s(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1s {
    async fn over(tls: TlsStream<TcpStream>) -> H1s {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(conn);
        H1s(send)
    }

    async fn get(&mut self, host: &str, path: &str) -> (u16, String) {
        let sent = self.0.send_request(get_request(host, path));
        let response = tokio::time::timeout(Duration::from_secs(10), sent)
            .await
            .expect("answer in time")
            .expect("answer");
        read(response).await
    }
}

async fn read(response: hyper::Response<hyper::body::Incoming>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A counter of the admin listener's metrics, by its full series name.
async fn metric(admin: &str, series: &str) -> u64 {
    let text = get(admin, "/metrics").await.unwrap().body;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Writes `from` to a temporary name beside `to`, then renames it over
/// `to`: what a careful deploy does.
fn replace(from: &Path, to: &Path) {
    let aside = to.with_extension("new");
    std::fs::copy(from, &aside).unwrap();
    std::fs::rename(&aside, to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_h2_and_the_guest_sees_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (cert, key) = make_leaf(dir.path(), "leaf", "localhost");
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let host = Host::start(
        &app,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    host.wait_log("listening on https://", Duration::from_secs(5));

    let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_der(&tls), der(&cert));
    let mut h1 = H1s::over(tls).await;
    assert_eq!(h1.get("localhost", "/").await, (200, "api v1\n".into()));
    assert_eq!(
        h1.get("localhost", "/scheme").await,
        (200, "https\n".into())
    );

    // Offered both, the host picks h2.
    let tls = tls_connect(&ca, &[b"h2", b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("https://localhost/scheme")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), h2.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(read(response).await, (200, "https\n".into()));

    // Cleartext on a TLS listener is not served.
    let plain = support::get(&host.addr, "/").await;
    assert!(plain.is_err(), "cleartext was answered: {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_swapped_in_and_a_bad_pair_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (first_cert, first_key) = make_leaf(dir.path(), "first", "localhost");
    let (second_cert, second_key) = make_leaf(dir.path(), "second", "localhost");
    let (third_cert, _) = make_leaf(dir.path(), "third", "localhost");
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let host = Host::start(
        &app,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );

    let open = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(peer_der(&open), der(&first_cert));
    let mut open = H1s::over(open).await;
    assert_eq!(open.get("localhost", "/").await.0, 200);

    // The key first, then the certificate: the pair in between is a
    // mismatch, which must not stop the final pair from going live.
    replace(&second_key, &key);
    replace(&second_cert, &cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
            .await
            .unwrap();
        if peer_der(&tls) == der(&second_cert) {
            let mut h1 = H1s::over(tls).await;
            assert_eq!(h1.get("localhost", "/").await, (200, "api v1\n".into()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.wait_log("TLS certificate changed", Duration::from_secs(5));
    // The connection opened before the swap goes on as it was.
    assert_eq!(open.get("localhost", "/").await, (200, "api v1\n".into()));

    // A certificate whose key is not the one on disk: refused, and the
    // second pair keeps serving.
    let refused_before = host.log_lines(&["pair was refused"]).len();
    replace(&third_cert, &cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.log_lines(&["pair was refused"]).len() == refused_before {
        assert!(
            Instant::now() < deadline,
            "the bad pair was not refused:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(peer_der(&tls), der(&second_cert));
    let mut h1 = H1s::over(tls).await;
    assert_eq!(h1.get("localhost", "/").await, (200, "api v1\n".into()));
    assert_eq!(open.get("localhost", "/").await, (200, "api v1\n".into()));
}

/// What one kind of client saw under load: answers, failures (any error
/// or non-200), and the versions that answered.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    versions: Mutex<BTreeSet<u32>>,
}

impl Tally {
    /// Counts `answer`: a 200 from some stamped version (`hello from vN`)
    /// is a success, anything else a failure.
    fn record(&self, kind: &str, answer: Result<(u16, String), String>) {
        let version = match &answer {
            Ok((200, body)) => body
                .strip_prefix("hello from v")
                .and_then(|rest| rest.strip_suffix('\n'))
                .and_then(|n| n.parse::<u32>().ok()),
            _ => None,
        };
        match version {
            Some(n) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.versions.lock().unwrap().insert(n);
            }
            None => self
                .failures
                .lock()
                .unwrap()
                .push(format!("{kind}: {answer:?}")),
        }
    }

    fn saw(&self, version: u32) -> bool {
        self.versions.lock().unwrap().contains(&version)
    }
}

/// The certificate every new handshake under load got: when it began and
/// which of the pairs (by index) the host presented.
#[derive(Default)]
struct Handshakes {
    seen: Mutex<Vec<(Instant, &'static str, usize)>>,
}

/// Opens a new TLS connection offering `protocol` and notes which of
/// `certs` the host presented; a certificate that is none of them is an
/// error.
async fn handshake(
    ca: &Path,
    protocol: &'static [u8],
    addr: &str,
    certs: &[Vec<u8>],
    log: &Handshakes,
    kind: &'static str,
) -> Result<(TlsStream<TcpStream>, usize), String> {
    let began = Instant::now();
    let tls = tls_connect(ca, &[protocol], addr, "localhost").await?;
    if alpn(&tls).as_deref() != Some(protocol) {
        return Err(format!("ALPN chose {:?}", alpn(&tls)));
    }
    let peer = peer_der(&tls);
    let index = certs
        .iter()
        .position(|c| *c == peer)
        .ok_or("the host presented a certificate it was never given")?;
    log.seen.lock().unwrap().push((began, kind, index));
    Ok((tls, index))
}

/// Sends `GET /` once the connection is ready and reads the whole answer;
/// bounded.
async fn ask<S>(send: &mut S) -> Result<(u16, String), String>
where
    S: AskOver,
{
    let work = async {
        let response = send.ask().await?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// An HTTP/1.1 or h2 connection that can send `GET /`.
trait AskOver {
    fn ask(
        &mut self,
    ) -> impl Future<Output = Result<hyper::Response<hyper::body::Incoming>, String>> + Send;
}

impl AskOver for hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    async fn ask(&mut self) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        self.ready().await.map_err(|e| format!("not ready: {e}"))?;
        self.send_request(get_request("localhost", "/"))
            .await
            .map_err(|e| format!("send: {e}"))
    }
}

impl AskOver for hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    async fn ask(&mut self) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        self.ready().await.map_err(|e| format!("not ready: {e}"))?;
        let req = hyper::Request::get("https://localhost/")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        self.send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))
    }
}

type H1Send = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type H2Send = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn open_h1(tls: TlsStream<TcpStream>) -> Result<H1Send, String> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http/1.1 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

async fn open_h2(tls: TlsStream<TcpStream>) -> Result<H2Send, String> {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// Everything a load loop needs, shared.
#[derive(Clone)]
struct Rig {
    ca: Arc<PathBuf>,
    addr: Arc<str>,
    certs: Arc<Vec<Vec<u8>>>,
    handshakes: Arc<Handshakes>,
    /// Set when the reloads and swaps are done and the load has seen the
    /// last version; or, at the latest, at `until`.
    stop: Arc<AtomicBool>,
    until: Instant,
}

impl Rig {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.until
    }

    async fn connect_h1(&self, kind: &'static str) -> Result<H1Send, String> {
        let (tls, _) = handshake(
            &self.ca,
            b"http/1.1",
            &self.addr,
            &self.certs,
            &self.handshakes,
            kind,
        )
        .await?;
        open_h1(tls).await
    }

    async fn connect_h2(&self, kind: &'static str) -> Result<H2Send, String> {
        let (tls, _) = handshake(
            &self.ca,
            b"h2",
            &self.addr,
            &self.certs,
            &self.handshakes,
            kind,
        )
        .await?;
        open_h2(tls).await
    }
}

/// At most this many requests per load loop: the loops stop long before
/// on a healthy host, this only bounds a runaway.
const MAX_PER_LOOP: usize = 20_000;

/// A new TLS handshake (ALPN http/1.1) and one `GET /` per request.
async fn fresh_loop(rig: Rig, tally: Arc<Tally>) {
    for _ in 0..MAX_PER_LOOP {
        if !rig.running() {
            break;
        }
        let answer = match rig.connect_h1("fresh").await {
            Ok(mut send) => ask(&mut send).await,
            Err(e) => Err(e),
        };
        tally.record("fresh", answer);
    }
}

/// One HTTP/1.1 connection over TLS for the whole run (opened before the
/// first swap), a new one only if it breaks (which is counted).
async fn keep_alive_loop(rig: Rig, tally: Arc<Tally>) {
    let mut conn = None;
    for _ in 0..MAX_PER_LOOP {
        if !rig.running() {
            break;
        }
        let send = match &mut conn {
            Some(send) => send,
            None => match rig.connect_h1("keep-alive").await {
                Ok(send) => conn.insert(send),
                Err(e) => {
                    tally.record("keep-alive connect", Err(e));
                    continue;
                }
            },
        };
        let answer = ask(send).await;
        if answer.is_err() {
            conn = None;
        }
        tally.record("keep-alive", answer);
    }
}

/// Streams on one h2 connection shared with other loops.
async fn h2_shared_loop(rig: Rig, mut send: H2Send, tally: Arc<Tally>) {
    for _ in 0..MAX_PER_LOOP {
        if !rig.running() {
            break;
        }
        tally.record("h2 shared", ask(&mut send).await);
    }
}

/// h2 with a new TLS handshake (ALPN h2) every 10 requests.
async fn h2_reconnect_loop(rig: Rig, tally: Arc<Tally>) {
    let mut conn = None;
    for n in 0..MAX_PER_LOOP {
        if !rig.running() {
            break;
        }
        if n % 10 == 0 {
            conn = None;
        }
        let send = match &mut conn {
            Some(send) => send,
            None => match rig.connect_h2("h2 reconnect").await {
                Ok(send) => conn.insert(send),
                Err(e) => {
                    tally.record("h2 reconnect connect", Err(e));
                    continue;
                }
            },
        };
        let answer = ask(send).await;
        if answer.is_err() {
            conn = None;
        }
        tally.record("h2 reconnect", answer);
    }
}

/// Polls new handshakes (each then asks `GET /`, counted in `tally`)
/// until the host presents certificate `want`; returns when the first
/// handshake that got it ended. Bounded by `timeout`.
async fn wait_for_cert(
    rig: Rig,
    tally: Arc<Tally>,
    want: usize,
    timeout: Duration,
) -> Result<(Instant, Duration), String> {
    let began = Instant::now();
    loop {
        match handshake(
            &rig.ca,
            b"http/1.1",
            &rig.addr,
            &rig.certs,
            &rig.handshakes,
            "probe",
        )
        .await
        {
            Ok((tls, got)) => {
                let done = Instant::now();
                let answer = match open_h1(tls).await {
                    Ok(mut send) => ask(&mut send).await,
                    Err(e) => Err(e),
                };
                tally.record("probe", answer);
                if got == want {
                    return Ok((done, done - began));
                }
            }
            Err(e) => tally.record("probe", Err(e)),
        }
        if began.elapsed() > timeout {
            return Err(format!(
                "certificate {want} not presented within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_and_five_certificate_swaps_under_tls_load_lose_no_request() {
    const RELOADS: u32 = 50;
    const SWAPS: usize = 5;
    let test_began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    // Pair 0 serves first; pairs 1..=5 are swapped in one after another.
    // Each is its own key and serial, so the DER tells them apart.
    let pairs: Vec<(PathBuf, PathBuf)> = (0..=SWAPS)
        .map(|n| make_leaf(dir.path(), &format!("pair{n}"), "localhost"))
        .collect();
    let certs: Vec<Vec<u8>> = pairs.iter().map(|(cert, _)| der(cert)).collect();
    for (i, a) in certs.iter().enumerate() {
        assert!(!certs[..i].contains(a), "two test certificates are equal");
    }
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
    std::fs::copy(&pairs[0].0, &cert).unwrap();
    std::fs::copy(&pairs[0].1, &key).unwrap();
    let app = dir.path().join("hello.wasm");
    write_version(&app, "hello", "v0");
    let hello = support::example("hello");
    // The component reloads come over the control socket, so the file
    // watch of the component is off; the certificate watch stays on.
    let host = Arc::new(Host::start(
        &app,
        &[
            "--no-watch",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    ));
    host.wait_log("listening on https://", Duration::from_secs(5));

    let rig = Rig {
        ca: Arc::new(ca),
        addr: host.addr.as_str().into(),
        certs: Arc::new(certs),
        handshakes: Arc::default(),
        stop: Arc::default(),
        until: Instant::now() + Duration::from_secs(120),
    };
    let kinds = ["fresh", "keep-alive", "h2 shared", "h2 reconnect", "probe"];
    let tallies: Vec<Arc<Tally>> = kinds.iter().map(|_| Arc::default()).collect();
    let mut loops = Vec::new();
    for _ in 0..2 {
        loops.push(tokio::spawn(fresh_loop(rig.clone(), tallies[0].clone())));
        loops.push(tokio::spawn(keep_alive_loop(
            rig.clone(),
            tallies[1].clone(),
        )));
    }
    let shared = rig.connect_h2("h2 shared").await.expect("an h2 connection");
    for _ in 0..2 {
        loops.push(tokio::spawn(h2_shared_loop(
            rig.clone(),
            shared.clone(),
            tallies[2].clone(),
        )));
    }
    loops.push(tokio::spawn(h2_reconnect_loop(
        rig.clone(),
        tallies[3].clone(),
    )));

    // 50 reloads through the control socket. Ten stamped versions, each
    // compiled on its first reload (cold, under load); the reloads after
    // go back to one of them (from the code cache), each still a new
    // generation; the last reload is a new version again, so the end of
    // the load can be told apart. A certificate swap after reloads 5, 15,
    // …, 45; its certificate is awaited by the fifth reload after it, while
    // the reloads go on.
    const VERSIONS: u32 = 10;
    let load_began = Instant::now();
    let mut swapped_in: Vec<(Instant, Duration)> = Vec::new();
    let mut pending = None;
    for n in 1..=RELOADS {
        let version = match n {
            n if n <= VERSIONS || n == RELOADS => n,
            n => (n - 1) % VERSIONS + 1,
        };
        let next = dir.path().join(format!("hello-v{version}.wasm"));
        std::fs::write(&next, support::stamp(&hello, &format!("v{version}"))).unwrap();
        // The command waits for the new version to go live: off the
        // runtime's two threads, which the load needs.
        let said = {
            let host = host.clone();
            tokio::task::spawn_blocking(move || host.reload_ok(&next))
                .await
                .unwrap()
        };
        assert!(said.contains(&format!("generation {}", n + 1)), "{said}");
        if n % 10 == 5 {
            let swap = swapped_in.len() + 1;
            // Key first, then certificate, each renamed into place, as
            // the certificate swap test does.
            replace(&pairs[swap].1, &key);
            replace(&pairs[swap].0, &cert);
            pending = Some(tokio::spawn(wait_for_cert(
                rig.clone(),
                tallies[4].clone(),
                swap,
                Duration::from_secs(10),
            )));
        }
        if n % 10 == 0 {
            let seen = pending
                .take()
                .expect("a swap is pending")
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}:\n{}", host.log_text()));
            swapped_in.push(seen);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reloads_took = load_began.elapsed();
    // Keep the load on until every kind of client was answered by the last
    // version (bounded), then stop it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tallies[..4].iter().all(|t| t.saw(RELOADS)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(Duration::from_secs(15), l)
            .await
            .expect("a load loop stopped in time")
            .unwrap();
    }
    let load_took = load_began.elapsed();

    // Zero failed requests, each answered by some version.
    let mut total = 0;
    for (kind, tally) in kinds.iter().zip(&tallies) {
        let failures = tally.failures.lock().unwrap();
        let ok = tally.ok.load(Ordering::Relaxed);
        let versions = tally.versions.lock().unwrap();
        eprintln!(
            "{kind}: {ok} answered, {} failed, {} versions",
            failures.len(),
            versions.len()
        );
        assert!(
            failures.is_empty(),
            "{kind}: {} failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(
            versions.iter().all(|v| *v <= RELOADS),
            "{kind}: unknown version in {versions:?}"
        );
        total += ok;
    }
    for (kind, tally) in kinds[..4].iter().zip(&tallies) {
        let ok = tally.ok.load(Ordering::Relaxed);
        let versions = tally.versions.lock().unwrap();
        assert!(ok >= 50, "{kind}: only {ok} requests ran");
        // Loops that began before the reloads saw them go by: many
        // versions, the last one included.
        assert!(versions.len() >= 10, "{kind}: saw only {versions:?}");
        assert!(versions.contains(&RELOADS), "{kind}: never saw v{RELOADS}");
    }

    // After each swap, new handshakes see the new certificate: once a
    // handshake got pair k, no handshake begun later got an older one.
    assert_eq!(swapped_in.len(), SWAPS);
    let handshakes = rig.handshakes.seen.lock().unwrap().clone();
    for (k, (seen_at, after)) in swapped_in.iter().enumerate() {
        let k = k + 1;
        eprintln!("certificate {k} presented {after:?} after its files were replaced");
        let stale: Vec<_> = handshakes
            .iter()
            .filter(|(began, _, got)| began > seen_at && *got < k)
            .collect();
        assert!(
            stale.is_empty(),
            "{} handshakes begun after certificate {k} was served got an older one, e.g. {:?}",
            stale.len(),
            &stale[..stale.len().min(5)]
        );
    }
    // Connections opened before the first swap were never broken: the two
    // keep-alive connections and the shared h2 one served to the end.
    let kind_count = |kind: &str| handshakes.iter().filter(|(_, k, _)| *k == kind).count();
    assert_eq!(kind_count("keep-alive"), 2, "a keep-alive connection broke");
    assert_eq!(kind_count("h2 shared"), 1);
    let new_handshakes = handshakes
        .iter()
        .filter(|(began, _, _)| *began > swapped_in[SWAPS - 1].0)
        .count();
    assert!(
        new_handshakes >= 10,
        "only {new_handshakes} handshakes after the last swap"
    );
    eprintln!(
        "{total} requests and {} handshakes over {load_took:?}; {RELOADS} reloads and {SWAPS} swaps in {reloads_took:?}",
        handshakes.len()
    );

    // The host says so too: the last version serves, every swap was taken.
    let tls = tls_connect(&rig.ca, &[b"h2"], &host.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(peer_der(&tls), rig.certs[SWAPS]);
    let mut send = open_h2(tls).await.unwrap();
    assert_eq!(
        ask(&mut send).await,
        Ok((200, format!("hello from v{RELOADS}\n")))
    );
    assert!(
        host.log_lines(&["TLS certificate changed"]).len() >= SWAPS,
        "{}",
        host.log_text()
    );
    eprintln!("the whole test took {:?}", test_began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_dropped_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (cert, key) = make_leaf(dir.path(), "leaf", "localhost");
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let admin = free_addr();
    let host = Host::start(
        &app,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--header-timeout",
            "1s",
            "--admin",
            &admin,
        ],
    );
    let series = "wasm_host_cutoffs_total{reason=\"header_timeout\"}";
    let timeouts_before = metric(&admin, series).await;

    // One client opens TCP and sends half a TLS record header, then nothing.
    let mut stalled = TcpStream::connect(&host.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03])
        .await
        .unwrap();
    let opened = Instant::now();

    // Meanwhile another is served.
    let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    let mut h1 = H1s::over(tls).await;
    assert_eq!(h1.get("localhost", "/").await, (200, "api v1\n".into()));
    // Closed now, so only the stalled client can hit the header timeout.
    drop(h1);

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the stalled handshake was dropped within 5 s");
    let took = opened.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the stalled client got bytes: {read:?}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "dropped too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "dropped late: {took:?}");
    assert_eq!(metric(&admin, series).await, timeouts_before + 1);
}

/// The first flight of a TLS client for `localhost` (its ClientHello), as
/// sent by one that will never send the rest.
fn client_hello(ca: &Path) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config(ca, &[b"h2", b"http/1.1"]), name)
        .expect("a TLS client");
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).expect("the ClientHello");
    }
    assert_eq!(hello.first(), Some(&0x16), "a handshake record");
    hello
}

/// Whether the host still holds `stream` open: what it sent is read and
/// dropped, and neither the end of the stream nor an error follows.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Waits (at most `limit`) for the host to close `stream`, reading and
/// dropping what it sends; returns when the close was seen.
async fn closed(stream: &TcpStream, limit: Duration) -> Option<Instant> {
    let wait = async {
        loop {
            if stream.readable().await.is_err() || !still_open(stream) {
                return Instant::now();
            }
        }
    };
    tokio::time::timeout(limit, wait).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_dropped_in_bounded_time_while_other_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (cert, key) = make_leaf(dir.path(), "leaf", "localhost");
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let admin = free_addr();
    let timeout = Duration::from_secs(3);
    let host = Host::start(
        &app,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--header-timeout",
            "3s",
            "--admin",
            &admin,
        ],
    );
    let series = "wasm_host_cutoffs_total{reason=\"header_timeout\"}";
    let timeouts_before = metric(&admin, series).await;

    // Eight clients that start a handshake and never finish it, two of
    // each kind: one that sends nothing, one that sends half a record
    // header, one that sends a whole ClientHello and never answers the
    // host's reply, and one that trickles its ClientHello a byte every
    // 100 ms (each byte in time, the whole far too slow).
    let hello = client_hello(&ca);
    let mut stalled: Vec<(&str, Instant, Arc<TcpStream>)> = Vec::new();
    let mut tricklers = Vec::new();
    for _ in 0..2 {
        for kind in ["silent", "half a header", "hello, no finish", "trickle"] {
            let stream = Arc::new(TcpStream::connect(&host.addr).await.unwrap());
            let opened = Instant::now();
            match kind {
                "half a header" => {
                    stream.writable().await.unwrap();
                    assert_eq!(stream.try_write(&[0x16, 0x03]).unwrap(), 2);
                }
                "hello, no finish" => {
                    stream.writable().await.unwrap();
                    assert_eq!(stream.try_write(&hello).unwrap(), hello.len());
                }
                "trickle" => {
                    let (stream, hello) = (stream.clone(), hello.clone());
                    tricklers.push(tokio::spawn(async move {
                        for byte in hello {
                            let sent = match stream.writable().await {
                                Ok(()) => stream.try_write(&[byte]),
                                Err(e) => Err(e),
                            };
                            if sent.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }));
                }
                _ => {}
            }
            stalled.push((kind, opened, stream));
        }
    }
    let all_opened = Instant::now();

    // Meanwhile other clients are served, at once: four on HTTP/1.1 with a
    // handshake each, one on h2.
    let mut served = Vec::new();
    for _ in 0..4 {
        let (ca, addr) = (ca.clone(), host.addr.clone());
        served.push(tokio::spawn(async move {
            let tls = tls_connect(&ca, &[b"http/1.1"], &addr, "localhost").await?;
            let mut send = open_h1(tls).await?;
            ask(&mut send).await
        }));
    }
    let (ca2, addr) = (ca.clone(), host.addr.clone());
    served.push(tokio::spawn(async move {
        let tls = tls_connect(&ca2, &[b"h2"], &addr, "localhost").await?;
        let mut send = open_h2(tls).await?;
        ask(&mut send).await
    }));
    for answer in served {
        assert_eq!(
            answer.await.unwrap(),
            Ok((200, "api v1\n".to_string())),
            "a client was not served while handshakes stalled"
        );
    }
    let served_after = all_opened.elapsed();
    // ... while every stalled handshake was still held: the host did not
    // wait for them to end before serving the others.
    for (kind, _, stream) in &stalled {
        assert!(
            still_open(stream),
            "the {kind} client was dropped before the others were served ({served_after:?}); \
             the test proves nothing if serving takes longer than the {timeout:?} header timeout"
        );
    }
    eprintln!("5 clients served in {served_after:?} while 8 handshakes stalled");

    // Each stalled client is dropped at the header timeout, not before and
    // not much after.
    for (kind, opened, stream) in &stalled {
        let at = closed(stream, timeout + Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the {kind} client was never dropped"));
        let took = at - *opened;
        assert!(
            took >= timeout - Duration::from_millis(100),
            "the {kind} client was dropped early: {took:?}"
        );
        assert!(
            took < timeout + Duration::from_secs(3),
            "the {kind} client was dropped late: {took:?}"
        );
    }
    for trickler in tricklers {
        trickler.abort();
    }
    // By the handshake timeout, each of them; and the host serves on.
    assert_eq!(metric(&admin, series).await, timeouts_before + 8);
    let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    let mut h1 = H1s::over(tls).await;
    assert_eq!(h1.get("localhost", "/").await, (200, "api v1\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_handshake_holds_a_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (cert, key) = make_leaf(dir.path(), "leaf", "localhost");
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let host = Host::start(
        &app,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--max-connections",
            "1",
            "--header-timeout",
            "2s",
        ],
    );
    // The only slot is taken by a client that never says hello.
    let stalled = TcpStream::connect(&host.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost").await;
    assert!(
        refused.is_err(),
        "a second connection was served over the cap"
    );
    // Once the stalled one is dropped (header timeout), the slot is free.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if let Ok(tls) = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost").await {
            let mut h1 = H1s::over(tls).await;
            assert_eq!(h1.get("localhost", "/").await, (200, "api v1\n".into()));
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_update_swaps_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (first_cert, first_key) = make_leaf(dir.path(), "first", "localhost");
    let (second_cert, second_key) = make_leaf(dir.path(), "second", "localhost");
    // The layout kubelet gives a mounted Secret: the files are symlinks
    // through `..data`, itself a symlink to a timestamped directory, and an
    // update writes a new directory and renames a new `..data` over the old.
    let volume = dir.path().join("secret");
    let stamp = |n: &str, cert: &Path, key: &Path| {
        let ts = volume.join(format!("..2026_12_01_{n}"));
        std::fs::create_dir_all(&ts).unwrap();
        std::fs::copy(cert, ts.join("tls.crt")).unwrap();
        std::fs::copy(key, ts.join("tls.key")).unwrap();
        let tmp = volume.join("..data_tmp");
        std::os::unix::fs::symlink(ts.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, volume.join("..data")).unwrap();
    };
    stamp("1", &first_cert, &first_key);
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), volume.join(name)).unwrap();
    }
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let (cert, key) = (volume.join("tls.crt"), volume.join("tls.key"));
    let host = Host::start(
        &app,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(peer_der(&tls), der(&first_cert));

    stamp("2", &second_cert, &second_key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tls = tls_connect(&ca, &[b"http/1.1"], &host.addr, "localhost")
            .await
            .unwrap();
        if peer_der(&tls) == der(&second_cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Secret update was not seen:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        host.log_lines(&["pair was refused"]).is_empty(),
        "{}",
        host.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_apps_certificate_on_a_shared_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let (a_cert, _) = make_leaf(dir.path(), "a", "a.test");
    let (b_cert, _) = make_leaf(dir.path(), "b", "b.test");
    write_version(&dir.path().join("api.wasm"), "api", "v1");
    write_version(&dir.path().join("hello.wasm"), "hello", "v1");
    let addr = free_addr();
    let file = dir.path().join("wasm-host.toml");
    std::fs::write(
        &file,
        format!(
            r#"listen = "{addr}"

[app.a]
component = "api.wasm"
hosts = ["a.test"]
tls_cert = "a.pem"
tls_key = "a.key"
watch = false

[app.b]
component = "hello.wasm"
hosts = ["b.test"]
tls_cert = "b.pem"
tls_key = "b.key"
watch = false
"#
        ),
    )
    .unwrap();
    let host = Host::start_config(&file, &[]);
    host.wait_log("listening on https://", Duration::from_secs(5));

    for (name, cert, expect) in [("a.test", &a_cert, "api v1"), ("b.test", &b_cert, "hello")] {
        let tls = tls_connect(&ca, &[b"http/1.1"], &addr, name).await.unwrap();
        assert_eq!(peer_der(&tls), der(cert), "the certificate for {name}");
        let mut h1 = H1s::over(tls).await;
        let (status, body) = h1.get(name, "/").await;
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.contains(expect), "{name} answered {body:?}");
    }
    // A name no app claims gets the first app's certificate, which the
    // client then rejects for the wrong name.
    let other = tls_connect(&ca, &[b"http/1.1"], &addr, "c.test").await;
    assert!(other.is_err(), "c.test was accepted");
}

#[test]
fn bad_tls_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    let (cert, key) = make_leaf(dir.path(), "leaf", "localhost");
    let (other_cert, _) = make_leaf(dir.path(), "other", "localhost");
    let app = dir.path().join("api.wasm");
    write_version(&app, "api", "v1");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let serve = |args: &[&Path]| {
        let mut command = Command::new(support::BIN);
        command
            .arg("serve")
            .arg(&app)
            .args(["--listen", "127.0.0.1:0", "--no-cache", "--control"])
            .arg(dir.path().join("control.sock"));
        let mut flags = ["--tls-cert", "--tls-key"].iter();
        for path in args {
            command.arg(flags.next().unwrap()).arg(path);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "started with {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve(&[&cert]);
    assert!(
        err.contains("--tls-cert is given without --tls-key"),
        "{err}"
    );
    let err = serve(&[&missing, &key]);
    assert!(err.contains("cannot read the TLS certificate"), "{err}");
    let err = serve(&[&empty, &key]);
    assert!(err.contains("holds no certificate"), "{err}");
    let err = serve(&[&other_cert, &key]);
    assert!(err.contains("does not go with the certificate"), "{err}");
    let err = serve(&[&cert, &empty]);
    assert!(err.contains("holds no usable private key"), "{err}");

    // In a config file: half a pair, and TLS and cleartext on one address.
    let file = dir.path().join("wasm-host.toml");
    std::fs::write(
        &file,
        format!(
            r#"listen = "{}"

[app.a]
component = "api.wasm"
hosts = ["a.test"]
tls_cert = "leaf.pem"

[app.b]
component = "api.wasm"
hosts = ["b.test"]
tls_cert = "leaf.pem"
tls_key = "leaf.key"

[app.c]
component = "api.wasm"
hosts = ["c.test"]
"#,
            free_addr()
        ),
    )
    .unwrap();
    let out = Command::new(support::BIN)
        .args(["serve", "--no-cache", "--config"])
        .arg(&file)
        .arg("--control")
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wasm-host.toml:6: tls_cert is given without tls_key"),
        "{err}"
    );
    assert!(
        err.contains("apps `c` and `b` share") && err.contains("only one has tls_cert/tls_key"),
        "{err}"
    );
}
