//! Alerts: the few conditions someone must be told about without looking, each announced
//! once when it starts and once when it clears.
//!
//! `rules` evaluates the conditions (the daily report's own checks, so an alert and a report
//! line always agree); `state` turns the set of holding conditions into transitions kept in
//! the ledger's file (`alerts`, `alert_deliveries`): a condition already firing fires no
//! second time, a firing alert whose condition no longer holds is cleared. `deliver` sends
//! every transition to the signed webhook and the MQTT topic `stocksync/v1/alerts/<rule>`,
//! retrying on the next evaluation until each destination took it, so a webhook outage
//! delays an alert but never loses it.

mod config;
mod deliver;
pub mod rules;
mod state;

use std::sync::Arc;
use std::time::Duration;

use stocksync_common::catalog::Catalog;
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::metrics::Counter;

pub use config::{AlertWebhookConfig, OperationsConfig};
pub use deliver::Deliver;
pub use rules::Condition;
pub use state::{delivery_body, ended, firing_by_rule, list, Pending, Stored};

/// Counts of the evaluation loop, for `GET /v1/alerts` and `/metrics`.
#[derive(Default)]
pub struct AlertStats {
    pub evaluations: Counter,
    pub delivery_failures: Counter,
}

/// Evaluates the rules every `evaluate_every_ms` until `shutdown`.
pub async fn run(
    ops: OperationsConfig,
    ledger: Ledger,
    catalog: Arc<Catalog>,
    mut out: Deliver,
    stats: Arc<AlertStats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(Duration::from_millis(ops.evaluate_every_ms.max(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {}
        }
        let now = stocksync_common::OccurredAt::now().unix_ms;
        ledger
            .write(move |tx, _| crate::exceptions::sync(tx, now))
            .await?;
        let conditions = {
            let (ops, catalog) = (ops.clone(), catalog.clone());
            ledger.read(move |c| {
                let today = crate::report::day_start_ms(&crate::report::date_of(now)).unwrap_or(0);
                let facts = crate::report::sqlite::facts(c, &catalog, today, now)?;
                Ok(rules::evaluate(&facts, &ops, &catalog, now))
            })?
        };
        ledger
            .write(move |tx, _| state::apply(tx, &conditions, now))
            .await?;
        let pending = ledger.read(state::pending)?;
        for d in pending {
            let outcome = out.send(&d).await;
            let done = (outcome.webhook, outcome.mqtt);
            ledger
                .write(move |tx, _| state::delivered(tx, d.id, done))
                .await?;
            if let Some(e) = outcome.error {
                stats.delivery_failures.inc();
                tracing::warn!(alert = d.alert_id, error = %e, "alert delivery failed; retried");
                ledger
                    .write(move |tx, _| state::failed(tx, d.id, &e))
                    .await?;
            }
        }
        stats.evaluations.inc();
    }
}
