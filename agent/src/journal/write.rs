//! What each command does inside the writer's group transaction: appending a request
//! (idempotency keys, movement ids, the backlog limit, dense seqs), recording acks and
//! rejects, pruning. Each runs in its own savepoint so that one caller's failure is its own.

use rusqlite::{params, OptionalExtension, Transaction};
use stocksync_common::{wire, Movement};

use super::{now_ms, Appended, Command, JournalError, Pending, MAX_REJECT_PAYLOAD};

/// Applies one command inside the group transaction. A failing command only fails its own
/// caller (its savepoint is rolled back); an SQLite error that breaks the transaction fails all.
pub(super) fn apply(
    tx: &Transaction<'_>,
    command: Command,
    next_seq: &mut u64,
    backlog: &mut u64,
    max_backlog: u64,
) -> Result<Option<Pending>, rusqlite::Error> {
    Ok(Some(match command {
        Command::Append {
            movements,
            key,
            reply,
        } => {
            let r = append(tx, movements, key, next_seq, backlog, max_backlog);
            Pending::Append(reply, r)
        }
        Command::Ack {
            first,
            last,
            outcome,
            reply,
        } => {
            let r = tx
                .execute(
                    "UPDATE movements SET acked_at_ms = ?1, outcome = ?2 WHERE seq BETWEEN ?3 AND ?4 AND acked_at_ms IS NULL",
                    params![now_ms(), outcome, first as i64, last as i64],
                )
                .map(|n| {
                    *backlog = backlog.saturating_sub(n as u64);
                    n as u64
                })
                .map_err(JournalError::from);
            Pending::Ack(reply, r)
        }
        Command::Reject { reject, reply } => {
            let mut payload = reject.payload;
            payload.truncate(MAX_REJECT_PAYLOAD);
            let r = tx
                .execute(
                    "INSERT INTO rejects (received_at_ms, source, record, field, detail, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        now_ms(),
                        reject.source,
                        reject.error.record.map(|r| r as i64),
                        reject.error.field,
                        reject.error.detail,
                        payload
                    ],
                )
                .map(|_| ())
                .map_err(JournalError::from);
            Pending::Reject(reply, r)
        }
        Command::AppendStream { key, chunks, reply } => {
            let r = super::stream::append(tx, &key, chunks, next_seq, backlog, max_backlog);
            Pending::Append(reply, r)
        }
        Command::Prune {
            acked_before_ms,
            keys_before_ms,
        } => {
            tx.execute(
                // Movements the collector refused stay: they exist nowhere else in usable form.
                "DELETE FROM movements WHERE acked_at_ms < ?1 AND outcome = 'applied'",
                [acked_before_ms],
            )?;
            tx.execute(
                "DELETE FROM idempotency WHERE created_at_ms < ?1",
                [keys_before_ms],
            )?;
            return Ok(None);
        }
    }))
}

fn append(
    tx: &Transaction<'_>,
    movements: Vec<Movement>,
    key: Option<String>,
    next_seq: &mut u64,
    backlog: &mut u64,
    max_backlog: u64,
) -> Result<Appended, JournalError> {
    let request_key = key.map(|k| format!("req:{k}"));
    if let Some(k) = &request_key {
        if let Some(replayed) = replay(tx, k)? {
            return Ok(replayed);
        }
    }
    if *backlog + movements.len() as u64 > max_backlog {
        return Err(JournalError::Full {
            backlog: *backlog,
            limit: max_backlog,
        });
    }
    let start = *next_seq;
    let now = now_ms();
    let mut duplicates = 0;
    tx.execute_batch("SAVEPOINT append")?;
    let mut seq = start;
    let result = (|| -> Result<(), rusqlite::Error> {
        for m in movements {
            if journal_one(tx, m, seq, now)? {
                seq += 1;
            } else {
                duplicates += 1;
            }
        }
        if let Some(k) = &request_key {
            let (first, last) = if seq > start {
                (start as i64, seq as i64 - 1)
            } else {
                (0, 0)
            };
            tx.execute(
                "INSERT INTO idempotency (key, first_seq, last_seq, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![k, first, last, now],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            tx.execute_batch("RELEASE append")?;
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
        Err(e) => {
            tx.execute_batch("ROLLBACK TO append; RELEASE append")?;
            Err(e.into())
        }
    }
}

/// The answer for a request or input key journaled before, if it was.
pub(super) fn replay(tx: &Transaction<'_>, key: &str) -> Result<Option<Appended>, JournalError> {
    let seen: Option<(i64, i64)> = tx
        .query_row(
            "SELECT first_seq, last_seq FROM idempotency WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(seen.map(|(first, last)| Appended {
        first_seq: (first > 0).then_some(first as u64),
        last_seq: (last > 0).then_some(last as u64),
        journaled: if first > 0 {
            (last - first + 1) as usize
        } else {
            0
        },
        duplicates: 0,
        replayed: true,
    }))
}

/// Journals `m` at `seq` unless a movement with its id (per source) was journaled before;
/// returns whether it was journaled.
pub(super) fn journal_one(
    tx: &Transaction<'_>,
    mut m: Movement,
    seq: u64,
    now: i64,
) -> Result<bool, rusqlite::Error> {
    if let Some(id) = &m.external_id {
        let key = format!("mov:{}:{}", m.source, id);
        let mut remember = tx.prepare_cached(
            "INSERT INTO idempotency (key, first_seq, last_seq, created_at_ms) VALUES (?1, ?2, ?2, ?3) ON CONFLICT(key) DO NOTHING",
        )?;
        if remember.execute(params![key, seq as i64, now])? == 0 {
            return Ok(false);
        }
    }
    m.seq = seq;
    tx.prepare_cached("INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![seq as i64, wire::encode_movement(&m), now])?;
    Ok(true)
}
