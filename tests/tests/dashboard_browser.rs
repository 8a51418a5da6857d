//! The operator's daily loop in a real browser: headless chromium loads the dashboard of a
//! running collector (real broker, real agent), searches a SKU, opens its history, resolves
//! an exception with a comment and freezes a channel, and the test checks that the page and
//! the API both changed. A screenshot of each page is saved under the test's output
//! directory (`target/tmp/dashboard-browser/`).
//!
//! Without chromium installed the test prints a notice and passes, unless
//! `STOCKSYNC_REQUIRE_CHROMIUM=1` (CI sets it).

#[path = "dashboard/cdp.rs"]
mod cdp;
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

const EXTRA: &str = r#"
[catalog]
[[catalog.skus]]
id = "MUG"
[[locations]]
warehouse = "ams"
authority = "wms"
other_sources = "apply"
[[channels.channel]]
name = "web"
locations = ["ams"]
"#;

#[test]
fn operator_daily_loop_in_the_browser() {
    let Some(chromium) = cdp::find_chromium() else {
        assert!(
            std::env::var("STOCKSYNC_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "chromium not installed but STOCKSYNC_REQUIRE_CHROMIUM=1"
        );
        eprintln!("NOTICE: chromium not installed; dashboard browser test skipped");
        return;
    };
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = TempDir::new("dashboard-browser");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::start(&dir);
    let (collector, agent) = rt.block_on(async {
        let config = toml_config(&collector_toml(&dir, broker.port, 0, EXTRA));
        let collector = Collector::start(config).await.expect("collector starts");
        let agent = Agent::start(agent_config(&dir, "ams-1", "ams", broker.port, 0))
            .await
            .expect("agent starts");
        (collector, agent)
    });
    let c = format!("http://{}", collector.http_addr);
    let a = format!("http://{}", agent.http_addr);
    // 10 received, the WMS counts 7: on hand 7 and a drift exception.
    for m in [
        json!({"sku": "MUG", "kind": "receipt", "quantity": 10, "bin": "A-01", "source": "wms"}),
        json!({"sku": "MUG", "kind": "count", "quantity": 7, "bin": "A-01", "source": "wms"}),
    ] {
        let r = post_blocking(&format!("{a}/v1/movements"), &m.to_string(), &[]);
        assert_eq!(r.status, 202, "{:?}", r.body);
    }
    let mut drift_id = String::new();
    wait_blocking(WAIT, || {
        let items = get_blocking(&format!("{c}/v1/exceptions?kind=drift")).body["items"].clone();
        drift_id = items[0]["id"].as_str().unwrap_or_default().to_string();
        !drift_id.is_empty()
    })
    .expect("drift exception");

    let mut b = cdp::Browser::start(&chromium, &dir);
    let ready = "document.querySelector('#page').dataset.ready === 'true'";

    // Fleet: the agent is online.
    b.navigate(&format!("{c}/"));
    b.wait_until(
        "fleet lists ams-1",
        WAIT,
        &format!("{ready} && document.querySelector('#fleet').innerText.includes('ams-1')"),
    );
    assert!(b
        .eval("document.querySelector('#fleet').innerText")
        .as_str()
        .unwrap()
        .contains("online"));
    b.screenshot(&shots.join("fleet.png"));

    // Search MUG: per-warehouse states, numbers right-aligned.
    b.eval("document.querySelector('#search-sku').value = 'MUG'; document.querySelector('#search').requestSubmit(); true");
    b.wait_until("SKU page", WAIT, &format!("{ready} && location.hash === '#/sku/MUG' && document.querySelector('#sku-on-hand').innerText === '7'"));
    let align =
        b.eval("getComputedStyle(document.querySelector('#sku-locations td.num')).textAlign");
    assert_eq!(align, "right");
    assert!(b
        .eval("document.querySelector('#exceptions').innerText")
        .as_str()
        .unwrap()
        .contains("drift"));
    b.screenshot(&shots.join("sku.png"));

    // Its history: the receipt and the count, ending at the served number.
    b.eval("document.querySelector('a.history').click(); true");
    b.wait_until(
        "history",
        WAIT,
        &format!("{ready} && document.querySelectorAll('#history tbody tr').length === 2"),
    );
    let text = b.eval("document.querySelector('#page').innerText");
    assert!(
        text.as_str()
            .unwrap()
            .contains("the movements explain the number"),
        "{text}"
    );
    b.screenshot(&shots.join("history.png"));

    // The queue: open the drift, resolve it with a comment.
    b.eval("location.hash = '#/exceptions'; true");
    b.wait_until(
        "queue lists the drift",
        WAIT,
        &format!("{ready} && !!document.querySelector('#exceptions tr[data-id=\"{drift_id}\"]')"),
    );
    b.screenshot(&shots.join("exceptions.png"));
    b.eval(&format!("document.querySelector('#exceptions tr[data-id=\"{drift_id}\"] a.open-exception').click(); true"));
    b.wait_until(
        "exception page",
        WAIT,
        &format!("{ready} && !!document.querySelector('#act')"),
    );
    b.eval("document.querySelector('#act-by').value = 'ops@example.com'; document.querySelector('#act-comment').value = 'recounted, 7 is right'; document.querySelector('#resolve').click(); true");
    b.wait_until(
        "resolved on the page",
        WAIT,
        &format!("{ready} && document.querySelector('#ex-status').innerText === 'resolved'"),
    );
    b.screenshot(&shots.join("exception-resolved.png"));
    let e = get_blocking(&format!("{c}/v1/exceptions/{drift_id}")).body;
    assert_eq!(e["status"], "resolved");
    let last = e["log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["by"].as_str(), last["comment"].as_str()),
        (Some("ops@example.com"), Some("recounted, 7 is right"))
    );
    b.eval("location.hash = '#/exceptions?status=open'; true");
    b.wait_until("queue no longer lists it", WAIT, &format!("{ready} && location.hash.includes('status=open') && !document.querySelector('#exceptions tr[data-id=\"{drift_id}\"]')"));
    assert_eq!(
        get_blocking(&format!("{c}/v1/exceptions?status=open")).body["total"],
        0
    );

    // Channels: freeze web from the page.
    b.eval("location.hash = '#/channels'; true");
    b.wait_until(
        "channels",
        WAIT,
        &format!("{ready} && !!document.querySelector('button.mode[data-channel=\"web\"]')"),
    );
    b.eval("document.querySelector('button.mode[data-channel=\"web\"]').click(); true");
    b.wait_until("web frozen", WAIT, &format!("{ready} && document.querySelector('button.mode[data-channel=\"web\"]').innerText === 'Unfreeze'"));
    let web: Value = get_blocking(&format!("{c}/v1/channels/web")).body;
    assert_eq!(web["state"]["mode"], "frozen", "{web}");
    b.screenshot(&shots.join("channels.png"));

    // The daily report renders.
    b.eval("location.hash = '#/report'; true");
    b.wait_until(
        "report",
        WAIT,
        &format!("{ready} && document.querySelector('h1').innerText.startsWith('Daily report')"),
    );
    b.screenshot(&shots.join("report.png"));
    eprintln!("screenshots in {}", shots.display());

    drop(b);
    rt.block_on(async {
        agent.stop().await.unwrap();
        collector.stop().await.unwrap();
    });
}
