//! Orders end to end, through real HTTP, a real broker, real agents and SQLite files: an
//! order is routed, held all-or-nothing (bundles' components summed with other lines),
//! never oversold under concurrent checkouts, explained, retried safely, and followed
//! through shipment, cancellation, return, expiry and re-routing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
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

/// A collector, a broker and one agent per warehouse.
struct Stack {
    c: String,
    agents: BTreeMap<String, (Agent, String)>,
    collector: Collector,
    _broker: Broker,
    _dir: TempDir,
}

impl Stack {
    async fn start(warehouses: &[&str], orders: &str) -> Stack {
        let dir = TempDir::new("orders");
        let broker = Broker::start(&dir);
        let extra = format!(
            "{CATALOG}\n[[channels.channel]]\nname = \"shop\"\nlocations = [\"*\"]\n{orders}"
        );
        let config = collector_toml(&dir, broker.port, 0, &extra);
        let collector = Collector::start(toml_config(&config))
            .await
            .expect("collector starts");
        let c = format!("http://{}", collector.http_addr);
        let mut agents = BTreeMap::new();
        for wh in warehouses {
            let agent = Agent::start(agent_config(&dir, &format!("{wh}-1"), wh, broker.port, 0))
                .await
                .expect("agent starts");
            let url = format!("http://{}/v1/movements", agent.http_addr);
            agents.insert(wh.to_string(), (agent, url));
        }
        Stack {
            c,
            agents,
            collector,
            _broker: broker,
            _dir: dir,
        }
    }

    /// Posts a movement at `wh` and waits until the collector has counted it.
    async fn movement(&self, wh: &str, body: Value) {
        let sku = body["sku"].as_str().unwrap().to_string();
        let before = self.history_len(&sku, wh).await;
        let r = post(&self.agents[wh].1, &body.to_string(), &[]).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        wait_for("movement counted", WAIT, || async {
            self.history_len(&sku, wh).await > before
        })
        .await;
    }

    async fn history_len(&self, sku: &str, wh: &str) -> usize {
        let h = get(&format!(
            "{}/v1/stock/{sku}/history?location={wh}/A-01",
            self.c
        ))
        .await
        .body;
        h["movements"].as_array().map_or(0, Vec::len)
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
        let s = get(&format!("{}/v1/stock/{sku}", self.c)).await.body;
        let rows = s["locations"].as_array().cloned().unwrap_or_default();
        let mine = rows.iter().filter(|r| r["warehouse"] == wh);
        mine.fold((0, 0), |(a, r), row| {
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
        self.collector.stop().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_held_explained_replayed_and_checked() {
    let s = Stack::start(&["ams"], "").await;
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
    let listed = get(&format!("{}/v1/orders?state=reserved&channel=shop", s.c))
        .await
        .body;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let none = get(&format!("{}/v1/orders?state=cancelled", s.c))
        .await
        .body;
    assert_eq!(none, json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_concurrent_checkouts_for_forty_units_sell_exactly_forty() {
    let s = Stack::start(&["ams", "ber"], "").await;
    s.receive("ams", "HOT", 25).await;
    s.receive("ber", "HOT", 15).await;
    let url = format!("{}/v1/orders", s.c);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (url, body) = (
                url.clone(),
                order(&format!("RACE-{i}"), json!([{"sku": "HOT", "quantity": 1}])).to_string(),
            );
            tokio::spawn(async move { post(&url, &body, &[]).await.status })
        })
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_default() += 1;
    }
    assert_eq!(by_status, BTreeMap::from([(201, 40), (409, 20)]));
    assert_eq!(s.at("HOT", "ams").await, (0, 25));
    assert_eq!(s.at("HOT", "ber").await, (0, 15));
    let stock = get(&format!("{}/v1/stock/HOT", s.c)).await.body;
    // The warehouse-level row carries the holds (available -held, reserved +held); what a
    // warehouse can sell is the sum over its rows, and that never went below zero.
    assert_eq!((stock["total"]["available"].clone(), stock["total"]["reserved"].clone()), (json!(0), json!(40)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_orders_are_all_or_nothing_with_bundle_components_summed() {
    let s = Stack::start(&["ams"], "").await;
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
