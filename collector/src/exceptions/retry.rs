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
//!
//! An agent's reject is retried where it was refused: the collector sends the agent a
//! command (`agent_rejects::Commands`) and the exception stays `retrying` until the agent's
//! answer arrives (`agent_retried`); the agent journals the request exactly once, keyed by
//! the reject.

use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

use super::actions::{ActionError, Request};
use super::sources::{event, set_status};
use super::{Kind, SYSTEM};
use crate::agent_rejects::Commands;
use crate::ledger::{Ledger, Retried, RETRYABLE};
use stocksync_common::agent_reject::{self, RetryOutcome};

/// What a retry of one exception led to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Retry {
    pub id: String,
    /// `resolved` when every record is in the ledger now, `retrying` while agents answer,
    /// else `open`.
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
pub(crate) fn not_retryable(kind: &str) -> Option<String> {
    match Kind::parse(kind) {
        Some(Kind::CollectorReject | Kind::AgentReject) => None,
        Some(Kind::ChannelPush) => Some(
            "a failed channel push is retried by the channel itself with backoff; it resolves when a delivery succeeds".into(),
        ),
        _ => Some(format!(
            "a {kind} is not a refused record that can be processed again: correct the stock (a count, a movement) and resolve it"
        )),
    }
}

/// The records a retry processes again.
enum Targets {
    /// Collector rejects, by id.
    Collector(Vec<i64>),
    /// Agent rejects: `(warehouse, agent, reject id, received_at_ms)`.
    Agent(Vec<(String, String, i64, i64)>),
}

/// The agent rejects exception `id` groups.
fn agent_targets(tx: &Connection, id: &str) -> rusqlite::Result<Vec<(String, String, i64, i64)>> {
    let mut stmt = tx.prepare_cached(
        "SELECT a.warehouse, a.agent_id, a.reject_id, a.received_at_ms
         FROM exception_sources s JOIN agent_rejects a
           ON s.origin_key = a.agent_id || '/' || a.reject_id || '/' || a.received_at_ms
         WHERE s.origin = 'agent_rejects' AND s.exception_id = ?1 ORDER BY a.arrived_at_ms",
    )?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

/// Marks exception `id` `retrying`, counts the attempt and returns the records to retry.
fn begin(tx: &Connection, id: &str, req: &Request, now: i64) -> Result<Targets, ActionError> {
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
    let targets = if kind == Kind::AgentReject.as_str() {
        Targets::Agent(agent_targets(tx, id)?)
    } else {
        Targets::Collector(collector_targets(tx, id)?)
    };
    if matches!(&targets, Targets::Collector(t) if t.is_empty()) {
        return Err(nothing_to_retry(id));
    }
    tx.execute(
        "UPDATE exceptions SET status = 'retrying', status_at_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
        params![id, now],
    )?;
    event(tx, id, now, "retry", &req.by, Some(&req.comment))?;
    Ok(targets)
}

/// Exception `id` groups no reject that can be processed again.
pub(crate) fn nothing_to_retry(id: &str) -> ActionError {
    ActionError::NotRetryable {
        id: id.to_string(),
        detail: format!(
            "only a single movement refused on {} can be processed again; this reject is a payload or batch the sender must correct",
            RETRYABLE.join(" or ")
        ),
    }
}

/// The collector rejects exception `id` groups that the ledger can retry.
fn collector_targets(tx: &Connection, id: &str) -> rusqlite::Result<Vec<i64>> {
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
    Ok(rejects)
}

/// What the retries of an exception's records add up to, on every backend.
pub(crate) struct Settled {
    pub applied: usize,
    pub already_applied: usize,
    /// Why a record is still refused (the first such reason).
    pub reason: Option<String>,
    /// The rejects now in the ledger: their sources close.
    pub closed: Vec<i64>,
}

impl Settled {
    /// Tallies the ledger's answer for each reject.
    pub fn of(outcomes: &[(i64, Retried)]) -> Settled {
        let mut s = Settled {
            applied: 0,
            already_applied: 0,
            reason: None,
            closed: Vec::new(),
        };
        for (reject, outcome) in outcomes {
            match outcome {
                Retried::Applied => s.applied += 1,
                Retried::AlreadyApplied => s.already_applied += 1,
                Retried::StillRefused(why) | Retried::NotRetryable(why) => {
                    s.reason.get_or_insert_with(|| why.clone());
                    continue;
                }
                Retried::Unknown => continue,
            }
            s.closed.push(*reject);
        }
        s
    }

    /// The exception's status afterwards: resolved once every record is in the ledger.
    pub fn status(&self) -> &'static str {
        if self.reason.is_some() {
            "open"
        } else {
            "resolved"
        }
    }

    /// The log entry: `(action, comment)`.
    pub fn event(&self) -> (&'static str, String) {
        match &self.reason {
            Some(why) => ("retry failed", format!("still refused: {why}")),
            None => (
                "resolved",
                format!(
                    "{} applied, {} already in the ledger",
                    self.applied, self.already_applied
                ),
            ),
        }
    }

    /// The answer, given the exception's attempts so far.
    pub fn answer(self, id: &str, attempts: i64) -> Retry {
        Retry {
            id: id.to_string(),
            status: self.status().to_string(),
            attempts,
            applied: self.applied,
            already_applied: self.already_applied,
            reason: self.reason,
        }
    }
}

