//! Triggers and control: what asks an app to change (its file changing, a
//! crate rebuilt on save, a registry tag moving, a signal, the config file
//! changing, a TLS certificate changing on disk) and how an operator talks
//! to a running host (the control socket and the admin listener).
//!
//! Triggers call into apps and the host's table of apps; they never start
//! or stop apps or listeners themselves (the supervisor does), and never
//! read configuration.

pub mod admin;
pub mod config_watch;
pub mod content_watch;
pub mod handoff;
pub mod pull;
pub mod signals;
pub mod socket;
pub mod source;
pub mod tls_watch;
pub mod upgrade;
pub mod watch;
