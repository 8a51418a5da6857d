//! One collector per broker session: a running collector announces itself on a retained
//! presence topic, and a second one that would share its MQTT session fails at start with a
//! clear message instead of taking the session over (the broker would disconnect the first,
//! which reconnects and disconnects the second, forever).
//!
//! The consumer's connection carries the presence as a retained message, announced again
//! every half keep-alive, and as its last will an empty retained message on the same topic:
//! when the collector dies (SIGKILL, a lost machine) the broker clears its presence itself,
//! at once when the socket closes or after one and a half keep-alives at the latest; a clean
//! stop clears it explicitly. The check at start fails only on a presence it sees announced
//! again while it watches (a live collector), within one and a half keep-alives; a retained
//! presence that is never refreshed (its collector died while the broker was down, so no
//! will fired) is stale: logged and ignored, so a restart is never refused by a ghost.
//!
//! What conflicts: for the SQLite backend, any other collector (one process owns all
//! warehouses); for a PostgreSQL worker, a SQLite collector or a worker with its own id.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics::PREFIX;

/// What a running collector says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Presence {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The MQTT client id of its consumer.
    pub client_id: String,
    pub pid: u32,
    pub started_at_ms: i64,
}

impl Presence {
    /// This process's presence for a consumer with `client_id`.
    pub fn new(backend: &str, client_id: &str) -> Presence {
        Presence {
            backend: backend.into(),
            client_id: client_id.into(),
            pid: std::process::id(),
            started_at_ms: stocksync_common::OccurredAt::now().unix_ms,
        }
    }

    /// The retained topic: `stocksync/v1/collectors/<client id>`.
    pub fn topic(&self) -> String {
        let level: String = self
            .client_id
            .chars()
            .map(|c| {
                if matches!(c, '/' | '+' | '#') || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        format!("{PREFIX}/collectors/{level}")
    }

    /// True if `other` may not run beside this one on the same broker.
    fn conflicts_with(&self, other: &Presence) -> bool {
        self.backend == "sqlite" || other.backend == "sqlite" || self.client_id == other.client_id
    }

    /// Sets the consumer's last will: its presence cleared when its connection dies.
    pub fn set_will(&self, opts: &mut MqttOptions) {
        opts.set_last_will(LastWill::new(
            self.topic(),
            Vec::new(),
            QoS::AtLeastOnce,
            true,
        ));
    }

    /// Announces the presence (retained) on the consumer's connection.
    pub async fn announce(&self, client: &AsyncClient) -> Result<(), rumqttc::ClientError> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        client
            .publish(self.topic(), QoS::AtLeastOnce, true, body)
            .await
    }

    /// Clears the presence on a clean stop (the will only fires on a broken connection).
    pub async fn clear(&self, client: &AsyncClient) -> Result<(), rumqttc::ClientError> {
        client
            .publish(self.topic(), QoS::AtLeastOnce, true, Vec::new())
            .await
    }
}

const FILTER: &str = "stocksync/v1/collectors/#";

/// Fails if a conflicting collector is live on the broker: one whose presence is announced
/// again within one and a half keep-alives (and a margin) of watching.
pub async fn check(broker: &BrokerConfig, me: &Presence) -> anyhow::Result<()> {
    // Never the consumer's own client id (a config may fix it): that would take over the
    // running collector's session, which is what this check exists to prevent.
    let probe_id = format!("stocksync-collector-probe-{}", me.pid);
    let mut probe_config = broker.clone();
    probe_config.client_id = None;
    let opts = stocksync_runtime::mqtt::options(&probe_config, &probe_id, true)?;
    let (client, mut events) = AsyncClient::new(opts, 64);
    let keep_alive = Duration::from_secs(broker.keep_alive_secs.max(5));
    let deadline = Instant::now() + keep_alive * 3 / 2 + Duration::from_secs(2);
    let marker = format!("{PREFIX}/collectors/{probe_id}/marker");
    let mut watch = Watch::default();
    let result = loop {
        if let Some(verdict) = watch.verdict(me, Instant::now() >= deadline) {
            break verdict;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left, events.poll()).await {
            Ok(Ok(event)) => event,
            // A collector starts while its broker is down and connects when it is back (the
            // consumer retries); with no broker there is no session to take over yet.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "broker not reachable; starting without checking for another collector");
                break Ok(());
            }
            Err(_) => continue,
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                client.subscribe(FILTER, QoS::AtLeastOnce).await?;
                // Retained presences arrive before anything published after the subscription.
                client
                    .publish(&marker, QoS::AtLeastOnce, false, Vec::new())
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == marker => watch.settled = true,
            Event::Incoming(Packet::Publish(p)) => watch.seen(&p.topic, &p.payload),
            _ => {}
        }
    };
    let _ = client.disconnect().await;
    result
}

