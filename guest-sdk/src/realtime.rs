//! WebSockets and channels: the app side of the connections wasm-host
//! holds open for it.
//!
//! The host terminates each WebSocket itself and hands the app its events
//! (open, messages, close) as ordinary requests: a `POST` with a body of
//! type `application/websocket-events`, in Pushpin's WebSocket-over-HTTP
//! protocol. [`serve`] turns one such request into calls of a
//! [`SocketHandler`] and builds the answer, so the same app also runs
//! behind Pushpin or Fastly Fanout. Connections subscribe to channels;
//! [`publish`] sends to every subscriber, WebSockets and held
//! server-sent-event streams ([`hold_stream`]) alike, from a handler or
//! from [`after_response`](crate::after_response) work.
//!
//! ```no_run
//! use wasm_host_sdk::realtime::{self, Conn, Message, SocketHandler};
//! use wasm_host_sdk::{Request, Response};
//!
//! struct Echo;
//!
//! impl SocketHandler for Echo {
//!     async fn on_message(&mut self, conn: &mut Conn, message: Message) {
//!         conn.send(message);
//!     }
//! }
//!
//! async fn app(req: Request) -> Response {
//!     if realtime::is_websocket(&req) {
//!         return realtime::serve(req, Echo).await;
//!     }
//!     realtime::hold_stream(&["news"], realtime::sse_event("hello", "welcome"))
//! }
//!
//! wasm_host_sdk::app!(app);
//! ```
//!
//! This module keeps nothing between requests, and must not: every batch
//! of events may reach a fresh instance, or a newer version after a reload.
//! What a connection must remember goes in its meta ([`Conn::set_meta`],
//! [`Conn::set_state`]), which the host (or Pushpin) sends back with every
//! later batch. It never touches a socket; the host owns those.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wstd::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::__bindings::wasm_host::app::realtime as host;
use crate::{Body, BodyExt, IntoResponse, Request, Response, StatusCode};

/// The media type of a body of connection events, both ways.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// Largest body of events [`serve`] reads; a larger one is answered `413`
/// (which closes the connection). The host's own bound on a message is
/// 1 MiB by default (`--ws-max-message`), and Pushpin sends at most about
/// 200 KB per request.
pub const MAX_EVENTS_BODY: usize = 16 << 20;

/// Largest value of one meta entry. Meta travels as a header on every
/// later request, and proxies commonly refuse header lines over 8 KiB.
pub const MAX_META_VALUE: usize = 8 << 10;

/// The meta entry [`Conn::set_state`] keeps its value in.
const STATE_META: &str = "state";

/// A close frame holds 125 bytes: the code takes two.
const MAX_CLOSE_REASON: usize = 123;

/// Prefix of an ordinary message on a GRIP connection. Pushpin drops
/// messages without it once the app has accepted the `grip` extension,
/// which [`serve`] always does.
const MESSAGE_PREFIX: &str = "m:";

/// Prefix of a control message (subscribe, unsubscribe) on a GRIP
/// connection.
const CONTROL_PREFIX: &str = "c:";

/// A WebSocket message: text or binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::Text(text.to_string())
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Self::Binary(data)
    }
}

impl From<&[u8]> for Message {
    fn from(data: &[u8]) -> Self {
        Self::Binary(data.to_vec())
    }
}

