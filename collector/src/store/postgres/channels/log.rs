//! The channel tables in PostgreSQL as the push targets and the channel API read them: the
//! same change log, feed cursor and error queue as the SQLite channel store
//! (`publish::store`), shared by every worker.
//!
//! A target of a new holder always starts with a snapshot of the current values (`resume`
//! is `None`): the previous holder may have delivered past the cursor it recorded, and a
//! resume from there could send a SKU's older value after its newer one. The snapshot is
//! read in one REPEATABLE READ transaction with the cursor it is current at, so what follows
//! it is exactly the changes after it. Reads stop once the holder's `Fence` has passed, so
//! a worker that lost the lease delivers nothing more, even if its tasks were not yet told.
//! The quantities a remote system holds (`channel_remote`, Shopify's compare-and-set) are
//! kept here too, written only within the fence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_postgres::{GenericClient, IsolationLevel, Row};

use super::super::Pool;
use crate::publish::log::{ChangeLog, Read};
use crate::publish::store::{fold_latest, now_ms, ChannelError, Published};
use crate::publish::PublishError;

/// Until when this worker may publish: two thirds of a lease after its last renewal began.
#[derive(Clone)]
pub struct Fence(Arc<Mutex<Instant>>);

impl Fence {
    pub fn until(deadline: Instant) -> Fence {
        Fence(Arc::new(Mutex::new(deadline)))
    }

    pub fn extend(&self, deadline: Instant) {
        *self.0.lock().expect("fence lock") = deadline;
    }

    pub fn holds(&self) -> bool {
        Instant::now() < *self.0.lock().expect("fence lock")
    }
}

/// The channel tables on a pool; cheap to clone.
#[derive(Clone)]
pub struct PgLog {
    pub pool: Pool,
    /// Set for the publisher's targets; `None` for API reads.
    pub fence: Option<Fence>,
}

const COLUMNS: &str = "channel_sku, sku, value, cursor";

fn published(r: &Row) -> Published {
    Published {
        sku: r.get(0),
        canonical_sku: r.get(1),
        sellable: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
        cursor: r.get(3),
        updated_at_ms: r.get(4),
    }
}

/// The newest cursor of `channel` (0 before its first change).
pub async fn latest_cursor(c: &impl GenericClient, channel: &str) -> Result<i64, PublishError> {
    Ok(c.query_one(LATEST_CURSOR, &[&channel]).await?.get(0))
}

const LATEST_CURSOR: &str =
    "SELECT COALESCE(MAX(cursor), 0)::bigint FROM channel_changes WHERE channel = $1";

impl PgLog {
    fn check(&self) -> Result<(), PublishError> {
        match &self.fence {
            Some(f) if !f.holds() => Err(PublishError::Closed),
            _ => Ok(()),
        }
    }

    /// Every current value of `channel` and the cursor they are current at.
    pub async fn snapshot(&self, channel: &str) -> Result<(i64, Vec<Published>), PublishError> {
        let mut conn = self.pool.get().await?;
        let tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let latest = latest_cursor(&tx, channel).await?;
        let rows = tx
            .query(
                &format!("SELECT {COLUMNS}, updated_at_ms FROM channel_sellable WHERE channel = $1 ORDER BY channel_sku"),
                &[&channel],
            )
            .await?;
        tx.commit().await?;
        Ok((latest, rows.iter().map(published).collect()))
    }

    /// The newest cursor of `channel`, and its changes after `since` (at most `limit` rows,
    /// latest per SKU).
    pub async fn changes_since(
        &self,
        channel: &str,
        since: i64,
        limit: usize,
    ) -> Result<(i64, i64, Vec<Published>), PublishError> {
        let conn = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Both prepared once per connection and sent together: a target reads after every
        // pass, and each unprepared statement is two round trips.
        let prepared = conn.prepared();
        let changes = prepared
            .get(
                &*conn,
                &format!("SELECT {COLUMNS}, changed_at_ms FROM channel_changes WHERE channel = $1 AND cursor > $2 ORDER BY cursor LIMIT $3"),
            )
            .await?;
        let newest = prepared.get(&*conn, LATEST_CURSOR).await?;
        let (rows, latest) = tokio::try_join!(
            async { conn.query(&changes, &[&channel, &since, &limit]).await },
            async { conn.query_one(&newest, &[&channel]).await },
        )?;
        let (next, items) = fold_latest(since, rows.iter().map(published).collect());
        Ok((latest.get(0), next, items))
    }

    /// The newest cursor and the number of open errors of `channel`.
    pub async fn describe(&self, channel: &str) -> Result<(i64, i64), PublishError> {
        let conn = self.pool.get().await?;
        let latest = latest_cursor(&*conn, channel).await?;
        let open: i64 = conn
            .query_one(
                "SELECT count(*) FROM channel_errors WHERE channel = $1 AND resolved_at_ms IS NULL",
                &[&channel],
            )
            .await?
            .get(0);
        Ok((latest, open))
    }

