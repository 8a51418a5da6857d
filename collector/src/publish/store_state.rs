//! Per-channel state kept in the channel store beside its change log: the mode set through
//! the API (so a rollback switch survives restarts) and the quantity each remote system was
//! last seen or set to hold (Shopify's compare-and-set needs it).

use super::ChannelMode;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// The mode set through the API, if any, with who set it and why.
#[derive(Debug, Clone, Serialize)]
pub struct ModeState {
    pub mode: ChannelMode,
    pub set_by: String,
    pub reason: Option<String>,
    pub set_at_ms: i64,
}

fn mode_name(mode: ChannelMode) -> &'static str {
    match mode {
        ChannelMode::Live => "live",
        ChannelMode::Frozen => "frozen",
        ChannelMode::Zero => "zero",
    }
}

/// The persisted mode of `channel`.
pub fn mode(conn: &Connection, channel: &str) -> rusqlite::Result<Option<ModeState>> {
    conn.query_row(
        "SELECT mode, set_by, reason, set_at_ms FROM channel_state WHERE channel = ?1",
        [channel],
        |r| {
            let mode = match r.get::<_, String>(0)?.as_str() {
                "frozen" => ChannelMode::Frozen,
                "zero" => ChannelMode::Zero,
                _ => ChannelMode::Live,
            };
            Ok(ModeState {
                mode,
                set_by: r.get(1)?,
                reason: r.get(2)?,
                set_at_ms: r.get(3)?,
            })
        },
    )
    .optional()
}

/// Persists the mode of `channel`.
pub fn set_mode(conn: &Connection, channel: &str, state: &ModeState) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO channel_state (channel, mode, set_by, reason, set_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (channel) DO UPDATE SET mode = excluded.mode, set_by = excluded.set_by,
            reason = excluded.reason, set_at_ms = excluded.set_at_ms",
        params![channel, mode_name(state.mode), state.set_by, state.reason, state.set_at_ms],
    )?;
    Ok(())
}

/// The quantity a remote system was last seen or set to hold for `sku`.
pub fn remote_quantity(
    conn: &Connection,
    channel: &str,
    target: &str,
    sku: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT quantity FROM channel_remote WHERE channel = ?1 AND target = ?2 AND sku = ?3",
        [channel, target, sku],
        |r| r.get(0),
    )
    .optional()
}

/// Remembers the quantity a remote system holds for `sku`.
pub fn set_remote_quantity(
    conn: &Connection,
    channel: &str,
    target: &str,
    sku: &str,
    quantity: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO channel_remote (channel, target, sku, quantity) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (channel, target, sku) DO UPDATE SET quantity = excluded.quantity",
        params![channel, target, sku, quantity],
    )?;
    Ok(())
}
