//! Which worker applies which warehouse's movements: a lease per warehouse in PostgreSQL.
//!
//! Every `lease / 3` a worker heartbeats, renews the leases it holds, gives back those above
//! its fair share (`ceil(warehouses / live workers)`) and takes expired ones up to it. Time
//! is the database's clock only, so workers' clocks cannot disagree about expiry. A worker
//! that cannot renew drops every warehouse once two thirds of the lease have passed since
//! its last successful renewal began, a third of a lease before anyone may take them over;
//! a warehouse it gives back is dropped here one round before it is released in the
//! database, so `consume` has unsubscribed by the time another worker may take it. Every
//! take-over is recorded in `lease_history`. Correct counts never depend on the leases
//! (the ledger's `UNIQUE (agent_id, seq)` and the projection's locks do that); leases keep
//! each warehouse's stream on one worker so workers do not do the same work twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{PgError, Pool};

/// The warehouses this worker holds, as `consume` should subscribe to them.
pub type Owned = BTreeSet<String>;

/// A worker's view of the lease table.
pub struct Leases {
    pool: Pool,
    worker_id: String,
    lease: Duration,
    /// What `consume` is told to hold.
    owned: Owned,
    /// Given up in the last round: released in the database in the next.
    shed: Owned,
}

impl Leases {
    /// Seeds a lease row for every warehouse of the config (existing rows are kept).
    pub async fn new(
        pool: Pool,
        worker_id: String,
        lease: Duration,
        warehouses: &[String],
    ) -> Result<Leases, PgError> {
        pool.get()
            .await?
            .execute(
                "INSERT INTO leases (warehouse) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &[&warehouses],
            )
            .await?;
        Ok(Leases {
            pool,
            worker_id,
            lease,
            owned: Owned::new(),
            shed: Owned::new(),
        })
    }

    /// The lease in seconds, as the database multiplies an interval by it.
    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// One round: heartbeat, release, renew, take, shed. Returns what to hold now.
    pub async fn round(&mut self) -> Result<Owned, PgError> {
        let conn = self.pool.get().await?;
        let (me, ms) = (&self.worker_id, self.lease_secs());
        conn.execute(
            "INSERT INTO workers (worker_id, expires_at) VALUES ($1, now() + $2::float8 * interval '1 second')
             ON CONFLICT (worker_id) DO UPDATE SET expires_at = excluded.expires_at",
            &[me, &ms],
        )
        .await?;
        let shed: Vec<&str> = self.shed.iter().map(String::as_str).collect();
        conn.execute(
            "UPDATE leases SET expires_at = now() WHERE worker_id = $1 AND warehouse = ANY($2) AND expires_at > now()",
            &[me, &shed],
        )
        .await?;
        self.shed.clear();
        let held: Vec<&str> = self.owned.iter().map(String::as_str).collect();
        let renewed = conn
            .query(
                "UPDATE leases SET expires_at = now() + $3::float8 * interval '1 second'
                 WHERE worker_id = $1 AND warehouse = ANY($2) AND expires_at > now() RETURNING warehouse",
                &[me, &held, &ms],
            )
            .await?;
        let mut owned: Owned = renewed.iter().map(|r| r.get(0)).collect();
        let row = conn
            .query_one(
                "SELECT (SELECT count(*) FROM leases), (SELECT count(*) FROM workers WHERE expires_at > now())",
                &[],
            )
            .await?;
        let (total, live): (i64, i64) = (row.get(0), row.get(1));
        let share = (total + live.max(1) - 1) / live.max(1);
        let room = share - owned.len() as i64;
        if room > 0 {
            let taken = conn
                .query(
                    "WITH cand AS (
                        SELECT warehouse, worker_id AS prev, expires_at AS prev_exp FROM leases
                        WHERE expires_at <= now() ORDER BY warehouse LIMIT $3 FOR UPDATE SKIP LOCKED),
                     upd AS (
                        UPDATE leases l SET worker_id = $1, expires_at = now() + $2::float8 * interval '1 second',
                            generation = l.generation + 1
                        FROM cand WHERE l.warehouse = cand.warehouse
                        RETURNING l.warehouse, l.generation, cand.prev, cand.prev_exp)
                     INSERT INTO lease_history (warehouse, worker_id, generation, taken_at, previous_worker, previous_expires_at)
                     SELECT warehouse, $1, generation, now(), prev, prev_exp FROM upd RETURNING warehouse",
                    &[me, &ms, &room],
                )
                .await?;
            for r in &taken {
                let warehouse: String = r.get(0);
                tracing::info!(worker = %me, %warehouse, "warehouse lease taken");
                owned.insert(warehouse);
            }
        }
        while owned.len() as i64 > share {
            let warehouse = owned.pop_last().expect("non-empty");
            tracing::info!(worker = %me, %warehouse, "warehouse lease given back");
            self.shed.insert(warehouse);
        }
        for lost in self
            .owned
            .difference(&owned)
            .filter(|w| !self.shed.contains(*w))
        {
            tracing::warn!(worker = %me, warehouse = %lost, "warehouse lease lost");
        }
        self.owned = owned.clone();
        Ok(owned)
    }

    /// Gives every lease back (a clean stop), so another worker takes over at once.
    pub async fn release_all(&mut self) -> Result<(), PgError> {
        let conn = self.pool.get().await?;
        conn.execute(
            "UPDATE leases SET expires_at = now() WHERE worker_id = $1 AND expires_at > now()",
            &[&self.worker_id],
        )
        .await?;
        conn.execute(
            "DELETE FROM workers WHERE worker_id = $1",
            &[&self.worker_id],
        )
        .await?;
        self.owned.clear();
        Ok(())
    }
}

/// Runs rounds every `lease / 3` until `shutdown`, publishing what to hold on `owned`.
pub async fn run(
    mut leases: Leases,
    owned: watch::Sender<Owned>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let lease = leases.lease;
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = every.tick() => {}
        }
        let started = Instant::now();
        match leases.round().await {
            Ok(now_owned) => {
                last_ok = started;
                owned.send_if_modified(|o| {
                    let changed = *o != now_owned;
                    *o = now_owned;
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease round failed");
                if last_ok.elapsed() >= lease * 2 / 3 {
                    leases.owned.clear();
                    owned.send_if_modified(|o| {
                        let had = !o.is_empty();
                        o.clear();
                        had
                    });
                }
            }
        }
    }
    owned.send_replace(Owned::new());
    if let Err(e) = leases.release_all().await {
        tracing::warn!(error = %e, "leases not released; they expire on their own");
    }
    Ok(())
}
