//! Turning what a WMS, ERP or scanner sends into journal-ready movements.
//!
//! Validation happens at the edge, before anything is journaled, so that a bad record is
//! refused while its sender is still listening. Every error names the record (its index in
//! the batch), the field (as a JSON path) and what is wrong with it. A batch is all or
//! nothing: one bad record refuses the whole batch, so no partial batch is ever journaled.

use serde::Deserialize;
pub use stocksync_common::catalog::{BaseUnitOnly, UnitResolver};

use stocksync_common::model::{
    Direction, InspectionOutcome, Location, Movement, MovementKind, OccurredAt, Origin, References,
    Sku, BASE_UNIT,
};

/// Longest accepted identifier (SKU, bin, source, references, ids).
pub const MAX_ID_LEN: usize = 64;
/// Longest accepted free text (reason, note).
pub const MAX_TEXT_LEN: usize = 512;
/// Largest accepted quantity in one movement, in the unit as reported.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

/// A movement as a client sends it, in JSON. Flat on purpose: it is what a WMS integrator or
/// a scanner firmware writes by hand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovementInput {
    pub sku: String,
    pub kind: InputKind,
    pub quantity: i64,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub bin: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<String>,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub outcome: Option<InspectionOutcome>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub transfer: Option<String>,
    #[serde(default, rename = "return")]
    pub return_id: Option<String>,
    #[serde(default)]
    pub peer_warehouse: Option<String>,
    /// The sender's own id for this movement; a second movement with the same id from the
    /// same source is a duplicate and is not journaled again.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Movement kinds as spelled in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Receipt,
    Shipment,
    Adjustment,
    Count,
    TransferOut,
    TransferIn,
    Return,
    Damage,
    Inspection,
    WriteOff,
    Cancellation,
    Expected,
}

/// A refused record: which one, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("record {record:?}, field {field}: {detail}")]
pub struct InputError {
    /// Index of the record in the batch; `None` when the body as a whole is bad.
    pub record: Option<usize>,
    /// JSON path of the offending field, e.g. `$[3].quantity`.
    pub field: String,
    pub detail: String,
}

/// What validation needs to know about the place it runs in.
pub struct Context<'a> {
    /// The agent's warehouse; a record naming another warehouse is refused.
    pub warehouse: &'a str,
    /// Source system assumed when a record names none (the ingest path's configured default).
    pub default_source: &'a str,
    /// Time assumed when a record has no `occurred_at`: the moment it was received.
    pub now: OccurredAt,
    /// Most records one request may carry.
    pub max_batch: usize,
    pub units: &'a (dyn UnitResolver + Send + Sync),
    /// The input path the records arrived on (`http`, `scanner:<topic>`, ...), recorded in
    /// each movement's origin.
    pub input: &'a str,
    /// The sources this input may speak for; a record claiming another is refused at
    /// `$.source`. Identity comes from how a record arrived, not from what it says.
    pub sources: &'a [String],
    /// False when no catalog checked SKUs and units: the movements are journaled unvalidated.
    pub validated: bool,
    /// How far ahead of `now` an `occurred_at` may be, and what happens beyond it.
    pub clock: ClockRule,
}

/// What to do with an `occurred_at` ahead of the receiving clock (a sender with a wrong
/// clock would otherwise freeze a bin until that date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRule {
    /// Largest accepted lead of `occurred_at` over the receiving clock, in milliseconds.
    pub max_ahead_ms: i64,
    /// Clamp a time beyond the limit to the receive time (with a note on the movement)
    /// instead of refusing the record.
    pub clamp: bool,
}

impl Default for ClockRule {
    /// Refuse anything more than five minutes ahead.
    fn default() -> Self {
        ClockRule {
            max_ahead_ms: 5 * 60 * 1000,
            clamp: false,
        }
    }
}

