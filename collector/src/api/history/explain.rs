//! The history of one (SKU, location) from what a store read (`Facts`), the same on every
//! backend: the movements replayed with the projection's own `replay::Replay`, each with
//! its effect and the running states, drift, conflict and shortfall records inline, and for
//! a warehouse the reservation events that move stock between `available` and `reserved`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::authority::Treatment;
use crate::merge::States;
use crate::projection::{self, Entry};
use crate::records::CountRecord;
use crate::replay::{Replay, Step};
use crate::reserve::Reservation;
use crate::stock::StockKey;

/// What a history needs from a store, read before it is explained.
#[derive(Default)]
pub struct Facts {
    /// For a bin, its movements; for a warehouse, every movement there (all bins) and the
    /// transfers on their way to it.
    pub entries: Vec<Entry>,
    /// The states served now: the bin's row, or the warehouse total.
    pub current: States,
    /// The drift (`"drift"`) or conflict (`"conflicts"`) record of each count, by
    /// `(agent_id, seq)`.
    pub counts: HashMap<(String, u64), (&'static str, CountRecord)>,
    /// The void of each voided movement, as the API shows it.
    pub voids: HashMap<(String, u64), Value>,
    /// For a warehouse: its reservations of the SKU, each with its order's shipments there
    /// as `(occurred_at_ms, quantity)`.
    pub holds: Vec<Hold>,
}

/// A reservation with its order's shipments at its warehouse, `(occurred_at_ms, quantity)`.
pub type Hold = (Reservation, Vec<(i64, i64)>);

/// The answer of `GET /v1/stock/<sku>/history?location=`.
pub fn explain(key: &StockKey, location: &str, facts: Facts) -> Value {
    let (rows, replayed) = if key.bin.is_empty() {
        warehouse_rows(key, &facts)
    } else {
        bin_rows(key, &facts)
    };
    json!({
        "sku": key.sku,
        "location": location,
        "current": with_on_hand(&facts.current),
        "explained": replayed == facts.current,
        "movements": rows,
    })
}

/// One bin: its movements replayed alone.
fn bin_rows(key: &StockKey, facts: &Facts) -> (Vec<Value>, States) {
    let mut entries = facts.entries.clone();
    let mut steps = Vec::new();
    let replayed = projection::replay(&mut entries, key, |_, step, after| {
        steps.push((step.clone(), *after));
    });
    let rows = entries
        .iter()
        .zip(steps)
        .map(|(e, (step, after))| movement_row(facts, e, &step, &after))
        .collect();
    (rows, replayed)
}

/// A warehouse: every movement there and every reservation event, against the total.
fn warehouse_rows(key: &StockKey, facts: &Facts) -> (Vec<Value>, States) {
    let mut entries = facts.entries.clone();
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
        let mut row = movement_row(facts, e, &step, &States::default());
        if !matches!(step, Step::NoEffect) {
            row["effect"] = json!(effect);
        }
        items.push((e.movement.occurred_at.unix_ms, 0, row, effect));
    }
    // By id, whatever order the store listed them in: ties keep one order on every backend.
    let mut holds: Vec<_> = facts.holds.iter().collect();
    holds.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    for (r, shipped) in holds {
        items.extend(hold_events(r, shipped));
    }
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
    (rows, running)
}

/// Reservation `r`'s events as history items: each changes its open amount (quantity less
/// its order's shipments while active), which moves between `available` and `reserved`.
/// Their sum over a warehouse's reservations is its held amount.
fn hold_events(r: &Reservation, shipped: &[(i64, i64)]) -> Vec<(i64, u8, Value, States)> {
    // (time, what happened, shipped quantity)
    let mut events: Vec<(i64, &str, i64)> = vec![(r.created_at_ms, "created", 0)];
    events.extend(shipped.iter().map(|&(at, q)| (at, "consumed", q)));
    if let (Some(at), false) = (r.closed_at_ms, r.status == "active") {
        events.push((at, r.status.as_str(), 0));
    }
    events.sort_by_key(|(at, what, _)| (*at, *what != "created"));
    let (mut open, mut created, mut closed, mut ships) = (0i64, false, false, 0i64);
    let mut out = Vec::new();
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
    out
}

/// One movement as a history row; `after` is the running states it ends at.
fn movement_row(facts: &Facts, e: &Entry, step: &Step, after: &States) -> Value {
    let m = &e.movement;
    let id = (e.agent_id.clone(), m.seq);
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
        row["void"] = facts.voids.get(&id).cloned().unwrap_or(Value::Null);
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
            if let Some((table, record)) = facts.counts.get(&id) {
                let name = if *table == "drift" {
                    "drift"
                } else {
                    "conflict"
                };
                row[name] = json!(record);
            }
        }
        Step::NoEffect => row["effect"] = Value::Null,
    }
    row
}

fn with_on_hand(s: &States) -> Value {
    let mut v = json!(s);
    v["on_hand"] = json!(s.on_hand());
    v
}
