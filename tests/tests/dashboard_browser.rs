//! The operator's daily loop in a real browser: headless chromium loads the dashboard of a
//! running collector (real broker, real agent), searches a SKU, opens its history, resolves
//! an exception with a comment and freezes a channel, and the test checks that the page and
//! the API both changed. A screenshot of each page is saved under the test's output
//! directory (`target/tmp/dashboard-browser/`).
//!
//! Both run on both stores (`::sqlite`, `::postgres`: the page served by a PostgreSQL
//! worker; the second restarts the collector, or the workers, with a fixed catalog).
//!
//! Without chromium installed the test prints a notice and passes, unless
//! `STOCKSYNC_REQUIRE_CHROMIUM=1` (CI sets it).

#[path = "dashboard/cdp.rs"]
mod cdp;
mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec};
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

on_both_backends!(blocking operator_daily_loop_in_the_browser);
fn operator_daily_loop_in_the_browser(backend: Backend) {
    let Some(chromium) = cdp::find_chromium() else {
        assert!(
            std::env::var("STOCKSYNC_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "chromium not installed but STOCKSYNC_REQUIRE_CHROMIUM=1"
        );
        eprintln!("NOTICE: chromium not installed; dashboard browser test skipped");
        return;
    };
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard-browser")
        .join(format!("{backend:?}").to_lowercase());
    std::fs::create_dir_all(&shots).unwrap();
    let dir = TempDir::new("dashboard-browser");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::start(&dir);
    let Some((collector, agent)) = rt.block_on(async {
        let collector = CollectorSpec::new(backend, &dir, broker.port)
            .extra(EXTRA)
            .start()
            .await?;
        let agent = Agent::start(agent_config(&dir, "ams-1", "ams", broker.port, 0))
            .await
            .expect("agent starts");
        Some((collector, agent))
    }) else {
        return;
    };
    let c = collector.url().to_string();
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
        collector.stop().await;
    });
}

const TOKEN: &str = "ops-token-0123456789abcdef";

/// The collector's config for the daily loop: a catalog without GHOST, API tokens, an
/// alert on any open exception.
fn loop_extra(dir: &TempDir) -> String {
    std::fs::write(dir.join("ops.token"), format!("{TOKEN}\n")).unwrap();
    format!(
        "[catalog]\n[[catalog.skus]]\nid = \"MUG\"\n\
         [operations]\nevaluate_every_ms = 50\nexceptions_per_day = 0\nmqtt = false\n\
         [[http.tokens]]\nname = \"ops\"\nscopes = [\"read\", \"admin\"]\ntoken_file = {:?}\n",
        dir.join("ops.token")
    )
}

/// A GET at the collector with the token.
fn api(url: &str) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (reply, _) = request_blocking("GET", url, None, &[("authorization", &auth)]);
    assert_eq!(reply.status, 200, "{url}: {:?}", reply.body);
    reply.body
}

fn firing(c: &str) -> usize {
    api(&format!("{c}/v1/alerts"))["firing"]
        .as_array()
        .map_or(0, Vec::len)
}

