//! What each movement does at its place in the replay order, for every key of one
//! (SKU, warehouse) at once.
//!
//! Most movements add a fixed delta. Three depend on the states just before them, which is
//! why the projection replays a key whenever a movement arrives that is ordered before one
//! of them (see `projection`):
//!
//! - a **count** at a bin sets that bin's on_hand, the difference going to `available`;
//! - a **warehouse-level count** (no bin) counts the warehouse **total**: expected is the sum
//!   of on_hand over every row of the warehouse (its bins and the bin-less row), and the
//!   difference lands on the bin-less row. Bins keep their own numbers, so a total that
//!   agrees with the bins changes nothing, and one that differs is drift, never stock added
//!   on top of the bins;
//! - an **inspection** or a **write-off** takes at most what quality control / damaged hold
//!   there; the rest is a shortfall (`Step::Short`, kept as a visible record), never a
//!   negative state.
//!
//! All three are functions of the ordered set of movements, so the result is the same
//! whatever order the movements arrived in.

use std::collections::BTreeMap;

use stocksync_common::model::{InspectionOutcome, MovementKind};

use crate::authority::Treatment;
use crate::ledger::StockKey;
use crate::merge::{self, Change, States};
use crate::projection::Entry;

/// What one movement did at one key during a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Delta(States),
    /// A count: `applied` for an authoritative one, otherwise a conflict.
    Count {
        expected: i64,
        counted: i64,
        applied: bool,
    },
    /// An inspection or write-off that asked for more than its state held: `delta` is what
    /// it did, `shortfall` what it could not take.
    Short {
        delta: States,
        shortfall: Shortfall,
    },
    /// Recorded with no effect here (audit, rejected, voided, or another key's movement).
    NoEffect,
}

/// The part of an inspection or write-off that its state did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shortfall {
    /// `quality_control` (inspection) or `damaged` (write-off).
    pub state: &'static str,
    pub requested: i64,
    /// What the state held just before, and so what was taken.
    pub held: i64,
    /// `requested - held`.
    pub excess: i64,
}

/// Running states of every key of one (SKU, warehouse), by bin (`""` = warehouse level).
#[derive(Debug, Clone, Default)]
pub struct Replay {
    warehouse: String,
    bins: BTreeMap<String, States>,
}

impl Replay {
    pub fn new(warehouse: &str) -> Replay {
        Replay {
            warehouse: warehouse.to_string(),
            bins: BTreeMap::new(),
        }
    }

    /// States of one bin so far.
    pub fn at(&self, bin: &str) -> States {
        self.bins.get(bin).copied().unwrap_or_default()
    }

    /// Every bin's states so far.
    pub fn bins(&self) -> &BTreeMap<String, States> {
        &self.bins
    }

    /// Sum over the warehouse's rows.
    pub fn total(&self) -> States {
        let mut sum = States::default();
        for s in self.bins.values() {
            sum.add(s);
        }
        sum
    }

    /// Applies the next entry in replay order; returns its step at every bin of this
    /// warehouse it touched.
    pub fn apply(&mut self, e: &Entry) -> Vec<(String, Step)> {
        match merge::change(&e.movement, e.returns_to) {
            Change::Count { on_hand } => self.count(e, on_hand).into_iter().collect(),
            Change::Deltas(effects) if e.treatment.has_effect() => {
                let mut steps: Vec<(String, Step)> = Vec::new();
                for eff in effects
                    .into_iter()
                    .filter(|eff| eff.location.warehouse == self.warehouse)
                {
                    let bin = eff.location.bin_key().to_string();
                    let step = self.clamp(&e.movement.kind, eff.delta, &bin);
                    let delta = match &step {
                        Step::Delta(d) | Step::Short { delta: d, .. } => *d,
                        _ => States::default(),
                    };
                    self.bins.entry(bin.clone()).or_default().add(&delta);
                    match steps.iter_mut().find(|(b, _)| *b == bin) {
                        Some((_, Step::Delta(d))) => d.add(&delta),
                        _ => steps.push((bin, step)),
                    }
                }
                steps
            }
            Change::Deltas(_) => Vec::new(),
        }
    }

    fn count(&mut self, e: &Entry, counted: i64) -> Option<(String, Step)> {
        if !matches!(e.treatment, Treatment::Apply | Treatment::Conflict)
            || e.movement.location.warehouse != self.warehouse
        {
            return None;
        }
        let bin = e.movement.location.bin_key().to_string();
        let expected = if bin.is_empty() {
            self.total().on_hand()
        } else {
            self.at(&bin).on_hand()
        };
        let applied = e.treatment == Treatment::Apply;
        if applied {
            let row = self.bins.entry(bin.clone()).or_default();
            // A warehouse count moves the total's difference onto the bin-less row.
            row.available += counted - expected;
        }
        Some((
            bin,
            Step::Count {
                expected,
                counted,
                applied,
            },
        ))
    }

    /// An inspection or write-off takes at most what its state holds at `bin`.
    fn clamp(&self, kind: &MovementKind, delta: States, bin: &str) -> Step {
        let held = self.at(bin);
        let (state, requested, have) = match kind {
            MovementKind::Inspection { .. } => (
                "quality_control",
                -delta.quality_control,
                held.quality_control,
            ),
            MovementKind::WriteOff => ("damaged", -delta.damaged, held.damaged),
            _ => return Step::Delta(delta),
        };
        let have = have.max(0);
        if requested <= have {
            return Step::Delta(delta);
        }
        let took = have;
        let delta = match kind {
            MovementKind::Inspection {
                outcome: InspectionOutcome::Available,
            } => States {
                quality_control: -took,
                available: took,
                ..States::default()
            },
            MovementKind::Inspection {
                outcome: InspectionOutcome::Damaged,
            } => States {
                quality_control: -took,
                damaged: took,
                ..States::default()
            },
            _ => States {
                damaged: -took,
                ..States::default()
            },
        };
        Step::Short {
            delta,
            shortfall: Shortfall {
                state,
                requested,
                held: took,
                excess: requested - took,
            },
        }
    }
}

/// True if a movement's effect depends on the states before it, so that anything ordered
/// before it must replay its key: an authoritative or conflicting count, an inspection or a
/// write-off with effect.
pub fn is_barrier(e: &Entry) -> bool {
    match &e.movement.kind {
        MovementKind::Count => matches!(e.treatment, Treatment::Apply | Treatment::Conflict),
        MovementKind::Inspection { .. } | MovementKind::WriteOff => e.treatment.has_effect(),
        _ => false,
    }
}

/// Replays `entries` in the replay order for `key`, calling `each` with every step at `key`
/// and the running states of `key` after it. For a warehouse-level key, `entries` must hold
/// every movement of the warehouse (its counts count the total). Returns the final states.
pub fn replay(
    entries: &mut [Entry],
    key: &StockKey,
    mut each: impl FnMut(&Entry, &Step, &States),
) -> States {
    entries.sort_by_cached_key(Entry::order);
    let mut r = Replay::new(&key.warehouse);
    for e in entries.iter() {
        let step = r
            .apply(e)
            .into_iter()
            .find(|(b, _)| *b == key.bin)
            .map_or(Step::NoEffect, |(_, s)| s);
        each(e, &step, &r.at(&key.bin));
    }
    r.at(&key.bin)
}
