//! Registry credentials from the docker config file, the one `docker login`,
//! `podman login --authfile`, `wkg` and Kubernetes image-pull secrets all
//! write: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//!
//! Read afresh for every pull, so a rotated secret needs no restart. Only
//! reads; never writes the file or prints a secret.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The value of a `Basic` authorization header.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The docker config file this process would read.
pub fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The credentials for `registry`, if the docker config has any. A broken
/// file is reported and treated as none, so anonymous pulls still work.
pub async fn lookup(registry: &str) -> Option<Credentials> {
    let path = config_path()?;
    let text = tokio::fs::read_to_string(&path).await.ok()?;
    let config: DockerConfig = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(file = %path.display(), "the docker config file is not valid JSON ({e}); pulling without credentials");
            return None;
        }
    };
    if let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| same_registry(key, registry))
        .map(|(_, entry)| entry)
        && let Some(found) = from_entry(entry)
    {
        return Some(found);
    }
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| same_registry(key, registry))
        .map(|(_, helper)| helper.clone())
        .or(config.creds_store)?;
    run_helper(&helper, registry).await
}

/// Whether a key of the config file (`ghcr.io`, `https://ghcr.io/v1/`)
/// names `registry`.
fn same_registry(key: &str, registry: &str) -> bool {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key.split('/').next().unwrap_or(key);
    key == registry
        || (registry == "docker.io" && key == "index.docker.io")
        || (registry == "index.docker.io" && key == "docker.io")
}

fn from_entry(entry: &AuthEntry) -> Option<Credentials> {
    if let Some(token) = &entry.identitytoken {
        return Some(Credentials {
            username: "<token>".to_string(),
            password: token.clone(),
        });
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_deref()?.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Asks `docker-credential-HELPER get` for the registry's credentials.
async fn run_helper(helper: &str, registry: &str) -> Option<Credentials> {
    let program = format!("docker-credential-{helper}");
    let mut child = match tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(
                "the docker config names the credential helper {program}, which cannot run ({e}); pulling without credentials"
            );
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes()).await;
    }
    let output = child.wait_with_output().await.ok()?;
    if !output.status.success() {
        return None;
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).ok()?;
    Some(Credentials {
        username: answer.username,
        password: answer.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_form_of_entry() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"auths": {
                "https://reg.example/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "other.example": {"username": "u", "password": "p"},
                "tok.example": {"identitytoken": "t"}
            }}"#,
        )
        .unwrap();
        let find = |registry: &str| {
            config
                .auths
                .iter()
                .find(|(key, _)| same_registry(key, registry))
                .and_then(|(_, e)| from_entry(e))
        };
        // base64("user:pa:ss"): only the first colon splits.
        let c = find("reg.example").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(c.basic(), "Basic dXNlcjpwYTpzcw==");
        assert_eq!(find("other.example").unwrap().password, "p");
        assert_eq!(find("tok.example").unwrap().password, "t");
        assert!(find("nowhere.example").is_none());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
