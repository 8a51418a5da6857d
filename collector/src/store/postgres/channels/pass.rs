//! One publishing pass: from the outbox to stored channel values, in one transaction.
//!
//! The pass reads the outbox in id order, loads the stock rows of the SKUs it names (and of
//! every component of a bundle they are part of) and computes each channel's values with
//! the SQLite collector's code (`publish::compute::values_from`). Then, in one transaction
//! holding the publisher lease row (`lease::fence`), it appends the values that changed to
//! `channel_changes` and `channel_sellable` (the cursor there is the version of each
//! (channel, SKU)) and deletes the outbox rows it consumed. So consuming a row and storing
//! what it changed commit together: a crash or take-over replays unconsumed rows, never
//! skips one. An outbox row committed late with a lower id is simply still there for the
//! next pass. Stock is read after the outbox, so a pass never stores a value older than the
//! rows it consumed; a holder's passes are serial, and a new holder reads only after it
//! took the lease, which no old holder's write can straddle (the lock), so each (channel,
//! SKU) only moves forward.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio_postgres::{Client, GenericClient, Transaction};

use super::{lease, mode, Passes};
use crate::publish::compute::{self, Dirty};
use crate::publish::store::{now_ms, NewValue};
use crate::publish::Channel;
use crate::stock::Rows;
use crate::store::postgres::Prepared;

/// Outbox rows consumed per pass at most.
const BATCH: i64 = 20_000;

/// What a pass did.
pub enum Passed {
    /// The lease is no longer ours: nothing was written.
    LeaseLost,
    /// A channel's mode moved since `modes` was read: nothing was written, and the next
    /// pass must be a full one with the new modes.
    ModesMoved,
    /// Outbox rows consumed, per channel (by index) the newest cursor written, and whether
    /// more rows were waiting when the pass committed (under load).
    Done {
        consumed: usize,
        cursors: Vec<(usize, i64)>,
        more: bool,
    },
}

/// Runs one pass of the holder `t` on `conn`; `full` recomputes every SKU (a new holder's
/// first pass). `modes` is the mode version the channels were set from, checked with the
/// outbox read (`None` right after they were read). `t.idle_limit` bounds how long the
/// server waits for us inside the writing transaction.
///
/// Every statement is prepared once per connection (`p`), and those that do not wait on
/// each other's answers go out together: a pass is four round trips and a commit, where it
/// was a dozen (each unprepared statement two), and under load its length is what a change
/// waits behind. The mode check and the look for more waiting rows ride along.
pub async fn run(
    conn: &mut Client,
    p: &Prepared,
    t: &Passes,
    full: bool,
    modes: Option<i64>,
) -> Result<Passed, tokio_postgres::Error> {
    let channels = &t.channels;
    // Read and compute outside the lock: only the write below is fenced, so a slow
    // computation never holds the lease row.
    let read = p
        .get(&*conn, "SELECT id, sku FROM outbox ORDER BY id LIMIT $1")
        .await?;
    let version = p.get(&*conn, mode::VERSION).await?;
    let (outbox, version) =
        tokio::try_join!(async { conn.query(&read, &[&BATCH]).await }, async {
            match modes {
                Some(_) => conn.query_one(&version, &[]).await.map(Some),
                None => Ok(None),
            }
        })?;
    if let (Some(known), Some(now)) = (modes, version) {
        if now.get::<_, i64>(0) != known {
            return Ok(Passed::ModesMoved);
        }
    }
    let ids: Vec<i64> = outbox.iter().map(|r| r.get(0)).collect();
    let skus: BTreeSet<String> = outbox.iter().map(|r| r.get(1)).collect();
    if !full && ids.is_empty() {
        return Ok(Passed::Done {
            consumed: 0,
            cursors: Vec::new(),
            more: false,
        });
    }
    let dirty = if full { Dirty::All } else { Dirty::Skus(skus) };
    let rows = load(&*conn, p, channels, &dirty).await?;
    let computed: Vec<Vec<NewValue>> = channels
        .iter()
        .map(
            |channel| match compute::values_from(&rows, channel, channel.mode().mode, &dirty) {
                Ok(v) => v,
                Err(never) => match never {},
            },
        )
        .collect();
    let limit = p
        .get(
            &*conn,
            "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
        )
        .await?;
    let fence = p.get(&*conn, lease::FENCE).await?;
    let store_values = p.get(&*conn, STORE).await?;
    let consume = p
        .get(&*conn, "DELETE FROM outbox WHERE id = ANY($1)")
        .await?;
    let waiting = p
        .get(
            &*conn,
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE id <> ALL($1))",
        )
        .await?;
    let tx = conn.transaction().await?;
    // A holder frozen inside this transaction (a stopped process, a stalled VM) would keep
    // the lease row locked and no one could take over: the server ends the transaction
    // once it has waited `idle_limit` for us. Sent with the fence, in that order.
    let idle = format!("{}ms", t.idle_limit.as_millis());
    let (_, fenced) = tokio::try_join!(async { tx.execute(&limit, &[&idle]).await }, async {
        tx.query_opt(&fence, &[&t.worker_id, &t.generation]).await
    },)?;
    if fenced.is_none() {
        return Ok(Passed::LeaseLost);
    }
    let now = now_ms();
    let (tx_ref, statement) = (&tx, &store_values);
    let stores =
        channels
            .iter()
            .zip(&computed)
            .enumerate()
            .map(|(i, (channel, values))| async move {
                let cursor = store(tx_ref, statement, &channel.name, values, now).await?;
                Ok::<_, tokio_postgres::Error>(cursor.map(|c| (i, c)))
            });
    // Rows other transactions committed meanwhile are seen by the last statement (each
    // statement of a READ COMMITTED transaction reads the newest commits).
    let (cursors, _, more) = tokio::try_join!(
        futures_util::future::try_join_all(stores),
        async { tx.execute(&consume, &[&ids]).await },
        async { tx.query_one(&waiting, &[&ids]).await },
    )?;
    tx.commit().await?;
    Ok(Passed::Done {
        consumed: ids.len(),
        cursors: cursors.into_iter().flatten().collect(),
        more: more.get(0),
    })
}

