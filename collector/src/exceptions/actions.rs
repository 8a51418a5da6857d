//! What an operator does to an exception: resolve, ignore, reopen or comment (retry is in
//! `retry`), each kept in
//! the exception's log with who did it and why. A status change needs both.

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde::Deserialize;

use super::sources::{event, set_status};

/// An operator's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Resolve,
    Ignore,
    Reopen,
    Comment,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "resolve" => Some(Action::Resolve),
            "ignore" => Some(Action::Ignore),
            "reopen" => Some(Action::Reopen),
            "comment" => Some(Action::Comment),
            _ => None,
        }
    }

    /// The status the action leads to (`None`: the status stays).
    fn status(self) -> Option<&'static str> {
        match self {
            Action::Resolve => Some("resolved"),
            Action::Ignore => Some("ignored"),
            Action::Reopen => Some("open"),
            Action::Comment => None,
        }
    }

    /// What the action does to an exception in `status`: the status it leads to, `None`
    /// when it only adds to the log; refused when the exception is in that status already.
    pub(crate) fn next(self, id: &str, status: &str) -> Result<Option<&'static str>, ActionError> {
        match self.status() {
            Some(next) if next == status => Err(ActionError::AlreadyInStatus {
                id: id.to_string(),
                status: status.to_string(),
            }),
            next => Ok(next),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Resolve => "resolved",
            Action::Ignore => "ignored",
            Action::Reopen => "reopened",
            Action::Comment => "commented",
        }
    }
}

/// Who acts and why.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub by: String,
    pub comment: String,
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no exception `{0}`")]
    NotFound(String),
    #[error("exception `{id}` is already {status}")]
    AlreadyInStatus { id: String, status: String },
    #[error("exception `{id}` cannot be retried: {detail}")]
    NotRetryable { id: String, detail: String },
    #[error("{detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("exception storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
}

pub(crate) fn check(req: &Request) -> Result<(), ActionError> {
    if req.by.trim().is_empty() {
        return Err(ActionError::Invalid {
            field: "$.by",
            detail: "say who acts (a name or an email)".into(),
        });
    }
    if req.comment.trim().is_empty() {
        return Err(ActionError::Invalid {
            field: "$.comment",
            detail: "say why (the comment is kept in the exception's log)".into(),
        });
    }
    Ok(())
}

/// Applies `action` to exception `id`; returns its status afterwards.
pub fn act(
    tx: &Connection,
    id: &str,
    action: Action,
    req: &Request,
    now: i64,
) -> Result<String, ActionError> {
    check(req)?;
    let status: String = tx
        .query_row("SELECT status FROM exceptions WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| ActionError::NotFound(id.to_string()))?;
    let Some(next) = action.next(id, &status)? else {
        event(tx, id, now, action.name(), &req.by, Some(&req.comment))?;
        return Ok(status);
    };
    set_status(tx, id, next, now)?;
    event(tx, id, now, action.name(), &req.by, Some(&req.comment))?;
    Ok(next.to_string())
}

/// Applies `action` to every exception the filter selects that is not in the action's
/// status already; returns their ids.
pub fn act_by_filter(
    tx: &Connection,
    (where_sql, args): &(String, Vec<Sql>),
    action: Action,
    req: &Request,
    now: i64,
) -> Result<Vec<String>, ActionError> {
    check(req)?;
    let ids: Vec<String> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT id FROM exceptions WHERE {where_sql} ORDER BY id"
        ))?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut changed = Vec::new();
    for id in ids {
        match act(tx, &id, action, req, now) {
            Ok(_) => changed.push(id),
            Err(ActionError::AlreadyInStatus { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}
