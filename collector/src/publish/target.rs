//! The delivery loop shared by every push target: read the channel's change log from the
//! target's durable cursor, fold it to the latest value per SKU, pace it through the
//! target's token bucket, deliver, and advance the cursor only after success.
//!
//! Invariant: the cursor moves only past changes the target accepted, so nothing is lost
//! across failures or restarts; a failure is kept in the error queue and retried with
//! backoff (or after the server's `Retry-After`), and it stalls only its own target, never
//! another channel or target.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stocksync_common::config::BrokerConfig;
use tokio::sync::watch;

use super::limit::{self, Backoff, PushLimits, TokenBucket};
use super::log::{ChangeLog, Read};
use super::stats::Stats;
use super::store::{now_ms, Published};
use super::{Channel, PublishError, Task};

/// Why a delivery failed, and when the server wants to hear from us again.
#[derive(Debug)]
pub struct Failure {
    pub detail: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(detail: impl Into<String>) -> Failure {
        Failure {
            detail: detail.into(),
            retry_after: None,
        }
    }
}

/// A place a channel's sellable numbers are pushed to.
pub trait Target: Send + 'static {
    /// Target name in cursors, errors and metrics (`mqtt`, `webhook`, `shopify`).
    const NAME: &'static str;

    /// Pacing and batching of this target.
    fn limits(&self) -> PushLimits;

    /// Delivers one batch of values (latest per SKU, in cursor order).
    fn deliver(
        &mut self,
        channel: &Channel,
        items: &[Published],
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// True when the target must be sent every current value (e.g. its broker restarted).
    fn needs_snapshot(&mut self) -> bool {
        false
    }

    /// Called after a full snapshot was delivered.
    fn snapshot_done(&mut self) {}
}

/// Starts the push targets configured for `channel` (MQTT, webhook, Shopify), delivering
/// from `log` (either store).
pub fn spawn_push<L: ChangeLog>(
    channel: &Arc<Channel>,
    log: &L,
    stats: &Arc<Stats>,
    broker: &BrokerConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<Task>, PublishError> {
    let mut tasks = Vec::new();
    let ctx = || {
        (
            channel.clone(),
            log.clone(),
            stats.clone(),
            shutdown.clone(),
        )
    };
    if channel.config.mqtt {
        let t = super::mqtt::MqttTarget::new(broker, &channel.name)?;
        tasks.push(tokio::spawn(run(t, ctx())));
    }
    if let Some(cfg) = &channel.config.webhook {
        let t = cfg.build(&channel.name)?;
        tasks.push(tokio::spawn(run(t, ctx())));
    }
    if let Some(cfg) = &channel.config.shopify {
        let t = cfg.build(&channel.name, log.clone())?;
        tasks.push(tokio::spawn(run(t, ctx())));
    }
    Ok(tasks)
}

type Ctx<L> = (Arc<Channel>, L, Arc<Stats>, watch::Receiver<bool>);

/// Delivers `channel`'s changes to `target` until shutdown; a storage failure is logged and
/// the loop restarts from the durable cursor a second later.
pub async fn run<T: Target, L: ChangeLog>(mut target: T, ctx: Ctx<L>) -> anyhow::Result<()> {
    let mut shutdown = ctx.3.clone();
    loop {
        match deliver_loop(&mut target, ctx.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::error!(channel = %ctx.0.name, target = T::NAME, error = %e, "channel target failed; restarting in 1 s");
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn deliver_loop<T: Target, L: ChangeLog>(
    target: &mut T,
    ctx: Ctx<L>,
) -> Result<(), PublishError> {
    let (channel, log, stats, mut shutdown) = ctx;
    let ch = channel.name.clone();
    let limits = target.limits();
    let max_batch = limits.max_batch.max(1);
    let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.burst, Instant::now());
    let mut backoff = Backoff::new(&limits, limit::seed(&format!("{ch}/{}", T::NAME)));
    let mut wake = channel.cursor.subscribe();
    let mut cursor = log.resume(&ch, T::NAME).await?;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        wake.borrow_and_update();
        let owed = target.needs_snapshot();
        let snapshot = cursor.is_none() || owed;
        let since = (!snapshot).then(|| cursor.unwrap_or(0));
        let Read {
            latest,
            next,
            items,
        } = log.read(&ch, since, max_batch * 4).await?;
        stats.update(&ch, T::NAME, |s| s.latest_cursor = latest);
        if items.is_empty() {
            if cursor != Some(next) {
                log.delivered(&ch, T::NAME, next).await?;
                cursor = Some(next);
            }
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = wake.changed() => {}
            }
            continue;
        }
        let mut result = Ok(());
        for chunk in items.chunks(max_batch) {
            let wait = bucket.take(Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            result = target.deliver(&channel, chunk).await;
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => {
                log.delivered(&ch, T::NAME, next).await?;
                cursor = Some(next);
                backoff.reset();
                if snapshot {
                    target.snapshot_done();
                }
                let now = now_ms();
                let oldest = items.iter().map(|i| i.updated_at_ms).min().unwrap_or(now);
                stats.update(&ch, T::NAME, |s| {
                    s.delivered_cursor = next;
                    s.last_success_ms = Some(now);
                    s.consecutive_failures = 0;
                    s.delivered_total += items.len() as u64;
                    if !snapshot {
                        s.lag_ms = now - oldest;
                    }
                });
            }
            Err(failure) => {
                tracing::warn!(channel = %ch, target = T::NAME, detail = %failure.detail, "push failed");
                log.record_error(&ch, T::NAME, &failure.detail).await?;
                let delay = backoff
                    .next_delay()
                    .max(failure.retry_after.unwrap_or_default());
                stats.update(&ch, T::NAME, |s| {
                    s.last_error = Some(failure.detail);
                    s.consecutive_failures = backoff.failures();
                    s.failures_total += 1;
                });
                tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
