//! Receiving the records agents refused on a PostgreSQL worker: the SQLite collector's
//! consumer (`crate::agent_rejects`) with this store's SQL, on the warehouses this worker
//! holds a lease on.
//!
//! Identity is the topic (`stocksync/v1/<warehouse>/rejects/<agent>`), never the payload;
//! each reject is stored once, keyed by `(agent, id, received_at_ms)`, so a resend, or the
//! same reject received by two workers around a take-over, is one record. A payload that is
//! oversized or does not decode is kept in the rejects queue and acknowledged, so hostile
//! bytes never stop this consumer. PUBACKs go out only after the commit.
//!
//! The session is persistent (`stocksync-collector-<worker>-rejects`) and subscribes to the
//! rejects topics of the warehouses the worker holds, following the lease set: a reject
//! published while its warehouse's worker is away waits in that worker's session (a worker
//! keeps its id across restarts). The same session sends agents the retry commands of the
//! exception queue (`Commands`), and the agent's answer settles the exception
//! (`agent_retried`).

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use stocksync_common::agent_reject::{AgentNotice, Retried, RetryOutcome, MAX_BYTES};
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use tokio::sync::watch;

use super::exceptions::{self, event_by, set_status};
use super::{now_ms, PgError, PgStore};
use crate::agent_rejects::{Commands, Consumer};
use crate::exceptions::SYSTEM;
use crate::ledger::Rejected;
use crate::store::Ingest;

/// Opens the worker's rejects session: the handle that sends commands, and the consumer.
pub fn connect(broker: &BrokerConfig, worker_id: &str) -> anyhow::Result<(Commands, Consumer)> {
    let mut broker = broker.clone();
    broker.client_id = Some(format!("stocksync-collector-{worker_id}"));
    crate::agent_rejects::connect(&broker)
}

/// Consumes the rejects of the warehouses in `owned` until `shutdown`.
pub async fn run(
    consumer: Consumer,
    store: PgStore,
    mut owned: watch::Receiver<super::leases::Owned>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Consumer { client, mut events } = consumer;
    let mut subscribed = BTreeSet::new();
    let mut connected = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            changed = owned.changed() => {
                if changed.is_err() {
                    // The lease task ended; the supervisor stops the worker.
                    std::future::pending::<()>().await;
                }
                if connected {
                    follow(&client, &owned, &mut subscribed).await?;
                }
                continue;
            }
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                subscribed.clear();
                follow(&client, &owned, &mut subscribed).await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                receive(&store, &p).await?;
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

/// Subscribes to the rejects of newly held warehouses, unsubscribes from those given up.
async fn follow(
    client: &AsyncClient,
    owned: &watch::Receiver<super::leases::Owned>,
    subscribed: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    let want: BTreeSet<String> = owned.borrow().iter().cloned().collect();
    for gone in subscribed.difference(&want) {
        client.unsubscribe(filter(gone)).await?;
    }
    for new in want.difference(subscribed) {
        client.subscribe(filter(new), QoS::AtLeastOnce).await?;
    }
    *subscribed = want;
    Ok(())
}

/// Every agent's rejects topic of `warehouse`.
fn filter(warehouse: &str) -> String {
    topics::rejects(warehouse, "+")
}

/// Stores one agent reject, or settles a retry, or keeps the publish in the rejects queue.
async fn receive(store: &PgStore, p: &Publish) -> anyhow::Result<()> {
    let (warehouse, agent, notice) = match crate::agent_rejects::check(p) {
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
            store.reject(rejected).await?;
            return Ok(());
        }
    };
    let reject = match notice {
        AgentNotice::Reject(reject) => reject,
        AgentNotice::Retried(retried) => return Ok(agent_retried(store, &agent, &retried).await?),
    };
    let conn = store.pool.get().await?;
    conn.execute(
        "INSERT INTO agent_rejects (agent_id, reject_id, received_at_ms, warehouse, arrived_at_ms,
             source, record, field, detail, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT DO NOTHING",
        &[
            &agent,
            &reject.id,
            &reject.received_at_ms,
            &warehouse,
            &now_ms(),
            &reject.source,
            &reject.record,
            &reject.field,
            &reject.detail,
            &reject.payload,
        ],
    )
    .await?;
    Ok(())
}

/// Records what an agent's retry of its reject led to, as on SQLite
/// (`exceptions::agent_retried`): resolved once the agent journaled it, open again with the
/// agent's reason otherwise.
async fn agent_retried(store: &PgStore, agent: &str, r: &Retried) -> Result<(), PgError> {
    let mut conn = store.pool.get().await?;
    let p = conn.prepared();
    let tx = conn.transaction().await?;
    let now = now_ms();
    exceptions::sync(&tx, &p, now).await?;
    let key = format!("{agent}/{}/{}", r.id, r.received_at_ms);
    let row = tx
        .query_opt(
            "SELECT exception_id FROM exception_sources WHERE origin = 'agent_rejects' AND origin_key = $1",
            &[&key],
        )
        .await?;
    let Some(id) = row.map(|r| r.get::<_, String>(0)) else {
        tracing::warn!(%agent, reject = r.id, "retry outcome for a reject the collector does not hold");
        return Ok(());
    };
    let done = matches!(
        r.outcome,
        RetryOutcome::Applied | RetryOutcome::AlreadyApplied
    );
    if done {
        tx.execute(
            "UPDATE exception_sources SET open = false WHERE origin = 'agent_rejects' AND origin_key = $1",
            &[&key],
        )
        .await?;
        let open: i64 = tx
            .query_one(
                "SELECT count(*) FROM exception_sources WHERE exception_id = $1 AND open",
                &[&id],
            )
            .await?
            .get(0);
        let comment = format!("agent {agent} journaled reject {}: {}", r.id, r.detail);
        let status = if open == 0 { "resolved" } else { "retrying" };
        set_status(&tx, &p, &id, status, now).await?;
        event_by(&tx, &p, &id, (now, "retried", SYSTEM), Some(&comment)).await?;
    } else {
        set_status(&tx, &p, &id, "open", now).await?;
        tx.execute(
            "UPDATE exceptions SET reason = $2 WHERE id = $1",
            &[&id, &r.detail],
        )
        .await?;
        let comment = format!("still refused by agent {agent}: {}", r.detail);
        event_by(&tx, &p, &id, (now, "retry failed", SYSTEM), Some(&comment)).await?;
    }
    tx.commit().await?;
    Ok(())
}
