//! The guest SDK for wasm-host apps.
//!
//! Not written yet: today an app is any component exporting
//! `wasi:http/incoming-handler` (see `examples/`, built on `wstd` and on the
//! plain `wasip2` bindings). This crate will grow the handler entry point,
//! router, background work and lifecycle hooks described in the project's
//! guest SDK issue.
