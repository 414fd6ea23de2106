//! The version an example app answers with.
//!
//! The compiled component carries the text `wasm-host-version=` followed by a
//! 14-byte field. A deploy script or a test can stamp a new version into a
//! built `.wasm` by rewriting that field in place (same length, so the
//! component stays valid), which gives as many distinct versions of one app as
//! a reload test needs without rebuilding it.

/// The stamp: prefix plus a space-padded 14-byte version field.
static STAMP: &[u8; 32] = b"wasm-host-version=v1            ";

/// Length of the marker that precedes the version field.
const PREFIX_LEN: usize = "wasm-host-version=".len();

/// The version stamped into this build, e.g. `v1`.
pub fn version() -> &'static str {
    // black_box keeps the optimizer from folding the text into code, so the
    // bytes a stamp rewrites are the bytes read here.
    let stamp: &'static [u8; 32] = std::hint::black_box(STAMP);
    std::str::from_utf8(&stamp[PREFIX_LEN..])
        .unwrap_or("unknown")
        .trim_end()
}
