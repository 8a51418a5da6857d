//! `GET /v1/stock/<sku>/history?location=ams[/bin]`: why a number is what it is.
//!
//! It replays the movements with the same `replay::Replay` the projection uses, so the
//! running numbers it shows end at the served ones (`explained` is checked on every call).
//! For a bin it explains that bin's row. For a warehouse it explains the warehouse
//! **total** (every row of the SKU there, as `GET /v1/stock/<sku>` shows it under
//! `warehouses`): the movements of all its bins, transfers on their way to it, and the
//! reservation events that move stock between `available` and `reserved` (created,
//! consumed by a shipment of its order, released, expired, fulfilled). Drift, conflict and
//! shortfall records appear inline at their movements.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::Path;
use super::{AppError, Params};
use crate::authority::Treatment;
use crate::merge::States;
use crate::projection::{self, Entry};
use crate::replay::{Replay, Step};
use crate::stock::{self, StockKey};
use crate::{records, reserve, void, App};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    location: Option<String>,
}

/// The movements (and reservation events) of one (SKU, location), each with its effect
/// and the running states.
#[utoipa::path(
    get,
    path = "/v1/stock/{sku}/history",
    tag = "stock",
    summary = "The history that explains a number",
    params(("sku" = String, Path), HistoryQuery),
    responses(
        (status = 200, description = "Movements with their effects and running states", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such SKU or location", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn history(
    State(app): State<Arc<App>>,
    Path(sku): Path<String>,
    Params(q): Params<HistoryQuery>,
) -> Result<Response, AppError> {
    let location = q.location.ok_or_else(|| {
        AppError::bad_request(
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
        let (rows, replayed, current) = if key.bin.is_empty() {
            warehouse_rows(c, &key)?
        } else {
            bin_rows(c, &key)?
        };
        Ok(json!({
            "sku": sku,
            "location": location,
            "current": with_on_hand(&current),
            "explained": replayed == current,
            "movements": rows,
        }))
    })?;
    Ok(Json(body).into_response())
}

/// One bin: its movements replayed alone.
fn bin_rows(c: &Connection, key: &StockKey) -> rusqlite::Result<(Vec<Value>, States, States)> {
    let mut entries = projection::history(c, key)?;
    let mut steps = Vec::new();
    let replayed = projection::replay(&mut entries, key, |e, step, after| {
        steps.push((e.clone(), step.clone(), *after));
    });
    let mut rows = Vec::with_capacity(steps.len());
    for (e, step, after) in steps {
        rows.push(movement_row(c, &e, &step, &after)?);
    }
    let current = stock::states(c, key)?;
    Ok((rows, replayed, current))
}

/// A warehouse: every movement there and every reservation event, against the total.
fn warehouse_rows(
    c: &Connection,
    key: &StockKey,
) -> rusqlite::Result<(Vec<Value>, States, States)> {
    let mut entries = warehouse_entries(c, &key.sku, &key.warehouse)?;
    entries.sort_by_cached_key(Entry::order);
    let mut replay = Replay::new(&key.warehouse);
    // (time, movements before holds at the same ms, row without `after`, effect on the total)
    let mut items: Vec<(i64, u8, Value, States)> = Vec::new();
    for e in &entries {
        let own = e.movement.location.bin_key().to_string();
        let before = replay.total();
        let steps = replay.apply(e);
        let step = steps
            .iter()
            .find(|(b, s)| *b == own || !matches!(s, Step::NoEffect))
            .map_or(Step::NoEffect, |(_, s)| s.clone());
        let mut effect = replay.total();
        effect.sub(&before);
        let mut row = movement_row(c, e, &step, &States::default())?;
        if !matches!(step, Step::NoEffect) {
            row["effect"] = json!(effect);
        }
        items.push((e.movement.occurred_at.unix_ms, 0, row, effect));
    }
    items.extend(hold_events(c, &key.sku, &key.warehouse)?);
    items.sort_by_key(|(at, rank, _, _)| (*at, *rank));
    let mut running = States::default();
    let rows = items
        .into_iter()
        .map(|(_, _, mut row, effect)| {
            running.add(&effect);
            row["after"] = with_on_hand(&running);
            row
        })
        .collect();
    let current = stock::warehouse_total(c, &key.sku, &key.warehouse)?;
    Ok((rows, running, current))
}

/// Every ledger entry of `sku` at `warehouse` (all bins), and transfers on their way to it.
fn warehouse_entries(c: &Connection, sku: &str, warehouse: &str) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = c.prepare_cached(
        "SELECT agent_id, treatment, returns_to, payload FROM ledger
         WHERE sku = ?1 AND (warehouse = ?2 OR (kind = 'transfer_out' AND peer = ?2))",
    )?;
    let rows = stmt.query_map(params![sku, warehouse], projection::entry_row)?;
    rows.collect()
}

/// Reservation events at a warehouse as history items: each changes the reservation's open
/// amount (quantity less its order's shipments while active), which moves between
/// `available` and `reserved`. Their sum is the warehouse's held amount.
fn hold_events(
    c: &Connection,
    sku: &str,
    warehouse: &str,
) -> rusqlite::Result<Vec<(i64, u8, Value, States)>> {
    let mut out = Vec::new();
    let mut shipped = c.prepare_cached(
        "SELECT occurred_at_ms, quantity FROM ledger
         WHERE order_ref = ?1 AND sku = ?2 AND warehouse = ?3 AND kind = 'shipment'
           AND treatment IN ('apply', 'provisional')",
    )?;
    for r in reserve::list(c, sku, Some(warehouse), i64::MAX)? {
        // (time, what happened, shipped quantity)
        let mut events: Vec<(i64, &str, i64)> = vec![(r.created_at_ms, "created", 0)];
        let rows = shipped.query_map(params![r.order, sku, warehouse], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (at, q) = row?;
            events.push((at, "consumed", q));
        }
        if let (Some(at), false) = (r.closed_at_ms, r.status == "active") {
            events.push((at, r.status.as_str(), 0));
        }
        events.sort_by_key(|(at, what, _)| (*at, *what != "created"));
        let (mut open, mut created, mut closed, mut ships) = (0i64, false, false, 0i64);
        for (at, what, q) in events {
            match what {
                "created" => created = true,
                "consumed" => ships += q,
                _ => closed = true,
            }
            let now_open = if created && !closed {
                (r.quantity - ships).max(0)
            } else {
                0
            };
            let delta = now_open - open;
            open = now_open;
            if delta == 0 && what == "consumed" {
                continue;
            }
            let effect = States {
                available: -delta,
                reserved: delta,
                ..States::default()
            };
            let row = json!({
                "kind": format!("reservation_{what}"),
                "reservation": r.id,
                "references": {"order": r.order},
                "channel": r.channel,
                "quantity": r.quantity,
                "at_ms": at,
                "effect": effect,
            });
            out.push((at, 1, row, effect));
        }
    }
    Ok(out)
}

/// One movement as a history row; `after` is the running states it ends at.
fn movement_row(c: &Connection, e: &Entry, step: &Step, after: &States) -> rusqlite::Result<Value> {
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
        "after": with_on_hand(after),
    });
    if e.treatment == Treatment::Voided {
        row["void"] = json!(void::get(c, &e.agent_id, m.seq)?);
    }
    match step {
        Step::Delta(d) => row["effect"] = json!(d),
        Step::Short { delta, shortfall } => {
            row["effect"] = json!(delta);
            row["shortfall"] = json!(shortfall);
        }
        Step::Count {
            expected,
            counted,
            applied,
        } => {
            row["count"] = json!({"expected": expected, "counted": counted, "applied": applied});
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
    Ok(row)
}

fn with_on_hand(s: &States) -> Value {
    let mut v = json!(s);
    v["on_hand"] = json!(s.on_hand());
    v
}
