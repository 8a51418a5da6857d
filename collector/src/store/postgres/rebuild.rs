//! `stocksync-collector rebuild` on PostgreSQL: the projection computed again from the ledger
//! alone, for a projection damaged or computed by an older version of the rules.
//!
//! One transaction, online: it takes the advisory lock of every (SKU, warehouse) the ledger
//! or the stock table knows, in the batch path's order (`project::lock`, then the transfer
//! and order locks of `records::settle`), so batches, voids and reservations of those keys
//! wait for it and it never sees half of one. Under the locks those keys' stock rows and last
//! barriers are cleared and written again by the batch path's own replay
//! (`project::rebuild`: physical states, drift, conflict and shortfall records, reservation
//! holds on the warehouse-level row), `in_transit` and `incoming` summed over every movement
//! that affects a key, and the transfer discrepancies and order reversals computed again.
//! Keys first seen after the locks were taken are not touched: their batches commit their
//! own rows. Every stock row that differs from what it was is
//! reported, and its SKU goes to the outbox so channels republish.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Transaction;

use super::{now_ms, project, records, PgError};
use crate::merge::{self, Change, States};
use crate::projection::{split, Entry, Order};
use crate::replay::is_barrier;
use crate::stock::StockKey;

/// A stock row's states: available, reserved, damaged, quality_control, in_transit, incoming.
pub type Row = [i64; 6];

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Ledger rows replayed (voided and audit-only rows are not).
    pub movements: u64,
    /// (SKU, warehouse) pairs replayed.
    pub keys: u64,
    /// Every stock row that changed: before (`None`: no row) and after.
    pub differences: Vec<(StockKey, Option<Row>, Option<Row>)>,
}

