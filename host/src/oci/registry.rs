//! Speaks the OCI distribution protocol's read side to one registry: GET
//! with the registry's auth dance (anonymous first, then Basic or a Bearer
//! token from the realm the registry names), redirects to blob storage, and
//! a typed error for each way it can go wrong.
//!
//! HTTPS for every registry but one on loopback (plain HTTP there, as
//! docker does for `localhost`). Knows nothing of manifests or caches.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use super::credentials::{self, Credentials};
use super::{OciError, Reference};

/// How long a TCP connect (and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one response, body included, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest body accepted: components are big, but not this big.
const MAX_BODY: usize = 1 << 30;
/// Redirects followed for one request (blob storage usually takes one).
const MAX_REDIRECTS: usize = 5;

/// One response, body read whole.
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// A session with one registry for one repository.
pub struct Registry {
    registry: String,
    repository: String,
    scheme: &'static str,
    credentials: Option<Credentials>,
    /// The Authorization header that worked last, reused for later calls.
    authorization: Option<String>,
}

impl Registry {
    /// A session for the reference's repository, with the credentials the
    /// docker config file has for its registry.
    pub async fn open(reference: &Reference) -> Self {
        Self {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            scheme: if reference.is_loopback() {
                "http"
            } else {
                "https"
            },
            credentials: credentials::lookup(&reference.registry).await,
            authorization: None,
        }
    }

    /// `GET /v2/REPOSITORY/PATH`, authenticating when asked to.
    pub async fn get(&mut self, path: &str, accept: &str) -> Result<Reply, OciError> {
        let url = format!(
            "{}://{}/v2/{}/{path}",
            self.scheme, self.registry, self.repository
        );
        let reply = self.fetch(&url, accept, self.authorization.clone()).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        let challenge = reply
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let authorization = self.authorize(&challenge).await?;
        let reply = self
            .fetch(&url, accept, Some(authorization.clone()))
            .await?;
        if matches!(
            reply.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.denied());
        }
        self.authorization = Some(authorization);
        Ok(reply)
    }

    fn denied(&self) -> OciError {
        OciError::Denied {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            had_credentials: self.credentials.is_some(),
            config: credentials::config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "~/.docker/config.json".to_string()),
        }
    }

    /// Answers a 401's challenge: Basic with the stored credentials, or a
    /// Bearer token fetched from the named realm (with them, if any).
    async fn authorize(&self, challenge: &str) -> Result<String, OciError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self
                .credentials
                .as_ref()
                .map(Credentials::basic)
                .ok_or_else(|| self.denied());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.denied());
        }
        let param = |name: &str| challenge_param(params, name);
        let realm = param("realm").ok_or_else(|| self.denied())?;
        let mut query = vec![format!("scope=repository:{}:pull", self.repository)];
        if let Some(service) = param("service") {
            query.push(format!("service={}", encode(&service)));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let basic = self.credentials.as_ref().map(Credentials::basic);
        let reply = self.fetch(&url, "application/json", basic).await?;
        if !reply.status.is_success() {
            return Err(self.denied());
        }
        let token: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|_| self.denied())?;
        token
            .get("token")
            .or_else(|| token.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| self.denied())
    }

    /// One GET with redirects followed; the credentials go only to the
    /// host they were meant for.
    async fn fetch(
        &self,
        url: &str,
        accept: &str,
        authorization: Option<String>,
    ) -> Result<Reply, OciError> {
        let mut url: Uri = url
            .parse()
            .map_err(|e| self.protocol(format!("bad URL {url}: {e}")))?;
        let origin = url.authority().cloned();
        for _ in 0..=MAX_REDIRECTS {
            let same_host = url.authority() == origin.as_ref();
            let auth = authorization.as_deref().filter(|_| same_host);
            let reply = tokio::time::timeout(REQUEST_TIMEOUT, self.once(&url, accept, auth))
                .await
                .map_err(|_| OciError::Unreachable {
                    registry: self.registry.clone(),
                    reason: format!("no whole answer within {}s", REQUEST_TIMEOUT.as_secs()),
                })??;
            if !reply.status.is_redirection() {
                return Ok(reply);
            }
            let location = reply
                .headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| self.protocol("a redirect without a Location".to_string()))?;
            url = resolve(&url, location)
                .ok_or_else(|| self.protocol(format!("a redirect to a bad URL: {location}")))?;
        }
        Err(self.protocol(format!("more than {MAX_REDIRECTS} redirects")))
    }

    async fn once(&self, url: &Uri, accept: &str, auth: Option<&str>) -> Result<Reply, OciError> {
        let host = url.host().unwrap_or_default();
        let https = url.scheme_str() == Some("https");
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let down = |reason: String| OciError::Unreachable {
            registry: self.registry.clone(),
            reason,
        };
        let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| OciError::UnknownRegistry {
                registry: self.registry.clone(),
                reason: format!("cannot resolve {host}: {e}"),
            })?;
        let addrs: Vec<_> = addrs.collect();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..]))
            .await
            .map_err(|_| {
                down(format!(
                    "no connection within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| down(format!("cannot connect to {host}:{port}: {e}")))?;
        let mut request = Request::get(url.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(
                http::header::HOST,
                url.authority().map(|a| a.as_str()).unwrap_or(host),
            )
            .header(ACCEPT, accept)
            .header(USER_AGENT, concat!("wasm-host/", env!("CARGO_PKG_VERSION")));
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.protocol(e.to_string()))?;
        let response = if https {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| down(format!("{host} is not a valid TLS name: {e}")))?;
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, tls().connect(name, tcp))
                .await
                .map_err(|_| down("the TLS handshake timed out".to_string()))?
                .map_err(|e| down(format!("the TLS handshake failed: {e}")))?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
        .map_err(|e| down(format!("the connection failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| down(format!("the answer broke off: {e}")))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// An answer no registry should give.
    pub fn protocol(&self, what: String) -> OciError {
        OciError::Protocol {
            registry: self.registry.clone(),
            what,
        }
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends with the response body; its errors surface there.
        let _ = connection.await;
    });
    sender.send_request(request).await
}

/// One TLS setup for the process, trusting the Mozilla root set.
fn tls() -> TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            // The ring provider supports the default versions; this branch
            // only keeps a panic off the pull path.
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
            TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// A `Location` made absolute against the URL it answered.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let authority = base.authority()?;
    let scheme = base.scheme_str()?;
    format!("{scheme}://{authority}{location}").parse().ok()
}

/// The value of `name="value"` (or unquoted) in a challenge's parameters.
fn challenge_param(params: &str, name: &str) -> Option<String> {
    let mut rest = params;
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', ',']);
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(value.to_string());
        }
        rest = next;
    }
    None
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        let params = r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#;
        assert_eq!(
            challenge_param(params, "realm").as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            challenge_param(params, "service").as_deref(),
            Some("registry.example")
        );
        assert_eq!(
            challenge_param("realm=plain, x=y", "x").as_deref(),
            Some("y")
        );
        assert_eq!(challenge_param(params, "missing"), None);
    }

    #[test]
    fn resolves_redirects_and_encodes() {
        let base: Uri = "http://127.0.0.1:5000/v2/a/blobs/sha256:x".parse().unwrap();
        assert_eq!(
            resolve(&base, "/storage/1").unwrap().to_string(),
            "http://127.0.0.1:5000/storage/1"
        );
        assert_eq!(
            resolve(&base, "https://s3.example/b?sig=1")
                .unwrap()
                .to_string(),
            "https://s3.example/b?sig=1"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
