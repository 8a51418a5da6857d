//! Channel publishing on PostgreSQL: exactly one worker at a time (the holder of the
//! publisher lease, `lease`) reads the outbox the ingest transactions write, recomputes the
//! channels' numbers for the SKUs it names (`pass`) and delivers them through the same push
//! targets as the SQLite collector (MQTT, webhook, Shopify), from the change log in
//! PostgreSQL (`log`).
//!
//! Invariant: no two workers publish at once, and no channel sees a SKU's value go back.
//! The holder renews every `lease / 3` and stops every publishing task (aborting them, which
//! drops their queued messages) once two thirds of the lease have passed since its last
//! renewal began, a third of a lease before another worker may take over; the passes are
//! fenced by the lease row in the database besides; and a new holder's targets start from a
//! snapshot of the current values (`log`). Coalescing follows the SQLite publisher: the first
//! change after a quiet spell is published at once (within one outbox poll), and while
//! changes keep arriving, passes are at least `coalesce_ms` apart.

pub mod follow;
pub mod lease;
pub mod log;
pub mod mode;
mod pass;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::CollectorConfig;
use crate::publish::ChannelMode;
use stocksync_common::config::BrokerConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Pool;
use crate::publish::stats::Stats;
use crate::publish::store::{now_ms, ModeState};
use crate::publish::{target, Channel, PublishError};
use lease::PublisherLease;
use log::{Fence, PgLog};
use pass::Passed;

/// How often the holder looks for outbox rows while idle.
const POLL: Duration = Duration::from_millis(5);

/// The channels of a worker, in the SQLite collector's shapes.
pub struct PgChannels {
    pub channels: BTreeMap<String, Arc<Channel>>,
    pub stats: Arc<Stats>,
    /// The channel tables, for the API's reads.
    pub log: PgLog,
    /// Each channel's mode as configured, stamped with this worker's start (`mode`).
    configured: BTreeMap<String, ModeState>,
}

impl PgChannels {
    /// Resolves `[[channels.channel]]` against the catalog.
    pub fn resolve(config: &CollectorConfig, pool: Pool) -> Result<PgChannels, PublishError> {
        let mut channels = BTreeMap::new();
        for c in &config.channels.channel {
            let channel = Arc::new(Channel::new(c, config)?);
            if channels.insert(c.name.clone(), channel).is_some() {
                return Err(PublishError::Config {
                    channel: c.name.clone(),
                    detail: "configured twice".into(),
                });
            }
        }
        let configured = channels
            .iter()
            .map(|(name, c)| (name.clone(), c.mode()))
            .collect();
        Ok(PgChannels {
            channels,
            stats: Arc::new(Stats::default()),
            log: PgLog { pool, fence: None },
            configured,
        })
    }

    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Result<&Arc<Channel>, PublishError> {
        self.channels
            .get(name)
            .ok_or_else(|| PublishError::UnknownChannel(name.into()))
    }

    /// The mode in force for `channel`, as the publisher applies it (`mode::effective`).
    pub async fn mode_of(&self, channel: &Channel) -> Result<ModeState, PublishError> {
        let saved = mode::saved(&*self.log.pool.get().await?).await?;
        Ok(mode::effective(
            &self.configured[&channel.name],
            saved.modes.get(&channel.name),
        ))
    }

    /// Switches `name` to `mode` for every worker; the publisher applies it from its next
    /// pass. Returns the mode now in force.
    pub async fn set_mode(
        &self,
        name: &str,
        mode: ChannelMode,
        set_by: String,
        reason: Option<String>,
    ) -> Result<ModeState, PublishError> {
        let channel = self.channel(name)?.clone();
        let state = ModeState {
            mode,
            set_by,
            reason,
            set_at_ms: now_ms(),
        };
        mode::set(&self.log.pool, name, &state).await?;
        self.mode_of(&channel).await
    }
}

