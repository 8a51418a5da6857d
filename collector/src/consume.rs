//! Receiving batches from every warehouse and acknowledging each after its durable commit;
//! and publishing the catalog (retained) each time the collector (re)connects.
//!
//! The session is persistent (clean session off) and PUBACKs are manual, sent only after the
//! ledger commit: if the collector dies in between, the broker still holds the batch and the
//! agent still holds the movements. Decoding and checking happen here; anything that cannot
//! be applied is kept in the rejects queue, never dropped. A payload of an unknown wire
//! version is kept but not acknowledged to the agent, which keeps it too until an upgraded
//! collector can read it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use stocksync_common::wire::{self, Ack, AckOutcome};
use tokio::sync::{mpsc, oneshot, watch};

use crate::ledger::{Ledger, LedgerError, Rejected};
use crate::metrics::Metrics;

/// A batch on its way to disk, and what to tell whom when it gets there.
struct Awaiting {
    publish: Publish,
    ack_topic: String,
    agent_id: String,
    seqs: (u64, u64),
    done: oneshot::Receiver<Result<AckOutcome, LedgerError>>,
}

/// Consumes movement batches until `shutdown`.
pub async fn run(
    broker: BrokerConfig,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    catalog: Vec<u8>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut opts = stocksync_runtime::mqtt::options(&broker, "stocksync-collector", false)?;
    opts.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(opts, 4096);
    events.set_network_options(stocksync_runtime::mqtt::network_options());
    // Acks go out in arrival order from their own task, so waiting for a commit never stalls
    // the event loop and batches keep flowing into the next group commit.
    let (await_tx, await_rx) = mpsc::channel::<Awaiting>(4096);
    let acker = tokio::spawn(send_acks(client.clone(), await_rx));
    let mut errors = stocksync_runtime::mqtt::LinkErrors::default();
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                tracing::info!(
                    session_present = c.session_present,
                    "collector connected to broker"
                );
                metrics.broker_connected.store(1, Ordering::Relaxed);
                metrics.broker_connects.inc();
                errors.clear();
                client
                    .subscribe(topics::MOVEMENTS_FILTER, QoS::AtLeastOnce)
                    .await?;
                // Retained, so an agent that connects later (or reconnects after days
                // offline) receives the current catalog at once.
                client
                    .publish(topics::CATALOG, QoS::AtLeastOnce, true, catalog.clone())
                    .await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(awaiting) = receive(&client, &ledger, p).await? {
                    await_tx.send(awaiting).await?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics.broker_connected.store(0, Ordering::Relaxed);
                let (text, new) = errors.record(&e);
                if new && matches!(e, rumqttc::ConnectionError::ConnectionRefused(_)) {
                    tracing::error!(error = %text, "broker refused the collector's connection; check credentials and ACL");
                } else if new {
                    tracing::warn!(error = %text, "collector lost the broker; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    drop(await_tx);
    let _ = acker.await;
    let _ = client.disconnect().await;
    Ok(())
}

/// Decodes and queues one publish. A payload that cannot be applied (not a movements topic,
/// oversized, undecodable, an agent id that cannot name an ack topic) is kept in the rejects
/// queue and PUBACKed, so that no message can be redelivered forever or stop this consumer.
async fn receive(
    client: &AsyncClient,
    ledger: &Ledger,
    p: Publish,
) -> anyhow::Result<Option<Awaiting>> {
    let topic = p.topic.clone();
    let received = match check(&p) {
        Ok(received) => received,
        Err(refusal) => {
            tracing::error!(%topic, bytes = p.payload.len(), reason = %refusal.reason, "batch kept in rejects queue");
            let mut payload = p.payload.to_vec();
            payload.truncate(MAX_KEPT_PAYLOAD);
            let rejected = Rejected {
                topic,
                agent_id: refusal.agent_id,
                seqs: None,
                reason: refusal.reason,
                field: refusal.field,
                payload,
            };
            ledger.reject(rejected).await?;
            client.ack(&p).await?;
            return Ok(None);
        }
    };
    let Some(seqs) = received.batch.seq_range() else {
        client.ack(&p).await?;
        return Ok(None);
    };
    // The ack goes to the warehouse the topic proves (the broker's ACL lets only that
    // warehouse's agents publish there), never to one the payload names: a batch forged by
    // another warehouse's agent must not be able to answer a real agent `Rejected`.
    let warehouse = topics::warehouse_of_movements_topic(&topic).unwrap_or_default();
    let ack_topic = topics::acks(warehouse, &received.batch.agent_id);
    let agent_id = received.batch.agent_id.clone();
    let done = ledger.apply(received, p.payload.to_vec(), topic).await?;
    Ok(Some(Awaiting {
        publish: p,
        ack_topic,
        agent_id,
        seqs,
        done,
    }))
}

/// Most bytes of a refused payload kept in the rejects queue (an oversized one is cut).
const MAX_KEPT_PAYLOAD: usize = 64 * 1024;

/// Why a publish cannot even be handed to the ledger.
struct Refusal {
    agent_id: Option<String>,
    field: Option<String>,
    reason: String,
}

impl Refusal {
    fn new(reason: String) -> Refusal {
        Refusal {
            agent_id: None,
            field: None,
            reason,
        }
    }
}

/// The checks that need no ledger state: topic shape, size, decoding, agent id.
fn check(p: &Publish) -> Result<wire::Received, Refusal> {
    if topics::warehouse_of_movements_topic(&p.topic).is_none() {
        return Err(Refusal::new(format!(
            "topic `{}` is not a movements topic",
            p.topic
        )));
    }
    let limit = stocksync_runtime::mqtt::MAX_PACKET_BYTES;
    if p.payload.len() > limit {
        return Err(Refusal::new(format!(
            "payload of {} bytes exceeds the {limit}-byte limit (first {MAX_KEPT_PAYLOAD} bytes kept)",
            p.payload.len()
        )));
    }
    let received =
        wire::decode_batch_with_parts(&p.payload).map_err(|e| Refusal::new(e.to_string()))?;
    if let Err(detail) = topics::check_level(&received.batch.agent_id) {
        return Err(Refusal {
            agent_id: None,
            field: Some("agent_id".into()),
            reason: format!("agent_id cannot name an ack topic: {detail}"),
        });
    }
    Ok(received)
}

async fn send_acks(client: AsyncClient, mut rx: mpsc::Receiver<Awaiting>) {
    while let Some(a) = rx.recv().await {
        let outcome = match a.done.await {
            Ok(Ok(outcome)) => Some(outcome),
            // Not on disk: no application ack, so the agent keeps the movements and resends
            // them after its ack timeout.
            Ok(Err(e)) => {
                tracing::error!(error = %e, agent = %a.agent_id, "batch not committed; agent will resend");
                None
            }
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            let ack = Ack {
                agent_id: a.agent_id,
                first_seq: a.seqs.0,
                last_seq: a.seqs.1,
                outcome,
            };
            // Only a closed client fails here (topics were checked before the commit); the
            // PUBACK below then fails too and ends this task, which ends the consumer.
            if let Err(e) = client
                .publish(
                    &a.ack_topic,
                    QoS::AtLeastOnce,
                    false,
                    wire::encode_ack(&ack),
                )
                .await
            {
                tracing::error!(error = %e, topic = %a.ack_topic, "ack not sent; agent will resend");
            }
        }
        // The broker's PUBACK goes out in order for every publish, applied or not: brokers
        // may drop a connection that acknowledges out of order (rumqttd does), and the
        // agent, not the broker, is what holds an uncommitted batch.
        if client.ack(&a.publish).await.is_err() {
            return;
        }
    }
}
