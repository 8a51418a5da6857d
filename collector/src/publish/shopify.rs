//! Shopify-shaped target: `inventorySetQuantities` GraphQL mutations (name `available`, one
//! quantity per inventory item at the configured location, with `changeFromQuantity`
//! compare-and-set and a `referenceDocumentUri` naming the channel and cursor).
//!
//! The channel's aliases (`catalog.aliases` with `source` = channel name) give each SKU's
//! inventory item GID. The quantity Shopify holds is remembered in `channel_remote`; an
//! unknown one is read first, and a `CHANGE_FROM_QUANTITY_STALE` error (someone else moved
//! it) re-reads and retries. Cost-based throttling is honoured from each response's
//! `extensions.cost.throttleStatus`: a request waits until its cost is restored, and a
//! `THROTTLED` error or HTTP 429 waits and retries.
//!
//! Invariant: a set is only ever sent as "from what we last saw to the new value", so a
//! concurrent change on Shopify's side is never silently overwritten unseen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{self, Reply};
use super::limit::PushLimits;
use super::log::ChangeLog;
use super::store::Published;
use super::target::{Failure, Target};
use super::{Channel, PublishError};

/// A Shopify-shaped GraphQL Admin endpoint (`inventorySetQuantities`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyConfig {
    /// `https://` (or `http://`) GraphQL endpoint.
    pub url: String,
    /// PEM CA file to trust instead of the public web roots (a private CA or a test shop).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Location GID the channel's sellable number is set at.
    pub location_id: String,
    /// File holding the `X-Shopify-Access-Token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub limits: PushLimits,
}

const SET: &str = "mutation inventorySet($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) { inventoryAdjustmentGroup { reason referenceDocumentUri } userErrors { code field message } } }";
const READ: &str = "query levels($ids: [ID!]!, $location: ID!) { nodes(ids: $ids) { ... on InventoryItem { id inventoryLevel(locationId: $location) { quantities(names: [\"available\"]) { name quantity } } } } }";
const ITEM_PREFIX: &str = "gid://shopify/InventoryItem/";
/// Retries of throttled or stale requests within one delivery.
const MAX_TRIES: u32 = 6;

/// Shopify's cost bucket as last reported.
#[derive(Debug)]
struct CostBucket {
    available: f64,
    restore_rate: f64,
    maximum: f64,
    at: Instant,
}

impl CostBucket {
    /// How long to wait before spending `cost`.
    fn wait_for(&self, cost: f64) -> Duration {
        let now = self.available + self.at.elapsed().as_secs_f64() * self.restore_rate;
        let now = now.min(self.maximum);
        if now >= cost || self.restore_rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((cost - now) / self.restore_rate)
        }
    }

    fn update(&mut self, extensions: &Value) {
        let t = &extensions["cost"]["throttleStatus"];
        if let (Some(a), Some(r), Some(m)) = (
            t["currentlyAvailable"].as_f64(),
            t["restoreRate"].as_f64(),
            t["maximumAvailable"].as_f64(),
        ) {
            *self = CostBucket {
                available: a,
                restore_rate: r,
                maximum: m,
                at: Instant::now(),
            };
        }
    }
}

/// Sets a channel's values as Shopify `available` quantities, remembering them in `log`.
pub struct ShopifyTarget<L> {
    url: String,
    location: String,
    token_file: Option<PathBuf>,
    token: Option<String>,
    limits: PushLimits,
    agent: ureq::Agent,
    log: L,
    cost: CostBucket,
    /// Cost of the last request, the estimate for the next.
    last_cost: f64,
}

impl ShopifyConfig {
    /// The running target of `channel`, remembering Shopify's quantities in `log` (either
    /// store).
    pub fn build<L: ChangeLog>(
        &self,
        channel: &str,
        log: L,
    ) -> Result<ShopifyTarget<L>, PublishError> {
        let config = self;
        let config_err = |detail: String| PublishError::Config {
            channel: channel.into(),
            detail: format!("shopify {detail}"),
        };
        http::check_url(&config.url).map_err(config_err)?;
        let agent = http::agent(
            Duration::from_millis(config.limits.timeout_ms),
            config.ca_file.as_deref(),
        )
        .map_err(config_err)?;
        Ok(ShopifyTarget {
            url: config.url.clone(),
            location: config.location_id.clone(),
            token_file: config.token_file.clone(),
            token: None,
            limits: config.limits.clone(),
            agent,
            log,
            cost: CostBucket {
                available: 50.0,
                restore_rate: 50.0,
                maximum: 50.0,
                at: Instant::now(),
            },
            last_cost: 10.0,
        })
    }
}

