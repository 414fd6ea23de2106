//! One round trip of WebSocket-over-HTTP: a batch of connection events sent
//! to the app as an ordinary `POST`, routed like any request to the version
//! live at that moment, and the events it answers with.
//!
//! The request carries the headers of the client's upgrade request, the
//! connection's id and its `Meta-*` state; the answer may set that state
//! with `Set-Meta-*`. The answer is untrusted: its size is bounded and its
//! body parsed strictly. This module does not touch the client's socket.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use crate::app::{App, ServedBy};
use crate::realtime::events::{self, Event, EventsError};
use crate::runtime::request::Response;

/// Headers of the upgrade request that describe the client's socket, not
/// the app's request, and are not passed on.
const HOP: &[&str] = &[
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "content-type",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "connection-id",
];

/// What every request of one connection shares.
pub struct Base {
    /// The path and query the client connected to.
    pub uri: Uri,
    /// The client's upgrade request headers, minus hop-by-hop and
    /// WebSocket handshake ones (and any `Meta-*` the client sent, which
    /// only the app may set).
    pub headers: HeaderMap,
    /// The connection's id, sent as `Connection-Id`.
    pub id: String,
}

impl Base {
    /// The shared part of the requests of a connection opened to `uri`
    /// with `head`, with a fresh connection id. The app always sees the
    /// path and query, and a `Host` header (from an HTTP/2 authority when
    /// the client sent no `Host`).
    pub fn new(uri: &Uri, head: &HeaderMap) -> Self {
        let mut headers = HeaderMap::new();
        if !head.contains_key(http::header::HOST)
            && let Some(host) = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(http::header::HOST, host);
        }
        for (name, value) in head {
            let n = name.as_str();
            if HOP.contains(&n) || n.starts_with("meta-") || n.starts_with("grip-") {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        let uri = uri
            .path_and_query()
            .and_then(|pq| Uri::try_from(pq.as_str()).ok())
            .unwrap_or_else(|| Uri::from_static("/"));
        Self {
            uri,
            headers,
            id: connection_id(),
        }
    }
}

/// A random id for one connection: 16 hex digits.
fn connection_id() -> String {
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() {
        // No OS randomness: time and a counter still tell connections apart
        // within this host.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        raw = (t ^ n.rotate_left(48)).to_be_bytes();
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the app answered to one batch.
#[derive(Debug, Default)]
pub struct Answer {
    /// The events to carry out, in order.
    pub events: Vec<Event>,
    /// Changes to the connection's state: a value, or `None` to remove.
    pub set_meta: Vec<(String, Option<String>)>,
    /// The subprotocol the app chose (meaningful on the answer to OPEN).
    pub protocol: Option<HeaderValue>,
    /// Whether the app speaks GRIP on this connection (`c:` control
    /// messages); meaningful on the answer to OPEN.
    pub grip: bool,
    /// The generation that answered.
    pub generation: Option<u64>,
}

/// Why a batch got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The app answered something other than `200` with events.
    #[error(
        "the app answered {status} instead of 200 with {}",
        events::CONTENT_TYPE
    )]
    Refused {
        /// Its status.
        status: StatusCode,
        /// The whole answer, to pass on where a client can see it.
        response: Box<Response>,
    },
    /// The answer's body was larger than the bound.
    #[error("the app's answer is larger than {0} bytes")]
    TooLarge(usize),
    /// The answer's body broke off.
    #[error("the app's answer could not be read: {0}")]
    Body(String),
    /// The answer's body is not a run of events.
    #[error("the app's answer is not {kind}: {0}", kind = events::CONTENT_TYPE)]
    Events(#[from] EventsError),
}

/// Sends `batch` to `app` with the connection's `meta` state and reads the
/// answer, whose body may be at most `max_answer` bytes.
pub async fn send(
    app: &Arc<App>,
    base: &Base,
    meta: &BTreeMap<String, String>,
    batch: &[Event],
    max_answer: usize,
) -> Result<Answer, ExchangeError> {
    let body = events::encode(batch);
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(base.uri.clone())
        .body(Full::new(body.clone()))
        .map_err(|e| ExchangeError::Body(e.to_string()))?;
    let headers = req.headers_mut();
    headers.clone_from(&base.headers);
    let events_type = HeaderValue::from_static(events::CONTENT_TYPE);
    headers.insert(http::header::CONTENT_TYPE, events_type.clone());
    headers.insert(http::header::ACCEPT, events_type);
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(id) = HeaderValue::from_str(&base.id) {
        headers.insert(HeaderName::from_static("connection-id"), id);
    }
    headers.insert(
        http::header::SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("grip"),
    );
    for (name, value) in meta {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("meta-{name}").as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }

    let response = app.handle(req).await;
    let generation = response
        .extensions()
        .get::<ServedBy>()
        .map(|s| s.generation);
    let is_events = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(events::CONTENT_TYPE));
    if response.status() != StatusCode::OK || !is_events {
        return Err(ExchangeError::Refused {
            status: response.status(),
            response: Box::new(response),
        });
    }
    let (parts, body) = response.into_parts();
    let body: Bytes = Limited::new(body, max_answer)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ExchangeError::TooLarge(max_answer)
            } else {
                ExchangeError::Body(e.to_string())
            }
        })?
        .to_bytes();
    let mut answer = Answer {
        events: events::decode(&body)?,
        generation,
        ..Answer::default()
    };
    for (name, value) in &parts.headers {
        if let Some(key) = name.as_str().strip_prefix("set-meta-") {
            let value = value.to_str().ok().filter(|v| !v.is_empty());
            answer
                .set_meta
                .push((key.to_string(), value.map(str::to_string)));
        }
    }
    answer.protocol = parts
        .headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .cloned();
    answer.grip = parts
        .headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|ext| ext.split(';').next().map(str::trim) == Some("grip"));
    Ok(answer)
}
