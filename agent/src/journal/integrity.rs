//! Opening the journal file only if SQLite finds it sound.
//!
//! A journal damaged by a failing disk or a bad copy could hand out seqs or payloads that do
//! not match what was acknowledged. `PRAGMA quick_check` at start (seconds even for a large
//! file) refuses such a file with the way to recover, instead of running on it.

use std::path::Path;

use rusqlite::Connection;

use super::{open, JournalError};

/// What an operator should do with a journal SQLite cannot read.
const RECOVERY: &str = "stop the agent, move the file aside (keep it: it may hold movements not yet acknowledged), \
    try `sqlite3 <file> .recover | sqlite3 <new file>` and check its movements against the collector, or follow \
    docs/OPERATIONS.md \"Recovering an agent whose journal was recreated\"";

/// Opens the write connection after `PRAGMA quick_check`; caps the file at `max_file_bytes`
/// (0: no cap) so that past it writes fail like on a full disk.
pub(super) fn open_checked(path: &Path, max_file_bytes: u64) -> Result<Connection, JournalError> {
    let corrupt = |detail: String| JournalError::Corrupt {
        path: path.to_owned(),
        detail: format!("{detail}; {RECOVERY}"),
    };
    let conn = open(path).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            corrupt(e.to_string())
        }
        _ => JournalError::Sqlite(e),
    })?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| corrupt(e.to_string()))?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(corrupt(format!(
            "quick_check found: {}",
            problems.join("; ")
        )));
    }
    if max_file_bytes > 0 {
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (max_file_bytes / page_size.max(1)).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    Ok(conn)
}
