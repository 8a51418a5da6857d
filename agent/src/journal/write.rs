//! What each command does inside the writer's group transaction: appending a request
//! (idempotency keys, movement ids, the backlog limit, dense seqs), recording acks and
//! rejects, pruning. Each runs in its own savepoint so that one caller's failure is its own.

use rusqlite::{params, OptionalExtension, Transaction};
use stocksync_common::{wire, Movement};

use super::{now_ms, Appended, Command, JournalError, Options, Pending, MAX_REJECT_PAYLOAD};

/// Applies one command inside the group transaction. A failing command only fails its own
/// caller (its savepoint is rolled back); an SQLite error that breaks the transaction fails all.
pub(super) fn apply(
    tx: &Transaction<'_>,
    command: Command,
    next_seq: &mut u64,
    backlog: &mut u64,
    options: &Options,
) -> Result<Option<Pending>, rusqlite::Error> {
    Ok(Some(match command {
        Command::Append {
            movements,
            key,
            reply,
        } => {
            let r = append(tx, movements, key, next_seq, backlog, options.max_backlog);
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
                .and_then(|_| {
                    // Bounded: the oldest go first, and are counted.
                    let dropped = tx.execute(
                        "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?1",
                        [options.max_rejects as i64],
                    )?;
                    count_dropped(tx, dropped)
                })
                .map_err(JournalError::from);
            Pending::Reject(reply, r)
        }
        Command::Prune {
            acked_before_ms,
            keys_before_ms,
            rejects_before_ms,
        } => {
            let dropped = tx.execute(
                "DELETE FROM rejects WHERE received_at_ms < ?1",
                [rejects_before_ms],
            )?;
            count_dropped(tx, dropped)?;
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

/// Adds `dropped` to the count of rejects dropped by the bounds (kept in `meta`).
fn count_dropped(tx: &Transaction<'_>, dropped: usize) -> Result<(), rusqlite::Error> {
    if dropped > 0 {
        tx.execute(
            "INSERT INTO meta VALUES ('rejects_dropped', ?1) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            [dropped as i64],
        )?;
    }
    Ok(())
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
        let seen: Option<(i64, i64)> = tx
            .query_row(
                "SELECT first_seq, last_seq FROM idempotency WHERE key = ?1",
                [k],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((first, last)) = seen {
            let journaled = if first > 0 {
                (last - first + 1) as usize
            } else {
                0
            };
            return Ok(Appended {
                first_seq: (first > 0).then_some(first as u64),
                last_seq: (last > 0).then_some(last as u64),
                journaled,
                duplicates: 0,
                replayed: true,
            });
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
    let mut insert = tx.prepare_cached(
        "INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (?1, ?2, ?3)",
    )?;
    let mut remember = tx.prepare_cached(
        "INSERT INTO idempotency (key, first_seq, last_seq, created_at_ms) VALUES (?1, ?2, ?2, ?3) ON CONFLICT(key) DO NOTHING",
    )?;
    tx.execute_batch("SAVEPOINT append")?;
    let mut seq = start;
    let result = (|| -> Result<(), rusqlite::Error> {
        for mut m in movements {
            if let Some(id) = &m.external_id {
                let key = format!("mov:{}:{}", m.source, id);
                if remember.execute(params![key, seq as i64, now])? == 0 {
                    duplicates += 1;
                    continue;
                }
            }
            m.seq = seq;
            insert.execute(params![seq as i64, wire::encode_movement(&m), now])?;
            seq += 1;
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
            // A full disk may have rolled back the whole transaction, savepoint included.
            if !tx.is_autocommit() {
                tx.execute_batch("ROLLBACK TO append; RELEASE append")?;
            }
            Err(e.into())
        }
    }
}