    /// The newest errors of `channel`, open ones first.
    pub async fn errors(
        &self,
        channel: &str,
        limit: i64,
    ) -> Result<Vec<ChannelError>, PublishError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT id, channel, target, detail, first_seen_ms, last_seen_ms, seen_count, resolved_at_ms
                 FROM channel_errors WHERE channel = $1 ORDER BY resolved_at_ms IS NOT NULL, id DESC LIMIT $2",
                &[&channel, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ChannelError {
                id: r.get(0),
                channel: r.get(1),
                target: r.get(2),
                detail: r.get(3),
                first_seen_ms: r.get(4),
                last_seen_ms: r.get(5),
                seen_count: r.get(6),
                resolved_at_ms: r.get(7),
            })
            .collect())
    }
}

impl ChangeLog for PgLog {
    async fn resume(&self, _: &str, _: &'static str) -> Result<Option<i64>, PublishError> {
        Ok(None)
    }

    async fn read(
        &self,
        channel: &str,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Read, PublishError> {
        self.check()?;
        let (latest, next, items) = match since {
            None => {
                let (next, items) = self.snapshot(channel).await?;
                (next, next, items)
            }
            Some(since) => self.changes_since(channel, since, limit).await?,
        };
        self.check()?;
        Ok(Read {
            latest: latest.max(next),
            next,
            items,
        })
    }

    async fn delivered(
        &self,
        channel: &str,
        target: &'static str,
        cursor: i64,
    ) -> Result<(), PublishError> {
        let conn = self.pool.get().await?;
        let statement = conn.prepared().get(&*conn, DELIVERED).await?;
        conn.execute(&statement, &[&channel, &target, &cursor, &now_ms()])
            .await?;
        Ok(())
    }

    async fn record_error(
        &self,
        channel: &str,
        target: &'static str,
        detail: &str,
    ) -> Result<(), PublishError> {
        let conn = self.pool.get().await?;
        let now = now_ms();
        let updated = conn
            .execute(
                "UPDATE channel_errors SET seen_count = seen_count + 1, last_seen_ms = $4
                 WHERE channel = $1 AND target = $2 AND detail = $3 AND resolved_at_ms IS NULL",
                &[&channel, &target, &detail, &now],
            )
            .await?;
        if updated == 0 {
            conn.execute(
                "INSERT INTO channel_errors (channel, target, detail, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $4)",
                &[&channel, &target, &detail, &now],
            )
            .await?;
        }
        Ok(())
    }

    async fn remote_quantities(
        &self,
        channel: &str,
        target: &'static str,
        items: Vec<String>,
    ) -> Result<BTreeMap<String, i64>, PublishError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT sku, quantity FROM channel_remote WHERE channel = $1 AND target = $2 AND sku = ANY($3)",
                &[&channel, &target, &items],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn set_remote_quantities(
        &self,
        channel: &str,
        target: &'static str,
        quantities: BTreeMap<String, i64>,
    ) -> Result<(), PublishError> {
        // What a remote system holds is only learnt by the holder's targets.
        self.check()?;
        let (skus, numbers): (Vec<String>, Vec<i64>) = quantities.into_iter().unzip();
        let conn = self.pool.get().await?;
        conn.execute(
            "INSERT INTO channel_remote (channel, target, sku, quantity)
             SELECT $1, $2, sku, quantity FROM unnest($3::text[], $4::bigint[]) AS q(sku, quantity)
             ON CONFLICT (channel, target, sku) DO UPDATE SET quantity = excluded.quantity",
            &[&channel, &target, &skus, &numbers],
        )
        .await?;
        Ok(())
    }
}

/// Records a target's cursor and resolves its open errors, in one statement sent after every
/// delivery. Its commit does not wait for the disk (`synchronous_commit` off for this
/// transaction only): on PostgreSQL a new holder starts from a snapshot, never from this
/// cursor (`resume`), so it only tells the operator how far a target got, and losing the
/// last one in a crash costs nothing, while waiting for the flush would hold up the next
/// read of the change log.
const DELIVERED: &str = "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true) AS v),
     moved AS (
        INSERT INTO channel_cursors (channel, target, cursor) VALUES ($1, $2, $3)
        ON CONFLICT (channel, target) DO UPDATE SET cursor = GREATEST(channel_cursors.cursor, excluded.cursor)
        RETURNING 1),
     resolved AS (
        UPDATE channel_errors SET resolved_at_ms = $4
        WHERE channel = $1 AND target = $2 AND resolved_at_ms IS NULL
        RETURNING 1)
     SELECT (SELECT count(*) FROM quick), (SELECT count(*) FROM moved), (SELECT count(*) FROM resolved)";
