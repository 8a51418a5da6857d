//! Orders end to end, through real HTTP, a real broker, real agents and SQLite files: an
//! order is routed, held all-or-nothing (bundles' components summed with other lines),
//! never oversold under concurrent checkouts, explained, retried safely, and followed
//! through shipment, cancellation, return, expiry and re-routing.
//!
//! Every case runs twice: on one SQLite collector (`<case>::sqlite`) and on
//! two collector worker processes sharing one real PostgreSQL (`<case>::postgres`, which
//! prints a notice and passes when PostgreSQL is not installed, see `support::postgres`),
//! with the same requests and the same expected answers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
use support::*;

const WAIT: Duration = Duration::from_secs(15);

const CATALOG: &str = r#"
[[catalog.skus]]
id = "TEE"
[[catalog.skus]]
id = "MUG"
[[catalog.skus]]
id = "LID"
[[catalog.skus]]
id = "HOT"
[[catalog.bundles]]
sku = "GIFT"
components = [{ sku = "MUG", quantity = 1 }, { sku = "LID", quantity = 1 }]
"#;

/// A collector (or two workers), a broker and one agent per warehouse.
struct Stack {
    /// The collector's URL (on PostgreSQL: the first worker's).
    c: String,
    /// Every URL that takes orders (on PostgreSQL: each worker's).
    urls: Vec<String>,
    agents: BTreeMap<String, (Agent, String)>,
    collectors: Collectors,
    _broker: Broker,
    _dir: TempDir,
}

impl Stack {
    /// `None` when the backend is PostgreSQL and it is not installed (the notice is printed).
    async fn start(backend: Backend, warehouses: &[&str], orders: &str) -> Option<Stack> {
        let dir = TempDir::new("orders");
        let broker = Broker::start(&dir);
        let collectors = CollectorSpec::new(backend, &dir, broker.port)
            .extra(&format!(
                "{CATALOG}\n[[channels.channel]]\nname = \"shop\"\nlocations = [\"*\"]\n{orders}"
            ))
            .warehouses(warehouses)
            .start()
            .await?;
        let mut agents = BTreeMap::new();
        for wh in warehouses {
            let agent = Agent::start(agent_config(&dir, &format!("{wh}-1"), wh, broker.port, 0))
                .await
                .expect("agent starts");
            let url = format!("http://{}/v1/movements", agent.http_addr);
            agents.insert(wh.to_string(), (agent, url));
        }
        Some(Stack {
            c: collectors.url().to_string(),
            urls: collectors.urls.clone(),
            agents,
            collectors,
            _broker: broker,
            _dir: dir,
        })
    }

    /// Posts a movement at `wh` and waits until the collector has counted it (every
    /// movement here changes a stock row of its SKU at `wh`).
    async fn movement(&self, wh: &str, body: Value) {
        let sku = body["sku"].as_str().unwrap().to_string();
        let before = self.rows(&sku, wh).await;
        let r = post(&self.agents[wh].1, &body.to_string(), &[]).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        wait_for("movement counted", WAIT, || async {
            self.rows(&sku, wh).await != before
        })
        .await;
    }

    /// The stock rows of `sku` at `wh`.
    async fn rows(&self, sku: &str, wh: &str) -> Vec<Value> {
        let s = get(&format!("{}/v1/stock/{sku}", self.c)).await.body;
        let rows = s["locations"].as_array().cloned().unwrap_or_default();
        rows.into_iter().filter(|r| r["warehouse"] == wh).collect()
    }

    async fn receive(&self, wh: &str, sku: &str, n: u64) {
        self.movement(
            wh,
            json!({"sku": sku, "kind": "receipt", "quantity": n, "bin": "A-01"}),
        )
        .await;
    }

    async fn order(&self, body: Value) -> Reply {
        post(&format!("{}/v1/orders", self.c), &body.to_string(), &[]).await
    }

    async fn show(&self, id: &str) -> Value {
        get(&format!("{}/v1/orders/{id}", self.c)).await.body
    }

    /// (available, reserved) of `sku` at `wh`.
    async fn at(&self, sku: &str, wh: &str) -> (i64, i64) {
        self.rows(sku, wh).await.iter().fold((0, 0), |(a, r), row| {
            (
                a + row["available"].as_i64().unwrap_or(0),
                r + row["reserved"].as_i64().unwrap_or(0),
            )
        })
    }

