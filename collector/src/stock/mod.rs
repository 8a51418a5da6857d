//! Stock levels as stored: the one module that reads or writes the `stock` rows, the latest
//! barrier of each key (`stock_last_count`) and the held amount per (SKU, warehouse)
//! (`reservation_holds`).
//!
//! Who decides what stock is lives elsewhere: `ledger` decides which movements count and
//! stores them, `projection` (with `merge` and `replay`) computes what they do, `reserve`
//! and `orders` decide what is held. They hand this module the result; it keeps the rows.
//! API handlers, channel publishing, reports and routing read levels through it too, so a
//! change of layout (or of backend) is made here and nowhere else. Every statement is
//! `prepare_cached`: the ingest path calls `write` functions once per touched key per batch.
//!
//! Invariant kept here: a key's row is only ever changed by adding a delta, by setting its
//! physical states from a replay (leaving `in_transit` and `incoming`, which counts never
//! touch), or by moving a hold between `available` and `reserved`; so `on_hand` changes
//! only through movements.

use serde::Serialize;
use stocksync_common::Location;

use crate::merge::States;

mod read;
mod source;
mod write;

pub use read::{
    at_bin, at_warehouse, available_at, available_by_warehouse, by_sku, for_each_available,
    has_warehouse, held, known_sku, last_change, skus, states, warehouse_total,
};
pub use source::{AvailableRows, Rows};
pub(crate) use write::{
    add, clear, count_rows, hold, last_count, rebuilt_row, set_last_count, set_physical,
};

/// A (SKU, location): `bin` is `""` for the warehouse-level row (stock not assigned to a
/// bin, transfers on their way, holds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StockKey {
    pub sku: String,
    pub warehouse: String,
    pub bin: String,
}

impl StockKey {
    /// The key of `sku` at `location`.
    pub fn at(sku: &str, location: &Location) -> StockKey {
        StockKey {
            sku: sku.to_string(),
            warehouse: location.warehouse.clone(),
            bin: location.bin_key().to_string(),
        }
    }

    /// The warehouse-level key of the same SKU and warehouse.
    pub fn whole(&self) -> StockKey {
        StockKey {
            bin: String::new(),
            ..self.clone()
        }
    }
}

/// Position of a movement in the replay order: `(occurred_at, agent_id, seq)`.
pub type Order = (i64, String, u64);

/// One stored row as people read it: a (SKU, location) with its states.
#[derive(Debug, Clone, Serialize)]
pub struct Levels {
    pub sku: String,
    pub warehouse: String,
    /// `None` for the warehouse-level row.
    pub bin: Option<String>,
    pub on_hand: i64,
    #[serde(flatten)]
    pub states: States,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// SQL names of the tables this module owns.
    const OWNED: &[&str] = &["stock", "stock_last_count", "reservation_holds"];

    /// Statements that would touch an owned table: `FROM stock`, `INTO stock`, ...
    fn touches(text: &str) -> Option<String> {
        let words: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        words.windows(2).find_map(|w| {
            // SQL is written in capitals here; prose ("taken from stock") is not SQL.
            let verb = matches!(w[0], "FROM" | "INTO" | "UPDATE" | "JOIN" | "TABLE");
            (verb && OWNED.contains(&w[1])).then(|| format!("{} {}", w[0], w[1]))
        })
    }

    fn scan(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let skip = path.ends_with("stock") || path.ends_with("postgres");
            if path.is_dir() && !skip {
                scan(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Some(what) = touches(&text) {
                    found.push(format!("{}: {what}", path.display()));
                }
            }
        }
    }

    /// The invariant of this module's doc, checked on the source: no other module of the
    /// SQLite collector names an owned table in SQL (the PostgreSQL store has its own).
    #[test]
    fn no_other_module_reads_or_writes_stock_rows() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        scan(&src, &mut found);
        assert!(found.is_empty(), "SQL on stock outside `stock`: {found:#?}");
        assert_eq!(
            touches("SELECT x FROM stock_last_count"),
            Some("FROM stock_last_count".into())
        );
        assert_eq!(touches("the stock rows; taken from stock"), None);
    }
}
