//! GRIP as it steers a held connection: the control messages an app sends
//! inside a WebSocket-over-HTTP answer (`c:` + JSON, once the app has
//! accepted the `grip` extension), and the `Grip-*` headers that turn an
//! ordinary response into a held stream.
//!
//! Parsing only, of untrusted app output; what a message does is up to
//! the connection that reads it.

use std::time::Duration;

use serde::Deserialize;

/// Prefix of a control message on a GRIP connection.
pub const CONTROL_PREFIX: &str = "c:";
/// Prefix of an ordinary message on a GRIP connection.
pub const MESSAGE_PREFIX: &str = "m:";

/// A control message from the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Start receiving what is published to the channel.
    Subscribe(String),
    /// Stop receiving it.
    Unsubscribe(String),
    /// Stop sending client messages to the app (the connection stays).
    Detach,
    /// A type this host does not act on; ignored, named for the log.
    Other(String),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    channel: Option<String>,
}

/// Reads the JSON of a control message (without its `c:`).
pub fn control(json: &str) -> Result<Control, String> {
    let raw: Raw = serde_json::from_str(json)
        .map_err(|e| format!("a c: control message is not JSON with a type ({e})"))?;
    let channel = || {
        raw.channel
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("a c: {} message has no channel", raw.kind))
    };
    Ok(match raw.kind.as_str() {
        "subscribe" => Control::Subscribe(channel()?),
        "unsubscribe" => Control::Unsubscribe(channel()?),
        "detach" => Control::Detach,
        other => Control::Other(other.chars().take(32).collect()),
    })
}

/// A response that asks to be held open as a stream on channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The channels whose `http-stream` items are appended to the body.
    pub channels: Vec<String>,
    /// Sent when nothing else was for this long, so proxies keep the
    /// stream open: the bytes, and the interval.
    pub keep_alive: Option<(Vec<u8>, Duration)>,
}

/// The hold a response's headers ask for: `Grip-Hold: stream` and
/// `Grip-Channel`. `Ok(None)` for an ordinary response; `Err` for a hold
/// this host does not do (`response`, long-polling) or one without
/// channels.
pub fn hold(headers: &http::HeaderMap) -> Result<Option<Hold>, String> {
    let Some(mode) = headers.get("grip-hold") else {
        return Ok(None);
    };
    if mode.as_bytes() != b"stream" {
        return Err(format!(
            "Grip-Hold: {} is not supported; this host holds streams only (Grip-Hold: stream)",
            String::from_utf8_lossy(mode.as_bytes())
        ));
    }
    let channels: Vec<String> = headers
        .get_all("grip-channel")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        // Parameters such as `; prev-id=…` follow the name.
        .filter_map(|c| c.split(';').next())
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        return Err("Grip-Hold: stream without a Grip-Channel header".into());
    }
    let keep_alive = headers
        .get("grip-keep-alive")
        .and_then(|v| v.to_str().ok())
        .map(keep_alive);
    Ok(Some(Hold {
        channels,
        keep_alive,
    }))
}

/// Checks a `Grip-Sig` token: a JWT signed with HMAC-SHA256 under `key`
/// (what Pushpin sends, signed with its `sig_key`), not expired at `now`
/// (seconds since the Unix epoch). The signature is compared in constant
/// time.
pub fn verify_sig(token: &str, key: &[u8], now: u64) -> Result<(), String> {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.trim().split('.');
    let (Some(head), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Grip-Sig is not a JWT (three dot-separated parts)".into());
    };
    let decode = |part: &str, what: &str| {
        b64.decode(part.trim_end_matches('='))
            .map_err(|_| format!("Grip-Sig: the {what} is not base64url"))
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(head, "header")?)
        .map_err(|_| "Grip-Sig: the header is not JSON".to_string())?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err("Grip-Sig: only HS256 tokens are accepted".into());
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key)
        .map_err(|_| "Grip-Sig: unusable key".to_string())?;
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    mac.verify_slice(&decode(sig, "signature")?)
        .map_err(|_| "Grip-Sig: the signature does not match --grip-key".to_string())?;
    let claims: serde_json::Value = serde_json::from_slice(&decode(claims, "claims")?)
        .map_err(|_| "Grip-Sig: the claims are not JSON".to_string())?;
    match claims.get("exp").and_then(|e| e.as_u64()) {
        Some(exp) if exp <= now => Err("Grip-Sig: the token has expired".into()),
        _ => Ok(()),
    }
}

