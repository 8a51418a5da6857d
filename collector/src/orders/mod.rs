//! Orders: route every line of an order to a warehouse, hold all of it or none, and follow
//! the order through shipment, cancellation, expiry and re-routing.
//!
//! The invariant is "never oversold": the availability read, the routing decision and the
//! holds of every line happen in one ledger-writer transaction (`place`), with demand for
//! the same (SKU, warehouse) summed across lines and bundle components before it is checked
//! (`reserve::create_all`). A warehouse that cannot give what routing asked of it is dropped
//! and the order re-ranked inside that same transaction; nothing is read, decided and then
//! written later. Shipments carrying the order reference consume the holds through the
//! ledger path every movement takes.
//!
//! Layout: `request` (input and its 422s), `config` (the `[orders]` section), `calendar`
//! (cutoffs in each warehouse's time zone), `route` (filters' output ranked and allocated),
//! `place`, `lifecycle` and `reroute` (writer-side commands), `view` (the JSON an order is shown as),
//! `store` (tables), `read` (what routing reads, `Facts`).
//!
//! Two stores take orders: the SQLite writer (the commands here) and PostgreSQL workers
//! (`store::postgres::orders`). Routing never touches a store: it decides from a `Facts`
//! value each store fills inside its own transaction, and the decisions after placing
//! (`plan_cancel`, `reroute::off`/`Asked`) are pure too, so both stores share them.

pub mod calendar;
pub mod config;
pub mod lifecycle;
mod place;
mod read;
pub mod request;
pub mod reroute;
pub mod route;
pub mod store;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rusqlite::Connection;
use stocksync_common::catalog::Catalog;

pub use config::{OrdersConfig, OrdersConfigError};
pub use lifecycle::{cancel, keep, CancelLine, CancelRequest, Outcome};
pub use lifecycle::{plan_cancel, Release};
pub use place::{
    allocation, explain, holds_for, place, record, replayed, shortfall_body, Placed, Prepared,
};
pub use read::{facts, Facts};
pub use request::{Invalid, OrderRequest};
pub use reroute::{reroute, reroute_open};
pub use view::{list, show};

use config::{ChannelRouting, Distance, Site};
use request::{invalid, ShipTo};
use route::{Candidate, Demand};

/// Warehouses left out of routing, with why.
pub type Filtered = Vec<(String, String)>;

/// What routing is asked: these lines, to this address, judged at `at` (cutoffs, days)
/// and `now` (liveness).
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    pub lines: &'a [Demand],
    pub ship_to: &'a ShipTo,
    pub at: jiff::Timestamp,
    pub now: i64,
}

/// Routing configuration and the catalog, shared by the API and the writer-side commands.
pub struct Orders {
    pub config: OrdersConfig,
    sites: BTreeMap<String, Site>,
    channels: BTreeMap<String, ChannelRouting>,
    catalog: Arc<Catalog>,
}

impl Orders {
    /// Checks the `[orders]` section; `channels` are the publishing channels, which take
    /// orders with the default routing unless `[[orders.channel]]` says otherwise.
    pub fn new(
        raw: toml::Table,
        channels: impl IntoIterator<Item = String>,
        catalog: Arc<Catalog>,
    ) -> Result<Orders, OrdersConfigError> {
        let config = OrdersConfig::from_table(raw)?;
        let sites = config
            .warehouses
            .iter()
            .map(|(name, w)| Site::parse(name, w).map(|s| (name.clone(), s)))
            .collect::<Result<_, _>>()?;
        let mut by_name: BTreeMap<String, ChannelRouting> = channels
            .into_iter()
            .map(|n| (n.clone(), ChannelRouting::default_for(&n)))
            .collect();
        for c in &config.channel {
            by_name.insert(c.name.clone(), c.clone());
        }
        Ok(Orders {
            config,
            sites,
            channels: by_name,
            catalog,
        })
    }

    /// A channel's routing, if it takes orders.
    pub fn channel(&self, name: &str) -> Option<&ChannelRouting> {
        self.channels.get(name)
    }

    pub(crate) fn site(&self, warehouse: &str) -> Site {
        self.sites
            .get(warehouse)
            .cloned()
            .unwrap_or_else(Site::unconfigured)
    }

