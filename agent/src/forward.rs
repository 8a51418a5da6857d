//! Forwarding the journal to the collector, and forgetting nothing until the collector says
//! its own commit is on disk. The same connection receives the retained catalog.
//!
//! The broker's PUBACK only means the broker has the message; a broker restart or a
//! collector crash can still lose it. So a movement leaves the backlog only when the
//! collector's application-level ack for its batch arrives. Until then it is resent: after a
//! reconnect, after a restart (the cursor starts from the journal), and when the oldest batch
//! in flight waited longer than `ack_timeout_ms`. Resends are safe because the collector
//! deduplicates by `(agent_id, seq)`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde::Deserialize;
use stocksync_common::config::BrokerConfig;
use stocksync_common::{topics, wire};
use stocksync_runtime::mqtt::LinkErrors;
use tokio::sync::watch;

use crate::catalog::CatalogHandle;
use crate::journal::Journal;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Most movements in one published batch (fewer when they would not fit one MQTT packet).
    /// The collector applies each batch in a savepoint of its own, and a savepoint copies
    /// every page it touches: 2000 per batch drained a backlog ~30% faster than 500.
    pub batch_max: usize,
    /// Batches published but not yet acknowledged by the collector.
    pub max_inflight_batches: usize,
    /// Resend everything unacknowledged when the oldest batch waited this long for its ack.
    pub ack_timeout_ms: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            batch_max: 2000,
            max_inflight_batches: 16,
            ack_timeout_ms: 10_000,
        }
    }
}

/// A broker connection's state, shared with the status endpoint (the forwarder's link and
/// the scanner input's each have one).
#[derive(Default)]
pub struct LinkState {
    pub connected: AtomicBool,
    /// Broker sessions opened since start (a jump means something took the session over).
    pub connects: AtomicU64,
    /// The last connection error (a refused login names its reason); kept after reconnecting.
    pub last_error: Mutex<Option<String>>,
    /// Acks ignored because they matched no batch this agent sent and has not seen acked
    /// (a forged or misrouted ack must not mark anything acknowledged).
    pub acks_ignored: AtomicU64,
}

impl LinkState {
    /// Records a connection error; logs it when it is new (a refused login at error level).
    pub fn down(&self, link: &str, errors: &mut LinkErrors, e: &rumqttc::ConnectionError) {
        self.connected.store(false, Ordering::Relaxed);
        let (text, new) = errors.record(e);
        if new {
            if matches!(e, rumqttc::ConnectionError::ConnectionRefused(_)) {
                tracing::error!(link, error = %text, "broker refused the connection; check credentials and ACL");
            } else {
                tracing::warn!(link, error = %text, "broker link down; retrying");
            }
        }
        *self.last_error.lock().expect("link lock") = Some(text);
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("link lock").clone()
    }
}

/// Everything the forwarder needs.
pub struct Forwarder {
    pub agent_id: String,
    pub warehouse: String,
    pub broker: BrokerConfig,
    pub config: ForwardConfig,
    pub journal: Journal,
    pub link: Arc<LinkState>,
    /// Where the catalog received on this connection goes.
    pub catalog: Arc<CatalogHandle>,
}

struct InFlight {
    sent: Instant,
}