/// Parses a JSON body holding one movement or an array of them, and validates every record.
/// Returned movements have `seq = 0`; the journal assigns sequence numbers.
pub fn parse_body(body: &[u8], ctx: &Context<'_>) -> Result<Vec<Movement>, InputError> {
    // Decoded straight from the bytes into typed records (no intermediate JSON tree): this
    // is the agent's hot path. The shape is told by the first byte.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let inputs: Vec<(Option<usize>, MovementInput)> = match first {
        Some(b'[') => {
            let items: Vec<MovementInput> = decode(body, ctx)?;
            if items.is_empty() {
                return Err(body_error("empty batch"));
            }
            if items.len() > ctx.max_batch {
                return Err(body_error(&format!(
                    "batch of {} records exceeds the limit of {}",
                    items.len(),
                    ctx.max_batch
                )));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, m)| (Some(i), m))
                .collect()
        }
        Some(b'{') => vec![(None, decode(body, ctx)?)],
        _ => {
            // Not an object or array: say whether it is JSON at all.
            serde_json::from_slice::<serde_json::Value>(body).map_err(malformed)?;
            return Err(body_error("expected a movement object or an array of them"));
        }
    };
    inputs
        .into_iter()
        .map(|(index, input)| {
            validate(input, ctx).map_err(|(field, detail)| InputError {
                record: index,
                field: match index {
                    Some(i) => format!("$[{i}].{field}"),
                    None => format!("$.{field}"),
                },
                detail,
            })
        })
        .collect()
}

fn malformed(e: serde_json::Error) -> InputError {
    InputError {
        record: None,
        field: "$".into(),
        detail: format!("malformed JSON: {e}"),
    }
}

/// Decodes `body`, naming the record and field of a type error, e.g. `$[3].quantity`.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8], ctx: &Context<'_>) -> Result<T, InputError> {
    // A body that decodes pays nothing for error paths: tracking the path of every element
    // was a fifth of the agent's HTTP work on batches. Only a body that fails is decoded
    // again with the tracking, to name the record and field (same acceptance either way;
    // `from_slice` also refuses anything after the value).
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        ) {
            return malformed(inner);
        }
        let record = path
            .strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
            .and_then(|i| i.parse().ok());
        let mut field = match path.as_str() {
            "" | "." => "$".to_string(),
            p if p.starts_with('[') => format!("${p}"),
            p => format!("$.{p}"),
        };
        let mut detail = inner.to_string();
        // serde reports a missing field at its parent: name the field itself.
        if let Some(name) = detail
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            field = format!("{field}.{name}");
        }
        if field.ends_with(".quantity") && detail.contains("floating point") {
            detail = format!(
                "quantity must be a whole number of {}",
                unit_of_record(body, record, ctx)
            );
        }
        InputError {
            record,
            field,
            detail,
        }
    })?;
    // Anything after the value (a second document, garbage) makes the body malformed.
    de.end().map_err(malformed)?;
    Ok(value)
}

/// The unit a record with a bad quantity is in (its `unit`, else its SKU's base unit). Only
/// on the error path, so the body is read a second time as a JSON tree.
fn unit_of_record(body: &[u8], record: Option<usize>, ctx: &Context<'_>) -> String {
    let Ok(tree) = serde_json::from_slice::<serde_json::Value>(body) else {
        return BASE_UNIT.to_string();
    };
    let value = match record {
        Some(i) => &tree[i],
        None => &tree,
    };
    if let Some(unit) = value["unit"].as_str().filter(|u| !u.is_empty()) {
        return unit.to_string();
    }
    value["sku"]
        .as_str()
        .map_or_else(|| BASE_UNIT.to_string(), |sku| ctx.units.base_unit(sku))
}

fn body_error(detail: &str) -> InputError {
    InputError {
        record: None,
        field: "$".into(),
        detail: detail.into(),
    }
}

