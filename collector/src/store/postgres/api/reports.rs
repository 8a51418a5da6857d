//! `GET /v1/reports/daily` on a worker: the SQLite collector's report (`crate::report`),
//! decided by the same code from the shared database's facts (`store::postgres::report`),
//! read in one snapshot after the exception queue caught up with the stores' records. The
//! channel target lines are this worker's delivery figures, as in `/v1/channels`: the
//! publishing worker's are the full ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::PgApp;
use crate::api::reports::{answer, DailyQuery};
use crate::api::{AppError, Params};
use crate::report::{self, Context};
use crate::store::postgres::{exceptions, now_ms, PgError};

/// `GET /v1/reports/daily[?date=YYYY-MM-DD&format=csv]`.
pub async fn daily(
    State(app): State<Arc<PgApp>>,
    headers: HeaderMap,
    Params(q): Params<DailyQuery>,
) -> Result<Response, AppError> {
    let now = now_ms();
    let (day_start_ms, csv) = q.parse(&headers, now)?;
    let facts = facts(&app, day_start_ms, now).await?;
    let cx = Context {
        now_ms: now,
        day_start_ms,
        ops: &app.operations,
        catalog: &app.catalog,
        targets: target_stats(&app),
    };
    Ok(answer(&report::daily(&facts, &cx), csv))
}

/// The exception queue brought up to date, then the report's facts in one snapshot.
pub async fn facts(app: &PgApp, day_start_ms: i64, now: i64) -> Result<report::Facts, PgError> {
    let mut conn = app.pool.get().await?;
    let prepared = conn.prepared();
    let tx = conn.transaction().await?;
    exceptions::sync(&tx, &prepared, now).await?;
    tx.commit().await?;
    let tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let facts = crate::store::postgres::report::facts(&tx, &app.catalog, day_start_ms, now).await?;
    tx.commit().await?;
    Ok(facts)
}

/// This worker's delivery figures of every channel target.
fn target_stats(app: &PgApp) -> BTreeMap<(String, String), crate::publish::stats::TargetStats> {
    let mut out = BTreeMap::new();
    for name in app.channels.channels.keys() {
        for (target, s) in app.channels.stats.of_channel(name) {
            out.insert((name.clone(), target), s);
        }
    }
    out
}