impl Forwarder {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let opts = stocksync_runtime::mqtt::options(
            &self.broker,
            &format!("stocksync-agent-{}", self.agent_id),
            true,
        )?;
        let (client, mut events) =
            AsyncClient::new(opts, self.config.max_inflight_batches * 2 + 16);
        events.set_network_options(stocksync_runtime::mqtt::network_options());
        let ack_topic = topics::acks(&self.warehouse, &self.agent_id);
        let data_topic = topics::movements(&self.warehouse);
        let mut state = Cursor::default();
        let mut errors = LinkErrors::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let timeout = Duration::from_millis(self.config.ack_timeout_ms);
        // A change seen inside `reconnect_pause` is not seen again by `changed()`: check the value.
        while !*shutdown.borrow() {
            tokio::select! {
                _ = shutdown.changed() => break,
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(broker = %self.broker.host, "forwarder connected");
                        self.link.connected.store(true, Ordering::Relaxed);
                        self.link.connects.fetch_add(1, Ordering::Relaxed);
                        errors.clear();
                        client.subscribe(&ack_topic, QoS::AtLeastOnce).await?;
                        client.subscribe(topics::CATALOG, QoS::AtLeastOnce).await?;
                        // Whatever was in flight on the old connection may be lost: resend all.
                        state.rewind();
                        self.fill(&client, &data_topic, &mut state).await?;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics::CATALOG => {
                        self.on_catalog(&p.payload);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => {
                        self.on_ack(&p.payload, &mut state).await?;
                        self.fill(&client, &data_topic, &mut state).await?;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.link.down("forwarder (journaling continues)", &mut errors, &e);
                        reconnect_pause(&mut events, &mut shutdown).await;
                    }
                },
                _ = self.journal.appended() => {
                    self.fill(&client, &data_topic, &mut state).await?;
                }
                _ = tick.tick() => {
                    self.flush_watermark(&mut state);
                    if state.oldest_sent().is_some_and(|t| t.elapsed() > timeout) {
                        tracing::warn!("no ack within {timeout:?}; resending unacknowledged movements");
                        state.rewind();
                    }
                    self.fill(&client, &data_topic, &mut state).await?;
                }
            }
        }
        self.flush_watermark(&mut state);
        let _ = client.disconnect().await;
        Ok(())
    }

    /// Publishes new batches while the window has room and the broker is connected.
    async fn fill(
        &self,
        client: &AsyncClient,
        topic: &str,
        state: &mut Cursor,
    ) -> anyhow::Result<()> {
        if !self.link.connected.load(Ordering::Relaxed) {
            return Ok(());
        }
        while state.in_flight.len() < self.config.max_inflight_batches {
            let journal = self.journal.clone();
            let (after, limit) = (state.sent_up_to, self.config.batch_max);
            // A journal that cannot be read stops nothing: ingest keeps journaling (or
            // answers its own error) and the next tick reads again.
            let mut rows = match tokio::task::block_in_place(|| journal.unacked_after(after, limit))
            {
                Ok(rows) => {
                    if std::mem::take(&mut state.read_failing) {
                        tracing::info!("journal readable again; forwarding resumes");
                    }
                    rows
                }
                Err(e) => {
                    if !std::mem::replace(&mut state.read_failing, true) {
                        tracing::error!(error = %e, "cannot read the journal to forward; retrying every tick");
                    }
                    break;
                }
            };
            fit_packet(
                &mut rows,
                topic.len() + self.agent_id.len() + self.warehouse.len(),
            );
            let (Some(first), Some(last)) = (rows.first().map(|r| r.0), rows.last().map(|r| r.0))
            else {
                break;
            };
            let payload = wire::encode_batch_from_parts(
                &self.agent_id,
                self.journal.journal_id(),
                &self.warehouse,
                crate::input::now().unix_ms,
                rows.iter().map(|(_, bytes)| bytes.as_slice()),
            );
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                // The client's queue is full; the next tick tries again from the same cursor.
                break;
            }
            state.in_flight.insert(
                first,
                InFlight {
                    sent: Instant::now(),
                },
            );
            state.remember(first, last);
            state.sent_up_to = last;
        }
        Ok(())
    }

    fn on_catalog(&self, payload: &[u8]) {
        match tokio::task::block_in_place(|| self.catalog.receive(payload)) {
            Ok(true) => tracing::info!("new catalog received and stored"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "catalog from the collector refused; keeping the previous one")
            }
        }
    }

    /// Records one ack. Fails (ending the forwarder, and so the process) when the collector
    /// reports that this journal reuses seqs: nothing more may be sent or accepted under them.
    async fn on_ack(&self, payload: &[u8], state: &mut Cursor) -> anyhow::Result<()> {
        let ack = match wire::decode_ack(payload) {
            Ok(ack) => ack,
            Err(e) => {
                tracing::error!(error = %e, "unreadable ack from the collector; ignored, batch will be resent");
                return Ok(());
            }
        };
        if !state.take(ack.first_seq, ack.last_seq) {
            let ignored = self.link.acks_ignored.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                agent = %ack.agent_id,
                first = ack.first_seq,
                last = ack.last_seq,
                ignored,
                "ignored an ack for seqs this agent has not sent or already saw acknowledged"
            );
            return Ok(());
        }
        if let wire::AckOutcome::Rejected { reason } = &ack.outcome {
            if let Some((first, collector_last)) = stocksync_common::rollback::parse(reason) {
                // Not marked acknowledged: these are new movements under used seqs; they stay
                // in the journal for `accept-rollback` to renumber.
                let journal = self.journal.clone();
                tokio::task::block_in_place(|| journal.record_rollback(first, collector_last))?;
                return Err(crate::journal::JournalError::RolledBack {
                    path: self.journal.path().to_owned(),
                    detail: format!("the collector refused seq {first}: {reason}"),
                }
                .into());
            }
        }
        let outcome = match &ack.outcome {
            wire::AckOutcome::Applied { .. } => "applied".to_string(),
            wire::AckOutcome::Rejected { reason } => {
                tracing::error!(first = ack.first_seq, last = ack.last_seq, %reason, "collector rejected a batch");
                format!("rejected: {reason}")
            }
        };
        state.in_flight.remove(&ack.first_seq);
        if matches!(ack.outcome, wire::AckOutcome::Applied { .. }) {
            self.journal.record_applied(ack.last_seq);
            // The watermark file is written when the link goes idle and at most every
            // `WATERMARK_EVERY` under load, before the ack is marked (so a backlog of 0 means
            // the watermark is on file).
            if state.in_flight.is_empty() || state.watermark_due() {
                self.flush_watermark(state);
            }
        }
        // Not waited for: an fsync per ack here would stall this loop (and the MQTT link it
        // polls) behind the journal's group commits. The rows are past `sent_up_to`, so they
        // are not sent again unless the link is rewound, and a resend is deduplicated.
        if let Err(e) = self
            .journal
            .ack_queued(ack.first_seq, ack.last_seq, outcome)
            .await
        {
            tracing::error!(error = %e, "cannot record ack; batch will be resent");
        }
        Ok(())
    }

    fn flush_watermark(&self, state: &mut Cursor) {
        let journal = self.journal.clone();
        tokio::task::block_in_place(|| journal.flush_applied());
        state.watermark_at = Some(Instant::now());
    }
}