/// Whether `req` carries WebSocket events: a `POST` whose content type is
/// `application/websocket-events`. Answer it with [`serve`].
pub fn is_websocket(req: &Request) -> bool {
    req.method() == Method::POST
        && req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// What an app does with the events of its WebSocket connections.
///
/// Each method gets the connection, through which it answers: messages to
/// send, channels to (un)subscribe, meta to keep, a close. A fresh handler
/// may get each batch of events, so keep per-connection data in the
/// connection's meta or state, not in `self`.
// Components run on one thread, so nothing needs the futures to be `Send`.
#[allow(async_fn_in_trait)]
pub trait SocketHandler {
    /// A client connects. `Ok` accepts it; [`Refuse`] turns it away with
    /// an HTTP status (`403` unless set) and a reason, before it is a
    /// WebSocket. Accepts by default.
    async fn on_open(&mut self, conn: &mut Conn) -> Result<(), Refuse> {
        let _ = conn;
        Ok(())
    }

    /// The client sent a message. Called in the order the client sent
    /// them; not called once the connection is closed.
    async fn on_message(&mut self, conn: &mut Conn, message: Message);

    /// The connection ended: the client's close code (`None` when its
    /// close had none, or when the client vanished without one). The
    /// connection is closed by then, so what is sent here is dropped; meta
    /// may still be read, and [`publish`] still works. Does nothing by
    /// default.
    async fn on_close(&mut self, conn: &mut Conn, code: Option<u16>) {
        let _ = (conn, code);
    }
}

/// A refused connection: the client gets this status and reason instead
/// of a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    status: StatusCode,
    reason: String,
}

impl Refuse {
    /// Refuses with `403 Forbidden` and `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }

    /// The same refusal with another status (say `401` or `429`).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl IntoResponse for Refuse {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.reason)).into_response()
    }
}

/// Why meta (or state) was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError(String);

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetaError {}

/// One WebSocket connection, as one batch of its events sees it: who it
/// is, what it remembers, and what the app answers.
#[derive(Debug)]
pub struct Conn {
    id: String,
    uri: Uri,
    headers: HeaderMap,
    /// Meta as the request brought it, names in lowercase.
    original: BTreeMap<String, String>,
    /// Meta as the handler left it; the difference is answered with
    /// `Set-Meta-*`.
    meta: BTreeMap<String, String>,
    /// Events for the client, in order.
    out: Vec<Event>,
    closed: bool,
}

impl Conn {
    fn from_request(req: &Request) -> Self {
        let mut meta = BTreeMap::new();
        for (name, value) in req.headers() {
            // Header names are lowercase here; meta names are kept that
            // way so `Meta-User` and `meta-user` are one entry.
            if let (Some(key), Ok(value)) = (name.as_str().strip_prefix("meta-"), value.to_str())
                && !key.is_empty()
            {
                meta.insert(key.to_string(), value.to_string());
            }
        }
        Self {
            id: header(req.headers(), "connection-id").unwrap_or_default(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            original: meta.clone(),
            meta,
            out: Vec::new(),
            closed: false,
        }
    }

    /// The connection's id (the `Connection-Id` the host gives it), the
    /// same for every batch of events.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The path and query the client connected to.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The headers of this batch's request: the client's upgrade request
    /// headers (cookies, `Authorization`, `Origin`) plus the protocol's
    /// own.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of query parameter `name` of the URL the client
    /// connected to, decoded (`+` is a space).
    pub fn query(&self, name: &str) -> Option<String> {
        crate::router::query_param(&self.uri, name)
    }

    /// Whether the connection is closed (by the app, or by the client in
    /// this batch); sends are dropped from then on.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends a message to the client.
    pub fn send(&mut self, message: impl Into<Message>) {
        let prefixed = match message.into() {
            Message::Text(text) => Event::Text(format!("{MESSAGE_PREFIX}{text}")),
            Message::Binary(data) => {
                let mut bytes = Vec::with_capacity(MESSAGE_PREFIX.len() + data.len());
                bytes.extend_from_slice(MESSAGE_PREFIX.as_bytes());
                bytes.extend_from_slice(&data);
                Event::Binary(bytes)
            }
        };
        self.push(prefixed);
    }

    /// Sends a text message to the client.
    pub fn send_text(&mut self, text: &str) {
        self.send(Message::Text(text.to_string()));
    }

    /// Sends a binary message to the client.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send(Message::Binary(data.to_vec()));
    }

