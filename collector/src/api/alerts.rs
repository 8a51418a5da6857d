//! `GET /v1/alerts`: firing alerts and recently cleared ones; and the queue and alert
//! figures for `/metrics` (every exception count by kind and status, the age of the oldest
//! open exception per kind, firing alerts per rule, undelivered alert transitions).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::Connection;
use serde::Deserialize;

use super::AppError;
use crate::App;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    recent: Option<i64>,
}

/// `GET /v1/alerts[?recent=n]`: `{firing, recent, evaluations}`.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "exceptions",
    summary = "Firing and recent alerts",
    params(AlertsQuery),
    responses(
        (status = 200, description = "{firing, recent, evaluations}", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    super::Params(q): super::Params<AlertsQuery>,
) -> Result<Response, AppError> {
    let recent = q.recent.unwrap_or(50).clamp(0, 1000);
    let mut body = app.ledger.read(|c| crate::alerts::list(c, recent))?;
    body["evaluations"] = app.alert_stats.evaluations.get().into();
    Ok(Json(body).into_response())
}

/// Prometheus text of the exception queue and the alerts.
pub fn metrics(app: &App) -> String {
    let now = stocksync_common::OccurredAt::now().unix_ms;
    let text = app.ledger.read(|c| render(c, now));
    let mut out = text.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "queue metrics unavailable");
        String::new()
    });
    let s = &app.alert_stats;
    let _ = writeln!(out, "# HELP stocksync_alert_evaluations_total Evaluations of the alert rules\n# TYPE stocksync_alert_evaluations_total counter\nstocksync_alert_evaluations_total {}", s.evaluations.get());
    let _ = writeln!(out, "# HELP stocksync_alert_delivery_failures_total Failed alert deliveries (retried)\n# TYPE stocksync_alert_delivery_failures_total counter\nstocksync_alert_delivery_failures_total {}", s.delivery_failures.get());
    out
}

fn render(c: &Connection, now: i64) -> rusqlite::Result<String> {
    let mut out = String::new();
    let summary = crate::exceptions::summary(c)?;
    let _ = writeln!(out, "# HELP stocksync_exceptions Exceptions in the queue by kind and status\n# TYPE stocksync_exceptions gauge");
    for n in &summary {
        let _ = writeln!(
            out,
            "stocksync_exceptions{{kind=\"{}\",status=\"{}\"}} {}",
            n.kind, n.status, n.count
        );
    }
    let _ = writeln!(out, "# HELP stocksync_exceptions_oldest_open_age_seconds Age of the oldest open exception by kind\n# TYPE stocksync_exceptions_oldest_open_age_seconds gauge");
    for n in summary.iter().filter(|n| n.status == "open") {
        let age = now.saturating_sub(n.oldest_first_seen_ms) / 1000;
        let _ = writeln!(
            out,
            "stocksync_exceptions_oldest_open_age_seconds{{kind=\"{}\"}} {age}",
            n.kind
        );
    }
    let _ = writeln!(out, "# HELP stocksync_alerts_firing Firing alerts by rule\n# TYPE stocksync_alerts_firing gauge");
    for (rule, n) in crate::alerts::firing_by_rule(c)? {
        let _ = writeln!(out, "stocksync_alerts_firing{{rule=\"{rule}\"}} {n}");
    }
    let pending: i64 = c.query_row(
        "SELECT count(*) FROM alert_deliveries WHERE webhook_done = 0 OR mqtt_done = 0",
        [],
        |r| r.get(0),
    )?;
    let _ = writeln!(out, "# HELP stocksync_alert_deliveries_pending Alert transitions not yet taken by every destination\n# TYPE stocksync_alert_deliveries_pending gauge\nstocksync_alert_deliveries_pending {pending}");
    Ok(out)
}