/// What the publisher task needs.
pub struct Publisher {
    pub pool: Pool,
    pub lease: PublisherLease,
    pub channels: Arc<PgChannels>,
    pub broker: BrokerConfig,
    /// The shortest `coalesce_ms` of the channels (passes serve every channel at once).
    pub coalesce: Duration,
}

/// This worker's time as the holder.
struct Holding {
    generation: i64,
    fence: Fence,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Holding {
    /// Tells every publishing task to stop, gives them a moment, then aborts the rest.
    async fn stop(self, grace: Duration) {
        self.fence.extend(Instant::now().into_std());
        let _ = self.stop.send(true);
        let deadline = Instant::now() + grace;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    fn any_ended(&self) -> bool {
        self.tasks.iter().any(|t| t.is_finished())
    }
}

/// Takes the lease when it is free and publishes while holding it, until `shutdown`.
pub async fn run(p: Publisher, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let lease = p.lease.lease();
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: Option<Holding> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = every.tick() => {}
        }
        held = round(&p, held).await;
    }
    if let Some(h) = held {
        let generation = h.generation;
        h.stop(lease / 6).await;
        if let Err(e) = p.lease.release(generation).await {
            tracing::warn!(error = %e, "publisher lease not released; it expires on its own");
        }
    }
    Ok(())
}

/// What a lease call answered, or that it took too long.
enum Took {
    Taken(Option<i64>),
    Renewed(bool),
    TimedOut,
}

/// A lease call that hangs counts as failed once a third of the lease has passed, so the
/// fence is checked in time.
async fn bounded(
    lease: Duration,
    call: impl std::future::Future<Output = Result<Took, tokio_postgres::Error>>,
) -> Result<Took, tokio_postgres::Error> {
    tokio::time::timeout(lease / 3, call)
        .await
        .unwrap_or(Ok(Took::TimedOut))
}

/// One lease round: take, or renew (and stop publishing once the lease may be lost).
async fn round(p: &Publisher, held: Option<Holding>) -> Option<Holding> {
    let lease = p.lease.lease();
    let started = Instant::now();
    let me = p.lease.worker_id();
    let Some(h) = held else {
        return match bounded(lease, async { p.lease.take().await.map(Took::Taken) }).await {
            Ok(Took::Taken(Some(generation))) => {
                tracing::info!(worker = %me, generation, "publisher lease taken");
                Some(start(p, generation, started + lease * 2 / 3))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "publisher lease round failed");
                None
            }
        };
    };
    let renew = async { p.lease.renew(h.generation).await.map(Took::Renewed) };
    let renewed = match bounded(lease, renew).await {
        Ok(Took::Renewed(true)) if !h.any_ended() => {
            h.fence.extend((started + lease * 2 / 3).into_std());
            return Some(h);
        }
        Ok(Took::Renewed(true)) => "a publishing task ended",
        Ok(Took::Renewed(false)) => "publisher lease lost",
        Ok(_) | Err(_) if h.fence.holds() => {
            tracing::warn!("publisher lease renewal failed or timed out; still within the lease");
            return Some(h);
        }
        Ok(_) | Err(_) => "publisher lease not renewed within two thirds of the lease",
    };
    tracing::warn!(worker = %me, generation = h.generation, "{renewed}; publishing stopped");
    let generation = h.generation;
    h.stop(lease / 6).await;
    let release = async { p.lease.release(generation).await.map(|()| Took::TimedOut) };
    if let Err(e) = bounded(lease, release).await {
        tracing::warn!(error = %e, "publisher lease not released; it expires on its own");
    }
    None
}

