//! Every worker follows the shared change log, so what waits on a channel's cursor (the SSE
//! streams a worker serves) wakes for changes another worker published.
//!
//! The publisher may be another process: its passes move the cursor watch of their own
//! worker only. So each worker polls the newest cursor of every channel (one index lookup
//! per channel) and moves its channel's watch forward when the log moved. A poll is cheaper
//! than a LISTEN connection per worker and needs nothing of the publisher; the streams read
//! the log themselves (`api::channels::stream`), so a missed wake only delays, never loses,
//! a change. Cursors follow commit order (the passes are fenced by the lease row), so a
//! reader that resumes after the cursor it last saw skips nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::super::Pool;
use super::PgChannels;

/// How often a worker looks at the change log.
const POLL: Duration = Duration::from_millis(100);

/// Moves each channel's cursor watch to the newest cursor in the log, every `POLL`, until
/// shutdown. A failed poll is logged and tried again.
pub async fn run(
    pool: Pool,
    channels: Arc<PgChannels>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let names: Vec<String> = channels.channels.keys().cloned().collect();
    loop {
        match newest(&pool, &names).await {
            Ok(rows) => {
                for (name, latest) in rows {
                    if let Some(channel) = channels.channels.get(&name) {
                        channel.cursor.send_if_modified(|c| {
                            let moved = latest > *c;
                            *c = (*c).max(latest);
                            moved
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "change log poll failed; again shortly"),
        }
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn newest(
    pool: &Pool,
    names: &[String],
) -> Result<Vec<(String, i64)>, tokio_postgres::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let conn = pool.get().await?;
    let rows = conn
        .query(
            "SELECT c, (SELECT COALESCE(MAX(cursor), 0)::bigint FROM channel_changes WHERE channel = c)
             FROM unnest($1::text[]) AS c",
            &[&names],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
