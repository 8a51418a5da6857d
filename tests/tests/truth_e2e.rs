//! The truth model end to end, through a real broker and real agents: a case-pack receipt
//! normalised at the edge, a count from the authority with a late pre-count delta, a count
//! from another source as a conflict, a transfer between two warehouses with a
//! discrepancy, a return through inspection and a bundle's component view. Every number is
//! asserted exactly at the collector. Every case runs on both stores (`<case>::sqlite`,
//! `<case>::postgres`: two workers on one database).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;

const CATALOG: &str = r#"
[[skus]]
id = "MUG"
gtin = "08712345678906"
packs = { case = 12, inner = 6 }
[[skus]]
id = "LID"
[[bundles]]
sku = "MUG-SET"
components = [{ sku = "MUG", quantity = 2 }, { sku = "LID", quantity = 1 }]
[[aliases]]
source = "erp"
external = "100-MUG"
sku = "MUG"
"#;

const LOCATIONS: &str = r#"
[[locations]]
warehouse = "ams"
authority = "wms"
other_sources = "apply"
[[locations]]
warehouse = "ber"
authority = "wms"
other_sources = "apply"
returns_to = "quality_control"
"#;

const WAIT: Duration = Duration::from_secs(10);

/// An agent whose HTTP input speaks for the WMS, the ERP and the scanners alike (one
/// listener shared by three systems in this test; production binds each to its own).
fn multi_source_agent(
    dir: &TempDir,
    id: &str,
    warehouse: &str,
    broker_port: u16,
) -> stocksync_agent::config::AgentConfig {
    toml_config(&agent_toml(dir, id, warehouse, broker_port, 0, "").replace(
        "[http]\n",
        "[http]\nsources = [\"wms\", \"erp\", \"scanner\"]\n",
    ))
}

async fn start_agent(
    dir: &TempDir,
    id: &str,
    warehouse: &str,
    broker_port: u16,
) -> (Agent, String) {
    let agent = Agent::start(multi_source_agent(dir, id, warehouse, broker_port))
        .await
        .expect("agent starts");
    let url = format!("http://{}", agent.http_addr);
    // The agent has the collector's catalog once it knows its two SKUs.
    wait_for("agent has the catalog", WAIT, || async {
        get(&format!("{url}/v1/status")).await.body["catalog_skus"] == 2
    })
    .await;
    (agent, url)
}

/// Waits until the list at `path` on the collector has `len` entries.
async fn wait_len(collector: &str, path: &str, len: usize, what: &str) {
    let url = format!("{collector}{path}");
    wait_for(what, WAIT, || async {
        get(&url)
            .await
            .body
            .as_array()
            .is_some_and(|a| a.len() == len)
    })
    .await;
}

