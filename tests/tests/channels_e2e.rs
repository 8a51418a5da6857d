//! Channel publishing end to end: a movement posted to an agent reaches each channel's
//! feed, MQTT retained topic, webhook receiver and Shopify-shaped endpoint, shaped by the
//! channel's rules; the webhook honours 429/Retry-After and refreshes its token on 401; the
//! Shopify adapter honours cost throttling, 429 and stale compare-and-set; freeze and zero
//! switch publishing off and to zero.

#[path = "channels/harness.rs"]
mod harness;
#[path = "channels/receivers.rs"]
mod receivers;
#[path = "channels/shopify_fake.rs"]
mod shopify_fake;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use support::backend::on_both_backends;

const WAIT: Duration = Duration::from_secs(15);

fn catalog() -> &'static str {
    r#"
[[catalog.skus]]
id = "SKU-A"
[[catalog.skus]]
id = "SKU-B"
[[catalog.bundles]]
sku = "KIT"
components = [{ sku = "SKU-A", quantity = 2 }, { sku = "SKU-B", quantity = 1 }]
[[catalog.aliases]]
source = "web"
external = "WEB-A"
sku = "SKU-A"
"#
}

async fn wait_feed(
    collector: &stocksync_collector::Collector,
    channel: &str,
    want: &[(&str, u64)],
) -> BTreeMap<String, u64> {
    let want: BTreeMap<String, u64> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    wait_for(&format!("{channel} feed {want:?}"), WAIT, || async {
        let f = feed(collector, channel).await;
        want.iter().all(|(k, v)| f.get(k) == Some(v)).then_some(f)
    })
    .await
}

