//! `[channels]` in the collector's config: every sales channel, the rules that shape its
//! sellable number, and which push targets it has (each target's own table, with its
//! `build()`, is beside the target: `webhook`, `shopify`; MQTT uses the collector's broker).

use serde::{Deserialize, Serialize};

use super::shopify::ShopifyConfig;
use super::webhook::WebhookConfig;

/// Every sales channel stocksync publishes sellable numbers to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Under load (changes arriving while a recompute runs), changes are folded into one
    /// recompute for up to this long, so one hot SKU produces at most one published change
    /// per window; when idle a change is recomputed at once. A channel may set its own.
    pub coalesce_ms: u64,
    /// One `[[channels.channel]]` table per channel.
    pub channel: Vec<ChannelConfig>,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            coalesce_ms: 10,
            channel: Vec::new(),
        }
    }
}

/// One sales channel: which stock it may sell, how the number is shaped, where it goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Channel name; also the `source` of its entries in `catalog.aliases`.
    pub name: String,
    /// Warehouses (`ams`) or bins (`ams/A-01`) whose available stock it may sell; `*` = all.
    pub locations: Vec<String>,
    /// Units held back from the pooled stock.
    #[serde(default)]
    pub safety_units: u64,
    /// Percent of the pooled stock held back (rounded up), on top of `safety_units`.
    #[serde(default)]
    pub safety_percent: u8,
    /// Percent of what is left after the buffers that this channel gets (rounded down).
    #[serde(default = "default_share_percent")]
    pub share_percent: u8,
    /// Most units ever listed.
    #[serde(default)]
    pub max_listed: Option<u64>,
    /// Show 0 when the number is at or below this.
    #[serde(default)]
    pub zero_at_or_below: u64,
    /// Canonical SKUs it sells; empty = every non-bundle SKU.
    #[serde(default)]
    pub skus: Vec<String>,
    /// Bundle SKUs (from `catalog.bundles`) it sells.
    #[serde(default)]
    pub bundles: Vec<String>,
    /// `live`, `frozen` (stop publishing) or `zero` (publish 0 for everything).
    #[serde(default)]
    pub mode: ChannelMode,
    /// Retained JSON per SKU on `stocksync/v1/channels/<channel>/sellable/<sku>`.
    #[serde(default)]
    pub mqtt: bool,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub shopify: Option<ShopifyConfig>,
    /// This channel's own `[channels] coalesce_ms`.
    #[serde(default)]
    pub coalesce_ms: Option<u64>,
}

fn default_share_percent() -> u8 {
    100
}

/// The rollback switch of a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMode {
    #[default]
    Live,
    Frozen,
    Zero,
}
