//! What the records say, decided once for both stores: which replay step writes, revises or
//! clears which count or shortfall record, which new movement settles which transfer or
//! order, and when two legs or an order's reversals are a problem. The SQLite ledger
//! (`records`, `projection`, `rebuild`) and the PostgreSQL store (`store::postgres::records`)
//! only turn these decisions into their own SQL, so the two cannot disagree on content.

use stocksync_common::MovementKind;

use crate::authority::Treatment;
use crate::projection::Entry;
use crate::replay::{is_barrier, Shortfall, Step};

/// What one replay step does to the records of its movement.
#[derive(Debug, Clone)]
pub(crate) enum Write<'a> {
    /// An authoritative count that differed: its drift record, written or revised.
    Drift(&'a Entry, Counted),
    /// A count from a source that is not the authority: its conflict record.
    Conflict(&'a Entry, Counted),
    /// An authoritative count that agreed (perhaps after a late delta): no drift record.
    ClearDrift(&'a Entry),
    /// An inspection or write-off that asked for more than was there.
    Shortfall(&'a Entry, Shortfall),
    /// An inspection or write-off that found what it asked for.
    ClearShortfall(&'a Entry),
}

/// What a count expected and what it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    pub expected: i64,
    pub counted: i64,
}

impl Counted {
    /// `counted - expected`.
    pub fn difference(&self) -> i64 {
        self.counted - self.expected
    }
}

/// The record write of `step`, taken by `e` at `bin` during a replay. Records belong to
/// the movement's own key: a step at another bin writes nothing.
pub(crate) fn of_step<'a>(e: &'a Entry, bin: &str, step: &Step) -> Option<Write<'a>> {
    if bin != e.movement.location.bin_key() {
        return None;
    }
    match *step {
        Step::Count {
            expected, counted, ..
        } => Some(count(e, Counted { expected, counted })),
        Step::Short { shortfall, .. } => Some(Write::Shortfall(e, shortfall)),
        Step::Delta(_) if is_barrier(e) => Some(Write::ClearShortfall(e)),
        _ => None,
    }
}

/// A count's record: drift for the authority's (none if it agreed), else a conflict.
pub(crate) fn count(e: &Entry, c: Counted) -> Write<'_> {
    match e.treatment {
        Treatment::Apply if c.expected == c.counted => Write::ClearDrift(e),
        Treatment::Apply => Write::Drift(e, c),
        _ => Write::Conflict(e, c),
    }
}

/// The records a movement may settle when it enters (or leaves) the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Settles {
    /// `(transfer, sku)`: its discrepancy is computed again from both legs.
    pub transfer: Option<(String, String)>,
    /// `(order, sku)`: its reversal is computed again from shipments and reversals.
    pub order: Option<(String, String)>,
}

/// What a new movement settles: a transfer leg its transfer, a shipment, cancellation or
/// return its order (only movements with an effect count).
pub(crate) fn settles(e: &Entry) -> Settles {
    let m = &e.movement;
    if !e.treatment.has_effect() {
        return Settles::default();
    }
    let sku = || m.sku.0.clone();
    let transfer = match m.kind {
        MovementKind::TransferOut | MovementKind::TransferIn => {
            m.references.transfer.clone().map(|t| (t, sku()))
        }
        _ => None,
    };
    let order = match m.kind {
        MovementKind::Shipment | MovementKind::Cancellation | MovementKind::Return => {
            m.references.order.clone().map(|o| (o, sku()))
        }
        _ => None,
    };
    Settles { transfer, order }
}

/// One leg of a transfer as the ledger sums it: warehouse and quantity.
pub(crate) type Leg = (String, i64);

/// A transfer's discrepancy from its legs: `(from, to, shipped, received)` when both legs
/// are in and disagree, else none (the record is removed).
pub(crate) fn discrepancy(
    out: Option<Leg>,
    inn: Option<Leg>,
) -> Option<(String, String, i64, i64)> {
    match (out, inn) {
        (Some((from, shipped)), Some((to, received))) if shipped != received => {
            Some((from, to, shipped, received))
        }
        _ => None,
    }
}

/// An order's excess of cancellations and returns over shipments for one SKU, if any.
pub(crate) fn reversal_excess(shipped: i64, reversed: i64) -> Option<i64> {
    (reversed > shipped).then(|| reversed - shipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_that_agree_or_are_missing_are_no_discrepancy() {
        let leg = |w: &str, q| Some((w.to_string(), q));
        assert_eq!(discrepancy(leg("ams", 5), leg("ber", 5)), None);
        assert_eq!(discrepancy(leg("ams", 5), None), None);
        assert_eq!(
            discrepancy(leg("ams", 5), leg("ber", 3)),
            Some(("ams".into(), "ber".into(), 5, 3))
        );
        assert_eq!(reversal_excess(2, 2), None);
        assert_eq!(reversal_excess(2, 3), Some(1));
    }
}
