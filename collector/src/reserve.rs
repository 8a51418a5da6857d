//! Reservations: stock promised to an order at checkout, before the warehouse ships it.
//!
//! A channel that sells a unit must take it out of what every other channel may sell *now*,
//! not when the WMS reports the shipment minutes later. A reservation holds `quantity` of a
//! SKU at a warehouse for an order; its open amount is what the order's shipments (from the
//! ledger, matched by `order` reference) have not yet covered. The warehouse's held amount
//! is the sum of open amounts of its active reservations and is shown on the warehouse-level
//! row (bin ""): `available` minus held, `reserved` plus held, so on_hand never changes.
//! This module decides what is held; `stock` applies it to the row and keeps the amount.
//!
//! Invariants: the held amount depends only on the reservations and the set of shipments,
//! not on their arrival order (a shipment arriving before its reservation simply leaves less
//! open); a reservation is created only if the warehouse has that much available (inside
//! the writer's transaction, so two checkouts cannot both take the last unit); every change
//! of status is kept with its time.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::stock::{self, StockKey};

/// A reservation as a channel or OMS asks for it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The caller's id; sending the same request again is answered, not applied twice.
    pub id: String,
    pub order: String,
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
    #[serde(default)]
    pub channel: Option<String>,
    /// Seconds until the hold lapses by itself if the order never ships.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

impl Request {
    /// The first field that makes the request unacceptable, as `(field, detail)`; the same
    /// rules on every backend.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.quantity <= 0 {
            return Err((
                "$.quantity".into(),
                format!("{} must be > 0", self.quantity),
            ));
        }
        if let Some(ttl) = self.ttl_secs.filter(|t| *t > MAX_TTL_SECS) {
            return Err((
                "$.ttl_secs".into(),
                format!("{ttl} is more than {MAX_TTL_SECS} (a year)"),
            ));
        }
        for (field, value) in [
            ("id", &self.id),
            ("order", &self.order),
            ("sku", &self.sku),
            ("warehouse", &self.warehouse),
        ] {
            if value.trim().is_empty() {
                return Err((format!("$.{field}"), "must not be empty".into()));
            }
        }
        if self.id.contains('#') {
            // `<order>#<n>` is how orders name their holds: a hand-made id of that shape
            // could take an order's id before the order does.
            return Err((
                "$.id".into(),
                "must not contain `#` (reserved for the holds of orders)".into(),
            ));
        }
        Ok(())
    }

    /// Whether `existing` is this request sent again (same terms), not another use of its id.
    pub fn same_as(&self, existing: &Reservation) -> bool {
        existing.order == self.order
            && existing.sku == self.sku
            && existing.warehouse == self.warehouse
            && existing.quantity == self.quantity
    }
}

/// A stored reservation and how much of it still holds stock.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub order: String,
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
    pub channel: Option<String>,
    /// `active`, `fulfilled` (its order shipped all of it), `released` or `expired`.
    pub status: String,
    /// What still holds stock: quantity minus the order's shipments, 0 unless active.
    pub open: i64,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    /// The API token (name) that created it; `api` when the API is open.
    pub created_by: Option<String>,
    /// Who released it by hand.
    pub closed_by: Option<String>,
}

/// What a reservation request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(Reservation),
    /// The same id was reserved before with the same terms.
    Replayed(Reservation),
    /// The same id was reserved before with other terms.
    IdConflict(Reservation),
    /// Not enough available at the warehouse; nothing was held.
    Insufficient {
        available: i64,
    },
}

/// The open amount of reservation `r`: its quantity less its order's shipments there.
const OPEN: &str = "CASE WHEN r.status = 'active' THEN MAX(0, r.quantity - (
        SELECT COALESCE(SUM(l.quantity), 0) FROM ledger l
        WHERE l.order_ref = r.order_ref AND l.sku = r.sku AND l.warehouse = r.warehouse
          AND l.kind = 'shipment' AND l.treatment IN ('apply', 'provisional'))) ELSE 0 END";