/// The stock rows `dirty` needs: its SKUs and every component of a bundle containing one.
async fn load(
    tx: &impl GenericClient,
    p: &Prepared,
    channels: &[Arc<Channel>],
    dirty: &Dirty,
) -> Result<Rows, tokio_postgres::Error> {
    const COLUMNS: &str = "SELECT sku, warehouse, bin, available FROM stock";
    let found = match dirty {
        Dirty::Skus(skus) => {
            let mut need: BTreeSet<&str> = skus.iter().map(String::as_str).collect();
            for channel in channels {
                for bundle in skus
                    .iter()
                    .filter_map(|s| channel.bundles_of.get(s))
                    .flatten()
                {
                    need.extend(channel.bundles[bundle].iter().map(|(c, _)| c.as_str()));
                }
            }
            let need: Vec<&str> = need.into_iter().collect();
            let statement = p.get(tx, &format!("{COLUMNS} WHERE sku = ANY($1)")).await?;
            tx.query(&statement, &[&need]).await?
        }
        _ => tx.query(COLUMNS, &[]).await?,
    };
    let mut rows = Rows::default();
    for r in &found {
        rows.insert(r.get(0), r.get(1), r.get(2), r.get(3));
    }
    Ok(rows)
}

/// Stores the values of `channel` that differ from what is published, appending each to the
/// change log; returns the newest cursor written, if any.
async fn store(
    tx: &Transaction<'_>,
    statement: &tokio_postgres::Statement,
    channel: &str,
    values: &[NewValue],
    now: i64,
) -> Result<Option<i64>, tokio_postgres::Error> {
    if values.is_empty() {
        return Ok(None);
    }
    let skus: Vec<&str> = values.iter().map(|v| v.sku.as_str()).collect();
    let channel_skus: Vec<&str> = values.iter().map(|v| v.channel_sku.as_str()).collect();
    let numbers: Vec<i64> = values
        .iter()
        .map(|v| i64::try_from(v.value).unwrap_or(i64::MAX))
        .collect();
    let row = tx
        .query_one(statement, &[&channel, &skus, &channel_skus, &numbers, &now])
        .await?;
    Ok(row.get(0))
}

const STORE: &str = "WITH new AS (
                SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS n(sku, channel_sku, value, ord)),
             changed AS (
                SELECT new.* FROM new LEFT JOIN channel_sellable s ON s.channel = $1 AND s.sku = new.sku
                WHERE s.sku IS NULL OR s.value <> new.value OR s.channel_sku <> new.channel_sku),
             logged AS (
                INSERT INTO channel_changes (channel, sku, channel_sku, value, changed_at_ms)
                SELECT $1, sku, channel_sku, value, $5 FROM changed ORDER BY ord
                RETURNING cursor, sku, channel_sku, value),
             upserted AS (
                INSERT INTO channel_sellable (channel, sku, channel_sku, value, cursor, updated_at_ms)
                SELECT $1, sku, channel_sku, value, cursor, $5 FROM logged
                ON CONFLICT (channel, sku) DO UPDATE SET channel_sku = excluded.channel_sku,
                    value = excluded.value, cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms
                RETURNING cursor)
             SELECT MAX(cursor) FROM upserted";
