//! Refusing to run on a journal that went back in time, and the operator's way forward.
//!
//! Seqs must never be reused: the collector deduplicates by `(agent_id, seq)`, so a journal
//! restored from a backup (or whose WAL was lost) would hand out seqs the collector already
//! applied, and every new movement under them would be dropped as a "duplicate" after its
//! sender heard `202`. Two guards catch it:
//!
//! - at start: the highest seq the collector acknowledged as applied is also written beside
//!   the journal (`<journal>.acked`), outside the file a restore replaces; a journal that
//!   ends before it is refused;
//! - on the first ack exchange: the collector compares reused seqs' bytes and refuses the
//!   batch (`stocksync_common::rollback`); the agent records the two seqs in the journal and
//!   stops, and refuses to start from then on.
//!
//! `stocksync-agent accept-rollback` (agent stopped) then continues safely: it moves the
//! journal's seq counter past the collector's, and renumbers the new movements that were
//! given already-used seqs, so that they are counted instead of taken for duplicates.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use stocksync_common::wire;

use super::{meta, JournalError};

/// The file beside the journal holding `<journal_id> <highest applied seq>`.
pub fn watermark_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".acked");
    PathBuf::from(name)
}

/// Reads the watermark for `journal_id`; `None` if absent or written for another journal.
pub(super) fn read_watermark(journal: &Path, journal_id: u64) -> Option<u64> {
    let text = std::fs::read_to_string(watermark_path(journal)).ok()?;
    let (id, seq) = text.trim().split_once(' ')?;
    (id.parse::<u64>().ok()? == journal_id)
        .then(|| seq.parse().ok())
        .flatten()
}

/// Records that the collector applied everything up to `seq`. Written by rename, so a crash
/// leaves the old or the new value; not fsynced: losing it only weakens the start-up guard,
/// the collector's check remains.
pub fn write_watermark(journal: &Path, journal_id: u64, seq: u64) -> std::io::Result<()> {
    let path = watermark_path(journal);
    let tmp = path.with_extension("acked.tmp");
    std::fs::write(&tmp, format!("{journal_id} {seq}\n"))?;
    std::fs::rename(tmp, path)
}

/// Refuses a journal that ends before what the collector applied, or that the collector
/// reported as rolled back.
pub(super) fn check(
    conn: &Connection,
    path: &Path,
    journal_id: u64,
    last_seq: u64,
) -> Result<(), JournalError> {
    if let (Some(first), Some(collector_last)) = (
        meta(conn, "rollback_first")?,
        meta(conn, "rollback_collector_last")?,
    ) {
        return Err(JournalError::RolledBack {
            path: path.to_owned(),
            detail: format!(
                "the collector refused seq {first} because it already applied other movements under seqs up to {collector_last}"
            ),
        });
    }
    match read_watermark(path, journal_id) {
        Some(acked) if acked > last_seq => Err(JournalError::RolledBack {
            path: path.to_owned(),
            detail: format!(
                "the collector applied seqs up to {acked} but the journal ends at seq {last_seq}"
            ),
        }),
        _ => Ok(()),
    }
}

/// Records the collector's report of a reused seq; the agent refuses to start from now on.
pub(super) fn mark(conn: &Connection, first: u64, collector_last: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta VALUES ('rollback_first', ?1) ON CONFLICT(key) DO UPDATE SET value = MIN(value, excluded.value)",
        [first as i64],
    )?;
    conn.execute(
        "INSERT INTO meta VALUES ('rollback_collector_last', ?1) ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
        [collector_last as i64],
    )?;
    Ok(())
}

/// What `accept_rollback` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The first seq the journal hands out from now on.
    pub next_seq: u64,
    /// Unacknowledged movements given new seqs (they will be sent and counted).
    pub renumbered: u64,
}

/// Continues after a rollback (the agent must be stopped): unacknowledged movements under
/// seqs the collector holds with other content get new seqs after every seq in use, and the
/// seq counter moves past the collector's.
pub fn accept_rollback(path: &Path) -> Result<Accepted, JournalError> {
    let mut conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let tx = conn.transaction()?;
    let journal_id = meta(&tx, "journal_id")?.unwrap_or(0) as u64;
    let last_seq: i64 = tx.query_row(
        "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'last_seq'), 0), COALESCE((SELECT MAX(seq) FROM movements), 0))",
        [],
        |r| r.get(0),
    )?;
    let acked = read_watermark(path, journal_id).unwrap_or(0);
    let reported = meta(&tx, "rollback_first")?.zip(meta(&tx, "rollback_collector_last")?);
    let collector_last = reported.map_or(0, |(_, l)| l as u64);
    let mut next = (last_seq as u64).max(acked).max(collector_last) + 1;
    let mut renumbered = 0;
    if let Some((first, last)) = reported {
        let rows: Vec<(i64, Vec<u8>)> = tx
            .prepare("SELECT seq, payload FROM movements WHERE acked_at_ms IS NULL AND seq BETWEEN ?1 AND ?2 ORDER BY seq")?
            .query_map([first, last], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (seq, bytes) in rows {
            let mut m = wire::decode_movement(&bytes).map_err(|e| JournalError::Corrupt {
                path: path.to_owned(),
                detail: format!("movement seq {seq} does not decode: {e}"),
            })?;
            m.seq = next;
            tx.execute(
                "UPDATE movements SET seq = ?1, payload = ?2 WHERE seq = ?3",
                params![next as i64, wire::encode_movement(&m), seq],
            )?;
            next += 1;
            renumbered += 1;
        }
    }
    tx.execute(
        "INSERT INTO meta VALUES ('last_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(next - 1) as i64],
    )?;
    tx.execute(
        "DELETE FROM meta WHERE key IN ('rollback_first', 'rollback_collector_last')",
        [],
    )?;
    tx.commit()?;
    Ok(Accepted {
        next_seq: next,
        renumbered,
    })
}
