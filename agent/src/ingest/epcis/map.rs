//! From an EPCIS event to movement records: the bizStep x disposition table, GS1 item and
//! location ids through the catalog, business transactions as references.
//!
//! The records produced are the same `MovementInput`s the JSON input decodes, and are
//! validated by the same `input::validate` afterwards, so an EPCIS receipt and a JSON
//! receipt are one thing from here on. Invariant: an event either maps as a whole or not at
//! all; every refusal names the event's field by JSON path.

use super::{EpcisKind, EpcisRule};
use crate::gs1;
use crate::input::{InputKind, MovementInput};
use stocksync_common::catalog::Catalog;
use stocksync_common::model::{InspectionOutcome, Location};

use super::decode::{refuse, Event, EventType, Refusal, Typed};
use super::items::{groups, Group};

/// A movement record with the event fields its SKU, quantity and unit came from.
#[derive(Debug, Clone)]
pub struct Draft {
    pub input: MovementInput,
    pub sku_path: String,
    pub quantity_path: String,
    pub unit_path: String,
}

/// What an event means for stock.
#[derive(Debug)]
pub enum Mapped {
    Ignored(String),
    Drafts(Vec<Draft>),
}

fn rule(
    biz_step: &str,
    disposition: Option<&str>,
    transfer: Option<bool>,
    kind: EpcisKind,
) -> EpcisRule {
    EpcisRule {
        biz_step: (!biz_step.is_empty()).then(|| biz_step.to_string()),
        disposition: disposition.map(str::to_string),
        transfer,
        kind,
    }
}

/// The default table, first match wins (documented in `docs/INPUTS.md`).
pub fn default_rules() -> Vec<EpcisRule> {
    use EpcisKind::*;
    vec![
        rule("inspecting", Some("damaged"), None, InspectionDamaged),
        rule(
            "inspecting",
            Some("sellable_accessible"),
            None,
            InspectionAvailable,
        ),
        rule("departing", Some("in_transit"), None, TransferOut),
        // CBV has no returning step: a return is any step with disposition `returned`.
        rule("", Some("returned"), None, Return),
        rule("receiving", None, Some(true), TransferIn),
        rule("arriving", None, Some(true), TransferIn),
        rule("receiving", None, None, Receipt),
        rule("storing", None, None, Receipt),
        rule("picking", None, None, Shipment),
        rule("shipping", None, None, Shipment),
        rule("destroying", None, None, WriteOff),
        rule("", Some("disposed"), None, WriteOff),
        rule("cycle_counting", None, None, Count),
        rule("stock_taking", None, None, Count),
    ]
}

fn matches(r: &EpcisRule, step: Option<&str>, disp: Option<&str>, transfer: bool) -> bool {
    let field =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
    field(&r.biz_step, step)
        && field(&r.disposition, disp)
        && r.transfer.is_none_or(|t| t == transfer)
}

/// References read from `bizTransactionList`.
#[derive(Debug, Default)]
struct Refs {
    order: Option<String>,
    transfer: Option<String>,
    return_id: Option<String>,
}

/// The id part of a business transaction: `urn:epcglobal:cbv:bt:<gln>:<id>` and
/// `https://.../<id>` give `<id>`; anything else is kept as sent.
fn reference_value(value: &str) -> String {
    if let Some(rest) = value.strip_prefix("urn:epcglobal:cbv:bt:") {
        return rest.rsplit(':').next().unwrap_or(rest).to_string();
    }
    if value.contains("://") {
        return value
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(value)
            .to_string();
    }
    value.to_string()
}

fn refs(list: &[Typed]) -> Refs {
    let mut r = Refs::default();
    for t in list {
        let slot = match t.kind.as_deref() {
            Some("desadv" | "bol") => &mut r.transfer,
            Some("rma") => &mut r.return_id,
            Some("po" | "poc" | "inv") | None => &mut r.order,
            Some(_) => continue,
        };
        slot.get_or_insert_with(|| reference_value(&t.value));
    }
    r
}

/// Where a location id of `source` points: its alias as sent, else the alias of its GS1
/// key (`GLN` or `GLN/254/<extension>`).
pub fn resolve_location(catalog: &Catalog, source: &str, id: &str) -> Result<Location, String> {
    if let Some(l) = catalog.location_alias(source, id) {
        return Ok(l.clone());
    }
    let key = match gs1::parse_location(id) {
        Ok(l) => l.key(),
        Err(gs1::Gs1Error::Unknown(_)) => {
            return Err(format!(
            "unknown location `{id}`: no location alias of source `{source}` has it as `external`"
        ))
        }
        Err(e) => return Err(e.to_string()),
    };
    catalog.location_alias(source, &key).cloned().ok_or_else(|| {
        format!("unknown location `{id}`: no location alias of source `{source}` has `{key}` (or the id as sent) as `external`")
    })
}

