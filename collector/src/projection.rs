//! The stock projection as a function of the *set* of movements, never of their arrival
//! order.
//!
//! Rule (see `docs/MOVEMENTS.md`): movements of one (SKU, warehouse, bin) are ordered by
//! `(occurred_at, agent_id, seq)`, a total order every replica agrees on. Replaying them in
//! that order, a delta adds its effect and an authoritative count sets on_hand to the
//! counted number, the difference going to `available`. So on_hand is the latest
//! authoritative count plus the deltas ordered after it, and a delta ordered before it is
//! never applied again, however late it arrives.
//!
//! Applying that rule incrementally: a new delta ordered after the key's latest count is
//! simply added; a new count, or a delta ordered before the latest count, triggers a replay
//! of that key alone from the ledger (`recompute`). The same replay writes the drift and
//! conflict records of the key's counts, so those are order-independent too. `in_transit`
//! and `incoming` are sums that counts never touch; they are always added incrementally.

use rusqlite::{params, Connection};
use stocksync_common::wire;
use stocksync_common::{Location, Movement, MovementKind};

use crate::authority::{parse_returns_to, Treatment};
use crate::merge::{self, Change, ReturnsTo, States};
use crate::records;
use crate::replay::is_barrier;
pub use crate::replay::{replay, Step};
use crate::reserve;
pub use crate::stock::Order;
use crate::stock::{self, StockKey};

/// A movement as the ledger holds it, with what the collector decided about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub agent_id: String,
    pub movement: Movement,
    pub treatment: Treatment,
    pub returns_to: ReturnsTo,
}

impl Entry {
    pub fn order(&self) -> Order {
        (
            self.movement.occurred_at.unix_ms,
            self.agent_id.clone(),
            self.movement.seq,
        )
    }

    /// The (SKU, location) the movement is recorded at.
    pub fn key(&self) -> StockKey {
        key_at(&self.movement.sku.0, &self.movement.location)
    }
}

/// The key of `sku` at `location`.
pub fn key_at(sku: &str, location: &Location) -> StockKey {
    StockKey::at(sku, location)
}

/// Splits a delta into its physical part and the part counts never touch.
pub(crate) fn split(d: States) -> (States, States) {
    let physical = States {
        in_transit: 0,
        incoming: 0,
        ..d
    };
    let elsewhere = States {
        in_transit: d.in_transit,
        incoming: d.incoming,
        ..States::default()
    };
    (physical, elsewhere)
}

/// Incremental deltas of one batch, summed per key and written once at its end: a burst of
/// movements on a hot SKU costs one row update, not one per movement.
#[derive(Default)]
pub(crate) struct Pending(std::collections::HashMap<StockKey, States>);

impl Pending {
    fn add(&mut self, key: StockKey, delta: &States) {
        self.0.entry(key).or_default().add(delta);
    }

    /// Writes every pending delta. Must run before anything reads or overwrites stock rows
    /// (a replay), and before the batch's savepoint is released.
    pub(crate) fn flush(&mut self, tx: &Connection, now: i64) -> Result<(), rusqlite::Error> {
        for (key, delta) in self.0.drain() {
            stock::add(tx, &key, &delta, now)?;
        }
        Ok(())
    }
}