/// Records what the ledger's retries led to.
fn finish(
    tx: &Connection,
    id: &str,
    outcomes: &[(i64, Retried)],
    now: i64,
) -> rusqlite::Result<Retry> {
    let settled = Settled::of(outcomes);
    for reject in &settled.closed {
        tx.execute(
            "UPDATE exception_sources SET open = 0 WHERE origin = 'rejects' AND origin_key = ?1",
            [reject.to_string()],
        )?;
    }
    set_status(tx, id, settled.status(), now)?;
    if let Some(why) = &settled.reason {
        tx.execute(
            "UPDATE exceptions SET reason = ?2 WHERE id = ?1",
            params![id, why],
        )?;
    }
    let (action, comment) = settled.event();
    event(tx, id, now, action, SYSTEM, Some(&comment))?;
    let attempts = tx.query_row("SELECT attempts FROM exceptions WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    Ok(settled.answer(id, attempts))
}

/// Retries exception `id`: processes its refused records again, exactly once each (an
/// agent's, by a command to the agent: the answer comes back later).
pub async fn retry(
    (ledger, commands): (&Ledger, &Commands),
    id: &str,
    req: Request,
    now: impl Fn() -> i64,
) -> Result<Retry, ActionError> {
    let targets = {
        let (id, t) = (id.to_string(), now());
        ledger
            .write(move |tx, _| Ok(begin(tx, &id, &req, t)))
            .await??
    };
    let rejects = match targets {
        Targets::Collector(rejects) => rejects,
        Targets::Agent(rejects) => return ask_agents(ledger, commands, id, &rejects, now()).await,
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

/// Sends each agent the retry of its reject; the exception stays `retrying` until the
/// answers arrive, or opens again at once if a command cannot be sent.
async fn ask_agents(
    ledger: &Ledger,
    commands: &Commands,
    id: &str,
    rejects: &[(String, String, i64, i64)],
    now: i64,
) -> Result<Retry, ActionError> {
    let mut failed = None;
    for (warehouse, agent, reject, received) in rejects {
        if let Err(e) = commands.retry(warehouse, agent, *reject, *received).await {
            failed = Some(format!("could not send the retry to agent {agent}: {e}"));
        }
    }
    let id = id.to_string();
    Ok(ledger
        .write(move |tx, _| {
            if let Some(why) = &failed {
                set_status(tx, &id, "open", now)?;
                event(tx, &id, now, "retry failed", SYSTEM, Some(why))?;
            }
            let (status, attempts): (String, i64) = tx.query_row(
                "SELECT status, attempts FROM exceptions WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Retry {
                id,
                status,
                attempts,
                applied: 0,
                already_applied: 0,
                reason: failed,
            })
        })
        .await?)
}

/// Records what an agent's retry of its reject led to: resolves the exception once the
/// agent journaled it (now or before), opens it again with the new reason otherwise.
pub fn agent_retried(
    tx: &Connection,
    agent: &str,
    r: &agent_reject::Retried,
    now: i64,
) -> rusqlite::Result<()> {
    super::sync(tx, now)?;
    let key = format!("{agent}/{}/{}", r.id, r.received_at_ms);
    let id: Option<String> = tx
        .query_row(
            "SELECT exception_id FROM exception_sources WHERE origin = 'agent_rejects' AND origin_key = ?1",
            [&key],
            |row| row.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        tracing::warn!(%agent, reject = r.id, "retry outcome for a reject the collector does not hold");
        return Ok(());
    };
    let done = matches!(
        r.outcome,
        RetryOutcome::Applied | RetryOutcome::AlreadyApplied
    );
    if done {
        tx.execute(
            "UPDATE exception_sources SET open = 0 WHERE origin = 'agent_rejects' AND origin_key = ?1",
            [&key],
        )?;
        let open: i64 = tx.query_row(
            "SELECT count(*) FROM exception_sources WHERE exception_id = ?1 AND open = 1",
            [&id],
            |row| row.get(0),
        )?;
        let comment = format!("agent {agent} journaled reject {}: {}", r.id, r.detail);
        let status = if open == 0 { "resolved" } else { "retrying" };
        set_status(tx, &id, status, now)?;
        return event(tx, &id, now, "retried", SYSTEM, Some(&comment));
    }
    set_status(tx, &id, "open", now)?;
    tx.execute(
        "UPDATE exceptions SET reason = ?2 WHERE id = ?1",
        params![id, r.detail],
    )?;
    let comment = format!("still refused by agent {agent}: {}", r.detail);
    event(tx, &id, now, "retry failed", SYSTEM, Some(&comment))
}

/// Retries every open exception the filter selects that can be retried; returns what each
/// retry led to, and the ids skipped with why.
pub async fn retry_by_filter(
    (ledger, commands): (&Ledger, &Commands),
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
        match retry((ledger, commands), &id, req.clone(), &now).await {
            Ok(r) => done.push(r),
            Err(ActionError::NotRetryable { detail, .. }) => skipped.push((id, detail)),
            Err(e) => return Err(e),
        }
    }
    Ok((done, skipped))
}
