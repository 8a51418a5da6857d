//! Audit endpoints: why a number is what it is, and where sources disagree.
//!
//! `GET /v1/stock/<sku>/history?location=ams[/bin]` replays the key's movements with the
//! same `projection::replay` the projection uses, so the running numbers it shows end at
//! the served number (`explained` says so, checked on every call). Drift and conflict
//! records appear inline at their counts. `GET /v1/drift`, `/v1/conflicts` and
//! `/v1/discrepancies` list the open records.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::ApiError;
use crate::ledger::{read_states, StockKey};
use crate::projection::{self, Step};
use crate::{records, App};

#[derive(serde::Deserialize)]
pub struct HistoryQuery {
    location: Option<String>,
}

/// The movements of one (SKU, location), each with its effect and the running states.
pub async fn history(
    State(app): State<Arc<App>>,
    Path(sku): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    let location = q.location.ok_or_else(|| {
        ApiError::bad_request(
            "location",
            "give `location=<warehouse>` or `<warehouse>/<bin>`",
        )
    })?;
    let (warehouse, bin) = location
        .split_once('/')
        .map_or((location.as_str(), ""), |(w, b)| (w, b));
    let key = StockKey {
        sku: sku.clone(),
        warehouse: warehouse.to_string(),
        bin: bin.to_string(),
    };
    let body = app.ledger.read(|c| {
        let mut entries = projection::history(c, &key)?;
        let mut steps = Vec::new();
        let replayed = projection::replay(&mut entries, &key, |e, step, after| {
            steps.push((e.clone(), step.clone(), *after));
        });
        let mut movements = Vec::with_capacity(steps.len());
        for (e, step, after) in steps {
            let m = &e.movement;
            let mut row = json!({
                "agent_id": e.agent_id,
                "seq": m.seq,
                "occurred_at": m.occurred_at.to_rfc3339(),
                "kind": m.kind.name(),
                "detail": m.kind,
                "source": m.source,
                "location": m.location.to_string(),
                "quantity": m.quantity,
                "unit": m.unit,
                "unit_quantity": m.unit_quantity,
                "treatment": e.treatment.as_str(),
                "input": (!m.origin.input.is_empty()).then_some(&m.origin.input),
                "validated": m.origin.validated,
                "note": m.note,
                "references": {
                    "order": m.references.order,
                    "transfer": m.references.transfer,
                    "return": m.references.return_id,
                    "peer_warehouse": m.references.peer_warehouse,
                },
                "after": with_on_hand(&after),
            });
            match step {
                Step::Delta(d) => row["effect"] = json!(d),
                Step::Count {
                    expected,
                    counted,
                    applied,
                } => {
                    row["count"] =
                        json!({"expected": expected, "counted": counted, "applied": applied});
                    if let Some((table, record)) = records::of_count(c, &e.agent_id, m.seq)? {
                        let name = if table == "drift" {
                            "drift"
                        } else {
                            "conflict"
                        };
                        row[name] = json!(record);
                    }
                }
                Step::NoEffect => row["effect"] = Value::Null,
            }
            movements.push(row);
        }
        let current = read_states(c, &key.sku, &key.warehouse, &key.bin)?;
        Ok(json!({
            "sku": sku,
            "location": location,
            "current": with_on_hand(&current),
            "explained": replayed == current,
            "movements": movements,
        }))
    })?;
    Ok(Json(body).into_response())
}

fn with_on_hand(s: &crate::merge::States) -> Value {
    let mut v = json!(s);
    v["on_hand"] = json!(s.on_hand());
    v
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    /// For conflicts: include counts that agreed with the projection.
    all: Option<bool>,
}

/// Open drift records, newest count first.
pub async fn drift(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::drift(c, limit))?;
    Ok(Json(rows).into_response())
}

/// Counts from non-authoritative sources; by default only those that disagreed.
pub async fn conflicts(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let open_only = !q.all.unwrap_or(false);
    let rows = app
        .ledger
        .read(|c| records::conflicts(c, open_only, limit))?;
    Ok(Json(rows).into_response())
}

/// Transfers whose received quantity differs from the shipped one.
pub async fn discrepancies(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::discrepancies(c, limit))?;
    Ok(Json(rows).into_response())
}

/// Orders whose cancellations and returns exceed what they shipped.
pub async fn reversals(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::reversals(c, limit))?;
    Ok(Json(rows).into_response())
}
