//! Receiving batches from every warehouse and acknowledging each after its durable commit;
//! and publishing the catalog (retained) each time the collector (re)connects.
//!
//! The session is persistent (clean session off) and PUBACKs are manual, sent only after the
//! ledger commit: if the collector dies in between, the broker still holds the batch and the
//! agent still holds the movements. Decoding and checking happen here; anything that cannot
//! be applied is kept in the rejects queue, never dropped. A payload of an unknown wire
//! version is kept but not acknowledged to the agent, which keeps it too until an upgraded
//! collector can read it.
//!
//! The store behind it is an [`Ingest`]: the SQLite ledger (one collector subscribes to
//! every warehouse) or a PostgreSQL worker, which subscribes only to the warehouses it holds
//! a lease on (`Subscriptions::Owned`) and follows the lease set as it changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use stocksync_common::wire::{self, Ack, AckOutcome};
use tokio::sync::{mpsc, oneshot, watch};

use crate::ledger::Rejected;
use crate::metrics::Metrics;
use crate::presence::Presence;
/// Warehouses a PostgreSQL worker holds leases on.
type Owned = std::collections::BTreeSet<String>;
use crate::store::Ingest;

/// A batch on its way to disk, and what to tell whom when it gets there.
struct Awaiting<E> {
    publish: Publish,
    /// `None` for a publish that gets only the broker's PUBACK (kept as a reject, empty, or
    /// for a warehouse this worker gave up): it still waits for its turn, so that every
    /// PUBACK leaves in the order the publishes arrived.
    answer: Option<Answer<E>>,
}

/// The application ack a batch gets once its transaction has committed.
struct Answer<E> {
    ack_topic: String,
    agent_id: String,
    seqs: (u64, u64),
    done: oneshot::Receiver<Result<AckOutcome, E>>,
}

impl<E> Awaiting<E> {
    fn puback_only(publish: Publish) -> Awaiting<E> {
        Awaiting {
            publish,
            answer: None,
        }
    }
}

/// Which movement topics the consumer subscribes to.
pub enum Subscriptions {
    /// Every warehouse's (`stocksync/v1/+/movements`), as the one SQLite collector; its
    /// session is persistent, so the broker keeps batches while it restarts.
    All,
    /// Those of the warehouses this PostgreSQL worker holds; the session is clean (a
    /// warehouse may have moved to another worker meanwhile: what the broker held for a
    /// dead worker, the agents resend after their ack timeout).
    Owned {
        worker_id: String,
        owned: watch::Receiver<Owned>,
    },
}