async fn post_ok(agent: &str, body: Value) {
    let r = post(&format!("{agent}/v1/movements"), &body.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{body} -> {:?}", r.body);
}

/// The collector's row of `sku` at `warehouse`/`bin` (bin `None` = warehouse level).
async fn row(collector: &str, sku: &str, warehouse: &str, bin: Option<&str>) -> Value {
    let stock = get(&format!("{collector}/v1/stock/{sku}")).await.body;
    stock["locations"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["warehouse"] == warehouse && r["bin"].as_str() == bin)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

async fn wait_row(
    collector: &str,
    sku: &str,
    warehouse: &str,
    bin: Option<&str>,
    field: &str,
    value: i64,
) {
    let what = format!("{sku} at {warehouse}/{bin:?}: {field} = {value}");
    wait_for(&what, WAIT, || async {
        row(collector, sku, warehouse, bin).await[field] == value
    })
    .await;
}

fn states(r: &Value) -> [i64; 7] {
    [
        "on_hand",
        "available",
        "reserved",
        "damaged",
        "quality_control",
        "in_transit",
        "incoming",
    ]
    .map(|f| r[f].as_i64().unwrap_or(i64::MIN))
}

on_both_backends!(truth_model_end_to_end);
async fn truth_model_end_to_end(backend: Backend) {
    let dir = TempDir::new("truth");
    let broker = Broker::start(&dir);
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(&CATALOG.replace("[[", "[[catalog."))
        .extra(LOCATIONS)
        .start()
        .await
    else {
        return;
    };
    let c = collectors.url().to_string();
    let (ams, a) = start_agent(&dir, "ams-1", "ams", broker.port).await;
    let (ber, b) = start_agent(&dir, "ber-1", "ber", broker.port).await;

    // 1. Case-pack receipt: 3 cases are journaled as 36 eaches, the unit kept for audit.
    post_ok(
        &a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 3, "unit": "case", "bin": "A-01",
                       "occurred_at": "2026-11-25T09:00:00Z"}),
    )
    .await;
    wait_row(&c, "MUG", "ams", Some("A-01"), "available", 36).await;
    let history = get(&format!("{c}/v1/stock/MUG/history?location=ams/A-01"))
        .await
        .body;
    assert_eq!(history["movements"][0]["quantity"], 36);
    assert_eq!(history["movements"][0]["unit"], "case");
    assert_eq!(history["movements"][0]["unit_quantity"], 3);
    // An unknown unit is refused at the edge, naming the field, and kept in the rejects queue.
    let r = post(
        &format!("{a}/v1/movements"),
        r#"{"sku":"MUG","kind":"receipt","quantity":1,"unit":"pallet"}"#,
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("$.unit")),
        "{:?}",
        r.body
    );
    let rejects = get(&format!("{a}/v1/rejects")).await.body;
    assert_eq!(rejects[0]["field"], "$.unit", "{rejects}");

    // 2. The authority counts 30 at 10:00: on_hand is set, the difference is drift.
    post_ok(
        &a,
        json!({"sku": "MUG", "kind": "count", "quantity": 30, "bin": "A-01", "source": "wms",
                       "occurred_at": "2026-11-25T10:00:00Z"}),
    )
    .await;
    wait_row(&c, "MUG", "ams", Some("A-01"), "on_hand", 30).await;
    let drift = get(&format!("{c}/v1/drift")).await.body;
    assert_eq!(
        (drift[0]["expected"].as_i64(), drift[0]["counted"].as_i64()),
        (Some(36), Some(30)),
        "{drift}"
    );

    // 3. A shipment of 4 made at 09:30 arrives late, after the count. It is inside the
    //    count already, so on_hand stays 30; the drift is revised to what it really was.
    post_ok(
        &a,
        json!({"sku": "MUG", "kind": "shipment", "quantity": 4, "bin": "A-01",
                       "order": "O-1", "occurred_at": "2026-11-25T09:30:00Z"}),
    )
    .await;
    wait_for("drift revised by the late delta", WAIT, || async {
        get(&format!("{c}/v1/drift")).await.body[0]["expected"] == 32
    })
    .await;
    let drift = get(&format!("{c}/v1/drift")).await.body;
    assert_eq!(drift.as_array().map(Vec::len), Some(1));
    assert_eq!(drift[0]["difference"], -2);
    assert_eq!(drift[0]["source"], "wms");
    assert_eq!(
        states(&row(&c, "MUG", "ams", Some("A-01")).await),
        [30, 30, 0, 0, 0, 0, 0]
    );

    // 4. A scanner counts 29 at 10:15: not the authority, so a conflict, no effect.
    post_ok(
        &a,
        json!({"sku": "MUG", "kind": "count", "quantity": 29, "bin": "A-01", "source": "scanner",
                       "occurred_at": "2026-11-25T10:15:00Z"}),
    )
    .await;
    wait_len(&c, "/v1/conflicts", 1, "conflict recorded").await;
    let conflicts = get(&format!("{c}/v1/conflicts")).await.body;
    assert_eq!(
        (
            conflicts[0]["expected"].as_i64(),
            conflicts[0]["counted"].as_i64()
        ),
        (Some(30), Some(29))
    );
    assert_eq!(conflicts[0]["source"], "scanner");

    // 5. After the count: a shipment of 5 (wms) and one inner of "100-MUG" from the ERP
    //    (an alias; not the authority, so applied provisionally): 30 - 5 + 6 = 31.
    post_ok(
        &a,
        json!({"sku": "MUG", "kind": "shipment", "quantity": 5, "bin": "A-01",
                       "occurred_at": "2026-11-25T10:30:00Z"}),
    )
    .await;
    post_ok(
        &a,
        json!({"sku": "100-MUG", "source": "erp", "kind": "receipt", "quantity": 1, "unit": "inner",
                       "bin": "A-01", "occurred_at": "2026-11-25T10:40:00Z"}),
    )
    .await;
    wait_row(&c, "MUG", "ams", Some("A-01"), "on_hand", 31).await;

    // 6. Transfer T-1: ams ships 10 to ber, ber receives 9.
    post_ok(&a, json!({"sku": "MUG", "kind": "transfer_out", "quantity": 10, "bin": "A-01",
                       "transfer": "T-1", "peer_warehouse": "ber", "occurred_at": "2026-11-25T11:00:00Z"})).await;
    wait_row(&c, "MUG", "ber", None, "in_transit", 10).await;
    post_ok(&b, json!({"sku": "MUG", "kind": "transfer_in", "quantity": 9, "bin": "B-01",
                       "transfer": "T-1", "peer_warehouse": "ams", "occurred_at": "2026-11-26T08:00:00Z"})).await;
    wait_row(&c, "MUG", "ber", Some("B-01"), "available", 9).await;
    assert_eq!(
        states(&row(&c, "MUG", "ams", Some("A-01")).await),
        [21, 21, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        states(&row(&c, "MUG", "ber", None).await),
        [0, 0, 0, 0, 0, 1, 0]
    );
    let discrepancies = get(&format!("{c}/v1/discrepancies")).await.body;
    assert_eq!(
        discrepancies.as_array().map(Vec::len),
        Some(1),
        "{discrepancies}"
    );
    let d = &discrepancies[0];
    assert_eq!(
        (
            d["transfer"].as_str(),
            d["from_warehouse"].as_str(),
            d["to_warehouse"].as_str()
        ),
        (Some("T-1"), Some("ams"), Some("ber"))
    );
    assert_eq!(
        (
            d["shipped"].as_i64(),
            d["received"].as_i64(),
            d["difference"].as_i64()
        ),
        (Some(10), Some(9), Some(-1))
    );

    // 7. A return at ber lands in quality control; inspection releases 2, finds 1 damaged.
    post_ok(
        &b,
        json!({"sku": "MUG", "kind": "return", "quantity": 3, "bin": "B-01", "order": "O-7",
                       "return": "R-1", "occurred_at": "2026-11-26T09:00:00Z"}),
    )
    .await;
    wait_row(&c, "MUG", "ber", Some("B-01"), "quality_control", 3).await;
    post_ok(&b, json!([
        {"sku": "MUG", "kind": "inspection", "outcome": "available", "quantity": 2, "bin": "B-01",
         "return": "R-1", "occurred_at": "2026-11-26T10:00:00Z"},
        {"sku": "MUG", "kind": "inspection", "outcome": "damaged", "quantity": 1, "bin": "B-01",
         "return": "R-1", "occurred_at": "2026-11-26T10:01:00Z"}
    ])).await;
    wait_row(&c, "MUG", "ber", Some("B-01"), "damaged", 1).await;
    assert_eq!(
        states(&row(&c, "MUG", "ber", Some("B-01")).await),
        [12, 11, 0, 1, 0, 0, 0]
    );

    // 8. Bundle MUG-SET = 2 MUG + 1 LID. ams: MUG 21 -> 10 sets, LID 4 -> 4: 4 buildable.
    //    ber: MUG 11, no LID: 0.
    post_ok(
        &a,
        json!({"sku": "LID", "kind": "receipt", "quantity": 4, "bin": "A-02",
                       "occurred_at": "2026-11-26T11:00:00Z"}),
    )
    .await;
    wait_row(&c, "LID", "ams", Some("A-02"), "available", 4).await;
    let bundle = get(&format!("{c}/v1/bundles/MUG-SET")).await.body;
    assert_eq!(bundle["buildable"], 4, "{bundle}");
    let ams_view = &bundle["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouse"] == "ams")
        .cloned()
        .unwrap();
    assert_eq!(ams_view["buildable"], 4);
    assert_eq!(
        ams_view["components"][0],
        json!({"sku": "MUG", "quantity": 2, "available": 21, "buildable": 10})
    );
    assert_eq!(
        ams_view["components"][1],
        json!({"sku": "LID", "quantity": 1, "available": 4, "buildable": 4})
    );
    let ber_view = &bundle["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouse"] == "ber")
        .cloned()
        .unwrap();
    assert_eq!(ber_view["buildable"], 0);

    // The history of ams/A-01 explains its number movement by movement, drift and conflict
    // inline, the late shipment in its place before the count.
    let history = get(&format!("{c}/v1/stock/MUG/history?location=ams/A-01"))
        .await
        .body;
    assert_eq!(history["explained"], true, "{history}");
    let kinds: Vec<&str> = history["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "receipt",
            "shipment",
            "count",
            "count",
            "shipment",
            "receipt",
            "transfer_out"
        ]
    );
    assert_eq!(history["movements"][2]["drift"]["expected"], 32);
    assert_eq!(history["movements"][3]["conflict"]["counted"], 29);
    assert_eq!(history["movements"][5]["treatment"], "provisional");
    assert_eq!(history["current"]["on_hand"], 21);

    ams.stop().await.unwrap();
    ber.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(returns_and_cancellations_are_checked_against_their_order);
