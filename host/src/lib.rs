//! wasm-host: serve HTTP apps compiled to WebAssembly components, and swap
//! their versions with zero downtime.
//!
//! The binary is a thin shell over this library. Data flows one way:
//! triggers ([`watch`], [`source`], [`control`], [`signals`]) call into an
//! [`app::App`],
//! the [`server`] dispatches requests to the app's live [`version::Version`],
//! and versions run on the process-wide [`engine::Runtime`].

pub mod activation;
pub mod admin;
pub mod app;
pub mod apps;
pub mod cli;
pub mod code_cache;
pub mod component_file;
pub mod config;
pub mod config_file;
pub mod config_watch;
pub mod connection;
pub mod control;
pub mod cpu;
pub mod digest;
pub mod engine;
pub mod fleet;
pub mod guest_log;
pub mod kv;
pub mod lifecycle;
pub mod limits;
pub mod log_format;
pub mod logfile;
pub mod metrics;
pub mod oci;
pub mod outgoing;
pub mod pull;
pub mod request;
pub mod rollout;
pub mod routes;
pub mod serve;
pub mod server;
pub mod signals;
pub mod source;
pub mod state;
pub mod tail;
pub mod version;
pub mod watch;
pub mod work;