/// `Grip-Keep-Alive: DATA; format=raw|cstring; timeout=SECONDS`.
fn keep_alive(value: &str) -> (Vec<u8>, Duration) {
    let mut parts = value.split(';');
    let data = parts.next().unwrap_or("").trim();
    let (mut cstring, mut timeout) = (false, 55u64);
    for param in parts {
        match param.trim().split_once('=') {
            Some(("format", "cstring")) => cstring = true,
            Some(("timeout", t)) => timeout = t.trim().parse().unwrap_or(timeout),
            _ => {}
        }
    }
    let data = if cstring {
        data.replace("\\n", "\n")
            .replace("\\r", "\r")
            .replace("\\\\", "\\")
    } else {
        data.to_string()
    };
    (
        data.into_bytes(),
        Duration::from_secs(timeout.clamp(1, 3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_read() {
        assert_eq!(
            control(r#"{"type":"subscribe","channel":"room"}"#),
            Ok(Control::Subscribe("room".into()))
        );
        assert_eq!(
            control(r#"{"type":"unsubscribe","channel":"room"}"#),
            Ok(Control::Unsubscribe("room".into()))
        );
        assert_eq!(control(r#"{"type":"detach"}"#), Ok(Control::Detach));
        assert_eq!(control(r#"{"type":"x"}"#), Ok(Control::Other("x".into())));
        assert!(
            control(r#"{"type":"subscribe"}"#)
                .unwrap_err()
                .contains("no channel")
        );
        assert!(control("nope").unwrap_err().contains("not JSON"));
    }

    /// A token as Pushpin makes one: HS256 over `{"iss":"pushpin","exp":…}`.
    fn token(key: &[u8], exp: u64) -> String {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let head = b64.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let claims = b64.encode(format!(r#"{{"iss":"pushpin","exp":{exp}}}"#));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{head}.{claims}").as_bytes());
        let sig = b64.encode(mac.finalize().into_bytes());
        format!("{head}.{claims}.{sig}")
    }

    #[test]
    fn grip_signatures_are_checked() {
        let good = token(b"changeme", 2_000);
        assert_eq!(verify_sig(&good, b"changeme", 1_000), Ok(()));
        assert!(
            verify_sig(&good, b"other", 1_000)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(
            verify_sig(&good, b"changeme", 3_000)
                .unwrap_err()
                .contains("expired")
        );
        assert!(
            verify_sig("a.b", b"changeme", 0)
                .unwrap_err()
                .contains("not a JWT")
        );
        let forged = format!("{}x", &good[..good.len() - 1]);
        assert!(verify_sig(&forged, b"changeme", 1_000).is_err());
    }

    #[test]
    fn holds_are_read_from_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(hold(&h), Ok(None));
        h.insert("grip-hold", "stream".parse().unwrap());
        assert!(hold(&h).unwrap_err().contains("without a Grip-Channel"));
        h.insert("grip-channel", "a, b; prev-id=3".parse().unwrap());
        h.insert(
            "grip-keep-alive",
            ":\\n\\n; format=cstring; timeout=20".parse().unwrap(),
        );
        let held = hold(&h).unwrap().unwrap();
        assert_eq!(held.channels, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            held.keep_alive,
            Some((b":\n\n".to_vec(), Duration::from_secs(20)))
        );
        h.insert("grip-hold", "response".parse().unwrap());
        assert!(hold(&h).unwrap_err().contains("streams only"));
    }
}
