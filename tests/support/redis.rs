//! A real `redis-server` on a loopback port, for the key-value tests:
//! nothing saved to disk, stopped on drop; plain, or TLS only with a
//! certificate for 127.0.0.1 from a CA made for the test (`openssl` CLI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct Redis {
    child: Child,
    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` for TLS.
    pub url: String,
    /// The CA that signed the TLS server's certificate.
    pub ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a server on a free loopback port and waits until it accepts
    /// connections.
    pub fn start() -> Redis {
        Self::spawn(false)
    }

    /// Starts a server that speaks only TLS on a free loopback port; its
    /// certificate (for IP 127.0.0.1) is signed by the CA in `ca`.
    pub fn start_tls() -> Redis {
        Self::spawn(true)
    }

    fn spawn(tls: bool) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1"]);
        let ca = if tls {
            make_certificates(dir.path());
            let file = |name: &str| dir.path().join(name);
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
            Some(file("ca.pem"))
        } else {
            command.args(["--port", &port.to_string()]);
            None
        };
        let child = command
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (install it with `apt-get install redis-server`)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let scheme = if tls { "rediss" } else { "redis" };
        Redis {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            ca,
            _dir: dir,
        }
    }
}

/// Writes `ca.pem`, and `server.pem`/`server.key` for IP 127.0.0.1 signed
/// by it, into `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| super::openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=wasm-host test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
