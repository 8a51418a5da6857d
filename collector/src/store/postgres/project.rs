//! The projection of one batch's new ledger rows in PostgreSQL, computed by the same pure
//! code as the SQLite projection: `merge::change` for what a movement does, `projection::split`
//! for its physical part and the part counts never touch, `replay::Replay` for a
//! (SKU, warehouse) whose order-dependent movements (counts, inspections, write-offs) need a
//! replay from the ledger. The rule is `projection`'s: a delta ordered after its key's
//! latest barrier is added; a barrier, or a delta ordered before one, replays the whole
//! (SKU, warehouse) from the ledger and writes every bin's physical states.
//!
//! Every (SKU, warehouse) the batch touches (its own, and a transfer's peer for
//! `in_transit`) is locked first, in one global order (a transaction-scoped advisory lock on
//! a hash of the pair, taken in ascending order), so two workers never interleave on a row
//! and never deadlock on each other's locks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::Digest;
use stocksync_common::wire;
use tokio_postgres::Transaction;

use super::{PgError, Prepared};
use crate::authority::{parse_returns_to, Treatment};
use crate::ledger::StockKey;
use crate::merge::{self, Change, States};
use crate::projection::{key_at, split, Entry, Order};
use crate::replay::{is_barrier, Replay};

/// (SKU, warehouse): the unit of locking and of replay.
type Group = (String, String);

/// The latest barrier of every bin, per (SKU, warehouse), read under the locks.
pub(super) type Barriers = HashMap<Group, HashMap<String, Order>>;

/// Every (SKU, warehouse) `entries` touch: their own, and the other warehouse of each
/// effect (a transfer's peer, for `in_transit`). What [`lock_and_read`] must lock before
/// [`project`] may write.
pub(super) fn keys<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<Group> {
    let mut keys = BTreeSet::new();
    for e in entries {
        keys.insert((
            e.movement.sku.0.clone(),
            e.movement.location.warehouse.clone(),
        ));
        if let Change::Deltas(effects) = merge::change(&e.movement, e.returns_to) {
            for eff in effects {
                let (_, other) = split(eff.delta);
                if other != States::default() {
                    let key = key_at(&e.movement.sku.0, &eff.location);
                    keys.insert((key.sku, key.warehouse));
                }
            }
        }
    }
    keys.into_iter().collect()
}

/// Locks `keys` and reads their latest barriers. The two statements go out together: the
/// server runs them in order, so the read sees what the last holder of each lock committed.
pub(super) async fn lock_and_read(
    tx: &Transaction<'_>,
    p: &Prepared,
    keys: &[Group],
) -> Result<Barriers, PgError> {
    let (lock_ids, take) = lock_statement(tx, p, keys).await?;
    let read = p.get(tx, BARRIERS).await?;
    let (skus, warehouses): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(s, w)| (s.as_str(), w.as_str())).unzip();
    let params: (&Vec<i64>, &Vec<&str>, &Vec<&str>) = (&lock_ids, &skus, &warehouses);
    let (_, rows) = tokio::try_join!(async { tx.execute(&take, &[params.0]).await }, async {
        tx.query(&read, &[params.1, params.2]).await
    },)?;
    let mut last: Barriers = HashMap::new();
    for r in &rows {
        last.entry((r.get(0), r.get(1)))
            .or_default()
            .insert(r.get(2), (r.get(3), r.get(4), r.get::<_, i64>(5) as u64));
    }
    Ok(last)
}

const BARRIERS: &str = "SELECT c.sku, c.warehouse, c.bin, c.occurred_at_ms, c.agent_id, c.seq
     FROM stock_last_count c JOIN unnest($1::text[], $2::text[]) AS g(sku, warehouse)
       ON c.sku = g.sku AND c.warehouse = g.warehouse";