type FieldError = (&'static str, String);

/// Semantic checks and normalisation of one decoded record.
pub fn validate(input: MovementInput, ctx: &Context<'_>) -> Result<Movement, FieldError> {
    let kind = kind_of(&input)?;
    let source = optional_id("source", input.source)?.unwrap_or_else(|| ctx.default_source.into());
    if !ctx.sources.contains(&source) {
        return Err((
            "source",
            format!(
                "input `{}` may only report for {}; `{source}` is not one of them",
                ctx.input,
                ctx.sources.join(", ")
            ),
        ));
    }
    let sku = required_id("sku", &input.sku)?;
    let sku = ctx
        .units
        .canonical_sku(&source, &sku)
        .map_err(|e| ("sku", e))?;
    let (warehouse, bin) = resolve_location(&source, input.warehouse, input.bin, ctx);
    if let Some(wh) = &warehouse {
        if wh != ctx.warehouse {
            return Err((
                "warehouse",
                format!("`{wh}` is not this agent's warehouse `{}`", ctx.warehouse),
            ));
        }
    }
    let min = if matches!(kind, MovementKind::Count) {
        0
    } else {
        1
    };
    if input.quantity < min || input.quantity > MAX_QUANTITY {
        return Err((
            "quantity",
            format!(
                "{} is out of range: must be {} ..= {MAX_QUANTITY}",
                input.quantity,
                if min == 0 {
                    ">= 0 for a count, so 0"
                } else {
                    "> 0, so 1"
                }
            ),
        ));
    }
    let unit = optional_id("unit", input.unit)?.unwrap_or_else(|| ctx.units.base_unit(&sku));
    let per = ctx
        .units
        .base_units_per(&sku, &unit)
        .map_err(|e| ("unit", e))?;
    let unit_quantity = input.quantity as u64;
    let quantity = unit_quantity.checked_mul(per).ok_or((
        "quantity",
        "overflows when converted to base units".to_string(),
    ))?;
    let occurred_at = match input.occurred_at {
        Some(text) => parse_time(&text).map_err(|e| ("occurred_at", e))?,
        None => ctx.now,
    };
    let mut note = optional_text("note", input.note)?;
    let occurred_at = check_clock(occurred_at, ctx, &mut note)?;
    Ok(Movement {
        seq: 0,
        sku: Sku(sku),
        location: Location {
            warehouse: ctx.warehouse.to_string(),
            bin: optional_id("bin", bin)?,
        },
        source,
        kind,
        quantity,
        unit,
        unit_quantity,
        occurred_at,
        references: References {
            order: optional_id("order", input.order)?,
            transfer: optional_id("transfer", input.transfer)?,
            return_id: optional_id("return", input.return_id)?,
            peer_warehouse: optional_id("peer_warehouse", input.peer_warehouse)?,
        },
        external_id: optional_id("id", input.id)?,
        note,
        origin: Origin {
            input: ctx.input.to_string(),
            validated: ctx.validated,
        },
    })
}

/// Applies the clock rule: an `occurred_at` too far ahead of the receiving clock is refused,
/// or clamped to the receive time with a note saying what was claimed.
fn check_clock(
    at: OccurredAt,
    ctx: &Context<'_>,
    note: &mut Option<String>,
) -> Result<OccurredAt, FieldError> {
    let ahead = at.unix_ms.saturating_sub(ctx.now.unix_ms);
    if ahead <= ctx.clock.max_ahead_ms {
        return Ok(at);
    }
    let what = format!(
        "{} is {} s ahead of the receiving clock (limit {} s)",
        at.to_rfc3339(),
        ahead / 1000,
        ctx.clock.max_ahead_ms / 1000
    );
    if !ctx.clock.clamp {
        return Err((
            "occurred_at",
            format!("{what}; fix the sender's clock or leave occurred_at out"),
        ));
    }
    let clamped = format!("occurred_at clamped: {what}");
    *note = Some(match note.take() {
        Some(n) => format!("{clamped}; {n}"),
        None => clamped,
    });
    Ok(OccurredAt {
        unix_ms: ctx.now.unix_ms,
        offset_seconds: at.offset_seconds,
    })
}

/// Applies location aliases: a `bin` alias names warehouse and bin, a `warehouse` alias
/// names the warehouse (and the bin, when the record gives none).
fn resolve_location(
    source: &str,
    warehouse: Option<String>,
    bin: Option<String>,
    ctx: &Context<'_>,
) -> (Option<String>, Option<String>) {
    if let Some(alias) = bin
        .as_deref()
        .and_then(|b| ctx.units.canonical_location(source, b))
    {
        return (Some(alias.warehouse), alias.bin);
    }
    match warehouse
        .as_deref()
        .and_then(|w| ctx.units.canonical_location(source, w))
    {
        Some(alias) => (Some(alias.warehouse), bin.or(alias.bin)),
        None => (warehouse, bin),
    }
}

fn kind_of(input: &MovementInput) -> Result<MovementKind, FieldError> {
    Ok(match input.kind {
        InputKind::Receipt => MovementKind::Receipt,
        InputKind::Shipment => MovementKind::Shipment,
        InputKind::Adjustment => MovementKind::Adjustment {
            direction: input.direction.ok_or((
                "direction",
                "an adjustment needs `increase` or `decrease`".to_string(),
            ))?,
            reason: optional_text("reason", input.reason.clone())?
                .ok_or(("reason", "an adjustment needs a reason".to_string()))?,
        },
        InputKind::Count => MovementKind::Count,
        InputKind::TransferOut => MovementKind::TransferOut,
        InputKind::TransferIn => MovementKind::TransferIn,
        InputKind::Return => {
            require_order(
                input,
                "a return goes back through its original order: give `order`",
            )?;
            MovementKind::Return
        }
        InputKind::Damage => MovementKind::Damage,
        InputKind::Inspection => MovementKind::Inspection {
            outcome: input.outcome.ok_or((
                "outcome",
                "an inspection needs `available` or `damaged`".to_string(),
            ))?,
        },
        InputKind::WriteOff => MovementKind::WriteOff,
        InputKind::Cancellation => {
            require_order(
                input,
                "a cancellation reverses a shipment of an order: give `order`",
            )?;
            MovementKind::Cancellation
        }
        InputKind::Expected => MovementKind::Expected,
    })
}

fn require_order(input: &MovementInput, why: &str) -> Result<(), FieldError> {
    match input.order.as_deref() {
        Some(o) if !o.trim().is_empty() => Ok(()),
        _ => Err(("order", why.to_string())),
    }
}

fn required_id(field: &'static str, value: &str) -> Result<String, FieldError> {
    if value.trim().is_empty() {
        return Err((field, "must not be empty".into()));
    }
    check_id(field, value)?;
    Ok(value.to_string())
}

fn optional_id(field: &'static str, value: Option<String>) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            check_id(field, &v)?;
            Ok(Some(v))
        }
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.chars().count() > MAX_ID_LEN {
        return Err((
            field,
            format!(
                "is {} characters long; the limit is {MAX_ID_LEN}",
                value.chars().count()
            ),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '+' || c == '#')
    {
        return Err((
            field,
            "must not contain control characters, `/`, `+` or `#`".into(),
        ));
    }
    Ok(())
}

fn optional_text(field: &'static str, value: Option<String>) -> Result<Option<String>, FieldError> {
    match value {
        Some(v) if v.chars().count() > MAX_TEXT_LEN => Err((
            field,
            format!(
                "is {} characters long; the limit is {MAX_TEXT_LEN}",
                v.chars().count()
            ),
        )),
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Parses an RFC 3339 time that carries its UTC offset (`Z` or `±HH:MM`).
pub fn parse_time(text: &str) -> Result<OccurredAt, String> {
    let ts: jiff::Timestamp = text
        .parse()
        .map_err(|e| format!("`{text}` is not an RFC 3339 time with offset: {e}"))?;
    let offset_seconds = offset_suffix(text)
        .ok_or_else(|| format!("`{text}` has no UTC offset (`Z` or `±HH:MM`)"))?;
    Ok(OccurredAt {
        unix_ms: ts.as_millisecond(),
        offset_seconds,
    })
}

fn offset_suffix(text: &str) -> Option<i32> {
    if text.ends_with('Z') || text.ends_with('z') {
        return Some(0);
    }
    let tail = text.get(text.len().checked_sub(6)?..)?;
    let sign = match tail.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i32 = tail.get(1..3)?.parse().ok()?;
    let minutes: i32 = tail.get(4..6)?.parse().ok()?;
    Some(sign * (hours * 3600 + minutes * 60))
}

/// The current time, as a record's `occurred_at`.
pub fn now() -> OccurredAt {
    OccurredAt::now()
}

#[cfg(test)]
fn test_sources() -> &'static [String] {
    Box::leak(vec!["wms".to_string(), "erp".into()].into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            warehouse: "ams",
            default_source: "wms",
            now: OccurredAt {
                unix_ms: 1_800_000_000_000,
                offset_seconds: 0,
            },
            max_batch: 3,
            units: &BaseUnitOnly,
            input: "http",
            sources: test_sources(),
            validated: true,
            clock: ClockRule::default(),
        }
    }

    fn err(body: &str) -> InputError {
        parse_body(body.as_bytes(), &ctx()).unwrap_err()
    }

    #[test]
    fn accepts_a_receipt_with_offset() {
        let body = r#"{"sku":"A1","kind":"receipt","quantity":3,"occurred_at":"2026-11-25T10:00:00+01:00"}"#;
        let m = &parse_body(body.as_bytes(), &ctx()).unwrap()[0];
        assert_eq!(m.quantity, 3);
        assert_eq!(m.occurred_at.offset_seconds, 3600);
        assert_eq!(m.occurred_at.to_rfc3339(), "2026-11-25T10:00:00.000+01:00");
        assert_eq!(m.source, "wms");
        assert_eq!(m.location.warehouse, "ams");
    }

    #[test]
    fn names_the_field_of_each_error() {
        assert_eq!(err("{not json").field, "$");
        assert_eq!(err(r#"[{"sku":"A","kind":"receipt","quantity":1},{"sku":"A","kind":"teleport","quantity":1}]"#).field, "$[1].kind");
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":0}"#).field,
            "$.quantity"
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":-2}"#).field,
            "$.quantity"
        );
        assert_eq!(err(r#"{"kind":"receipt","quantity":1}"#).field, "$.sku");
        assert_eq!(
            err(r#"[{"sku":"A","kind":"receipt","quantity":1},{"sku":"A","quantity":1}]"#).field,
            "$[1].kind"
        );
        let e = err(r#"{"sku":"A","kind":"receipt","quantity":1.5}"#);
        assert_eq!(
            (e.field.as_str(), e.detail.as_str()),
            ("$.quantity", "quantity must be a whole number of each")
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":1,"source":"scanner"}"#).field,
            "$.source"
        );
        assert!(err(r#"{"kind":"receipt","quantity":1}"#)
            .detail
            .contains("sku"));
        assert_eq!(
            err(r#"{"sku":"","kind":"receipt","quantity":1}"#).field,
            "$.sku"
        );
        let long = "x".repeat(65);
        assert_eq!(
            err(&format!(
                r#"{{"sku":"{long}","kind":"receipt","quantity":1}}"#
            ))
            .field,
            "$.sku"
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":1,"unit":"case"}"#).field,
            "$.unit"
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":1,"warehouse":"ber"}"#).field,
            "$.warehouse"
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"adjustment","quantity":1}"#).field,
            "$.direction"
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":1,"occurred_at":"2026-11-25T10:00:00"}"#)
                .field,
            "$.occurred_at"
        );
        assert_eq!(
            err(r#"{"sku":"A","kind":"receipt","quantity":1,"colour":"red"}"#).field,
            "$.colour"
        );
        let over = r#"{"sku":"A","kind":"receipt","quantity":1}"#;
        assert!(err(&format!("[{over},{over},{over},{over}]"))
            .detail
            .contains("limit"));
    }

    #[test]
    fn a_time_ahead_of_the_clock_is_refused_or_clamped() {
        let body =
            r#"{"sku":"A","kind":"count","quantity":1,"occurred_at":"2030-01-01T00:00:00Z"}"#;
        let e = parse_body(body.as_bytes(), &ctx()).unwrap_err();
        assert_eq!(e.field, "$.occurred_at");
        let mut clamping = ctx();
        clamping.clock.clamp = true;
        let m = &parse_body(body.as_bytes(), &clamping).unwrap()[0];
        assert_eq!(m.occurred_at.unix_ms, 1_800_000_000_000);
        assert!(m
            .note
            .as_deref()
            .unwrap()
            .starts_with("occurred_at clamped: 2030-01-01"));
        let near =
            r#"{"sku":"A","kind":"count","quantity":1,"occurred_at":"2027-01-15T08:04:00Z"}"#;
        assert!(parse_body(near.as_bytes(), &ctx()).is_ok());
    }

    #[test]
    fn a_count_may_be_zero() {
        let body = r#"{"sku":"A1","kind":"count","quantity":0}"#;
        assert_eq!(parse_body(body.as_bytes(), &ctx()).unwrap()[0].quantity, 0);
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::*;
    use stocksync_common::catalog::Catalog;

    fn catalog() -> Catalog {
        Catalog::new(
            toml::from_str(
                r#"
                [[skus]]
                id = "MUG"
                packs = { case = 12 }
                [[aliases]]
                source = "erp"
                external = "100-MUG"
                sku = "MUG"
                [[locations]]
                source = "erp"
                external = "AMS-A01"
                warehouse = "ams"
                bin = "A-01"
                "#,
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn parse(body: &str) -> Result<Vec<Movement>, InputError> {
        let c = catalog();
        let ctx = Context {
            warehouse: "ams",
            default_source: "wms",
            now: OccurredAt {
                unix_ms: 0,
                offset_seconds: 0,
            },
            max_batch: 10,
            units: &c,
            input: "http",
            sources: test_sources(),
            validated: true,
            clock: ClockRule::default(),
        };
        parse_body(body.as_bytes(), &ctx)
    }

    #[test]
    fn a_case_is_journaled_in_base_units_with_the_unit_kept() {
        let m = &parse(r#"{"sku":"MUG","kind":"receipt","quantity":3,"unit":"case"}"#).unwrap()[0];
        assert_eq!(
            (m.quantity, m.unit.as_str(), m.unit_quantity),
            (36, "case", 3)
        );
    }

    #[test]
    fn aliases_are_resolved_and_unknowns_name_their_field() {
        let m = &parse(
            r#"{"sku":"100-MUG","source":"erp","kind":"receipt","quantity":1,"bin":"AMS-A01"}"#,
        )
        .unwrap()[0];
        assert_eq!(m.sku.as_str(), "MUG");
        assert_eq!(m.location.bin.as_deref(), Some("A-01"));
        let e = parse(r#"{"sku":"100-MUG","kind":"receipt","quantity":1}"#).unwrap_err();
        assert_eq!(e.field, "$.sku");
        let e =
            parse(r#"{"sku":"MUG","kind":"receipt","quantity":1,"unit":"pallet"}"#).unwrap_err();
        assert_eq!(e.field, "$.unit");
        // Half a case cannot be journaled as a whole number of base units with its unit kept.
        let e =
            parse(r#"{"sku":"MUG","kind":"receipt","quantity":0.5,"unit":"case"}"#).unwrap_err();
        assert_eq!(e.field, "$.quantity");
        assert_eq!(e.detail, "quantity must be a whole number of case");
    }
}

#[cfg(test)]
mod order_path_tests {
    use super::*;

    #[test]
    fn returns_and_cancellations_need_their_order() {
        let ctx = Context {
            warehouse: "ams",
            default_source: "wms",
            now: OccurredAt {
                unix_ms: 0,
                offset_seconds: 0,
            },
            max_batch: 10,
            units: &BaseUnitOnly,
            input: "http",
            sources: test_sources(),
            validated: true,
            clock: ClockRule::default(),
        };
        for kind in ["return", "cancellation"] {
            let body = format!(r#"{{"sku":"A","kind":"{kind}","quantity":1}}"#);
            assert_eq!(
                parse_body(body.as_bytes(), &ctx).unwrap_err().field,
                "$.order"
            );
            let body = format!(r#"{{"sku":"A","kind":"{kind}","quantity":1,"order":"SO-1"}}"#);
            let m = &parse_body(body.as_bytes(), &ctx).unwrap()[0];
            assert_eq!(m.references.order.as_deref(), Some("SO-1"));
        }
    }
}
