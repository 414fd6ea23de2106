//! Which outgoing HTTP requests a guest may make.
//!
//! A guest may reach only the `HOST:PORT` pairs the operator allowed with
//! `--allow-http`; anything else fails with `HTTP-request-denied` as soon as
//! the guest has written its request, never with a hang. This module
//! decides and forwards; it does not know which app or version is asking.
//!
//! A request the guest sends while serving an incoming request that carried
//! a well-formed W3C `traceparent` carries it on, so the caller's trace
//! continues through the guest; a `traceparent` the guest set itself wins.

use std::sync::Arc;

use http::uri::Scheme;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::runtime::trace::{TRACEPARENT, TraceParent};

/// The set of `host:port` authorities a guest may send requests to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingPolicy {
    allowed: Arc<[String]>,
}

impl OutgoingPolicy {
    /// A policy allowing exactly `allowed` (`host:port`, compared without
    /// regard to case).
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.iter().map(|a| a.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request to `uri` may leave the host.
    pub fn permits(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let port = authority.port_u16().unwrap_or(match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => 443,
            _ => 80,
        });
        let host = authority.host().to_ascii_lowercase();
        self.allowed.iter().any(|a| {
            a.rsplit_once(':')
                .is_some_and(|(h, p)| h == host && p.parse::<u16>() == Ok(port))
        })
    }
}

/// How long a denied request's body may take to arrive before the denial
/// is answered anyway.
const DENIED_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

type BoxedIo = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, BoxedIo), HttpError>;

/// What one store does with its guest's outgoing requests: checks them
/// against the version's policy and adds the incoming request's trace.
#[derive(Clone, Debug, Default)]
pub struct OutgoingHooks {
    policy: OutgoingPolicy,
    /// The `traceparent` of the request the store serves now; reset for
    /// every request, since a reused instance serves several.
    trace: Option<TraceParent>,
}

impl OutgoingHooks {
    /// Hooks checking against `policy`, with no trace yet.
    pub fn new(policy: OutgoingPolicy) -> Self {
        Self {
            policy,
            trace: None,
        }
    }

    /// The trace outgoing requests carry from now on (`None`: none).
    pub fn set_trace(&mut self, trace: Option<TraceParent>) {
        self.trace = trace;
    }
}

impl WasiHttpHooks for OutgoingHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: BoxedIo,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if let Some(trace) = &self.trace
            && !request.headers().contains_key(TRACEPARENT)
        {
            request
                .headers_mut()
                .insert(TRACEPARENT, trace.header_value().clone());
        }
        if !self.policy.permits(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outgoing request denied: not in --allow-http");
            return Box::new(async move {
                // Take the guest's body to its end first (bounded), so the
                // guest learns of the denial from the response rather than
                // from a body stream that broke while it was writing.
                use http_body_util::BodyExt;
                let mut body = std::pin::pin!(request.into_body());
                let _ = tokio::time::timeout(DENIED_BODY_WAIT, async {
                    while let Some(Ok(_)) = body.frame().await {}
                })
                .await;
                Err(HttpError::HttpRequestDenied)
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as BoxedIo))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_listed_authorities() {
        let policy = OutgoingPolicy::new(&["127.0.0.1:9000".into(), "Example.com:80".into()]);
        let ok = |u: &str| policy.permits(&u.parse().unwrap());
        assert!(ok("http://127.0.0.1:9000/x"));
        assert!(ok("http://example.com/"));
        assert!(ok("http://EXAMPLE.com:80/"));
        assert!(!ok("https://example.com/"));
        assert!(!ok("http://127.0.0.1:9001/"));
        assert!(!ok("http://127.0.0.2:9000/"));
        assert!(!ok("/relative"));
    }

    #[test]
    fn empty_policy_denies_everything() {
        let policy = OutgoingPolicy::default();
        assert!(!policy.permits(&"http://127.0.0.1:80/".parse().unwrap()));
    }
}
