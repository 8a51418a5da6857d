//! A Shopify-shaped GraphQL endpoint that enforces the contract stocksync relies on:
//! access token, cost-based throttling (`THROTTLED` with `throttleStatus`), forced 429s,
//! `inventorySetQuantities` with name `available`, a `referenceDocumentUri`, and
//! `changeFromQuantity` compare-and-set (a mismatch fails the whole mutation with
//! `CHANGE_FROM_QUANTITY_STALE`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

const TOKEN: &str = "shpat_test";
const MAX_COST: f64 = 30.0;
const RESTORE_RATE: f64 = 5.0;

struct Bucket {
    available: f64,
    at: Instant,
}

/// Counters of what the endpoint saw.
#[derive(Default)]
pub struct Seen {
    pub throttled: AtomicU32,
    pub stale: AtomicU32,
    pub too_many: AtomicU32,
    pub contract_violations: AtomicU32,
    pub sets: AtomicU32,
}

struct Shop {
    quantities: Mutex<BTreeMap<String, i64>>,
    bucket: Mutex<Bucket>,
    answer_429: AtomicU32,
    seen: Seen,
    references: Mutex<Vec<String>>,
}

pub struct FakeShopify {
    pub addr: SocketAddr,
    shop: Arc<Shop>,
    server: tokio::task::JoinHandle<()>,
}

fn cost_extensions(cost: f64, available: f64) -> Value {
    json!({"cost": {"requestedQueryCost": cost, "actualQueryCost": cost,
        "throttleStatus": {"maximumAvailable": MAX_COST, "currentlyAvailable": available, "restoreRate": RESTORE_RATE}}})
}

fn violation(shop: &Shop, message: String) -> Value {
    shop.seen.contract_violations.fetch_add(1, Ordering::SeqCst);
    json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": null,
        "userErrors": [{"code": "INVALID", "field": ["input"], "message": message}]}})
}

fn set_quantities(shop: &Shop, input: &Value, location: &str) -> Value {
    if input["name"] != "available" {
        return violation(
            shop,
            format!("name must be available, got {}", input["name"]),
        );
    }
    let Some(uri) = input["referenceDocumentUri"]
        .as_str()
        .filter(|u| u.contains("://"))
    else {
        return violation(shop, "referenceDocumentUri missing".into());
    };
    let Some(items) = input["quantities"].as_array().filter(|q| !q.is_empty()) else {
        return violation(shop, "quantities missing".into());
    };
    let mut quantities = shop.quantities.lock().unwrap();
    let mut stale = Vec::new();
    for (i, q) in items.iter().enumerate() {
        let (Some(item), Some(_)) = (q["inventoryItemId"].as_str(), q["quantity"].as_i64()) else {
            return violation(shop, format!("quantities[{i}] incomplete"));
        };
        if q["locationId"] != location {
            return violation(shop, format!("unknown location {}", q["locationId"]));
        }
        if q.get("changeFromQuantity").is_none() {
            return violation(shop, "changeFromQuantity is required".into());
        }
        let current = quantities.get(item).copied().unwrap_or(0);
        if q["changeFromQuantity"].as_i64() != Some(current) {
            stale.push(json!({"code": "CHANGE_FROM_QUANTITY_STALE",
                "field": ["input", "quantities", i.to_string(), "changeFromQuantity"],
                "message": format!("The quantity is {current}, not {}", q["changeFromQuantity"])}));
        }
    }
    if !stale.is_empty() {
        shop.seen.stale.fetch_add(1, Ordering::SeqCst);
        return json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": null, "userErrors": stale}});
    }
    for q in items {
        quantities.insert(
            q["inventoryItemId"].as_str().unwrap().into(),
            q["quantity"].as_i64().unwrap(),
        );
    }
    shop.seen.sets.fetch_add(1, Ordering::SeqCst);
    shop.references.lock().unwrap().push(uri.into());
    json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": {"reason": input["reason"],
        "referenceDocumentUri": uri}, "userErrors": []}})
}

