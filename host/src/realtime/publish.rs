//! What is published to a channel, and the GRIP publish format other
//! services send it in (`{"items": [{"channel": …, "formats": {…}}]}`, as
//! Pushpin's publish endpoint takes it).
//!
//! An item carries one form per kind of subscriber: a WebSocket message,
//! and a piece of a held HTTP stream (server-sent events). Parsing only;
//! delivery is the hub's.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

/// A message for WebSocket subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// What a held HTTP stream does with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPart {
    /// Bytes appended to the response body.
    Content(Bytes),
    /// The response ends.
    Close,
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The channel it goes to.
    pub channel: String,
    /// The publisher's id for it, if any.
    pub id: Option<String>,
    /// For WebSocket subscribers; `None`: they skip it.
    pub ws: Option<Message>,
    /// For held streams; `None`: they skip it.
    pub stream: Option<StreamPart>,
}

impl Item {
    /// An item whose WebSocket form is `message` and whose stream form is
    /// the same bytes (so one publish reaches both kinds of subscriber).
    pub fn message(channel: &str, message: Message) -> Self {
        let bytes = match &message {
            Message::Text(t) => Bytes::from(t.clone()),
            Message::Binary(b) => b.clone(),
        };
        Self {
            channel: channel.to_string(),
            id: None,
            ws: Some(message),
            stream: Some(StreamPart::Content(bytes)),
        }
    }
}

