//! From the stock projection to the number each channel should show, for exactly the
//! (channel, SKU) pairs a set of stock changes can affect.
//!
//! Invariant: a plain SKU is recomputed when any eligible location of it changed; a bundle
//! when any of its components did; its number is what the eligible warehouses can build,
//! each from its own stock (`crate::buildable`). Reads only stock rows, through
//! `AvailableRows`: the SQLite ledger's `stock` table, or the rows the PostgreSQL publisher
//! loaded for a pass, with the same code.

use std::collections::{BTreeMap, BTreeSet};

use super::ChannelMode;
use rusqlite::Connection;

use super::store::NewValue;
use super::Channel;
use crate::buildable;
use crate::stock::{AvailableRows, StockKey};

/// Which stock changed: everything (start-up, lagged receiver, mode switch), some keys, or
/// any location of some SKUs (the PostgreSQL outbox names SKUs only).
#[derive(Debug, Clone)]
pub enum Dirty {
    All,
    Keys(BTreeSet<StockKey>),
    Skus(BTreeSet<String>),
}

/// Plain SKUs and bundle SKUs of `channel` to recompute for `dirty`.
fn affected<S: AvailableRows + ?Sized>(
    conn: &S,
    channel: &Channel,
    dirty: &Dirty,
) -> Result<(BTreeSet<String>, BTreeSet<String>), S::Error> {
    let touched: BTreeSet<String> = match dirty {
        Dirty::All => {
            let mut all = conn.skus()?;
            all.extend(channel.catalog_skus.iter().cloned());
            all
        }
        Dirty::Keys(keys) => keys
            .iter()
            .filter(|k| channel.eligible.touches(&k.warehouse))
            .map(|k| k.sku.clone())
            .collect(),
        Dirty::Skus(skus) => skus.clone(),
    };
    let plain = touched
        .iter()
        .filter(|s| channel.sells(s))
        .cloned()
        .collect();
    let bundles = match dirty {
        Dirty::All => channel.bundles.keys().cloned().collect(),
        Dirty::Keys(_) | Dirty::Skus(_) => touched
            .iter()
            .filter_map(|s| channel.bundles_of.get(s))
            .flatten()
            .cloned()
            .collect(),
    };
    Ok((plain, bundles))
}

/// Sum of `available` over the channel's eligible locations of `sku`.
fn pooled<S: AvailableRows + ?Sized>(
    conn: &S,
    channel: &Channel,
    sku: &str,
) -> Result<i64, S::Error> {
    let mut sum = 0i64;
    conn.for_each_available(sku, &mut |warehouse, bin, available| {
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
    values_from(conn, channel, mode, dirty)
}

/// `values` from any store's stock rows.
pub fn values_from<S: AvailableRows + ?Sized>(
    conn: &S,
    channel: &Channel,
    mode: ChannelMode,
    dirty: &Dirty,
) -> Result<Vec<NewValue>, S::Error> {
    if mode == ChannelMode::Frozen {
        return Ok(Vec::new());
    }
    let (plain, bundles) = affected(conn, channel, dirty)?;
    let mut cache: BTreeMap<String, u64> = BTreeMap::new();
    let mut sellable = |sku: &str| -> Result<u64, S::Error> {
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
