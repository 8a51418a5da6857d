//! Version 1 of the ledger file: the layout of the last release without a version number,
//! and how a file any earlier release wrote (`user_version` 0) is brought to it.
//!
//! Before versioning, each start created missing tables (`CREATE ... IF NOT EXISTS`), added
//! the columns later releases introduced and moved two tables to rowid storage. This
//! migration is that procedure, frozen: on an empty file it creates version 1, on an older
//! file it fills in whatever that release lacked, so every unversioned file ends in the
//! same layout. It is idempotent, which matters only for files from before versioning.
//!
//! `orders` and `reservations` were first `WITHOUT ROWID` tables keyed by their text ids.
//! Their rows are large (an order keeps its record and first answer) and channel order ids
//! arrive in no particular order, so every insert landed in the middle of a clustered
//! B-tree: page splits and a distinct dirty page per order in every group commit. As rowid
//! tables they are appended at the end, and only the small id index takes random inserts.
//! Files with the old layout are copied over, once, inside this migration's transaction.

use rusqlite::Connection;

/// Every table and index of version 1 (the added columns' indexes are in `INDEXES`).
const TABLES: &str = include_str!("v1.sql");

/// Columns added after the first layout, as `(table, column, declaration)`; a fresh file
/// gets them the same way, so that fresh and upgraded files have one layout.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("ledger", "treatment", "TEXT NOT NULL DEFAULT 'apply'"),
    (
        "ledger",
        "returns_to",
        "TEXT NOT NULL DEFAULT 'quality_control'",
    ),
    ("ledger", "transfer", "TEXT"),
    ("ledger", "peer", "TEXT"),
    ("rejects", "field", "TEXT"),
    ("ledger", "order_ref", "TEXT"),
    ("rejects", "retried_at_ms", "INTEGER"),
    ("reservations", "created_by", "TEXT"),
    ("reservations", "closed_by", "TEXT"),
    ("agents", "clock_skew_ms", "INTEGER"),
    ("exceptions", "attempts", "INTEGER NOT NULL DEFAULT 0"),
];

/// Indexes on added columns: created once the columns are there.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS ledger_by_transfer ON ledger (transfer, sku) WHERE transfer IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_peer ON ledger (sku, peer) WHERE peer IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_order ON ledger (order_ref, sku) WHERE order_ref IS NOT NULL;
";

/// Brings an unversioned file (empty, or written by any release before versioning) to
/// version 1, inside the caller's transaction.
pub(super) fn apply(conn: &Connection) -> rusqlite::Result<()> {
    let moved = set_aside(conn)?;
    conn.execute_batch(TABLES)?;
    for (table, column, decl) in ADDED_COLUMNS {
        let exists: bool = conn.query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    if !moved.is_empty() {
        copy_back(conn, &moved)?;
        // Their indexes went with the old tables: create them on the new ones.
        conn.execute_batch(TABLES)?;
    }
    conn.execute_batch(INDEXES)
}

/// Tables that moved from `WITHOUT ROWID` to rowid storage.
const NOW_ROWID: &[&str] = &["orders", "reservations"];

fn without_rowid(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .ok();
    Ok(sql.is_some_and(|s| s.to_ascii_uppercase().contains("WITHOUT ROWID")))
}

/// Renames old-layout tables out of the way; returns the ones renamed. Run before `TABLES`
/// creates them again.
fn set_aside(conn: &Connection) -> rusqlite::Result<Vec<&'static str>> {
    let mut moved = Vec::new();
    for table in NOW_ROWID {
        if without_rowid(conn, table)? {
            conn.execute_batch(&format!("ALTER TABLE {table} RENAME TO {table}_old_layout"))?;
            moved.push(*table);
        }
    }
    Ok(moved)
}

/// Copies each set-aside table into its new one (every column the old one had, the schema
/// and its added columns already applied) and drops the old one with its indexes.
fn copy_back(conn: &Connection, moved: &[&str]) -> rusqlite::Result<()> {
    for table in moved {
        let old = format!("{table}_old_layout");
        let columns: Vec<String> = {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let rows = stmt.query_map([&old], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let list = columns.join(", ");
        conn.execute_batch(&format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM {old}; DROP TABLE {old};"
        ))?;
        tracing::info!(table, "ledger table moved to rowid storage");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// The layout of both tables as the first releases wrote them.
    const OLD: &str = "
        CREATE TABLE reservations (id TEXT PRIMARY KEY, order_ref TEXT NOT NULL, sku TEXT NOT NULL,
            warehouse TEXT NOT NULL, quantity INTEGER NOT NULL, channel TEXT, status TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER, closed_at_ms INTEGER) WITHOUT ROWID;
        CREATE INDEX reservations_by_stock ON reservations (sku, warehouse) WHERE status = 'active';
        CREATE INDEX reservations_expiring ON reservations (expires_at_ms) WHERE status = 'active';
        CREATE TABLE orders (id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, channel TEXT NOT NULL,
            state TEXT NOT NULL, record TEXT NOT NULL, answer TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO reservations VALUES ('r1', 'SO-1', 'TEE', 'ams', 2, 'web', 'active', 1, NULL, NULL);
        INSERT INTO orders VALUES ('SO-1', 'k1', 'web', 'reserved', '{}', '{}', 1, 1);
    ";

    fn layout(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn an_old_layout_ledger_opens_with_its_orders_and_reservations() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(OLD).unwrap();
        super::super::migrate(&conn, std::path::Path::new(":memory:")).unwrap();
        for table in super::NOW_ROWID {
            assert!(!super::without_rowid(&conn, table).unwrap(), "{table}");
        }
        let (order, by): (String, Option<String>) = conn
            .query_row(
                "SELECT order_ref, created_by FROM reservations WHERE id = 'r1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((order.as_str(), by), ("SO-1", None));
        let key: String = conn
            .query_row(
                "SELECT idempotency_key FROM orders WHERE id = 'SO-1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(key, "k1");
        // The indexes are there again, on the new tables; the dropped one is gone.
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reservations' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "reservations_by_order",
                "reservations_by_stock",
                "reservations_expiring_at"
            ]
        );
        // The same layout as a file created new.
        let fresh = Connection::open_in_memory().unwrap();
        super::super::migrate(&fresh, std::path::Path::new(":memory:")).unwrap();
        assert_eq!(layout(&conn), layout(&fresh));
        // Migrating again changes nothing.
        super::super::migrate(&conn, std::path::Path::new(":memory:")).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM reservations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