/// Why a publish body was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not JSON of the expected shape.
    #[error(
        "the publish body is not GRIP JSON ({0}); expected {{\"items\": [{{\"channel\": \"…\", \"formats\": {{\"ws-message\": {{\"content\": \"…\"}}}}}}]}}"
    )]
    Json(#[from] serde_json::Error),
    /// An item with no channel name.
    #[error("item {0} has an empty channel name")]
    NoChannel(usize),
    /// An item with no format this host delivers.
    #[error("item {0} has neither a ws-message nor an http-stream format")]
    NoFormat(usize),
    /// A format with neither `content` nor `content-bin` (nor a close).
    #[error("item {0}: the {1} format has no content or content-bin")]
    NoContent(usize, &'static str),
    /// `content-bin` that is not base64.
    #[error("item {0}: content-bin of {1} is not base64")]
    Base64(usize, &'static str),
}

#[derive(Deserialize)]
struct Body {
    items: Vec<RawItem>,
}

#[derive(Deserialize)]
struct RawItem {
    channel: String,
    id: Option<String>,
    #[serde(default)]
    formats: Formats,
}

#[derive(Deserialize, Default)]
struct Formats {
    #[serde(rename = "ws-message")]
    ws_message: Option<RawContent>,
    #[serde(rename = "http-stream")]
    http_stream: Option<RawContent>,
}

#[derive(Deserialize)]
struct RawContent {
    content: Option<String>,
    #[serde(rename = "content-bin")]
    content_bin: Option<String>,
    action: Option<String>,
}

impl RawContent {
    fn bytes(&self, item: usize, format: &'static str) -> Result<Option<Bytes>, PublishError> {
        if let Some(text) = &self.content {
            return Ok(Some(Bytes::from(text.clone())));
        }
        match &self.content_bin {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|b| Some(Bytes::from(b)))
                .map_err(|_| PublishError::Base64(item, format)),
            None => Ok(None),
        }
    }
}

/// `items` in the GRIP publish format, which [`parse`] reads back.
pub fn to_json(items: &[Item]) -> String {
    let b64 = |b: &Bytes| base64::engine::general_purpose::STANDARD.encode(b);
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|item| {
            let mut formats = serde_json::Map::new();
            match &item.ws {
                Some(Message::Text(t)) => {
                    formats.insert("ws-message".into(), serde_json::json!({ "content": t }));
                }
                Some(Message::Binary(b)) => {
                    formats.insert(
                        "ws-message".into(),
                        serde_json::json!({ "content-bin": b64(b) }),
                    );
                }
                None => {}
            }
            match &item.stream {
                Some(StreamPart::Content(b)) => {
                    formats.insert(
                        "http-stream".into(),
                        serde_json::json!({ "content-bin": b64(b) }),
                    );
                }
                Some(StreamPart::Close) => {
                    formats.insert(
                        "http-stream".into(),
                        serde_json::json!({ "action": "close" }),
                    );
                }
                None => {}
            }
            let mut value = serde_json::json!({ "channel": item.channel, "formats": formats });
            if let Some(id) = &item.id {
                value["id"] = serde_json::Value::String(id.clone());
            }
            value
        })
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

/// Reads a GRIP publish body into items, all or none.
pub fn parse(body: &[u8]) -> Result<Vec<Item>, PublishError> {
    let body: Body = serde_json::from_slice(body)?;
    body.items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            if raw.channel.is_empty() {
                return Err(PublishError::NoChannel(i));
            }
            let ws = match &raw.formats.ws_message {
                None => None,
                Some(f) => Some(match (&f.content, f.bytes(i, "ws-message")?) {
                    (Some(text), _) => Message::Text(text.clone()),
                    (None, Some(bin)) => Message::Binary(bin),
                    (None, None) => return Err(PublishError::NoContent(i, "ws-message")),
                }),
            };
            let stream = match &raw.formats.http_stream {
                None => None,
                Some(f) if f.action.as_deref() == Some("close") => Some(StreamPart::Close),
                Some(f) => Some(StreamPart::Content(
                    f.bytes(i, "http-stream")?
                        .ok_or(PublishError::NoContent(i, "http-stream"))?,
                )),
            };
            if ws.is_none() && stream.is_none() {
                return Err(PublishError::NoFormat(i));
            }
            Ok(Item {
                channel: raw.channel,
                id: raw.id,
                ws,
                stream,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grip_items_are_read_with_each_format() {
        let items = parse(
            br#"{"items": [
                {"channel": "a", "id": "1", "formats": {"ws-message": {"content": "hi"}, "http-stream": {"content": "data: hi\n\n"}}},
                {"channel": "b", "formats": {"ws-message": {"content-bin": "AAEC"}}},
                {"channel": "c", "formats": {"http-stream": {"action": "close"}}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(items[0].ws, Some(Message::Text("hi".into())));
        assert_eq!(items[0].id.as_deref(), Some("1"));
        assert_eq!(
            items[0].stream,
            Some(StreamPart::Content(Bytes::from_static(b"data: hi\n\n")))
        );
        assert_eq!(
            items[1].ws,
            Some(Message::Binary(Bytes::from_static(&[0, 1, 2])))
        );
        assert_eq!(items[1].stream, None);
        assert_eq!(items[2].stream, Some(StreamPart::Close));
    }

    #[test]
    fn items_survive_the_json_round_trip() {
        let items = vec![
            Item {
                id: Some("7".into()),
                ..Item::message("a", Message::Text("hi".into()))
            },
            Item {
                channel: "b".into(),
                id: None,
                ws: Some(Message::Binary(Bytes::from_static(&[0, 255]))),
                stream: Some(StreamPart::Close),
            },
        ];
        assert_eq!(parse(to_json(&items).as_bytes()).unwrap(), items);
    }

    #[test]
    fn bad_publishes_say_what_is_wrong() {
        let err = |s: &str| parse(s.as_bytes()).unwrap_err().to_string();
        assert!(err("nope").contains("not GRIP JSON"));
        assert!(
            err(r#"{"items":[{"channel":"","formats":{"ws-message":{"content":"x"}}}]}"#)
                .contains("empty channel")
        );
        assert!(err(r#"{"items":[{"channel":"a","formats":{}}]}"#).contains("neither"));
        assert!(
            err(r#"{"items":[{"channel":"a","formats":{"ws-message":{}}}]}"#)
                .contains("no content")
        );
        assert!(
            err(r#"{"items":[{"channel":"a","formats":{"ws-message":{"content-bin":"!!"}}}]}"#)
                .contains("not base64")
        );
    }
}
