//! Rebuilding the whole projection from the ledger alone: for a projection lost, damaged, or
//! computed by an older version of the rules.
//!
//! The ledger is the truth; `stock` and `stock_last_count` are derived and are cleared and
//! recomputed, and the drift, conflict and discrepancy records are rewritten in place (so
//! their `recorded_at_ms` survives). It uses the same replay as the incremental path
//! (`replay::Replay`), reading the ledger once in key order and replaying each (SKU,
//! warehouse) once for all its bins (a warehouse-level count counts them all), so the result
//! is the one the incremental path reaches, whatever order the movements arrived in. Physical states come
//! from the replay of each key; `in_transit` and `incoming`, which counts never touch, are
//! summed over every movement that affects a key, wherever it is recorded.
//!
//! It refuses to run while a collector holds the ledger's lock (`lock`); it is one
//! transaction, all or nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rusqlite::Connection;
use stocksync_common::MovementKind;

use crate::authority::Treatment;
use crate::ledger::LedgerError;
use crate::merge::{self, Change, States};
use crate::projection::{self, Entry, Order};
use crate::records;
use crate::replay::{is_barrier, Replay};
use crate::stock::{self, StockKey};

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Ledger rows read.
    pub movements: u64,
    /// Stock rows written.
    pub keys: u64,
}