fn columns() -> String {
    format!("r.id, r.order_ref, r.sku, r.warehouse, r.quantity, r.channel, r.status, r.created_at_ms, r.expires_at_ms, r.closed_at_ms, {OPEN}, r.created_by, r.closed_by")
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Reservation> {
    Ok(Reservation {
        id: r.get(0)?,
        order: r.get(1)?,
        sku: r.get(2)?,
        warehouse: r.get(3)?,
        quantity: r.get(4)?,
        channel: r.get(5)?,
        status: r.get(6)?,
        created_at_ms: r.get(7)?,
        expires_at_ms: r.get(8)?,
        closed_at_ms: r.get(9)?,
        open: r.get(10)?,
        created_by: r.get(11)?,
        closed_by: r.get(12)?,
    })
}

/// One reservation by id.
pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Reservation>> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM reservations r WHERE r.id = ?1",
        columns()
    ))?
    .query_row([id], row)
    .optional()
}

/// Reservations of a SKU (optionally at one warehouse), newest first.
pub fn list(
    conn: &Connection,
    sku: &str,
    warehouse: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<Reservation>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {} FROM reservations r WHERE r.sku = ?1 AND (?2 IS NULL OR r.warehouse = ?2)
         ORDER BY r.created_at_ms DESC, r.id LIMIT ?3",
        columns()
    ))?;
    let rows = stmt.query_map(params![sku, warehouse, limit], row)?;
    rows.collect()
}

