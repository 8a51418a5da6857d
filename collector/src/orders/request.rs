//! An order as a channel sends it, and the checks that turn bad input into a `422` naming
//! the JSON path of the field at fault (`$.lines[2].quantity`), before anything is routed.
//!
//! Every number that comes from a client goes through checked arithmetic here: a TTL near
//! `u64::MAX` or a quantity times a bundle's component count that overflows is refused, not
//! wrapped into a hold that expires in the past or reserves a negative amount.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/orders` body.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The channel's order id; sending it again is answered, not applied twice.
    pub id: String,
    pub channel: String,
    pub lines: Vec<LineRequest>,
    pub ship_to: ShipTo,
    /// When the customer ordered (RFC 3339); cutoffs are judged at this instant. Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    /// May the order ship from several warehouses? Default: the channel's `allow_split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_split: Option<bool>,
    /// Seconds an unpaid order holds its stock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// One order line: a SKU or a bundle SKU.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub quantity: u64,
}

/// Where the order goes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShipTo {
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

/// A field error: the JSON path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct Invalid {
    pub field: String,
    pub detail: String,
}

pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// Longest id, SKU or channel name accepted.
const MAX_ID: usize = 200;

impl OrderRequest {
    /// Parses a body; the error names the JSON path (`$.lines[0].quantity`).
    pub fn parse(body: &[u8]) -> Result<OrderRequest, Invalid> {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)).map_err(
            |e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "$".into()
                } else {
                    format!("$.{path}")
                };
                invalid(field, e.inner().to_string())
            },
        )
    }

    /// Checks the limits that do not need the catalog or the ledger.
    pub fn check(&self, max_lines: usize, max_quantity: u64) -> Result<(), Invalid> {
        text("$.id", &self.id)?;
        text("$.channel", &self.channel)?;
        if self.lines.is_empty() || self.lines.len() > max_lines {
            return Err(invalid(
                "$.lines",
                format!(
                    "an order has 1 to {max_lines} lines, not {}",
                    self.lines.len()
                ),
            ));
        }
        for (i, l) in self.lines.iter().enumerate() {
            text(&format!("$.lines[{i}].sku"), &l.sku)?;
            if l.quantity == 0 || l.quantity > max_quantity {
                return Err(invalid(
                    format!("$.lines[{i}].quantity"),
                    format!("{} is not within 1..={max_quantity}", l.quantity),
                ));
            }
        }
        text("$.ship_to.country", &self.ship_to.country)?;
        match (self.ship_to.lat, self.ship_to.lon) {
            (Some(lat), _) if !(-90.0..=90.0).contains(&lat) => {
                return Err(invalid(
                    "$.ship_to.lat",
                    format!("{lat} is not within -90..90"),
                ))
            }
            (_, Some(lon)) if !(-180.0..=180.0).contains(&lon) => {
                return Err(invalid(
                    "$.ship_to.lon",
                    format!("{lon} is not within -180..180"),
                ))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid("$.ship_to.lat", "lat and lon go together"))
            }
            _ => {}
        }
        self.routed_at(0)?;
        Ok(())
    }

    /// The instant routing judges cutoffs at: `requested_at`, or `now_ms`.
    pub fn routed_at(&self, now_ms: i64) -> Result<jiff::Timestamp, Invalid> {
        match &self.requested_at {
            Some(t) => t.parse::<jiff::Timestamp>().map_err(|e| {
                invalid(
                    "$.requested_at",
                    format!("`{t}` is not an RFC 3339 time: {e}"),
                )
            }),
            None => Ok(
                jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            ),
        }
    }

    /// When the order's holds lapse: `now_ms + ttl_secs`, refused if it does not fit.
    pub fn expires_at(&self, now_ms: i64) -> Result<Option<i64>, Invalid> {
        let Some(ttl) = self.ttl_secs else {
            return Ok(None);
        };
        ttl.checked_mul(1000)
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| now_ms.checked_add(ms))
            .map(Some)
            .ok_or_else(|| {
                invalid(
                    "$.ttl_secs",
                    format!("{ttl} seconds is too far in the future"),
                )
            })
    }
}

fn text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() || value.len() > MAX_ID {
        return Err(invalid(
            field,
            format!("must be 1 to {MAX_ID} characters and not blank"),
        ));
    }
    Ok(())
}

/// The first JSON path where `a` and `b` differ (`$` if they differ at the top).
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                first_difference(va, vb, &format!("{path}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(va, vb, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(lines: Value) -> Vec<u8> {
        json!({"id": "o1", "channel": "web", "lines": lines, "ship_to": {"country": "NL"}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn errors_name_the_json_path() {
        let bad = order(
            json!([{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 1}, {"sku": "C", "quantity": -2}]),
        );
        assert_eq!(
            OrderRequest::parse(&bad).unwrap_err().field,
            "$.lines[2].quantity"
        );
        let zero = OrderRequest::parse(&order(json!([{"sku": "A", "quantity": 0}]))).unwrap();
        assert_eq!(
            zero.check(10, 100).unwrap_err().field,
            "$.lines[0].quantity"
        );
    }

    #[test]
    fn a_huge_ttl_is_refused_not_wrapped() {
        let mut o = OrderRequest::parse(&order(json!([{"sku": "A", "quantity": 1}]))).unwrap();
        o.ttl_secs = Some(u64::MAX);
        assert_eq!(o.expires_at(1).unwrap_err().field, "$.ttl_secs");
        o.ttl_secs = Some(i64::MAX as u64 / 1000);
        assert!(o.expires_at(i64::MAX - 10).is_err());
        o.ttl_secs = Some(60);
        assert_eq!(o.expires_at(1_000).unwrap(), Some(61_000));
    }

    #[test]
    fn the_first_difference_is_named() {
        let a = json!({"id": "o", "lines": [{"sku": "A", "quantity": 1}]});
        let b = json!({"id": "o", "lines": [{"sku": "A", "quantity": 2}]});
        assert_eq!(
            first_difference(&a, &b, "$").as_deref(),
            Some("$.lines[0].quantity")
        );
        assert_eq!(first_difference(&a, &a, "$"), None);
    }
}
