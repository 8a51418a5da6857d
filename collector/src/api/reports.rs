//! `GET /v1/reports/daily?date=YYYY-MM-DD`: the daily exception report, as JSON or, with
//! `Accept: text/csv` or `?format=csv`, as CSV (one line per finding). The date is a UTC
//! day and defaults to today.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::AppError;
use crate::report::{self, Context};
use crate::App;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DailyQuery {
    date: Option<String>,
    format: Option<String>,
}

/// `GET /v1/reports/daily`.
#[utoipa::path(
    get,
    path = "/v1/reports/daily",
    tag = "exceptions",
    summary = "Daily exception report",
    params(DailyQuery),
    responses(
        (status = 200, description = "The daily exception report (JSON, or CSV with format=csv)", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn daily(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    super::Params(q): super::Params<DailyQuery>,
) -> Result<Response, AppError> {
    let now = stocksync_common::OccurredAt::now().unix_ms;
    let (day_start_ms, csv) = q.parse(&headers, now)?;
    super::exceptions::sync(&app.ledger).await?;
    let cx = Context {
        now_ms: now,
        day_start_ms,
        ops: &app.operations,
        catalog: &app.catalog,
        targets: target_stats(&app),
    };
    let facts = app
        .ledger
        .read(|c| report::sqlite::facts(c, &app.catalog, day_start_ms, now))?;
    Ok(answer(&report::daily(&facts, &cx), csv))
}

impl DailyQuery {
    /// The day asked for (00:00 UTC, today by default) and whether CSV is wanted.
    pub(crate) fn parse(&self, headers: &HeaderMap, now: i64) -> Result<(i64, bool), AppError> {
        let day_start_ms = match &self.date {
            None => report::day_start_ms(&report::date_of(now)).unwrap_or(0),
            Some(d) => report::day_start_ms(d).ok_or_else(|| {
                AppError::bad_request("date", format!("`{d}` is not a YYYY-MM-DD date"))
            })?,
        };
        let csv = match self.format.as_deref() {
            Some("csv") => true,
            Some("json") => false,
            Some(other) => {
                return Err(AppError::bad_request(
                    "format",
                    format!("unknown format `{other}` (json or csv)"),
                ))
            }
            None => headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/csv")),
        };
        Ok((day_start_ms, csv))
    }
}

/// The report as JSON, or as CSV when `csv`.
pub(crate) fn answer(body: &serde_json::Value, csv: bool) -> Response {
    if csv {
        return (
            [("content-type", "text/csv; charset=utf-8")],
            report::to_csv(body),
        )
            .into_response();
    }
    Json(body).into_response()
}

/// The in-memory figures of every channel target.
pub fn target_stats(app: &App) -> BTreeMap<(String, String), crate::publish::stats::TargetStats> {
    let mut out = BTreeMap::new();
    for name in app.channels.channels.keys() {
        for (target, s) in app.channels.stats.of_channel(name) {
            out.insert((name.clone(), target), s);
        }
    }
    out
}
