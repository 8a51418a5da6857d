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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use stocksync_common::config::{BrokerConfig, ForwardConfig};
use stocksync_common::{topics, wire};
use tokio::sync::watch;

use crate::catalog::CatalogHandle;
use crate::journal::Journal;

/// Broker connection state, shared with the status endpoint.
#[derive(Default)]
pub struct LinkState {
    pub connected: AtomicBool,
    /// Broker sessions opened since start (a jump means something took the session over).
    pub connects: std::sync::atomic::AtomicU64,
    /// Why the broker last refused or dropped the connection, until it is up again.
    error: std::sync::Mutex<Option<String>>,
}

impl LinkState {
    /// The reason the broker link is down, if the broker said one.
    pub fn last_error(&self) -> Option<String> {
        self.error.lock().expect("link lock").clone()
    }

    /// Records `reason`; returns true when it differs from the one recorded before.
    fn set_error(&self, reason: Option<String>) -> bool {
        let mut error = self.error.lock().expect("link lock");
        let changed = *error != reason;
        *error = reason;
        changed
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
        let opts = stocksync_common::mqtt::options(
            &self.broker,
            &format!("stocksync-agent-{}", self.agent_id),
            true,
        )?;
        let (client, mut events) =
            AsyncClient::new(opts, self.config.max_inflight_batches * 2 + 16);
        events.set_network_options(stocksync_common::mqtt::network_options());
        let ack_topic = topics::acks(&self.warehouse, &self.agent_id);
        let data_topic = topics::movements(&self.warehouse);
        let mut state = Cursor::default();
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
                        self.link.set_error(None);
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
                        self.on_ack(&p.payload, &mut state).await;
                        self.fill(&client, &data_topic, &mut state).await?;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if self.link.connected.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "forwarder lost the broker; journaling continues");
                        }
                        if let rumqttc::ConnectionError::ConnectionRefused(code) = &e {
                            let reason = format!("broker {}:{} refused the login: {code:?}", self.broker.host, self.broker.port);
                            if self.link.set_error(Some(reason.clone())) {
                                tracing::error!(%reason, "forwarder cannot log in; journaling continues");
                            }
                        }
                        reconnect_pause(&mut events, &mut shutdown).await;
                    }
                },
                _ = self.journal.appended() => {
                    self.fill(&client, &data_topic, &mut state).await?;
                }
                _ = tick.tick() => {
                    if state.oldest_sent().is_some_and(|t| t.elapsed() > timeout) {
                        tracing::warn!("no ack within {timeout:?}; resending unacknowledged movements");
                        state.rewind();
                    }
                    self.fill(&client, &data_topic, &mut state).await?;
                }
            }
        }
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
            let rows = tokio::task::block_in_place(|| journal.unacked_after(after, limit))?;
            let (Some(first), Some(last)) = (rows.first().map(|r| r.0), rows.last().map(|r| r.0))
            else {
                break;
            };
            let payload = wire::encode_batch_from_parts(
                &self.agent_id,
                self.journal.journal_id(),
                &self.warehouse,
                stocksync_common::input::now().unix_ms,
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

    async fn on_ack(&self, payload: &[u8], state: &mut Cursor) {
        let ack = match wire::decode_ack(payload) {
            Ok(ack) => ack,
            Err(e) => {
                tracing::error!(error = %e, "unreadable ack from the collector; ignored, batch will be resent");
                return;
            }
        };
        let outcome = match &ack.outcome {
            wire::AckOutcome::Applied { .. } => "applied".to_string(),
            wire::AckOutcome::Rejected { reason } => {
                tracing::error!(first = ack.first_seq, last = ack.last_seq, %reason, "collector rejected a batch");
                format!("rejected: {reason}")
            }
        };
        match self.journal.ack(ack.first_seq, ack.last_seq, outcome).await {
            Ok(_) => {
                state.in_flight.remove(&ack.first_seq);
            }
            Err(e) => tracing::error!(error = %e, "cannot record ack; batch will be resent"),
        }
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

/// What has been sent and not yet acknowledged.
#[derive(Default)]
struct Cursor {
    /// Highest seq published on the current connection.
    sent_up_to: u64,
    /// Batches awaiting their ack, by first seq.
    in_flight: BTreeMap<u64, InFlight>,
}

impl Cursor {
    fn rewind(&mut self) {
        self.sent_up_to = 0;
        self.in_flight.clear();
    }

    fn oldest_sent(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.sent).min()
    }
}
