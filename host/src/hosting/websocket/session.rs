//! One open WebSocket the host holds for an app: reads the client's
//! frames, sends them in batches to the app's live version (one request at
//! a time, so the app sees them in order), carries out what the app
//! answers, and writes what is published to the connection's channels.
//!
//! The session never pins a version: each batch is routed afresh, so a
//! reload is invisible to the client and a draining version never waits on
//! a connection. Writes go through a bounded queue served by a writer task,
//! so a client that stops reading is closed (1008) instead of stalling the
//! session or growing a buffer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::exchange::{self, Answer, Base, ExchangeError};
use crate::app::App;
use crate::app::held::{HostClose, OpenSlot};
use crate::realtime::events::Event;
use crate::realtime::grip::{self, Control};
use crate::realtime::hub::Mailbox;
use crate::realtime::publish;

/// Client events waiting for the app beyond which the session stops
/// reading the socket (TCP then slows the client down).
const MAX_PENDING: usize = 256;

/// How long the last frames (a close among them) may take to be written
/// once the session ends.
const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// A batch in flight: how many client messages it carries, and the
/// app's answer to come.
type Reply = Pin<Box<dyn Future<Output = (usize, Result<Answer, ExchangeError>)> + Send>>;

/// A connection the app accepted, before its socket is handed over.
pub struct Session {
    app: Arc<App>,
    base: Arc<Base>,
    meta: BTreeMap<String, String>,
    grip: bool,
    detached: bool,
    mailbox: Mailbox,
    _slot: OpenSlot,
}

/// Where the session stands with its client.
#[derive(PartialEq, Eq)]
enum Phase {
    Open,
    /// The client is gone or closed; what it sent last still goes to the
    /// app, then the session ends.
    ClientGone,
    /// The host or the app closed it; nothing more goes to the app.
    Closed,
}

impl Session {
    /// A session for the connection `base` the app accepted with `answer`.
    pub fn new(app: Arc<App>, base: Base, slot: OpenSlot) -> Self {
        let mailbox = app.held().hub().mailbox(app.held().limits().send_queue);
        Self {
            app,
            base: Arc::new(base),
            meta: BTreeMap::new(),
            grip: false,
            detached: false,
            mailbox,
            _slot: slot,
        }
    }

    /// The connection's id.
    pub fn id(&self) -> &str {
        &self.base.id
    }

    /// What the connection's requests share.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// Takes in the answer to OPEN: its state and whether it speaks GRIP.
    pub fn opened(&mut self, answer: &Answer) {
        self.grip = answer.grip;
        self.set_meta(answer);
    }

    fn set_meta(&mut self, answer: &Answer) {
        for (name, value) in &answer.set_meta {
            match value {
                Some(v) => self.meta.insert(name.clone(), v.clone()),
                None => self.meta.remove(name),
            };
        }
    }

