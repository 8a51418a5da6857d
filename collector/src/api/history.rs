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

mod explain;

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rusqlite::{params, Connection};

use super::Path;
use super::{AppError, Params};
use crate::authority::Treatment;
use crate::projection::{self, Entry};
use crate::records::{self, Filter};
use crate::stock::{self, StockKey};
use crate::{reserve, void, App};
pub(crate) use explain::{explain, Facts, Hold};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    location: Option<String>,
}

impl HistoryQuery {
    /// The key asked for and the location as given, on every backend.
    pub(crate) fn key(self, sku: &str) -> Result<(StockKey, String), AppError> {
        let location = self.location.ok_or_else(|| {
            AppError::bad_request(
                "location",
                "give `location=<warehouse>` or `<warehouse>/<bin>`",
            )
        })?;
        let (warehouse, bin) = location
            .split_once('/')
            .map_or((location.as_str(), ""), |(w, b)| (w, b));
        let key = StockKey {
            sku: sku.to_string(),
            warehouse: warehouse.to_string(),
            bin: bin.to_string(),
        };
        Ok((key, location))
    }
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
    let (key, location) = q.key(&sku)?;
    let facts = app.ledger.read(|c| facts(c, &key))?;
    Ok(Json(explain(&key, &location, facts)).into_response())
}

/// What the SQLite ledger knows about `key`'s history.
fn facts(c: &Connection, key: &StockKey) -> rusqlite::Result<Facts> {
    let whole = key.bin.is_empty();
    let entries = if whole {
        warehouse_entries(c, &key.sku, &key.warehouse)?
    } else {
        projection::history(c, key)?
    };
    let current = if whole {
        stock::warehouse_total(c, &key.sku, &key.warehouse)?
    } else {
        stock::states(c, key)?
    };
    let filter = Filter {
        warehouse: Some(&key.warehouse),
        sku: Some(&key.sku),
    };
    let mut counts = std::collections::HashMap::new();
    for (table, rows) in [
        ("drift", records::drift(c, filter, i64::MAX)?),
        ("conflicts", records::conflicts(c, filter, false, i64::MAX)?),
    ] {
        for r in rows {
            counts.insert((r.agent_id.clone(), r.seq), (table, r));
        }
    }
    let mut voids = std::collections::HashMap::new();
    for e in entries.iter().filter(|e| e.treatment == Treatment::Voided) {
        let v = void::get(c, &e.agent_id, e.movement.seq)?;
        voids.insert((e.agent_id.clone(), e.movement.seq), serde_json::json!(v));
    }
    let holds = if whole {
        holds(c, &key.sku, &key.warehouse)?
    } else {
        Vec::new()
    };
    Ok(Facts {
        entries,
        current,
        counts,
        voids,
        holds,
    })
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

/// The reservations of `sku` at `warehouse`, each with its order's shipments there.
fn holds(c: &Connection, sku: &str, warehouse: &str) -> rusqlite::Result<Vec<Hold>> {
    let mut shipped = c.prepare_cached(
        "SELECT occurred_at_ms, quantity FROM ledger
         WHERE order_ref = ?1 AND sku = ?2 AND warehouse = ?3 AND kind = 'shipment'
           AND treatment IN ('apply', 'provisional')
         ORDER BY occurred_at_ms, agent_id, seq",
    )?;
    let mut out = Vec::new();
    for r in reserve::list(c, sku, Some(warehouse), i64::MAX)? {
        let rows = shipped.query_map(params![r.order, sku, warehouse], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })?;
        let ships = rows.collect::<Result<_, _>>()?;
        out.push((r, ships));
    }
    Ok(out)
}
