//! Reading EPCIS 2.0 JSON / JSON-LD into typed events, each with the JSON path of every
//! field it came from.
//!
//! A document is read per event: the shape errors that concern the body as a whole
//! (malformed JSON, no event list) refuse the request, anything inside one event refuses
//! only that event. The checks are the rules of the EPCIS 2.0 JSON schema that change what
//! we count: the event type, the required time fields, the types of the lists we read and
//! the CBV words. Fields we do not use are not inspected, as the schema allows extensions.

use crate::input::parse_time;
use serde_json::Value;
use stocksync_common::OccurredAt;

use super::vocab::{self, Vocabulary};

/// A refused event or body: the JSON path of the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub detail: String,
}

pub fn refuse(field: impl Into<String>, detail: impl Into<String>) -> Refusal {
    Refusal {
        field: field.into(),
        detail: detail.into(),
    }
}

/// The events of a document with the path of each.
pub fn events(doc: &Value, max_events: usize) -> Result<Vec<(String, &Value)>, Refusal> {
    let (prefix, list) = match doc {
        Value::Array(list) => ("$".to_string(), list),
        Value::Object(map) => match map.get("type").and_then(Value::as_str) {
            Some("EPCISDocument") => (
                "$.epcisBody.eventList".to_string(),
                list_at(doc, &["epcisBody", "eventList"], "$.epcisBody.eventList")?,
            ),
            Some("EPCISQueryDocument") => (
                "$.epcisBody.queryResults.resultsBody.eventList".to_string(),
                list_at(
                    doc,
                    &["epcisBody", "queryResults", "resultsBody", "eventList"],
                    "$.epcisBody.queryResults.resultsBody.eventList",
                )?,
            ),
            Some(_) => return Ok(vec![("$".to_string(), doc)]),
            None => return Err(refuse("$.type", "an EPCIS document or event needs `type`")),
        },
        _ => {
            return Err(refuse(
                "$",
                "expected an EPCISDocument, an event or an array of events",
            ))
        }
    };
    if list.len() > max_events {
        return Err(refuse(
            prefix,
            format!(
                "{} events exceed the limit of {max_events} per document",
                list.len()
            ),
        ));
    }
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("{prefix}[{i}]"), e))
        .collect())
}

fn list_at<'a>(doc: &'a Value, keys: &[&str], path: &str) -> Result<&'a Vec<Value>, Refusal> {
    let mut v = doc;
    for k in keys {
        v = v.get(k).unwrap_or(&Value::Null);
    }
    v.as_array()
        .ok_or_else(|| refuse(path, "an EPCIS document needs its event list as an array"))
}

/// EPCIS 2.0 event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Object,
    Aggregation,
    Transformation,
    Association,
    Transaction,
}

/// One `quantityList` element.
#[derive(Debug, Clone)]
pub struct QuantityElement {
    pub path: String,
    pub epc_class: String,
    pub quantity: Option<i64>,
    pub uom: Option<String>,
}

/// A `sourceList` / `destinationList` / `bizTransactionList` entry: type word and value.
#[derive(Debug, Clone)]
pub struct Typed {
    pub kind: Option<String>,
    pub value: String,
}

/// The fields of one event that can change stock.
#[derive(Debug, Clone)]
pub struct Event {
    pub path: String,
    pub event_type: EventType,
    pub event_id: Option<String>,
    pub occurred_at: OccurredAt,
    pub action: Option<String>,
    pub biz_step: Option<String>,
    pub disposition: Option<String>,
    /// `bizLocation.id`, else `readPoint.id`, with its path.
    pub location: Option<(String, String)>,
    pub epcs: Vec<(String, String)>,
    pub quantities: Vec<QuantityElement>,
    pub biz_transactions: Vec<Typed>,
    pub sources: Vec<Typed>,
    pub destinations: Vec<Typed>,
    /// `Some(reason)` for an error declaration (the reason may be absent).
    pub error_declaration: Option<Option<String>>,
}

/// Reads one event at `path`.
pub fn event(path: &str, value: &Value) -> Result<Event, Refusal> {
    let at = |field: &str| format!("{path}.{field}");
    let obj = value
        .as_object()
        .ok_or_else(|| refuse(path, "an event must be an object"))?;
    let event_type = match obj.get("type").and_then(Value::as_str) {
        Some("ObjectEvent") => EventType::Object,
        Some("AggregationEvent") => EventType::Aggregation,
        Some("TransformationEvent") => EventType::Transformation,
        Some("AssociationEvent") => EventType::Association,
        Some("TransactionEvent") => EventType::Transaction,
        Some(other) => {
            return Err(refuse(at("type"), format!("`{other}` is not an EPCIS 2.0 event type (ObjectEvent, AggregationEvent, TransactionEvent, TransformationEvent, AssociationEvent)")))
        }
        None => return Err(refuse(at("type"), "an event needs `type` as a string")),
    };
    let time = required_str(obj, "eventTime", path)?;
    let instant = parse_time(time).map_err(|e| refuse(at("eventTime"), e))?;
    let zone = required_str(obj, "eventTimeZoneOffset", path)?;
    let offset_seconds = zone_offset(zone).ok_or_else(|| {
        refuse(
            at("eventTimeZoneOffset"),
            format!("`{zone}` is not `+HH:MM` or `-HH:MM`"),
        )
    })?;
    let action = optional_str(obj, "action", path)?;
    if let Some(a) = &action {
        if !matches!(a.as_str(), "ADD" | "OBSERVE" | "DELETE") {
            return Err(refuse(
                at("action"),
                format!("`{a}` is not ADD, OBSERVE or DELETE"),
            ));
        }
    } else if matches!(event_type, EventType::Object | EventType::Transaction) {
        return Err(refuse(
            at("action"),
            "an ObjectEvent or TransactionEvent needs `action`",
        ));
    }
    Ok(Event {
        path: path.to_string(),
        event_type,
        event_id: optional_str(obj, "eventID", path)?,
        occurred_at: OccurredAt {
            unix_ms: instant.unix_ms,
            offset_seconds,
        },
        action,
        biz_step: word(obj, "bizStep", path, &vocab::BIZ_STEP)?,
        disposition: word(obj, "disposition", path, &vocab::DISPOSITION)?,
        location: location(obj, path)?,
        epcs: strings(obj, "epcList", path)?,
        quantities: quantities(obj, path)?,
        biz_transactions: typed_list(
            obj,
            "bizTransactionList",
            "bizTransaction",
            &vocab::BTT,
            path,
        )?,
        sources: typed_list(obj, "sourceList", "source", &vocab::SDT, path)?,
        destinations: typed_list(obj, "destinationList", "destination", &vocab::SDT, path)?,
        error_declaration: error_declaration(obj, path)?,
    })
}