    /// Runs the connection over `io` until the client or the app ends it,
    /// or `stop` fires (then it closes with 1001 once no batch is in
    /// flight). `first` are the events of the app's answer to OPEN after
    /// the OPEN itself.
    pub async fn run(mut self, io: Upgraded, stop: CancellationToken, first: Vec<Event>) {
        let limits = self.app.held().limits().clone();
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config)).await;
        let (sink, mut frames) = ws.split();
        let (out, queue) = mpsc::channel(limits.send_queue.max(1));
        let (last_tx, last_rx) = oneshot::channel();
        let writer = tokio::spawn(write(sink, queue, last_rx));
        let mut writer_io = Writer {
            out,
            last: Some(last_tx),
        };

        let mut phase = Phase::Open;
        if self.apply(first, &mut writer_io).is_err() {
            phase = Phase::Closed;
        }
        let max_answer = limits.max_message.saturating_mul(16).max(1 << 20);
        let mut pending: Vec<Event> = Vec::new();
        let mut in_flight: Option<Reply> = None;
        let mut heard = Instant::now();
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        let mut stopping = false;

        loop {
            if in_flight.is_none() && !pending.is_empty() && phase != Phase::Closed {
                let batch = std::mem::take(&mut pending);
                let messages = batch
                    .iter()
                    .filter(|e| matches!(e, Event::Text(_) | Event::Binary(_)))
                    .count();
                let (app, base, meta) = (self.app.clone(), self.base.clone(), self.meta.clone());
                in_flight = Some(Box::pin(async move {
                    (
                        messages,
                        exchange::send(&app, &base, &meta, &batch, max_answer).await,
                    )
                }));
            }
            if in_flight.is_none() && (phase != Phase::Open || stopping) {
                if stopping && phase == Phase::Open {
                    writer_io.close(CloseCode::Away, "the server is shutting down");
                }
                break;
            }
            tokio::select! {
                (received, answer) = poll_reply(&mut in_flight), if in_flight.is_some() => {
                    in_flight = None;
                    match answer {
                        Ok(answer) => {
                            let sent = answer
                                .events
                                .iter()
                                .filter(|e| match e {
                                    Event::Text(t) => !(self.grip && t.starts_with(grip::CONTROL_PREFIX.as_bytes())),
                                    Event::Binary(_) => true,
                                    _ => false,
                                })
                                .count();
                            if let Some(generation) = answer.generation {
                                self.app.count_messages(generation, received, sent);
                            }
                            self.set_meta(&answer);
                            if self.apply(answer.events, &mut writer_io).is_err() {
                                phase = Phase::Closed;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(app = %self.app.name(), connection = %self.base.id, error = %e, "closing a WebSocket: the app did not take its events");
                            writer_io.close(CloseCode::Error, "the app could not handle a message");
                            phase = Phase::Closed;
                        }
                    }
                }
                frame = frames.next(), if phase == Phase::Open && pending.len() < MAX_PENDING && !stopping => {
                    heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) if !self.detached => pending.push(Event::Text(Bytes::from(text))),
                        Some(Ok(Message::Binary(data))) if !self.detached => pending.push(Event::Binary(data)),
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = match frame {
                                Some(f) => (Some(u16::from(f.code)), Bytes::from(f.reason)),
                                None => (None, Bytes::new()),
                            };
                            if !self.detached {
                                pending.push(Event::Close(code, reason));
                            }
                            phase = Phase::ClientGone;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(e))) => {
                            tracing::info!(app = %self.app.name(), connection = %self.base.id, error = %e, "closing a WebSocket: message over the limit");
                            self.app.held().closed(HostClose::TooBig);
                            writer_io.close(CloseCode::Size, "message too big (--ws-max-message)");
                            pending.push(Event::Disconnect);
                            phase = Phase::ClientGone;
                        }
                        Some(Err(_)) | None => {
                            pending.push(Event::Disconnect);
                            phase = Phase::ClientGone;
                        }
                    }
                }
                item = self.mailbox.next(), if phase == Phase::Open => match item {
                    Ok(item) => {
                        if let Some(message) = &item.ws {
                            let frame = match message {
                                publish::Message::Text(t) => Message::Text(Utf8Bytes::from(t.clone())),
                                publish::Message::Binary(b) => Message::Binary(b.clone()),
                            };
                            if writer_io.send(frame).is_err() {
                                self.slow();
                                writer_io.abandon();
                                pending.push(Event::Disconnect);
                                phase = Phase::ClientGone;
                            } else {
                                self.app.held().sent(1);
                            }
                        }
                    }
                    Err(_) => {
                        self.slow();
                        writer_io.abandon();
                        pending.push(Event::Disconnect);
                        phase = Phase::ClientGone;
                    }
                },
                _ = ping.tick(), if phase == Phase::Open => {
                    if heard.elapsed() >= limits.idle_timeout {
                        writer_io.close(CloseCode::Away, "idle timeout (--ws-idle-timeout)");
                        pending.push(Event::Disconnect);
                        phase = Phase::ClientGone;
                    } else if writer_io.send(Message::Ping(Bytes::new())).is_err() {
                        self.slow();
                        writer_io.abandon();
                        pending.push(Event::Disconnect);
                        phase = Phase::ClientGone;
                    }
                }
                _ = stop.cancelled(), if !stopping => stopping = true,
            }
        }
        drop(writer_io);
        let _ = tokio::time::timeout(FLUSH_GRACE, writer).await;
    }

    fn slow(&self) {
        tracing::info!(app = %self.app.name(), connection = %self.base.id, "closing a WebSocket: the client reads too slowly (--ws-send-queue)");
        self.app.held().closed(HostClose::Slow);
    }

    /// Carries out the app's events. `Err` once the connection is closed
    /// (by the app, or because the client cannot keep up).
    fn apply(&mut self, events: Vec<Event>, writer: &mut Writer) -> Result<(), ()> {
        for event in events {
            let frame = match event {
                Event::Open => continue,
                Event::Text(text) => {
                    let text = match self.grip_text(&text) {
                        Some(message) => message,
                        None => continue,
                    };
                    match Utf8Bytes::try_from(text) {
                        Ok(text) => Message::Text(text),
                        Err(_) => {
                            tracing::warn!(app = %self.app.name(), connection = %self.base.id, "the app sent a TEXT event that is not UTF-8; dropped");
                            continue;
                        }
                    }
                }
                Event::Binary(data) => match self.grip {
                    // Behind Pushpin a GRIP app prefixes every message.
                    true => Message::Binary(strip_message_prefix(&data)),
                    false => Message::Binary(data),
                },
                Event::Ping(data) => Message::Ping(data),
                Event::Pong(data) => Message::Pong(data),
                Event::Close(code, reason) => {
                    let code = code.map(CloseCode::from).unwrap_or(CloseCode::Normal);
                    writer.close(code, &String::from_utf8_lossy(&reason));
                    return Err(());
                }
                Event::Disconnect => {
                    writer.abandon();
                    return Err(());
                }
            };
            if writer.send(frame).is_err() {
                self.slow();
                writer.abandon();
                return Err(());
            }
            self.app.held().sent(1);
        }
        Ok(())
    }

    /// On a GRIP connection, runs a `c:` control message (returning `None`)
    /// and strips the `m:` of an ordinary one; otherwise the text as is.
    fn grip_text(&mut self, text: &Bytes) -> Option<Bytes> {
        if !self.grip {
            return Some(text.clone());
        }
        if let Some(json) = text.strip_prefix(grip::CONTROL_PREFIX.as_bytes()) {
            match grip::control(&String::from_utf8_lossy(json)) {
                Ok(Control::Subscribe(channel)) => self.mailbox.subscribe(&channel),
                Ok(Control::Unsubscribe(channel)) => self.mailbox.unsubscribe(&channel),
                Ok(Control::Detach) => self.detached = true,
                Ok(Control::Other(kind)) => {
                    tracing::debug!(app = %self.app.name(), kind, "GRIP control message ignored")
                }
                Err(why) => {
                    tracing::warn!(app = %self.app.name(), connection = %self.base.id, "{why}")
                }
            }
            return None;
        }
        Some(strip_message_prefix(text))
    }
}

