//! MQTT target: one retained JSON message per SKU on
//! `stocksync/v1/channels/<channel>/sellable/<channel sku>`, so a subscriber that connects
//! later still gets the current number.
//!
//! Invariant: a batch counts as delivered only when the broker has PUBACKed every message
//! (QoS 1). After every (re)connect the whole channel is republished, because a broker that
//! restarted may have lost its retained messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use stocksync_common::config::BrokerConfig;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::limit::PushLimits;
use super::store::Published;
use super::target::{Failure, Target};
use super::{Channel, PublishError};

/// How long a batch may wait for its PUBACKs.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Topic of one SKU of one channel. `/`, `+`, `#` and `%` in the SKU are percent-encoded so
/// every SKU is exactly one topic level.
pub fn topic(channel: &str, sku: &str) -> String {
    let mut level = String::with_capacity(sku.len());
    for ch in sku.chars() {
        match ch {
            '%' => level.push_str("%25"),
            '/' => level.push_str("%2F"),
            '+' => level.push_str("%2B"),
            '#' => level.push_str("%23"),
            c => level.push(c),
        }
    }
    format!(
        "{}/channels/{channel}/sellable/{level}",
        stocksync_common::topics::PREFIX
    )
}

/// The retained payload of one SKU.
pub fn payload(channel: &str, item: &Published) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "channel": channel,
        "sku": item.sku,
        "canonical_sku": item.canonical_sku,
        "sellable": item.sellable,
        "cursor": item.cursor,
        "updated_at_ms": item.updated_at_ms,
    }))
    .expect("json")
}

/// Publishes a channel's values as retained messages.
pub struct MqttTarget {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    ack_notify: Arc<Notify>,
    /// Connections made so far; a snapshot is owed for each new one.
    connects: Arc<AtomicU64>,
    /// `connects` as of the snapshot in progress, and of the last one delivered.
    snapshot_of: u64,
    snapshot_done_of: u64,
    events: JoinHandle<()>,
}

impl MqttTarget {
    /// Connects to `broker` with its own session for `channel`.
    pub fn new(broker: &BrokerConfig, channel: &str) -> Result<MqttTarget, PublishError> {
        let mut opts =
            stocksync_runtime::mqtt::options(broker, &format!("stocksync-channel-{channel}"), true)
                .map_err(|e| PublishError::Config {
                    channel: channel.into(),
                    detail: e.to_string(),
                })?;
        if let Some(id) = &broker.client_id {
            opts.set_client_id(format!("{id}-channel-{channel}"));
        }
        let (client, mut events) = AsyncClient::new(opts, 1024);
        let acked = Arc::new(AtomicU64::new(0));
        let ack_notify = Arc::new(Notify::new());
        let connects = Arc::new(AtomicU64::new(0));
        let (a, n, r) = (acked.clone(), ack_notify.clone(), connects.clone());
        let events = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        r.fetch_add(1, Ordering::SeqCst);
                        n.notify_waiters();
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        n.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
        Ok(MqttTarget {
            client,
            acked,
            ack_notify,
            connects,
            snapshot_of: 0,
            snapshot_done_of: 0,
            events,
        })
    }

    async fn publish_all(&self, channel: &str, items: &[Published]) -> Result<(), Failure> {
        let want = self.acked.load(Ordering::SeqCst) + items.len() as u64;
        for item in items {
            self.client
                .publish(
                    topic(channel, &item.sku),
                    QoS::AtLeastOnce,
                    true,
                    payload(channel, item),
                )
                .await
                .map_err(|e| Failure::new(format!("MQTT publish: {e}")))?;
        }
        loop {
            let notified = self.ack_notify.notified();
            if self.acked.load(Ordering::SeqCst) >= want {
                return Ok(());
            }
            notified.await;
        }
    }
}

impl Drop for MqttTarget {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl Target for MqttTarget {
    const NAME: &'static str = "mqtt";

    fn limits(&self) -> PushLimits {
        PushLimits {
            rate_per_sec: 1000.0,
            burst: 1000,
            max_batch: 500,
            backoff_initial_ms: 200,
            backoff_max_ms: 10_000,
            ..PushLimits::default()
        }
    }

    async fn deliver(&mut self, channel: &Channel, items: &[Published]) -> Result<(), Failure> {
        tokio::time::timeout(ACK_TIMEOUT, self.publish_all(&channel.name, items))
            .await
            .map_err(|_| Failure::new("MQTT broker did not acknowledge within 10 s"))?
    }

    fn needs_snapshot(&mut self) -> bool {
        // A reconnect during the snapshot bumps `connects` again and forces another one.
        self.snapshot_of = self.connects.load(Ordering::SeqCst);
        self.snapshot_of != self.snapshot_done_of
    }

    fn snapshot_done(&mut self) {
        self.snapshot_done_of = self.snapshot_of;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_have_one_level_per_sku() {
        assert_eq!(
            topic("web", "SKU-1"),
            "stocksync/v1/channels/web/sellable/SKU-1"
        );
        assert_eq!(
            topic("web", "a/b+c#d%"),
            "stocksync/v1/channels/web/sellable/a%2Fb%2Bc%23d%25"
        );
    }
}