    async fn stop(self) {
        for (_, (agent, _)) in self.agents {
            agent.stop().await.unwrap();
        }
        self.collectors.stop().await;
    }
}

fn order(id: &str, lines: Value) -> Value {
    json!({"id": id, "channel": "shop", "lines": lines, "ship_to": {"country": "NL", "postcode": "1011"}})
}

/// Warehouses that serve each line, in line order.
fn served(reply: &Value) -> Vec<Vec<(String, u64)>> {
    reply["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["allocations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["warehouse"].as_str().unwrap().to_string(),
                        a["quantity"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn wh(name: &str, n: u64) -> Vec<(String, u64)> {
    vec![(name.to_string(), n)]
}

on_both_backends!(an_order_is_held_explained_replayed_and_checked);
async fn an_order_is_held_explained_replayed_and_checked(backend: Backend) {
    let Some(s) = Stack::start(backend, &["ams"], "").await else {
        return;
    };
    s.receive("ams", "TEE", 10).await;
    s.receive("ams", "MUG", 5).await;

    let body = order(
        "SO-1",
        json!([{"sku": "TEE", "quantity": 3}, {"sku": "MUG", "quantity": 1}]),
    );
    let placed = s.order(body.clone()).await;
    assert_eq!(placed.status, 201, "{:?}", placed.body);
    assert_eq!(served(&placed.body), vec![wh("ams", 3), wh("ams", 1)]);
    let ids = placed.body["lines"][0]["allocations"][0]["reservations"].clone();
    assert_eq!(ids.as_array().unwrap().len(), 1, "{ids}");
    assert_eq!(placed.body["explanation"]["ranking"][0]["warehouse"], "ams");
    assert_eq!(s.at("TEE", "ams").await, (7, 3));

    // The same order again: the first answer, nothing held twice.
    let again = s.order(body.clone()).await;
    assert_eq!((again.status, &again.body), (200, &placed.body));
    assert_eq!(s.at("TEE", "ams").await, (7, 3));
    // One new order sent eight times at once (to both workers on PostgreSQL): placed once,
    // every other answer the first one.
    let dup = order("SO-D", json!([{"sku": "TEE", "quantity": 2}]));
    let sends: Vec<_> = (0..8)
        .map(|i| {
            let (url, body) = (
                format!("{}/v1/orders", s.urls[i % s.urls.len()]),
                dup.to_string(),
            );
            tokio::spawn(async move { post(&url, &body, &[]).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in sends {
        answers.push(t.await.unwrap());
    }
    let created: Vec<&Reply> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().all(|r| r.body == created[0].body),
        "one answer for all"
    );
    assert_eq!(s.at("TEE", "ams").await, (5, 5));
    let c = post(&format!("{}/v1/orders/SO-D/cancel", s.c), "", &[]).await;
    assert_eq!(
        (c.status, c.body["state"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(s.at("TEE", "ams").await, (7, 3));
    // The same id with another quantity: 409 naming the field.
    let mut other = body.clone();
    other["lines"][0]["quantity"] = json!(4);
    let clash = s.order(other).await;
    assert_eq!(
        (clash.status, clash.body["field"].clone()),
        (409, json!("$.lines[0].quantity"))
    );
    // The same Idempotency-Key under another id: 409 naming the id.
    let keyed = order("SO-2", json!([{"sku": "TEE", "quantity": 1}]));
    let url = format!("{}/v1/orders", s.c);
    assert_eq!(
        post(&url, &keyed.to_string(), &[("Idempotency-Key", "k-1")])
            .await
            .status,
        201
    );
    let mut renamed = keyed.clone();
    renamed["id"] = json!("SO-2b");
    let r = post(&url, &renamed.to_string(), &[("Idempotency-Key", "k-1")]).await;
    assert_eq!((r.status, r.body["field"].clone()), (409, json!("$.id")));
    assert_eq!(s.at("TEE", "ams").await, (6, 4));

    // Not enough: 409 with the shortfall per line, nothing held.
    let short = s
        .order(order(
            "SO-3",
            json!([{"sku": "TEE", "quantity": 2}, {"sku": "MUG", "quantity": 9}]),
        ))
        .await;
    assert_eq!(short.status, 409, "{:?}", short.body);
    assert_eq!(short.body["shortfall"][0]["line"], 1);
    assert_eq!(short.body["shortfall"][0]["short"], 5);
    assert_eq!(s.at("TEE", "ams").await, (6, 4));
    assert_eq!(s.show("SO-3").await["error"], "not found");

    // Bad input: 422 with the JSON path.
    let lines3 = |q: Value| {
        order(
            "SO-9",
            json!([{"sku": "TEE", "quantity": 1}, {"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": q}]),
        )
    };
    for (bad, field) in [
        (lines3(json!(0)), "$.lines[2].quantity"),
        (lines3(json!(-1)), "$.lines[2].quantity"),
        (lines3(json!(1.5)), "$.lines[2].quantity"),
        (lines3(json!(10_000_000)), "$.lines[2].quantity"),
        (
            order("SO-9", json!([{"sku": "NOPE", "quantity": 1}])),
            "$.lines[0].sku",
        ),
        (
            json!({"id": "SO-9", "channel": "fax", "lines": [{"sku": "TEE", "quantity": 1}], "ship_to": {"country": "NL"}}),
            "$.channel",
        ),
        (
            json!({"id": "SO-9", "channel": "shop", "lines": [{"sku": "TEE", "quantity": 1}], "ship_to": {"country": "NL"}, "ttl_secs": u64::MAX}),
            "$.ttl_secs",
        ),
        (
            json!({"id": "SO-9", "channel": "shop", "lines": [], "ship_to": {"country": "NL"}}),
            "$.lines",
        ),
        (
            json!({"id": "SO-9", "channel": "shop", "lines": [{"sku": "TEE", "quantity": 1}]}),
            "$",
        ),
        (
            json!({"id": "SO-9", "channel": "shop", "lines": [{"sku": "TEE", "quantity": 1}], "ship_to": {"country": "NL", "lat": 91.0, "lon": 0.0}}),
            "$.ship_to.lat",
        ),
        (
            json!({"id": "SO-9", "channel": "shop", "lines": [{"sku": "TEE", "quantity": 1}], "ship_to": {"country": "NL"}, "requested_at": "yesterday"}),
            "$.requested_at",
        ),
    ] {
        let r = s.order(bad.clone()).await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (422, Some(field)),
            "{bad} -> {:?}",
            r.body
        );
        assert_eq!(r.body["error"], "invalid request");
    }
    assert_eq!(s.at("TEE", "ams").await, (6, 4));

    // GET one (with history) and lists by state and channel.
    let shown = s.show("SO-1").await;
    assert_eq!(shown["state"], "reserved");
    assert_eq!(shown["history"][0]["event"], "placed");
    assert_eq!(
        shown["history"][0]["detail"]["explanation"], placed.body["explanation"],
        "the placing decision is in the history"
    );
    let listed = get(&format!("{}/v1/orders?state=reserved&channel=shop", s.c))
        .await
        .body;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let cancelled = get(&format!("{}/v1/orders?state=cancelled", s.c))
        .await
        .body;
    let ids: Vec<&Value> = cancelled
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&json!("SO-D")]);
    let none = get(&format!("{}/v1/orders?state=backorder", s.c))
        .await
        .body;
    assert_eq!(none, json!([]));
    s.stop().await;
}

on_both_backends!(sixty_concurrent_checkouts_for_forty_units_sell_exactly_forty);
async fn sixty_concurrent_checkouts_for_forty_units_sell_exactly_forty(backend: Backend) {
    let Some(s) = Stack::start(backend, &["ams", "ber"], "").await else {
        return;
    };
    s.receive("ams", "HOT", 25).await;
    s.receive("ber", "HOT", 15).await;
    // While the checkouts race, what each warehouse can sell is read again and again.
    let stock_url = format!("{}/v1/stock/HOT", s.c);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut lowest = i64::MAX;
        while !*stop_rx.borrow() {
            let rows = get(&stock_url).await.body["locations"].clone();
            let mut per: BTreeMap<String, i64> = BTreeMap::new();
            for r in rows.as_array().into_iter().flatten() {
                let w = r["warehouse"].as_str().unwrap_or_default().to_string();
                *per.entry(w).or_default() += r["available"].as_i64().unwrap_or(0);
            }
            lowest = per.values().copied().fold(lowest, i64::min);
        }
        lowest
    });
    // On PostgreSQL the orders go to both workers at once.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (url, body) = (
                format!("{}/v1/orders", s.urls[i % s.urls.len()]),
                order(&format!("RACE-{i}"), json!([{"sku": "HOT", "quantity": 1}])).to_string(),
            );
            tokio::spawn(async move { post(&url, &body, &[]).await.status })
        })
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_default() += 1;
    }
    stop_tx.send(true).unwrap();
    let lowest = sampler.await.unwrap();
    assert!(lowest >= 0, "a warehouse showed {lowest} available");
    assert_eq!(by_status, BTreeMap::from([(201, 40), (409, 20)]));
    assert_eq!(s.at("HOT", "ams").await, (0, 25));
    assert_eq!(s.at("HOT", "ber").await, (0, 15));
    let stock = get(&format!("{}/v1/stock/HOT", s.c)).await.body;
    // The warehouse-level row carries the holds (available -held, reserved +held); what a
    // warehouse can sell is the sum over its rows, and that never went below zero.
    assert_eq!(
        (
            stock["total"]["available"].clone(),
            stock["total"]["reserved"].clone()
        ),
        (json!(0), json!(40))
    );
    s.stop().await;
}

