//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution
//! server) on a loopback port, and a minimal push of a component in the
//! Wasm OCI layout, as `wkg oci push` writes it. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::send_with;

/// The user and password of a registry started with auth.
pub const USER: (&str, &str) = ("ci", "s3cret");
/// bcrypt of `s3cret` (made once with Python's crypt, METHOD_BLOWFISH).
const HTPASSWD: &str = "ci:$2b$12$C.7viHlqA4cDM/T4af7rueJgwyszTIQILBEKY4NlZMn/Ee90CQid6";

/// A running registry.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    auth: bool,
    dir: tempfile::TempDir,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

impl Registry {
    /// Starts a registry on a free port, with htpasswd auth if `auth`, and
    /// waits until it answers.
    pub fn start(auth: bool) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = super::free_addr();
        let mut registry = Registry {
            child: None,
            addr,
            auth,
            dir,
        };
        registry.run();
        registry
    }

    /// (Re)starts the server process on the same port and storage.
    pub fn run(&mut self) {
        let config = self.dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n  secret: test-only\n",
            self.storage().display(),
            self.addr
        );
        if self.auth {
            let htpasswd = self.dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{HTPASSWD}\n")).expect("write htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasm-host-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            // It logs each 404 the error tests provoke; kept beside its data.
            .stderr(
                std::fs::File::create(self.dir.path().join("registry.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("docker-registry runs (install it with `apt-get install docker-registry`)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the server (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Where the registry keeps its blobs.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file the registry serves for blob `digest`.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `oci://ADDR/REPO:TAG`.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("oci://{}/{repo}:{tag}", self.addr)
    }

    fn headers<'a>(&self, auth: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut headers = extra.to_vec();
        if self.auth {
            headers.push(("authorization", auth));
        }
        headers
    }

    async fn upload(&self, repo: &str, bytes: &[u8]) -> String {
        let auth = basic();
        let started = send_with(
            &self.addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &self.headers(&auth, &[]),
            Vec::new(),
        )
        .await
        .expect("start an upload");
        assert_eq!(started.status, 202, "upload start: {started:?}");
        let location = started.headers["location"].to_str().unwrap().to_string();
        let path = location
            .split_once(&self.addr)
            .map(|(_, p)| p.to_string())
            .unwrap_or(location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let digest = digest(bytes);
        let done = send_with(
            &self.addr,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &self.headers(&auth, &[("content-type", "application/octet-stream")]),
            bytes.to_vec(),
        )
        .await
        .expect("finish an upload");
        assert_eq!(done.status, 201, "upload: {done:?}");
        digest
    }

    /// Pushes `layer` as `repo:tag` with the given layer media type (the
    /// Wasm layout uses `application/wasm`); returns the manifest digest.
    pub async fn push_as(&self, repo: &str, tag: &str, layer: &[u8], media_type: &str) -> String {
        let layer_digest = self.upload(repo, layer).await;
        let config = format!(
            r#"{{"created":"2026-11-21T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":["{layer_digest}"],"component":{{"exports":["wasi:http/incoming-handler@0.2.0"],"imports":[]}}}}"#
        );
        let config_digest = self.upload(repo, config.as_bytes()).await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.wasm.config.v0+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{media_type}","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let auth = basic();
        let put = send_with(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &self.headers(
                &auth,
                &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            ),
            manifest.clone().into_bytes(),
        )
        .await
        .expect("put the manifest");
        assert_eq!(put.status, 201, "manifest: {put:?}");
        digest(manifest.as_bytes())
    }

    /// Pushes a component in the Wasm OCI layout.
    pub async fn push(&self, repo: &str, tag: &str, component: &[u8]) -> String {
        self.push_as(repo, tag, component, "application/wasm").await
    }
}

fn basic() -> String {
    use base64::Engine as _;
    let pair = format!("{}:{}", USER.0, USER.1);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Writes a docker config file granting `registry` to the test user in
/// `dir`; point `DOCKER_CONFIG` at `dir`.
pub fn docker_config(dir: &Path, registry: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", USER.0, USER.1));
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .expect("write docker config");
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
