//! Long-lived connections the host holds for its apps: the events of
//! WebSocket-over-HTTP, the GRIP messages that steer a connection, the
//! channels that connections subscribe to, and what gets published to them.
//!
//! Sits beside the layers and reaches none of them: sockets are the
//! hosting layer's, versions the app's. What lives here outlives every
//! version, which is what lets a connection stay open across reloads.

pub mod events;
pub mod fanout;
pub mod forward;
pub mod grip;
pub mod hub;
pub mod publish;

use std::time::Duration;

/// Bounds on an app's WebSocket connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// WebSocket connections open at once; more are answered `503`.
    pub max_connections: usize,
    /// Largest message a client may send; a larger one closes its
    /// connection with 1009 (message too big).
    pub max_message: usize,
    /// How often a quiet client is pinged.
    pub ping_interval: Duration,
    /// How long a client may send nothing (not even a pong) before its
    /// connection is closed with 1001.
    pub idle_timeout: Duration,
    /// Messages waiting to be written to one client; a client that reads
    /// slower than that is closed with 1008 rather than buffered for.
    pub send_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_message: 1 << 20,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            send_queue: 256,
        }
    }
}