impl<L: ChangeLog> ShopifyTarget<L> {
    /// One GraphQL call, waiting out the cost bucket, throttles and 429s. Returns `data`.
    async fn graphql(&mut self, query: &str, variables: Value) -> Result<Value, Failure> {
        if self.token.is_none() {
            if let Some(path) = &self.token_file {
                let t = std::fs::read_to_string(path)
                    .map_err(|e| Failure::new(format!("token file {}: {e}", path.display())))?;
                self.token = Some(t.trim().to_string());
            }
        }
        let body =
            serde_json::to_vec(&json!({"query": query, "variables": variables})).expect("json");
        for _ in 0..MAX_TRIES {
            tokio::time::sleep(self.cost.wait_for(self.last_cost)).await;
            let mut headers = Vec::new();
            if let Some(t) = &self.token {
                headers.push(("x-shopify-access-token", t.clone()));
            }
            let Reply {
                status,
                retry_after,
                body: text,
            } = http::post(&self.agent, &self.url, headers, body.clone())
                .await
                .map_err(Failure::new)?;
            if status == 429 {
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
                continue;
            }
            if status == 401 || status == 403 {
                self.token = None;
                return Err(Failure::new(format!("shopify answered {status}: {text}")));
            }
            let reply: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::new(format!("shopify answered {status} with invalid JSON: {e}"))
            })?;
            self.cost.update(&reply["extensions"]);
            if let Some(c) = reply["extensions"]["cost"]["requestedQueryCost"].as_f64() {
                self.last_cost = c;
            }
            let throttled = reply["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["extensions"]["code"] == "THROTTLED"));
            if throttled {
                continue;
            }
            if status != 200 || reply.get("errors").is_some_and(|e| !e.is_null()) {
                return Err(Failure::new(format!("shopify answered {status}: {text}")));
            }
            return Ok(reply["data"].clone());
        }
        Err(Failure::new(format!(
            "shopify still throttling after {MAX_TRIES} tries"
        )))
    }

    /// Reads the `available` quantity of `items` at our location.
    async fn read(&mut self, items: &[&str]) -> Result<BTreeMap<String, i64>, Failure> {
        let data = self
            .graphql(READ, json!({"ids": items, "location": self.location}))
            .await?;
        let mut out = BTreeMap::new();
        for node in data["nodes"].as_array().into_iter().flatten() {
            let (Some(id), Some(qs)) = (
                node["id"].as_str(),
                node["inventoryLevel"]["quantities"].as_array(),
            ) else {
                continue;
            };
            if let Some(q) = qs.iter().find(|q| q["name"] == "available") {
                out.insert(id.to_string(), q["quantity"].as_i64().unwrap_or(0));
            }
        }
        Ok(out)
    }

    async fn remember(
        &self,
        channel: &str,
        quantities: BTreeMap<String, i64>,
    ) -> Result<(), Failure> {
        self.log
            .set_remote_quantities(channel, "shopify", quantities)
            .await
            .map_err(|e| Failure::new(e.to_string()))
    }

    async fn known(
        &self,
        channel: &str,
        items: Vec<String>,
    ) -> Result<BTreeMap<String, i64>, Failure> {
        self.log
            .remote_quantities(channel, "shopify", items)
            .await
            .map_err(|e| Failure::new(e.to_string()))
    }

    /// Sends one set; `Ok(false)` when Shopify reports a stale `changeFromQuantity`.
    async fn set(
        &mut self,
        channel: &str,
        wanted: &BTreeMap<String, i64>,
        from: &BTreeMap<String, i64>,
        cursor: i64,
    ) -> Result<bool, Failure> {
        let quantities: Vec<Value> = wanted
            .iter()
            .filter(|(item, q)| from.get(*item) != Some(q))
            .map(|(item, q)| {
                json!({"inventoryItemId": item, "locationId": self.location, "quantity": q,
                       "changeFromQuantity": from.get(item)})
            })
            .collect();
        if quantities.is_empty() {
            return Ok(true);
        }
        let input = json!({"input": {
            "name": "available",
            "reason": "correction",
            "referenceDocumentUri": format!("stocksync://channels/{channel}/changes/{cursor}"),
            "quantities": quantities,
        }});
        let data = self.graphql(SET, input).await?;
        let errors = data["inventorySetQuantities"]["userErrors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if errors.is_empty() {
            return Ok(true);
        }
        if errors
            .iter()
            .all(|e| e["code"] == "CHANGE_FROM_QUANTITY_STALE")
        {
            return Ok(false);
        }
        Err(Failure::new(format!(
            "inventorySetQuantities refused: {}",
            Value::Array(errors)
        )))
    }
}

impl<L: ChangeLog> Target for ShopifyTarget<L> {
    const NAME: &'static str = "shopify";

    fn limits(&self) -> PushLimits {
        self.limits.clone()
    }

    async fn deliver(&mut self, channel: &Channel, items: &[Published]) -> Result<(), Failure> {
        let mut wanted = BTreeMap::new();
        for i in items {
            if i.sku.starts_with(ITEM_PREFIX) {
                wanted.insert(i.sku.clone(), i.sellable as i64);
            } else {
                // One unmapped SKU must not hold back the others: queue it and go on.
                let detail = format!(
                    "SKU `{}` has no Shopify inventory item id (alias with source `{}` and external `{ITEM_PREFIX}...`)",
                    i.canonical_sku, channel.name
                );
                let _ = self
                    .log
                    .record_error(&channel.name, "shopify", &detail)
                    .await;
            }
        }
        let cursor = items.iter().map(|i| i.cursor).max().unwrap_or(0);
        let ids: Vec<String> = wanted.keys().cloned().collect();
        let mut from = self.known(&channel.name, ids.clone()).await?;
        for _ in 0..MAX_TRIES {
            let unknown: Vec<&str> = ids
                .iter()
                .filter(|i| !from.contains_key(*i))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                let read = self.read(&unknown).await?;
                self.remember(&channel.name, read.clone()).await?;
                from.extend(read);
            }
            if self.set(&channel.name, &wanted, &from, cursor).await? {
                return self.remember(&channel.name, wanted).await;
            }
            // Stale: someone changed Shopify's number; read it again and retry.
            tracing::info!(channel = %channel.name, "shopify quantities stale, re-reading");
            from.clear();
        }
        Err(Failure::new(format!(
            "shopify quantities still stale after {MAX_TRIES} tries"
        )))
    }
}
