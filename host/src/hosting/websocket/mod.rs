//! WebSockets the host terminates for its apps. The client's upgrade is
//! checked here; the app is asked (an `OPEN` event over
//! WebSocket-over-HTTP) whether it takes the connection, and only then is
//! the client switched to the WebSocket protocol. After that the app never
//! holds the socket: the [`session`] does, and hands each batch of events
//! to whichever version is live at that moment.
//!
//! An HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT (RFC 8441) on a
//! stream of a connection that goes on serving other requests. Knows apps
//! (to route events) but no listener state beyond the stop signal it is
//! given.

pub mod exchange;
pub mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;

use self::exchange::{Base, ExchangeError};
use self::session::Session;
use crate::app::App;
use crate::realtime::events::Event;
use crate::runtime::request::{self, Response};

/// The rest of an accepted connection, to run once hyper has handed the
/// socket over (after the `101` is written).
pub type Accepted = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Whether `req` asks to become a WebSocket (`Upgrade: websocket`, or an
/// HTTP/2 `CONNECT` with the `websocket` protocol).
pub fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    if req.method() == http::Method::CONNECT {
        return req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    }
    let has_token = |name: http::header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(http::header::UPGRADE, "websocket") && has_token(http::header::CONNECTION, "upgrade")
}

/// Answers the upgrade request `req` for `app`: `101` and the connection
/// to run, when the app accepts; otherwise the refusal (the handshake's
/// own, the app's answer, or a limit), and no connection.
pub async fn accept(
    app: Arc<App>,
    mut req: http::Request<hyper::body::Incoming>,
    stop: CancellationToken,
) -> (Response, Option<Accepted>) {
    let key = match check_handshake(&req) {
        Ok(key) => key,
        Err(refusal) => return (*refusal, None),
    };
    let Some(slot) = app.held().try_open() else {
        let limits = app.held().limits();
        let mut refusal = request::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} holds its limit of {} WebSocket connections (--ws-max-connections); retry later\n",
                app.name(),
                limits.max_connections
            ),
        );
        refusal
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
        return (refusal, None);
    };
    let base = Base::new(req.uri(), req.headers());
    let mut session = Session::new(app.clone(), base, slot);
    let max_answer = 1 << 20;
    let answer = match exchange::send(
        &app,
        session.base(),
        &Default::default(),
        &[Event::Open],
        max_answer,
    )
    .await
    {
        Ok(answer) => answer,
        // The app's own refusal (a 403, say) is the client's answer.
        Err(ExchangeError::Refused { response, .. }) => return (*response, None),
        Err(e) => {
            tracing::warn!(app = %app.name(), error = %e, "a WebSocket was refused: the app's answer to OPEN is unusable");
            return (
                request::plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{} did not answer the WebSocket opening properly: {e}\n",
                        app.name()
                    ),
                ),
                None,
            );
        }
    };
    let mut events = answer.events.clone();
    if events.first() != Some(&Event::Open) {
        return (
            request::plain(
                StatusCode::FORBIDDEN,
                format!(
                    "{} did not accept the WebSocket (its answer to OPEN has no OPEN event)\n",
                    app.name()
                ),
            ),
            None,
        );
    }
    events.remove(0);
    session.opened(&answer);
    tracing::debug!(app = %app.name(), connection = %session.id(), generation = ?answer.generation, "WebSocket open");

    let mut switching = match key {
        // HTTP/2: a 200 opens the stream for the WebSocket's frames.
        None => request::plain(StatusCode::OK, String::new()),
        Some(key) => {
            let mut switching = request::plain(StatusCode::SWITCHING_PROTOCOLS, String::new());
            let headers = switching.headers_mut();
            headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("Upgrade"),
            );
            if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
                headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
            }
            switching
        }
    };
    let headers = switching.headers_mut();
    headers.remove(http::header::CONTENT_TYPE);
    if let Some(protocol) = answer.protocol {
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let run = async move {
        match upgrade.await {
            Ok(io) => session.run(io, stop, events).await,
            Err(e) => tracing::debug!(error = %e, "a WebSocket upgrade did not complete"),
        }
    };
    (switching, Some(Box::pin(run)))
}

/// The client's key (none over HTTP/2, which has no key), if `req` is a
/// well-formed WebSocket handshake; otherwise the answer that says what is
/// wrong.
fn check_handshake<B>(req: &http::Request<B>) -> Result<Option<String>, Box<Response>> {
    let refuse = |status, text: &str| Err(Box::new(request::plain(status, format!("{text}\n"))));
    let h2 = req.version() == http::Version::HTTP_2;
    if !h2 && req.version() != http::Version::HTTP_11 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket opens with an HTTP/1.1 upgrade or an HTTP/2 extended CONNECT",
        );
    }
    if !h2 && req.method() != http::Method::GET {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a WebSocket opens with a GET request",
        );
    }
    let version = req.headers().get(http::header::SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(b"13") {
        let mut refusal = request::plain(
            StatusCode::UPGRADE_REQUIRED,
            "this server speaks WebSocket version 13 (Sec-WebSocket-Version: 13)\n".into(),
        );
        refusal.headers_mut().insert(
            http::header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(refusal));
    }
    if h2 {
        return Ok(None);
    }
    let key = req
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .filter(|k| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .is_ok_and(|raw| raw.len() == 16)
        });
    match key {
        Some(key) => Ok(Some(key.trim().to_string())),
        None => refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket handshake needs a Sec-WebSocket-Key of 16 base64-encoded bytes",
        ),
    }
}
