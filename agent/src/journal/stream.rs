//! Journaling one input that is too large to hold in memory (a million-row file) in one
//! savepoint: all of it or none of it.
//!
//! The producer reads and validates on its own thread and sends chunks over a bounded
//! channel, so memory stays at a few chunks whatever the input's size. The writer thread
//! takes them inside its group transaction; while it does, other callers wait, which is
//! the price of atomicity. The input is journaled only when its producer sends `End`: a
//! producer that finds a bad row, fails or stalls drops the sender (or is timed out) and
//! everything it sent is rolled back.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use rusqlite::{params, Connection};
use stocksync_common::Movement;

use super::write::{journal_one, seen_before, Inserts};
use super::{now_ms, Appended, JournalError, RequestKey};

/// Chunks queued between producer and writer.
pub(super) const CHUNKS_IN_FLIGHT: usize = 2;
/// Longest wait for the producer's next chunk before the input is rolled back.
const STALL: Duration = Duration::from_secs(30);

/// What a producer sends.
pub enum Chunk {
    Movements(Vec<Movement>),
    /// Everything was sent: commit.
    End,
}

/// The producer's end of a stream.
pub type StreamSender = SyncSender<Chunk>;

pub(super) fn append(
    tx: &Connection,
    key: &str,
    chunks: Receiver<Chunk>,
    next_seq: &mut u64,
    backlog: &mut u64,
    max_backlog: u64,
) -> Result<Appended, JournalError> {
    // Kept beside request keys (`req:input:<key>`), without a body hash: the key is one.
    let key = RequestKey {
        key: format!("input:{key}"),
        body_hash: Vec::new(),
    };
    if let Some(replayed) = seen_before(tx, &key)? {
        return Ok(replayed);
    }
    let start = *next_seq;
    // A failure returns early: the writer rolls this command's savepoint back, so nothing
    // of the input stays.
    let (seq, duplicates) = receive(tx, &chunks, start, *backlog, max_backlog)?;
    let (first, last) = if seq > start {
        (start as i64, seq as i64 - 1)
    } else {
        (0, 0)
    };
    tx.execute(
        "INSERT INTO idempotency (key, first_seq, last_seq, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![format!("req:{}", key.key), first, last, now_ms()],
    )?;
    *next_seq = seq;
    *backlog += seq - start;
    Ok(Appended {
        first_seq: (seq > start).then_some(start),
        last_seq: (seq > start).then_some(seq - 1),
        journaled: (seq - start) as usize,
        duplicates,
        replayed: false,
    })
}

/// Journals chunks until `End`; returns the next free seq and the duplicates skipped.
fn receive(
    tx: &Connection,
    chunks: &Receiver<Chunk>,
    start: u64,
    backlog: u64,
    max_backlog: u64,
) -> Result<(u64, usize), JournalError> {
    let now = now_ms();
    let (mut seq, mut duplicates) = (start, 0);
    let mut inserts = Inserts::new(tx)?;
    loop {
        let batch = match chunks.recv_timeout(STALL) {
            Ok(Chunk::Movements(batch)) => batch,
            Ok(Chunk::End) => return Ok((seq, duplicates)),
            Err(RecvTimeoutError::Timeout) => {
                return Err(JournalError::Aborted("no chunk for 30 s".into()))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(JournalError::Aborted("the producer stopped".into()))
            }
        };
        if backlog + (seq - start) + batch.len() as u64 > max_backlog {
            return Err(JournalError::Full {
                backlog,
                limit: max_backlog,
            });
        }
        for m in batch {
            let index = (seq - start) as usize + duplicates;
            if journal_one(tx, &mut inserts, index, m, seq, now)? {
                seq += 1;
            } else {
                duplicates += 1;
            }
        }
    }
}
