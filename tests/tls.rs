//! TLS termination: HTTPS over HTTP/1.1 and h2 (ALPN) with the guest
//! seeing `https`, certificates swapped on disk while serving, a client
//! that never finishes its handshake, and SNI choosing among apps'
//! certificates on one listener. Certificates come from the `openssl`
//! CLI, signed by a CA made for each test; clients trust only that CA.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
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
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

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
    TlsConnector::from(Arc::new(config))
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