on_both_backends!(rules_and_targets_end_to_end);
async fn rules_and_targets_end_to_end(backend: Backend) {
    let dir = TempDir::new("channels-e2e");
    let hook = receivers::Webhook::start(b"s3cret", "t1").await;
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    std::fs::write(dir.join("token"), "t1\n").unwrap();
    let channels = format!(
        r#"{catalog}
[channels]
coalesce_ms = 20
[[channels.channel]]
name = "web"
locations = ["ams"]
safety_units = 2
share_percent = 50
bundles = ["KIT"]
mqtt = true
[channels.channel.webhook]
url = "http://{hook}/stock"
secret_file = "{secret}"
token_file = "{token}"
[channels.channel.webhook.limits]
rate_per_sec = 20.0
burst = 2
backoff_initial_ms = 50
backoff_max_ms = 200
[[channels.channel]]
name = "marketplace"
locations = ["ams", "rtm/B-01"]
safety_percent = 10
max_listed = 25
zero_at_or_below = 3
skus = ["SKU-A", "SKU-B"]
"#,
        catalog = catalog(),
        hook = hook.addr,
        secret = dir.join("secret").display(),
        token = dir.join("token").display(),
    );
    let Some(collector) = Stack::start(backend, &dir, &channels).await else {
        return;
    };
    let ams = agent(&dir, &collector, "ams").await;
    let rtm = agent(&dir, &collector, "rtm").await;

    post_movement(
        &ams,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 20, "bin": "A-01"}),
    )
    .await;
    post_movement(
        &ams,
        json!({"sku": "SKU-B", "kind": "receipt", "quantity": 9}),
    )
    .await;
    // rtm stock: not eligible for web; only bin B-01 is eligible for the marketplace.
    post_movement(
        &rtm,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 100, "bin": "A-07"}),
    )
    .await;
    post_movement(
        &rtm,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 10, "bin": "B-01"}),
    )
    .await;

    // web: SKU-A 20 - 2 = 18, 50% -> 9 (under its alias); SKU-B 9 - 2 = 7, 50% -> 3;
    // KIT = min(9 / 2, 3 / 1) = 3.
    let web = wait_feed(&collector, "web", &[("WEB-A", 9), ("SKU-B", 3), ("KIT", 3)]).await;
    assert_eq!(web.len(), 3, "web sells SKU-A, SKU-B and KIT only: {web:?}");
    // marketplace: SKU-A 20 + 10 (rtm/B-01) = 30, minus ceil(3.0) = 27, max 25;
    // SKU-B 9 - ceil(0.9) = 8. No KIT: it does not sell it.
    let market = wait_feed(&collector, "marketplace", &[("SKU-A", 25), ("SKU-B", 8)]).await;
    assert_eq!(market.len(), 2, "{market:?}");

    // A subscriber that connects now gets the retained values.
    let mqtt =
        receivers::Mqtt::subscribe(&collector.broker, "stocksync/v1/channels/web/sellable/#").await;
    let retained = mqtt
        .wait_values(WAIT, &[("WEB-A", 9), ("SKU-B", 3), ("KIT", 3)])
        .await;
    assert_eq!(retained["WEB-A"]["canonical_sku"], "SKU-A");

    // The webhook got the same numbers, signed, with the bearer token.
    hook.wait_values(WAIT, &[("WEB-A", 9), ("SKU-B", 3), ("KIT", 3)])
        .await;
    assert_eq!(hook.bad_signatures(), 0);

    // Token rotation: the receiver now wants t2; the next push gets a 401, re-reads the file.
    std::fs::write(dir.join("token"), "t2\n").unwrap();
    hook.set_token("t2");
    // And the one after that is answered 429 with Retry-After: 1.
    hook.answer_429_times(1);
    let posted = Instant::now();
    post_movement(
        &ams,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 4, "bin": "A-01"}),
    )
    .await;
    // 24 - 2 = 22, 50% -> 11; KIT = min(5, 3) = 3 (unchanged).
    hook.wait_values(WAIT, &[("WEB-A", 11)]).await;
    assert!(
        posted.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 must be honoured"
    );
    let statuses = hook.statuses();
    let n401 = statuses.iter().filter(|s| **s == 401).count();
    let n429 = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((n401, n429), (1, 1), "statuses seen: {statuses:?}");
    let errors = get_json(format!(
        "http://{}/v1/channels/web/errors",
        collector.http_addr
    ))
    .await;
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("429")),
        "the 429 is in the error queue: {errors}"
    );
    mqtt.wait_values(WAIT, &[("WEB-A", 11)]).await;
    wait_feed(&collector, "web", &[("WEB-A", 11)]).await;

    // Freeze web: a movement changes the marketplace but not web.
    let mode_url = format!("http://{}/v1/channels/web/mode", collector.http_addr);
    assert_eq!(
        put_json(
            mode_url.clone(),
            json!({"mode": "frozen", "reason": "test"})
        )
        .await,
        200
    );
    post_movement(
        &ams,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 6, "bin": "A-01"}),
    )
    .await;
    // marketplace SKU-A: 40 - 4 = 36 -> max 25 (unchanged), so watch SKU-B instead.
    post_movement(
        &ams,
        json!({"sku": "SKU-B", "kind": "receipt", "quantity": 1}),
    )
    .await;
    // SKU-B 10 - 1 = 9.
    wait_feed(&collector, "marketplace", &[("SKU-B", 9)]).await;
    let frozen = feed(&collector, "web").await;
    assert_eq!(frozen["WEB-A"], 11, "frozen channel keeps its last numbers");
    let state = get_json(format!("http://{}/v1/channels/web", collector.http_addr)).await;
    assert_eq!(state["state"]["mode"], "frozen");

    // Zero: everything 0 on every target.
    assert_eq!(
        put_json(mode_url.clone(), json!({"mode": "zero"})).await,
        200
    );
    wait_feed(&collector, "web", &[("WEB-A", 0), ("SKU-B", 0), ("KIT", 0)]).await;
    mqtt.wait_values(WAIT, &[("WEB-A", 0), ("SKU-B", 0), ("KIT", 0)])
        .await;
    hook.wait_values(WAIT, &[("WEB-A", 0), ("SKU-B", 0), ("KIT", 0)])
        .await;

    // Live again: current numbers. SKU-A 30 - 2 = 28 -> 14; SKU-B 10 - 2 = 8 -> 4; KIT 4.
    assert_eq!(put_json(mode_url, json!({"mode": "live"})).await, 200);
    wait_feed(
        &collector,
        "web",
        &[("WEB-A", 14), ("SKU-B", 4), ("KIT", 4)],
    )
    .await;
    hook.wait_values(WAIT, &[("WEB-A", 14), ("SKU-B", 4), ("KIT", 4)])
        .await;

    // Changes since a cursor: only what moved after it.
    let full = get_json(format!(
        "http://{}/v1/channels/web/sellable",
        collector.http_addr
    ))
    .await;
    let cursor = full["cursor"].as_i64().unwrap();
    post_movement(
        &ams,
        json!({"sku": "SKU-B", "kind": "receipt", "quantity": 2}),
    )
    .await;
    let since = wait_for("web change after cursor", WAIT, || async {
        let v = get_json(format!(
            "http://{}/v1/channels/web/sellable?since={cursor}",
            collector.http_addr
        ))
        .await;
        (!v["changes"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    // SKU-B 12 - 2 = 10 -> 5; KIT min(7, 5) = 5.
    let changes: BTreeMap<String, u64> = since["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["sku"].as_str().unwrap().to_string(),
                c["sellable"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<String, u64> = [("SKU-B".to_string(), 5), ("KIT".to_string(), 5)].into();
    assert_eq!(changes, want, "only what moved after the cursor");
    assert!(since["cursor"].as_i64().unwrap() > cursor);

    let metrics = tokio::task::spawn_blocking({
        let url = format!("http://{}/metrics", collector.http_addr);
        move || {
            ureq::get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("stocksync_channel_pending_changes{channel=\"web\",target=\"webhook\"}")
    );
    assert!(metrics.contains("stocksync_channel_last_success_ms{channel=\"web\",target=\"mqtt\"}"));

    mqtt.stop().await;
    ams.stop().await.unwrap();
    rtm.stop().await.unwrap();
    collector.stop().await.unwrap();
    hook.stop();
}

on_both_backends!(feed_cursor_survives_restart);
async fn feed_cursor_survives_restart(backend: Backend) {
    let dir = TempDir::new("channels-restart");
    let channels = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n";
    let Some(collector1) = Stack::start(backend, &dir, channels).await else {
        return;
    };
    let ams = agent(&dir, &collector1, "ams").await;
    post_movement(&ams, json!({"sku": "S1", "kind": "receipt", "quantity": 5})).await;
    wait_feed(&collector1, "web", &[("S1", 5)]).await;
    let before = get_json(format!(
        "http://{}/v1/channels/web/sellable",
        collector1.http_addr
    ))
    .await;
    let cursor = before["cursor"].as_i64().unwrap();
    ams.stop().await.unwrap();

    // Same store, new process state: the cursor is still valid and nothing is
    // republished for unchanged values.
    let collector2 = collector1.restart().await;
    let after = get_json(format!(
        "http://{}/v1/channels/web/sellable",
        collector2.http_addr
    ))
    .await;
    assert_eq!(after["cursor"].as_i64(), Some(cursor));
    let ams = agent(&dir, &collector2, "ams").await;
    post_movement(&ams, json!({"sku": "S1", "kind": "receipt", "quantity": 1})).await;
    let since = wait_for("change after restart", WAIT, || async {
        let v = get_json(format!(
            "http://{}/v1/channels/web/sellable?since={cursor}",
            collector2.http_addr
        ))
        .await;
        (!v["changes"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    assert_eq!(since["changes"][0]["sellable"], 6);
    assert!(since["changes"][0]["cursor"].as_i64().unwrap() > cursor);
    ams.stop().await.unwrap();
    collector2.stop().await.unwrap();
}

on_both_backends!(an_idle_channel_publishes_at_once_whatever_its_coalesce_window);
/// Coalescing costs nothing when idle: with a window far longer than the test's deadline,
/// a change that finds the channel idle is still published at once (before, every change
/// waited until the window since the previous pass had passed). The window is the
/// channel's own, overriding `[channels]`.
async fn an_idle_channel_publishes_at_once_whatever_its_coalesce_window(backend: Backend) {
    let dir = TempDir::new("channels-idle");
    let channels = "[channels]\ncoalesce_ms = 10\n[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\ncoalesce_ms = 600000\n";
    let Some(collector) = Stack::start(backend, &dir, channels).await else {
        return;
    };
    let ams = agent(&dir, &collector, "ams").await;
    post_movement(&ams, json!({"sku": "S1", "kind": "receipt", "quantity": 5})).await;
    wait_feed(&collector, "web", &[("S1", 5)]).await;
    post_movement(&ams, json!({"sku": "S1", "kind": "receipt", "quantity": 1})).await;
    wait_feed(&collector, "web", &[("S1", 6)]).await;
    ams.stop().await.unwrap();
    collector.stop().await.unwrap();
}

/// Puts the channel store back into the ledger file, as a collector from before the split
/// kept it, with one open push error; removes the channel store's own file.
fn move_channel_tables_into_ledger(dir: &TempDir) {
    let ledger = dir.join("ledger.db");
    let channels = dir.join("ledger.channels.db");
    let conn = rusqlite::Connection::open(&ledger).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS ch", [channels.to_string_lossy()])
        .unwrap();
    let ddl: Vec<(String, Option<String>)> = conn
        .prepare("SELECT name, sql FROM ch.sqlite_master WHERE type IN ('table', 'index') AND name LIKE 'channel%' ORDER BY type DESC")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (_, sql) in &ddl {
        conn.execute_batch(sql.as_deref().unwrap()).unwrap();
    }
    for (name, sql) in &ddl {
        if sql.as_deref().unwrap().starts_with("CREATE TABLE") {
            conn.execute(
                &format!("INSERT INTO main.{name} SELECT * FROM ch.{name}"),
                [],
            )
            .unwrap();
        }
    }
    conn.execute(
        "INSERT INTO main.channel_errors (channel, target, detail, first_seen_ms, last_seen_ms) VALUES ('web', 'webhook', 'HTTP 500 from the shop', 1, 1)",
        [],
    )
    .unwrap();
    conn.execute("DETACH DATABASE ch", []).unwrap();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", channels.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_from_before_the_channel_store_split_keeps_its_feed_and_errors() {
    let dir = TempDir::new("channels-upgrade");
    let channels = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n";
    let collector1 = collector(&dir, channels).await;
    let ams = agent(&dir, &collector1, "ams").await;
    post_movement(&ams, json!({"sku": "S1", "kind": "receipt", "quantity": 5})).await;
    wait_feed(&collector1, "web", &[("S1", 5)]).await;
    let url = |c: &stocksync_collector::Collector| {
        format!("http://{}/v1/channels/web/sellable", c.http_addr)
    };
    let cursor = get_json(url(&collector1)).await["cursor"].as_i64().unwrap();
    ams.stop().await.unwrap();
    collector1.stop().await.unwrap();
    move_channel_tables_into_ledger(&dir);

    let collector2 = collector(&dir, channels).await;
    let after = get_json(url(&collector2)).await;
    assert_eq!(after["cursor"].as_i64(), Some(cursor), "{after}");
    assert_eq!(after["items"][0]["sellable"], 5);
    // The rows moved: the ledger keeps no channel table, the error queue still has the error.
    let left: i64 = rusqlite::Connection::open(dir.join("ledger.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'channel_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    let errors = get_json(format!(
        "http://{}/v1/exceptions?kind=channel_push",
        collector2.http_addr
    ))
    .await;
    assert_eq!(
        errors["items"][0]["reason"], "HTTP 500 from the shop",
        "{errors}"
    );
    let ams = agent(&dir, &collector2, "ams").await;
    post_movement(&ams, json!({"sku": "S1", "kind": "receipt", "quantity": 1})).await;
    let since = wait_for("change after the upgrade", WAIT, || async {
        let v = get_json(format!("{}?since={cursor}", url(&collector2))).await;
        (!v["changes"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    assert_eq!(since["changes"][0]["sellable"], 6);
    assert!(since["changes"][0]["cursor"].as_i64().unwrap() > cursor);
    ams.stop().await.unwrap();
    collector2.stop().await.unwrap();
}

on_both_backends!(shopify_adapter_honours_throttling_and_compare_and_set);
async fn shopify_adapter_honours_throttling_and_compare_and_set(backend: Backend) {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = TempDir::new("channels-shopify");
    let item1 = "gid://shopify/InventoryItem/1";
    let item2 = "gid://shopify/InventoryItem/2";
    // Shopify already holds 5 of item 1 (stocksync has never seen it); the first request
    // gets a 429, the next ones meet an empty cost bucket.
    let shop = shopify_fake::FakeShopify::start(&[(item1, 5)], 1).await;
    std::fs::write(dir.join("shop-token"), shopify_fake::FakeShopify::token()).unwrap();
    let channels = format!(
        r#"
[[catalog.skus]]
id = "SKU-A"
[[catalog.skus]]
id = "SKU-B"
[[catalog.skus]]
id = "SKU-C"
[[catalog.aliases]]
source = "shop"
external = "{item1}"
sku = "SKU-A"
[[catalog.aliases]]
source = "shop"
external = "{item2}"
sku = "SKU-B"
[channels]
coalesce_ms = 20
[[channels.channel]]
name = "shop"
locations = ["*"]
safety_units = 1
[channels.channel.shopify]
url = "http://{addr}/admin/api/graphql.json"
location_id = "gid://shopify/Location/1"
token_file = "{token}"
[channels.channel.shopify.limits]
backoff_initial_ms = 50
backoff_max_ms = 500
"#,
        addr = shop.addr,
        token = dir.join("shop-token").display(),
    );
    let Some(collector) = Stack::start(backend, &dir, &channels).await else {
        return;
    };
    // Starting a PostgreSQL server takes a while: the shop's bucket is empty when we begin.
    shop.drain_bucket();
    let ams = agent(&dir, &collector, "ams").await;
    post_movement(
        &ams,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 21}),
    )
    .await;
    post_movement(
        &ams,
        json!({"sku": "SKU-B", "kind": "receipt", "quantity": 8}),
    )
    .await;
    post_movement(
        &ams,
        json!({"sku": "SKU-C", "kind": "receipt", "quantity": 3}),
    )
    .await;

    // 21 - 1 = 20 and 8 - 1 = 7.
    wait_for("shopify quantities 20 and 7", WAIT, || async {
        (shop.quantity(item1) == Some(20) && shop.quantity(item2) == Some(7)).then_some(())
    })
    .await;
    let seen = shop.seen();
    assert_eq!(seen.too_many.load(SeqCst), 1, "the forced 429 was met");
    assert!(
        seen.throttled.load(SeqCst) >= 1,
        "the empty cost bucket was met"
    );
    assert_eq!(seen.contract_violations.load(SeqCst), 0);
    // SKU-C has no inventory item id: in the error queue, and it held nothing back.
    let errors = get_json(format!(
        "http://{}/v1/channels/shop/errors",
        collector.http_addr
    ))
    .await;
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("SKU-C")),
        "{errors}"
    );

    // Someone changes Shopify's number behind our back; the next set is stale, re-reads, wins.
    shop.set_quantity(item1, 3);
    post_movement(
        &ams,
        json!({"sku": "SKU-A", "kind": "receipt", "quantity": 5}),
    )
    .await;
    wait_for("shopify quantity 25", WAIT, || async {
        (shop.quantity(item1) == Some(25)).then_some(())
    })
    .await;
    assert!(
        seen.stale.load(SeqCst) >= 1,
        "the stale compare-and-set was met"
    );
    assert_eq!(seen.contract_violations.load(SeqCst), 0);
    assert!(shop
        .references()
        .iter()
        .all(|r| r.starts_with("stocksync://channels/shop/changes/")));

    ams.stop().await.unwrap();
    collector.stop().await.unwrap();
    shop.stop();
}

on_both_backends!(burst_of_movements_converges_on_every_target);
async fn burst_of_movements_converges_on_every_target(backend: Backend) {
    // Regression: a recompute racing the ledger writer once hit SQLITE_BUSY and stopped
    // publishing for good. A burst must end with the exact final number everywhere.
    let dir = TempDir::new("channels-burst");
    let channels = "[channels]\ncoalesce_ms = 20\n[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\nmqtt = true\n";
    let Some(collector) = Stack::start(backend, &dir, channels).await else {
        return;
    };
    let ams = agent(&dir, &collector, "ams").await;
    for _ in 0..150 {
        post_movement(
            &ams,
            json!({"sku": "HOT", "kind": "receipt", "quantity": 1}),
        )
        .await;
    }
    wait_feed(&collector, "web", &[("HOT", 150)]).await;
    let mqtt =
        receivers::Mqtt::subscribe(&collector.broker, "stocksync/v1/channels/web/sellable/#").await;
    mqtt.wait_values(WAIT, &[("HOT", 150)]).await;
    // Coalescing: far fewer published changes than movements.
    let changes = get_json(format!(
        "http://{}/v1/channels/web/sellable?since=0&limit=10000",
        collector.http_addr
    ))
    .await;
    assert_eq!(
        changes["changes"].as_array().unwrap().len(),
        1,
        "folded to one value per SKU"
    );
    // A healthy run never drops the consumer's connection. (A batch that failed to commit
    // once left its PUBACK out of order and rumqttd dropped the connection: a 0.5 s stall.)
    let metrics = get_text(format!("http://{}/metrics", collector.http_addr)).await;
    assert!(
        metrics.contains("stocksync_broker_connects_total 1\n"),
        "the consumer connected once: {metrics}"
    );
    mqtt.stop().await;
    ams.stop().await.unwrap();
    collector.stop().await.unwrap();
}

on_both_backends!(server_sent_events_stream_changes_and_resume_from_the_last_event_id);
async fn server_sent_events_stream_changes_and_resume_from_the_last_event_id(backend: Backend) {
    let dir = TempDir::new("channels-sse");
    let channels = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n";
    let Some(collector) = Stack::start(backend, &dir, channels).await else {
        return;
    };
    let ams = agent(&dir, &collector, "ams").await;
    let url = format!(
        "http://{}/v1/channels/web/sellable/stream?since=0",
        collector.http_addr
    );
    let events = sse_events(url.clone(), None, Duration::from_secs(20));

    post_movement(
        &ams,
        json!({"sku": "SSE", "kind": "receipt", "quantity": 5}),
    )
    .await;
    let (first_id, first) = events.recv_timeout(WAIT).expect("first event");
    assert_eq!(
        (first["sku"].clone(), first["sellable"].clone()),
        (json!("SSE"), json!(5)),
        "{first}"
    );
    post_movement(
        &ams,
        json!({"sku": "SSE", "kind": "shipment", "quantity": 2}),
    )
    .await;
    let (second_id, second) = events.recv_timeout(WAIT).expect("second event");
    assert_eq!(second["sellable"], 3, "{second}");
    assert!(
        second_id.parse::<i64>().unwrap() > first_id.parse::<i64>().unwrap(),
        "ids are the feed cursor"
    );

    // A client that reconnects with Last-Event-ID gets what it missed, and only that.
    let resumed = sse_events(url, Some(first_id), Duration::from_secs(20));
    let (id, again) = resumed.recv_timeout(WAIT).expect("resumed event");
    assert_eq!((id, again["sellable"].clone()), (second_id, json!(3)));

    // Open streams do not keep the collector from stopping.
    ams.stop().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), collector.stop())
        .await
        .expect("collector stops with SSE clients connected")
        .unwrap();
}