/// Rebuilds the projection of the ledger file at `path`; `progress(done, total)` is called
/// every 100,000 ledger rows and at the end.
pub fn rebuild(path: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Rebuilt, LedgerError> {
    if !path.exists() {
        return Err(LedgerError::Sqlite(rusqlite::Error::InvalidPath(
            path.to_owned(),
        )));
    }
    // Refused while a collector (or another rebuild) uses the file.
    let _lock = crate::lock::LedgerLock::acquire(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The scan in key order visits the ledger's pages at random: map the file (SQLite caps
    // this at its compiled maximum, 2 GB by default) instead of a pread and copy per page.
    conn.pragma_update(None, "mmap_size", 1i64 << 40)?;
    crate::ledger::migrate(&conn, path)?;
    let tx = conn.transaction()?;
    let total: i64 = tx.query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get(0))?;
    stock::clear(&tx)?;
    let now = stocksync_common::OccurredAt::now().unix_ms;
    let mut state = Rebuild::default();
    {
        let mut stmt = tx.prepare(
            "SELECT agent_id, treatment, returns_to, payload, sku, warehouse, bin FROM ledger
             ORDER BY sku, warehouse, bin",
        )?;
        let mut rows = stmt.query([])?;
        let mut done = 0u64;
        while let Some(row) = rows.next()? {
            let key: (String, String) = (row.get(4)?, row.get(5)?);
            let entry = projection::entry_row(row)?;
            if state.key.as_ref() != Some(&key) {
                state.flush(&tx, now)?;
                state.key = Some(key);
            }
            state.add(entry);
            done += 1;
            if done.is_multiple_of(100_000) {
                progress(done, total as u64);
            }
        }
        state.flush(&tx, now)?;
        progress(done, total as u64);
        state.movements = done;
    }
    let keys = state.finish(&tx, now)?;
    // Reservations are not movements: their holds go back on the rebuilt rows.
    crate::reserve::reapply_all(&tx, now)?;
    tx.commit()?;
    Ok(Rebuilt {
        movements: state.movements,
        keys,
    })
}

/// The (SKU, warehouse) being replayed and what the whole scan has gathered so far.
#[derive(Default)]
struct Rebuild {
    /// (sku, warehouse) of `group`: a warehouse-level count counts the total, so a
    /// warehouse's keys are replayed together.
    key: Option<(String, String)>,
    /// This warehouse's entries with an effect or a count (what `projection::recompute`
    /// replays).
    group: Vec<Entry>,
    /// Bins for which the incremental path would have written a stock row.
    touched: BTreeSet<String>,
    /// `in_transit` / `incoming` sums per key.
    elsewhere: HashMap<StockKey, States>,
    /// (transfer, sku) pairs whose discrepancy is recomputed at the end.
    transfers: BTreeSet<(String, String)>,
    movements: u64,
}

impl Rebuild {
    fn add(&mut self, e: Entry) {
        let transfer = matches!(
            e.movement.kind,
            MovementKind::TransferOut | MovementKind::TransferIn
        );
        if transfer && e.treatment.has_effect() {
            if let Some(t) = &e.movement.references.transfer {
                self.transfers.insert((t.clone(), e.movement.sku.0.clone()));
            }
        }
        let bin = e.movement.location.bin_key().to_string();
        match merge::change(&e.movement, e.returns_to) {
            Change::Count { .. } if counts(e.treatment) => {
                self.touched.insert(bin);
            }
            Change::Deltas(effects) if e.treatment.has_effect() => {
                for eff in effects {
                    let k = StockKey::at(&e.movement.sku.0, &eff.location);
                    let (physical, elsewhere) = projection::split(eff.delta);
                    if physical != States::default() {
                        self.touched.insert(bin.clone());
                    }
                    if elsewhere != States::default() {
                        self.elsewhere.entry(k).or_default().add(&elsewhere);
                    }
                }
            }
            _ => {}
        }
        if matches!(
            e.treatment,
            Treatment::Apply | Treatment::Provisional | Treatment::Conflict
        ) {
            self.group.push(e);
        }
    }

    /// Replays the current warehouse and writes its stock rows, last barriers and records.
    fn flush(&mut self, tx: &Connection, now: i64) -> Result<(), rusqlite::Error> {
        let Some((sku, warehouse)) = self.key.take() else {
            return Ok(());
        };
        let mut group = std::mem::take(&mut self.group);
        group.sort_by_cached_key(Entry::order);
        let mut replay = Replay::new(&warehouse);
        let mut last: BTreeMap<String, Order> = BTreeMap::new();
        for e in &group {
            let own = e.movement.location.bin_key();
            if is_barrier(e) {
                last.insert(own.to_string(), e.order());
            }
            for (bin, step) in replay.apply(e) {
                if let Some(w) = records::of_step(e, &bin, &step) {
                    records::write(tx, &w, now)?;
                }
            }
        }
        for (bin, at) in last {
            let key = StockKey {
                sku: sku.clone(),
                warehouse: warehouse.clone(),
                bin,
            };
            stock::set_last_count(tx, &key, &at)?;
        }
        let mut bins = std::mem::take(&mut self.touched);
        bins.extend(
            self.elsewhere
                .keys()
                .filter(|k| k.sku == sku && k.warehouse == warehouse)
                .map(|k| k.bin.clone()),
        );
        for bin in bins {
            let key = StockKey {
                sku: sku.clone(),
                warehouse: warehouse.clone(),
                bin,
            };
            let elsewhere = self.elsewhere.remove(&key).unwrap_or_default();
            let physical = projection::split(replay.at(&key.bin)).0;
            stock::rebuilt_row(tx, &key, &physical, &elsewhere, now)?;
        }
        Ok(())
    }

    /// Adds what movements recorded at later keys did to earlier ones (a transfer's peer,
    /// whose key may sort before the transfer's own), and writes the discrepancies.
    fn finish(&mut self, tx: &Connection, now: i64) -> Result<u64, rusqlite::Error> {
        for (key, elsewhere) in std::mem::take(&mut self.elsewhere) {
            stock::rebuilt_row(tx, &key, &States::default(), &elsewhere, now)?;
        }
        for (transfer, sku) in std::mem::take(&mut self.transfers) {
            records::update_discrepancy(tx, &transfer, &sku, now)?;
        }
        stock::count_rows(tx)
    }
}

/// Counts that take part in a key's replay: the authority's and the conflicting ones.
fn counts(t: Treatment) -> bool {
    matches!(t, Treatment::Apply | Treatment::Conflict)
}