/// Applies one movement just inserted into the ledger.
pub(crate) fn project(
    tx: &Connection,
    e: &Entry,
    now: i64,
    touched: &mut Vec<StockKey>,
    pending: &mut Pending,
) -> Result<(), rusqlite::Error> {
    let key = e.key();
    let settles = records::settles(e);
    if let Some((transfer, sku)) = &settles.transfer {
        records::update_discrepancy(tx, transfer, sku, now)?;
    }
    if let Some((order, sku)) = &settles.order {
        records::update_reversal(tx, order, sku, now)?;
        if e.movement.kind == MovementKind::Shipment {
            let warehouse = &e.movement.location.warehouse;
            reserve::on_shipment(tx, order, sku, warehouse, now, touched)?;
        }
    }
    let mut needs_replay = false;
    let barrier = is_barrier(e);
    let last = stock::last_count(tx, &key)?;
    if barrier {
        note_count(tx, &key, e)?;
        needs_replay = true;
    }
    let mut physical_here = barrier;
    if let Change::Deltas(effects) = merge::change(&e.movement, e.returns_to) {
        if e.treatment.has_effect() {
            let after_last_count = last.is_none_or(|c| e.order() > c);
            for eff in effects {
                let k = key_at(&e.movement.sku.0, &eff.location);
                let (physical, elsewhere) = split(eff.delta);
                // Physical effects are always at the movement's own key (see `merge`), which
                // is what lets a replay of that key alone rebuild them.
                if physical != States::default() && k == key {
                    physical_here = true;
                }
                if physical != States::default() && k == key && (barrier || !after_last_count) {
                    needs_replay = true;
                } else if physical != States::default() {
                    pending.add(k.clone(), &physical);
                    touched.push(k.clone());
                }
                if elsewhere != States::default() {
                    pending.add(k.clone(), &elsewhere);
                    touched.push(k);
                }
            }
        }
    }
    if needs_replay {
        pending.flush(tx, now)?;
        recompute(tx, &key, now)?;
        touched.push(key.clone());
    }
    // A warehouse-level count counts the total, bins included: a bin's movement ordered
    // before it changes what it expected, so the warehouse-level row replays too.
    if physical_here && !key.bin.is_empty() {
        // Moved, not cloned: this runs for every movement at a bin.
        let whole = StockKey {
            bin: String::new(),
            ..key
        };
        if stock::last_count(tx, &whole)?.is_some_and(|c| e.order() < c) {
            pending.flush(tx, now)?;
            recompute(tx, &whole, now)?;
            touched.push(whole);
        }
    }
    Ok(())
}

/// Rebuilds the physical states and the count records of one key from the ledger.
pub(crate) fn recompute(tx: &Connection, key: &StockKey, now: i64) -> Result<(), rusqlite::Error> {
    let mut entries = entries_at(tx, key)?;
    // `replay` sorts `entries` and calls back once per entry, in that order.
    let mut steps = Vec::with_capacity(entries.len());
    let states = replay(&mut entries, key, |_, step, _| steps.push(step.clone()));
    for (e, step) in entries.iter().zip(&steps) {
        if let Some(w) = records::of_step(e, &key.bin, step) {
            records::write(tx, &w, now)?;
        }
    }
    // Reservations hold stock on the warehouse-level row; the replay knows only movements.
    let mut states = states;
    if key.bin.is_empty() {
        let held = stock::held(tx, &key.sku, &key.warehouse)?;
        states.available -= held;
        states.reserved += held;
    }
    stock::set_physical(tx, key, &states, now)
}

/// Every ledger entry that a replay of `key` needs: those recorded there, and for a
/// warehouse-level key those of every bin of the warehouse (its counts count the total).
fn entries_at(conn: &Connection, key: &StockKey) -> Result<Vec<Entry>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, treatment, returns_to, payload FROM ledger
         WHERE sku = ?1 AND warehouse = ?2 AND (bin = ?3 OR ?3 = '')
           AND treatment IN ('apply', 'provisional', 'conflict')",
    )?;
    let rows = stmt.query_map(params![key.sku, key.warehouse, key.bin], entry_row)?;
    rows.collect()
}

/// Every ledger entry that explains `key`, whatever its treatment: the movements recorded
/// there, and for a warehouse-level key the transfers that move its `in_transit`.
pub fn history(conn: &Connection, key: &StockKey) -> Result<Vec<Entry>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, treatment, returns_to, payload FROM ledger
         WHERE sku = ?1 AND ((warehouse = ?2 AND bin = ?3)
            OR (?3 = '' AND kind = 'transfer_out' AND peer = ?2)
            OR (?3 = '' AND kind = 'transfer_in' AND warehouse = ?2 AND bin != '' AND peer IS NOT NULL))",
    )?;
    let rows = stmt.query_map(params![key.sku, key.warehouse, key.bin], entry_row)?;
    rows.collect()
}

pub(crate) fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let payload: Vec<u8> = r.get(3)?;
    let movement = wire::decode_movement(&payload).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    Ok(Entry {
        agent_id: r.get(0)?,
        treatment: Treatment::parse(&r.get::<_, String>(1)?),
        returns_to: parse_returns_to(&r.get::<_, String>(2)?),
        movement,
    })
}

/// Remembers the latest barrier (count, inspection, write-off; see `replay::is_barrier`) of
/// a key, so deltas know whether they may be added directly.
fn note_count(tx: &Connection, key: &StockKey, e: &Entry) -> Result<(), rusqlite::Error> {
    let at = e.order();
    if stock::last_count(tx, key)?.is_some_and(|c| c > at) {
        return Ok(());
    }
    stock::set_last_count(tx, key, &at)
}