    /// What one unit of each line takes: a bundle's components or the SKU itself. An SKU
    /// the catalog (or, with an open catalog, the ledger) does not know is a 422.
    pub fn demand(
        &self,
        req: &OrderRequest,
        conn: &Connection,
    ) -> Result<Result<Vec<Demand>, Invalid>, rusqlite::Error> {
        self.demand_with(req, |sku| crate::stock::known_sku(conn, sku))
    }

    /// [`Orders::demand`] with the ledger's "was this SKU ever stocked" asked of `stocked`
    /// (only consulted with an open catalog, for SKUs that are not bundles).
    pub fn demand_with<E>(
        &self,
        req: &OrderRequest,
        mut stocked: impl FnMut(&str) -> Result<bool, E>,
    ) -> Result<Result<Vec<Demand>, Invalid>, E> {
        let mut out = Vec::with_capacity(req.lines.len());
        for (i, l) in req.lines.iter().enumerate() {
            let field = format!("$.lines[{i}].sku");
            let parts = match self.catalog.bundle(&l.sku) {
                Some(components) => components
                    .iter()
                    .map(|c| (c.sku.clone(), c.quantity))
                    .collect(),
                None => {
                    let known = if self.catalog.is_open() {
                        stocked(&l.sku)?
                    } else {
                        self.catalog.config().skus.iter().any(|s| s.id == l.sku)
                    };
                    if !known {
                        return Ok(Err(invalid(
                            field,
                            format!("`{}` is not a known SKU or bundle", l.sku),
                        )));
                    }
                    vec![(l.sku.clone(), 1)]
                }
            };
            let demand = Demand {
                quantity: l.quantity,
                parts,
            };
            if route::summed(std::slice::from_ref(&demand)).is_none() {
                return Ok(Err(invalid(
                    format!("$.lines[{i}].quantity"),
                    "too large for its bundle",
                )));
            }
            out.push(demand);
        }
        if route::summed(&out).is_none() {
            return Ok(Err(invalid(
                "$.lines",
                "the summed quantities are too large",
            )));
        }
        Ok(Ok(out))
    }

    /// The warehouses routing looks at for `channel`: its list, or every warehouse that
    /// has a row of one of the order's SKUs (`available` as read by [`Facts`]).
    pub fn warehouses_for(
        &self,
        channel: &ChannelRouting,
        available: &BTreeMap<String, BTreeMap<String, i64>>,
    ) -> Vec<String> {
        if channel.warehouses.is_empty() {
            let stocking: BTreeSet<&String> = available.values().flat_map(|l| l.keys()).collect();
            stocking.into_iter().cloned().collect()
        } else {
            channel.warehouses.clone()
        }
    }

    /// The local day whose routed orders count against `warehouse`'s daily capacity at
    /// `at`, if it has one.
    pub fn capacity_day(&self, warehouse: &str, at: jiff::Timestamp) -> Option<String> {
        let site = self.site(warehouse);
        site.daily_capacity
            .map(|_| calendar::local_day(&site, at).to_string())
    }

    /// The warehouses that may ship for `channel` now, with their routable stock and facts,
    /// and the ones filtered out with why. `skip` are warehouses already dropped.
    pub fn candidates(
        &self,
        facts: &Facts,
        channel: &ChannelRouting,
        ask: &Ask<'_>,
        skip: &BTreeSet<String>,
    ) -> (Vec<Candidate>, Filtered) {
        let Ask {
            lines,
            ship_to,
            at,
            now,
        } = *ask;
        let skus: BTreeSet<&String> = lines
            .iter()
            .flat_map(|l| l.parts.iter().map(|p| &p.0))
            .collect();
        let names = match &facts.warehouses {
            Some(names) => names.clone(),
            None => self.warehouses_for(channel, &facts.available),
        };
        let (mut out, mut filtered) = (Vec::new(), Vec::new());
        for wh in names.into_iter().filter(|w| !skip.contains(w)) {
            let site = self.site(&wh);
            if let Some(why) = self.filter(facts, &wh, &site, at, now) {
                filtered.push((wh, why));
                continue;
            }
            let mut stock = BTreeMap::new();
            for sku in &skus {
                let n = facts
                    .available
                    .get(*sku)
                    .and_then(|l| l.get(&wh))
                    .copied()
                    .unwrap_or(0)
                    .max(0) as u64;
                stock.insert((*sku).clone(), n.saturating_sub(site.safety(sku)));
            }
            out.push(Candidate {
                rank: channel.ranked.iter().position(|r| r == &wh),
                distance: self.distance(channel.distance, &wh, &site, ship_to),
                days_to_ship: calendar::days_to_ship(&site, at),
                warehouse: wh,
                stock,
            });
        }
        (out, filtered)
    }

