//! The daily report's and the alert rules' [`Facts`] from the shared PostgreSQL database:
//! the same reads as `report::sqlite`, here in one repeatable-read snapshot, so a worker's
//! report and alerts are decided by the same code (`report`, `alerts::rules`) as the SQLite
//! collector's.

use std::collections::BTreeMap;

use stocksync_common::catalog::Catalog;
use tokio_postgres::GenericClient;

use super::PgError;
use crate::exceptions::{Filter, Page};
use crate::report::{age_limits, day_end_ms, stock_needed, AgentLine, Facts, Failing, Unresolved};

/// Everything the report of the day starting at `day_start_ms` and the alert rules read, at `now`.
pub async fn facts(
    c: &impl GenericClient,
    catalog: &Catalog,
    day_start_ms: i64,
    now: i64,
) -> Result<Facts, PgError> {
    let listed: Vec<(String, String, String, i64)> = c
        .query(
            "SELECT channel, sku, channel_sku, value FROM channel_sellable WHERE value > 0
             ORDER BY channel COLLATE \"C\", sku COLLATE \"C\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let need = stock_needed(catalog, &listed);
    let stock: BTreeMap<String, (i64, i64)> = c
        .query(
            "SELECT sku, COALESCE(SUM(available), 0)::bigint, COALESCE(MAX(updated_at_ms), 0)
             FROM stock WHERE sku = ANY($1) GROUP BY sku",
            &[&need],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let opened_on_date = c
        .query(
            "SELECT kind, count(*) FROM exceptions WHERE first_seen_ms >= $1 AND first_seen_ms < $2 GROUP BY kind",
            &[&day_start_ms, &day_end_ms(day_start_ms)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let opened_last_24h: i64 = c
        .query_one(
            "SELECT count(*) FROM exceptions WHERE status IN ('open', 'retrying') AND first_seen_ms >= $1",
            &[&(now - 86_400_000)],
        )
        .await?
        .get(0);
    Ok(Facts {
        opened_on_date,
        opened_last_24h,
        unresolved: unresolved(c, now).await?,
        open_drift: open_of(c, "drift").await?,
        open_conflicts: open_of(c, "conflict").await?,
        listed,
        stock,
        last_seen: c
            .query(
                "SELECT warehouse, MAX(last_seen_ms) FROM agents GROUP BY warehouse ORDER BY warehouse COLLATE \"C\"",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        channel_errors: channel_errors(c).await?,
        agents: agents(c).await?,
    })
}

async fn open_of(c: &impl GenericClient, kind: &str) -> Result<Vec<serde_json::Value>, PgError> {
    let filter = Filter {
        kind: Some(kind.into()),
        status: Some("open".into()),
        ..Filter::default()
    };
    let conds = filter
        .conditions()
        .map_err(|(_, detail)| PgError::Corrupt(detail))?;
    let page = Page {
        limit: 100,
        offset: 0,
    };
    Ok(super::exceptions::list(c, &conds, page).await?.1)
}

async fn unresolved(c: &impl GenericClient, now: i64) -> Result<Vec<Unresolved>, PgError> {
    let [hour, day, week] = age_limits(now);
    let rows = c
        .query(
            "SELECT kind, count(*),
                    count(*) FILTER (WHERE first_seen_ms > $1),
                    count(*) FILTER (WHERE first_seen_ms <= $1 AND first_seen_ms > $2),
                    count(*) FILTER (WHERE first_seen_ms <= $2 AND first_seen_ms > $3),
                    count(*) FILTER (WHERE first_seen_ms <= $3),
                    MIN(first_seen_ms)
             FROM exceptions WHERE status IN ('open', 'retrying') GROUP BY kind ORDER BY kind COLLATE \"C\"",
            &[&hour, &day, &week],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Unresolved {
            kind: r.get(0),
            count: r.get(1),
            bands: [r.get(2), r.get(3), r.get(4), r.get(5)],
            oldest_first_seen_ms: r.get(6),
        })
        .collect())
}

async fn channel_errors(c: &impl GenericClient) -> Result<Vec<Failing>, PgError> {
    let rows = c
        .query(
            "SELECT channel, target, MIN(first_seen_ms),
                    (SELECT detail FROM channel_errors e2 WHERE e2.channel = e.channel AND e2.target = e.target
                     ORDER BY last_seen_ms DESC, id DESC LIMIT 1)
             FROM channel_errors e WHERE resolved_at_ms IS NULL
             GROUP BY channel, target ORDER BY channel COLLATE \"C\", target COLLATE \"C\"",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Failing {
            channel: r.get(0),
            target: r.get(1),
            failing_since_ms: r.get(2),
            last_error: r.get(3),
        })
        .collect())
}

async fn agents(c: &impl GenericClient) -> Result<Vec<AgentLine>, PgError> {
    let rows = c
        .query(
            "SELECT a.agent_id, a.warehouse, a.last_seen_ms,
                    (SELECT MAX(seq) FROM ledger l WHERE l.agent_id = a.agent_id)
             FROM agents a ORDER BY a.warehouse COLLATE \"C\", a.agent_id COLLATE \"C\"",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AgentLine {
            agent_id: r.get(0),
            warehouse: r.get(1),
            last_seen_ms: r.get(2),
            last_seq: r.get(3),
        })
        .collect())
}
