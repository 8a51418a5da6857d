//! Receiving the records agents refused (`stocksync/v1/<warehouse>/rejects/<agent>`), so
//! the exception queue shows every warehouse's refusals beside the collector's own.
//!
//! Who sent a reject is the topic (the broker's ACL lets an agent publish only on its own
//! warehouse's and its own id's topic), never the payload. Each is stored once, keyed by
//! `(agent, id, received_at_ms)`, so the agent's resends change nothing. A payload that is
//! oversized or does not decode is kept in the collector's rejects queue and acknowledged:
//! hostile bytes never stop this consumer nor touch the movements it does not read.
//! PUBACKs are sent only after the commit (manual acks, persistent session), so a crash in
//! between leaves the reject with the broker.
//!
//! The same session sends an agent a retry of one of its rejects ([`Commands`], on
//! `stocksync/v1/<warehouse>/commands/<agent>`) and receives the outcome on the rejects
//! topic, which settles the exception (`exceptions::agent_retried`).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use rusqlite::params;
use stocksync_common::agent_reject::{AgentNotice, Retried, RetryCommand, MAX_BYTES};
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use tokio::sync::watch;

use crate::ledger::{Ledger, Rejected};

/// Sends agents commands (QoS 1, queued by the client while the broker is away).
#[derive(Clone)]
pub struct Commands(AsyncClient);

impl Commands {
    /// Asks `agent` at `warehouse` to retry its reject `(id, received_at_ms)`; fails if the
    /// client cannot take the command within a few seconds.
    pub async fn retry(
        &self,
        warehouse: &str,
        agent: &str,
        id: i64,
        received_at_ms: i64,
    ) -> Result<(), String> {
        let command = RetryCommand::RetryReject { id, received_at_ms };
        let bytes = serde_json::to_vec(&command).unwrap_or_default();
        let topic = topics::commands(warehouse, agent);
        let send = self.0.publish(topic, QoS::AtLeastOnce, false, bytes);
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the broker session is not taking commands".into()),
        }
    }
}

/// The consumer's session, before it runs.
pub struct Consumer {
    pub(crate) client: AsyncClient,
    pub(crate) events: rumqttc::EventLoop,
}

/// Opens the session's client: the handle that sends commands, and the consumer to run.
pub fn connect(broker: &BrokerConfig) -> anyhow::Result<(Commands, Consumer)> {
    let mut broker = broker.clone();
    let base = broker
        .client_id
        .clone()
        .unwrap_or_else(|| "stocksync-collector".into());
    broker.client_id = Some(format!("{base}-rejects"));
    let mut opts = stocksync_runtime::mqtt::options(&broker, &base, false)?;
    opts.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(opts, 64);
    events.set_network_options(stocksync_runtime::mqtt::network_options());
    Ok((Commands(client.clone()), Consumer { client, events }))
}

/// Consumes agents' rejects and retry outcomes until `shutdown`.
pub async fn run(
    consumer: Consumer,
    ledger: Ledger,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Consumer { client, mut events } = consumer;
    let mut connected = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                client
                    .subscribe(topics::REJECTS_FILTER, QoS::AtLeastOnce)
                    .await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                receive(&ledger, &p).await?;
                client.ack(&p).await?;
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    tracing::warn!(error = %e, "agent rejects consumer lost the broker; retrying");
                }
                connected = false;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}

/// Stores one agent reject, or settles a retry, or keeps the publish in the collector's
/// rejects queue.
async fn receive(ledger: &Ledger, p: &Publish) -> anyhow::Result<()> {
    let (warehouse, agent, notice) = match check(p) {
        Ok(ok) => ok,
        Err((field, reason)) => {
            tracing::error!(topic = %p.topic, %reason, "agent reject kept in rejects queue");
            let mut payload = p.payload.to_vec();
            payload.truncate(MAX_BYTES);
            let rejected = Rejected {
                topic: p.topic.clone(),
                agent_id: None,
                seqs: None,
                reason,
                field,
                payload,
            };
            ledger.reject(rejected).await?;
            return Ok(());
        }
    };
    let now = stocksync_common::OccurredAt::now().unix_ms;
    let reject = match notice {
        AgentNotice::Reject(reject) => reject,
        AgentNotice::Retried(retried) => return settle(ledger, agent, retried, now).await,
    };
    ledger
        .write(move |tx, _| {
            tx.execute(
                "INSERT INTO agent_rejects (agent_id, reject_id, received_at_ms, warehouse, arrived_at_ms,
                     source, record, field, detail, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT DO NOTHING",
                params![
                    agent,
                    reject.id,
                    reject.received_at_ms,
                    warehouse,
                    now,
                    reject.source,
                    reject.record,
                    reject.field,
                    reject.detail,
                    reject.payload
                ],
            )
        })
        .await?;
    Ok(())
}

/// The warehouse and agent the topic names, and the decoded reject; else the field at
/// fault and why.
pub(crate) fn check(
    p: &Publish,
) -> Result<(String, String, AgentNotice), (Option<String>, String)> {
    let Some((warehouse, agent)) = topics::of_rejects_topic(&p.topic) else {
        return Err((
            None,
            format!("topic `{}` is not an agent rejects topic", p.topic),
        ));
    };
    if p.payload.len() > MAX_BYTES {
        return Err((
            None,
            format!(
                "agent reject of {} bytes exceeds the {MAX_BYTES}-byte limit (first {MAX_BYTES} bytes kept)",
                p.payload.len()
            ),
        ));
    }
    let notice: AgentNotice =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&p.payload))
            .map_err(|e| {
                (
                    Some(format!("$.{}", e.path())),
                    format!("agent reject does not decode: {}", e.inner()),
                )
            })?;
    Ok((warehouse.to_string(), agent.to_string(), notice))
}

/// Records what an agent's retry led to on the exception of that reject.
async fn settle(ledger: &Ledger, agent: String, retried: Retried, now: i64) -> anyhow::Result<()> {
    ledger
        .write(move |tx, _| crate::exceptions::agent_retried(tx, &agent, &retried, now))
        .await?;
    Ok(())
}
