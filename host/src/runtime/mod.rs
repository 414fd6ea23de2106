//! Runtime: one version of an app on wasmtime. The engine and its linker,
//! a version's compiled component and checks, one request run on it, the
//! work a version still owes, and the on-disk code cache.
//!
//! The lowest layer: it knows nothing of apps, reloads, listeners or
//! configuration. Callers above decide which version runs what.

pub mod code_cache;
pub mod component_file;
pub mod cpu;
pub mod digest;
pub mod engine;
pub mod guest_log;
pub mod lifecycle;
pub mod outgoing;
pub mod request;
pub mod state;
pub mod trace;
pub mod version;
pub mod work;
