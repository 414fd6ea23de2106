//! The `application/websocket-events` body of WebSocket-over-HTTP (the
//! protocol of Pushpin and Fastly Fanout): a run of events, each a type
//! name, an optional hex length, CRLF, then that many bytes of content and
//! CRLF.
//!
//! Only the wire format lives here: parsing what an app answers (untrusted
//! bytes) and writing what the host sends. What an event means to a
//! connection is the WebSocket session's business.

use bytes::{BufMut, Bytes, BytesMut};

/// The media type of a body of events.
pub const CONTENT_TYPE: &str = "application/websocket-events";

/// One connection event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client connected (host → app), or the app accepts it (app →
    /// host).
    Open,
    /// A text message.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (content optional).
    Ping(Bytes),
    /// A pong (content optional).
    Pong(Bytes),
    /// A close: the status code, when there is one, and a reason.
    Close(Option<u16>, Bytes),
    /// The connection is gone without a close handshake (host → app), or
    /// the app wants it dropped at once (app → host).
    Disconnect,
}

/// Why a body of events could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// A line with no CRLF before the body ends.
    #[error("an event line has no CRLF at byte {0}")]
    Unterminated(usize),
    /// A type name this format does not have.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// A length that is not hex or is larger than the body.
    #[error("bad content length `{0}`")]
    BadLength(String),
    /// Content not followed by CRLF.
    #[error("event content at byte {0} is not followed by CRLF")]
    MissingCrlf(usize),
    /// A CLOSE whose content is one byte (a code takes two).
    #[error("a CLOSE event's content must be empty or start with a two-byte code")]
    BadClose,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Open => "OPEN",
            Event::Text(_) => "TEXT",
            Event::Binary(_) => "BINARY",
            Event::Ping(_) => "PING",
            Event::Pong(_) => "PONG",
            Event::Close(..) => "CLOSE",
            Event::Disconnect => "DISCONNECT",
        }
    }

    /// Appends the event's wire form to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        let content: Option<Bytes> = match self {
            Event::Open | Event::Disconnect => None,
            Event::Text(b) | Event::Binary(b) => Some(b.clone()),
            Event::Ping(b) | Event::Pong(b) => (!b.is_empty()).then(|| b.clone()),
            Event::Close(None, _) => None,
            Event::Close(Some(code), reason) => {
                let mut c = BytesMut::with_capacity(2 + reason.len());
                c.put_u16(*code);
                c.extend_from_slice(reason);
                Some(c.freeze())
            }
        };
        out.extend_from_slice(self.name().as_bytes());
        match content {
            Some(content) => {
                out.extend_from_slice(format!(" {:x}\r\n", content.len()).as_bytes());
                out.extend_from_slice(&content);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"\r\n"),
        }
    }
}

/// The wire form of `events`, as one body.
pub fn encode(events: &[Event]) -> Bytes {
    let mut out = BytesMut::new();
    for event in events {
        event.write(&mut out);
    }
    out.freeze()
}

/// Reads every event of `body`.
pub fn decode(body: &Bytes) -> Result<Vec<Event>, EventsError> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let line_end = body[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| at + p)
            .ok_or(EventsError::Unterminated(at))?;
        let line = String::from_utf8_lossy(&body[at..line_end]).into_owned();
        let (name, len) = match line.split_once(' ') {
            Some((name, len)) => (name.to_string(), Some(len.to_string())),
            None => (line.clone(), None),
        };
        at = line_end + 2;
        let content = match len {
            None => Bytes::new(),
            Some(len) => {
                let n = usize::from_str_radix(len.trim(), 16)
                    .ok()
                    .filter(|n| at.checked_add(*n).is_some_and(|end| end <= body.len()))
                    .ok_or_else(|| EventsError::BadLength(len.clone()))?;
                let content = body.slice(at..at + n);
                at += n;
                if body.get(at..at + 2) != Some(b"\r\n".as_slice()) {
                    return Err(EventsError::MissingCrlf(at));
                }
                at += 2;
                content
            }
        };
        events.push(match name.as_str() {
            "OPEN" => Event::Open,
            "TEXT" => Event::Text(content),
            "BINARY" => Event::Binary(content),
            "PING" => Event::Ping(content),
            "PONG" => Event::Pong(content),
            "DISCONNECT" => Event::Disconnect,
            "CLOSE" => match content.len() {
                0 => Event::Close(None, Bytes::new()),
                1 => return Err(EventsError::BadClose),
                _ => Event::Close(
                    Some(u16::from_be_bytes([content[0], content[1]])),
                    content.slice(2..),
                ),
            },
            other => return Err(EventsError::UnknownType(other.chars().take(32).collect())),
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_a_round_trip() {
        let events = vec![
            Event::Open,
            Event::Text(Bytes::from_static(b"hello\r\nworld")),
            Event::Binary(Bytes::from_static(&[0, 1, 2, 255])),
            Event::Ping(Bytes::new()),
            Event::Pong(Bytes::from_static(b"p")),
            Event::Close(Some(1000), Bytes::from_static(b"bye")),
            Event::Close(None, Bytes::new()),
            Event::Disconnect,
        ];
        let wire = encode(&events);
        assert_eq!(decode(&wire).unwrap(), events);
        assert!(wire.starts_with(b"OPEN\r\nTEXT c\r\nhello\r\nworld\r\n"));
    }

    #[test]
    fn broken_bodies_are_refused_with_where() {
        let bad = |s: &'static [u8]| decode(&Bytes::from_static(s)).unwrap_err();
        assert_eq!(bad(b"OPEN"), EventsError::Unterminated(0));
        assert_eq!(
            bad(b"TEXT 10\r\nshort\r\n"),
            EventsError::BadLength("10".into())
        );
        assert_eq!(bad(b"TEXT zz\r\n"), EventsError::BadLength("zz".into()));
        assert_eq!(bad(b"TEXT 2\r\nabc\r\n"), EventsError::MissingCrlf(10));
        assert_eq!(bad(b"SHOUT\r\n"), EventsError::UnknownType("SHOUT".into()));
        assert_eq!(bad(b"CLOSE 1\r\nx\r\n"), EventsError::BadClose);
        // A length near usize::MAX must not overflow.
        assert!(matches!(
            bad(b"TEXT ffffffffffffffff\r\n"),
            EventsError::BadLength(_)
        ));
    }
}