/// Cancellations and returns go back through their order: each is checked against what the
/// order shipped, whatever the arrival order, and an excess is an open exception until the
/// movements explain it.
async fn returns_and_cancellations_are_checked_against_their_order(backend: Backend) {
    let dir = TempDir::new("reversals");
    let broker = Broker::start(&dir);
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
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
    let a = format!("http://{}", agent.http_addr);

    // A return without an order is refused at the edge, naming the field.
    let r = post(
        &format!("{a}/v1/movements"),
        r#"{"sku":"CUP","kind":"return","quantity":1}"#,
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("$.order")),
        "{:?}",
        r.body
    );
    let r = post(
        &format!("{a}/v1/movements"),
        r#"{"sku":"CUP","kind":"cancellation","quantity":1}"#,
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("$.order")),
        "{:?}",
        r.body
    );

    // The return arrives before the shipment it reverses: open exception, excess 2.
    post_ok(
        &a,
        json!([{"sku": "CUP", "kind": "receipt", "quantity": 10},
                       {"sku": "CUP", "kind": "return", "quantity": 2, "order": "SO-1"}]),
    )
    .await;
    wait_len(&c, "/v1/reversals", 1, "exception open").await;
    let open = get(&format!("{c}/v1/reversals")).await.body;
    assert_eq!(
        (
            open[0]["order"].clone(),
            open[0]["shipped"].clone(),
            open[0]["excess"].clone()
        ),
        (json!("SO-1"), json!(0), json!(2))
    );

    // The shipment of 3 explains it; a cancellation of 1 stays within what was shipped.
    post_ok(
        &a,
        json!([{"sku": "CUP", "kind": "shipment", "quantity": 3, "order": "SO-1"},
                       {"sku": "CUP", "kind": "cancellation", "quantity": 1, "order": "SO-1"}]),
    )
    .await;
    wait_len(&c, "/v1/reversals", 0, "exception closed").await;
    // 10 received - 3 shipped + 1 cancelled = 8 available; 2 returned are held for inspection.
    let cup = get(&format!("{c}/v1/stock/CUP")).await.body;
    assert_eq!(
        (
            cup["total"]["available"].clone(),
            cup["total"]["quality_control"].clone()
        ),
        (json!(8), json!(2))
    );

    // Another cancellation would reverse more than the order shipped: 2 + 1 + 1 > 3.
    post_ok(
        &a,
        json!({"sku": "CUP", "kind": "cancellation", "quantity": 1, "order": "SO-1"}),
    )
    .await;
    wait_len(&c, "/v1/reversals", 1, "exception reopened").await;
    assert_eq!(get(&format!("{c}/v1/reversals")).await.body[0]["excess"], 1);
    agent.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(a_policy_reject_is_kept_and_counted_not_applied);
