//! The SQLite side of routing's seam: what `Orders::candidates` needs, read from the
//! ledger inside the writer's transaction (the PostgreSQL side reads the same under its
//! advisory locks, in `store::postgres::orders`).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;

use super::config::ChannelRouting;
use super::route::Demand;
use super::{store, Orders};

/// What routing reads from the store for one order, filled by each backend (`facts`
/// for SQLite, `store::postgres::orders` for PostgreSQL) inside the transaction that takes
/// the holds: routing itself (`Orders::candidates`, `route`) never touches a store.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// Units available per SKU per warehouse, every row summed (holds already taken off).
    pub available: BTreeMap<String, BTreeMap<String, i64>>,
    /// The warehouses to consider, when the backend fixed them (PostgreSQL: the ones it
    /// locked); `None`: [`Orders::warehouses_for`] the channel.
    pub warehouses: Option<Vec<String>>,
    /// Warehouses frozen at run time, with why.
    pub frozen: BTreeMap<String, String>,
    /// When any agent of each warehouse last reported (absent: never).
    pub heard: BTreeMap<String, i64>,
    /// Orders routed today (its local day) to each warehouse that has a daily capacity.
    pub routed_today: BTreeMap<String, u64>,
}

impl Facts {
    pub(super) fn last_heard(&self, wh: &str) -> Option<i64> {
        self.heard.get(wh).copied()
    }
}

/// Available stock of the order's SKUs, frozen warehouses, when each candidate was last
/// heard from and what its daily capacity has used, as of now in `conn`.
pub fn facts(
    conn: &Connection,
    orders: &Orders,
    channel: &ChannelRouting,
    lines: &[Demand],
    at: jiff::Timestamp,
) -> rusqlite::Result<Facts> {
    let skus: BTreeSet<&String> = lines
        .iter()
        .flat_map(|l| l.parts.iter().map(|p| &p.0))
        .collect();
    let mut available = BTreeMap::new();
    for sku in skus {
        available.insert(
            sku.clone(),
            crate::stock::available_by_warehouse(conn, sku)?,
        );
    }
    let mut facts = Facts {
        frozen: store::frozen(conn)?.into_iter().collect(),
        ..Facts::default()
    };
    for wh in orders.warehouses_for(channel, &available) {
        if let Some(t) = store::last_heard(conn, &wh)? {
            facts.heard.insert(wh.clone(), t);
        }
        if let Some(day) = orders.capacity_day(&wh, at) {
            facts
                .routed_today
                .insert(wh.clone(), store::routed_on(conn, &wh, &day)?);
        }
    }
    facts.available = available;
    Ok(facts)
}
