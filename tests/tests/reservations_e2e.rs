//! Reservations end to end: stock held for an order at checkout leaves every channel's
//! sellable number at once, is consumed by the order's shipment from the warehouse, and is
//! given back when released or expired. Two checkouts cannot both take the last unit.
//! Runs on both stores (`<case>::sqlite`, `<case>::postgres`: two workers on one database).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

async fn totals(c: &str, sku: &str) -> (i64, i64, i64) {
    let s = get(&format!("{c}/v1/stock/{sku}")).await.body;
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    (
        n(&s["total"]["available"]),
        n(&s["total"]["reserved"]),
        n(&s["on_hand"]),
    )
}

async fn wait_totals(c: &str, sku: &str, want: (i64, i64, i64), what: &str) {
    wait_for(what, WAIT, || async { totals(c, sku).await == want }).await;
}

async fn sellable(c: &str, sku: &str) -> Option<u64> {
    let feed = get(&format!("{c}/v1/channels/web/sellable")).await.body;
    feed["items"].as_array()?.iter().find(|i| i["sku"] == sku)?["sellable"].as_u64()
}

async fn reserve(c: &str, body: Value) -> Reply {
    post(&format!("{c}/v1/reservations"), &body.to_string(), &[]).await
}

on_both_backends!(a_reservation_holds_stock_until_shipped_released_or_expired);
async fn a_reservation_holds_stock_until_shipped_released_or_expired(backend: Backend) {
    let dir = TempDir::new("reservations");
    let broker = Broker::start(&dir);
    let channel = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n";
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(channel)
        .warehouses(&["ams"])
        .start()
        .await
    else {
        return;
    };
    let c = collectors.url().to_string();
    let agent = Agent::start(agent_config(&dir, "ams-1", "ams", broker.port, 0))
        .await
        .expect("agent starts");
    let a = format!("http://{}/v1/movements", agent.http_addr);

    post(
        &a,
        r#"{"sku":"TEE","kind":"receipt","quantity":10,"bin":"A-01"}"#,
        &[],
    )
    .await;
    wait_totals(&c, "TEE", (10, 0, 10), "receipt counted").await;

    // Checkout holds 4 for order SO-9: sellable everywhere drops at once, on_hand does not.
    let r1 = json!({"id": "r1", "order": "SO-9", "sku": "TEE", "warehouse": "ams", "quantity": 4, "channel": "web"});
    let created = reserve(&c, r1.clone()).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["open"], 4);
    assert_eq!(totals(&c, "TEE").await, (6, 4, 10));
    wait_for("channel sells 6", WAIT, || async {
        sellable(&c, "TEE").await == Some(6)
    })
    .await;

    // The same request again (on PostgreSQL to the other worker) is answered, not held
    // twice; the same id for other terms is refused.
    let other = collectors.urls.last().unwrap();
    assert_eq!(reserve(other, r1).await.status, 200);
    let clash = reserve(
        &c,
        json!({"id": "r1", "order": "SO-9", "sku": "TEE", "warehouse": "ams", "quantity": 5}),
    )
    .await;
    assert_eq!(
        (clash.status, clash.body["field"].clone()),
        (409, json!("id"))
    );
    // More than is available: refused whole, nothing held.
    let greedy = reserve(
        &c,
        json!({"id": "r2", "order": "SO-10", "sku": "TEE", "warehouse": "ams", "quantity": 7}),
    )
    .await;
    assert_eq!(
        (greedy.status, greedy.body["available"].clone()),
        (409, json!(6)),
        "{:?}",
        greedy.body
    );
    assert_eq!(totals(&c, "TEE").await, (6, 4, 10));
    let bad = reserve(
        &c,
        json!({"id": "r9", "order": "SO-1", "sku": "TEE", "warehouse": "ams", "quantity": 0}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.body["field"].clone()),
        (422, json!("$.quantity"))
    );

    // The warehouse ships 3 of the order: the hold shrinks to 1, available stays 6.
    post(
        &a,
        r#"{"sku":"TEE","kind":"shipment","quantity":3,"bin":"A-01","order":"SO-9"}"#,
        &[],
    )
    .await;
    wait_totals(&c, "TEE", (6, 1, 7), "shipment consumes the reservation").await;
    assert_eq!(
        get(&format!("{c}/v1/reservations/r1")).await.body["open"],
        1
    );

    // The rest of the order is abandoned: released, sellable again.
    let released = delete_json(&format!("{c}/v1/reservations/r1")).await;
    assert_eq!(released["status"], "released");
    wait_totals(&c, "TEE", (7, 0, 7), "release gives the unit back").await;
    wait_for("channel sells 7", WAIT, || async {
        sellable(&c, "TEE").await == Some(7)
    })
    .await;

    // A hold that is never shipped lapses by itself.
    let short = reserve(&c, json!({"id": "r3", "order": "SO-11", "sku": "TEE", "warehouse": "ams", "quantity": 2, "ttl_secs": 1})).await;
    assert_eq!(short.status, 201);
    assert_eq!(totals(&c, "TEE").await, (5, 2, 7));
    wait_for("reservation expired", WAIT, || async {
        get(&format!("{c}/v1/reservations/r3")).await.body["status"] == "expired"
    })
    .await;
    assert_eq!(totals(&c, "TEE").await, (7, 0, 7));

    // A shipment that arrives before its reservation leaves nothing open: order does not matter.
    post(
        &a,
        r#"{"sku":"TEE","kind":"shipment","quantity":2,"bin":"A-01","order":"SO-12"}"#,
        &[],
    )
    .await;
    wait_totals(&c, "TEE", (5, 0, 5), "early shipment counted").await;
    let late = reserve(
        &c,
        json!({"id": "r4", "order": "SO-12", "sku": "TEE", "warehouse": "ams", "quantity": 2}),
    )
    .await;
    assert_eq!((late.status, late.body["open"].clone()), (201, json!(0)));
    assert_eq!(totals(&c, "TEE").await, (5, 0, 5));

    let list = get(&format!("{c}/v1/reservations?sku=TEE")).await.body;
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.len(),
        3,
        "r1, r3, r4 kept with their status: {list}"
    );
    agent.stop().await.unwrap();
    collectors.stop().await;
}

async fn delete_json(url: &str) -> Value {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut resp = ureq::delete(&url).call().expect("DELETE");
        resp.body_mut().read_json::<Value>().expect("JSON")
    })
    .await
    .unwrap()
}
