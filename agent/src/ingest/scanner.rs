//! Movements from handheld scanners, as JSON on a topic of a (usually local) MQTT broker.
//!
//! Scanners publish at least once, so a movement may arrive twice; a scanner that sets `id`
//! on its movements is deduplicated by the journal. A message that fails validation is kept
//! in the rejects queue with its topic as the source: a scanner has no one listening for a
//! 422, so the queue is the only place the error can be seen.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use stocksync_common::config::ScannerConfig;
use stocksync_common::input::{self, Context};
use stocksync_common::inputs::EpcisConfig;
use tokio::sync::watch;

use super::epcis::{DocumentError, EpcisInput};
use crate::catalog::CatalogHandle;
use crate::journal::{Journal, Reject};

/// Subscribes to the scanner topic (and the EPCIS topic) and journals what arrives, until
/// `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    agent_id: String,
    warehouse: String,
    max_batch: usize,
    config: ScannerConfig,
    journal: Journal,
    catalog: Arc<CatalogHandle>,
    epcis: EpcisConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut opts = stocksync_common::mqtt::options(
        &config.broker,
        &format!("stocksync-agent-{agent_id}-scanners"),
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
                client.subscribe(&config.topic, QoS::AtLeastOnce).await?;
                if let Some(topic) = &config.epcis_topic {
                    client.subscribe(topic, QoS::AtLeastOnce).await?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p)))
                if config
                    .epcis_topic
                    .as_deref()
                    .is_some_and(|f| rumqttc::matches(&p.topic, f)) =>
            {
                let config = EpcisConfig {
                    source: config.default_source.clone(),
                    ..epcis.clone()
                };
                let input = EpcisInput {
                    journal: &journal,
                    catalog: &catalog,
                    warehouse: &warehouse,
                    config: &config,
                    reject_source: format!("mqtt:{}", p.topic),
                };
                // Refusals are in the rejects queue; only a journal failure leaves the
                // message unacknowledged, so the broker redelivers it.
                match input.process(&p.payload).await {
                    Ok(answer) if answer.failed == 0 => client.ack(&p).await?,
                    Err(DocumentError::Malformed(_) | DocumentError::Invalid(_)) => {
                        client.ack(&p).await?
                    }
                    Ok(_) | Err(DocumentError::Journal(_)) => {
                        tracing::error!(topic = %p.topic, "EPCIS scanner message not journaled")
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let units = catalog.current();
                let ctx = Context {
                    warehouse: &warehouse,
                    default_source: &config.default_source,
                    now: input::now(),
                    max_batch,
                    units: &*units,
                };
                let stored = match input::parse_body(&p.payload, &ctx) {
                    Ok(movements) => journal.append(movements, None).await.map(|_| ()),
                    Err(error) => {
                        tracing::warn!(topic = %p.topic, %error, "scanner message refused");
                        let source = format!("mqtt:{}", p.topic);
                        journal
                            .reject(Reject {
                                source,
                                error,
                                payload: p.payload.to_vec(),
                            })
                            .await
                    }
                };
                match stored {
                    Ok(()) => client.ack(&p).await?,
                    // Not acked: the broker redelivers it after reconnect.
                    Err(e) => tracing::error!(error = %e, "scanner message not journaled"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "scanner broker unreachable");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}
