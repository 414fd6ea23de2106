//! Components from an OCI registry: `oci://REGISTRY/REPO:TAG` or
//! `…@sha256:DIGEST`, stored in the Wasm OCI layout that `wkg oci push` and
//! `wash push` write (a manifest whose layer has media type
//! `application/wasm`).
//!
//! A pull pins the tag to the manifest's digest, checks every digest it was
//! promised, and keeps manifests and blobs on disk by digest, so pulling a
//! digest already seen (a restart, a rollback) asks the network nothing.
//! The result is a plain file, and the app loads it like any other; this
//! module never touches an app, it only says what it pulled for which.

mod credentials;
mod reference;
mod registry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use reference::{Reference, SCHEME};
use registry::Registry;

use crate::runtime::digest::Digest;

/// The manifest kinds a pull asks for.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json";
/// The media type of a component layer.
pub const WASM_LAYER: &str = "application/wasm";

/// Why a pull gave no component. The live version keeps serving in every case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OciError {
    /// The host name does not resolve, or what answers is not a registry.
    #[error("unknown registry {registry}: {reason}; check the host name in the oci:// reference")]
    UnknownRegistry {
        /// `host[:port]`.
        registry: String,
        /// What failed.
        reason: String,
    },
    /// The registry did not answer.
    #[error(
        "registry {registry} is down or unreachable: {reason}; the live version keeps serving, try again when it is back"
    )]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// What failed.
        reason: String,
    },
    /// The registry wants credentials, or refused the ones given.
    #[error("registry {registry} refused access to {repository} ({}); log in with `docker login {registry}` or add it to {config}",
        if *had_credentials { "the credentials in the docker config were refused" } else { "no credentials for it in the docker config" })]
    Denied {
        /// `host[:port]`.
        registry: String,
        /// The repository.
        repository: String,
        /// Whether credentials were sent.
        had_credentials: bool,
        /// The docker config file read.
        config: String,
    },
    /// The tag, digest or repository does not exist.
    #[error("{reference}: {what}; check the name, or push it first (`wkg oci push`)")]
    NotFound {
        /// The reference.
        reference: String,
        /// Which part is missing.
        what: String,
    },
    /// The manifest holds no Wasm component.
    #[error(
        "{reference} is not a Wasm component: {found}; push a component with `wkg oci push` (layer type application/wasm)"
    )]
    WrongMediaType {
        /// The reference.
        reference: String,
        /// What it holds instead.
        found: String,
    },
    /// The bytes do not hash to the digest that named them.
    #[error(
        "{reference}: digest mismatch for {what}: expected {expected}, got {got}; the registry's copy is corrupt or was tampered with, nothing was loaded"
    )]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// `manifest` or `component layer`.
        what: String,
        /// The digest promised.
        expected: String,
        /// The digest of what came.
        got: String,
    },
    /// An answer no registry should give.
    #[error("registry {registry} answered oddly: {what}")]
    Protocol {
        /// `host[:port]`.
        registry: String,
        /// What was odd.
        what: String,
    },
    /// The blob cache could not be written.
    #[error("cannot write the pull cache at {path}: {reason}; check --cache-dir")]
    Cache {
        /// The file.
        path: String,
        /// What the OS said.
        reason: String,
    },
}

/// A component pulled and stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// What was asked for, pinned to the manifest's digest.
    pub reference: Reference,
    /// The component file in the cache.
    pub path: PathBuf,
    /// Whether anything was fetched from the registry (manifest or blob).
    pub fetched: bool,
}

/// Pulls components into an on-disk cache, and remembers what each app
/// runs, for `status` and for a reload that names no new reference.
pub struct Puller {
    dir: PathBuf,
    origins: Mutex<HashMap<String, Reference>>,
    /// The reference each pulled file was last pulled by, so a version
    /// brought back by a rollback or promote is known by its reference
    /// again. One entry per distinct component in the cache.
    pulled: Mutex<HashMap<PathBuf, Reference>>,
}

