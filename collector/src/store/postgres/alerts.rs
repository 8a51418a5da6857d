//! Alerts on PostgreSQL: the SQLite collector's rules (`alerts::rules`, on the report's
//! facts) and transitions (`alerts::ended`), kept in the shared database, delivered by the
//! same `alerts::Deliver`.
//!
//! Every worker runs the loop, but a round runs only on the worker that holds the alert
//! lock (a session-level advisory lock taken with `pg_try_advisory_lock` for the round and
//! given back after it; a worker that dies gives it back with its connection). So a
//! transition is decided once and sent by one worker at a time; each destination is marked
//! done as it takes it, so the next round (on whichever worker) sends only what is left.

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::OperationsConfig;
use serde_json::{json, Value};
use stocksync_common::catalog::Catalog;
use tokio::sync::watch;
use tokio_postgres::{GenericClient, Transaction};

use super::{now_ms, PgError, Pool};
use crate::alerts::{delivery_body, ended, rules, Condition, Deliver, Pending, Stored};

/// Only alert rounds take it.
const ALERTS_LOCK: i64 = 0x5354_4f43_4b41_4c52;

/// Evaluates the rules every `evaluate_every_ms` until `shutdown`; a failed round is logged
/// and the next one tries again (a transition not delivered stays pending).
pub async fn run(
    pool: Pool,
    ops: OperationsConfig,
    catalog: Arc<Catalog>,
    mut out: Deliver,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(Duration::from_millis(ops.evaluate_every_ms.max(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {}
        }
        if let Err(e) = round(&pool, &ops, &catalog, &mut out).await {
            tracing::warn!(error = %e, "alert round failed; tried again");
        }
    }
}

/// One round, if this worker gets the alert lock.
async fn round(
    pool: &Pool,
    ops: &OperationsConfig,
    catalog: &Catalog,
    out: &mut Deliver,
) -> Result<(), PgError> {
    let mut conn = pool.get().await?;
    let locked: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1)", &[&ALERTS_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(());
    }
    let result = locked_round(&mut conn, ops, catalog, out).await;
    conn.execute("SELECT pg_advisory_unlock($1)", &[&ALERTS_LOCK])
        .await?;
    result
}

async fn locked_round(
    conn: &mut super::pool::Conn,
    ops: &OperationsConfig,
    catalog: &Catalog,
    out: &mut Deliver,
) -> Result<(), PgError> {
    let now = now_ms();
    let today = crate::report::day_start_ms(&crate::report::date_of(now)).unwrap_or(0);
    let p = conn.prepared();
    let tx = conn.transaction().await?;
    super::exceptions::sync(&tx, &p, now).await?;
    let facts = super::report::facts(&tx, catalog, today, now).await?;
    apply(&tx, &rules::evaluate(&facts, ops, catalog, now), now).await?;
    tx.commit().await?;
    for d in pending(&**conn).await? {
        let outcome = out.send(&d).await;
        conn.execute(
            "UPDATE alert_deliveries SET webhook_done = webhook_done OR $2, mqtt_done = mqtt_done OR $3
             WHERE id = $1",
            &[&d.id, &outcome.webhook, &outcome.mqtt],
        )
        .await?;
        if let Some(e) = outcome.error {
            tracing::warn!(alert = d.alert_id, error = %e, "alert delivery failed; retried");
            conn.execute(
                "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                &[&d.id, &e],
            )
            .await?;
        }
    }
    conn.execute(
        "INSERT INTO alert_evaluations (name, evaluations) VALUES ('rules', 1)
         ON CONFLICT (name) DO UPDATE SET evaluations = alert_evaluations.evaluations + 1",
        &[],
    )
    .await?;
    Ok(())
}

/// Fires alerts for new conditions and clears those whose condition ended.
async fn apply(tx: &Transaction<'_>, holding: &[Condition], now: i64) -> Result<(), PgError> {
    let firing: Vec<(i64, String, String)> = tx
        .query(
            "SELECT id, rule, subject FROM alerts WHERE cleared_at_ms IS NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for id in ended(&firing, holding) {
        tx.execute(
            "UPDATE alerts SET cleared_at_ms = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        transition(tx, id, "cleared", now).await?;
    }
    for c in holding {
        let inserted = tx
            .query_opt(
                "INSERT INTO alerts (rule, subject, detail, fired_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (rule, subject) WHERE cleared_at_ms IS NULL DO NOTHING RETURNING id",
                &[&c.rule, &c.subject, &c.detail.to_string(), &now],
            )
            .await?;
        if let Some(row) = inserted {
            transition(tx, row.get(0), "firing", now).await?;
        }
    }
    Ok(())
}

async fn transition(
    tx: &Transaction<'_>,
    alert_id: i64,
    state: &str,
    now: i64,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO alert_deliveries (alert_id, state, at_ms) VALUES ($1, $2, $3)",
        &[&alert_id, &state, &now],
    )
    .await?;
    Ok(())
}

