//! One app's channels: who is subscribed to what, and delivery of each
//! published item to every subscriber's mailbox.
//!
//! A mailbox belongs to one held connection (a WebSocket or a held
//! stream). Its queue is bounded: a subscriber that falls that far behind
//! is marked overflowed and its connection closes it, so one slow reader
//! never makes the host buffer without limit or slows the others. The hub
//! knows nothing of sockets or versions; it outlives every version of its
//! app, which is why a connection's subscriptions survive reloads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, mpsc};

use crate::realtime::publish::Item;

/// Channels of one app.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, HashMap<u64, Subscriber>>>,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    overflowed: AtomicU64,
    /// Where publishes go first when they fan out to other hosts (see
    /// [`crate::realtime::fanout`]); they come back through
    /// [`Hub::deliver`].
    fan_out: OnceLock<mpsc::UnboundedSender<Item>>,
    /// Where every publish also goes: a GRIP proxy in front of the app
    /// (see [`crate::realtime::forward`]).
    forward: OnceLock<mpsc::UnboundedSender<Item>>,
}

#[derive(Clone)]
struct Subscriber {
    queue: mpsc::Sender<Arc<Item>>,
    overflow: Arc<Overflow>,
}

#[derive(Default)]
struct Overflow {
    hit: AtomicBool,
    wake: Notify,
}

/// What the hub has done, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubCounts {
    /// Items published to any channel.
    pub published: u64,
    /// Copies handed to subscribers' mailboxes.
    pub delivered: u64,
    /// Mailboxes that overflowed (their connections were closed).
    pub overflowed: u64,
}

/// Why a mailbox has no next item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// More items came than the mailbox holds: the reader is too slow.
    Overflow,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A mailbox holding at most `capacity` undelivered items.
    pub fn mailbox(self: &Arc<Self>, capacity: usize) -> Mailbox {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Mailbox {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            hub: self.clone(),
            me: Subscriber {
                queue: tx,
                overflow: Arc::default(),
            },
            rx,
            channels: HashSet::new(),
        }
    }

    /// Sends every later publish through `tx` rather than delivering it
    /// here at once. Set once; a second call is ignored.
    pub fn fan_out(&self, tx: mpsc::UnboundedSender<Item>) {
        let _ = self.fan_out.set(tx);
    }

    /// Sends a copy of every later publish through `tx` as well. Set once.
    pub fn forward(&self, tx: mpsc::UnboundedSender<Item>) {
        let _ = self.forward.set(tx);
    }

    /// Publishes `item`: delivered here, or, when publishes fan out, sent
    /// to every host (this one included). Returns how many mailboxes of
    /// this host are subscribed to its channel.
    pub fn publish(&self, item: Item) -> usize {
        self.published.fetch_add(1, Ordering::Relaxed);
        if let Some(proxy) = self.forward.get() {
            let _ = proxy.send(item.clone());
        }
        match self.fan_out.get() {
            None => self.deliver(item),
            Some(tx) => {
                let local = self.subscribers(&item.channel);
                if let Err(mpsc::error::SendError(item)) = tx.send(item) {
                    return self.deliver(item);
                }
                local
            }
        }
    }

    /// Hands `item` to every mailbox of this host subscribed to its
    /// channel; returns how many took it.
    pub fn deliver(&self, item: Item) -> usize {
        let item = Arc::new(item);
        let subscribers: Vec<Subscriber> = match self.channels.lock() {
            Ok(channels) => channels
                .get(&item.channel)
                .map(|subs| subs.values().cloned().collect())
                .unwrap_or_default(),
            Err(_) => return 0,
        };
        let mut taken = 0;
        for sub in subscribers {
            match sub.queue.try_send(item.clone()) {
                Ok(()) => taken += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !sub.overflow.hit.swap(true, Ordering::Relaxed) {
                        self.overflowed.fetch_add(1, Ordering::Relaxed);
                    }
                    sub.overflow.wake.notify_one();
                }
                // The mailbox is being dropped; it unsubscribes itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.delivered.fetch_add(taken as u64, Ordering::Relaxed);
        taken
    }

    /// Mailboxes subscribed to `channel`.
    pub fn subscribers(&self, channel: &str) -> usize {
        self.channels
            .lock()
            .map(|c| c.get(channel).map_or(0, HashMap::len))
            .unwrap_or(0)
    }

    /// Counters since the hub was made.
    pub fn counts(&self) -> HubCounts {
        HubCounts {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
        }
    }
}

