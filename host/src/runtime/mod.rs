//! Runtime: one version of an app on wasmtime. The engine and its linker,
//! a version's compiled component and checks, one request run on it, the
//! work a version still owes, and the on-disk code cache.
//!
//! Where serving differs by WASI world it is cut in two: [`p2`] (0.2, one
//! request per instance) and [`p3`] (0.3, many requests per instance);
//! [`world`] tells them apart and the rest is shared.
//!
//! The lowest layer: it knows nothing of apps, reloads, listeners or
//! configuration. Callers above decide which version runs what.

pub mod channels;
pub mod code_cache;
pub mod component_file;
pub mod cpu;
pub mod digest;
pub mod engine;
pub mod guest_log;
pub mod http;
pub mod image;
pub mod incremental;
pub mod lifecycle;
pub mod limits;
pub mod outgoing;
pub mod p2;
pub mod p3;
pub mod pool;
pub mod precompile;
pub mod request;
pub mod state;
pub mod store;
pub mod trace;
pub mod version;
pub mod work;
pub mod world;
