//! The `[orders]` section of collector.toml: how each channel's orders are routed.
//!
//! Kept beside the code that uses it (`crate::config` only carries the raw table), and
//! checked whole at start-up: a typo or an unknown time zone stops the collector with the
//! key's path instead of routing orders with a silently ignored rule.

use std::collections::BTreeMap;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;

/// Failure to read the `[orders]` section.
#[derive(Debug, thiserror::Error)]
#[error("invalid [orders] config at {field}: {detail}")]
pub struct OrdersConfigError {
    pub field: String,
    pub detail: String,
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> OrdersConfigError {
    OrdersConfigError {
        field: field.into(),
        detail: detail.into(),
    }
}

/// `[orders]`: limits, liveness and per-warehouse and per-channel routing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Most lines in one order.
    pub max_lines: usize,
    /// Largest quantity of one line.
    pub max_quantity: u64,
    /// A warehouse whose agents sent nothing for this long is skipped by routing (0 = never).
    pub stale_after_secs: u64,
    /// Every this many seconds, open orders are re-routed off frozen or silent warehouses
    /// (0 = only on request, `POST /v1/orders/<id>/reroute`).
    pub auto_reroute_secs: u64,
    /// Warehouse facts routing needs: place, time zone, cutoff, calendar, capacity, safety.
    pub warehouses: BTreeMap<String, WarehouseRouting>,
    /// Zone costs by destination, for `closest` with `distance = "zones"`.
    pub zones: Vec<ZoneCost>,
    /// One `[[orders.channel]]` per channel that takes orders.
    pub channel: Vec<ChannelRouting>,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            max_lines: 100,
            max_quantity: 100_000,
            stale_after_secs: 0,
            auto_reroute_secs: 0,
            warehouses: BTreeMap::new(),
            zones: Vec::new(),
            channel: Vec::new(),
        }
    }
}

/// `[orders.warehouses.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseRouting {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// IANA time zone the cutoff and the calendar are read in.
    pub time_zone: String,
    /// Local time after which an order ships the next business day (`HH:MM`).
    pub cutoff: Option<String>,
    /// Days the warehouse ships (`mon` .. `sun`).
    pub business_days: Vec<String>,
    /// Local dates it does not ship (`YYYY-MM-DD`).
    pub holidays: Vec<String>,
    /// Most orders routed to it per local day.
    pub daily_capacity: Option<u64>,
    /// Units of every SKU that routing leaves alone.
    pub safety_stock: u64,
    /// Per-SKU safety stock, overriding `safety_stock`.
    pub safety_stock_sku: BTreeMap<String, u64>,
    /// Takes no new orders (can also be switched at run time).
    pub frozen: bool,
}

impl Default for WarehouseRouting {
    fn default() -> Self {
        WarehouseRouting {
            lat: None,
            lon: None,
            time_zone: "UTC".into(),
            cutoff: None,
            business_days: ["mon", "tue", "wed", "thu", "fri"].map(String::from).into(),
            holidays: Vec::new(),
            daily_capacity: None,
            safety_stock: 0,
            safety_stock_sku: BTreeMap::new(),
            frozen: false,
        }
    }
}

/// `[[orders.zones]]`: what shipping from `warehouse` to a destination costs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneCost {
    pub warehouse: String,
    pub country: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub postcode_prefix: Option<String>,
    pub cost: u64,
}

/// A ranking rule; rules are applied in order, later rules only break ties.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Position in the channel's `ranked` list.
    Ranked,
    /// Distance (haversine km) or zone cost to the ship-to address.
    Closest,
    /// A warehouse that can ship every line first.
    MinimiseSplits,
    /// A warehouse that can still ship today (cutoff, business days, holidays) first.
    ShipToday,
    /// More of the ordered SKUs first.
    MostStock,
}

/// How an order is spread over warehouses.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// One warehouse ships the whole order.
    Single,
    /// As few warehouses as possible.
    #[default]
    Split,
    /// Every unit from the best-ranked warehouse that has it.
    PerUnit,
}

/// What happens to units no eligible warehouse has.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Leftovers {
    /// The whole order is refused (409) and nothing is held.
    #[default]
    Reject,
    /// What is there is held; the rest waits as a backorder.
    Backorder,
    /// What is there is held; a person decides about the rest.
    Queue,
}

/// How `closest` measures.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    #[default]
    Haversine,
    Zones,
}

/// `[[orders.channel]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRouting {
    pub name: String,
    /// Warehouses that may ship this channel's orders; empty = every warehouse with stock.
    #[serde(default)]
    pub warehouses: Vec<String>,
    /// The ranking rules, in order.
    #[serde(default = "default_rules")]
    pub rules: Vec<Rule>,
    /// The channel's preferred warehouses, best first (for the `ranked` rule).
    #[serde(default)]
    pub ranked: Vec<String>,
    #[serde(default)]
    pub distance: Distance,
    #[serde(default)]
    pub allocation: Allocation,
    /// Default for an order's `allow_split`.
    #[serde(default = "yes")]
    pub allow_split: bool,
    #[serde(default)]
    pub leftovers: Leftovers,
}

fn default_rules() -> Vec<Rule> {
    vec![
        Rule::Ranked,
        Rule::MinimiseSplits,
        Rule::ShipToday,
        Rule::Closest,
        Rule::MostStock,
    ]
}

fn yes() -> bool {
    true
}

