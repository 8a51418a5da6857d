//! Forwarding the records this agent refused to the collector, so the central team sees
//! every warehouse's refusals in one queue. The agent keeps its own copy (`GET /v1/rejects`).
//!
//! One reject at a time on its own broker session, QoS 1: a reject is marked forwarded in
//! the journal only once the broker acknowledged its publish, so one refused while the
//! broker is away, or before a crash, is sent later; a resend is harmless because the
//! collector keys each by `(agent, id, received_at_ms)`. The movement forwarder's session is
//! left alone: a burst of rejects never delays a batch.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use stocksync_common::agent_reject::AgentReject;
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use tokio::sync::watch;

use crate::journal::{Journal, StoredReject};

/// How often the journal is looked at for new rejects.
const POLL: Duration = Duration::from_millis(500);
/// A publish not acknowledged within this is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// Everything the reject forwarder needs.
pub struct RejectForwarder {
    pub agent_id: String,
    pub warehouse: String,
    pub broker: BrokerConfig,
    pub journal: Journal,
}

/// The reject on its way: its id, the packet id once known, when it was sent.
struct InFlight {
    id: i64,
    pkid: Option<u16>,
    sent: Instant,
}

impl RejectForwarder {
    /// Forwards rejects until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut broker = self.broker.clone();
        let base = broker
            .client_id
            .clone()
            .unwrap_or_else(|| format!("stocksync-agent-{}", self.agent_id));
        broker.client_id = Some(format!("{base}-rejects"));
        let opts = stocksync_common::mqtt::options(&broker, &base, true)?;
        let (client, mut events) = AsyncClient::new(opts, 16);
        events.set_network_options(stocksync_common::mqtt::network_options());
        let topic = topics::rejects(&self.warehouse, &self.agent_id);
        let (mut connected, mut in_flight) = (false, None::<InFlight>);
        let mut tick = tokio::time::interval(POLL);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    if in_flight.as_ref().is_some_and(|f| f.sent.elapsed() > RESEND_AFTER) {
                        in_flight = None;
                    }
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        in_flight = None;
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(f) = in_flight.as_mut().filter(|f| f.pkid.is_none()) {
                            f.pkid = Some(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(f) = in_flight.take_if(|f| f.pkid == Some(ack.pkid)) {
                            self.journal.reject_forwarded(f.id).await?;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            tracing::warn!(error = %e, "reject forwarder lost the broker; retrying");
                        }
                        (connected, in_flight) = (false, None);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                },
            }
            if connected && in_flight.is_none() {
                in_flight = self.send_next(&client, &topic).await?;
            }
        }
        let _ = client.disconnect().await;
        Ok(())
    }

    /// Publishes the oldest reject not yet forwarded, if there is one.
    async fn send_next(
        &self,
        client: &AsyncClient,
        topic: &str,
    ) -> anyhow::Result<Option<InFlight>> {
        let Some(r) = self.journal.unforwarded_rejects(1)?.into_iter().next() else {
            return Ok(None);
        };
        client
            .publish(topic, QoS::AtLeastOnce, false, notice(&r).encode())
            .await?;
        Ok(Some(InFlight {
            id: r.id,
            pkid: None,
            sent: Instant::now(),
        }))
    }
}

fn notice(r: &StoredReject) -> AgentReject {
    AgentReject {
        id: r.id,
        received_at_ms: r.received_at_ms,
        source: r.source.clone(),
        record: r.record,
        field: r.field.clone(),
        detail: r.detail.clone(),
        payload: r.payload.clone(),
    }
}