    /// Why `wh` may not take an order now (frozen, silent, full for the day), if it may not.
    fn filter(
        &self,
        facts: &Facts,
        wh: &str,
        site: &Site,
        at: jiff::Timestamp,
        now: i64,
    ) -> Option<String> {
        if let Some(why) = self.unavailable(wh, site, &facts.frozen, facts.last_heard(wh), now) {
            return Some(why);
        }
        let cap = site.daily_capacity?;
        let day = calendar::local_day(site, at).to_string();
        let used = facts.routed_today.get(wh).copied().unwrap_or(0);
        (used >= cap).then(|| format!("daily capacity of {cap} orders reached for {day}"))
    }

    /// Why `wh` cannot ship at all now (frozen or silent): what re-routing moves orders off.
    /// `last_heard` is when any of its agents last reported.
    pub fn unavailable(
        &self,
        wh: &str,
        site: &Site,
        frozen: &BTreeMap<String, String>,
        last_heard: Option<i64>,
        now: i64,
    ) -> Option<String> {
        if site.frozen {
            return Some("frozen in the config".into());
        }
        if let Some(why) = frozen.get(wh) {
            return Some(format!("frozen: {why}"));
        }
        let stale = self.config.stale_after_secs;
        if stale == 0 {
            return None;
        }
        let limit_ms = i64::try_from(stale.saturating_mul(1000)).unwrap_or(i64::MAX);
        match last_heard {
            None => Some("silent: no agent has reported".into()),
            Some(t) if now.saturating_sub(t) > limit_ms => Some(format!(
                "silent: last heard {}s ago (stale_after {stale}s)",
                now.saturating_sub(t) / 1000
            )),
            _ => None,
        }
    }

    /// Kilometres (haversine) or zone cost from `wh` to the address, if known.
    fn distance(&self, mode: Distance, wh: &str, site: &Site, to: &ShipTo) -> Option<u64> {
        if mode == Distance::Haversine {
            if let (Some((la, lo)), Some(lat), Some(lon)) = (site.lat_lon, to.lat, to.lon) {
                return Some(haversine_km((la, lo), (lat, lon)).round() as u64);
            }
        }
        let postcode = to.postcode.as_deref().unwrap_or("");
        self.config
            .zones
            .iter()
            .filter(|z| z.warehouse == wh && z.country.eq_ignore_ascii_case(&to.country))
            .filter(|z| {
                z.region
                    .as_ref()
                    .is_none_or(|r| Some(r) == to.region.as_ref())
            })
            .filter(|z| {
                z.postcode_prefix
                    .as_ref()
                    .is_none_or(|p| postcode.starts_with(p.as_str()))
            })
            .max_by_key(|z| {
                (
                    z.postcode_prefix.as_ref().map_or(0, String::len),
                    z.region.is_some(),
                )
            })
            .map(|z| z.cost)
    }
}

/// Re-routes open orders off frozen or silent warehouses every `auto_reroute_secs` (when
/// set), until the collector stops.
pub async fn auto_reroute(
    ledger: crate::ledger::Ledger,
    orders: Arc<Orders>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let secs = orders.config.auto_reroute_secs;
    if secs == 0 {
        // Off: still a supervised task, so it waits for the stop like the others (a task
        // that ends early is taken for a crash).
        let _ = shutdown.changed().await;
        return Ok(());
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(secs));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {
                let now = stocksync_common::OccurredAt::now().unix_ms;
                let ctx = orders.clone();
                let moved = ledger.write(move |tx, touched| reroute_open(tx, &ctx, now, touched)).await?;
                if !moved.is_empty() {
                    tracing::info!(orders = ?moved, "orders re-routed off frozen or silent warehouses");
                }
            }
        }
    }
}

/// Great-circle distance in km.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    #[test]
    fn amsterdam_to_chicago_is_about_6600_km() {
        let km = super::haversine_km((52.37, 4.90), (41.88, -87.63));
        assert!((6500.0..6700.0).contains(&km), "{km}");
    }
}
