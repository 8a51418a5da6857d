//! Movements from handheld scanners, as JSON on a topic of a (usually local) MQTT broker.
//!
//! Scanners publish at least once, so a movement may arrive twice; a scanner that sets `id`
//! on its movements is deduplicated by the journal. A message that fails validation, claims
//! a source this input may not speak for, or reuses an id for other content is kept in the
//! rejects queue with its input path (`scanner:<topic>`) as the source: a scanner has no
//! one listening for a 422, so the queue is the only place the error can be seen.
//!
//! Poison cannot wedge this input: a message above the packet limit (`mqtt::MAX_PACKET_BYTES`,
//! or `max_body_bytes` if lower) is refused like any invalid one, and the client reads packets far larger than that
//! (`mqtt::MAX_INCOMING_BYTES`), because a client that drops the connection on a packet it
//! will not read is sent the same packet again after every reconnect. The link's state and
//! last error are in `/v1/status` and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::input::{self, ClockRule, Context, InputError};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use serde::Deserialize;
use stocksync_common::config::BrokerConfig;
use stocksync_runtime::mqtt::LinkErrors;
use tokio::sync::watch;

use super::epcis::EpcisConfig;
use super::epcis::{DocumentError, EpcisInput};
use crate::catalog::CatalogHandle;
use crate::config::SourceBinding;
use crate::forward::LinkState;
use crate::journal::{Journal, JournalError, Reject};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// The broker the scanners publish to (often a local one in the warehouse).
    pub broker: BrokerConfig,
    /// Topic filter the scanners publish JSON movements on.
    pub topic: String,
    /// Source system assumed for scanner records that name none.
    pub default_source: String,
    /// Sources scanner records may claim; empty means only `default_source`.
    pub sources: Vec<String>,
    /// Topic filter scanners publish GS1 EPCIS 2.0 documents on (journaled under
    /// `default_source`, with the `[epcis]` rules); none by default.
    pub epcis_topic: Option<String>,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            broker: BrokerConfig::default(),
            topic: "scanners/+/movements".into(),
            default_source: "scanner".into(),
            sources: Vec::new(),
            epcis_topic: None,
        }
    }
}

/// What the scanner input needs.
pub struct ScannerInput {
    pub agent_id: String,
    pub warehouse: String,
    pub max_batch: usize,
    /// Largest message journaled; larger ones are refused.
    pub max_message_bytes: usize,
    /// The sources scanner messages may claim (by default only `scanner`).
    pub sources: SourceBinding,
    pub clock: ClockRule,
    pub config: ScannerConfig,
    pub journal: Journal,
    pub catalog: Arc<CatalogHandle>,
    pub link: Arc<LinkState>,
    /// Rules and limits for EPCIS documents on `config.epcis_topic`.
    pub epcis: EpcisConfig,
}

impl ScannerInput {
    /// Subscribes to the scanner topic and journals what arrives, until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut opts = stocksync_runtime::mqtt::options(
            &self.config.broker,
            &format!("stocksync-agent-{}-scanners", self.agent_id),
            false,
        )?;
        // PUBACK only after the journal commit: a crash before it makes the broker redeliver.
        opts.set_manual_acks(true);
        let (client, mut events) = AsyncClient::new(opts, 64);
        events.set_network_options(stocksync_runtime::mqtt::network_options());
        let mut errors = LinkErrors::default();
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(topic = %self.config.topic, "scanner input connected");
                    self.link.connected.store(true, Ordering::Relaxed);
                    errors.clear();
                    client
                        .subscribe(&self.config.topic, QoS::AtLeastOnce)
                        .await?;
                    if let Some(topic) = &self.config.epcis_topic {
                        client.subscribe(topic, QoS::AtLeastOnce).await?;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if self.is_epcis(&p) => {
                    match self.store_epcis(&p).await {
                        Ok(()) => client.ack(&p).await?,
                        // Not acked: the broker redelivers it; its eventIDs make that safe.
                        Err(e) => {
                            tracing::error!(error = %e, "EPCIS scanner message not journaled")
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => match self.store(&p).await {
                    Ok(()) => client.ack(&p).await?,
                    // Not acked: the broker redelivers it after reconnect.
                    Err(e) => tracing::error!(error = %e, "scanner message not journaled"),
                },
                Ok(_) => {}
                Err(e) => {
                    self.link.down("scanner input", &mut errors, &e);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        Ok(())
    }

    fn is_epcis(&self, p: &Publish) -> bool {
        let filter = self.config.epcis_topic.as_deref();
        filter.is_some_and(|f| rumqttc::matches(&p.topic, f))
    }

    /// An EPCIS document, per event like `POST /v1/epcis/events`, under this input's
    /// default source; refusals are in the rejects queue, only a journal failure is an error.
    async fn store_epcis(&self, p: &Publish) -> Result<(), JournalError> {
        let path = format!("scanner:{}", p.topic);
        let config = EpcisConfig {
            source: self.sources.default_source.clone(),
            max_events: self.epcis.max_events,
            rules: self.epcis.rules.clone(),
        };
        let input = EpcisInput {
            journal: &self.journal,
            catalog: &self.catalog,
            warehouse: &self.warehouse,
            config: &config,
            reject_source: path.clone(),
            input: path,
            clock: self.clock,
        };
        match input.process(&p.payload).await {
            Ok(answer) if answer.failed > 0 => Err(JournalError::Aborted(format!(
                "{} events not journaled",
                answer.failed
            ))),
            Ok(_) | Err(DocumentError::Malformed(_) | DocumentError::Invalid(_)) => Ok(()),
            Err(DocumentError::Journal(e)) => Err(e),
        }
    }

    /// Journals one message, or keeps it in the rejects queue with the reason.
    async fn store(&self, p: &Publish) -> Result<(), JournalError> {
        // The input path: recorded in each movement's origin and in its rejects.
        let path = format!("scanner:{}", p.topic);
        let parsed = if p.payload.len() > self.max_message_bytes {
            Err(InputError {
                record: None,
                field: "$".into(),
                detail: format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    p.payload.len(),
                    self.max_message_bytes
                ),
            })
        } else {
            let units = self.catalog.current();
            let ctx = Context {
                warehouse: &self.warehouse,
                default_source: &self.sources.default_source,
                now: input::now(),
                max_batch: self.max_batch,
                units: &*units,
                input: &path,
                sources: &self.sources.sources,
                validated: !units.is_open(),
                clock: self.clock,
            };
            input::parse_body(&p.payload, &ctx)
        };
        let error = match parsed {
            Ok(movements) => match self.journal.append(movements, None).await {
                Ok(_) => return Ok(()),
                // A reused id with other content: nobody reads an answer here, so the
                // rejects queue is where the conflict shows.
                Err(e) => e.refusal(starts_with_array(&p.payload))?,
            },
            Err(error) => error,
        };
        tracing::warn!(topic = %p.topic, %error, "scanner message refused");
        self.journal
            .reject(Reject {
                source: path,
                error,
                payload: p.payload.to_vec(),
            })
            .await
    }
}

fn starts_with_array(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}
