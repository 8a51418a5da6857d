//! Voiding a movement: the operator's correction for a movement that should never have
//! counted (a handheld with its clock in 2030, a count keyed into the wrong SKU).
//!
//! The ledger stays append-only in what it knows: the movement's row and bytes are kept,
//! its treatment becomes `voided`, and a `voids` row records who voided it, why, when and
//! what its treatment was. Every replay leaves voided movements out, so the key's
//! projection is replayed without it; history shows the movement marked voided with the
//! void beside it. Voiding is idempotent (the first void's record stands) and the result is
//! the projection of the remaining set, whatever order movements and voids came in.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use stocksync_common::MovementKind;

use crate::merge::{self, Change, States};
use crate::projection::{self, Entry};
use crate::stock::{self, StockKey};
use crate::{records, reserve};

/// An operator's request to void one movement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub agent_id: String,
    pub seq: u64,
    /// Who voids it (a person or system, for the audit trail).
    pub by: String,
    pub reason: String,
}

/// A stored void.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Void {
    pub agent_id: String,
    pub seq: u64,
    pub by: String,
    pub reason: String,
    pub voided_at_ms: i64,
    /// The movement's treatment before it was voided.
    pub previous_treatment: String,
}

/// What a void request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voided {
    New(Void),
    /// Voided before; the first void's record.
    Already(Void),
    /// No movement with that id in the ledger.
    Unknown,
}

/// The void of a movement, if it has one.
pub fn get(
    conn: &rusqlite::Connection,
    agent_id: &str,
    seq: u64,
) -> rusqlite::Result<Option<Void>> {
    conn.prepare_cached(
        "SELECT agent_id, seq, voided_by, reason, voided_at_ms, previous_treatment FROM voids
         WHERE agent_id = ?1 AND seq = ?2",
    )?
    .query_row(params![agent_id, seq as i64], |r| {
        Ok(Void {
            agent_id: r.get(0)?,
            seq: r.get::<_, i64>(1)? as u64,
            by: r.get(2)?,
            reason: r.get(3)?,
            voided_at_ms: r.get(4)?,
            previous_treatment: r.get(5)?,
        })
    })
    .optional()
}

/// Voids a movement inside the writer's transaction and replays what it touched.
pub fn void(
    tx: &Connection,
    req: &Request,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Voided> {
    if let Some(existing) = get(tx, &req.agent_id, req.seq)? {
        return Ok(Voided::Already(existing));
    }
    let entry = tx
        .prepare_cached(
            "SELECT agent_id, treatment, returns_to, payload FROM ledger WHERE agent_id = ?1 AND seq = ?2",
        )?
        .query_row(params![req.agent_id, req.seq as i64], projection::entry_row)
        .optional()?;
    let Some(entry) = entry else {
        return Ok(Voided::Unknown);
    };
    tx.prepare_cached(
        "INSERT INTO voids (agent_id, seq, voided_by, reason, voided_at_ms, previous_treatment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        req.agent_id,
        req.seq as i64,
        req.by,
        req.reason,
        now,
        entry.treatment.as_str()
    ])?;
    tx.prepare_cached("UPDATE ledger SET treatment = 'voided' WHERE agent_id = ?1 AND seq = ?2")?
        .execute(params![req.agent_id, req.seq as i64])?;
    undo(tx, &entry, now, touched)?;
    Ok(Voided::New(
        get(tx, &req.agent_id, req.seq)?.expect("just inserted"),
    ))
}

/// What voiding `e` takes off directly, per stock row: in-transit and incoming are sums,
/// added directly when the movement came in, so they are taken off again (the physical
/// states are replayed instead). Empty for a movement that had no effect.
pub(crate) fn taken_off(e: &Entry) -> Vec<(StockKey, States)> {
    let mut out = Vec::new();
    if !e.treatment.has_effect() {
        return out;
    }
    if let Change::Deltas(effects) = merge::change(&e.movement, e.returns_to) {
        for eff in effects {
            let (_, elsewhere) = projection::split(eff.delta);
            if elsewhere != States::default() {
                let mut minus = States::default();
                minus.sub(&elsewhere);
                out.push((StockKey::at(&e.movement.sku.0, &eff.location), minus));
            }
        }
    }
    out
}

/// Takes a movement now voided out of the projection and the records derived from it.
fn undo(tx: &Connection, e: &Entry, now: i64, touched: &mut Vec<StockKey>) -> rusqlite::Result<()> {
    let m = &e.movement;
    let (sku, warehouse) = (&m.sku.0, &m.location.warehouse);
    for table in ["drift", "conflicts", "shortfalls"] {
        tx.prepare_cached(&format!(
            "DELETE FROM {table} WHERE agent_id = ?1 AND seq = ?2"
        ))?
        .execute(params![e.agent_id, m.seq as i64])?;
    }
    if e.treatment.has_effect() {
        for (key, minus) in taken_off(e) {
            stock::add(tx, &key, &minus, now)?;
            touched.push(key);
        }
        if let Some(t) = &m.references.transfer {
            records::update_discrepancy(tx, t, sku, now)?;
        }
        if let Some(order) = &m.references.order {
            records::update_reversal(tx, order, sku, now)?;
            if m.kind == MovementKind::Shipment {
                reserve::on_shipment(tx, order, sku, warehouse, now, touched)?;
            }
        }
    }
    // The physical states of its key (and the warehouse total its bin is part of) replay
    // without it.
    let key = e.key();
    let whole = key.whole();
    projection::recompute(tx, &key, now)?;
    touched.push(key.clone());
    if key != whole && stock::last_count(tx, &whole)?.is_some() {
        projection::recompute(tx, &whole, now)?;
        touched.push(whole);
    }
    Ok(())
}
