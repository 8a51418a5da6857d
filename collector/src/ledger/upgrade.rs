//! Table layouts that changed after files were written with the old one.
//!
//! `orders` and `reservations` were first `WITHOUT ROWID` tables keyed by their text ids.
//! Their rows are large (an order keeps its record and first answer) and channel order ids
//! arrive in no particular order, so every insert landed in the middle of a clustered
//! B-tree: page splits and a distinct dirty page per order in every group commit. As rowid
//! tables they are appended at the end, and only the small id index takes random inserts.
//! Files with the old layout are copied over, once, in one transaction, when the ledger opens.

use rusqlite::Connection;

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

/// Renames old-layout tables out of the way; returns the ones renamed. Run before the schema
/// creates the tables again.
pub(super) fn set_aside(conn: &Connection) -> rusqlite::Result<Vec<&'static str>> {
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
pub(super) fn copy_back(conn: &Connection, moved: &[&str]) -> rusqlite::Result<()> {
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

    #[test]
    fn an_old_layout_ledger_opens_with_its_orders_and_reservations() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(OLD).unwrap();
        super::super::migrate(&conn).unwrap();
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
        // Migrating again changes nothing.
        super::super::migrate(&conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM reservations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
