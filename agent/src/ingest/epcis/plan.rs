//! One event from JSON to journal-ready movements: decode, map, reverse (for an error
//! declaration), then `input::validate` with its field names turned into the event's JSON
//! paths. Pure: no I/O, so the whole decision for an event is testable on its own.

use super::EpcisRule;
use crate::input::{self, Context, MAX_ID_LEN};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stocksync_common::catalog::Catalog;
use stocksync_common::Movement;

use super::decode::{self, refuse, Refusal};
use super::map::{self, Draft, Mapped};
use super::reverse;

/// What becomes of one event.
pub enum Plan {
    Ignored(String),
    Rejected(Refusal),
    Journal {
        movements: Vec<Movement>,
        /// How many of `movements` (at the end) are compensations of an error declaration.
        reversals: usize,
    },
}

/// Decodes, maps and validates one event; returns its eventID (or content id) and plan.
pub fn plan(
    path: &str,
    value: &Value,
    rules: &[EpcisRule],
    catalog: &Catalog,
    ctx: &Context<'_>,
) -> (Option<String>, Plan) {
    let event = match decode::event(path, value) {
        Ok(e) => e,
        Err(r) => {
            let id = value
                .get("eventID")
                .and_then(Value::as_str)
                .map(str::to_string);
            return (id, Plan::Rejected(r));
        }
    };
    let base = id_base(event.event_id.as_deref(), value);
    let plan = (|| {
        if event.error_declaration.is_some() && event.event_id.is_none() {
            return Err(refuse(
                format!("{path}.eventID"),
                "an errorDeclaration names the event it corrects by its eventID",
            ));
        }
        let drafts = match map::map(&event, rules, catalog, ctx.default_source, &base)? {
            Mapped::Ignored(reason) => return Ok(Plan::Ignored(reason)),
            Mapped::Drafts(d) => d,
        };
        let reversal = match (&event.error_declaration, &event.event_id) {
            (Some(reason), Some(id)) => {
                reverse::compensations(&drafts, path, id, reason.as_deref())?
            }
            _ => Vec::new(),
        };
        let reversals = reversal.len();
        let movements = drafts
            .into_iter()
            .chain(reversal)
            .map(|d| validate(d, &event, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan::Journal {
            movements,
            reversals,
        })
    })();
    (
        event.event_id.clone().or(Some(base)),
        plan.unwrap_or_else(Plan::Rejected),
    )
}

/// `input::validate`, with its field names turned into the event's JSON paths.
fn validate(d: Draft, event: &decode::Event, ctx: &Context<'_>) -> Result<Movement, Refusal> {
    input::validate(d.input, ctx).map_err(|(field, detail)| {
        let path = match field {
            "sku" => d.sku_path.clone(),
            "quantity" => d.quantity_path.clone(),
            "unit" => d.unit_path.clone(),
            "warehouse" | "bin" => event
                .location
                .as_ref()
                .map_or_else(|| format!("{}.bizLocation", event.path), |(p, _)| p.clone()),
            "occurred_at" => format!("{}.eventTime", event.path),
            "order" | "transfer" | "return" | "peer_warehouse" => {
                format!("{}.bizTransactionList", event.path)
            }
            "id" => format!("{}.eventID", event.path),
            _ => event.path.clone(),
        };
        refuse(path, detail)
    })
}

/// The id an event's movements are numbered under (`<base>:<n>`): the eventID when it is a
/// valid movement id with room for the suffixes, else a hash of it, else a hash of the
/// event's content.
fn id_base(event_id: Option<&str>, value: &Value) -> String {
    let hash = |bytes: &[u8]| {
        let digest = Sha256::digest(bytes);
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match event_id {
        Some(id)
            if id.len() <= MAX_ID_LEN - 8
                && !id.chars().any(|c| c.is_control() || "/+#".contains(c)) =>
        {
            id.to_string()
        }
        Some(id) => format!("h:{}", hash(id.as_bytes())),
        None => format!("c:{}", hash(&serde_json::to_vec(value).unwrap_or_default())),
    }
}