/// Starts the passes and every channel's push targets for generation `generation`.
fn start(p: &Publisher, generation: i64, until: Instant) -> Holding {
    let fence = Fence::until(until.into_std());
    let (stop, stop_rx) = watch::channel(false);
    let log = PgLog {
        pool: p.pool.clone(),
        fence: Some(fence.clone()),
    };
    let channels: Vec<Arc<Channel>> = p.channels.channels.values().cloned().collect();
    let mut tasks = Vec::new();
    for channel in &channels {
        match target::spawn_push(channel, &log, &p.channels.stats, &p.broker, &stop_rx) {
            Ok(t) => tasks.extend(t),
            Err(e) => {
                tracing::error!(channel = %channel.name, error = %e, "channel targets not started")
            }
        }
    }
    let configured = channels
        .iter()
        .map(|c| p.channels.configured[&c.name].clone())
        .collect();
    tasks.push(tokio::spawn(passes(Passes {
        configured,
        pool: p.pool.clone(),
        worker_id: p.lease.worker_id().to_string(),
        generation,
        channels,
        coalesce: p.coalesce,
        idle_limit: p.lease.lease() / 2,
        shutdown: stop_rx,
    })));
    Holding {
        generation,
        fence,
        stop,
        tasks,
    }
}

struct Passes {
    pool: Pool,
    worker_id: String,
    generation: i64,
    channels: Vec<Arc<Channel>>,
    /// Each channel's configured mode (`mode::effective`), in the order of `channels`.
    configured: Vec<ModeState>,
    coalesce: Duration,
    /// How long the server waits for this client inside a pass before ending it.
    idle_limit: Duration,
    shutdown: watch::Receiver<bool>,
}

/// Passes until shutdown or the lease is lost: a full one first, then one per outbox
/// change, folded under load (see the module docs).
async fn passes(mut t: Passes) -> anyhow::Result<()> {
    let mut full = true;
    // The mode version the passes follow (`mode`); `None` until the first full pass.
    let mut modes: Option<i64> = None;
    // Start of the previous pass, if it found rows and saw more waiting as it committed.
    let mut loaded: Option<Instant> = None;
    loop {
        // Under load: fold more until `coalesce` after the previous pass began. Otherwise
        // (quiet, or after an empty pass) the next change is passed on at once, whatever
        // the window.
        if let (false, Some(began)) = (full, loaded) {
            tokio::select! {
                _ = t.shutdown.changed() => return Ok(()),
                _ = tokio::time::sleep_until(began + t.coalesce) => {}
            }
        }
        if *t.shutdown.borrow() {
            return Ok(());
        }
        let began = Instant::now();
        // A full pass (the first, after a failure or after a mode moved) applies the saved
        // modes first. Every other pass checks, with its outbox read, that they did not
        // move, so a mode is in force from the first pass that starts after it was set.
        let passed = match full {
            true => match load_modes(&t).await {
                Ok(version) => {
                    modes = Some(version);
                    pass_once(&t, true, None).await
                }
                Err(e) => Err(e),
            },
            false => pass_once(&t, false, modes).await,
        };
        let pause = match passed {
            Ok(Passed::LeaseLost) => {
                tracing::warn!(worker = %t.worker_id, "publisher lease lost during a pass; nothing written");
                return Ok(());
            }
            Ok(Passed::ModesMoved) => {
                full = true;
                loaded = None;
                None
            }
            Ok(Passed::Done {
                consumed,
                cursors,
                more,
            }) => {
                full = false;
                for (i, cursor) in cursors {
                    t.channels[i].cursor.send_replace(cursor);
                }
                loaded = (consumed > 0 && more).then_some(began);
                (consumed == 0).then_some(POLL)
            }
            Err(e) => {
                tracing::error!(error = %e, "channel pass failed; a full pass in 1 s");
                full = true;
                loaded = None;
                Some(Duration::from_secs(1))
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = t.shutdown.changed() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Reads the saved modes and puts the ones in force on the channels; returns their version.
async fn load_modes(t: &Passes) -> Result<i64, tokio_postgres::Error> {
    let saved = mode::saved(&*t.pool.get().await?).await?;
    mode::apply(&t.channels, &t.configured, &saved);
    Ok(saved.version)
}

async fn pass_once(
    t: &Passes,
    full: bool,
    modes: Option<i64>,
) -> Result<Passed, tokio_postgres::Error> {
    let mut conn = t.pool.get().await?;
    let prepared = conn.prepared();
    pass::run(&mut conn, &prepared, t, full, modes).await
}
