//! What each command does inside the writer's group transaction: appending a request
//! (idempotency keys, movement ids, the backlog limit, dense seqs), recording acks and
//! rejects, pruning. The writer runs each in its own savepoint so that one caller's failure
//! is its own.

use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use sha2::Digest;
use stocksync_common::model::{OccurredAt, Origin};
use stocksync_common::{wire, Movement};

use super::{now_ms, Appended, JournalError, Reject, RequestKey, MAX_REJECT_PAYLOAD};

/// What makes two movements with the same id the same movement: everything the sender
/// said except the time (defaulted to the receive time when left out, so a resend differs)
/// and the note.
fn fingerprint(m: &Movement) -> Vec<u8> {
    let mut m = m.clone();
    m.seq = 0;
    m.occurred_at = OccurredAt {
        unix_ms: 0,
        offset_seconds: 0,
    };
    m.note = None;
    m.origin = Origin::default();
    sha2::Sha256::digest(wire::encode_movement(&m)).to_vec()
}

/// A journaled movement as JSON for an error message, or why it cannot be shown.
fn shown(tx: &Connection, seq: i64) -> String {
    let bytes: Option<Vec<u8>> = tx
        .query_row("SELECT payload FROM movements WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()
        .ok()
        .flatten();
    match bytes.and_then(|b| wire::decode_movement(&b).ok()) {
        Some(m) => describe(&m),
        None => format!("seq {seq}, pruned from this journal (see the collector's history)"),
    }
}

/// One movement as a JSON object, in the words a sender uses.
fn describe(m: &Movement) -> String {
    serde_json::json!({
        "seq": (m.seq > 0).then_some(m.seq),
        "sku": m.sku.as_str(),
        "kind": m.kind,
        "quantity": m.quantity,
        "unit": m.unit,
        "unit_quantity": m.unit_quantity,
        "location": m.location.to_string(),
        "source": m.source,
        "occurred_at": m.occurred_at.to_rfc3339(),
        "order": m.references.order,
        "transfer": m.references.transfer,
    })
    .to_string()
}

/// Marks seqs `first..=last` acknowledged; returns how many were newly acked.
pub(super) fn ack(
    tx: &Connection,
    (first, last): (u64, u64),
    outcome: &str,
    backlog: &mut u64,
) -> Result<u64, JournalError> {
    let n = tx.execute(
        "UPDATE movements SET acked_at_ms = ?1, outcome = ?2 WHERE seq BETWEEN ?3 AND ?4 AND acked_at_ms IS NULL",
        params![now_ms(), outcome, first as i64, last as i64],
    )?;
    *backlog = backlog.saturating_sub(n as u64);
    Ok(n as u64)
}

/// Keeps a refused record, within the bounds: the oldest go first, and are counted.
pub(super) fn reject(
    tx: &Connection,
    reject: Reject,
    max_rejects: u64,
) -> Result<(), JournalError> {
    let mut payload = reject.payload;
    payload.truncate(MAX_REJECT_PAYLOAD);
    tx.execute(
        "INSERT INTO rejects (received_at_ms, source, record, field, detail, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms(),
            reject.source,
            reject.error.record.map(|r| r as i64),
            reject.error.field,
            reject.error.detail,
            payload
        ],
    )?;
    let dropped = tx.execute(
        "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?1",
        [max_rejects as i64],
    )?;
    Ok(count_dropped(tx, dropped)?)
}

/// Drops refused records, acknowledged movements and idempotency keys older than the given times.
pub(super) fn prune(
    tx: &Connection,
    acked_before_ms: i64,
    keys_before_ms: i64,
    rejects_before_ms: i64,
) -> Result<(), JournalError> {
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
    Ok(())
}