on_both_backends!(crossing_multi_line_orders_all_finish_and_never_oversell);
async fn crossing_multi_line_orders_all_finish_and_never_oversell(backend: Backend) {
    let Some(s) = Stack::start(backend, &["ams"], "").await else {
        return;
    };
    s.receive("ams", "TEE", 10).await;
    s.receive("ams", "MUG", 10).await;
    // 30 two-line orders at once, half naming the SKUs the other way round (on PostgreSQL
    // through both workers): each needs both locks; exactly 10 fit.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let lines = match i % 2 {
                0 => json!([{"sku": "TEE", "quantity": 1}, {"sku": "MUG", "quantity": 1}]),
                _ => json!([{"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": 1}]),
            };
            let url = format!("{}/v1/orders", s.urls[i % s.urls.len()]);
            let body = order(&format!("X-{i}"), lines).to_string();
            tokio::spawn(async move { post(&url, &body, &[]).await.status })
        })
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_default() += 1;
    }
    assert_eq!(by_status, BTreeMap::from([(201, 10), (409, 20)]));
    assert_eq!(s.at("TEE", "ams").await, (0, 10));
    assert_eq!(s.at("MUG", "ams").await, (0, 10));
    s.stop().await;
}

on_both_backends!(multi_line_orders_are_all_or_nothing_with_bundle_components_summed);
async fn multi_line_orders_are_all_or_nothing_with_bundle_components_summed(backend: Backend) {
    let Some(s) = Stack::start(backend, &["ams"], "").await else {
        return;
    };
    s.receive("ams", "MUG", 3).await;
    s.receive("ams", "LID", 5).await;
    // Two gift sets (2 MUG, 2 LID) and two loose mugs need 4 MUG: there are 3.
    let greedy = s
        .order(order(
            "B-1",
            json!([{"sku": "GIFT", "quantity": 2}, {"sku": "MUG", "quantity": 2}]),
        ))
        .await;
    assert_eq!(greedy.status, 409, "{:?}", greedy.body);
    assert_eq!(s.at("MUG", "ams").await, (3, 0));
    assert_eq!(s.at("LID", "ams").await, (5, 0));
    // One loose mug fits: both lines held, the mug's hold is one reservation of 3.
    let fits = s
        .order(order(
            "B-2",
            json!([{"sku": "GIFT", "quantity": 2}, {"sku": "MUG", "quantity": 1}]),
        ))
        .await;
    assert_eq!(fits.status, 201, "{:?}", fits.body);
    assert_eq!(s.at("MUG", "ams").await, (0, 3));
    assert_eq!(s.at("LID", "ams").await, (3, 2));
    let mugs: Vec<&Value> = fits.body["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["sku"] == "MUG")
        .collect();
    assert_eq!((mugs.len(), mugs[0]["quantity"].clone()), (1, json!(3)));
    s.stop().await;
}

const ROUTING: &str = r#"
[orders]
[orders.warehouses.ams]
lat = 52.37
lon = 4.90
time_zone = "Europe/Amsterdam"
cutoff = "15:00"
[orders.warehouses.ber]
daily_capacity = 1
[orders.warehouses.chi]
lat = 41.88
lon = -87.63
time_zone = "America/Chicago"
cutoff = "15:00"
[orders.warehouses.sin]
lat = 1.35
lon = 103.82
time_zone = "Asia/Singapore"
cutoff = "14:00"
safety_stock_sku = { MUG = 8 }
[[orders.zones]]
warehouse = "ams"
country = "US"
cost = 9
[[orders.zones]]
warehouse = "chi"
country = "US"
cost = 1
[[orders.zones]]
warehouse = "sin"
country = "US"
cost = 12
[[orders.channel]]
name = "ranked"
rules = ["ranked"]
ranked = ["sin", "chi", "ams"]
[[orders.channel]]
name = "near"
rules = ["closest"]
[[orders.channel]]
name = "zoned"
rules = ["closest"]
distance = "zones"
[[orders.channel]]
name = "whole"
rules = ["minimise_splits", "ranked"]
ranked = ["ams", "chi", "sin"]
[[orders.channel]]
name = "perunit"
rules = ["ranked"]
ranked = ["ams", "chi", "sin"]
allocation = "per_unit"
[[orders.channel]]
name = "single"
rules = ["ranked"]
ranked = ["ams", "chi", "sin"]
allocation = "single"
[[orders.channel]]
name = "today"
rules = ["ship_today", "ranked"]
ranked = ["ams", "chi", "sin"]
[[orders.channel]]
name = "most"
rules = ["most_stock"]
[[orders.channel]]
name = "eu"
warehouses = ["ber"]
[[orders.channel]]
name = "backorder"
leftovers = "backorder"
[[orders.channel]]
name = "queue"
leftovers = "queue"
"#;

fn routed(id: &str, channel: &str, lines: Value, ship_to: Value) -> Value {
    json!({"id": id, "channel": channel, "lines": lines, "ship_to": ship_to})
}

on_both_backends!(each_routing_rule_decides_a_case);
async fn each_routing_rule_decides_a_case(backend: Backend) {
    let Some(s) = Stack::start(backend, &["ams", "ber", "chi", "sin"], ROUTING).await else {
        return;
    };
    for w in ["ams", "ber", "chi", "sin"] {
        s.receive(w, "TEE", 10).await;
    }
    s.receive("chi", "TEE", 10).await; // chi has the most TEE
    s.receive("ams", "MUG", 5).await;
    s.receive("chi", "MUG", 5).await;
    s.receive("sin", "MUG", 10).await; // 8 of them are safety stock for routing
    s.receive("chi", "LID", 5).await;
    let nl = json!({"country": "NL", "lat": 52.09, "lon": 5.12});
    let us = json!({"country": "US", "lat": 43.04, "lon": -87.91});
    let tee = json!([{"sku": "TEE", "quantity": 1}]);
    let both = json!([{"sku": "MUG", "quantity": 1}, {"sku": "LID", "quantity": 1}]);
    let first = |r: &Reply| {
        r.body["lines"][0]["allocations"][0]["warehouse"]
            .as_str()
            .map(String::from)
    };

    // ranked: the channel's list decides.
    let r = s
        .order(routed("R-1", "ranked", tee.clone(), nl.clone()))
        .await;
    assert_eq!(
        (r.status, first(&r).as_deref()),
        (201, Some("sin")),
        "{:?}",
        r.body
    );
    // closest (haversine): Utrecht ships from Amsterdam, Milwaukee from Chicago.
    let r = s
        .order(routed("C-1", "near", tee.clone(), nl.clone()))
        .await;
    assert_eq!(first(&r).as_deref(), Some("ams"), "{:?}", r.body);
    let r = s
        .order(routed("C-2", "near", tee.clone(), us.clone()))
        .await;
    assert_eq!(first(&r).as_deref(), Some("chi"));
    assert_eq!(r.body["explanation"]["ranking"][1]["behind_by"], "closest");
    // closest by zone table: no coordinates, the US zone of chi is cheapest.
    let r = s
        .order(routed(
            "Z-1",
            "zoned",
            tee.clone(),
            json!({"country": "US", "postcode": "10001"}),
        ))
        .await;
    assert_eq!(first(&r).as_deref(), Some("chi"), "{:?}", r.body);
    assert_eq!(r.body["explanation"]["ranking"][0]["distance"], 1);
    // minimise splits: ams is ranked first but only chi has both lines.
    let r = s
        .order(routed("M-1", "whole", both.clone(), nl.clone()))
        .await;
    assert_eq!(
        served(&r.body),
        vec![wh("chi", 1), wh("chi", 1)],
        "{:?}",
        r.body
    );
    // per_unit without minimise_splits: every unit from the best-ranked that has it.
    let r = s
        .order(routed("P-1", "perunit", both.clone(), nl.clone()))
        .await;
    assert_eq!(served(&r.body), vec![wh("ams", 1), wh("chi", 1)]);
    // single: one warehouse for the whole order, ranked first or not.
    let r = s
        .order(routed("S-1", "single", both.clone(), nl.clone()))
        .await;
    assert_eq!(served(&r.body), vec![wh("chi", 1), wh("chi", 1)]);
    // ...and an order that says allow_split = false on a per_unit channel.
    let mut no_split = routed("S-2", "perunit", both.clone(), nl.clone());
    no_split["allow_split"] = json!(false);
    assert_eq!(
        served(&s.order(no_split).await.body),
        vec![wh("chi", 1), wh("chi", 1)]
    );

    // ship today, across time zones: Friday 15:30 UTC is 16:30 in Amsterdam (past its
    // 15:00 cutoff), 09:30 in Chicago, 23:30 in Singapore. Chicago ships today.
    let mut late = routed("T-1", "today", tee.clone(), nl.clone());
    late["requested_at"] = json!("2026-11-27T15:30:00Z");
    let r = s.order(late).await;
    assert_eq!(first(&r).as_deref(), Some("chi"), "{:?}", r.body);
    let ranking = r.body["explanation"]["ranking"].as_array().unwrap().clone();
    let days: BTreeMap<&str, u64> = ranking
        .iter()
        .map(|w| {
            (
                w["warehouse"].as_str().unwrap(),
                w["days_to_ship"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        days,
        BTreeMap::from([("ams", 3), ("ber", 0), ("chi", 0), ("sin", 3)])
    );
    // Five and a half hours earlier Amsterdam is before its cutoff and ranked first.
    let mut early = routed("T-2", "today", tee.clone(), nl.clone());
    early["requested_at"] = json!("2026-11-27T10:00:00Z");
    assert_eq!(first(&s.order(early).await).as_deref(), Some("ams"));

    // most stock.
    let r = s
        .order(routed("K-1", "most", tee.clone(), nl.clone()))
        .await;
    assert_eq!(first(&r).as_deref(), Some("chi"));

    // safety stock: sin (ranked first) may route only 2 of its 10 MUG, so 3 go to the first
    // warehouse that has them all (chi has 2 left after the orders above).
    let r = s
        .order(routed(
            "F-1",
            "ranked",
            json!([{"sku": "MUG", "quantity": 3}]),
            nl.clone(),
        ))
        .await;
    assert_eq!(first(&r).as_deref(), Some("ams"), "{:?}", r.body);
    assert_eq!(r.body["explanation"]["ranking"][0]["stock"], 2);
    let r = s
        .order(routed(
            "F-2",
            "ranked",
            json!([{"sku": "MUG", "quantity": 2}]),
            nl.clone(),
        ))
        .await;
    assert_eq!(first(&r).as_deref(), Some("sin"));
    // eligible warehouses and daily capacity: channel eu ships from ber only, once a day.
    let on = |id: &str| {
        let mut o = routed(id, "eu", tee.clone(), nl.clone());
        o["requested_at"] = json!("2026-12-01T10:00:00Z");
        o
    };
    assert_eq!(first(&s.order(on("E-1")).await).as_deref(), Some("ber"));
    let full = s.order(on("E-2")).await;
    assert_eq!(full.status, 409, "{:?}", full.body);
    let why = full.body["filtered_out"][0]["reason"].as_str().unwrap();
    assert!(why.contains("daily capacity"), "{why}");

    // leftovers: backorder holds what there is (chi's last LID) and waits for the rest; queue
    // hands it to a person.
    let r = s
        .order(routed(
            "B-1",
            "backorder",
            json!([{"sku": "LID", "quantity": 10}]),
            nl.clone(),
        ))
        .await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (201, Some("backorder")),
        "{:?}",
        r.body
    );
    assert_eq!(
        (r.body["lines"][0]["unallocated"].clone(), served(&r.body)),
        (json!(9), vec![wh("chi", 1)])
    );
    let r = s
        .order(routed(
            "Q-1",
            "queue",
            json!([{"sku": "LID", "quantity": 1}]),
            nl.clone(),
        ))
        .await;
    assert_eq!((r.status, r.body["state"].as_str()), (201, Some("queued")));
    let listed = get(&format!("{}/v1/orders?state=backorder", s.c))
        .await
        .body;
    assert_eq!(listed[0]["id"], "B-1", "{listed}");
    assert_eq!(s.at("LID", "chi").await, (0, 5));
    s.stop().await;
}

on_both_backends!(frozen_and_silent_warehouses_are_skipped_and_orders_rerouted_off_them);
async fn frozen_and_silent_warehouses_are_skipped_and_orders_rerouted_off_them(backend: Backend) {
    let orders = "[orders]\nstale_after_secs = 3\n[[orders.channel]]\nname = \"shop\"\nrules = [\"ranked\"]\nranked = [\"chi\", \"ams\"]\n";
    let Some(mut s) = Stack::start(backend, &["ams", "chi"], orders).await else {
        return;
    };
    s.receive("chi", "TEE", 5).await;
    s.receive("ams", "TEE", 5).await;
    let r = s
        .order(order("O-1", json!([{"sku": "TEE", "quantity": 2}])))
        .await;
    assert_eq!(served(&r.body), vec![wh("chi", 2)], "{:?}", r.body);

    // Freeze chi: new orders skip it, and O-1's allocation moves to ams.
    let freeze = |on: bool| {
        let url = format!("{}/v1/routing/warehouses/chi", s.c);
        async move {
            let body = json!({"frozen": on, "reason": "stocktake"}).to_string();
            tokio::task::spawn_blocking(move || {
                ureq::put(&url)
                    .header("content-type", "application/json")
                    .send(body.as_str())
                    .unwrap()
                    .status()
                    .as_u16()
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(freeze(true).await, 200);
    let r = s
        .order(order("O-2", json!([{"sku": "TEE", "quantity": 1}])))
        .await;
    assert_eq!(served(&r.body), vec![wh("ams", 1)]);
    assert_eq!(
        r.body["explanation"]["filtered_out"][0],
        json!({"warehouse": "chi", "reason": "frozen: stocktake"})
    );
    let moved = post(&format!("{}/v1/orders/O-1/reroute", s.c), "", &[]).await;
    assert_eq!(
        (moved.status, served(&moved.body)),
        (200, vec![wh("ams", 2)]),
        "{:?}",
        moved.body
    );
    assert_eq!(s.at("TEE", "chi").await, (5, 0));
    assert_eq!(s.at("TEE", "ams").await, (2, 3));
    let history = s.show("O-1").await["history"].clone();
    let rerouted = history
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event"] == "rerouted")
        .expect("rerouted in history");
    assert_eq!(
        rerouted["detail"]["old"][0]["allocations"][0]["warehouse"],
        "chi"
    );
    assert_eq!(
        rerouted["detail"]["new"][0]["allocations"][0]["warehouse"],
        "ams"
    );
    assert_eq!(freeze(false).await, 200);

    // chi's agent goes quiet: once stale_after has passed, routing skips it as silent.
    let (chi, _) = s.agents.remove("chi").unwrap();
    chi.stop().await.unwrap();
    let probe = order("PROBE", json!([{"sku": "TEE", "quantity": 1000}]));
    wait_for("chi reported silent", WAIT, || async {
        let r = s.order(probe.clone()).await;
        assert_eq!(r.status, 409);
        r.body["filtered_out"].as_array().is_some_and(|f| {
            f.iter().any(|w| {
                w["warehouse"] == "chi" && w["reason"].as_str().unwrap().starts_with("silent")
            })
        })
    })
    .await;
    s.receive("ams", "TEE", 1).await; // ams is heard from
    let r = s
        .order(order("O-3", json!([{"sku": "TEE", "quantity": 1}])))
        .await;
    assert_eq!(served(&r.body), vec![wh("ams", 1)], "{:?}", r.body);
    s.stop().await;
}

on_both_backends!(shipment_cancel_return_and_expiry_follow_the_order);
async fn shipment_cancel_return_and_expiry_follow_the_order(backend: Backend) {
    let Some(s) = Stack::start(backend, &["ams"], "").await else {
        return;
    };
    s.receive("ams", "TEE", 10).await;
    let r = s
        .order(order("L-1", json!([{"sku": "TEE", "quantity": 5}])))
        .await;
    assert_eq!(r.status, 201);
    // A partial shipment with the order reference consumes 2 of the hold; 3 stay held.
    s.movement(
        "ams",
        json!({"sku": "TEE", "kind": "shipment", "quantity": 2, "bin": "A-01", "order": "L-1"}),
    )
    .await;
    wait_for("hold consumed", WAIT, || async {
        s.at("TEE", "ams").await == (5, 3)
    })
    .await;
    assert_eq!(s.show("L-1").await["state"], "partially_shipped");
    // Cancel one unit of the line: exactly one is released.
    let url = format!("{}/v1/orders/L-1/cancel", s.c);
    let cancel = |body: Value| {
        let url = url.clone();
        async move { post(&url, &body.to_string(), &[]).await }
    };
    let c1 = cancel(json!({"lines": [{"line": 0, "quantity": 1}]})).await;
    assert_eq!(
        (c1.status, c1.body["released"][0]["units"].clone()),
        (200, json!(1)),
        "{:?}",
        c1.body
    );
    assert_eq!(s.at("TEE", "ams").await, (6, 2));
    let bad = cancel(json!({"lines": [{"line": 3}]})).await;
    assert_eq!(
        (bad.status, bad.body["field"].clone()),
        (422, json!("$.lines[0].line"))
    );
    // Cancel the rest of the order: the 2 still held come back, nothing more.
    let c2 = post(&format!("{}/v1/orders/L-1/cancel", s.c), "", &[]).await;
    assert_eq!(
        (c2.status, c2.body["state"].clone()),
        (200, json!("cancelled")),
        "{:?}",
        c2.body
    );
    assert_eq!(s.at("TEE", "ams").await, (8, 0));
    // A return of the order goes to quality control, as every return does.
    s.movement(
        "ams",
        json!({"sku": "TEE", "kind": "return", "quantity": 1, "bin": "A-01", "order": "L-1"}),
    )
    .await;
    let stock = get(&format!("{}/v1/stock/TEE", s.c)).await.body;
    assert_eq!(
        (
            stock["total"]["available"].clone(),
            stock["total"]["quality_control"].clone()
        ),
        (json!(8), json!(1))
    );

    // An unpaid checkout lapses after its TTL; a paid one keeps its hold.
    let mut unpaid = order("L-2", json!([{"sku": "TEE", "quantity": 2}]));
    unpaid["ttl_secs"] = json!(1);
    assert_eq!(s.order(unpaid).await.status, 201);
    let mut paid = order("L-3", json!([{"sku": "TEE", "quantity": 3}]));
    paid["ttl_secs"] = json!(1);
    assert_eq!(s.order(paid).await.status, 201);
    let p = post(&format!("{}/v1/orders/L-3/paid", s.c), "", &[]).await;
    assert_eq!(
        (p.status, p.body["reservations"][0]["expires_at_ms"].clone()),
        (200, Value::Null),
        "{:?}",
        p.body
    );
    wait_for("L-2 expired", WAIT, || async {
        s.show("L-2").await["state"] == "expired"
    })
    .await;
    assert_eq!(s.at("TEE", "ams").await, (5, 3));
    assert_eq!(s.show("L-3").await["state"], "reserved");
    let expired = get(&format!("{}/v1/orders?state=expired", s.c)).await.body;
    assert_eq!(expired[0]["id"], "L-2");
    s.stop().await;
}

on_both_backends!(open_orders_move_off_a_frozen_warehouse_by_themselves_when_configured);
async fn open_orders_move_off_a_frozen_warehouse_by_themselves_when_configured(backend: Backend) {
    let orders = "[orders]\nauto_reroute_secs = 1\n[[orders.channel]]\nname = \"shop\"\nrules = [\"ranked\"]\nranked = [\"chi\", \"ams\"]\n";
    let Some(s) = Stack::start(backend, &["ams", "chi"], orders).await else {
        return;
    };
    s.receive("chi", "TEE", 5).await;
    s.receive("ams", "TEE", 5).await;
    let r = s
        .order(order("A-1", json!([{"sku": "TEE", "quantity": 3}])))
        .await;
    assert_eq!(served(&r.body), vec![wh("chi", 3)], "{:?}", r.body);
    let url = format!("{}/v1/routing/warehouses/chi", s.c);
    let status = tokio::task::spawn_blocking(move || {
        let body = json!({"frozen": true, "reason": "flood"}).to_string();
        ureq::put(&url)
            .header("content-type", "application/json")
            .send(body.as_str())
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    wait_for("A-1 moved to ams", WAIT, || async {
        served(&s.show("A-1").await) == vec![wh("ams", 3)]
    })
    .await;
    assert_eq!(s.at("TEE", "chi").await, (5, 0));
    assert_eq!(s.at("TEE", "ams").await, (2, 3));
    let history = s.show("A-1").await["history"].clone();
    let rerouted = history
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event"] == "rerouted")
        .expect("rerouted");
    assert_eq!(
        rerouted["detail"]["off"][0],
        json!({"warehouse": "chi", "reason": "frozen: flood"})
    );
    s.stop().await;
}