impl Puller {
    /// A puller keeping manifests and blobs under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            origins: Mutex::new(HashMap::new()),
            pulled: Mutex::new(HashMap::new()),
        }
    }

    /// Pulls `reference` (the network is asked only for what the cache
    /// lacks: always for a tag, never for a digest seen before).
    pub async fn pull(&self, reference: &Reference) -> Result<Pulled, OciError> {
        let mut session = None;
        let (digest, manifest, mut fetched) = self.manifest(reference, &mut session).await?;
        let pinned = reference.pinned(&digest);
        let layer = wasm_layer(&pinned, &manifest)?;
        let path = self.blob_path(&layer);
        if !path.is_file() {
            let session = match &mut session {
                Some(session) => session,
                None => session.insert(Registry::open(reference).await),
            };
            let reply = session.get(&format!("blobs/{layer}"), "*/*").await?;
            if !reply.status.is_success() {
                return Err(not_found_or_odd(
                    &pinned,
                    session,
                    reply,
                    "the component layer",
                ));
            }
            check_digest(&pinned, "component layer", &layer, &reply.body)?;
            self.store(&path, &reply.body)?;
            fetched = true;
        }
        tracing::info!(reference = %pinned, fetched, "pulled");
        if let Ok(mut pulled) = self.pulled.lock() {
            pulled.insert(path.clone(), pinned.clone());
        }
        Ok(Pulled {
            reference: pinned,
            path,
            fetched,
        })
    }

    /// The digest `reference`'s tag points at now (asks the registry).
    pub async fn resolve(&self, reference: &Reference) -> Result<String, OciError> {
        let unpinned = Reference {
            digest: None,
            ..reference.clone()
        };
        Ok(self.manifest(&unpinned, &mut None).await?.0)
    }

    /// Notes that `app` now runs `pulled`.
    pub fn remember(&self, app: &str, pulled: &Reference) {
        if let Ok(mut origins) = self.origins.lock() {
            origins.insert(app.to_string(), pulled.clone());
        }
    }

    /// Notes that `app` now runs a file, not a pull.
    pub fn forget(&self, app: &str) {
        if let Ok(mut origins) = self.origins.lock() {
            origins.remove(app);
        }
    }

    /// The reference the file at `path` was pulled by, if it is a pull.
    pub fn reference_of(&self, path: &Path) -> Option<Reference> {
        self.pulled.lock().ok()?.get(path).cloned()
    }

    /// Notes what `app` runs now that its live version came from `path`
    /// (after a rollback or promote): the reference `path` was pulled by,
    /// or a plain file.
    pub fn follow(&self, app: &str, path: &Path) {
        match self.reference_of(path) {
            Some(reference) => self.remember(app, &reference),
            None => self.forget(app),
        }
    }

    /// What `app` was last pulled from, pinned.
    pub fn origin(&self, app: &str) -> Option<Reference> {
        self.origins.lock().ok()?.get(app).cloned()
    }

    /// The manifest's digest and bytes: from the cache for a digest seen
    /// before, else from the registry (checked against a pinned digest).
    async fn manifest(
        &self,
        reference: &Reference,
        session: &mut Option<Registry>,
    ) -> Result<(String, Vec<u8>, bool), OciError> {
        if let Some(digest) = &reference.digest {
            let cached = self.blob_path(digest);
            if let Ok(bytes) = std::fs::read(&cached)
                && sha256(&bytes) == *digest
            {
                return Ok((digest.clone(), bytes, false));
            }
        }
        let session = session.insert(Registry::open(reference).await);
        let reply = session
            .get(&format!("manifests/{}", reference.target()), MANIFEST_TYPES)
            .await?;
        if !reply.status.is_success() {
            return Err(not_found_or_odd(reference, session, reply, "the manifest"));
        }
        let digest = sha256(&reply.body);
        if let Some(expected) = &reference.digest {
            check_digest(reference, "manifest", expected, &reply.body)?;
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|_| OciError::UnknownRegistry {
                registry: reference.registry.clone(),
                reason: "it answers, but its manifest is not JSON: is this an OCI registry?"
                    .to_string(),
            })?;
        if manifest.get("schemaVersion").is_none() {
            return Err(OciError::UnknownRegistry {
                registry: reference.registry.clone(),
                reason: "it answers, but not with an OCI manifest: is this an OCI registry?"
                    .to_string(),
            });
        }
        self.store(&self.blob_path(&digest), &reply.body)?;
        Ok((digest, reply.body.to_vec(), true))
    }

    /// Where a blob (or manifest) with `digest` lives in the cache.
    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Writes a checked blob whole or not at all (temp file, then rename).
    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), OciError> {
        let fail = |e: std::io::Error| OciError::Cache {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let temp = path.with_extension(format!("part-{}", std::process::id()));
        std::fs::write(&temp, bytes).map_err(fail)?;
        std::fs::rename(&temp, path).map_err(fail)
    }
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", Digest::of(bytes))
}

