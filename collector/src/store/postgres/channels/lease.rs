//! The publisher lease: one row in `publisher_lease`, held by at most one worker, so a
//! channel never sees two publishers.
//!
//! Same mechanics as the warehouse leases (`super::super::leases`): renewed every
//! `lease / 3`, expiry by the database's clock, every take-over recorded in
//! `publisher_history` with the generation it starts. A pass only writes while it holds the
//! row `FOR SHARE` with its own worker id and generation (`fence`), and a take-over skips a
//! locked row: so the passes of an old holder and a new one never interleave, and the
//! change log's cursors follow commit order. (A holder frozen inside a pass has its
//! transaction ended by the server after half a lease idle, `mod::pass_once`, so the lock
//! cannot outlive it.)

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::super::Pool;

/// This worker's side of the publisher lease.
pub struct PublisherLease {
    pool: Pool,
    worker_id: String,
    lease: Duration,
}

impl PublisherLease {
    pub fn new(pool: Pool, worker_id: String, lease: Duration) -> PublisherLease {
        PublisherLease {
            pool,
            worker_id,
            lease,
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Takes the lease if it has expired; returns the generation now held.
    pub async fn take(&self) -> Result<Option<i64>, tokio_postgres::Error> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "WITH cand AS (
                    SELECT name, worker_id AS prev, expires_at AS prev_exp FROM publisher_lease
                    WHERE name = 'publisher' AND expires_at <= now() FOR UPDATE SKIP LOCKED),
                 upd AS (
                    UPDATE publisher_lease l SET worker_id = $1,
                        expires_at = now() + $2::float8 * interval '1 second',
                        generation = l.generation + 1
                    FROM cand WHERE l.name = cand.name
                    RETURNING l.generation, cand.prev, cand.prev_exp)
                 INSERT INTO publisher_history (worker_id, generation, taken_at, previous_worker, previous_expires_at)
                 SELECT $1, generation, now(), prev, prev_exp FROM upd RETURNING generation",
                &[&self.worker_id, &self.lease.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Renews generation `generation`; false if it is no longer ours (expired or taken).
    pub async fn renew(&self, generation: i64) -> Result<bool, tokio_postgres::Error> {
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "UPDATE publisher_lease SET expires_at = now() + $3::float8 * interval '1 second'
                 WHERE name = 'publisher' AND worker_id = $1 AND generation = $2 AND expires_at > now()",
                &[&self.worker_id, &generation, &self.lease.as_secs_f64()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives the lease back (a clean stop), so another worker takes over at once.
    pub async fn release(&self, generation: i64) -> Result<(), tokio_postgres::Error> {
        let conn = self.pool.get().await?;
        conn.execute(
            "UPDATE publisher_lease SET expires_at = now()
             WHERE name = 'publisher' AND worker_id = $1 AND generation = $2 AND expires_at > now()",
            &[&self.worker_id, &generation],
        )
        .await?;
        Ok(())
    }
}

/// Inside a pass's transaction: true while `worker_id` holds generation `generation`, and
/// then no take-over can happen before the transaction ends (the row is locked).
pub const FENCE: &str = "SELECT 1 FROM publisher_lease
     WHERE name = 'publisher' AND worker_id = $1 AND generation = $2 AND expires_at > now()
     FOR SHARE";

pub async fn fence(
    tx: &impl GenericClient,
    worker_id: &str,
    generation: i64,
) -> Result<bool, tokio_postgres::Error> {
    let row = tx.query_opt(FENCE, &[&worker_id, &generation]).await?;
    Ok(row.is_some())
}