on_both_backends!(blocking operator_daily_loop_with_tokens_retry_and_alert);
/// The whole daily loop with API tokens configured: the page asks for a token, shows the
/// failures and the firing alert; a retry before the catalog is fixed stays open with one
/// attempt; after the fix the retry applies the record (once); the agent's refusal is
/// resolved with a comment; the alert clears. On PostgreSQL the page is served by worker
/// `w1` of two, and the fix restarts both workers on the same database.
fn operator_daily_loop_with_tokens_retry_and_alert(backend: Backend) {
    let Some(chromium) = cdp::find_chromium() else {
        assert!(
            std::env::var("STOCKSYNC_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "chromium not installed but STOCKSYNC_REQUIRE_CHROMIUM=1"
        );
        eprintln!("NOTICE: chromium not installed; dashboard browser test skipped");
        return;
    };
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard-loop")
        .join(format!("{backend:?}").to_lowercase());
    std::fs::create_dir_all(&shots).unwrap();
    let dir = TempDir::new("dashboard-loop");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::start(&dir);
    // A fixed HTTP port: the page stays open while the collector restarts with the fix.
    let port = free_port();
    // The agent journals GHOST before it has a catalog; the collector refuses it.
    let agent_text = agent_toml(
        &dir,
        "ams-1",
        "ams",
        broker.port,
        0,
        "[forward]\nack_timeout_ms = 300\n",
    );
    let Some((agent, mut collectors)) = rt.block_on(async {
        let agent = Agent::start(toml_config(&agent_text))
            .await
            .expect("agent starts");
        let body = json!({"sku": "GHOST", "kind": "receipt", "quantity": 7, "bin": "A-01"});
        let r = post(
            &format!("http://{}/v1/movements", agent.http_addr),
            &body.to_string(),
            &[],
        )
        .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        let collectors = CollectorSpec::new(backend, &dir, broker.port)
            .extra(&loop_extra(&dir))
            .warehouses(&["ams"])
            .http_port(port)
            .start()
            .await?;
        Some((agent, collectors))
    }) else {
        return;
    };
    let c = format!("http://127.0.0.1:{port}");
    let a = format!("http://{}", agent.http_addr);
    // Once the agent has the catalog it refuses NOPE itself, and forwards the refusal.
    wait_blocking(WAIT, || {
        get_blocking(&format!("{a}/v1/status")).body["validating"] == true
    })
    .expect("agent validates");
    let r = post_blocking(
        &format!("{a}/v1/movements"),
        &json!({"sku": "NOPE", "kind": "receipt", "quantity": 1, "bin": "A-01"}).to_string(),
        &[],
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    wait_blocking(WAIT, || {
        api(&format!("{c}/v1/exceptions?status=open"))["total"] == 2 && firing(&c) == 1
    })
    .expect("two open exceptions and a firing alert");
    let ids = |kind: &str| {
        api(&format!("{c}/v1/exceptions?kind={kind}"))["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ghost, nope) = (ids("collector_reject"), ids("agent_reject"));

    let mut b = cdp::Browser::start(&chromium, &dir);
    let ready = "document.querySelector('#page').dataset.ready === 'true'";

    // Without a token the page says what it needs; with one it shows the fleet.
    b.navigate(&format!("{c}/"));
    b.wait_until(
        "asks for a token",
        WAIT,
        &format!(
            "{ready} && document.querySelector('#page').innerText.includes('needs an API token')"
        ),
    );
    b.screenshot(&shots.join("token-needed.png"));
    b.eval(&format!("document.querySelector('#token').value = '{TOKEN}'; document.querySelector('#token-form').requestSubmit(); true"));
    b.wait_until("fleet", WAIT, &format!("{ready} && !!document.querySelector('#fleet') && document.querySelector('#fleet').innerText.includes('ams-1')"));
    let skew = b.eval("document.querySelector('#fleet tbody tr td:last-child').innerText");
    assert!(
        skew.as_str().unwrap().ends_with(" s"),
        "clock skew shown: {skew}"
    );
    assert_eq!(b.eval("sessionStorage.getItem('stocksync.token')"), TOKEN);
    assert_eq!(
        b.eval("document.querySelector('#alerts').hidden"),
        false,
        "the alert shows"
    );
    b.screenshot(&shots.join("fleet-with-token.png"));

    // The queue shows both failures.
    b.eval("location.hash = '#/exceptions'; true");
    b.wait_until(
        "queue",
        WAIT,
        &format!("{ready} && document.querySelectorAll('#exceptions tbody tr').length === 2"),
    );
    b.screenshot(&shots.join("queue.png"));

    // Retry before the fix: still refused, one attempt, the reason on the page.
    let act = |b: &mut cdp::Browser, id: &str, button: &str, comment: &str| {
        b.eval(&format!("location.hash = '#/exception/{id}'; true"));
        b.wait_until(
            "exception page",
            WAIT,
            &format!(
                "{ready} && location.hash.endsWith('{id}') && !!document.querySelector('#act')"
            ),
        );
        b.eval(&format!("document.querySelector('#act-by').value = 'ops@example.com'; document.querySelector('#act-comment').value = '{comment}'; document.querySelector('#{button}').click(); true"));
    };
    act(&mut b, &ghost, "retry", "first try");
    b.wait_until("one attempt", WAIT, &format!("{ready} && document.querySelector('#ex-attempts').innerText === '1' && document.querySelector('#ex-status').innerText === 'open'"));
    b.screenshot(&shots.join("retry-still-refused.png"));

    // Fix the catalog (the collector restarts with GHOST), retry: applied, once.
    rt.block_on(collectors.restart_with("[[catalog.skus]]\nid = \"GHOST\"\n"));
    assert_eq!(collectors.url(), c, "the page's collector keeps its port");
    act(&mut b, &ghost, "retry", "GHOST is in the catalog now");
    b.wait_until("applied", WAIT, &format!("{ready} && document.querySelector('#ex-status').innerText === 'resolved' && document.querySelector('#ex-attempts').innerText === '2'"));
    b.screenshot(&shots.join("retry-applied.png"));
    assert_eq!(api(&format!("{c}/v1/stock/GHOST"))["on_hand"], 7);

    // The agent's refusal: resolved with a comment.
    act(
        &mut b,
        &nope,
        "resolve",
        "told the WMS team: NOPE is not ours",
    );
    b.wait_until(
        "resolved",
        WAIT,
        &format!("{ready} && document.querySelector('#ex-status').innerText === 'resolved'"),
    );
    b.screenshot(&shots.join("agent-reject-resolved.png"));
    let e = api(&format!("{c}/v1/exceptions/{nope}"));
    assert_eq!(
        e["log"].as_array().unwrap().last().unwrap()["by"],
        "ops",
        "recorded as the token's name"
    );

    // The alert clears, on the page too.
    wait_blocking(WAIT, || firing(&c) == 0).expect("alert clears");
    b.eval("location.hash = '#/exceptions'; true");
    b.wait_until("no alert", WAIT, &format!("{ready} && location.hash === '#/exceptions' && document.querySelector('#alerts').hidden && document.querySelectorAll('#exceptions tbody tr').length === 0"));
    b.screenshot(&shots.join("alert-cleared.png"));
    assert_eq!(api(&format!("{c}/v1/exceptions?status=open"))["total"], 0);
    // The API reference is linked and public.
    let href = b.eval("document.querySelector('#openapi').getAttribute('href')");
    assert_eq!(href, "/openapi.json");
    eprintln!("screenshots in {}", shots.display());

    drop(b);
    rt.block_on(async {
        agent.stop().await.unwrap();
        collectors.stop().await;
    });
}