/// The queue of one held connection, and its subscriptions. Dropping it
/// unsubscribes it from everything.
pub struct Mailbox {
    id: u64,
    hub: Arc<Hub>,
    me: Subscriber,
    rx: mpsc::Receiver<Arc<Item>>,
    channels: HashSet<String>,
}

impl Mailbox {
    /// Subscribes to `channel` (again is a no-op).
    pub fn subscribe(&mut self, channel: &str) {
        if self.channels.insert(channel.to_string())
            && let Ok(mut channels) = self.hub.channels.lock()
        {
            channels
                .entry(channel.to_string())
                .or_default()
                .insert(self.id, self.me.clone());
        }
    }

    /// Stops taking items of `channel`.
    pub fn unsubscribe(&mut self, channel: &str) {
        if self.channels.remove(channel)
            && let Ok(mut channels) = self.hub.channels.lock()
        {
            remove(&mut channels, channel, self.id);
        }
    }

    /// The channels subscribed to.
    pub fn channels(&self) -> &HashSet<String> {
        &self.channels
    }

    /// The next item, in publish order; `Err` once the mailbox overflowed.
    /// Waits for ever while nothing is published.
    pub async fn next(&mut self) -> Result<Arc<Item>, Closed> {
        loop {
            if self.me.overflow.hit.load(Ordering::Relaxed) {
                return Err(Closed::Overflow);
            }
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => return Ok(item),
                    // Never: the mailbox holds a sender itself.
                    None => std::future::pending::<()>().await,
                },
                _ = self.me.overflow.wake.notified() => {}
            }
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if let Ok(mut channels) = self.hub.channels.lock() {
            for channel in &self.channels {
                remove(&mut channels, channel, self.id);
            }
        }
    }
}

fn remove(channels: &mut HashMap<String, HashMap<u64, Subscriber>>, channel: &str, id: u64) {
    if let Some(subs) = channels.get_mut(channel) {
        subs.remove(&id);
        if subs.is_empty() {
            channels.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::publish::Message;

    fn text(channel: &str, s: &str) -> Item {
        Item::message(channel, Message::Text(s.to_string()))
    }

    #[tokio::test]
    async fn items_reach_subscribers_in_order_and_only_theirs() {
        let hub = Hub::new();
        let mut a = hub.mailbox(8);
        let mut b = hub.mailbox(8);
        a.subscribe("room");
        b.subscribe("other");
        assert_eq!(hub.publish(text("room", "1")), 1);
        assert_eq!(hub.publish(text("room", "2")), 1);
        assert_eq!(hub.publish(text("nobody", "x")), 0);
        assert_eq!(a.next().await.unwrap().channel, "room");
        let second = a.next().await.unwrap();
        assert_eq!(second.ws, Some(Message::Text("2".into())));
        assert_eq!(hub.publish(text("other", "3")), 1);
        assert_eq!(b.next().await.unwrap().channel, "other");
        drop(a);
        assert_eq!(hub.subscribers("room"), 0);
        b.unsubscribe("other");
        assert_eq!(hub.publish(text("other", "4")), 0);
    }

    #[tokio::test]
    async fn a_full_mailbox_overflows_and_others_go_on() {
        let hub = Hub::new();
        let mut slow = hub.mailbox(2);
        let mut fast = hub.mailbox(16);
        slow.subscribe("c");
        fast.subscribe("c");
        for i in 0..3 {
            hub.publish(text("c", &i.to_string()));
        }
        assert_eq!(slow.next().await.unwrap_err(), Closed::Overflow);
        for _ in 0..3 {
            fast.next().await.unwrap();
        }
        assert_eq!(hub.counts().overflowed, 1);
        assert_eq!(hub.counts().delivered, 5);
    }
}
