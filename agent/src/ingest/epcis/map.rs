//! From an EPCIS event to movement records: the bizStep x disposition table, GS1 item and
//! location ids through the catalog, business transactions as references.
//!
//! The records produced are the same `MovementInput`s the JSON input decodes, and are
//! validated by the same `input::validate` afterwards, so an EPCIS receipt and a JSON
//! receipt are one thing from here on. Invariant: an event either maps as a whole or not at
//! all; every refusal names the event's field by JSON path.

use std::collections::BTreeMap;

use stocksync_common::catalog::Catalog;
use stocksync_common::gs1;
use stocksync_common::input::{InputKind, MovementInput};
use stocksync_common::inputs::{EpcisKind, EpcisRule};
use stocksync_common::model::{InspectionOutcome, Location};

use super::decode::{refuse, Event, EventType, Refusal, Typed};

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

/// Quantities of one GTIN in one unit, summed over the event.
struct Group {
    gtin: String,
    uom: Option<String>,
    quantity: i64,
    lot: Option<String>,
    sku_path: String,
    quantity_path: String,
    unit_path: String,
}

/// Units CBV senders use for "each"; they mean the SKU's base unit.
fn unit_of(uom: Option<&str>) -> Option<String> {
    uom.filter(|u| !matches!(*u, "EA" | "C62" | "H87"))
        .map(str::to_string)
}

fn groups(event: &Event, is_count: bool) -> Result<Vec<Group>, Refusal> {
    let mut by_key: BTreeMap<(String, Option<String>), Group> = BTreeMap::new();
    let mut order = Vec::new();
    let mut add = |g: Group, order: &mut Vec<(String, Option<String>)>| -> Result<(), Refusal> {
        let key = (g.gtin.clone(), g.uom.clone());
        match by_key.get_mut(&key) {
            Some(have) => {
                have.quantity = have
                    .quantity
                    .checked_add(g.quantity)
                    .ok_or_else(|| refuse(&g.quantity_path, "the event's total overflows"))?;
                if have.lot != g.lot {
                    have.lot = None;
                }
            }
            None => {
                order.push(key.clone());
                by_key.insert(key, g);
            }
        }
        Ok(())
    };
    for (path, epc) in &event.epcs {
        let id = gs1::parse_item(epc).map_err(|e| {
            refuse(
                path,
                format!("{e}; epcList counts trade items by SGTIN or Digital Link"),
            )
        })?;
        if id.serial.is_none() {
            return Err(refuse(
                path,
                format!("`{epc}` names a class, not one instance: put it in quantityList"),
            ));
        }
        add(
            Group {
                gtin: id.gtin.to_string(),
                uom: None,
                quantity: 1,
                lot: None,
                sku_path: path.clone(),
                quantity_path: path.clone(),
                unit_path: path.clone(),
            },
            &mut order,
        )?;
    }
    for q in &event.quantities {
        let class_path = format!("{}.epcClass", q.path);
        let id = gs1::parse_item(&q.epc_class).map_err(|e| refuse(&class_path, e.to_string()))?;
        if id.serial.is_some() {
            return Err(refuse(
                &class_path,
                format!("`{}` names one instance: put it in epcList", q.epc_class),
            ));
        }
        let quantity = q.quantity.ok_or_else(|| {
            refuse(
                format!("{}.quantity", q.path),
                "a quantity is needed to count a class",
            )
        })?;
        add(
            Group {
                gtin: id.gtin.to_string(),
                uom: unit_of(q.uom.as_deref()),
                quantity,
                lot: id.lot,
                sku_path: class_path,
                quantity_path: format!("{}.quantity", q.path),
                unit_path: format!("{}.uom", q.path),
            },
            &mut order,
        )?;
    }
    let groups: Vec<Group> = order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .collect();
    if is_count {
        for (i, g) in groups.iter().enumerate() {
            if groups[..i].iter().any(|o| o.gtin == g.gtin) {
                return Err(refuse(
                    &g.unit_path,
                    format!(
                        "GTIN {} is counted in two units; a count names each GTIN once",
                        g.gtin
                    ),
                ));
            }
        }
    }
    Ok(groups)
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
        note: Some(
            note.chars()
                .take(stocksync_common::input::MAX_TEXT_LEN)
                .collect(),
        ),
    }
}
