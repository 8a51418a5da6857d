//! Versioned layout of the journal file (`PRAGMA user_version`, run by
//! `stocksync_durable::migrate`): migrations applied in order when the journal opens, each in
//! one transaction; a journal from a newer agent is refused untouched, since an older agent
//! writing into it could hand out seqs or acks in a layout it does not understand.
//!
//! Version 1 is the layout of the last release before versioning, reached the way that
//! release reached it from any older file: create what is missing, add the columns later
//! releases introduced, and re-encode unacknowledged movements still in wire v1 (so that
//! the forwarder only ever sends v2 batches). A change of layout is a new entry at the end
//! of `MIGRATIONS`, never an edit of `v1.sql` or `v1`.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use stocksync_common::wire;
use stocksync_durable::migrate::{self, MigrateError, Migration};

use super::JournalError;

/// Tables of version 1 as first created (added columns come after, as in older files).
pub(super) const TABLES: &str = include_str!("v1.sql");

/// The catalog the agent keeps in the same file (`crate::catalog`).
const CATALOG: &str = "CREATE TABLE IF NOT EXISTS catalog (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    body BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL
)";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    what: "layout of the last release before versioning",
    apply: v1,
}];

/// Brings the journal at `path` (open as `conn`) to `LATEST`; returns the version it had.
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<u32, JournalError> {
    migrate::run(conn, MIGRATIONS).map_err(|e| match e {
        MigrateError::TooNew { found, known } => JournalError::TooNew {
            path: path.to_owned(),
            found,
            known,
        },
        MigrateError::Failed { source, .. } | MigrateError::Sqlite(source) => source.into(),
    })
}

fn v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TABLES)?;
    conn.execute_batch(CATALOG)?;
    for (table, column, decl) in [
        ("idempotency", "content_hash", "BLOB"),
        ("rejects", "forwarded_at_ms", "INTEGER"),
    ] {
        let exists: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get(0),
        )?;
        if exists == 0 {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS rejects_unforwarded ON rejects (id) WHERE forwarded_at_ms IS NULL",
    )?;
    reencode_v1_wire(conn)
}

/// Unacknowledged movement bytes in wire v1 are re-encoded as v2 (input path unknown),
/// once: `meta.movement_wire` marks it done.
fn reencode_v1_wire(conn: &Connection) -> rusqlite::Result<()> {
    let done: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'movement_wire'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if done.is_some() {
        return Ok(());
    }
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT seq, payload FROM movements WHERE acked_at_ms IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (seq, bytes) in rows {
        let movement = wire::decode_movement(&bytes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
        })?;
        conn.execute(
            "UPDATE movements SET payload = ?1 WHERE seq = ?2",
            params![wire::encode_movement(&movement), seq],
        )?;
    }
    conn.execute("INSERT INTO meta VALUES ('movement_wire', 2)", [])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATEST: u32 = MIGRATIONS.len() as u32;

    fn layout(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn journals_of_every_older_layout_reach_the_layout_of_a_new_one() {
        let path = Path::new("journal.db");
        let fresh = Connection::open_in_memory().unwrap();
        migrate(&fresh, path).unwrap();
        // Unversioned, as the first agents left it: no hash, no forwarding mark.
        let oldest = Connection::open_in_memory().unwrap();
        oldest.execute_batch(TABLES).unwrap();
        // Unversioned, as the last release before versioning left it.
        let last = Connection::open_in_memory().unwrap();
        migrate::run(&last, MIGRATIONS).unwrap();
        last.execute_batch("PRAGMA user_version = 0").unwrap();
        for (name, conn) in [("oldest", &oldest), ("last", &last)] {
            assert_eq!(migrate(conn, path).unwrap(), 0, "{name}");
            assert_eq!(layout(conn), layout(&fresh), "{name}");
            assert_eq!(migrate::version(conn).unwrap(), LATEST, "{name}");
        }
    }

    #[test]
    fn a_journal_of_a_newer_agent_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        let err = migrate(&conn, Path::new("/var/lib/journal.db")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/var/lib/journal.db") && text.contains("newer"),
            "{text}"
        );
        assert!(layout(&conn).is_empty(), "nothing created");
    }
}
