//! Publishes that reach every host serving an app: through Redis pub/sub,
//! when the app's buckets live in Redis. Each host sends what is published
//! on it to one Redis channel per app and delivers what comes back on that
//! channel to its own subscribers, so a fleet behind a load balancer
//! delivers every item to every subscriber exactly once (its own publishes
//! included, which come back like the others).
//!
//! If Redis cannot take an item, the item is delivered on this host only
//! and the failure logged: local subscribers never lose it. Items published
//! elsewhere while this host is reconnecting are not replayed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::realtime::hub::Hub;
use crate::realtime::publish::{self, Item};

/// Longest wait between two tries to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The Redis channel of `app`'s publishes.
pub fn channel_of(app: &str) -> String {
    format!("wasm-host:realtime:{app}")
}

/// Sends `hub`'s publishes through Redis at `url` (the app's key-value
/// store) for app `app`. Spawns the two tasks that do it on the current
/// runtime; they end when the hub is dropped.
pub fn start(hub: &Arc<Hub>, url: &str, app: &str) -> Result<(), String> {
    let client = crate::kv::redis_client(url).map_err(|e| e.to_string())?;
    let channel = channel_of(app);
    let (tx, rx) = mpsc::unbounded_channel();
    hub.fan_out(tx);
    tokio::spawn(send(
        client.clone(),
        channel.clone(),
        rx,
        Arc::downgrade(hub),
    ));
    tokio::spawn(receive(client, channel, Arc::downgrade(hub)));
    Ok(())
}

/// Publishes each item to Redis, in order.
async fn send(
    client: redis::Client,
    channel: String,
    mut items: mpsc::UnboundedReceiver<Item>,
    hub: std::sync::Weak<Hub>,
) {
    let mut conn = None;
    while let Some(item) = items.recv().await {
        let payload = publish::to_json(std::slice::from_ref(&item));
        if conn.is_none() {
            conn = client.get_connection_manager().await.ok();
        }
        let sent = match conn.as_mut() {
            Some(conn) => redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&payload)
                .query_async::<i64>(conn)
                .await
                .map_err(|e| e.to_string()),
            None => Err("not connected".to_string()),
        };
        if let Err(e) = sent {
            let Some(hub) = hub.upgrade() else { return };
            tracing::warn!(channel, error = %e, "could not publish through Redis; delivered on this host only");
            hub.deliver(item);
            conn = None;
        }
    }
}

/// Delivers what Redis relays to this host's subscribers; reconnects with
/// a growing pause when the subscription breaks.
async fn receive(client: redis::Client, channel: String, hub: std::sync::Weak<Hub>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if hub.strong_count() == 0 {
            return;
        }
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    tracing::debug!(channel, "subscribed to Redis for publishes");
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(hub) = hub.upgrade() else { return };
                        let payload: Vec<u8> = match message.get_payload() {
                            Ok(p) => p,
                            Err(_) => continue,
                        };
                        match publish::parse(&payload) {
                            Ok(items) => {
                                for item in items {
                                    hub.deliver(item);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(channel, error = %e, "a message on the Redis channel is not a publish; skipped")
                            }
                        }
                    }
                    tracing::warn!(
                        channel,
                        "the Redis subscription for publishes ended; reconnecting"
                    );
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, "could not subscribe to Redis for publishes")
                }
            },
            Err(e) => tracing::warn!(channel, error = %e, "could not reach Redis for publishes"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
