//! The rollback switch of a channel on PostgreSQL: the mode set through the API is one row
//! per channel in `channel_state`, shared by every worker, so the worker that answers the
//! `PUT` need not be the one that publishes. Each change is also appended to
//! `channel_mode_changes` (who, why, when): an override is never lost by the next one.
//!
//! Every change takes a new `version` from a sequence; before each pass the publisher
//! compares the highest version with the one its last full pass read, and makes the pass a
//! full one with the new modes when it moved. A new holder of the publisher lease reads the modes before its first (full) pass,
//! so a mode survives a take-over as it survives a restart.
//!
//! Precedence follows the SQLite collector: a non-live `mode` in the config wins over a
//! mode set through the API before this worker started (the operator rolled back by
//! editing the config); a mode set after it started wins over the config.

use std::collections::BTreeMap;

use crate::publish::ChannelMode;
use tokio_postgres::GenericClient;

use super::super::Pool;
use crate::publish::store::ModeState;
use crate::publish::{Channel, PublishError};

fn name(mode: ChannelMode) -> &'static str {
    match mode {
        ChannelMode::Live => "live",
        ChannelMode::Frozen => "frozen",
        ChannelMode::Zero => "zero",
    }
}

fn parse(text: &str) -> ChannelMode {
    match text {
        "frozen" => ChannelMode::Frozen,
        "zero" => ChannelMode::Zero,
        _ => ChannelMode::Live,
    }
}

/// The modes set through the API, and the highest version among them (0 for none).
pub struct Saved {
    pub version: i64,
    pub modes: BTreeMap<String, ModeState>,
}

/// Reads every saved mode with the version they are current at.
pub async fn saved(c: &impl GenericClient) -> Result<Saved, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT channel, mode, set_by, reason, set_at_ms, version FROM channel_state",
            &[],
        )
        .await?;
    let mut out = Saved {
        version: 0,
        modes: BTreeMap::new(),
    };
    for r in &rows {
        out.version = out.version.max(r.get(5));
        let state = ModeState {
            mode: parse(r.get(1)),
            set_by: r.get(2),
            reason: r.get(3),
            set_at_ms: r.get(4),
        };
        out.modes.insert(r.get(0), state);
    }
    Ok(out)
}

/// The highest version of any saved mode (0 for none).
/// The newest mode version (asked before every publishing pass: prepared there).
pub const VERSION: &str = "SELECT COALESCE(MAX(version), 0)::bigint FROM channel_state";

pub async fn version(c: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    let row = c.query_one(VERSION, &[]).await?;
    Ok(row.get(0))
}

/// The mode in force for `channel`: its configured state (`configured`, stamped with the
/// worker's start) or the saved one, by the precedence in the module docs.
pub fn effective(configured: &ModeState, saved: Option<&ModeState>) -> ModeState {
    match saved {
        Some(s) if configured.mode == ChannelMode::Live || s.set_at_ms > configured.set_at_ms => {
            s.clone()
        }
        _ => configured.clone(),
    }
}

/// Saves `state` as the mode of `channel` and records the change, in one transaction.
pub async fn set(pool: &Pool, channel: &str, state: &ModeState) -> Result<(), PublishError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    let mode = name(state.mode);
    tx.execute(
        "INSERT INTO channel_state (channel, mode, set_by, reason, set_at_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (channel) DO UPDATE SET mode = excluded.mode, set_by = excluded.set_by,
            reason = excluded.reason, set_at_ms = excluded.set_at_ms,
            version = nextval('channel_state_version')",
        &[&channel, &mode, &state.set_by, &state.reason, &state.set_at_ms],
    )
    .await?;
    tx.execute(
        "INSERT INTO channel_mode_changes (channel, mode, set_by, reason, set_at_ms) VALUES ($1, $2, $3, $4, $5)",
        &[&channel, &mode, &state.set_by, &state.reason, &state.set_at_ms],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Puts the modes in force on `channels` (for the pass that follows, and for the API).
pub fn apply(channels: &[std::sync::Arc<Channel>], configured: &[ModeState], saved: &Saved) {
    for (channel, configured) in channels.iter().zip(configured) {
        channel.set_mode_state(effective(configured, saved.modes.get(&channel.name)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(mode: ChannelMode, set_by: &str, at: i64) -> ModeState {
        ModeState {
            mode,
            set_by: set_by.into(),
            reason: None,
            set_at_ms: at,
        }
    }

    #[test]
    fn a_saved_mode_wins_over_live_and_over_a_config_older_than_it() {
        let live = state(ChannelMode::Live, "config", 100);
        let frozen = state(ChannelMode::Frozen, "config", 100);
        let zero_before = state(ChannelMode::Zero, "ops", 50);
        let zero_after = state(ChannelMode::Zero, "ops", 150);
        assert_eq!(effective(&live, None).mode, ChannelMode::Live);
        assert_eq!(effective(&live, Some(&zero_before)).set_by, "ops");
        // The operator rolled back by editing the config: it wins over an older switch...
        assert_eq!(
            effective(&frozen, Some(&zero_before)).mode,
            ChannelMode::Frozen
        );
        // ...and a switch made after the worker started wins over the config.
        assert_eq!(
            effective(&frozen, Some(&zero_after)).mode,
            ChannelMode::Zero
        );
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [ChannelMode::Live, ChannelMode::Frozen, ChannelMode::Zero] {
            assert_eq!(parse(name(m)), m);
        }
    }
}
