//! The operator's views and corrections on both stores, through real HTTP, a real broker,
//! real agents and real collector processes: the bundle component view, voiding a
//! movement (exactly once, whichever worker is asked, however often), and what follows from
//! each for channels.
//!
//! Every case runs twice: on one SQLite collector (`<case>::sqlite`) and on two collector
//! worker processes sharing one real PostgreSQL (`<case>::postgres`, which prints a notice
//! and passes when PostgreSQL is not installed, see `support::postgres`), with the same
//! requests and the same expected answers.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
use support::postgres::Postgres;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// MUG-001 (case of 12), TEE-002, GIFTSET-01 = 2 x MUG + 1 x TEE, one channel over all.
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

/// Which store the collector runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Sqlite,
    /// Two collector worker processes on one PostgreSQL database.
    Postgres,
}

/// A test that runs on both backends, as `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    };
}

enum Collectors {
    Sqlite(Collector),
    Postgres {
        _workers: Vec<Service>,
        _pg: Postgres,
    },
}

/// A broker, the collector (or two workers) and agents for `ams` and `ber`.
struct Site {
    /// The collector's URL (on PostgreSQL: the first worker's).
    c: String,
    /// Every collector URL (on PostgreSQL: each worker's).
    urls: Vec<String>,
    ams: String,
    ber: String,
    agents: Vec<Agent>,
    collectors: Collectors,
    _broker: Broker,
    _dir: TempDir,
}

impl Site {
    /// `None` when the backend is PostgreSQL and it is not installed (the notice is printed).
    async fn start(backend: Backend, label: &str) -> Option<Site> {
        let dir = TempDir::new(label);
        let broker = Broker::start(&dir);
        let collectors = match backend {
            Backend::Sqlite => {
                let text = collector_toml(&dir, broker.port, 0, EXTRA);
                let collector = Collector::start(toml_config(&text))
                    .await
                    .expect("collector starts");
                Collectors::Sqlite(collector)
            }
            Backend::Postgres => {
                let pg = Postgres::start(&dir)?;
                let workers = ["w1", "w2"]
                    .iter()
                    .map(|id| {
                        let port = free_port();
                        let extra = format!(
                            "{EXTRA}\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"{id}\"\nlease_secs = 3\nwarehouses = [\"ams\", \"ber\"]\n",
                            pg.url
                        );
                        let text = collector_toml(&dir, broker.port, port, &extra).replace(
                            &format!("{:?}", dir.join("ledger.db")),
                            &format!("{:?}", dir.join(&format!("unused-{id}.db"))),
                        );
                        Service::start(&dir, "stocksync-collector", id, &text, port)
                    })
                    .collect();
                Collectors::Postgres {
                    _workers: workers,
                    _pg: pg,
                }
            }
        };
        let urls: Vec<String> = match &collectors {
            Collectors::Sqlite(c) => vec![format!("http://{}", c.http_addr)],
            Collectors::Postgres { _workers, .. } => {
                _workers.iter().map(|w| w.url.clone()).collect()
            }
        };
        let mut agents = Vec::new();
        let mut agent_urls = Vec::new();
        for (id, warehouse) in [("ams-1", "ams"), ("ber-1", "ber")] {
            let text = agent_toml(&dir, id, warehouse, broker.port, 0, "");
            let agent = Agent::start(toml_config(&text))
                .await
                .expect("agent starts");
            let url = format!("http://{}", agent.http_addr);
            wait_for("agent has the catalog", WAIT, || async {
                get(&format!("{url}/v1/status")).await.body["catalog_skus"] == 2
            })
            .await;
            agents.push(agent);
            agent_urls.push(url);
        }
        Some(Site {
            c: urls[0].clone(),
            urls,
            ber: agent_urls.pop().unwrap(),
            ams: agent_urls.pop().unwrap(),
            agents,
            collectors,
            _broker: broker,
            _dir: dir,
        })
    }

    async fn stop(mut self) {
        for agent in self.agents.drain(..) {
            agent.stop().await.expect("agent stops");
        }
        match self.collectors {
            Collectors::Sqlite(c) => c.stop().await.expect("collector stops"),
            // Killed (and the database stopped) on drop.
            Collectors::Postgres { .. } => {}
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

/// `(warehouse, buildable)` of a bundle view.
fn per_warehouse(view: &Value) -> Vec<(String, u64)> {
    view["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let warehouse = w["warehouse"].as_str().unwrap().to_string();
            (warehouse, w["buildable"].as_u64().unwrap())
        })
        .collect()
}

on_both_backends!(a_kit_is_built_in_one_warehouse);
async fn a_kit_is_built_in_one_warehouse(backend: Backend) {
    let Some(site) = Site::start(backend, "kits").await else {
        return;
    };
    let c = &site.c;
    // Mugs only in ams, tees only in ber. Pooled they make 10 gift sets; no warehouse can
    // build one.
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
    for url in &site.urls {
        let bundle = get(&format!("{url}/v1/bundles/GIFTSET-01")).await.body;
        assert_eq!(bundle["buildable"], 3, "{bundle}");
        assert_eq!(
            per_warehouse(&bundle),
            [("ams".to_string(), 3), ("ber".to_string(), 0)]
        );
        let ams = &bundle["warehouses"][0]["components"];
        assert_eq!(
            ams,
            &json!([
                {"sku": "MUG-001", "quantity": 2, "available": 20, "buildable": 10},
                {"sku": "TEE-002", "quantity": 1, "available": 3, "buildable": 3},
            ]),
            "{bundle}"
        );
        // The stock view of the bundle carries the same component view.
        let stock = get(&format!("{url}/v1/stock/GIFTSET-01")).await;
        assert_eq!(stock.status, 200, "{:?}", stock.body);
        assert_eq!(stock.body["bundle"], bundle, "{:?}", stock.body);
        assert_eq!(stock.body["on_hand"], 0, "a bundle has no stock of its own");
    }

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
    // Not a bundle: 404 naming the field, on either store.
    let not = get(&format!("{c}/v1/bundles/MUG-001")).await;
    assert_eq!((not.status, not.body["field"].clone()), (404, json!("sku")));
    site.stop().await;
}
