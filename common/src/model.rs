//! The domain model: a stock movement as it is journaled at an agent and applied at the
//! collector.
//!
//! A movement is a fact ("12 eaches of SKU X were received at AMS/A-01 at 10:02+01:00"),
//! never a stock level. Levels are derived by the collector from the set of facts, which is
//! what makes duplicates, replays and late arrivals harmless. Quantities here are always in
//! the SKU's base unit; the unit and amount as received are kept beside them for audit.
//!
//! Every type here is part of wire format v1 (see `wire`): fields may not be added, removed
//! or reordered without a new wire version. New `MovementKind` variants may only be
//! appended at the end. `Movement::origin` is not part of v1 (serde skips it); wire v2
//! appends it after the v1 fields.

use serde::{Deserialize, Serialize};

/// Name of the base unit every SKU is counted in unless the catalog says otherwise.
pub const BASE_UNIT: &str = "each";

/// A canonical stock keeping unit id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sku(pub String);

impl Sku {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where stock sits: a warehouse, optionally narrowed to a bin or zone inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    pub warehouse: String,
    pub bin: Option<String>,
}

impl Location {
    /// The bin, or the empty string for "the warehouse as a whole" (how it is keyed in SQLite).
    pub fn bin_key(&self) -> &str {
        self.bin.as_deref().unwrap_or("")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.bin {
            Some(bin) => write!(f, "{}/{}", self.warehouse, bin),
            None => f.write_str(&self.warehouse),
        }
    }
}

/// When a movement happened in the warehouse, with the UTC offset the source reported it in.
///
/// The instant orders movements; the offset is kept so that audits show local warehouse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OccurredAt {
    /// Milliseconds since the Unix epoch (UTC).
    pub unix_ms: i64,
    /// The reporter's offset from UTC in seconds.
    pub offset_seconds: i32,
}

impl OccurredAt {
    /// The current time in UTC.
    pub fn now() -> OccurredAt {
        OccurredAt {
            unix_ms: jiff::Timestamp::now().as_millisecond(),
            offset_seconds: 0,
        }
    }

    /// RFC 3339 rendering in the reporter's own offset.
    pub fn to_rfc3339(&self) -> String {
        let ts =
            jiff::Timestamp::from_millisecond(self.unix_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let offset =
            jiff::tz::Offset::from_seconds(self.offset_seconds).unwrap_or(jiff::tz::Offset::UTC);
        let dt = offset.to_datetime(ts);
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        let abs = self.offset_seconds.unsigned_abs();
        format!(
            "{}{}{:02}:{:02}",
            dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"),
            sign,
            abs / 3600,
            (abs % 3600) / 60
        )
    }
}

/// Sign of a manual adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Increase,
    Decrease,
}

/// Where an inspected return goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InspectionOutcome {
    Available,
    Damaged,
}

/// What happened to the stock. Effects on each stock state are in `docs/MOVEMENTS.md`.
///
/// Wire rule: append new variants at the end only; postcard encodes the variant index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Goods put away from a supplier.
    Receipt,
    /// Goods picked and shipped to a customer.
    Shipment,
    /// A manual correction with its reason.
    Adjustment {
        direction: Direction,
        reason: String,
    },
    /// An absolute count: "there are N here", not a delta.
    Count,
    /// Goods leaving for another warehouse (in transit until received there).
    TransferOut,
    /// Goods arriving from another warehouse.
    TransferIn,
    /// A customer return (held for inspection where the location says so).
    Return,
    /// Available stock found damaged.
    Damage,
    /// A held return inspected and released.
    Inspection { outcome: InspectionOutcome },
    /// Damaged stock written off and removed.
    WriteOff,
    /// A shipment cancelled before it left: the goods go back to available.
    Cancellation,
    /// A receipt announced by a supplier (advance ship notice), not yet physical.
    Expected,
}

impl MovementKind {
    /// The stable snake_case name used in JSON, SQL and docs.
    pub fn name(&self) -> &'static str {
        match self {
            MovementKind::Receipt => "receipt",
            MovementKind::Shipment => "shipment",
            MovementKind::Adjustment { .. } => "adjustment",
            MovementKind::Count => "count",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::Return => "return",
            MovementKind::Damage => "damage",
            MovementKind::Inspection { .. } => "inspection",
            MovementKind::WriteOff => "write_off",
            MovementKind::Cancellation => "cancellation",
            MovementKind::Expected => "expected",
        }
    }
}

/// Business references that tie a movement to the transaction it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct References {
    pub order: Option<String>,
    pub transfer: Option<String>,
    pub return_id: Option<String>,
    /// For transfers: the other warehouse (destination of a transfer-out, origin of a transfer-in).
    pub peer_warehouse: Option<String>,
}

/// One journaled stock movement. `(agent_id, seq)` is its identity end to end; the agent id
/// travels once per batch, not per movement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Movement {
    /// Position in the journaling agent's journal; dense and increasing per agent.
    pub seq: u64,
    pub sku: Sku,
    pub location: Location,
    /// The system that reported it (`wms`, `erp`, `scanner`, ...): the key for source-of-truth rules.
    pub source: String,
    pub kind: MovementKind,
    /// Quantity in the SKU's base unit. Positive, except a count, which may be zero.
    pub quantity: u64,
    /// The unit the movement was reported in.
    pub unit: String,
    /// The quantity as reported, in `unit`.
    pub unit_quantity: u64,
    pub occurred_at: OccurredAt,
    pub references: References,
    /// The reporter's own id for this movement, if it gave one (deduplicated at the agent).
    pub external_id: Option<String>,
    pub note: Option<String>,
    /// How the movement reached its agent (wire v2; a v1 movement decodes with
    /// [`Origin::default`]). Skipped by serde so that the v1 encoding stays byte-identical.
    #[serde(skip)]
    pub origin: Origin,
}

/// How a movement reached its agent: facts the agent knows from the path it took, never
/// from what the payload claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The input path it arrived on, e.g. `http` or `scanner:scanners/ams/gun-7/movements`;
    /// empty for a movement that came over wire v1 (the path was not recorded then).
    pub input: String,
    /// False when the agent had no catalog to check the SKU and unit against.
    pub validated: bool,
}

impl Default for Origin {
    /// What a wire v1 movement is taken to be: input unknown, validated as v1 agents did.
    fn default() -> Self {
        Origin {
            input: String::new(),
            validated: true,
        }
    }
}