    /// Closes the connection with `code` (1000 for a normal close, 3000 to
    /// 4999 for the app's own) and `reason` (cut to 123 bytes). Nothing is
    /// sent after it.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.push(Event::Close(
            Some(code),
            truncate(reason, MAX_CLOSE_REASON).to_string(),
        ));
        self.closed = true;
    }

    /// Starts delivering what is published to `channel` to this client.
    pub fn subscribe(&mut self, channel: &str) {
        self.control("subscribe", channel);
    }

    /// Stops delivering `channel` to this client.
    pub fn unsubscribe(&mut self, channel: &str) {
        self.control("unsubscribe", channel);
    }

    fn control(&mut self, kind: &str, channel: &str) {
        // A JSON string value quotes and escapes the name, whatever it holds.
        let channel = serde_json::Value::String(channel.to_string());
        self.push(Event::Text(format!(
            r#"{CONTROL_PREFIX}{{"type":"{kind}","channel":{channel}}}"#
        )));
    }

    fn push(&mut self, event: Event) {
        if !self.closed {
            self.out.push(event);
        }
    }

    /// The connection's meta entry `name` (case-insensitive), as set by
    /// [`set_meta`](Self::set_meta) in this batch or an earlier one.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.meta
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Sets meta entry `name` to `value` for this and every later batch of
    /// the connection; an empty `value` removes it. Meta travels as HTTP
    /// headers (`Set-Meta-<name>`, then `Meta-<name>` on each request), so
    /// `name` is letters, digits, `-` and `_` (stored in lowercase), and
    /// `value` printable ASCII without leading or trailing spaces, at most
    /// [`MAX_META_VALUE`] bytes. For anything else use
    /// [`set_state`](Self::set_state).
    pub fn set_meta(&mut self, name: &str, value: &str) -> Result<(), MetaError> {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(MetaError(format!(
                "meta name {name:?} must be letters, digits, '-' and '_'"
            )));
        }
        if value.len() > MAX_META_VALUE {
            return Err(MetaError(format!(
                "meta {name} is {} bytes; at most {MAX_META_VALUE} fit in a header",
                value.len()
            )));
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) || value.trim() != value {
            return Err(MetaError(format!(
                "meta {name} must be printable ASCII without leading or trailing spaces \
                 (use set_state for other values)"
            )));
        }
        let name = name.to_ascii_lowercase();
        if value.is_empty() {
            self.meta.remove(&name);
        } else {
            self.meta.insert(name, value.to_string());
        }
        Ok(())
    }

    /// The connection's typed state, as [`set_state`](Self::set_state)
    /// left it; `None` when there is none or it does not read as a `T`
    /// (say, a version before this one stored another shape).
    pub fn state<T: DeserializeOwned>(&self) -> Option<T> {
        let json = URL_SAFE_NO_PAD.decode(self.meta(STATE_META)?).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Keeps `value` as the connection's state for later batches: JSON,
    /// then base64url (header values must be ASCII), in the meta entry
    /// `state`. The encoded form must fit in [`MAX_META_VALUE`] bytes, so
    /// keep it to a few kilobytes of JSON.
    pub fn set_state<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), MetaError> {
        let json = serde_json::to_vec(value)
            .map_err(|e| MetaError(format!("the state cannot be JSON: {e}")))?;
        self.set_meta(STATE_META, &URL_SAFE_NO_PAD.encode(json))
    }

    /// Forgets the connection's state.
    pub fn clear_state(&mut self) {
        self.meta.remove(STATE_META);
    }

    /// The meta entries this batch changed: a new value, or empty to
    /// remove.
    fn changed_meta(&self) -> Vec<(&str, &str)> {
        let mut changed: Vec<(&str, &str)> = self
            .meta
            .iter()
            .filter(|(name, value)| self.original.get(*name) != Some(*value))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        changed.extend(
            self.original
                .keys()
                .filter(|name| !self.meta.contains_key(*name))
                .map(|name| (name.as_str(), "")),
        );
        changed
    }
}