fn check_digest(
    reference: &Reference,
    what: &str,
    expected: &str,
    bytes: &[u8],
) -> Result<(), OciError> {
    let got = sha256(bytes);
    if got == expected {
        return Ok(());
    }
    Err(OciError::DigestMismatch {
        reference: reference.to_string(),
        what: what.to_string(),
        expected: expected.to_string(),
        got,
    })
}

/// The digest of the manifest's one `application/wasm` layer.
fn wasm_layer(reference: &Reference, manifest: &[u8]) -> Result<String, OciError> {
    let wrong = |found: String| OciError::WrongMediaType {
        reference: reference.to_string(),
        found,
    };
    let manifest: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|_| wrong("its manifest is not JSON".to_string()))?;
    let media_type = manifest
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    if media_type.contains("index") || media_type.contains("manifest.list") {
        return Err(wrong(format!(
            "it is a multi-platform image index ({media_type})"
        )));
    }
    let layers = manifest
        .get("layers")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let wasm: Vec<&str> = layers
        .iter()
        .filter(|l| l.get("mediaType").and_then(|m| m.as_str()) == Some(WASM_LAYER))
        .filter_map(|l| l.get("digest").and_then(|d| d.as_str()))
        .collect();
    match wasm.as_slice() {
        [digest] if digest.starts_with("sha256:") => Ok(digest.to_string()),
        [_] => Err(wrong("its layer digest is not sha256".to_string())),
        [] => {
            let found: Vec<&str> = layers
                .iter()
                .filter_map(|l| l.get("mediaType").and_then(|m| m.as_str()))
                .collect();
            Err(wrong(if found.is_empty() {
                "its manifest has no layers".to_string()
            } else {
                format!("its layers are {}", found.join(", "))
            }))
        }
        _ => Err(wrong(format!(
            "it has {} application/wasm layers, not one",
            wasm.len()
        ))),
    }
}

/// The error for a failed manifest or blob request: the registry's own
/// error codes when it gave them, else a sign that this is no registry.
fn not_found_or_odd(
    reference: &Reference,
    session: &Registry,
    reply: registry::Reply,
    what: &str,
) -> OciError {
    let codes: Vec<String> = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("code").and_then(|c| c.as_str()).map(str::to_string))
        .collect();
    let missing = match codes.first().map(String::as_str) {
        Some("MANIFEST_UNKNOWN") => Some(match &reference.digest {
            Some(digest) => format!("no manifest with digest {digest}"),
            None => format!(
                "no tag `{}` in {}",
                reference.target(),
                reference.repository
            ),
        }),
        Some("NAME_UNKNOWN") => Some(format!("no repository `{}`", reference.repository)),
        Some("BLOB_UNKNOWN") => Some(format!("{what} is missing from the registry")),
        _ => None,
    };
    match missing {
        Some(what) => OciError::NotFound {
            reference: reference.to_string(),
            what,
        },
        None if reply.status == http::StatusCode::NOT_FOUND => OciError::UnknownRegistry {
            registry: reference.registry.clone(),
            reason: "it answers 404 without a registry error: is this an OCI registry?".to_string(),
        },
        None => session.protocol(format!("{} for {what}", reply.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        "oci://127.0.0.1:5000/app:v1".parse().unwrap()
    }

    #[test]
    fn finds_the_one_wasm_layer() {
        let ok = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":"sha256:c","size":1},
            "layers":[{"mediaType":"application/wasm","digest":"sha256:abc","size":3}]}"#;
        assert_eq!(wasm_layer(&reference(), ok).unwrap(), "sha256:abc");

        let image = br#"{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:abc"}]}"#;
        let e = wasm_layer(&reference(), image).unwrap_err().to_string();
        assert!(
            e.contains("tar+gzip") && e.contains("not a Wasm component"),
            "{e}"
        );

        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(
            wasm_layer(&reference(), index)
                .unwrap_err()
                .to_string()
                .contains("index")
        );
    }

    #[test]
    fn digests_are_checked() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let e = check_digest(&reference(), "manifest", &sha256(b"a"), b"b").unwrap_err();
        assert!(matches!(e, OciError::DigestMismatch { .. }));
        assert!(check_digest(&reference(), "manifest", &sha256(b"a"), b"a").is_ok());
    }
}
