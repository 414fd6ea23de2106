//! Operations output: counters and their Prometheus text, the host's and
//! the apps' log files (format, rotation) and reading them back for
//! `wasm-host logs`; notifications to systemd.
//!
//! Used from every layer; reaches none of them.

pub mod held_metrics;
pub mod log_format;
pub mod logfile;
pub mod metrics;
pub mod systemd;
pub mod tail;
