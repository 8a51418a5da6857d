//! From the stock projection to the number each channel should show, for exactly the
//! (channel, SKU) pairs a set of stock changes can affect.
//!
//! Invariant: a plain SKU is recomputed when any eligible location of it changed; a bundle
//! when any of its components did; its number is what the eligible warehouses can build,
//! each from its own stock (`crate::buildable`). Reads only the ledger's `stock` table.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use stocksync_common::config::ChannelMode;

use super::store::NewValue;
use super::Channel;
use crate::buildable;
use crate::stock::StockKey;

/// Which stock changed: everything (start-up, lagged receiver, mode switch) or some keys.
#[derive(Debug, Clone)]
pub enum Dirty {
    All,
    Keys(BTreeSet<StockKey>),
}

/// Plain SKUs and bundle SKUs of `channel` to recompute for `dirty`.
fn affected(
    conn: &Connection,
    channel: &Channel,
    dirty: &Dirty,
) -> rusqlite::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let touched: BTreeSet<String> = match dirty {
        Dirty::All => {
            let mut all = crate::stock::skus(conn)?;
            all.extend(channel.catalog_skus.iter().cloned());
            all
        }
        Dirty::Keys(keys) => keys
            .iter()
            .filter(|k| channel.eligible.touches(&k.warehouse))
            .map(|k| k.sku.clone())
            .collect(),
    };
    let plain = touched
        .iter()
        .filter(|s| channel.sells(s))
        .cloned()
        .collect();
    let bundles = match dirty {
        Dirty::All => channel.bundles.keys().cloned().collect(),
        Dirty::Keys(_) => touched
            .iter()
            .filter_map(|s| channel.bundles_of.get(s))
            .flatten()
            .cloned()
            .collect(),
    };
    Ok((plain, bundles))
}

/// Sum of `available` over the channel's eligible locations of `sku`.
fn pooled(conn: &Connection, channel: &Channel, sku: &str) -> rusqlite::Result<i64> {
    let mut sum = 0i64;
    crate::stock::for_each_available(conn, sku, |warehouse, bin, available| {
        if channel.eligible.contains(warehouse, bin) {
            sum = sum.saturating_add(available);
        }
    })?;
    Ok(sum)
}

/// The values `channel` should show for everything `dirty` can affect, given its `mode`.
/// A frozen channel gets nothing: what it last showed stays.
pub fn values(
    conn: &Connection,
    channel: &Channel,
    mode: ChannelMode,
    dirty: &Dirty,
) -> rusqlite::Result<Vec<NewValue>> {
    if mode == ChannelMode::Frozen {
        return Ok(Vec::new());
    }
    let (plain, bundles) = affected(conn, channel, dirty)?;
    let mut cache: BTreeMap<String, u64> = BTreeMap::new();
    let mut sellable = |sku: &str| -> rusqlite::Result<u64> {
        if let Some(v) = cache.get(sku) {
            return Ok(*v);
        }
        let v = channel.rules.sellable(pooled(conn, channel, sku)?);
        cache.insert(sku.to_string(), v);
        Ok(v)
    };
    let mut out = Vec::with_capacity(plain.len() + bundles.len());
    for sku in plain {
        let value = sellable(&sku)?;
        out.push((sku, value));
    }
    for bundle in bundles {
        let components = &channel.bundles[&bundle];
        let mut parts = Vec::new();
        for (component, qty) in components {
            parts.push((sellable(component)?, *qty));
        }
        let sites =
            buildable::by_warehouse(conn, components, |w, b| channel.eligible.contains(w, b))?;
        let kits = buildable::total(&sites);
        out.push((bundle, channel.rules.bundle(kits, &parts)));
    }
    Ok(out
        .into_iter()
        .map(|(sku, value)| NewValue {
            channel_sku: channel.channel_sku(&sku),
            value: if mode == ChannelMode::Zero { 0 } else { value },
            sku,
        })
        .collect())
}