/// Transitions not yet taken by every destination, oldest first.
async fn pending(c: &impl GenericClient) -> Result<Vec<Pending>, PgError> {
    let rows = c
        .query(
            "SELECT d.id, a.id, a.rule, a.subject, a.detail, d.state, d.at_ms, a.fired_at_ms, d.webhook_done, d.mqtt_done
             FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
             WHERE NOT d.webhook_done OR NOT d.mqtt_done ORDER BY d.id LIMIT 100",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let alert = Stored {
                id: r.get(1),
                rule: r.get(2),
                subject: r.get(3),
                detail: r.get(4),
                fired_at_ms: r.get(7),
                cleared_at_ms: None,
                undelivered: 0,
            };
            Pending {
                id: r.get(0),
                alert_id: alert.id,
                rule: alert.rule.clone(),
                webhook_done: r.get(8),
                mqtt_done: r.get(9),
                body: delivery_body(&alert, r.get(5), r.get(6)),
            }
        })
        .collect())
}

/// `{firing, recent, evaluations}`: firing alerts, the `recent` newest cleared ones, and the
/// rounds run so far by every worker.
pub async fn list(c: &impl GenericClient, recent: i64) -> Result<Value, PgError> {
    const COLUMNS: &str = "id, rule, subject, detail, fired_at_ms, cleared_at_ms,
        (SELECT count(*) FROM alert_deliveries d WHERE d.alert_id = alerts.id AND (NOT d.webhook_done OR NOT d.mqtt_done))";
    let firing = c
        .query(
            &format!("SELECT {COLUMNS} FROM alerts WHERE cleared_at_ms IS NULL ORDER BY id"),
            &[],
        )
        .await?;
    let cleared = c
        .query(
            &format!("SELECT {COLUMNS} FROM alerts WHERE cleared_at_ms IS NOT NULL ORDER BY cleared_at_ms DESC, id DESC LIMIT $1"),
            &[&recent],
        )
        .await?;
    let stored = |rows: &[tokio_postgres::Row]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                Stored {
                    id: r.get(0),
                    rule: r.get(1),
                    subject: r.get(2),
                    detail: r.get(3),
                    fired_at_ms: r.get(4),
                    cleared_at_ms: r.get(5),
                    undelivered: r.get(6),
                }
                .json()
            })
            .collect()
    };
    let evaluations: i64 = c
        .query_opt(
            "SELECT evaluations FROM alert_evaluations WHERE name = 'rules'",
            &[],
        )
        .await?
        .map_or(0, |r| r.get(0));
    Ok(json!({
        "firing": stored(&firing),
        "recent": stored(&cleared),
        "evaluations": evaluations,
    }))
}

/// The alert figures of `/metrics` (as the SQLite collector's): firing alerts per rule,
/// transitions not yet taken by every destination, rounds evaluated by all workers.
pub async fn metrics(c: &impl GenericClient) -> Result<String, PgError> {
    use std::fmt::Write;
    let mut out = String::from(
        "# HELP stocksync_alerts_firing Firing alerts by rule\n# TYPE stocksync_alerts_firing gauge\n",
    );
    for r in c
        .query(
            "SELECT rule, count(*) FROM alerts WHERE cleared_at_ms IS NULL GROUP BY rule ORDER BY rule",
            &[],
        )
        .await?
    {
        let _ = writeln!(out, "stocksync_alerts_firing{{rule=\"{}\"}} {}", r.get::<_, &str>(0), r.get::<_, i64>(1));
    }
    let pending: i64 = c
        .query_one(
            "SELECT count(*) FROM alert_deliveries WHERE NOT webhook_done OR NOT mqtt_done",
            &[],
        )
        .await?
        .get(0);
    let _ = writeln!(out, "# HELP stocksync_alert_deliveries_pending Alert transitions not yet taken by every destination\n# TYPE stocksync_alert_deliveries_pending gauge\nstocksync_alert_deliveries_pending {pending}");
    let evaluations = list(c, 0).await?["evaluations"].as_i64().unwrap_or(0);
    let _ = writeln!(out, "# HELP stocksync_alert_evaluations_total Evaluations of the alert rules (all workers)\n# TYPE stocksync_alert_evaluations_total counter\nstocksync_alert_evaluations_total {evaluations}");
    Ok(out)
}

/// [`metrics`] on a connection of `pool`; empty (and logged) when the database does not answer.
pub async fn metrics_text(pool: &Pool) -> String {
    let text = match pool.get().await {
        Ok(conn) => metrics(&*conn).await,
        Err(e) => Err(e.into()),
    };
    text.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "alert metrics unavailable");
        String::new()
    })
}