/// Answers a request of WebSocket events (see [`is_websocket`]) with
/// `handler`: reads the events (strictly, at most [`MAX_EVENTS_BODY`]
/// bytes), calls the handler for each in order, and answers with what it
/// sent, in the form both wasm-host and Pushpin take. A request that is
/// not a body of events is answered `400`, `413` or `415`.
pub async fn serve<H: SocketHandler>(mut req: Request, mut handler: H) -> Response {
    if !is_websocket(&req) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected a POST of {CONTENT_TYPE}\n"),
        )
            .into_response();
    }
    let body = match read_bounded(req.body_mut(), MAX_EVENTS_BODY).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let events = match decode(&body) {
        Ok(events) => events,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not {CONTENT_TYPE}: {why}\n"),
            )
                .into_response();
        }
    };
    let mut conn = Conn::from_request(&req);
    let mut accepted = false;
    for event in events {
        match event {
            Event::Open => {
                if let Err(refusal) = handler.on_open(&mut conn).await {
                    return refusal.into_response();
                }
                accepted = true;
            }
            Event::Text(text) if !conn.closed => {
                handler.on_message(&mut conn, Message::Text(text)).await
            }
            Event::Binary(data) if !conn.closed => {
                handler.on_message(&mut conn, Message::Binary(data)).await
            }
            // The host answers pings itself and does not pass them on;
            // Pushpin passes them on and leaves the answer to the app.
            Event::Ping(data) => conn.push(Event::Pong(data)),
            Event::Close(code, _) => {
                // The client's close is answered with a close (echoing its
                // code) unless the app has closed already; either way the
                // connection is over for this batch.
                if !conn.closed {
                    conn.push(Event::Close(code, String::new()));
                    conn.closed = true;
                }
                handler.on_close(&mut conn, code).await;
                break;
            }
            Event::Disconnect => {
                conn.closed = true;
                handler.on_close(&mut conn, None).await;
                break;
            }
            Event::Text(_) | Event::Binary(_) | Event::Pong(_) => {}
        }
    }
    answer(&conn, accepted)
}

/// The `200` answer carrying `conn`'s events, OPEN first when `accepted`.
fn answer(conn: &Conn, accepted: bool) -> Response {
    let mut events = Vec::with_capacity(conn.out.len() + 1);
    if accepted {
        events.push(Event::Open);
    }
    events.extend(conn.out.iter().cloned());
    let body = encode(&events);
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    headers.insert("content-length", length);
    // Always: it turns on `c:` control messages, and behind Pushpin it is
    // what makes the `m:` prefix of every message expected.
    headers.insert("sec-websocket-extensions", HeaderValue::from_static("grip"));
    for (name, value) in conn.changed_meta() {
        // Both were checked by `set_meta`; a failure here would only drop
        // the change, never the answer.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("set-meta-{name}").as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

/// Reads `body` whole, or answers why not: `413` past `max` bytes, `400`
/// when it breaks off.
async fn read_bounded(body: &mut Body, max: usize) -> Result<Vec<u8>, Response> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a body of events may be at most {max} bytes\n"),
        )
            .into_response()
    };
    if body.content_length().is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let mut stream = std::mem::replace(body, Body::empty()).into_boxed_body();
    let mut out = Vec::new();
    while let Some(frame) = stream.frame().await {
        let frame = frame.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("the body of events broke off: {e}\n"),
            )
                .into_response()
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Publishes `message` to every WebSocket subscribed to `channel`; held
/// streams skip it. Returns how many subscribers took it.
pub fn publish(channel: &str, message: impl Into<Message>) -> u32 {
    publish_forms(channel, Some(message.into()), None)
}

/// Publishes a server-sent event (see [`sse_event`]) to every stream held
/// on `channel`; WebSockets skip it. Returns how many subscribers took it.
pub fn publish_event(channel: &str, event: &str, data: &str) -> u32 {
    publish_forms(channel, None, Some(sse_event(event, data).as_bytes()))
}

/// Publishes one item to `channel` in a form per kind of subscriber:
/// WebSockets get `ws`, held streams get `stream` appended to their body;
/// a kind whose form is `None` skips it. Returns how many subscribers on
/// this host took it. Works while handling any request and in
/// [`after_response`](crate::after_response) work.
pub fn publish_forms(channel: &str, ws: Option<Message>, stream: Option<&[u8]>) -> u32 {
    let ws = ws.map(|message| match message {
        Message::Text(text) => host::Message::Text(text),
        Message::Binary(data) => host::Message::Binary(data),
    });
    host::publish(channel, ws.as_ref(), stream)
}

