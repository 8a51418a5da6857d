//! Forwarding the records this agent refused to the collector, so the central team sees
//! every warehouse's refusals in one queue (the agent keeps its own copy, `GET /v1/rejects`);
//! and taking the collector's retry commands for them.
//!
//! One reject at a time on its own broker session, QoS 1: a reject is marked forwarded in
//! the journal only once the broker acknowledged its publish, so one refused while the
//! broker is away, or before a crash, is sent later; a resend is harmless because the
//! collector keys each by `(agent, id, received_at_ms)`. The movement forwarder's session is
//! left alone: a burst of rejects never delays a batch.
//!
//! A retry command (`stocksync/v1/<warehouse>/commands/<agent>`) runs the same retry as
//! `POST /v1/rejects/<id>/retry` (exactly once, keyed by the reject) and its outcome goes
//! back on the rejects topic. The session is persistent, so a command sent while this agent
//! is away is delivered when it is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use stocksync_common::agent_reject::{
    AgentNotice, AgentReject, Retried, RetryCommand, RetryOutcome,
};
use stocksync_common::topics;
use tokio::sync::watch;

use crate::ingest::retry::{self, Outcome};
use crate::journal::StoredReject;
use crate::App;

/// How often the journal is looked at for new rejects.
const POLL: Duration = Duration::from_millis(500);
/// A publish not acknowledged within this is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// The reject on its way: its id, the packet id once known, when it was sent.
struct InFlight {
    id: i64,
    pkid: Option<u16>,
    sent: Instant,
}

/// Forwards rejects and answers retry commands until `shutdown`.
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (agent_id, warehouse) = (&app.config.agent_id, &app.config.warehouse);
    let mut broker = app.config.broker.clone();
    let base = broker
        .client_id
        .clone()
        .unwrap_or_else(|| format!("stocksync-agent-{agent_id}"));
    broker.client_id = Some(format!("{base}-rejects"));
    let opts = stocksync_runtime::mqtt::options(&broker, &base, false)?;
    let (client, mut events) = AsyncClient::new(opts, 16);
    events.set_network_options(stocksync_runtime::mqtt::network_options());
    let topic = topics::rejects(warehouse, agent_id);
    let commands = topics::commands(warehouse, agent_id);
    let (mut connected, mut in_flight) = (false, None::<InFlight>);
    // Publishes of retry outcomes whose packet ids are not the in-flight reject's: outgoing
    // events come in the order the publishes were made.
    let mut others: usize = 0;
    let mut tick = tokio::time::interval(POLL);
    let mut read_failing = false;
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
                    (connected, in_flight, others) = (true, None, 0);
                    client.subscribe(&commands, QoS::AtLeastOnce).await?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == commands => {
                    let answer = match command(&app, &p.payload).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            // Unanswered: the collector's queue shows the reject as retrying
                            // until an operator retries it again.
                            tracing::error!(error = %e, "cannot run the collector's retry command");
                            None
                        }
                    };
                    if let Some(answer) = answer {
                        client.publish(&topic, QoS::AtLeastOnce, false, answer.encode()).await?;
                        others += 1;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if others > 0 {
                        others -= 1;
                    } else if let Some(f) = in_flight.as_mut().filter(|f| f.pkid.is_none()) {
                        f.pkid = Some(pkid);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(f) = in_flight.take_if(|f| f.pkid == Some(ack.pkid)) {
                        // Returns after the commit: the next read no longer sees it. Not
                        // marked, it is sent again, which the collector deduplicates.
                        if let Err(e) = app.journal.reject_forwarded(f.id).await {
                            tracing::error!(error = %e, reject = f.id, "cannot mark a reject forwarded; it will be sent again");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "reject forwarder lost the broker; retrying");
                    }
                    (connected, in_flight, others) = (false, None, 0);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            },
        }
        if connected && in_flight.is_none() {
            // A journal that cannot be read ends nothing: the next tick reads again.
            match send_next(&app, &client, &topic).await {
                Ok(sent) => {
                    in_flight = sent;
                    if std::mem::take(&mut read_failing) {
                        tracing::info!("journal readable again; forwarding rejects resumes");
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut read_failing, true) {
                        tracing::error!(error = %e, "cannot read rejects to forward; retrying");
                    }
                }
            }
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}

/// Publishes the oldest reject not yet forwarded, if there is one.
async fn send_next(
    app: &App,
    client: &AsyncClient,
    topic: &str,
) -> anyhow::Result<Option<InFlight>> {
    let Some(r) = app.journal.unforwarded_rejects(1)?.into_iter().next() else {
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

/// Runs one command from the collector; the answer to publish. A command that does not
/// decode is logged and dropped (only the collector may publish here, by the broker's ACL).
async fn command(app: &App, payload: &[u8]) -> anyhow::Result<Option<AgentNotice>> {
    let RetryCommand::RetryReject { id, received_at_ms } = match serde_json::from_slice(payload) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "command from the collector does not decode; dropped");
            return Ok(None);
        }
    };
    let (outcome, detail) = match retry::retry(app, id, Some(received_at_ms)).await? {
        Outcome::Journaled(a) => (
            if a.replayed {
                RetryOutcome::AlreadyApplied
            } else {
                RetryOutcome::Applied
            },
            format!("seqs {:?}..={:?}", a.first_seq, a.last_seq),
        ),
        Outcome::StillRefused(e) => (RetryOutcome::StillRefused, e.to_string()),
        Outcome::NotRetryable(why) => (RetryOutcome::NotRetryable, why),
        Outcome::Unknown => (
            RetryOutcome::NotRetryable,
            format!("this agent holds no reject {id} received at {received_at_ms}"),
        ),
    };
    tracing::info!(reject = id, ?outcome, "retried a reject for the collector");
    Ok(Some(AgentNotice::Retried(Retried {
        id,
        received_at_ms,
        outcome,
        detail,
    })))
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
