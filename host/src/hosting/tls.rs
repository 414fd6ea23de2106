//! TLS for a listener: the certificate/key pairs it serves, which one a
//! handshake gets (by SNI), and the acceptor that offers h2 and http/1.1.
//!
//! Each pair sits in a [`CertSlot`] whose key is swapped atomically, so a
//! new handshake sees the newest valid pair and an open connection keeps
//! the one it started with. What triggers a swap (a file watch) lives in
//! `control`; this module only loads, checks and holds pairs. It must not
//! reach the app, the supervisor or the triggers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};

/// Where one app's certificate chain and private key are read from (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// A pair from flags or config keys that may be given one without the
    /// other: both or neither, or an error naming the missing one.
    pub fn from_pair(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        cert_name: &str,
        key_name: &str,
    ) -> Result<Option<Self>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => bail!("{cert_name} is given without {key_name}; TLS needs both"),
            (None, Some(_)) => bail!("{key_name} is given without {cert_name}; TLS needs both"),
        }
    }

    /// Reads and checks the pair: at least one certificate, one private
    /// key, and the key belongs to the first certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>> {
        let provider = provider();
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
            anyhow!(
                "the key {} does not go with the certificate {}: {e}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        Ok(Arc::new(certified))
    }
}

/// The crypto provider every TLS listener uses (ring, as the OCI client).
fn provider() -> CryptoProvider {
    ring::default_provider()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "the TLS certificate {} is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "the TLS certificate file {} holds no certificate (expected a PEM block \"BEGIN CERTIFICATE\")",
            path.display()
        );
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        anyhow!(
            "the TLS key file {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            path.display()
        )
    })
}

/// One app's pair, swappable while the listener serves.
#[derive(Debug)]
pub struct CertSlot {
    files: TlsFiles,
    key: ArcSwap<CertifiedKey>,
}

impl CertSlot {
    /// Loads `files`; fails (with the reason) if the pair is not usable.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>> {
        let key = files.load()?;
        Ok(Arc::new(Self {
            files,
            key: ArcSwap::new(key),
        }))
    }

    /// The files this slot is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again and, if the pair is valid, serves it from the
    /// next handshake on; if not, keeps the current pair and says why.
    pub fn reload(&self) -> Result<()> {
        let key = self.files.load()?;
        self.key.store(key);
        Ok(())
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.key.load_full()
    }
}

/// The pairs of one listener: by host name (from the apps' routes), and
/// the one for a handshake with no SNI or a name no app claims.
#[derive(Debug, Default)]
pub struct CertTable {
    named: Vec<(String, Arc<CertSlot>)>,
    default: Option<Arc<CertSlot>>,
}

impl CertTable {
    /// A table from `(hosts, slot)` per app, in config order; the first
    /// app's slot is the default.
    pub fn new(entries: Vec<(Vec<String>, Arc<CertSlot>)>) -> Self {
        let default = entries.first().map(|(_, slot)| slot.clone());
        let mut named = Vec::new();
        for (hosts, slot) in entries {
            for host in hosts {
                named.push((host.to_ascii_lowercase(), slot.clone()));
            }
        }
        Self { named, default }
    }

    /// The slot for the SNI name `name`: an exact host first, then the
    /// longest `*.suffix` wildcard, then the default.
    fn pick(&self, name: Option<&str>) -> Option<&Arc<CertSlot>> {
        if let Some(name) = name.map(str::to_ascii_lowercase) {
            if let Some((_, slot)) = self.named.iter().find(|(host, _)| *host == name) {
                return Some(slot);
            }
            let wildcard = self
                .named
                .iter()
                .filter_map(|(host, slot)| {
                    let suffix = host.strip_prefix("*.")?;
                    let sub = name.strip_suffix(suffix)?;
                    (sub.len() > 1 && sub.ends_with('.')).then_some((suffix.len(), slot))
                })
                .max_by_key(|(len, _)| *len);
            if let Some((_, slot)) = wildcard {
                return Some(slot);
            }
        }
        self.default.as_ref()
    }
}

/// Picks a listener's pair per handshake. The table is swapped when a
/// config apply changes the apps of the listener.
#[derive(Debug)]
pub struct SniResolver {
    table: ArcSwap<CertTable>,
}

impl SniResolver {
    /// A resolver over `table`.
    pub fn new(table: CertTable) -> Arc<Self> {
        Arc::new(Self {
            table: ArcSwap::from_pointee(table),
        })
    }

    /// Serves `table` from the next handshake on.
    pub fn replace(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table
            .load()
            .pick(hello.server_name())
            .map(|slot| slot.current())
    }
}

/// The acceptor of a TLS listener: TLS 1.2 and 1.3, ALPN h2 then
/// http/1.1, certificates from `resolver`.
pub fn acceptor(resolver: Arc<SniResolver>) -> Result<TlsAcceptor> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .context("cannot set up TLS")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