/// A response the host (or Pushpin) holds open as a stream of server-sent
/// events: `first` is sent at once, then what is published to `channels`
/// (their stream form) is appended as it comes, with a comment line after
/// 20 quiet seconds to keep proxies from timing out. The version that
/// answers need not stay: the host holds the stream across reloads.
///
/// A channel name must be printable ASCII without `,` or `;` (it goes in a
/// header); otherwise the answer is a `500` that says so.
pub fn hold_stream(channels: &[&str], first: impl Into<Body>) -> Response {
    let bad = channels.iter().find(|c| {
        c.is_empty()
            || !c
                .bytes()
                .all(|b| (b'!'..=b'~').contains(&b) && b != b',' && b != b';')
    });
    let channel_list = channels.join(", ");
    let value = match (bad, HeaderValue::from_str(&channel_list)) {
        (None, Ok(value)) if !channels.is_empty() => value,
        _ => {
            let why = match bad {
                Some(c) => format!("channel name {c:?} cannot be held (it goes in a header)"),
                None => "a held stream needs at least one channel".to_string(),
            };
            eprintln!("wasm-host-sdk: {why}");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response();
        }
    };
    let mut response = Response::new(first.into());
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("grip-hold", HeaderValue::from_static("stream"));
    headers.insert("grip-channel", value);
    // `\n` is written as the two characters backslash and n: the cstring
    // format turns them into a newline, which a header cannot hold.
    headers.insert(
        "grip-keep-alive",
        HeaderValue::from_static(":\\n\\n; format=cstring; timeout=20"),
    );
    response
}

/// One server-sent event: `event: NAME` (left out when `event` is empty),
/// a `data: ` line per line of `data`, and the blank line that ends it.
/// Line breaks in `event` are removed, since they would end the field.
pub fn sse_event(event: &str, data: &str) -> String {
    let mut out = String::with_capacity(event.len() + data.len() + 16);
    let event: String = event.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if !event.is_empty() {
        out.push_str("event: ");
        out.push_str(&event);
        out.push('\n');
    }
    // SSE ends a line at CRLF, LF or CR; each line is its own `data:` field.
    for line in data.replace("\r\n", "\n").split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The value of header `name`, if it is text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// A prefix of `text` at most `max` bytes long, cut at a char boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One event of the `application/websocket-events` format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Open,
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The code, when there is one, and the reason.
    Close(Option<u16>, String),
    Disconnect,
}