/// The answer to a request whose key was used before: a replay of the first answer, or a
/// conflict when the body differs. Keys stored before hashes were kept, and callers without
/// a body (empty hash), are not compared.
pub(super) fn seen_before(
    tx: &Connection,
    key: &RequestKey,
) -> Result<Option<Appended>, JournalError> {
    let seen: Option<(i64, i64, Option<Vec<u8>>)> = tx
        .query_row(
            "SELECT first_seq, last_seq, content_hash FROM idempotency WHERE key = ?1",
            [format!("req:{}", key.key)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((first, last, hash)) = seen else {
        return Ok(None);
    };
    let known = |h: &[u8]| !h.is_empty();
    if hash.is_some_and(|h| known(&h) && known(&key.body_hash) && h != key.body_hash) {
        return Err(JournalError::KeyReused {
            key: key.key.clone(),
            then: if first > 0 {
                format!("seqs {first}..={last}")
            } else {
                "nothing new".into()
            },
        });
    }
    Ok(Some(Appended {
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

/// Adds `dropped` to the count of rejects dropped by the bounds (kept in `meta`).
fn count_dropped(tx: &Connection, dropped: usize) -> Result<(), rusqlite::Error> {
    if dropped > 0 {
        tx.execute(
            "INSERT INTO meta VALUES ('rejects_dropped', ?1) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            [dropped as i64],
        )?;
    }
    Ok(())
}

pub(super) fn append(
    tx: &Connection,
    movements: Vec<Movement>,
    key: Option<RequestKey>,
    next_seq: &mut u64,
    backlog: &mut u64,
    max_backlog: u64,
) -> Result<Appended, JournalError> {
    let body_hash = key
        .as_ref()
        .map(|k| k.body_hash.clone())
        .unwrap_or_default();
    let request_key = key.as_ref().map(|k| format!("req:{}", k.key));
    if let Some(k) = &key {
        if let Some(replay) = seen_before(tx, k)? {
            return Ok(replay);
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
    let mut seq = start;
    let mut inserts = Inserts::new(tx)?;
    for (index, m) in movements.into_iter().enumerate() {
        if journal_one(tx, &mut inserts, index, m, seq, now)? {
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
            "INSERT INTO idempotency (key, first_seq, last_seq, created_at_ms, content_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![k, first, last, now, body_hash],
        )?;
    }
    // A failure above returned early: the writer rolls this command's savepoint back.
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

/// The statements that journal one movement, taken from the cache once per request rather
/// than once per movement (a cache lookup hashes the SQL text and moves the statement out
/// and back: measurable at a thousand movements per request).
pub(super) struct Inserts<'c> {
    movement: CachedStatement<'c>,
    remember: CachedStatement<'c>,
}

impl<'c> Inserts<'c> {
    pub(super) fn new(tx: &'c Connection) -> rusqlite::Result<Inserts<'c>> {
        Ok(Inserts {
            movement: tx.prepare_cached(
                "INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (?1, ?2, ?3)",
            )?,
            remember: tx.prepare_cached(
                "INSERT INTO idempotency (key, first_seq, last_seq, created_at_ms, content_hash) VALUES (?1, ?2, ?2, ?3, ?4) ON CONFLICT(key) DO NOTHING",
            )?,
        })
    }
}

/// Journals `m` at `seq` unless a movement with its id (per source) was journaled before:
/// `Ok(true)` journaled, `Ok(false)` the same movement again (a duplicate),
/// `Err(IdReused)` the id with other content. `index` names the record in the request.
pub(super) fn journal_one(
    tx: &Connection,
    inserts: &mut Inserts<'_>,
    index: usize,
    mut m: Movement,
    seq: u64,
    now: i64,
) -> Result<bool, JournalError> {
    if let Some(id) = &m.external_id {
        let key = format!("mov:{}:{}", m.source, id);
        let print = fingerprint(&m);
        if inserts
            .remember
            .execute(params![key, seq as i64, now, print])?
            == 0
        {
            let (first, hash): (i64, Option<Vec<u8>>) = tx
                .prepare_cached("SELECT first_seq, content_hash FROM idempotency WHERE key = ?1")?
                .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if hash.is_some_and(|h| h != print) {
                return Err(JournalError::IdReused {
                    index,
                    detail: format!(
                        "id `{id}` from source `{}` was journaled before with different content; before: {}; now: {}",
                        m.source,
                        shown(tx, first),
                        describe(&m)
                    ),
                });
            }
            return Ok(false);
        }
    }
    m.seq = seq;
    inserts
        .movement
        .execute(params![seq as i64, wire::encode_movement(&m), now])?;
    Ok(true)
}
