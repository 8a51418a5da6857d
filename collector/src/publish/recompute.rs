//! One recompute task per channel: from the ledger's change notices to stored values.
//!
//! Coalescing costs nothing when idle: the first change after a quiet spell is recomputed
//! at once. Changes that arrive while a pass runs are folded into the next pass, and only
//! then (under load) does the channel wait, until `coalesce_ms` after the previous pass
//! started, gathering more; so a change waits at most one pass plus `coalesce_ms`, and a
//! hot SKU produces at most one stored change per window. Each channel has its own task, so
//! a slow or frozen channel never delays another.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::compute::{self, Dirty};
use super::{store, Channel, PublishError, Publisher};
use crate::ledger::{Changes, Ledger, StockKey};

/// Changes not yet recomputed.
#[derive(Default)]
struct Pending {
    keys: BTreeSet<StockKey>,
    all: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.all && self.keys.is_empty()
    }

    /// Adds one notice; false once the ledger is gone.
    fn take(&mut self, channel: &Channel, notice: Result<Changes, RecvError>) -> bool {
        match notice {
            // Only keys this channel can sell from are kept: the set stays as small as the
            // channel's share of the traffic.
            Ok(keys) => self.keys.extend(
                keys.iter()
                    .filter(|k| channel.eligible.touches(&k.warehouse))
                    .cloned(),
            ),
            Err(RecvError::Lagged(_)) => self.all = true,
            Err(RecvError::Closed) => return false,
        }
        true
    }

    /// Takes every notice already waiting; false once the ledger is gone.
    fn drain(&mut self, channel: &Channel, changes: &mut broadcast::Receiver<Changes>) -> bool {
        loop {
            let notice = match changes.try_recv() {
                Ok(keys) => Ok(keys),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if !self.take(channel, notice) {
                return false;
            }
        }
    }

    fn dirty(self) -> Dirty {
        if self.all {
            Dirty::All
        } else {
            Dirty::Keys(self.keys)
        }
    }
}

/// What one channel's task is given.
pub(super) struct Task {
    pub publisher: Arc<Publisher>,
    pub channel: Arc<Channel>,
    pub ledger: Ledger,
    pub coalesce: Duration,
    /// A full recompute was asked for (a mode switch).
    pub full: mpsc::Receiver<()>,
    pub shutdown: watch::Receiver<bool>,
}

/// Recomputes and stores what the channel should show, for every commit, until shutdown.
pub(super) async fn run(mut t: Task) -> anyhow::Result<()> {
    let mut changes = t.ledger.subscribe_changes();
    load_mode(&t.publisher, &t.channel).await?;
    let mut started = Instant::now();
    pass(&t, Dirty::All).await;
    let mut pending = Pending::default();
    loop {
        // Under load when changes this channel sells arrived while the last pass ran: fold
        // more until `coalesce` after that pass started. Else pass at the first change.
        if !pending.drain(&t.channel, &mut changes) {
            return Ok(());
        }
        let wait = if pending.is_empty() {
            Wait::FirstChange
        } else {
            Wait::Until(started + t.coalesce)
        };
        if let Gathered::Stop = gather(&mut t, &mut changes, &mut pending, wait).await {
            return Ok(());
        }
        started = Instant::now();
        pass(&t, std::mem::take(&mut pending).dirty()).await;
    }
}

enum Wait {
    /// Nothing pending: wait for the first change, then pass at once.
    FirstChange,
    /// Under load: fold changes in until then (at once if that is past).
    Until(Instant),
}

enum Gathered {
    Pass,
    Stop,
}

async fn gather(
    t: &mut Task,
    changes: &mut broadcast::Receiver<Changes>,
    pending: &mut Pending,
    wait: Wait,
) -> Gathered {
    let until = match wait {
        Wait::Until(until) if until <= Instant::now() => return Gathered::Pass,
        Wait::Until(until) => Some(until),
        Wait::FirstChange => None,
    };
    loop {
        let sleep = tokio::time::sleep_until(until.unwrap_or_else(Instant::now));
        tokio::select! {
            _ = t.shutdown.changed() => return Gathered::Stop,
            Some(()) = t.full.recv() => {
                pending.all = true;
                return Gathered::Pass;
            }
            _ = sleep, if until.is_some() => return Gathered::Pass,
            notice = changes.recv() => {
                if !pending.take(&t.channel, notice) {
                    return Gathered::Stop;
                }
                if until.is_none() {
                    // The first change after a quiet spell goes out at once, with whatever
                    // else is already waiting; a notice of nothing this channel sells
                    // (other warehouses, no stock keys) is no change.
                    if !pending.drain(&t.channel, changes) {
                        return Gathered::Stop;
                    }
                    if !pending.is_empty() {
                        return Gathered::Pass;
                    }
                }
            }
        }
    }
}

/// Applies the persisted mode: a non-live mode in the config wins (the operator rolled back
/// by editing it); otherwise a mode set through the API stays in force across restarts.
async fn load_mode(publisher: &Publisher, channel: &Channel) -> Result<(), PublishError> {
    let name = channel.name.clone();
    let saved = publisher.store.run(move |c| store::mode(c, &name)).await?;
    if let Some(saved) = saved {
        if channel.config.mode == super::ChannelMode::Live {
            channel.set_mode_state(saved);
        }
    }
    Ok(())
}

/// Runs a pass; after a failure (e.g. storage busy past its timeout) logs it and retries a
/// full pass every second until one succeeds or shutdown, so no change is ever left behind.
async fn pass(t: &Task, dirty: Dirty) {
    let mut dirty = dirty;
    let mut shutdown = t.shutdown.clone();
    while let Err(e) = run_pass(t, dirty).await {
        tracing::error!(channel = %t.channel.name, error = %e, "channel recompute failed; retrying in 1 s");
        dirty = Dirty::All;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One recompute of the channel for `dirty`; stores changed values and wakes the targets.
async fn run_pass(t: &Task, dirty: Dirty) -> Result<(), PublishError> {
    let channel = t.channel.clone();
    let mode = channel.mode().mode;
    let (ledger, ch) = (t.ledger.clone(), channel.clone());
    let values = tokio::task::spawn_blocking(move || {
        ledger.read(|conn| compute::values(conn, &ch, mode, &dirty))
    })
    .await
    .map_err(|_| PublishError::Closed)??;
    if values.is_empty() {
        return Ok(());
    }
    let name = channel.name.clone();
    let last = t
        .publisher
        .store
        .run(move |c| store::publish(c, &name, &values))
        .await?;
    if let Some(cursor) = last {
        channel.cursor.send_replace(cursor);
    }
    Ok(())
}
