//! W3C Trace Context's `traceparent` header: which incoming values are
//! well formed, so the host can log them and pass them on to the guest's
//! outgoing requests (see `outgoing`). Malformed values are ignored, as
//! the specification asks, rather than passed on.
//!
//! The host does not trace itself: it starts no spans and makes up no ids,
//! it only keeps a caller's trace joined across the guest.

use http::{HeaderMap, HeaderValue};

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// A well-formed `traceparent` value from an incoming request. The
/// listener puts it on the request as an extension; the guest's outgoing
/// requests carry it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent(HeaderValue);

impl TraceParent {
    /// The request's `traceparent`, if it has exactly one and it is well
    /// formed. Two or more are ambiguous and count as none.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        well_formed(value.as_bytes()).then(|| Self(value.clone()))
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // Checked to be ASCII when it was made.
        self.0.to_str().unwrap_or_default()
    }

    /// The value as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

/// `VERSION-TRACEID-PARENTID-FLAGS` in lowercase hex (2, 32, 16 and 2
/// digits), with version `ff` and all-zero ids invalid. Version `00` is
/// exactly that long; a later version may add fields after another `-`,
/// which the specification says to accept.
fn well_formed(b: &[u8]) -> bool {
    const LEN: usize = 55;
    let hex = |part: &[u8]| part.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |part: &[u8]| part.iter().any(|&c| c != b'0');
    if b.len() < LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let parts_ok = hex(version)
        && version != b"ff"
        && hex(trace)
        && nonzero(trace)
        && hex(parent)
        && nonzero(parent)
        && hex(flags);
    let end_ok = match version {
        b"00" => b.len() == LEN,
        _ => b.len() == LEN || b[LEN] == b'-',
    };
    parts_ok && end_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        TraceParent::from_headers(&headers).map(|t| t.as_str().to_string())
    }

    #[test]
    fn only_well_formed_values_are_taken() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parsed(&[good]).as_deref(), Some(good));
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert_eq!(parsed(&[later]).as_deref(), Some(later));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parsed(&[bad]), None, "{bad:?}");
        }
        assert_eq!(parsed(&[good, good]), None, "two values are ambiguous");
        assert_eq!(parsed(&[]), None);
    }
}