/// The wire form of `events`: for each, `TYPE\r\n`, or with content
/// `TYPE <hex length>\r\n<content>\r\n`.
fn encode(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        let (name, content): (&str, Option<Vec<u8>>) = match event {
            Event::Open => ("OPEN", None),
            Event::Disconnect => ("DISCONNECT", None),
            // A message has content even when empty, so an empty message
            // still reads as one.
            Event::Text(text) => ("TEXT", Some(text.as_bytes().to_vec())),
            Event::Binary(data) => ("BINARY", Some(data.clone())),
            Event::Ping(data) => ("PING", (!data.is_empty()).then(|| data.clone())),
            Event::Pong(data) => ("PONG", (!data.is_empty()).then(|| data.clone())),
            Event::Close(None, _) => ("CLOSE", None),
            Event::Close(Some(code), reason) => {
                let mut content = code.to_be_bytes().to_vec();
                content.extend_from_slice(reason.as_bytes());
                ("CLOSE", Some(content))
            }
        };
        out.extend_from_slice(name.as_bytes());
        if let Some(content) = content {
            out.extend_from_slice(format!(" {:x}\r\n", content.len()).as_bytes());
            out.extend_from_slice(&content);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads every event of `body`, refusing anything the format does not
/// allow (the body is the client's words relayed, and a misread event
/// would be a misread message).
fn decode(body: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let line_end = body[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| at + p)
            .ok_or_else(|| format!("the event line at byte {at} has no CRLF"))?;
        let line = &body[at..line_end];
        let (name, length) = match line.iter().position(|b| *b == b' ') {
            Some(space) => (&line[..space], Some(&line[space + 1..])),
            None => (line, None),
        };
        let shown = || {
            String::from_utf8_lossy(name)
                .chars()
                .take(32)
                .collect::<String>()
        };
        at = line_end + 2;
        let content: &[u8] = match length {
            None => &[],
            Some(length) => {
                let n = hex_length(length)
                    .filter(|n| at.checked_add(*n).is_some_and(|end| end <= body.len()))
                    .ok_or_else(|| {
                        format!(
                            "bad content length {:?} of {} at byte {at}",
                            String::from_utf8_lossy(length),
                            shown()
                        )
                    })?;
                let content = &body[at..at + n];
                at += n;
                if body.get(at..at + 2) != Some(b"\r\n".as_slice()) {
                    return Err(format!(
                        "the content ending at byte {at} is not followed by CRLF"
                    ));
                }
                at += 2;
                content
            }
        };
        let empty = |event: Event| match content.is_empty() {
            true => Ok(event),
            false => Err(format!("{} carries no content", shown())),
        };
        events.push(match name {
            b"OPEN" => empty(Event::Open)?,
            b"DISCONNECT" => empty(Event::Disconnect)?,
            b"TEXT" => Event::Text(
                String::from_utf8(content.to_vec())
                    .map_err(|_| "a TEXT event is not UTF-8".to_string())?,
            ),
            b"BINARY" => Event::Binary(content.to_vec()),
            b"PING" => Event::Ping(content.to_vec()),
            b"PONG" => Event::Pong(content.to_vec()),
            b"CLOSE" => match content {
                [] => Event::Close(None, String::new()),
                [_] => return Err("a CLOSE event's content is one byte; a code takes two".into()),
                [hi, lo, reason @ ..] => Event::Close(
                    Some(u16::from_be_bytes([*hi, *lo])),
                    String::from_utf8_lossy(reason).into_owned(),
                ),
            },
            _ => return Err(format!("unknown event type {:?}", shown())),
        });
    }
    Ok(events)
}

/// A content length: 1 to 16 hex digits, nothing else (no sign, no
/// spaces).
fn hex_length(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digits = std::str::from_utf8(digits).ok()?;
    usize::try_from(u64::from_str_radix(digits, 16).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn events_survive_a_round_trip() {
        let events = vec![
            Event::Open,
            Event::Text("hello\r\nworld".into()),
            Event::Text(String::new()),
            Event::Binary(vec![0, 1, 2, 255]),
            Event::Ping(Vec::new()),
            Event::Pong(b"p".to_vec()),
            Event::Close(Some(4001), "bye".into()),
            Event::Close(None, String::new()),
            Event::Disconnect,
        ];
        let wire = encode(&events);
        assert_eq!(decode(&wire), Ok(events));
        assert!(wire.starts_with(b"OPEN\r\nTEXT c\r\nhello\r\nworld\r\nTEXT 0\r\n\r\n"));
        // Pushpin's captured forms, byte for byte.
        assert_eq!(
            encode(&[Event::Close(Some(4001), "bye".into())]),
            b"CLOSE 5\r\n\x0f\xa1bye\r\n"
        );
        assert_eq!(
            decode(b"TEXT 8\r\nhi there\r\n"),
            Ok(vec![Event::Text("hi there".into())])
        );
        assert_eq!(decode(b"TEXT A\r\n0123456789\r\n").map(|e| e.len()), Ok(1));
        assert_eq!(decode(b""), Ok(vec![]));
    }

    #[test]
    fn broken_bodies_are_refused() {
        let bad = |body: &[u8]| decode(body).unwrap_err();
        assert!(bad(b"OPEN").contains("no CRLF"));
        assert!(bad(b"TEXT 10\r\nshort\r\n").contains("bad content length"));
        assert!(bad(b"TEXT zz\r\n").contains("bad content length"));
        assert!(bad(b"TEXT +2\r\nab\r\n").contains("bad content length"));
        assert!(bad(b"TEXT \r\n").contains("bad content length"));
        assert!(bad(b"TEXT ffffffffffffffff\r\n").contains("bad content length"));
        assert!(bad(b"TEXT 2\r\nabc\r\n").contains("not followed by CRLF"));
        assert!(bad(b"SHOUT\r\n").contains("unknown event type"));
        assert!(bad(b"open\r\n").contains("unknown event type"));
        assert!(bad(b"OPEN 1\r\nx\r\n").contains("carries no content"));
        assert!(bad(b"CLOSE 1\r\nx\r\n").contains("one byte"));
        assert!(bad(b"TEXT 1\r\n\xff\r\n").contains("not UTF-8"));
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct State {
        name: String,
        seen: u32,
    }

    fn conn(meta: &[(&str, &str)]) -> Conn {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "/chat?name=ann+b".parse().unwrap();
        for (name, value) in meta {
            req.headers_mut().insert(
                HeaderName::from_bytes(format!("meta-{name}").as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Conn::from_request(&req)
    }

    #[test]
    fn state_survives_the_trip_through_headers() {
        let mut first = conn(&[]);
        assert_eq!(first.state::<State>(), None);
        let state = State {
            name: "Zoë \"z\"\n".into(),
            seen: 3,
        };
        first.set_state(&state).unwrap();
        assert_eq!(first.state::<State>().as_ref(), Some(&state));
        let response = answer(&first, false);
        let set = response.headers()["set-meta-state"].to_str().unwrap();
        assert!(
            set.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );

        // The next batch brings it back as `Meta-State`.
        let mut next = conn(&[("state", set)]);
        assert_eq!(next.state::<State>(), Some(state));
        assert_eq!(next.state::<u32>(), None);
        assert!(
            answer(&next, false)
                .headers()
                .get("set-meta-state")
                .is_none()
        );
        next.clear_state();
        assert_eq!(answer(&next, false).headers()["set-meta-state"], "");
    }

    #[test]
    fn meta_is_checked_and_only_changes_are_answered() {
        let mut c = conn(&[("user", "ann"), ("room", "a")]);
        assert_eq!(c.meta("User"), Some("ann"));
        c.set_meta("user", "ann").unwrap();
        c.set_meta("Room", "b").unwrap();
        c.set_meta("new_one", "x y").unwrap();
        assert!(c.set_meta("bad name", "x").is_err());
        assert!(c.set_meta("", "x").is_err());
        assert!(c.set_meta("v", "é").is_err());
        assert!(c.set_meta("v", " padded").is_err());
        assert!(c.set_meta("v", &"x".repeat(MAX_META_VALUE + 1)).is_err());
        let response = answer(&c, false);
        let h = response.headers();
        assert!(h.get("set-meta-user").is_none());
        assert_eq!(h["set-meta-room"], "b");
        assert_eq!(h["set-meta-new_one"], "x y");
        assert_eq!(c.query("name").as_deref(), Some("ann b"));
    }

    struct Chat;

    impl SocketHandler for Chat {
        async fn on_open(&mut self, conn: &mut Conn) -> Result<(), Refuse> {
            if conn.query("name").as_deref() == Some("mallory") {
                return Err(Refuse::new("no mallory"));
            }
            conn.subscribe("room \"1\"");
            conn.set_state(&conn.query("name"))
                .map_err(|e| Refuse::new(e.to_string()))
        }

        async fn on_message(&mut self, conn: &mut Conn, message: Message) {
            match message {
                Message::Text(t) if t == "close" => conn.close(4000, "bye"),
                Message::Text(t) => {
                    let name: Option<String> = conn.state().flatten();
                    conn.send_text(&format!("{}:{t}", name.unwrap_or_default()));
                }
                Message::Binary(b) => conn.send_binary(&b),
            }
        }
    }

    fn run(uri: &str, meta: &[(&str, &str)], body: &[u8]) -> (Response, Vec<u8>) {
        let mut req = Request::new(Body::from(body.to_vec()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.parse().unwrap();
        let h = req.headers_mut();
        h.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
        h.insert("connection-id", HeaderValue::from_static("c1"));
        for (name, value) in meta {
            h.insert(
                HeaderName::from_bytes(format!("meta-{name}").as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        futures_lite::future::block_on(async {
            let response = serve(req, Chat).await;
            let (parts, mut body) = response.into_parts();
            let bytes = body.contents().await.unwrap().to_vec();
            (Response::from_parts(parts, Body::empty()), bytes)
        })
    }

    #[test]
    fn serve_accepts_answers_and_closes() {
        let (open, body) = run("/chat?name=bob", &[], b"OPEN\r\n");
        assert_eq!(open.status(), 200);
        let h = open.headers();
        assert_eq!(h["content-type"], CONTENT_TYPE);
        assert_eq!(h["sec-websocket-extensions"], "grip");
        let control = r#"c:{"type":"subscribe","channel":"room \"1\""}"#;
        let expected = format!("OPEN\r\nTEXT {:x}\r\n{control}\r\n", control.len());
        assert_eq!(String::from_utf8(body).unwrap(), expected);
        let state = h["set-meta-state"].to_str().unwrap().to_string();

        let (refused, body) = run("/chat?name=mallory", &[], b"OPEN\r\n");
        assert_eq!(refused.status(), 403);
        assert_eq!(body, b"no mallory\n");

        // Messages in order, each prefixed; a ping gets a pong; nothing
        // is sent after the app's close, and no second close is answered.
        let batch = encode(&[
            Event::Text("hi".into()),
            Event::Binary(vec![0, 1]),
            Event::Ping(b"p".to_vec()),
            Event::Text("close".into()),
            Event::Text("ignored".into()),
            Event::Close(Some(1000), String::new()),
        ]);
        let (messages, body) = run("/chat?name=bob", &[("state", &state)], &batch);
        assert_eq!(messages.status(), 200);
        assert!(messages.headers().get("set-meta-state").is_none());
        assert_eq!(
            decode(&body),
            Ok(vec![
                Event::Text("m:bob:hi".into()),
                Event::Binary(b"m:\x00\x01".to_vec()),
                Event::Pong(b"p".to_vec()),
                Event::Close(Some(4000), "bye".into()),
            ])
        );

        // The client's close is answered with its code.
        let (_, body) = run("/chat", &[], b"CLOSE 2\r\n\x03\xe8\r\n");
        assert_eq!(
            decode(&body),
            Ok(vec![Event::Close(Some(1000), String::new())])
        );
        let (_, body) = run("/chat", &[], b"DISCONNECT\r\n");
        assert_eq!(body, b"");
    }

    #[test]
    fn serve_refuses_what_is_not_events() {
        let (bad, _) = run("/chat", &[], b"TEXT 5\r\nhi\r\n");
        assert_eq!(bad.status(), 400);
        let req = Request::new(Body::from("x"));
        let response = futures_lite::future::block_on(serve(req, Chat));
        assert_eq!(response.status(), 415);
        let mut big = Body::from(vec![b'x'; 10]);
        let refusal = futures_lite::future::block_on(read_bounded(&mut big, 9)).unwrap_err();
        assert_eq!(refusal.status(), 413);
    }

    #[test]
    fn streams_are_held_with_grip_headers() {
        let held = hold_stream(&["room", "news"], ": hi\n\n");
        let h = held.headers();
        assert_eq!(h["grip-hold"], "stream");
        assert_eq!(h["grip-channel"], "room, news");
        assert_eq!(h["grip-keep-alive"], ":\\n\\n; format=cstring; timeout=20");
        assert_eq!(h["content-type"], "text/event-stream");
        assert_eq!(hold_stream(&["a,b"], "").status(), 500);
        assert_eq!(hold_stream(&[], "").status(), 500);
    }

    #[test]
    fn sse_events_are_framed() {
        assert_eq!(sse_event("", "x"), "data: x\n\n");
        assert_eq!(
            sse_event("greet", "a\nb\r\nc"),
            "event: greet\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(sse_event("bad\nname", ""), "event: badname\ndata: \n\n");
    }
}
