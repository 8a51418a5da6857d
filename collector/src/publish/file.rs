//! Where the channel store lives: its own SQLite file beside the ledger's
//! (`<ledger stem>.channels.db`), so its fsyncs never queue behind the ledger writer's
//! group commits and its write lock is never the ledger's.
//!
//! The path is derived from the ledger's, so every reader that holds a ledger connection
//! (the exceptions queue, the daily report, the alert rules) finds the channel store without
//! being handed it. A ledger from before the split kept the channel tables in its own file:
//! on first open their rows are copied here (keys kept, so feed cursors stay valid and keep
//! growing) and the old tables are dropped from the ledger. The copy is idempotent, so a
//! crash between copy and drop only repeats the copy.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// The tables the channel store owns, in copy order.
const TABLES: [&str; 6] = [
    "channel_sellable",
    "channel_changes",
    "channel_cursors",
    "channel_state",
    "channel_errors",
    "channel_remote",
];

/// The channel store's file for the ledger at `ledger`.
pub fn beside(ledger: &Path) -> PathBuf {
    let stem = ledger
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ledger".into());
    ledger.with_file_name(format!("{stem}.channels.db"))
}

/// A read connection to the channel store beside the ledger `conn` is open on; `None` when
/// there is none yet (no publisher ever started on this ledger, or an in-memory ledger).
pub fn open_beside(ledger: &Connection) -> rusqlite::Result<Option<Connection>> {
    let Some(path) = ledger.path().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = beside(Path::new(path));
    if !path.exists() {
        return Ok(None);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(Some(conn))
}

/// Moves channel rows a ledger from before the split still holds into `conn` (the channel
/// store, schema created). Returns how many rows were copied.
pub(super) fn move_from_ledger(conn: &mut Connection, ledger: &Path) -> rusqlite::Result<usize> {
    if !ledger.exists() {
        return Ok(0);
    }
    conn.execute("ATTACH DATABASE ?1 AS legacy", [ledger.to_string_lossy()])?;
    let moved = copy_and_drop(conn);
    conn.execute("DETACH DATABASE legacy", [])?;
    moved
}

fn copy_and_drop(conn: &mut Connection) -> rusqlite::Result<usize> {
    let present: Vec<&str> = TABLES
        .into_iter()
        .filter(|t| {
            conn.query_row(
                "SELECT count(*) FROM legacy.sqlite_master WHERE type = 'table' AND name = ?1",
                [t],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|n| n > 0)
        })
        .collect();
    if present.is_empty() {
        return Ok(0);
    }
    // Copy first, in one transaction of this file (a transaction over two WAL files is not
    // atomic as a whole): rows keep their keys, so a repeat copies nothing twice.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut copied = 0;
    for table in &present {
        let columns = shared_columns(&tx, table)?;
        copied += tx.execute(
            &format!(
                "INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} FROM legacy.{table}"
            ),
            [],
        )?;
    }
    // The feed cursor never goes back, even past rows the old file had pruned.
    tx.execute(
        "UPDATE main.sqlite_sequence SET seq = max(seq, coalesce(
            (SELECT seq FROM legacy.sqlite_sequence WHERE name = 'channel_changes'), 0))
         WHERE name = 'channel_changes'",
        [],
    )?;
    tx.execute(
        "INSERT INTO main.sqlite_sequence (name, seq)
         SELECT 'channel_changes', seq FROM legacy.sqlite_sequence WHERE name = 'channel_changes'
         AND NOT EXISTS (SELECT 1 FROM main.sqlite_sequence WHERE name = 'channel_changes')",
        [],
    )?;
    tx.commit()?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for table in &present {
        tx.execute(&format!("DROP TABLE legacy.{table}"), [])?;
    }
    tx.commit()?;
    tracing::info!(
        tables = present.len(),
        rows = copied,
        "channel tables moved from the ledger file to their own file"
    );
    Ok(copied)
}

/// The columns `table` has in both files (an older ledger may lack newer ones).
fn shared_columns(conn: &Connection, table: &str) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(
        "SELECT m.name FROM pragma_table_info(?1, 'main') m
         JOIN pragma_table_info(?1, 'legacy') l ON l.name = m.name ORDER BY m.cid",
    )?;
    let names = stmt.query_map([table], |r| r.get::<_, String>(0))?;
    Ok(names.collect::<rusqlite::Result<Vec<_>>>()?.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_sits_beside_the_ledger() {
        assert_eq!(
            beside(Path::new("/var/lib/stocksync/ledger.db")),
            Path::new("/var/lib/stocksync/ledger.channels.db")
        );
        assert_eq!(beside(Path::new("ledger")), Path::new("ledger.channels.db"));
    }
}