async fn reconnect_pause(events: &mut EventLoop, shutdown: &mut watch::Receiver<bool>) {
    // rumqttc reconnects on the next poll; pause so a dead broker is not hammered.
    let _ = events;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        _ = shutdown.changed() => {}
    }
}

/// Bytes of a batch's envelope besides its movements and the names passed to `fit_packet`
/// (MQTT fixed header, topic length, packet id, version and varints).
const ENVELOPE_BYTES: usize = 64;

/// Cuts `rows` so that the batch they make fits in one packet the broker accepts. At least
/// one row stays: a single movement is far below the limit (ids and texts are bounded).
fn fit_packet(rows: &mut Vec<(u64, Vec<u8>)>, names: usize) {
    let budget = stocksync_runtime::mqtt::MAX_PACKET_BYTES.saturating_sub(ENVELOPE_BYTES + names);
    let mut used = 0usize;
    let keep = rows
        .iter()
        .position(|(_, bytes)| {
            used = used.saturating_add(bytes.len());
            used > budget
        })
        .unwrap_or(rows.len())
        .max(1);
    rows.truncate(keep);
}

/// Most sent ranges remembered for matching acks; the oldest are forgotten first (their
/// movements are then resent and acked again).
const MAX_REMEMBERED: usize = 65_536;

/// What has been sent and not yet acknowledged.
#[derive(Default)]
struct Cursor {
    /// Highest seq published on the current connection.
    sent_up_to: u64,
    /// Batches awaiting their ack, by first seq.
    in_flight: BTreeMap<u64, InFlight>,
    /// Every range published since start and not yet acknowledged, first seq -> last seq.
    /// Kept across rewinds, so a late ack for a batch sent before a resend still counts;
    /// an ack that matches none of them is ignored.
    sent: BTreeMap<u64, u64>,
    /// When the applied watermark was last written.
    watermark_at: Option<Instant>,
    /// The last read of the journal failed (logged once per streak).
    read_failing: bool,
}

/// Longest the applied watermark file lags behind the acks while batches keep flowing.
const WATERMARK_EVERY: Duration = Duration::from_millis(100);

impl Cursor {
    fn watermark_due(&self) -> bool {
        self.watermark_at
            .is_none_or(|at| at.elapsed() >= WATERMARK_EVERY)
    }

    fn remember(&mut self, first: u64, last: u64) {
        self.sent.insert(first, last);
        while self.sent.len() > MAX_REMEMBERED {
            self.sent.pop_first();
        }
    }

    /// True (and forgets the range) if `first..=last` is a batch this agent sent.
    fn take(&mut self, first: u64, last: u64) -> bool {
        if self.sent.get(&first) != Some(&last) {
            return false;
        }
        self.sent.remove(&first);
        true
    }

    fn rewind(&mut self) {
        self.sent_up_to = 0;
        self.in_flight.clear();
    }

    fn oldest_sent(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.sent).min()
    }
}
