//! What a component's bytes say about how its instances run, read without
//! compiling: how far its initial linear memory reaches (the end of the
//! furthest data segment of any core module), and whether its builder
//! marked it as able to serve many requests per instance.
//!
//! A snapshotted runtime (componentize-js's StarlingMonkey, a Wizer
//! snapshot of ~9 MiB) starts every instance from megabytes of heap and
//! writes scattered pages all over it, which the engine picks a different
//! memory pool for (see [`crate::runtime::engine::Memory`]). This module
//! only reads; it decides nothing.

use wasmparser::{DataKind, Operator, Parser, Payload};

/// The custom section wasm-host's JavaScript builder (`build.mjs --reuse`)
/// adds to a component whose bundle answers `wasi:http/incoming-handler`
/// itself, so that one instance can serve request after request.
pub const REUSE_SECTION: &str = "wasm-host:reuse";

/// What one pass over a component's bytes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Image {
    /// The byte just past the furthest active data segment of any core
    /// module (0 when there is none). A segment placed by anything but a
    /// constant (an imported global) is skipped: its place is known only
    /// at instantiation.
    pub memory_end: u64,
    /// The component carries [`REUSE_SECTION`].
    pub built_for_reuse: bool,
}

/// Reads `bytes` once; `None` if they cannot be parsed.
pub fn read(bytes: &[u8]) -> Option<Image> {
    let mut image = Image::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.ok()?;
                    let DataKind::Active { offset_expr, .. } = data.kind else {
                        continue;
                    };
                    let offset = match offset_expr.get_operators_reader().read().ok()? {
                        // Offsets are unsigned; wasm stores them as signed
                        // immediates.
                        Operator::I32Const { value } => u64::from(value as u32),
                        Operator::I64Const { value } => value as u64,
                        _ => continue,
                    };
                    image.memory_end = image
                        .memory_end
                        .max(offset.saturating_add(data.data.len() as u64));
                }
            }
            Payload::CustomSection(section) if section.name() == REUSE_SECTION => {
                image.built_for_reuse = true;
            }
            _ => {}
        }
    }
    Some(image)
}

/// The byte just past the furthest active data segment, as [`read`] finds.
#[cfg(test)]
fn initial_memory_end(bytes: &[u8]) -> Option<u64> {
    read(bytes).map(|image| image.memory_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{ConstExpr, DataSection, MemorySection, MemoryType, Module};

    /// A module with one memory and `segments` (offset, bytes) placed in
    /// it, plus one passive segment, which is placed by `memory.init` and
    /// so never counts.
    fn module(segments: &[(u32, &[u8])]) -> Vec<u8> {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 40_000,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut data = DataSection::new();
        for (offset, bytes) in segments {
            data.active(
                0,
                &ConstExpr::i32_const(*offset as i32),
                bytes.iter().copied(),
            );
        }
        data.passive(b"passive".iter().copied());
        let mut module = Module::new();
        module.section(&memories).section(&data);
        module.finish()
    }

    #[test]
    fn the_furthest_segment_counts() {
        let bytes = module(&[(8, b"abcd"), (100, b"xy")]);
        assert_eq!(initial_memory_end(&bytes), Some(102));
    }

    #[test]
    fn a_module_without_active_data_reaches_nothing() {
        assert_eq!(initial_memory_end(&module(&[])), Some(0));
    }

    #[test]
    fn offsets_above_two_gib_are_unsigned() {
        let bytes = module(&[(0x8000_0000, b"z")]);
        assert_eq!(initial_memory_end(&bytes), Some(0x8000_0001));
    }

    #[test]
    fn the_reuse_marker_is_found_in_a_component() {
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::CustomSection {
            name: REUSE_SECTION.into(),
            data: b"1".as_slice().into(),
        });
        let marked = read(&component.finish()).map(|image| image.built_for_reuse);
        assert_eq!(marked, Some(true));
        let plain = read(&wasm_encoder::Component::new().finish());
        assert_eq!(plain.map(|image| image.built_for_reuse), Some(false));
        // Another custom section is not the marker.
        let mut other = wasm_encoder::Component::new();
        other.section(&wasm_encoder::CustomSection {
            name: "producers".into(),
            data: b"".as_slice().into(),
        });
        assert_eq!(
            read(&other.finish()).map(|i| i.built_for_reuse),
            Some(false)
        );
    }

    #[test]
    fn garbage_is_not_measured() {
        assert_eq!(initial_memory_end(b"\0asm\x01\0\0\0\x0b\xff"), None);
    }
}
