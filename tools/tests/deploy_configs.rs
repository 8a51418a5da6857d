//! The annotated examples in `deploy/` are what operators copy; they must load with the real
//! config types (which refuse unknown keys), so a renamed or removed option fails here
//! instead of at a customer's start-up.

use std::path::PathBuf;

use stocksync_agent::config::AgentConfig;
use stocksync_collector::config::CollectorConfig;
use stocksync_common::config;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn collector_example_loads() {
    let c: CollectorConfig = config::load(&deploy("collector.toml")).expect("collector.toml");
    let broker = c
        .broker
        .expect("the production example uses an external broker");
    assert_eq!(broker.username.as_deref(), Some("stocksync-collector"));
    assert_eq!(c.http.listen.port(), 8080);
    assert_eq!(c.catalog.skus[0].packs.get("case"), Some(&12));
    assert_eq!(c.catalog.bundles[0].components.len(), 2);
    assert_eq!(c.catalog.aliases[0].sku, "MUG-001");
    let web = &c.channels.channel[0];
    assert_eq!((web.name.as_str(), web.share_percent), ("webshop", 50));
    assert!(web.webhook.is_some() && web.mqtt);
    // The collector refuses to start on a catalog that does not validate (GTIN check digits,
    // references to unknown SKUs); the example must pass that too.
    stocksync_common::catalog::Catalog::new(c.catalog).expect("example catalog validates");
}

#[test]
fn agent_example_loads() {
    let a: AgentConfig = config::load(&deploy("agent.toml")).expect("agent.toml");
    assert_eq!(
        (a.agent_id.as_str(), a.warehouse.as_str()),
        ("ams-1", "ams")
    );
    assert_eq!(a.broker.username.as_deref(), Some("ams-1"));
    assert!(a.broker.tls.is_some(), "the example connects over TLS");
    let scanner = a.scanner.expect("the example configures scanner input");
    assert_eq!(scanner.topic, "scanners/ams/+/movements");
}

#[test]
fn documented_defaults_are_the_real_defaults() {
    // Spot checks of the values the examples state as defaults.
    let a: AgentConfig = toml_min("agent_id = \"a\"\nwarehouse = \"w\"\n");
    assert_eq!(a.http.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(a.http.max_batch, 1000);
    assert_eq!(a.http.max_body_bytes, 4_194_304);
    assert_eq!(a.journal.max_backlog, 10_000_000);
    assert_eq!(a.journal.retain_acked_hours, 24);
    assert_eq!(a.journal.idempotency_days, 7);
    assert_eq!(a.forward.batch_max, 2000);
    assert_eq!(a.forward.max_inflight_batches, 16);
    assert_eq!(a.forward.ack_timeout_ms, 10_000);
    assert_eq!(a.broker.keep_alive_secs, 15);
    assert!(a.broker.tls.is_none() && a.http.tokens.is_empty() && a.http.tls.is_none());
    assert_eq!(a.http.limits.header_read_timeout_ms, 10_000);
    assert_eq!(a.http.limits.request_timeout_ms, 30_000);
    assert_eq!(a.http.limits.max_connections, 1024);
    let c: CollectorConfig = toml_min("");
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.embedded_broker.listen.to_string(), "127.0.0.1:1883");
    assert_eq!(c.embedded_broker.max_payload_bytes, 1_048_576);
    assert!(c.broker.is_none());
}

fn toml_min<T: serde::de::DeserializeOwned>(text: &str) -> T {
    toml::from_str(text).expect("minimal config")
}
