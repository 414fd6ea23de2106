//! wasm-host: serve HTTP apps compiled to WebAssembly components, and swap
//! their versions with zero downtime.
//!
//! The binary is a thin shell over this library. Each folder is a layer and
//! uses only the layers listed before it:
//!
//! - [`runtime`]: one version on wasmtime;
//! - [`app`]: one app's versions over time (reloads, canaries, limits);
//! - [`hosting`]: the apps one process runs and the listeners that reach
//!   them;
//! - [`control`]: triggers (file watch, crate rebuilds, tag watch, signals,
//!   config watch) and the control socket and admin listener;
//! - [`config`]: settings from flags and the config file;
//! - [`supervisor`]: applies a config, starting and stopping apps,
//!   listeners and their triggers;
//! - [`cli`]: the command line and `serve`, which puts it all together.
//!
//! Beside them, used from above and never reaching up: [`build`] (building
//! a component from Rust or JavaScript source), [`kv`] (state),
//! [`realtime`] (channels and the protocol of held connections), [`oci`]
//! (the registry client) and [`ops`] (metrics and logs).
//!
//! A request flows `listener → app → version → engine`; a change flows
//! `trigger → app → version → engine`.

pub mod app;
pub mod build;
pub mod cli;
pub mod config;
pub mod control;
pub mod hosting;
pub mod kv;
pub mod oci;
pub mod ops;
pub mod realtime;
pub mod runtime;
pub mod supervisor;