impl ChannelRouting {
    /// The routing a channel gets when it has no `[[orders.channel]]` entry.
    pub fn default_for(name: &str) -> ChannelRouting {
        ChannelRouting {
            name: name.into(),
            warehouses: Vec::new(),
            rules: default_rules(),
            ranked: Vec::new(),
            distance: Distance::default(),
            allocation: Allocation::default(),
            allow_split: true,
            leftovers: Leftovers::default(),
        }
    }
}

/// A warehouse's routing facts, parsed and checked.
#[derive(Debug, Clone)]
pub struct Site {
    pub lat_lon: Option<(f64, f64)>,
    pub tz: TimeZone,
    pub cutoff: Option<Time>,
    pub business_days: Vec<Weekday>,
    pub holidays: Vec<Date>,
    pub daily_capacity: Option<u64>,
    pub safety_stock: u64,
    pub safety_stock_sku: BTreeMap<String, u64>,
    pub frozen: bool,
}

impl Site {
    /// An unconfigured warehouse: UTC, no cutoff, ships Monday to Friday.
    pub fn unconfigured() -> Site {
        Site::parse("", &WarehouseRouting::default()).expect("defaults are valid")
    }

    /// Checks one `[orders.warehouses.<name>]` table.
    pub fn parse(name: &str, w: &WarehouseRouting) -> Result<Site, OrdersConfigError> {
        let at = |key: &str| format!("orders.warehouses.{name}.{key}");
        let tz = TimeZone::get(&w.time_zone)
            .map_err(|e| invalid(at("time_zone"), format!("`{}`: {e}", w.time_zone)))?;
        let cutoff = match &w.cutoff {
            Some(c) => Some(
                c.parse::<Time>()
                    .map_err(|e| invalid(at("cutoff"), format!("`{c}` is not HH:MM: {e}")))?,
            ),
            None => None,
        };
        let business_days = w
            .business_days
            .iter()
            .map(|d| {
                weekday(d)
                    .ok_or_else(|| invalid(at("business_days"), format!("`{d}` is not mon..sun")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let holidays = w
            .holidays
            .iter()
            .map(|d| {
                d.parse::<Date>()
                    .map_err(|e| invalid(at("holidays"), format!("`{d}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lat_lon = match (w.lat, w.lon) {
            (Some(lat), Some(lon))
                if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
            {
                Some((lat, lon))
            }
            (None, None) => None,
            _ => {
                return Err(invalid(
                    at("lat"),
                    "lat and lon go together, within -90..90 and -180..180",
                ))
            }
        };
        Ok(Site {
            lat_lon,
            tz,
            cutoff,
            business_days,
            holidays,
            daily_capacity: w.daily_capacity,
            safety_stock: w.safety_stock,
            safety_stock_sku: w.safety_stock_sku.clone(),
            frozen: w.frozen,
        })
    }

    /// Units of `sku` routing leaves alone here.
    pub fn safety(&self, sku: &str) -> u64 {
        self.safety_stock_sku
            .get(sku)
            .copied()
            .unwrap_or(self.safety_stock)
    }
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

impl OrdersConfig {
    /// Reads the raw `[orders]` table of collector.toml.
    pub fn from_table(table: toml::Table) -> Result<OrdersConfig, OrdersConfigError> {
        let config: OrdersConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| invalid("orders", e.message().to_string()))?;
        for (i, c) in config.channel.iter().enumerate() {
            if c.rules.is_empty() {
                return Err(invalid(
                    format!("orders.channel[{i}].rules"),
                    "needs at least one rule",
                ));
            }
            if config.channel[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(
                    format!("orders.channel[{i}].name"),
                    format!("`{}` is listed twice", c.name),
                ));
            }
        }
        for (i, z) in config.zones.iter().enumerate() {
            if z.country.is_empty() {
                return Err(invalid(
                    format!("orders.zones[{i}].country"),
                    "must not be empty",
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OrdersConfig, OrdersConfigError> {
        OrdersConfig::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn a_full_section_reads() {
        let c = parse(
            "stale_after_secs = 60\n[warehouses.ams]\nlat = 52.37\nlon = 4.9\ntime_zone = \"Europe/Amsterdam\"\ncutoff = \"15:00\"\nholidays = [\"2026-12-25\"]\n[[channel]]\nname = \"web\"\nrules = [\"ship_today\", \"closest\"]\nallocation = \"single\"\nleftovers = \"backorder\"\n",
        )
        .unwrap();
        let site = Site::parse("ams", &c.warehouses["ams"]).unwrap();
        assert_eq!(site.cutoff, Some(jiff::civil::time(15, 0, 0, 0)));
        assert_eq!(c.channel[0].allocation, Allocation::Single);
    }

    #[test]
    fn the_deploy_example_is_valid() {
        let text = include_str!("../../../deploy/collector.toml");
        let mut all: toml::Table = toml::from_str(text).unwrap();
        let orders = all.remove("orders").unwrap().as_table().cloned().unwrap();
        let c = OrdersConfig::from_table(orders).unwrap();
        for (name, w) in &c.warehouses {
            Site::parse(name, w).unwrap();
        }
        assert_eq!(c.channel[0].rules.len(), 5);
    }

    #[test]
    fn typos_and_bad_zones_are_refused() {
        assert!(parse("[[channel]]\nname = \"web\"\nallocaton = \"single\"\n").is_err());
        let w = WarehouseRouting {
            time_zone: "Mars/Olympus".into(),
            ..Default::default()
        };
        assert_eq!(
            Site::parse("x", &w).unwrap_err().field,
            "orders.warehouses.x.time_zone"
        );
    }
}