/// Maps one decoded event. `id_base` is the stable id its movements are numbered under.
pub fn map(
    event: &Event,
    rules: &[EpcisRule],
    catalog: &Catalog,
    source: &str,
    id_base: &str,
) -> Result<Mapped, Refusal> {
    let ignored = |reason: String| Ok(Mapped::Ignored(reason));
    let name = match event.event_type {
        EventType::Aggregation => {
            return ignored("AggregationEvent packs or unpacks objects: no stock changes".into())
        }
        EventType::Transformation => {
            return ignored("TransformationEvent has no stock meaning in stocksync".into())
        }
        EventType::Association => {
            return ignored("AssociationEvent links assets: no stock changes".into())
        }
        EventType::Object => "ObjectEvent",
        EventType::Transaction => "TransactionEvent",
    };
    if event.epcs.is_empty() && event.quantities.is_empty() {
        return ignored(format!(
            "{name} without epcList or quantityList names no stock (e.g. sensor data only)"
        ));
    }
    let refs = refs(&event.biz_transactions);
    let (step, disp) = (event.biz_step.as_deref(), event.disposition.as_deref());
    let Some(kind) = rules
        .iter()
        .find(|r| matches(r, step, disp, refs.transfer.is_some()))
        .map(|r| r.kind)
    else {
        return ignored(format!(
            "bizStep {} with disposition {} has no stock meaning in the mapping table",
            step.unwrap_or("(none)"),
            disp.unwrap_or("(none)")
        ));
    };
    let Some((kind_in, outcome)) = input_kind(kind) else {
        return ignored("mapped to `ignore` by a configured rule".into());
    };
    let location = match &event.location {
        Some((path, id)) => {
            Some(resolve_location(catalog, source, id).map_err(|e| refuse(path, e))?)
        }
        None => None,
    };
    let groups = groups(event, kind == EpcisKind::Count)?;
    let peer = peer(event, kind, catalog, source, location.as_ref());
    let note = format!(
        "EPCIS {} {} {}",
        event.event_id.as_deref().unwrap_or(id_base),
        event.action.as_deref().unwrap_or("-"),
        step.unwrap_or("-")
    );
    let drafts = groups
        .into_iter()
        .enumerate()
        .map(|(n, g)| Draft {
            input: MovementInput {
                outcome,
                ..input(
                    kind_in,
                    &g,
                    &location,
                    &refs,
                    peer.clone(),
                    event,
                    format!("{id_base}:{n}"),
                    &note,
                )
            },
            sku_path: g.sku_path,
            quantity_path: g.quantity_path,
            unit_path: g.unit_path,
        })
        .collect();
    Ok(Mapped::Drafts(drafts))
}

/// The other warehouse of a transfer, from `destinationList` (out) or `sourceList` (in).
fn peer(
    event: &Event,
    kind: EpcisKind,
    catalog: &Catalog,
    source: &str,
    here: Option<&Location>,
) -> Option<String> {
    let list = match kind {
        EpcisKind::TransferOut => &event.destinations,
        EpcisKind::TransferIn => &event.sources,
        _ => return None,
    };
    list.iter()
        .filter(|t| t.kind.as_deref() == Some("location"))
        .find_map(|t| resolve_location(catalog, source, &t.value).ok())
        .map(|l| l.warehouse)
        .filter(|w| here.is_none_or(|h| &h.warehouse != w))
}

/// The JSON input's kind (and inspection outcome) of a table kind; `None` for `ignore`.
fn input_kind(kind: EpcisKind) -> Option<(InputKind, Option<InspectionOutcome>)> {
    Some(match kind {
        EpcisKind::Receipt => (InputKind::Receipt, None),
        EpcisKind::Shipment => (InputKind::Shipment, None),
        EpcisKind::Count => (InputKind::Count, None),
        EpcisKind::TransferOut => (InputKind::TransferOut, None),
        EpcisKind::TransferIn => (InputKind::TransferIn, None),
        EpcisKind::Return => (InputKind::Return, None),
        EpcisKind::Damage => (InputKind::Damage, None),
        EpcisKind::WriteOff => (InputKind::WriteOff, None),
        EpcisKind::InspectionAvailable => {
            (InputKind::Inspection, Some(InspectionOutcome::Available))
        }
        EpcisKind::InspectionDamaged => (InputKind::Inspection, Some(InspectionOutcome::Damaged)),
        EpcisKind::Ignore => return None,
    })
}

#[allow(clippy::too_many_arguments)]
fn input(
    kind: InputKind,
    g: &Group,
    location: &Option<Location>,
    refs: &Refs,
    peer_warehouse: Option<String>,
    event: &Event,
    id: String,
    note: &str,
) -> MovementInput {
    let note = match &g.lot {
        Some(lot) => format!("{note} lot {lot}"),
        None => note.to_string(),
    };
    MovementInput {
        sku: g.gtin.clone(),
        kind,
        quantity: g.quantity,
        unit: g.uom.clone(),
        warehouse: location.as_ref().map(|l| l.warehouse.clone()),
        bin: location.as_ref().and_then(|l| l.bin.clone()),
        source: None,
        occurred_at: Some(event.occurred_at.to_rfc3339()),
        direction: None,
        reason: None,
        outcome: None,
        order: refs.order.clone(),
        transfer: refs.transfer.clone(),
        return_id: refs.return_id.clone(),
        peer_warehouse,
        id: Some(id),
        note: Some(note.chars().take(crate::input::MAX_TEXT_LEN).collect()),
    }
}