/// Consumes movement batches until `shutdown`.
pub async fn run<S: Ingest>(
    broker: BrokerConfig,
    ledger: S,
    metrics: Arc<Metrics>,
    catalog: Vec<u8>,
    mut subscriptions: Subscriptions,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut opts = options(&broker, &subscriptions)?;
    opts.set_manual_acks(true);
    let presence = presence(&broker, &subscriptions)?;
    presence.set_will(&mut opts);
    let (client, mut events) = AsyncClient::new(opts, 4096);
    events.set_network_options(stocksync_runtime::mqtt::network_options());
    // Acks go out in arrival order from their own task, so waiting for a commit never stalls
    // the event loop and batches keep flowing into the next group commit.
    let (await_tx, await_rx) = mpsc::channel::<Awaiting<S::Error>>(4096);
    let acker = tokio::spawn(send_acks(client.clone(), await_rx));
    let mut errors = stocksync_runtime::mqtt::LinkErrors::default();
    // Warehouses subscribed to on the current connection (`Owned` only).
    let mut subscribed = Owned::new();
    // Announced again every half keep-alive, so a starting collector can tell this live
    // presence from a stale retained one (see `presence`).
    let mut announce =
        tokio::time::interval(Duration::from_secs(broker.keep_alive_secs.max(5)) / 2);
    let mut connected = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            _ = announce.tick() => {
                if connected {
                    presence.announce(&client).await?;
                }
                continue;
            }
            changed = owned_changed(&mut subscriptions) => {
                if changed {
                    follow(&client, &subscriptions, &mut subscribed).await?;
                }
                continue;
            }
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
                connected = true;
                presence.announce(&client).await?;
                match &subscriptions {
                    Subscriptions::All => {
                        client
                            .subscribe(topics::MOVEMENTS_FILTER, QoS::AtLeastOnce)
                            .await?
                    }
                    Subscriptions::Owned { .. } => {
                        subscribed.clear();
                        follow(&client, &subscriptions, &mut subscribed).await?;
                    }
                }
                // Retained, so an agent that connects later (or reconnects after days
                // offline) receives the current catalog at once.
                client
                    .publish(topics::CATALOG, QoS::AtLeastOnce, true, catalog.clone())
                    .await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if !holds(&subscriptions, &p.topic) => {
                // In flight when this worker gave the warehouse up: not applied here, no
                // application ack; the agent resends it to the warehouse's new worker.
                tracing::debug!(topic = %p.topic, "batch for a warehouse this worker no longer holds");
                await_tx.send(Awaiting::puback_only(p)).await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(awaiting) = receive(&ledger, p).await? {
                    await_tx.send(awaiting).await?;
                }
            }
            Ok(_) => {}
            Err(e) => {
                connected = false;
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
    let _ = presence.clear(&client).await;
    let _ = client.disconnect().await;
    Ok(())
}

/// The consumer's client options: a persistent session for the one SQLite collector, a
/// clean one per PostgreSQL worker.
fn options(
    broker: &BrokerConfig,
    subscriptions: &Subscriptions,
) -> Result<rumqttc::MqttOptions, stocksync_common::config::ConfigError> {
    match subscriptions {
        Subscriptions::All => {
            stocksync_runtime::mqtt::options(broker, "stocksync-collector", false)
        }
        Subscriptions::Owned { worker_id, .. } => stocksync_runtime::mqtt::options(
            broker,
            &format!("stocksync-collector-{worker_id}"),
            true,
        ),
    }
}

/// What the consumer announces on the broker (see `presence`).
pub fn presence(
    broker: &BrokerConfig,
    subscriptions: &Subscriptions,
) -> Result<Presence, stocksync_common::config::ConfigError> {
    let client_id = options(broker, subscriptions)?.client_id();
    let backend = match subscriptions {
        Subscriptions::All => "sqlite",
        Subscriptions::Owned { .. } => "postgres",
    };
    Ok(Presence::new(backend, &client_id))
}

/// Resolves when the lease set changes (true), or never for `All`; false if the lease
/// task has ended (then nothing changes any more).
async fn owned_changed(subscriptions: &mut Subscriptions) -> bool {
    match subscriptions {
        Subscriptions::All => std::future::pending().await,
        Subscriptions::Owned { owned, .. } => match owned.changed().await {
            Ok(()) => true,
            Err(_) => std::future::pending().await,
        },
    }
}

/// True unless this is a worker that does not hold the topic's warehouse.
fn holds(subscriptions: &Subscriptions, topic: &str) -> bool {
    match subscriptions {
        Subscriptions::All => true,
        Subscriptions::Owned { owned, .. } => {
            topics::warehouse_of_movements_topic(topic).is_none_or(|w| owned.borrow().contains(w))
        }
    }
}

/// Subscribes to the movement topics of newly held warehouses and unsubscribes from those
/// given up, so `subscribed` matches the lease set.
async fn follow(
    client: &AsyncClient,
    subscriptions: &Subscriptions,
    subscribed: &mut Owned,
) -> anyhow::Result<()> {
    let Subscriptions::Owned { owned, worker_id } = subscriptions else {
        return Ok(());
    };
    let want = owned.borrow().clone();
    for gone in subscribed.difference(&want) {
        client.unsubscribe(topics::movements(gone)).await?;
        tracing::info!(worker = %worker_id, warehouse = %gone, "unsubscribed");
    }
    for new in want.difference(subscribed) {
        client
            .subscribe(topics::movements(new), QoS::AtLeastOnce)
            .await?;
        tracing::info!(worker = %worker_id, warehouse = %new, "subscribed");
    }
    *subscribed = want;
    Ok(())
}

/// Decodes and queues one publish. A payload that cannot be applied (not a movements topic,
/// oversized, undecodable, an agent id that cannot name an ack topic) is kept in the rejects
/// queue and PUBACKed, so that no message can be redelivered forever or stop this consumer.
async fn receive<S: Ingest>(ledger: &S, p: Publish) -> anyhow::Result<Option<Awaiting<S::Error>>> {
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
            return Ok(Some(Awaiting::puback_only(p)));
        }
    };
    let Some(seqs) = received.batch.seq_range() else {
        return Ok(Some(Awaiting::puback_only(p)));
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
        answer: Some(Answer {
            ack_topic,
            agent_id,
            seqs,
            done,
        }),
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

async fn send_acks<E: std::fmt::Display>(client: AsyncClient, mut rx: mpsc::Receiver<Awaiting<E>>) {
    while let Some(Awaiting { publish, answer }) = rx.recv().await {
        if let Some(a) = answer {
            answer_agent(&client, a).await;
        }
        // The broker's PUBACK goes out in order for every publish, applied or not: brokers
        // may drop a connection that acknowledges out of order (rumqttd does), and the
        // agent, not the broker, is what holds an uncommitted batch.
        if client.ack(&publish).await.is_err() {
            return;
        }
    }
}

/// Publishes the application ack of a batch once its transaction has committed; nothing if
/// it did not (the agent resends after its ack timeout).
async fn answer_agent<E: std::fmt::Display>(client: &AsyncClient, a: Answer<E>) {
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
        // PUBACK after it then fails too and ends the acker, which ends the consumer.
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
}