/// Under `other_sources = "reject"`, a movement from a system that does not own the
/// warehouse's count changes nothing and is kept in the rejects queue, naming the field.
async fn a_policy_reject_is_kept_and_counted_not_applied(backend: Backend) {
    let dir = TempDir::new("policy-reject");
    let broker = Broker::start(&dir);
    let policy =
        "[[locations]]\nwarehouse = \"ams\"\nauthority = \"wms\"\nother_sources = \"reject\"\n";
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(policy)
        .start()
        .await
    else {
        return;
    };
    let c = collectors.url().to_string();
    let agent = Agent::start(multi_source_agent(&dir, "ams-1", "ams", broker.port))
        .await
        .expect("agent starts");
    let a = format!("http://{}", agent.http_addr);

    post_ok(
        &a,
        json!([{"sku": "POL", "kind": "receipt", "quantity": 5, "source": "erp"},
                       {"sku": "POL", "kind": "receipt", "quantity": 3}]),
    )
    .await;
    wait_for("wms receipt applied", WAIT, || async {
        get(&format!("{c}/v1/stock/POL")).await.body["on_hand"] == 3
    })
    .await;
    let rejects = get(&format!("{c}/v1/rejects")).await.body;
    assert_eq!(rejects.as_array().unwrap().len(), 1, "{rejects}");
    assert_eq!(
        (rejects[0]["field"].clone(), rejects[0]["first_seq"].clone()),
        (json!("source"), json!(1))
    );
    // Summed over the workers: on PostgreSQL the one holding `ams` counted it.
    assert_eq!(collectors.metric("stocksync_rejects_total").await, 1);
    agent.stop().await.unwrap();
    collectors.stop().await;
}
