//! Truth holes found by a new user, reproduced with their original input through a real
//! broker, real agents and the real collector, each asserting the corrected rule of
//! `docs/MOVEMENTS.md`: kits are built in one warehouse, a warehouse-level count counts the
//! warehouse total, inspections and write-offs never take more than there is without an
//! exception record, a fully shipped reservation is fulfilled, and holds are explained by
//! the history and shown under per-warehouse totals.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// The catalog of the issue: MUG-001 (case of 12), TEE-002, GIFTSET-01 = 2 x MUG + 1 x TEE.
const EXTRA: &str = r#"
[catalog]
[[catalog.skus]]
id = "MUG-001"
packs = { case = 12 }
[[catalog.skus]]
id = "TEE-002"
[[catalog.bundles]]
sku = "GIFTSET-01"
components = [{ sku = "MUG-001", quantity = 2 }, { sku = "TEE-002", quantity = 1 }]
[[channels.channel]]
name = "all"
locations = ["*"]
bundles = ["GIFTSET-01"]
"#;

/// A broker, a collector and agents for `ams` and `ber`, all with the catalog.
struct Site {
    _dir: TempDir,
    _broker: Broker,
    collector: Option<Collector>,
    agents: Vec<Agent>,
    c: String,
    ams: String,
    ber: String,
}

impl Site {
    async fn start(label: &str, extra: &str) -> Site {
        let dir = TempDir::new(label);
        let broker = Broker::start(&dir);
        let text = collector_toml(&dir, broker.port, 0, &format!("{EXTRA}{extra}"));
        let collector = Collector::start(toml_config(&text))
            .await
            .expect("collector starts");
        let c = format!("http://{}", collector.http_addr);
        let mut agents = Vec::new();
        let mut urls = Vec::new();
        for (id, warehouse) in [("ams-1", "ams"), ("ber-1", "ber")] {
            let agent = Agent::start(agent_config(&dir, id, warehouse, broker.port, 0))
                .await
                .expect("agent starts");
            let url = format!("http://{}", agent.http_addr);
            wait_for("agent has the catalog", WAIT, || async {
                get(&format!("{url}/v1/status")).await.body["catalog_skus"] == 2
            })
            .await;
            agents.push(agent);
            urls.push(url);
        }
        Site {
            _dir: dir,
            _broker: broker,
            collector: Some(collector),
            agents,
            c,
            ber: urls.pop().unwrap(),
            ams: urls.pop().unwrap(),
        }
    }

    async fn stop(mut self) {
        for agent in self.agents.drain(..) {
            agent.stop().await.expect("agent stops");
        }
        if let Some(c) = self.collector.take() {
            c.stop().await.expect("collector stops");
        }
    }
}

async fn post_ok(agent: &str, body: Value) {
    let r = post(&format!("{agent}/v1/movements"), &body.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{body} -> {:?}", r.body);
}

/// The `all` channel's published number for `sku`.
async fn sellable(c: &str, sku: &str) -> Option<u64> {
    let feed = get(&format!("{c}/v1/channels/all/sellable")).await.body;
    feed["items"].as_array()?.iter().find(|i| i["sku"] == sku)?["sellable"].as_u64()
}

async fn wait_sellable(c: &str, sku: &str, want: u64) {
    let what = format!("channel `all` publishes {want} of {sku}");
    wait_for(&what, WAIT, || async {
        sellable(c, sku).await == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kit_is_built_in_one_warehouse() {
    let site = Site::start("kits", "").await;
    let c = &site.c;
    // The original input: mugs only in ams, tees only in ber. Pooled they make 10 gift sets;
    // no warehouse can build one.
    post_ok(
        &site.ams,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 20, "bin": "A-01"}),
    )
    .await;
    post_ok(
        &site.ber,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "B-01"}),
    )
    .await;
    wait_sellable(c, "TEE-002", 10).await;
    wait_sellable(c, "MUG-001", 20).await;
    let bundle = get(&format!("{c}/v1/bundles/GIFTSET-01")).await.body;
    assert_eq!(bundle["buildable"], 0, "{bundle}");
    assert_eq!(
        sellable(c, "GIFTSET-01").await,
        Some(0),
        "the channel must not list gift sets no warehouse can build"
    );

    // Three tees arrive in ams: ams can build 3 (20 mugs -> 10, 3 tees -> 3); ber still 0.
    post_ok(
        &site.ams,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 3, "bin": "A-02"}),
    )
    .await;
    wait_sellable(c, "GIFTSET-01", 3).await;
    let bundle = get(&format!("{c}/v1/bundles/GIFTSET-01")).await.body;
    assert_eq!(bundle["buildable"], 3, "{bundle}");
    let per: Vec<(String, u64)> = bundle["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["warehouse"].as_str().unwrap().to_string(),
                w["buildable"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per, [("ams".to_string(), 3), ("ber".to_string(), 0)]);

    // Two more cases of mugs in ber (24): ber builds 10 with its tees; 13 in total.
    post_ok(
        &site.ber,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 2, "unit": "case", "bin": "B-02"}),
    )
    .await;
    wait_sellable(c, "GIFTSET-01", 13).await;
    assert_eq!(
        get(&format!("{c}/v1/bundles/GIFTSET-01")).await.body["buildable"],
        13
    );
    site.stop().await;
}
