//! What an operator does to exceptions in PostgreSQL, by the SQLite queue's rules
//! (`exceptions::actions`, `exceptions::retry`) with this store's SQL.
//!
//! `retry` runs the SQLite queue's three steps: `begin` checks the exception can be retried,
//! marks it `retrying` and counts the attempt; each of its collector rejects goes through
//! the store's own exactly-once retry (`retry`); `finish` resolves it when every record is in
//! the ledger, or opens it again with the new reason. Each step is its own transaction and
//! safe to repeat: a record the ledger holds already answers `already applied`. What counts
//! as retryable, and what the outcomes add up to, are the SQLite queue's decisions
//! (`not_retryable`, `Settled`). An agent's reject is retried where it was refused: the
//! agent is sent a command (`agent_rejects`) and the exception stays `retrying` until its
//! answer arrives (`agent_rejects::agent_retried`).
//!
//! `act` resolves, ignores, reopens or comments on one exception by the SQLite rule
//! (`Action::next`); the bulk forms apply either to every exception a filter selects, each
//! exception in its own transaction (on SQLite the whole bulk action is one).

use tokio_postgres::Transaction;

use super::exceptions::{event_by, set_status};
use super::{now_ms, PgError, PgStore, Pool, Prepared};
use crate::agent_rejects::Commands;
use crate::exceptions::{self, Action, ActionError, Kind, Request, Retry, Settled, SYSTEM};
use crate::ledger::RETRYABLE;

/// The records a retry processes again.
enum Targets {
    /// Collector rejects, by id.
    Collector(Vec<i64>),
    /// Agent rejects: `(warehouse, agent, reject id, received_at_ms)`.
    Agent(Vec<(String, String, i64, i64)>),
}

/// Retries exception `id` (folded already); the inner error is a refusal for the client.
pub async fn retry(
    (store, commands): (&PgStore, &Commands),
    pool: &Pool,
    id: &str,
    req: &Request,
) -> Result<Result<Retry, ActionError>, PgError> {
    let mut conn = pool.get().await?;
    let p = conn.prepared();
    let tx = conn.transaction().await?;
    let targets = match begin(&tx, &p, id, req).await? {
        Ok(targets) => targets,
        Err(refused) => return Ok(Err(refused)),
    };
    tx.commit().await?;
    let rejects = match targets {
        Targets::Collector(rejects) => rejects,
        Targets::Agent(rejects) => return ask_agents(pool, commands, id, &rejects).await.map(Ok),
    };
    let mut outcomes = Vec::with_capacity(rejects.len());
    for reject in rejects {
        outcomes.push((reject, store.retry_reject(reject).await?));
    }
    let tx = conn.transaction().await?;
    let answer = finish(&tx, &p, id, &outcomes).await?;
    tx.commit().await?;
    Ok(Ok(answer))
}

