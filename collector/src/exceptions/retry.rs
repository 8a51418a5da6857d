//! Retrying an exception: its records are processed again, through the ledger's own
//! exactly-once retry (`ledger::retry`), once the cause is fixed (an unknown SKU the catalog
//! has since learnt, a movement dated ahead of the clock whose time has come).
//!
//! A retry happens in three steps, each its own write: `begin` marks the exception
//! `retrying`, counts the attempt and names the records; the ledger retries each; `finish`
//! resolves the exception if every record is in the ledger now, or opens it again with the
//! new reason. Each step is safe to repeat: a record the ledger holds already answers
//! `already applied`, so however often a retry is run, or cut short by a restart and run
//! again, the record counts once.

use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};
use serde::Serialize;

use super::actions::{ActionError, Request};
use super::sources::{event, set_status};
use super::{Kind, SYSTEM};
use crate::ledger::{Ledger, Retried, RETRYABLE};

/// What a retry of one exception led to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Retry {
    pub id: String,
    /// `resolved` when every record is in the ledger now, else `open`.
    pub status: String,
    pub attempts: i64,
    /// Records applied by this retry.
    pub applied: usize,
    /// Records the ledger held already (an earlier retry, or the agent's own resend).
    pub already_applied: usize,
    /// Why the records still refused are refused (empty when none is).
    pub reason: Option<String>,
}

/// Why `kind` cannot be retried, if it cannot.
fn not_retryable(kind: &str) -> Option<String> {
    match Kind::parse(kind) {
        Some(Kind::CollectorReject) => None,
        Some(Kind::AgentReject) => Some(
            "an agent reject is retried on its agent: `POST /v1/rejects/<id>/retry` on the agent that refused it (the record's `agent` and `reject_id`), then resolve it here".into(),
        ),
        Some(Kind::ChannelPush) => Some(
            "a failed channel push is retried by the channel itself with backoff; it resolves when a delivery succeeds".into(),
        ),
        _ => Some(format!(
            "a {kind} is not a refused record that can be processed again: correct the stock (a count, a movement) and resolve it"
        )),
    }
}

/// Marks exception `id` `retrying`, counts the attempt and returns the ids of the rejects
/// to retry.
fn begin(tx: &Transaction<'_>, id: &str, req: &Request, now: i64) -> Result<Vec<i64>, ActionError> {
    super::actions::check(req)?;
    let (kind, status): (String, String) = tx
        .query_row(
            "SELECT kind, status FROM exceptions WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| ActionError::NotFound(id.to_string()))?;
    if let Some(why) = not_retryable(&kind) {
        return Err(ActionError::NotRetryable {
            id: id.to_string(),
            detail: why,
        });
    }
    if status == "ignored" {
        return Err(ActionError::NotRetryable {
            id: id.to_string(),
            detail: "it is ignored; reopen it first".into(),
        });
    }
    let mut args: Vec<Sql> = vec![Sql::Text(id.to_string())];
    args.extend(RETRYABLE.iter().map(|f| Sql::Text(f.to_string())));
    let rejects: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT r.id FROM exception_sources s JOIN rejects r ON r.id = CAST(s.origin_key AS INTEGER)
             WHERE s.origin = 'rejects' AND s.exception_id = ?1 AND r.agent_id IS NOT NULL
               AND r.first_seq IS NOT NULL AND r.first_seq = r.last_seq AND r.field IN (?2, ?3)
             ORDER BY r.id",
        )?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    if rejects.is_empty() {
        return Err(ActionError::NotRetryable {
            id: id.to_string(),
            detail: format!(
                "only a single movement refused on {} can be processed again; this reject is a payload or batch the sender must correct",
                RETRYABLE.join(" or ")
            ),
        });
    }
    tx.execute(
        "UPDATE exceptions SET status = 'retrying', status_at_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
        params![id, now],
    )?;
    event(tx, id, now, "retry", &req.by, Some(&req.comment))?;
    Ok(rejects)
}

/// Records what the ledger's retries led to.
fn finish(
    tx: &Transaction<'_>,
    id: &str,
    outcomes: &[(i64, Retried)],
    now: i64,
) -> rusqlite::Result<Retry> {
    let (mut applied, mut already, mut reason) = (0, 0, None);
    for (reject, outcome) in outcomes {
        match outcome {
            Retried::Applied => applied += 1,
            Retried::AlreadyApplied => already += 1,
            Retried::StillRefused(why) | Retried::NotRetryable(why) => {
                reason.get_or_insert_with(|| why.clone());
                continue;
            }
            Retried::Unknown => continue,
        }
        tx.execute(
            "UPDATE exception_sources SET open = 0 WHERE origin = 'rejects' AND origin_key = ?1",
            [reject.to_string()],
        )?;
    }
    let status = if reason.is_some() { "open" } else { "resolved" };
    set_status(tx, id, status, now)?;
    let comment = match &reason {
        Some(why) => {
            tx.execute(
                "UPDATE exceptions SET reason = ?2 WHERE id = ?1",
                params![id, why],
            )?;
            format!("still refused: {why}")
        }
        None => format!("{applied} applied, {already} already in the ledger"),
    };
    let action = if reason.is_some() {
        "retry failed"
    } else {
        "resolved"
    };
    event(tx, id, now, action, SYSTEM, Some(&comment))?;
    let attempts = tx.query_row("SELECT attempts FROM exceptions WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    Ok(Retry {
        id: id.to_string(),
        status: status.to_string(),
        attempts,
        applied,
        already_applied: already,
        reason,
    })
}

/// Retries exception `id`: processes its refused records again, exactly once each.
pub async fn retry(
    ledger: &Ledger,
    id: &str,
    req: Request,
    now: impl Fn() -> i64,
) -> Result<Retry, ActionError> {
    let rejects = {
        let (id, t) = (id.to_string(), now());
        ledger
            .write(move |tx, _| Ok(begin(tx, &id, &req, t)))
            .await??
    };
    let mut outcomes = Vec::with_capacity(rejects.len());
    for reject in rejects {
        outcomes.push((reject, ledger.retry_reject(reject).await?));
    }
    let (id, t) = (id.to_string(), now());
    Ok(ledger
        .write(move |tx, _| finish(tx, &id, &outcomes, t))
        .await?)
}

/// Retries every open exception the filter selects that can be retried; returns what each
/// retry led to, and the ids skipped with why.
pub async fn retry_by_filter(
    ledger: &Ledger,
    (where_sql, args): (String, Vec<Sql>),
    req: Request,
    now: impl Fn() -> i64,
) -> Result<(Vec<Retry>, Vec<(String, String)>), ActionError> {
    super::actions::check(&req)?;
    let ids: Vec<(String, String)> = ledger.read(|c| {
        let mut stmt = c.prepare(&format!(
            "SELECT id, kind FROM exceptions WHERE ({where_sql}) AND status IN ('open', 'retrying') ORDER BY id"
        ))?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })?;
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for (id, kind) in ids {
        if let Some(why) = not_retryable(&kind) {
            skipped.push((id, why));
            continue;
        }
        match retry(ledger, &id, req.clone(), &now).await {
            Ok(r) => done.push(r),
            Err(ActionError::NotRetryable { detail, .. }) => skipped.push((id, detail)),
            Err(e) => return Err(e),
        }
    }
    Ok((done, skipped))
}