/// Creates a reservation if the warehouse has the stock, all in the caller's transaction.
pub fn create(
    tx: &Connection,
    req: &Request,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Created> {
    if let Some(existing) = get(tx, &req.id)? {
        return Ok(if req.same_as(&existing) {
            Created::Replayed(existing)
        } else {
            Created::IdConflict(existing)
        });
    }
    let available: i64 = stock::available_at(tx, &req.sku, &req.warehouse)?;
    if available < req.quantity {
        return Ok(Created::Insufficient { available });
    }
    let expires = req.ttl_secs.map(|s| expiry(now, s));
    tx.prepare_cached(
        "INSERT INTO reservations (id, order_ref, sku, warehouse, quantity, channel, status, created_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8)",
    )?
    .execute(params![req.id, req.order, req.sku, req.warehouse, req.quantity, req.channel, now, expires])?;
    // Shipped before it was reserved: nothing left to hold.
    fulfil(tx, &req.sku, &req.warehouse, now)?;
    refresh_hold(tx, &req.sku, &req.warehouse, now, touched)?;
    Ok(Created::New(get(tx, &req.id)?.expect("just inserted")))
}

/// Longest `ttl_secs` accepted: a year (the API refuses more).
pub const MAX_TTL_SECS: u64 = 366 * 86_400;

/// When a hold made at `now` with `ttl_secs` lapses; checked, so that a client's huge number
/// cannot wrap into a hold that expires at once (saturates at "never").
pub fn expiry(now: i64, ttl_secs: u64) -> i64 {
    i64::try_from(ttl_secs)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .and_then(|ms| now.checked_add(ms))
        .unwrap_or(i64::MAX)
}

/// Which `*_by` column [`record_by`] sets.
pub enum By {
    Created,
    Closed,
}

/// Records who created or closed reservation `id` (the request's token name).
pub fn record_by(tx: &Connection, id: &str, which: By, by: &str) -> rusqlite::Result<()> {
    let sql = match which {
        By::Created => "UPDATE reservations SET created_by = ?2 WHERE id = ?1",
        By::Closed => "UPDATE reservations SET closed_by = ?2 WHERE id = ?1",
    };
    tx.prepare_cached(sql)?.execute(params![id, by])?;
    Ok(())
}

/// Ends an active reservation by hand; `None` if there is no such reservation.
pub fn release(
    tx: &Connection,
    id: &str,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Option<Reservation>> {
    let Some(r) = get(tx, id)? else {
        return Ok(None);
    };
    if r.status == "active" {
        tx.prepare_cached(
            "UPDATE reservations SET status = 'released', closed_at_ms = ?2 WHERE id = ?1",
        )?
        .execute(params![id, now])?;
        refresh_hold(tx, &r.sku, &r.warehouse, now, touched)?;
    }
    get(tx, id)
}

/// Lets every active reservation past its expiry lapse; returns how many did.
pub fn expire(tx: &Connection, now: i64, touched: &mut Vec<StockKey>) -> rusqlite::Result<usize> {
    let lapsed: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(
            "UPDATE reservations SET status = 'expired', closed_at_ms = ?1
             WHERE status = 'active' AND expires_at_ms <= ?1 RETURNING sku, warehouse",
        )?;
        let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut keys = lapsed.clone();
    keys.sort();
    keys.dedup();
    for (sku, warehouse) in keys {
        refresh_hold(tx, &sku, &warehouse, now, touched)?;
    }
    Ok(lapsed.len())
}

/// A shipment of `order` just entered the ledger: its reservations hold less now.
pub(crate) fn on_shipment(
    tx: &Connection,
    order: &str,
    sku: &str,
    warehouse: &str,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<()> {
    let reserved: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM reservations WHERE order_ref = ?1 AND sku = ?2 AND warehouse = ?3)")?
        .query_row(params![order, sku, warehouse], |r| r.get(0))?;
    if reserved {
        fulfil(tx, sku, warehouse, now)?;
        refresh_hold(tx, sku, warehouse, now, touched)?;
    }
    Ok(())
}

/// Closes every active reservation of (sku, warehouse) whose order's shipments cover it,
/// and reopens a fulfilled one whose shipments no longer do (one was voided), so the status
/// depends on the set of shipments, not on their order.
fn fulfil(tx: &Connection, sku: &str, warehouse: &str, now: i64) -> rusqlite::Result<()> {
    const SHIPPED: &str = "(SELECT COALESCE(SUM(l.quantity), 0) FROM ledger l
            WHERE l.order_ref = reservations.order_ref AND l.sku = reservations.sku
              AND l.warehouse = reservations.warehouse AND l.kind = 'shipment'
              AND l.treatment IN ('apply', 'provisional'))";
    tx.prepare_cached(&format!(
        "UPDATE reservations SET status = 'fulfilled', closed_at_ms = ?3
         WHERE sku = ?1 AND warehouse = ?2 AND status = 'active' AND quantity <= {SHIPPED}"
    ))?
    .execute(params![sku, warehouse, now])?;
    tx.prepare_cached(&format!(
        "UPDATE reservations SET status = 'active', closed_at_ms = NULL
         WHERE sku = ?1 AND warehouse = ?2 AND status = 'fulfilled' AND quantity > {SHIPPED}"
    ))?
    .execute(params![sku, warehouse])?;
    Ok(())
}

/// Applies every active reservation's hold again, after the stock rows were rebuilt from the
/// ledger alone (`rebuild`, which cleared the applied holds with the rows).
pub(crate) fn reapply_all(tx: &Connection, now: i64) -> rusqlite::Result<()> {
    let keys: Vec<(String, String)> = {
        let mut stmt =
            tx.prepare("SELECT DISTINCT sku, warehouse FROM reservations WHERE status = 'active'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut touched = Vec::new();
    for (sku, warehouse) in keys {
        refresh_hold(tx, &sku, &warehouse, now, &mut touched)?;
    }
    Ok(())
}

/// Recomputes what (sku, warehouse) holds and moves the difference between `available`
/// and `reserved` on the warehouse-level row.
fn refresh_hold(
    tx: &Connection,
    sku: &str,
    warehouse: &str,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<()> {
    let should: i64 = tx
        .prepare_cached(&format!(
            "SELECT COALESCE(SUM({OPEN}), 0) FROM reservations r
             WHERE r.sku = ?1 AND r.warehouse = ?2 AND r.status = 'active'"
        ))?
        .query_row(params![sku, warehouse], |r| r.get(0))?;
    let diff = should - stock::held(tx, sku, warehouse)?;
    stock::hold(tx, sku, warehouse, diff, now, touched)
}

#[cfg(test)]
mod tests {
    use super::expiry;

    #[test]
    fn a_huge_ttl_never_wraps_into_the_past() {
        let now = 1_795_000_000_000;
        assert_eq!(expiry(now, 60), now + 60_000);
        for ttl in [
            u64::MAX,
            u64::MAX / 1000,
            i64::MAX as u64,
            (i64::MAX / 1000) as u64,
        ] {
            assert_eq!(expiry(now, ttl), i64::MAX, "{ttl}");
        }
    }
}

/// One hold of an order: `quantity` of `sku` at `warehouse`, kept as reservation `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
}

/// What a multi-hold request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatedAll {
    /// Every hold was taken.
    New(Vec<Reservation>),
    /// One (SKU, warehouse) did not have the summed demand; nothing was held.
    Insufficient {
        sku: String,
        warehouse: String,
        wanted: i64,
        available: i64,
    },
}

/// Whose holds `create_all` takes: the order, its channel, when they lapse, who asked.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub order: &'a str,
    pub channel: Option<&'a str>,
    pub expires_at_ms: Option<i64>,
    pub by: Option<&'a str>,
}

/// Takes every hold of an order or none, in the caller's (writer) transaction. Demand for
/// the same (SKU, warehouse) is summed over the holds before it is checked, so two lines
/// sharing a component cannot each see the same last unit.
pub fn create_all(
    tx: &Connection,
    owner: &Owner<'_>,
    holds: &[Hold],
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<CreatedAll> {
    let Owner {
        order,
        channel,
        expires_at_ms,
        by,
    } = *owner;
    let mut wanted: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
    for h in holds {
        let slot = wanted.entry((&h.sku, &h.warehouse)).or_default();
        *slot = slot.saturating_add(h.quantity);
    }
    for ((sku, warehouse), want) in &wanted {
        let available: i64 = stock::available_at(tx, sku, warehouse)?;
        if available < *want {
            return Ok(CreatedAll::Insufficient {
                sku: sku.to_string(),
                warehouse: warehouse.to_string(),
                wanted: *want,
                available,
            });
        }
    }
    // The held amount of a key is the sum of its active reservations' open amounts, so new
    // reservations add exactly their own open amounts: no need to re-sum the key's others.
    let mut added: std::collections::BTreeMap<(&str, &str), i64> = Default::default();
    let mut created = Vec::with_capacity(holds.len());
    for h in holds {
        tx.prepare_cached(
            "INSERT INTO reservations (id, order_ref, sku, warehouse, quantity, channel, status, created_at_ms, expires_at_ms, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?9)",
        )?
        .execute(params![h.id, order, h.sku, h.warehouse, h.quantity, channel, now, expires_at_ms, by])?;
        // Shipped before it was reserved: that much is not open.
        let open = (h.quantity - shipped(tx, order, &h.sku, &h.warehouse)?).max(0);
        let slot = added.entry((&h.sku, &h.warehouse)).or_default();
        *slot = slot.saturating_add(open);
        created.push(Reservation {
            id: h.id.clone(),
            order: order.to_string(),
            sku: h.sku.clone(),
            warehouse: h.warehouse.clone(),
            quantity: h.quantity,
            channel: channel.map(str::to_string),
            status: "active".into(),
            open,
            created_at_ms: now,
            expires_at_ms,
            closed_at_ms: None,
            created_by: by.map(str::to_string),
            closed_by: None,
        });
    }
    for ((sku, warehouse), diff) in added {
        stock::hold(tx, sku, warehouse, diff, now, touched)?;
    }
    Ok(CreatedAll::New(created))
}

/// What the ledger shipped of `sku` at `warehouse` for `order`.
fn shipped(tx: &Connection, order: &str, sku: &str, warehouse: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "SELECT COALESCE(SUM(quantity), 0) FROM ledger
         WHERE order_ref = ?1 AND sku = ?2 AND warehouse = ?3 AND kind = 'shipment'
           AND treatment IN ('apply', 'provisional')",
    )?
    .query_row(params![order, sku, warehouse], |r| r.get(0))
}

/// Lowers an active reservation's quantity by `by` (part of an order was cancelled); at 0
/// it is released. Returns the reservation as it is now.
pub fn reduce(
    tx: &Connection,
    id: &str,
    by: i64,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Option<Reservation>> {
    let Some(r) = get(tx, id)? else {
        return Ok(None);
    };
    if r.status != "active" || by <= 0 {
        return Ok(Some(r));
    }
    let left = r.quantity.saturating_sub(by).max(0);
    tx.prepare_cached(
        "UPDATE reservations SET quantity = ?2,
            status = CASE WHEN ?2 = 0 THEN 'released' ELSE status END,
            closed_at_ms = CASE WHEN ?2 = 0 THEN ?3 ELSE closed_at_ms END
         WHERE id = ?1",
    )?
    .execute(params![id, left, now])?;
    refresh_hold(tx, &r.sku, &r.warehouse, now, touched)?;
    get(tx, id)
}

/// Keeps an active reservation until it ships (the order was paid): its expiry is removed.
pub fn keep(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE reservations SET expires_at_ms = NULL WHERE id = ?1 AND status = 'active'",
    )?
    .execute([id])?;
    Ok(())
}