/// What the check has seen so far.
#[derive(Default)]
struct Watch {
    /// The retained presences have all been replayed (the marker came back).
    settled: bool,
    /// Every presence currently retained, by topic.
    present: BTreeMap<String, Presence>,
    /// Those announced again after `settled`: live collectors.
    live: BTreeMap<String, Presence>,
}

impl Watch {
    fn seen(&mut self, topic: &str, payload: &[u8]) {
        if payload.is_empty() {
            self.present.remove(topic);
            self.live.remove(topic);
            return;
        }
        if let Ok(other) = serde_json::from_slice::<Presence>(payload) {
            if self.settled {
                self.live.insert(topic.to_string(), other.clone());
            }
            self.present.insert(topic.to_string(), other);
        }
    }

    /// The outcome once there is one: refused on a live conflict, allowed once nothing
    /// conflicting is retained, or at the deadline with only stale presences left.
    fn verdict(&self, me: &Presence, past_deadline: bool) -> Option<anyhow::Result<()>> {
        let live: Vec<&Presence> = self
            .live
            .values()
            .filter(|p| me.conflicts_with(p))
            .collect();
        if !live.is_empty() {
            return Some(Err(refusal(me, &live)));
        }
        let waiting = self.present.values().any(|p| me.conflicts_with(p));
        match (self.settled, waiting, past_deadline) {
            (true, false, _) => Some(Ok(())),
            (false, _, true) => {
                tracing::warn!("broker did not answer the check for another collector in time; starting without it");
                Some(Ok(()))
            }
            (true, true, true) => {
                for p in self.present.values() {
                    tracing::warn!(client_id = %p.client_id, pid = p.pid, "stale collector presence on the broker (never refreshed); ignored");
                }
                Some(Ok(()))
            }
            _ => None,
        }
    }
}

fn refusal(me: &Presence, conflicts: &[&Presence]) -> anyhow::Error {
    let others: Vec<String> = conflicts
        .iter()
        .map(|p| {
            format!(
                "a {} collector (client id `{}`, pid {}, started at {} ms)",
                p.backend, p.client_id, p.pid, p.started_at_ms
            )
        })
        .collect();
    let hint = if me.backend == "sqlite" {
        "stop it first; to run several collectors at once, use [store] backend = \"postgres\" workers"
    } else {
        "give each worker its own [store] worker_id, and do not mix workers with a SQLite collector"
    };
    anyhow::anyhow!(
        "another collector is connected to this broker: {}. A second one would take over its MQTT session and both would keep disconnecting each other; {hint}",
        others.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(p: &Presence) -> Vec<u8> {
        serde_json::to_vec(p).unwrap()
    }

    #[test]
    fn a_live_conflicting_presence_refuses_at_once() {
        let me = Presence::new("sqlite", "stocksync-collector");
        let other = Presence::new("sqlite", "stocksync-collector");
        let mut w = Watch::default();
        w.seen(&other.topic(), &body(&other));
        assert!(w.verdict(&me, false).is_none(), "retained only: wait");
        w.settled = true;
        assert!(w.verdict(&me, false).is_none(), "not refreshed yet: wait");
        w.seen(&other.topic(), &body(&other));
        let refused = w.verdict(&me, false).unwrap().unwrap_err().to_string();
        assert!(
            refused.contains("another collector is connected"),
            "{refused}"
        );
    }

    #[test]
    fn a_stale_or_cleared_presence_does_not_refuse() {
        let me = Presence::new("sqlite", "stocksync-collector");
        let ghost = Presence::new("sqlite", "stocksync-collector");
        let mut w = Watch::default();
        w.seen(&ghost.topic(), &body(&ghost));
        w.settled = true;
        assert!(
            w.verdict(&me, true).unwrap().is_ok(),
            "never refreshed: stale"
        );
        let mut w = Watch::default();
        w.seen(&ghost.topic(), &body(&ghost));
        w.settled = true;
        w.seen(&ghost.topic(), &[]);
        assert!(
            w.verdict(&me, false).unwrap().is_ok(),
            "cleared by its will"
        );
    }

    #[test]
    fn postgres_workers_conflict_only_with_sqlite_or_their_own_id() {
        let w1 = Presence::new("postgres", "stocksync-collector-w1");
        let w2 = Presence::new("postgres", "stocksync-collector-w2");
        let sqlite = Presence::new("sqlite", "stocksync-collector");
        assert!(!w1.conflicts_with(&w2));
        assert!(w1.conflicts_with(&w1.clone()));
        assert!(w1.conflicts_with(&sqlite) && sqlite.conflicts_with(&w1));
    }
}
