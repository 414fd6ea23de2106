//! What an app keeps for the connections the host holds open for it
//! (WebSockets, held streams): its channels, the bounds on those
//! connections, and their counts.
//!
//! Belongs to the app, not to a version: connections and subscriptions
//! outlive every version. Holds no sockets; the hosting layer does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::realtime::Limits;
use crate::realtime::hub::Hub;

/// One app's held connections.
pub struct Held {
    hub: Arc<Hub>,
    limits: Limits,
    open: AtomicUsize,
    opened: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    closed_slow: AtomicU64,
    closed_too_big: AtomicU64,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldCounts {
    /// WebSocket connections open now.
    pub open: usize,
    /// WebSocket connections accepted since the app started.
    pub opened: u64,
    /// Messages from clients handed to the app.
    pub messages_in: u64,
    /// Messages written to clients (answers and published items).
    pub messages_out: u64,
    /// Connections closed because the client read too slowly.
    pub closed_slow: u64,
    /// Connections closed because the client sent a message too large.
    pub closed_too_big: u64,
}

/// Why a connection was closed by the host, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostClose {
    /// Its send queue overflowed.
    Slow,
    /// It sent a message over the limit.
    TooBig,
}

/// A place among the app's open connections, given back on drop.
pub struct OpenSlot {
    held: Arc<Held>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.held.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Held {
    /// Nothing open yet, within `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            hub: Hub::new(),
            limits,
            open: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            closed_slow: AtomicU64::new(0),
            closed_too_big: AtomicU64::new(0),
        })
    }

    /// The app's channels.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The bounds on its connections.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place for one more connection, or `None` at the limit.
    pub fn try_open(self: &Arc<Self>) -> Option<OpenSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limits.max_connections).then_some(n + 1)
            });
        taken.ok().map(|_| {
            self.opened.fetch_add(1, Ordering::Relaxed);
            OpenSlot { held: self.clone() }
        })
    }

    /// `n` client messages went to the app.
    pub fn received(&self, n: usize) {
        self.messages_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` messages went to a client.
    pub fn sent(&self, n: usize) {
        self.messages_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The host closed a connection for `why`.
    pub fn closed(&self, why: HostClose) {
        let counter = match why {
            HostClose::Slow => &self.closed_slow,
            HostClose::TooBig => &self.closed_too_big,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts so far.
    pub fn counts(&self) -> HeldCounts {
        HeldCounts {
            open: self.open.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            closed_slow: self.closed_slow.load(Ordering::Relaxed),
            closed_too_big: self.closed_too_big.load(Ordering::Relaxed),
        }
    }
}