/// Rebuilds the projection of the store `store` names; `progress(done, total)` is called
/// after every 1,000 (SKU, warehouse) pairs and at the end.
pub async fn rebuild(
    store: &crate::store::StoreConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, PgError> {
    let pool = super::pool_for(store, 1, None)?;
    let mut client = pool.get().await?;
    super::schema::migrate(&mut client).await?;
    let p = client.prepared();
    let tx = client.transaction().await?;
    let groups: Vec<(String, String)> = tx
        .query(
            "SELECT sku, warehouse FROM ledger UNION SELECT sku, warehouse FROM stock",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    project::lock(&tx, &p, &groups).await?;
    let now = now_ms();
    let before = rows(&tx).await?;
    let entries = entries(&tx).await?;
    let (skus, warehouses): (Vec<&str>, Vec<&str>) =
        groups.iter().map(|(s, w)| (s.as_str(), w.as_str())).unzip();
    for table in ["stock_last_count", "stock"] {
        let sql = format!(
            "DELETE FROM {table} t USING unnest($1::text[], $2::text[]) AS g(sku, warehouse)
             WHERE t.sku = g.sku AND t.warehouse = g.warehouse"
        );
        tx.execute(&sql, &[&skus, &warehouses]).await?;
    }
    // The warehouse-level rows start from what reservations hold; the replay adds the rest.
    tx.execute(
        "INSERT INTO stock (sku, warehouse, bin, available, reserved, updated_at_ms)
         SELECT h.sku, h.warehouse, '', -h.held, h.held, $3
         FROM reservation_holds h JOIN unnest($1::text[], $2::text[]) AS g(sku, warehouse)
           ON h.sku = g.sku AND h.warehouse = g.warehouse
         WHERE h.held <> 0",
        &[&skus, &warehouses, &now],
    )
    .await?;
    let locked: BTreeSet<&(String, String)> = groups.iter().collect();
    let mut by_group: BTreeMap<(String, String), Vec<&Entry>> = BTreeMap::new();
    for e in &entries {
        let key = (
            e.movement.sku.0.clone(),
            e.movement.location.warehouse.clone(),
        );
        if locked.contains(&key) {
            by_group.entry(key).or_default().push(e);
        }
    }
    let total = by_group.len() as u64;
    for (done, ((sku, warehouse), members)) in by_group.iter().enumerate() {
        barriers(&tx, sku, warehouse, members).await?;
        project::rebuild(&tx, &p, sku, warehouse, now).await?;
        if (done + 1) % 1000 == 0 {
            progress(done as u64 + 1, total);
        }
    }
    progress(total, total);
    let mut elsewhere = elsewhere(&entries);
    elsewhere.retain(|k, _| locked.contains(&(k.sku.clone(), k.warehouse.clone())));
    project::add(&tx, &p, &elsewhere, now).await?;
    records::settle(&tx, &p, &entries, now).await?;
    let after = rows(&tx).await?;
    let differences = differences(&before, &after);
    let skus: BTreeSet<&str> = differences.iter().map(|(k, _, _)| k.sku.as_str()).collect();
    let skus: Vec<&str> = skus.into_iter().collect();
    tx.execute(
        "INSERT INTO outbox (sku, created_at_ms) SELECT s, $2 FROM unnest($1::text[]) AS s",
        &[&skus, &now],
    )
    .await?;
    tx.commit().await?;
    Ok(Rebuilt {
        movements: entries.len() as u64,
        keys: total,
        differences,
    })
}

/// Every ledger entry a replay takes part in.
async fn entries(tx: &Transaction<'_>) -> Result<Vec<Entry>, PgError> {
    let rows = tx
        .query(
            "SELECT agent_id, treatment, returns_to, payload FROM ledger
             WHERE treatment IN ('apply', 'provisional', 'conflict')",
            &[],
        )
        .await?;
    rows.iter().map(project::entry).collect()
}

/// Writes the latest barrier of every bin of one (SKU, warehouse), as the batch path keeps it.
async fn barriers(
    tx: &Transaction<'_>,
    sku: &str,
    warehouse: &str,
    members: &[&Entry],
) -> Result<(), PgError> {
    let mut last: BTreeMap<&str, (Order, &Entry)> = BTreeMap::new();
    for e in members.iter().filter(|e| is_barrier(e)) {
        let bin = e.movement.location.bin_key();
        if last.get(bin).is_none_or(|(o, _)| e.order() > *o) {
            last.insert(bin, (e.order(), e));
        }
    }
    for (bin, (_, e)) in last {
        tx.execute(
            "INSERT INTO stock_last_count (sku, warehouse, bin, occurred_at_ms, agent_id, seq)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &sku,
                &warehouse,
                &bin,
                &e.movement.occurred_at.unix_ms,
                &e.agent_id,
                &(e.movement.seq as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

/// `in_transit` and `incoming`, which counts never touch: summed per key over every movement
/// with an effect, wherever it is recorded.
fn elsewhere(entries: &[Entry]) -> BTreeMap<StockKey, States> {
    let mut out: BTreeMap<StockKey, States> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.treatment.has_effect()) {
        if let Change::Deltas(effects) = merge::change(&e.movement, e.returns_to) {
            for eff in effects {
                let (_, other) = split(eff.delta);
                if other != States::default() {
                    let key = StockKey::at(&e.movement.sku.0, &eff.location);
                    out.entry(key).or_default().add(&other);
                }
            }
        }
    }
    out
}

/// Every stock row that is not all zero.
async fn rows(tx: &Transaction<'_>) -> Result<BTreeMap<StockKey, Row>, PgError> {
    let rows = tx
        .query(
            "SELECT sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming
             FROM stock",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let key = StockKey {
                sku: r.get(0),
                warehouse: r.get(1),
                bin: r.get(2),
            };
            (key, std::array::from_fn(|i| r.get(i + 3)))
        })
        .filter(|(_, row): &(StockKey, Row)| *row != [0; 6])
        .collect())
}

/// The rows that differ between `before` and `after`, in key order.
fn differences(
    before: &BTreeMap<StockKey, Row>,
    after: &BTreeMap<StockKey, Row>,
) -> Vec<(StockKey, Option<Row>, Option<Row>)> {
    let keys: BTreeSet<&StockKey> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get(k).copied(), after.get(k).copied());
            (b != a).then(|| (k.clone(), b, a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_row_that_changed_appeared_or_went() {
        let key = |bin: &str| StockKey {
            sku: "MUG".into(),
            warehouse: "ams".into(),
            bin: bin.into(),
        };
        let before = BTreeMap::from([(key("A"), [5, 0, 0, 0, 0, 0]), (key("B"), [1; 6])]);
        let after = BTreeMap::from([
            (key("A"), [7, 0, 0, 0, 0, 0]),
            (key("C"), [2; 6]),
            (key("B"), [1; 6]),
        ]);
        assert_eq!(
            differences(&before, &after),
            [
                (key("A"), Some([5, 0, 0, 0, 0, 0]), Some([7, 0, 0, 0, 0, 0])),
                (key("C"), None, Some([2; 6])),
            ]
        );
        assert!(differences(&after, &after).is_empty());
    }
}
