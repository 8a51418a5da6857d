//! Voiding a movement on PostgreSQL, by the SQLite ledger's rules (`crate::void`): the
//! ledger row and its bytes stay, its treatment becomes `voided`, a `voids` row records who,
//! why, when and the treatment before; the (SKU, warehouse) is replayed without it, what it
//! added directly (in transit, incoming) is taken off (`void::taken_off`), the transfer and
//! order records it took part in are computed again, the reservations of its order settled,
//! and its SKU goes to the outbox so every channel republishes.
//!
//! One transaction, with the batch path's locks in the batch path's order: first the
//! advisory locks of every (SKU, warehouse) the movement touched (`project::lock`), then
//! the transfer and order locks (`records::settle`). A void and a batch of the same key
//! therefore serialise; two workers voiding the same movement at once serialise too, and the
//! second finds the first's `voids` row and answers with it: a movement is voided once.

use tokio_postgres::{Client, Transaction};

use super::{project, records, reserve, PgError, Prepared};
use crate::authority::{parse_returns_to, Treatment};
use crate::projection::Entry;
use crate::void::{taken_off, Request, Void, Voided};

/// Attempts before the caller hears a deadlock or serialization failure.
const MAX_ATTEMPTS: u32 = 5;

/// Voids `req`'s movement, retrying on deadlock or serialization failure.
pub async fn void(
    client: &mut Client,
    p: &Prepared,
    req: &Request,
    now: i64,
) -> Result<Voided, PgError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tx = client.transaction().await?;
        let result = match void_in(&tx, p, req, now).await {
            Ok(voided) => tx.commit().await.map(|()| voided).map_err(PgError::from),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, agent = %req.agent_id, seq = req.seq, "void transaction retried");
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
            other => return other,
        }
    }
}

async fn void_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    req: &Request,
    now: i64,
) -> Result<Voided, PgError> {
    let seq = req.seq as i64;
    let Some(entry) = entry(tx, p, &req.agent_id, seq).await? else {
        return Ok(Voided::Unknown);
    };
    let key = entry.key();
    let mut groups = vec![(key.sku.clone(), key.warehouse.clone())];
    let off = taken_off(&entry);
    groups.extend(
        off.iter()
            .map(|(k, _)| (k.sku.clone(), k.warehouse.clone())),
    );
    project::lock(tx, p, &groups).await?;
    // Under the lock: a void committed meanwhile (by this worker or another) is seen here.
    if let Some(existing) = get(tx, p, &req.agent_id, req.seq).await? {
        return Ok(Voided::Already(existing));
    }
    tx.execute(
        &p.get(
            tx,
            "INSERT INTO voids (agent_id, seq, voided_by, reason, voided_at_ms, previous_treatment)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?,
        &[
            &req.agent_id,
            &seq,
            &req.by,
            &req.reason,
            &now,
            &entry.treatment.as_str(),
        ],
    )
    .await?;
    tx.execute(
        &p.get(
            tx,
            "UPDATE ledger SET treatment = 'voided' WHERE agent_id = $1 AND seq = $2",
        )
        .await?,
        &[&req.agent_id, &seq],
    )
    .await?;
    for table in ["drift", "conflicts", "shortfalls"] {
        let sql = format!("DELETE FROM {table} WHERE agent_id = $1 AND seq = $2");
        tx.execute(&p.get(tx, &sql).await?, &[&req.agent_id, &seq])
            .await?;
    }
    project::add(tx, p, &off.into_iter().collect(), now).await?;
    replay(tx, p, &key.sku, &key.warehouse, now).await?;
    // Computed again from the ledger, where the movement no longer counts.
    records::settle(tx, p, std::slice::from_ref(&entry), now).await?;
    let m = &entry.movement;
    if m.kind == stocksync_common::MovementKind::Shipment
        && m.references.order.is_some()
        && entry.treatment.has_effect()
    {
        reserve::on_shipments(tx, p, &[(key.sku.clone(), key.warehouse.clone())], now).await?;
    }
    tx.execute(
        &p.get(
            tx,
            "INSERT INTO outbox (sku, created_at_ms) VALUES ($1, $2)",
        )
        .await?,
        &[&key.sku, &now],
    )
    .await?;
    Ok(Voided::New(
        get(tx, p, &req.agent_id, req.seq)
            .await?
            .ok_or_else(|| PgError::Corrupt("a void just inserted is not there".into()))?,
    ))
}

/// Replays the (SKU, warehouse) without the voided movement. The replay writes the bins it
/// knows; a bin only the voided movement had is not among them, so every bin's physical
/// states are cleared first (the warehouse-level row keeps what reservations hold).
async fn replay(
    tx: &Transaction<'_>,
    p: &Prepared,
    sku: &str,
    warehouse: &str,
    now: i64,
) -> Result<(), PgError> {
    let held = reserve::held(tx, p, sku, warehouse).await?;
    tx.execute(
        &p.get(
            tx,
            "UPDATE stock SET
                available = CASE WHEN bin = '' THEN -$3::bigint ELSE 0 END,
                reserved = CASE WHEN bin = '' THEN $3::bigint ELSE 0 END,
                damaged = 0, quality_control = 0, updated_at_ms = $4
             WHERE sku = $1 AND warehouse = $2",
        )
        .await?,
        &[&sku, &warehouse, &held, &now],
    )
    .await?;
    project::rebuild(tx, p, sku, warehouse, now).await
}

/// The ledger entry of a movement, whatever its treatment.
async fn entry(
    tx: &Transaction<'_>,
    p: &Prepared,
    agent_id: &str,
    seq: i64,
) -> Result<Option<Entry>, PgError> {
    let row = tx
        .query_opt(
            &p.get(
                tx,
                "SELECT treatment, returns_to, payload FROM ledger WHERE agent_id = $1 AND seq = $2",
            )
            .await?,
            &[&agent_id, &seq],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let movement = stocksync_common::wire::decode_movement(r.get(2)).map_err(|e| {
        PgError::Corrupt(format!("ledger row of agent `{agent_id}` seq {seq}: {e}"))
    })?;
    Ok(Some(Entry {
        agent_id: agent_id.to_string(),
        treatment: Treatment::parse(r.get(0)),
        returns_to: parse_returns_to(r.get(1)),
        movement,
    }))
}

/// The void of a movement, if it has one.
pub async fn get(
    c: &impl tokio_postgres::GenericClient,
    p: &Prepared,
    agent_id: &str,
    seq: u64,
) -> Result<Option<Void>, PgError> {
    let row = c
        .query_opt(
            &p.get(
                c,
                "SELECT voided_by, reason, voided_at_ms, previous_treatment FROM voids
                 WHERE agent_id = $1 AND seq = $2",
            )
            .await?,
            &[&agent_id, &(seq as i64)],
        )
        .await?;
    Ok(row.map(|r| Void {
        agent_id: agent_id.to_string(),
        seq,
        by: r.get(0),
        reason: r.get(1),
        voided_at_ms: r.get(2),
        previous_treatment: r.get(3),
    }))
}
