//! Responses held open as streams on channels (GRIP `Grip-Hold: stream`):
//! the app answers once, the host sends that answer's body and then keeps
//! the response open, appending what is published to its channels. This
//! is how server-sent events outlive the version that started them.
//!
//! The version's part ends with its first body; the host holds the rest.
//! Knows the app's hub and the listener's stop signal, nothing else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::realtime::grip::{self, Hold};
use crate::realtime::hub::Mailbox;
use crate::realtime::publish::StreamPart;
use crate::runtime::request::Response;

/// `response` as the app gave it, or, when it asks to be held, a response
/// that streams its body and then what is published to its channels until
/// the client leaves, a publish closes it, the client falls too far behind
/// (its mailbox overflows), or `stop` fires.
pub fn hold(app: &Arc<App>, mut response: Response, stop: CancellationToken) -> Response {
    let hold = match grip::hold(response.headers()) {
        Ok(None) => return response,
        Ok(Some(hold)) => hold,
        Err(why) => {
            tracing::warn!(app = %app.name(), "{why}; the response is sent as is");
            strip_grip(&mut response);
            return response;
        }
    };
    strip_grip(&mut response);
    response.headers_mut().remove(http::header::CONTENT_LENGTH);
    let mut mailbox = app.held().hub().mailbox(app.held().limits().send_queue);
    for channel in &hold.channels {
        mailbox.subscribe(channel);
    }
    response.map(|first| {
        let first = first.into_data_stream();
        let rest = held(mailbox, hold, stop);
        StreamBody::new(first.map(|r| r.map(Frame::data)).chain(rest)).boxed_unsync()
    })
}

fn strip_grip(response: &mut Response) {
    let names: Vec<_> = response
        .headers()
        .keys()
        .filter(|n| n.as_str().starts_with("grip-"))
        .cloned()
        .collect();
    for name in names {
        response.headers_mut().remove(name);
    }
}

type Chunk = Result<Frame<Bytes>, wasmtime_wasi_http::Error>;

/// The published part of a held body.
fn held(
    mailbox: Mailbox,
    hold: Hold,
    stop: CancellationToken,
) -> impl futures::Stream<Item = Chunk> + Send {
    let keep_alive = hold
        .keep_alive
        .map(|(bytes, every)| (Bytes::from(bytes), every));
    futures::stream::unfold(
        (mailbox, keep_alive, stop),
        |(mut mailbox, keep_alive, stop)| async move {
            loop {
                let quiet = keep_alive
                    .as_ref()
                    .map_or(Duration::from_secs(3600), |(_, every)| *every);
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(quiet) => {
                        if let Some((bytes, _)) = &keep_alive {
                            let chunk = Ok(Frame::data(bytes.clone()));
                            return Some((chunk, (mailbox, keep_alive, stop)));
                        }
                    }
                    item = mailbox.next() => match item {
                        Err(_) => return None,
                        Ok(item) => match &item.stream {
                            Some(StreamPart::Content(bytes)) => {
                                let chunk = Ok(Frame::data(bytes.clone()));
                                return Some((chunk, (mailbox, keep_alive, stop)));
                            }
                            Some(StreamPart::Close) => return None,
                            None => {}
                        },
                    },
                }
            }
        },
    )
}

/// Where a request to an app came from, as far as GRIP is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client: it may not send WebSocket events, and the host holds
    /// what the app asks to be held.
    Client,
    /// A GRIP proxy the app trusts (`Grip-Sig` signed with its
    /// `--grip-key`): it may send WebSocket events, and holds answers
    /// itself.
    Proxy,
}

/// Where `req` for `app` came from.
pub fn origin<B>(app: &App, req: &http::Request<B>) -> Origin {
    let (Some(key), Some(sig)) = (
        app.settings().grip_key.as_deref(),
        req.headers().get("grip-sig").and_then(|v| v.to_str().ok()),
    ) else {
        return Origin::Client;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match grip::verify_sig(sig, key.as_bytes(), now) {
        Ok(()) => Origin::Proxy,
        Err(why) => {
            tracing::warn!(app = %app.name(), "{why}; the request is treated as a client's");
            Origin::Client
        }
    }
}

/// Whether `req` carries WebSocket-over-HTTP events, which only the host's
/// own sessions and a trusted proxy may send.
pub fn carries_events<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(crate::realtime::events::CONTENT_TYPE))
}