/// Projects `entries` (new in this transaction), whose keys the transaction holds
/// ([`lock_and_read`], which gave `last`): replays what needs a replay, and returns the
/// deltas to add with the SKUs whose stock changed.
pub(super) async fn project(
    tx: &Transaction<'_>,
    p: &Prepared,
    entries: &[Entry],
    mut last: Barriers,
    now: i64,
) -> Result<Projected, PgError> {
    let mut groups: BTreeMap<Group, Vec<&Entry>> = BTreeMap::new();
    let mut elsewhere: BTreeMap<StockKey, States> = BTreeMap::new();
    for e in entries {
        let sku = e.movement.sku.0.clone();
        groups
            .entry((sku.clone(), e.movement.location.warehouse.clone()))
            .or_default()
            .push(e);
        if let Change::Deltas(effects) = merge::change(&e.movement, e.returns_to) {
            for eff in effects.into_iter().filter(|_| e.treatment.has_effect()) {
                let (_, other) = split(eff.delta);
                if other != States::default() {
                    elsewhere
                        .entry(key_at(&sku, &eff.location))
                        .or_default()
                        .add(&other);
                }
            }
        }
    }
    let mut changed = BTreeSet::new();
    // Every incremental delta of the batch, summed per row and written in one statement.
    let mut deltas = elsewhere;
    for ((sku, warehouse), members) in &groups {
        let last = last.entry((sku.clone(), warehouse.clone())).or_default();
        match project_group(tx, p, sku, warehouse, members, last, now).await? {
            GroupChange::Rebuilt => {
                changed.insert(sku.clone());
            }
            GroupChange::Deltas(group) => {
                for (bin, delta) in group {
                    let key = StockKey {
                        sku: sku.clone(),
                        warehouse: warehouse.clone(),
                        bin,
                    };
                    deltas.entry(key).or_default().add(&delta);
                }
            }
        }
    }
    changed.extend(deltas.keys().map(|k| k.sku.clone()));
    Ok(Projected { changed, deltas })
}

/// What [`project`] leaves to write: the caller sends [`add`] with its other writes.
pub(super) struct Projected {
    /// The SKUs whose stock changed (replayed ones are written already).
    pub changed: BTreeSet<String>,
    /// Deltas to add, one per stock row.
    pub deltas: BTreeMap<StockKey, States>,
}

/// What projecting one (SKU, warehouse) did.
enum GroupChange {
    /// Replayed from the ledger and written.
    Rebuilt,
    /// Deltas per bin, still to be added.
    Deltas(BTreeMap<String, States>),
}

/// Takes the advisory locks of `groups` in ascending lock-id order, in one statement
/// (PostgreSQL evaluates a volatile output expression after the `ORDER BY`).
pub(super) async fn lock(
    tx: &Transaction<'_>,
    p: &Prepared,
    groups: &[Group],
) -> Result<(), PgError> {
    let (ids, take) = lock_statement(tx, p, groups).await?;
    tx.execute(&take, &[&ids]).await?;
    Ok(())
}

