//! The version an example app answers with.
//!
//! The compiled component carries the text `wasm-host-version=` followed by a
//! 14-byte field. A deploy script, a test or the benchmark stamps a new
//! version into a built `.wasm` with [`restamp`], rewriting that field in
//! place (same length, so the component stays valid). That gives as many
//! distinct versions of one app as a reload test needs without rebuilding.

/// The marker that precedes the version field.
const PREFIX: &[u8] = b"wasm-host-version=";

/// Length of the space-padded version field.
const FIELD: usize = 14;

/// The stamp: marker plus the version field.
static STAMP: &[u8; 32] = b"wasm-host-version=v1            ";

/// The version stamped into this build, e.g. `v1`.
pub fn version() -> &'static str {
    // black_box keeps the optimizer from folding the text into code, so the
    // bytes a stamp rewrites are the bytes read here.
    let stamp: &'static [u8; 32] = std::hint::black_box(STAMP);
    std::str::from_utf8(&stamp[PREFIX.len()..])
        .unwrap_or("unknown")
        .trim_end()
}

/// A copy of `component` answering with `version` (at most 14 bytes), or
/// `None` if the component carries no stamp or the version is too long.
pub fn restamp(component: &[u8], version: &str) -> Option<Vec<u8>> {
    if version.len() > FIELD {
        return None;
    }
    let at = component.windows(PREFIX.len()).position(|w| w == PREFIX)? + PREFIX.len();
    let mut out = component.to_vec();
    let field = out.get_mut(at..at + FIELD)?;
    field.fill(b' ');
    field[..version.len()].copy_from_slice(version.as_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restamp_rewrites_the_field_in_place() {
        let original = [b"xx".as_slice(), STAMP, b"yy"].concat();
        let stamped = restamp(&original, "v42").unwrap();
        assert_eq!(stamped.len(), original.len());
        assert_eq!(&stamped[2..34], b"wasm-host-version=v42           ");
        assert!(restamp(b"no stamp here", "v1").is_none());
        assert!(restamp(&original, "far-too-long-version").is_none());
    }
}
