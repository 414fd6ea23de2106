//! What `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]` names, parsed
//! and checked. Pure text: nothing here touches the network.

use std::fmt;
use std::str::FromStr;

/// The scheme that marks a component as living in an OCI registry.
pub const SCHEME: &str = "oci://";

/// A component in an OCI registry: by tag, by digest, or both (then the
/// digest wins and the tag is only a label).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` of the registry.
    pub registry: String,
    /// The repository path inside it, e.g. `team/shop`.
    pub repository: String,
    /// The tag, if named.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if named.
    pub digest: Option<String>,
}

impl Reference {
    /// Whether `text` is meant as an OCI reference rather than a file.
    pub fn is_oci(text: &str) -> bool {
        text.starts_with(SCHEME)
    }

    /// What a manifest request asks for: the digest if pinned, else the tag.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same component pinned to `digest` (the tag kept as a label).
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The app name a reference suggests: the repository's last part.
    pub fn app_name(&self) -> String {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
            .to_string()
    }

    /// Whether the registry is on this machine, and so spoken to over plain
    /// HTTP, as docker does for `localhost`.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }
}

impl FromStr for Reference {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let hint = "write oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST";
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("`{text}` is not an oci:// reference; {hint}"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{text}` names no repository; {hint}"))?;
        if registry.is_empty() || registry.contains(['@', ' ']) {
            return Err(format!("`{text}` names no registry host; {hint}"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => (path, Some(check_digest(digest, text)?)),
            None => (path, None),
        };
        // A colon after the last slash starts the tag; one before it is part
        // of nothing valid (ports belong to the registry).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
        if !repo_ok {
            return Err(format!(
                "`{text}`: the repository `{repository}` must be lowercase letters, digits, `._-` and `/`"
            ));
        }
        if let Some(tag) = &tag {
            let tag_ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !tag_ok {
                return Err(format!(
                    "`{text}`: the tag `{tag}` must be 1 to 128 letters, digits or `._-`"
                ));
            }
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.or_else(|| digest.is_none().then(|| "latest".to_string())),
            digest,
        })
    }
}

/// Accepts `sha256:` followed by 64 lowercase hex digits.
fn check_digest(digest: &str, text: &str) -> Result<String, String> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    });
    if ok {
        Ok(digest.to_string())
    } else {
        Err(format!(
            "`{text}`: the digest must be sha256: followed by 64 lowercase hex digits"
        ))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_tags_digests_and_ports() {
        let r: Reference = "oci://127.0.0.1:5000/team/shop:v2".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/shop");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.target(), "v2");
        assert!(r.is_loopback());

        let pinned: Reference = format!("oci://ghcr.io/a/b@{D}").parse().unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.target(), D);
        assert!(!pinned.is_loopback());

        let both: Reference = format!("oci://ghcr.io/a/b:1.0@{D}").parse().unwrap();
        assert_eq!(both.target(), D);
        assert_eq!(both.to_string(), format!("oci://ghcr.io/a/b:1.0@{D}"));

        let bare: Reference = "oci://localhost:5000/app".parse().unwrap();
        assert_eq!(bare.tag.as_deref(), Some("latest"));
        assert!(bare.is_loopback());
        assert_eq!(
            r.pinned(D).to_string(),
            format!("oci://127.0.0.1:5000/team/shop:v2@{D}")
        );
    }

    #[test]
    fn refuses_what_no_registry_would_take() {
        for bad in [
            "ghcr.io/a/b:1",
            "oci://ghcr.io",
            "oci:///a:1",
            "oci://ghcr.io/A/b:1",
            "oci://ghcr.io/a//b:1",
            "oci://ghcr.io/a/b:",
            "oci://ghcr.io/a/b@sha256:abc",
            "oci://ghcr.io/a/b@md5:0123",
            "oci://ghcr.io/a/b:bad tag",
        ] {
            let e = bad.parse::<Reference>().unwrap_err();
            assert!(e.contains('`'), "{bad}: {e}");
        }
    }
}