type Object = serde_json::Map<String, Value>;

fn required_str<'a>(obj: &'a Object, key: &str, path: &str) -> Result<&'a str, Refusal> {
    obj.get(key).and_then(Value::as_str).ok_or_else(|| {
        refuse(
            format!("{path}.{key}"),
            format!("an event needs `{key}` as a string"),
        )
    })
}

fn optional_str(obj: &Object, key: &str, path: &str) -> Result<Option<String>, Refusal> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(refuse(format!("{path}.{key}"), "must be a string")),
    }
}

fn word(obj: &Object, key: &str, path: &str, v: &Vocabulary) -> Result<Option<String>, Refusal> {
    optional_str(obj, key, path)?
        .map(|w| vocab::normalise(v, &w).map_err(|e| refuse(format!("{path}.{key}"), e)))
        .transpose()
}

/// `+HH:MM` / `-HH:MM` (`Z` is accepted too) as seconds east of UTC.
fn zone_offset(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = text.get(1..)?.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h.unsigned_abs() <= 14 && m.unsigned_abs() < 60 && text.len() == 6)
        .then_some(sign * (h * 3600 + m * 60))
}

fn location(obj: &Object, path: &str) -> Result<Option<(String, String)>, Refusal> {
    for key in ["bizLocation", "readPoint"] {
        match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(l)) => match l.get("id") {
                Some(Value::String(id)) => {
                    return Ok(Some((format!("{path}.{key}.id"), id.clone())))
                }
                _ => {
                    return Err(refuse(
                        format!("{path}.{key}.id"),
                        "a location needs `id` as a string",
                    ))
                }
            },
            Some(_) => {
                return Err(refuse(
                    format!("{path}.{key}"),
                    "must be an object with `id`",
                ))
            }
        }
    }
    Ok(None)
}

fn array<'a>(obj: &'a Object, key: &str, path: &str) -> Result<&'a [Value], Refusal> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(refuse(format!("{path}.{key}"), "must be an array")),
    }
}

fn strings(obj: &Object, key: &str, path: &str) -> Result<Vec<(String, String)>, Refusal> {
    array(obj, key, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("{path}.{key}[{i}]");
            v.as_str()
                .map(|s| (p.clone(), s.to_string()))
                .ok_or_else(|| refuse(p, "must be a string"))
        })
        .collect()
}

fn quantities(obj: &Object, path: &str) -> Result<Vec<QuantityElement>, Refusal> {
    array(obj, "quantityList", path)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("{path}.quantityList[{i}]");
            let e = v.as_object().ok_or_else(|| refuse(&p, "must be an object"))?;
            let epc_class = required_str(e, "epcClass", &p)?.to_string();
            let quantity = match e.get("quantity") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(whole(n).ok_or_else(|| {
                    refuse(format!("{p}.quantity"), format!("{n} is not a whole number in 1 ..= 1000000000; give it in a smaller `uom` the catalog knows"))
                })?),
                Some(_) => return Err(refuse(format!("{p}.quantity"), "must be a number")),
            };
            let uom = optional_str(e, "uom", &p)?;
            Ok(QuantityElement { path: p, epc_class, quantity, uom })
        })
        .collect()
}

/// A positive whole number (`3` or `3.0`).
fn whole(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return (i > 0).then_some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && (1.0..=1e9).contains(&f)).then_some(f as i64)
}

fn typed_list(
    obj: &Object,
    key: &str,
    value_key: &str,
    v: &Vocabulary,
    path: &str,
) -> Result<Vec<Typed>, Refusal> {
    array(obj, key, path)?
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let p = format!("{path}.{key}[{i}]");
            let e = e
                .as_object()
                .ok_or_else(|| refuse(&p, "must be an object"))?;
            let value = required_str(e, value_key, &p)?.to_string();
            let kind = word(e, "type", &p, v)?;
            Ok(Typed { kind, value })
        })
        .collect()
}

fn error_declaration(obj: &Object, path: &str) -> Result<Option<Option<String>>, Refusal> {
    match obj.get("errorDeclaration") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(d)) => Ok(Some(optional_str(
            d,
            "reason",
            &format!("{path}.errorDeclaration"),
        )?)),
        Some(_) => Err(refuse(
            format!("{path}.errorDeclaration"),
            "must be an object",
        )),
    }
}
