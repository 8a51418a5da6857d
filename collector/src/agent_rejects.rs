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

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use rusqlite::params;
use stocksync_common::agent_reject::{AgentReject, MAX_BYTES};
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use tokio::sync::watch;

use crate::ledger::{Ledger, Rejected};

/// The table, in the ledger's file.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agent_rejects (
    agent_id TEXT NOT NULL,
    reject_id INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    warehouse TEXT NOT NULL,
    arrived_at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    record INTEGER,
    field TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (agent_id, reject_id, received_at_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agent_rejects_by_arrival ON agent_rejects (arrived_at_ms);
";

/// Creates the table if missing.
pub fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// Consumes agents' rejects until `shutdown`.
pub async fn run(
    broker: BrokerConfig,
    ledger: Ledger,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut broker = broker;
    let base = broker
        .client_id
        .clone()
        .unwrap_or_else(|| "stocksync-collector".into());
    broker.client_id = Some(format!("{base}-rejects"));
    let mut opts = stocksync_common::mqtt::options(&broker, &base, false)?;
    opts.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(opts, 64);
    events.set_network_options(stocksync_common::mqtt::network_options());
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

/// Stores one agent reject, or keeps the publish in the collector's rejects queue.
async fn receive(ledger: &Ledger, p: &Publish) -> anyhow::Result<()> {
    let (warehouse, agent, reject) = match check(p) {
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
    let now = stocksync_common::input::now().unix_ms;
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
fn check(p: &Publish) -> Result<(String, String, AgentReject), (Option<String>, String)> {
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
    let reject: AgentReject =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&p.payload))
            .map_err(|e| {
                (
                    Some(format!("$.{}", e.path())),
                    format!("agent reject does not decode: {}", e.inner()),
                )
            })?;
    Ok((warehouse.to_string(), agent.to_string(), reject))
}