/// The sorted lock ids of `groups` and the statement that takes them.
async fn lock_statement(
    tx: &Transaction<'_>,
    p: &Prepared,
    groups: &[Group],
) -> Result<(Vec<i64>, tokio_postgres::Statement), PgError> {
    let mut ids: Vec<i64> = groups.iter().map(lock_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let take = p
        .get(
            tx,
            "SELECT pg_advisory_xact_lock(id) FROM unnest($1::bigint[]) AS t(id) ORDER BY id",
        )
        .await?;
    Ok((ids, take))
}

/// A stable 64-bit id of a (SKU, warehouse), the same in every worker.
fn lock_id((sku, warehouse): &Group) -> i64 {
    let mut h = sha2::Sha256::new();
    h.update(sku.as_bytes());
    h.update([0]);
    h.update(warehouse.as_bytes());
    let digest = h.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Projects the new entries of one (SKU, warehouse); `last` holds its bins' latest barriers.
#[allow(clippy::too_many_arguments)]
async fn project_group(
    tx: &Transaction<'_>,
    p: &Prepared,
    sku: &str,
    warehouse: &str,
    members: &[&Entry],
    last: &mut HashMap<String, Order>,
    now: i64,
) -> Result<GroupChange, PgError> {
    let mut replay = false;
    let mut deltas: BTreeMap<String, States> = BTreeMap::new();
    for e in members {
        let bin = e.movement.location.bin_key().to_string();
        let before =
            |b: &str, last: &HashMap<String, Order>| last.get(b).is_some_and(|c| e.order() < *c);
        if is_barrier(e) {
            replay = true;
            if !before(&bin, last) {
                note_barrier(tx, p, e).await?;
                last.insert(bin.clone(), e.order());
            }
            continue;
        }
        let Change::Deltas(effects) = merge::change(&e.movement, e.returns_to) else {
            continue;
        };
        if !e.treatment.has_effect() {
            continue;
        }
        for eff in effects {
            let (physical, _) = split(eff.delta);
            if physical == States::default() || eff.location.warehouse != warehouse {
                continue;
            }
            if before(&bin, last) || (!bin.is_empty() && before("", last)) {
                replay = true;
            }
            deltas.entry(bin.clone()).or_default().add(&physical);
        }
    }
    if replay {
        rebuild(tx, p, sku, warehouse, now).await?;
        return Ok(GroupChange::Rebuilt);
    }
    Ok(GroupChange::Deltas(deltas))
}

/// Remembers the latest barrier of a key, so later deltas know whether they may be added.
async fn note_barrier(tx: &Transaction<'_>, p: &Prepared, e: &Entry) -> Result<(), PgError> {
    let key = e.key();
    tx.execute(
        &p.get(tx, "INSERT INTO stock_last_count (sku, warehouse, bin, occurred_at_ms, agent_id, seq) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            occurred_at_ms = excluded.occurred_at_ms, agent_id = excluded.agent_id, seq = excluded.seq").await?,
        &[
            &key.sku,
            &key.warehouse,
            &key.bin,
            &e.movement.occurred_at.unix_ms,
            &e.agent_id,
            &(e.movement.seq as i64),
        ],
    )
    .await?;
    Ok(())
}

/// Replays every movement of a (SKU, warehouse) from the ledger in the replay order and
/// writes each bin's physical states (`in_transit` and `incoming` are sums, kept apart) and
/// the drift, conflict and shortfall records the replay found (`records`).
pub(super) async fn rebuild(
    tx: &Transaction<'_>,
    p: &Prepared,
    sku: &str,
    warehouse: &str,
    now: i64,
) -> Result<(), PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT agent_id, treatment, returns_to, payload FROM ledger
             WHERE sku = $1 AND warehouse = $2 AND treatment IN ('apply', 'provisional', 'conflict')").await?,
            &[&sku, &warehouse],
        )
        .await?;
    let mut entries = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_cached_key(Entry::order);
    let mut replay = Replay::new(warehouse);
    let steps: Vec<_> = entries.iter().map(|e| replay.apply(e)).collect();
    super::records::of_replay(tx, p, &entries, &steps, now).await?;
    // The warehouse-level row also shows what reservations hold (`reserve`).
    let held = super::reserve::held(tx, p, sku, warehouse).await?;
    for (bin, s) in replay.bins() {
        let (available, reserved) = match bin.is_empty() {
            true => (s.available - held, s.reserved + held),
            false => (s.available, s.reserved),
        };
        tx.execute(
            &p.get(tx, "INSERT INTO stock (sku, warehouse, bin, available, reserved, damaged, quality_control, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
                available = excluded.available, reserved = excluded.reserved,
                damaged = excluded.damaged, quality_control = excluded.quality_control,
                updated_at_ms = excluded.updated_at_ms").await?,
            &[
                &sku,
                &warehouse,
                bin,
                &available,
                &reserved,
                &s.damaged,
                &s.quality_control,
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}

/// A ledger row read as `agent_id, treatment, returns_to, payload`, as the replay takes it.
pub(super) fn entry(r: &tokio_postgres::Row) -> Result<Entry, PgError> {
    let movement = wire::decode_movement(r.get(3)).map_err(|e| {
        PgError::Corrupt(format!(
            "ledger row of agent `{}`: {e}",
            r.get::<_, &str>(0)
        ))
    })?;
    Ok(Entry {
        agent_id: r.get(0),
        treatment: Treatment::parse(r.get(1)),
        returns_to: parse_returns_to(r.get(2)),
        movement,
    })
}

/// Adds each delta to its stock row, in one statement (one delta per row: summed before).
pub(super) async fn add(
    tx: &Transaction<'_>,
    p: &Prepared,
    deltas: &BTreeMap<StockKey, States>,
    now: i64,
) -> Result<(), PgError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let keys = deltas.keys();
    let sku: Vec<&str> = keys.clone().map(|k| k.sku.as_str()).collect();
    let warehouse: Vec<&str> = keys.clone().map(|k| k.warehouse.as_str()).collect();
    let bin: Vec<&str> = keys.map(|k| k.bin.as_str()).collect();
    let column = |f: fn(&States) -> i64| deltas.values().map(f).collect::<Vec<i64>>();
    tx.execute(
        &p.get(tx, "INSERT INTO stock (sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming, updated_at_ms)
         SELECT *, $10 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            available = stock.available + excluded.available,
            reserved = stock.reserved + excluded.reserved,
            damaged = stock.damaged + excluded.damaged,
            quality_control = stock.quality_control + excluded.quality_control,
            in_transit = stock.in_transit + excluded.in_transit,
            incoming = stock.incoming + excluded.incoming,
            updated_at_ms = excluded.updated_at_ms").await?,
        &[
            &sku,
            &warehouse,
            &bin,
            &column(|s| s.available),
            &column(|s| s.reserved),
            &column(|s| s.damaged),
            &column(|s| s.quality_control),
            &column(|s| s.in_transit),
            &column(|s| s.incoming),
            &now,
        ],
    )
    .await?;
    Ok(())
}