/// Sends each agent the retry of its reject; the exception stays `retrying` until the
/// answers arrive, or opens again at once if a command cannot be sent.
async fn ask_agents(
    pool: &Pool,
    commands: &Commands,
    id: &str,
    rejects: &[(String, String, i64, i64)],
) -> Result<Retry, PgError> {
    let mut failed = None;
    for (warehouse, agent, reject, received) in rejects {
        if let Err(e) = commands.retry(warehouse, agent, *reject, *received).await {
            failed = Some(format!("could not send the retry to agent {agent}: {e}"));
        }
    }
    let mut conn = pool.get().await?;
    let p = conn.prepared();
    let tx = conn.transaction().await?;
    if let Some(why) = &failed {
        let now = now_ms();
        set_status(&tx, &p, id, "open", now).await?;
        event_by(&tx, &p, id, (now, "retry failed", SYSTEM), Some(why)).await?;
    }
    let row = tx
        .query_one(
            "SELECT status, attempts FROM exceptions WHERE id = $1",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok(Retry {
        id: id.to_string(),
        status: row.get(0),
        attempts: row.get(1),
        applied: 0,
        already_applied: 0,
        reason: failed,
    })
}

/// The agent rejects exception `id` groups.
async fn agent_targets(
    tx: &Transaction<'_>,
    id: &str,
) -> Result<Vec<(String, String, i64, i64)>, PgError> {
    let rows = tx
        .query(
            "SELECT a.warehouse, a.agent_id, a.reject_id, a.received_at_ms
             FROM exception_sources s JOIN agent_rejects a
               ON s.origin_key = a.agent_id || '/' || a.reject_id || '/' || a.received_at_ms
             WHERE s.origin = 'agent_rejects' AND s.exception_id = $1 ORDER BY a.arrived_at_ms",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Marks exception `id` `retrying`, counts the attempt and returns the records to retry.
async fn begin(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    req: &Request,
) -> Result<Result<Targets, ActionError>, PgError> {
    if let Err(invalid) = exceptions::check(req) {
        return Ok(Err(invalid));
    }
    let row = tx
        .query_opt(
            "SELECT kind, status FROM exceptions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(ActionError::NotFound(id.to_string())));
    };
    let (kind, status): (String, String) = (row.get(0), row.get(1));
    let refused = |detail: String| {
        Ok(Err(ActionError::NotRetryable {
            id: id.to_string(),
            detail,
        }))
    };
    if let Some(why) = exceptions::not_retryable(&kind) {
        return refused(why);
    }
    if status == "ignored" {
        return refused("it is ignored; reopen it first".into());
    }
    let targets = if kind == Kind::AgentReject.as_str() {
        Targets::Agent(agent_targets(tx, id).await?)
    } else {
        Targets::Collector(collector_targets(tx, id).await?)
    };
    if matches!(&targets, Targets::Collector(t) if t.is_empty()) {
        return Ok(Err(exceptions::nothing_to_retry(id)));
    }
    let now = now_ms();
    tx.execute(
        "UPDATE exceptions SET status = 'retrying', status_at_ms = $2, attempts = attempts + 1 WHERE id = $1",
        &[&id, &now],
    )
    .await?;
    event_by(tx, p, id, (now, "retry", &req.by), Some(&req.comment)).await?;
    Ok(Ok(targets))
}

/// The collector rejects exception `id` groups that the store can retry.
async fn collector_targets(tx: &Transaction<'_>, id: &str) -> Result<Vec<i64>, PgError> {
    let fields: Vec<&str> = RETRYABLE.to_vec();
    Ok(tx
        .query(
            "SELECT r.id FROM exception_sources s JOIN rejects r ON r.id::text = s.origin_key
             WHERE s.origin = 'rejects' AND s.exception_id = $1 AND r.agent_id IS NOT NULL
               AND r.first_seq IS NOT NULL AND r.first_seq = r.last_seq AND r.field = ANY($2)
             ORDER BY r.id",
            &[&id, &fields],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Records what the store's retries led to.
async fn finish(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    outcomes: &[(i64, crate::ledger::Retried)],
) -> Result<Retry, PgError> {
    let now = now_ms();
    let settled = Settled::of(outcomes);
    let closed: Vec<String> = settled.closed.iter().map(i64::to_string).collect();
    tx.execute(
        "UPDATE exception_sources SET open = false WHERE origin = 'rejects' AND origin_key = ANY($1)",
        &[&closed],
    )
    .await?;
    set_status(tx, p, id, settled.status(), now).await?;
    if let Some(why) = &settled.reason {
        tx.execute(
            "UPDATE exceptions SET reason = $2 WHERE id = $1",
            &[&id, why],
        )
        .await?;
    }
    let (action, comment) = settled.event();
    event_by(tx, p, id, (now, action, SYSTEM), Some(&comment)).await?;
    let attempts: i64 = tx
        .query_one("SELECT attempts FROM exceptions WHERE id = $1", &[&id])
        .await?
        .get(0);
    Ok(settled.answer(id, attempts))
}

/// Applies `action` to exception `id`; returns its status afterwards (the inner error is a
/// refusal for the client).
pub async fn act(
    pool: &Pool,
    id: &str,
    action: Action,
    req: &Request,
) -> Result<Result<String, ActionError>, PgError> {
    if let Err(invalid) = exceptions::check(req) {
        return Ok(Err(invalid));
    }
    let mut conn = pool.get().await?;
    let p = conn.prepared();
    let tx = conn.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT status FROM exceptions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    let Some(status) = row.map(|r| r.get::<_, String>(0)) else {
        return Ok(Err(ActionError::NotFound(id.to_string())));
    };
    let next = match action.next(id, &status) {
        Ok(next) => next,
        Err(refused) => return Ok(Err(refused)),
    };
    let now = now_ms();
    if let Some(next) = next {
        set_status(&tx, &p, id, next, now).await?;
    }
    let what = (now, action.name(), req.by.as_str());
    event_by(&tx, &p, id, what, Some(&req.comment)).await?;
    tx.commit().await?;
    Ok(Ok(next.map_or(status, str::to_string)))
}

/// The ids of the exceptions `filter` selects (and, for a retry, only open or retrying
/// ones), in byte order as on SQLite.
async fn selected(
    pool: &Pool,
    filter: &[(&'static str, String)],
    retrying: bool,
) -> Result<Vec<(String, String)>, PgError> {
    let mut conds: Vec<String> = filter
        .iter()
        .enumerate()
        .map(|(i, (column, _))| format!("{column} = ${}", i + 1))
        .collect();
    if retrying {
        conds.push("status IN ('open', 'retrying')".into());
    }
    conds.push("true".into());
    let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        filter.iter().map(|(_, v)| v as _).collect();
    let sql = format!(
        "SELECT id, kind FROM exceptions WHERE {} ORDER BY id COLLATE \"C\"",
        conds.join(" AND ")
    );
    let conn = pool.get().await?;
    let rows = conn.query(&sql, &args).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Applies `action` to every exception `filter` selects that is not in the action's status
/// already; returns their ids. Each exception is its own transaction.
pub async fn act_by_filter(
    pool: &Pool,
    filter: &[(&'static str, String)],
    action: Action,
    req: &Request,
) -> Result<Result<Vec<String>, ActionError>, PgError> {
    if let Err(invalid) = exceptions::check(req) {
        return Ok(Err(invalid));
    }
    let mut changed = Vec::new();
    for (id, _) in selected(pool, filter, false).await? {
        match act(pool, &id, action, req).await? {
            Ok(_) => changed.push(id),
            Err(ActionError::AlreadyInStatus { .. }) => {}
            Err(refused) => return Ok(Err(refused)),
        }
    }
    Ok(Ok(changed))
}

/// Retries every open exception `filter` selects that can be retried; returns what each
/// retry led to, and the ids skipped with why.
pub async fn retry_by_filter(
    with: (&PgStore, &Commands),
    pool: &Pool,
    filter: &[(&'static str, String)],
    req: &Request,
) -> Result<Result<(Vec<Retry>, Vec<(String, String)>), ActionError>, PgError> {
    if let Err(invalid) = exceptions::check(req) {
        return Ok(Err(invalid));
    }
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for (id, kind) in selected(pool, filter, true).await? {
        if let Some(why) = exceptions::not_retryable(&kind) {
            skipped.push((id, why));
            continue;
        }
        match retry(with, pool, &id, req).await? {
            Ok(r) => done.push(r),
            Err(ActionError::NotRetryable { detail, .. }) => skipped.push((id, detail)),
            Err(refused) => return Ok(Err(refused)),
        }
    }
    Ok(Ok((done, skipped)))
}