/// A GRIP message without its `m:`. Pushpin drops a message that lacks
/// it; this host passes such a message on whole.
fn strip_message_prefix(data: &Bytes) -> Bytes {
    let prefix = grip::MESSAGE_PREFIX.as_bytes();
    match data.starts_with(prefix) {
        true => data.slice(prefix.len()..),
        false => data.clone(),
    }
}

async fn poll_reply(reply: &mut Option<Reply>) -> (usize, Result<Answer, ExchangeError>) {
    match reply {
        Some(reply) => reply.await,
        None => std::future::pending().await,
    }
}

/// The session's side of the writer task.
struct Writer {
    out: mpsc::Sender<Message>,
    last: Option<oneshot::Sender<Option<CloseFrame>>>,
}

impl Writer {
    /// Queues `frame`; `Err` when the queue is full (the client is not
    /// reading) or the writer is gone.
    fn send(&self, frame: Message) -> Result<(), ()> {
        self.out.try_send(frame).map_err(|_| ())
    }

    /// Queues a close after what is already queued, or, if the queue is
    /// full, closes ahead of it.
    fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(truncate(reason, 120).to_string()),
        };
        if let Err(mpsc::error::TrySendError::Full(Message::Close(frame))) =
            self.out.try_send(Message::Close(Some(frame)))
            && let Some(last) = self.last.take()
        {
            let _ = last.send(frame);
        }
    }

    /// Closes with 1008 ahead of anything queued: the client is not
    /// reading what it has.
    fn abandon(&mut self) {
        if let Some(last) = self.last.take() {
            let _ = last.send(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: Utf8Bytes::from_static("the client reads too slowly"),
            }));
        }
    }
}

/// A prefix of `text` at most `max` bytes long, cut at a char boundary (a
/// close reason must fit in a control frame).
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes queued frames to the client until the queue ends or a close is
/// written. A close sent on `last` goes ahead of the queue; if it comes
/// while a frame is half written, nothing more can be written and the
/// socket is simply closed.
async fn write<S>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
    mut queue: mpsc::Receiver<Message>,
    last: oneshot::Receiver<Option<CloseFrame>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut last = Some(last);
    loop {
        tokio::select! {
            biased;
            close = close_ahead(&mut last) => {
                let _ = tokio::time::timeout(FLUSH_GRACE, sink.send(Message::Close(close))).await;
                break;
            }
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                let closing = matches!(frame, Message::Close(_));
                tokio::select! {
                    sent = sink.send(frame) => if sent.is_err() { break },
                    _ = close_ahead(&mut last) => break,
                }
                if closing {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(FLUSH_GRACE, sink.close()).await;
}

/// The close frame sent ahead of the queue. Never resolves once the
/// session has dropped its side without sending one (the queue is then
/// written out to its end).
async fn close_ahead(
    last: &mut Option<oneshot::Receiver<Option<CloseFrame>>>,
) -> Option<CloseFrame> {
    if let Some(rx) = last.as_mut()
        && let Ok(frame) = rx.await
    {
        return frame;
    }
    *last = None;
    std::future::pending().await
}
