//! The host's apps and sockets: the table of apps one process runs, the
//! listeners that accept connections and route each request to an app
//! (with the client's address and trace context, and the access log),
//! the bounds on every connection, TLS and its swappable certificates, and
//! sockets handed over by systemd.
//!
//! Uses apps and the runtime below it; never reaches triggers, control or
//! configuration: what to serve is handed down as values.

pub mod access;
pub mod activation;
pub mod apps;
pub mod connection;
pub mod hold;
pub mod listener;
pub mod routes;
pub mod tls;
pub mod websocket;
