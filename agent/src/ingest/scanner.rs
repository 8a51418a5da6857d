//! Movements from handheld scanners, as JSON on a topic of a (usually local) MQTT broker.
//!
//! Scanners publish at least once, so a movement may arrive twice; a scanner that sets `id`
//! on its movements is deduplicated by the journal. A message that fails validation is kept
//! in the rejects queue with its topic as the source: a scanner has no one listening for a
//! 422, so the queue is the only place the error can be seen.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use stocksync_common::config::{ScannerConfig, SourceBinding};
use stocksync_common::input::{self, ClockRule, Context};
use tokio::sync::watch;

use crate::catalog::CatalogHandle;
use crate::journal::{Journal, JournalError, Reject};

/// The scanner input: where it listens and what it may speak for.
pub struct Scanner {
    pub agent_id: String,
    pub warehouse: String,
    pub max_batch: usize,
    /// The sources scanner messages may claim (by default only `scanner`).
    pub sources: SourceBinding,
    pub clock: ClockRule,
    pub config: ScannerConfig,
    pub journal: Journal,
    pub catalog: Arc<CatalogHandle>,
}

impl Scanner {
    /// Subscribes to the scanner topic and journals what arrives, until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut opts = stocksync_common::mqtt::options(
            &self.config.broker,
            &format!("stocksync-agent-{}-scanners", self.agent_id),
            false,
        )?;
        // PUBACK only after the journal commit: a crash before it makes the broker redeliver.
        opts.set_manual_acks(true);
        let (client, mut events) = AsyncClient::new(opts, 64);
        events.set_network_options(stocksync_common::mqtt::network_options());
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(&self.config.topic, QoS::AtLeastOnce)
                        .await?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => match self.store(&p).await {
                    Ok(()) => client.ack(&p).await?,
                    // Not acked: the broker redelivers it after reconnect.
                    Err(e) => tracing::error!(error = %e, "scanner message not journaled"),
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "scanner broker unreachable");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Ok(())
    }

    /// Journals one message, or keeps it in the rejects queue with the reason.
    async fn store(&self, p: &Publish) -> Result<(), JournalError> {
        let units = self.catalog.current();
        let path = format!("scanner:{}", p.topic);
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
        let error = match input::parse_body(&p.payload, &ctx) {
            Ok(movements) => match self.journal.append(movements, None).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let array = p.payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
                    e.refusal(array)?
                }
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