fn read_levels(shop: &Shop, vars: &Value) -> Value {
    let quantities = shop.quantities.lock().unwrap();
    let nodes: Vec<Value> = vars["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str())
        .map(|id| {
            json!({"id": id, "inventoryLevel": {"quantities": [
                {"name": "available", "quantity": quantities.get(id).copied().unwrap_or(0)}]}})
        })
        .collect();
    json!({"nodes": nodes})
}

async fn graphql(
    State(shop): State<Arc<Shop>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    if shop
        .answer_429
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        shop.seen.too_many.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    let query = body["query"].as_str().unwrap_or_default();
    let is_set = query.contains("inventorySetQuantities(");
    let cost = if is_set { 10.0 } else { 2.0 };
    let available = {
        let mut b = shop.bucket.lock().unwrap();
        b.available = (b.available + b.at.elapsed().as_secs_f64() * RESTORE_RATE).min(MAX_COST);
        b.at = Instant::now();
        if b.available < cost {
            shop.seen.throttled.fetch_add(1, Ordering::SeqCst);
            return Json(
                json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                "extensions": cost_extensions(cost, b.available)}),
            )
            .into_response();
        }
        b.available -= cost;
        b.available
    };
    let location = "gid://shopify/Location/1";
    let data = if is_set {
        set_quantities(&shop, &body["variables"]["input"], location)
    } else {
        if body["variables"]["location"] != location {
            shop.seen.contract_violations.fetch_add(1, Ordering::SeqCst);
        }
        read_levels(&shop, &body["variables"])
    };
    Json(json!({"data": data, "extensions": cost_extensions(cost, available)})).into_response()
}

impl FakeShopify {
    /// Starts with `quantities` (inventory item GID -> available), an empty cost bucket and
    /// `answer_429` forced 429s.
    pub async fn start(quantities: &[(&str, i64)], answer_429: u32) -> FakeShopify {
        FakeShopify::start_with(quantities, answer_429, None).await
    }

    /// The same shop behind HTTPS, presenting the certificate in `tls` (PEM files).
    #[allow(dead_code)] // used by tls_e2e, not by every suite including this module
    pub async fn start_tls(
        quantities: &[(&str, i64)],
        tls: &stocksync_runtime::server::HttpTlsConfig,
    ) -> FakeShopify {
        FakeShopify::start_with(quantities, 0, Some(tls)).await
    }

    async fn start_with(
        quantities: &[(&str, i64)],
        answer_429: u32,
        tls: Option<&stocksync_runtime::server::HttpTlsConfig>,
    ) -> FakeShopify {
        let shop = Arc::new(Shop {
            quantities: Mutex::new(
                quantities
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            ),
            bucket: Mutex::new(Bucket {
                available: 0.0,
                at: Instant::now(),
            }),
            answer_429: AtomicU32::new(answer_429),
            seen: Seen::default(),
            references: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/admin/api/graphql.json", post(graphql))
            .with_state(shop.clone());
        let server = match tls {
            None => tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            }),
            Some(tls) => {
                let server =
                    stocksync_runtime::server::Server::new(listener, Some(tls), Default::default())
                        .expect("test certificate loads");
                tokio::spawn(async move {
                    let (_keep, stop) = tokio::sync::watch::channel(false);
                    server.serve(app, stop).await.unwrap();
                })
            }
        };
        FakeShopify { addr, shop, server }
    }

    pub fn token() -> &'static str {
        TOKEN
    }

    pub fn quantity(&self, item: &str) -> Option<i64> {
        self.shop.quantities.lock().unwrap().get(item).copied()
    }

    /// Empties the cost bucket again (it refills while a slow stack starts).
    #[allow(dead_code)] // used by channels_e2e, not by every suite including this module
    pub fn drain_bucket(&self) {
        let mut b = self.shop.bucket.lock().unwrap();
        b.available = 0.0;
        b.at = Instant::now();
    }

    /// A change made on Shopify's side (e.g. by a person in the admin).
    pub fn set_quantity(&self, item: &str, q: i64) {
        self.shop.quantities.lock().unwrap().insert(item.into(), q);
    }

    pub fn seen(&self) -> &Seen {
        &self.shop.seen
    }

    pub fn references(&self) -> Vec<String> {
        self.shop.references.lock().unwrap().clone()
    }

    pub fn stop(self) {
        self.server.abort();
    }
}
