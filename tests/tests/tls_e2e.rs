//! TLS end to end (issue 10, item 7).
//!
//! - MQTT over TLS with the shipped Mosquitto config and ACL, credentials made by
//!   `deploy/make-test-ca.sh`: agents' movements flow, but agent A (with its own valid
//!   certificate and password) can neither publish on B's topic nor read B's acks, and a
//!   client without a certificate or with a wrong password is refused. Needs Mosquitto
//!   (`STOCKSYNC_TEST_BROKER=mosquitto`); the embedded broker has neither TLS nor an ACL.
//! - HTTPS listeners on both processes.
//! - Webhook pushes over HTTPS to a receiver whose certificate chains to a private CA given
//!   as `ca_file`, and the bearer token of those pushes never in the log at `RUST_LOG=trace`;
//!   the Shopify adapter over HTTPS the same way.
//!
//! The collector's cases run on both stores (`<case>::sqlite`, `<case>::postgres`: two
//! workers on one database).

#[path = "channels/harness.rs"]
mod harness;
#[path = "channels/receivers.rs"]
#[allow(dead_code)]
mod receivers;
#[path = "channels/shopify_fake.rs"]
#[allow(dead_code)]
mod shopify_fake;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stocksync_agent::Agent;
use stocksync_common::config::{BrokerConfig, MqttTlsConfig};
use stocksync_common::wire::{self, Batch};
use stocksync_runtime::server::HttpTlsConfig;
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// Runs the shipped script: CA, server certificate, users' credentials, broker config.
fn make_pki(dir: &TempDir, mqtt_port: u16, mqtts_port: u16) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-test-ca.sh");
    let out = dir.join("pki");
    let run = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .args(["stocksync-collector", "ams-1", "ber-1", "scanners-ams"])
        .env("MQTT_PORT", mqtt_port.to_string())
        .env("MQTTS_PORT", mqtts_port.to_string())
        .output()
        .expect("run make-test-ca.sh");
    assert!(
        run.status.success(),
        "make-test-ca.sh failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn server_tls(pki: &Path) -> HttpTlsConfig {
    HttpTlsConfig {
        cert_file: pki.join("certs/stocksync-server.crt"),
        key_file: pki.join("certs/stocksync-server.key"),
    }
}

/// `[broker]` keys (after host/port) and `[broker.tls]` for `user` of the pki.
fn broker_tls_toml(pki: &Path, user: &str) -> String {
    tls_keys(pki, user, "broker")
}

/// Login keys and the `[<table>.tls]` table for `user` of the pki.
fn tls_keys(pki: &Path, user: &str, table: &str) -> String {
    let c = pki.join("clients");
    format!(
        "username = \"{user}\"\npassword_file = {:?}\n[{table}.tls]\nca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
        c.join(format!("{user}.password")),
        pki.join("certs/stocksync-ca.crt"),
        c.join(format!("{user}.crt")),
        c.join(format!("{user}.key")),
    )
}

fn broker_config(
    pki: &Path,
    port: u16,
    user: &str,
    password_file: &str,
    cert: bool,
) -> BrokerConfig {
    let c = pki.join("clients");
    BrokerConfig {
        host: "127.0.0.1".into(),
        port,
        username: Some(user.into()),
        password_file: Some(c.join(password_file)),
        client_id: Some(format!("{user}-probe")),
        keep_alive_secs: 5,
        tls: Some(MqttTlsConfig {
            ca_file: pki.join("certs/stocksync-ca.crt"),
            client_cert_file: cert.then(|| c.join(format!("{user}.crt"))),
            client_key_file: cert.then(|| c.join(format!("{user}.key"))),
        }),
    }
}

/// An MQTT client made from a `BrokerConfig` exactly as the agent and collector make theirs.
struct Probe {
    client: rumqttc::AsyncClient,
    events: tokio::sync::mpsc::UnboundedReceiver<Result<rumqttc::Packet, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(config: &BrokerConfig) -> Probe {
        let opts = stocksync_runtime::mqtt::options(config, "probe", true).expect("options");
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(p)) => {
                        let _ = tx.send(Ok(p));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Probe {
            client,
            events,
            task,
        }
    }

    /// `Ok` on CONNACK, `Err` with the first connection error.
    async fn connected(&mut self) -> Result<(), String> {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Err(_) => return Err("neither CONNACK nor an error".into()),
                Ok(None) => return Err("event loop ended".into()),
                Ok(Some(Ok(rumqttc::Packet::ConnAck(_)))) => return Ok(()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(e),
            }
        }
    }

    /// Every PUBLISH received within `within`.
    async fn publishes(&mut self, within: Duration) -> Vec<rumqttc::Publish> {
        let mut got = Vec::new();
        let until = tokio::time::Instant::now() + within;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, self.events.recv()).await {
            if let Ok(rumqttc::Packet::Publish(p)) = event {
                got.push(p);
            }
        }
        got
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A well-formed batch claiming to come from ber-1, as agent A would forge it.
fn forged_batch() -> Vec<u8> {
    use stocksync_common::model::*;
    let movement = Movement {
        seq: 1,
        sku: Sku("FORGED".into()),
        location: Location {
            warehouse: "ber".into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 1000,
        unit: "each".into(),
        unit_quantity: 1000,
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Default::default(),
    };
    wire::encode_batch(&Batch {
        agent_id: "ber-1".into(),
        journal_id: 1,
        sent_at_ms: None,
        warehouse: "ber".into(),
        movements: vec![movement],
    })
}

async fn backlog(agent: &Agent) -> i64 {
    get(&format!("http://{}/v1/status", agent.http_addr))
        .await
        .body["backlog"]
        .as_i64()
        .unwrap_or(-1)
}

on_both_backends!(mqtt_over_tls_with_the_shipped_broker_config_keeps_agents_apart);
async fn mqtt_over_tls_with_the_shipped_broker_config_keeps_agents_apart(backend: Backend) {
    if !matches!(BrokerKind::from_env(), BrokerKind::Mosquitto) {
        eprintln!("skipped: needs STOCKSYNC_TEST_BROKER=mosquitto (TLS and ACL are Mosquitto's)");
        return;
    }
    let dir = TempDir::new("mqtt-tls");
    let (plain, port) = (free_port(), free_port());
    let pki = make_pki(&dir, plain, port);
    let mosquitto = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto installed");
    let conf = pki.join("mosquitto-stocksync.conf");
    let broker = Proc::spawn(
        &mosquitto,
        &["-c", conf.to_str().unwrap()],
        dir.join("mosquitto.log"),
    );
    wait_blocking(WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap_or_else(|_| panic!("mosquitto did not listen: {}", broker.output()));

    let Some(collectors) = CollectorSpec::new(backend, &dir, port)
        .extra(&broker_tls_toml(&pki, "stocksync-collector"))
        .warehouses(&["ams", "ber"])
        .start()
        .await
    else {
        return;
    };
    collectors.wait_held(&["ams", "ber"]).await;
    let c = collectors.url().to_string();
    // ams-1 also takes scanner input from the same broker, over TLS as well.
    let scanner = format!(
        "[scanner]\ntopic = \"scanners/ams/+/movements\"\n[scanner.broker]\nhost = \"127.0.0.1\"\nport = {port}\n{}",
        tls_keys(&pki, "ams-1", "scanner.broker")
    );
    let start_agent = |id: &'static str, warehouse: &'static str| {
        let mut extra = broker_tls_toml(&pki, id);
        if id == "ams-1" {
            extra.push_str(&scanner);
        }
        let toml = agent_toml(&dir, id, warehouse, port, 0, &extra);
        Agent::start(toml_config(toml.as_str()))
    };
    let ams = start_agent("ams-1", "ams").await.expect("ams-1 starts");
    let ber = start_agent("ber-1", "ber").await.expect("ber-1 starts");

    // Both agents' own movements flow over TLS, each acked back to its sender.
    let receipt =
        |sku: &str, q: u32| format!(r#"{{"sku":"{sku}","kind":"receipt","quantity":{q}}}"#);
    post(
        &format!("http://{}/v1/movements", ams.http_addr),
        &receipt("AMS", 5),
        &[],
    )
    .await;
    wait_for("ams-1's receipt counted", WAIT, || async {
        on_hand(&c, "AMS").await == 5
    })
    .await;
    wait_for("ams-1 acked", WAIT, || async { backlog(&ams).await == 0 }).await;
    let mut scanners = Probe::start(&broker_config(
        &pki,
        port,
        "scanners-ams",
        "scanners-ams.password",
        true,
    ));
    scanners
        .connected()
        .await
        .expect("the scanner fleet logs in");
    scanners
        .client
        .publish(
            "scanners/ams/s1/movements",
            rumqttc::QoS::AtLeastOnce,
            false,
            receipt("SCAN", 3),
        )
        .await
        .unwrap();
    wait_for("scanned receipt counted", WAIT, || async {
        on_hand(&c, "SCAN").await == 3
    })
    .await;

    // Agent A, with its own valid certificate and password: its subscriptions work (the
    // retained catalog arrives), but B's acks never reach it and its batch on B's topic
    // never reaches the collector.
    let mut evil = Probe::start(&broker_config(&pki, port, "ams-1", "ams-1.password", true));
    evil.connected().await.expect("ams-1's credentials log in");
    for filter in [
        "stocksync/v1/catalog",
        "stocksync/v1/ber/acks/ber-1",
        "stocksync/v1/+/acks/#",
    ] {
        evil.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    evil.client
        .publish(
            "stocksync/v1/ber/movements",
            rumqttc::QoS::AtLeastOnce,
            false,
            forged_batch(),
        )
        .await
        .unwrap();
    post(
        &format!("http://{}/v1/movements", ber.http_addr),
        &receipt("BER", 2),
        &[],
    )
    .await;
    wait_for("ber-1's receipt counted", WAIT, || async {
        on_hand(&c, "BER").await == 2
    })
    .await;
    wait_for("ber-1 acked", WAIT, || async { backlog(&ber).await == 0 }).await;
    let seen = evil.publishes(Duration::from_secs(2)).await;
    let topics: Vec<&str> = seen.iter().map(|p| p.topic.as_str()).collect();
    assert!(
        topics.contains(&"stocksync/v1/catalog"),
        "control: the probe receives: {topics:?}"
    );
    assert!(
        topics.iter().all(|t| !t.contains("/acks/")),
        "agent A read acks that are not its own: {topics:?}"
    );
    assert_eq!(
        on_hand(&c, "FORGED").await,
        0,
        "A's batch on B's topic was counted"
    );

    // No certificate, or a wrong password: refused.
    let mut no_cert = Probe::start(&broker_config(&pki, port, "ams-1", "ams-1.password", false));
    assert!(
        no_cert.connected().await.is_err(),
        "a client without a certificate connected"
    );
    let mut wrong = Probe::start(&broker_config(&pki, port, "ams-1", "ber-1.password", true));
    let refused = wrong
        .connected()
        .await
        .expect_err("a wrong password connected");
    assert!(
        refused.contains("refused") || refused.contains("Refused"),
        "{refused}"
    );
    drop((evil, no_cert, wrong, scanners));

    ams.stop().await.unwrap();
    ber.stop().await.unwrap();
    collectors.stop().await;
    drop(broker);
}

fn https_client(pki: &Path) -> ureq::Agent {
    let pem = std::fs::read(pki.join("certs/stocksync-ca.crt")).unwrap();
    let ca = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls)
        .build()
        .into()
}

on_both_backends!(both_processes_serve_https);
async fn both_processes_serve_https(backend: Backend) {
    let dir = TempDir::new("https");
    let pki = make_pki(&dir, free_port(), free_port());
    let broker = Broker::start(&dir);
    let tls = format!(
        "[http.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.join("certs/stocksync-server.crt"),
        pki.join("certs/stocksync-server.key")
    );
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(&tls)
        .warehouses(&["ams"])
        .workers(1)
        .start_in_process()
        .await
    else {
        return;
    };
    let agent = agent_toml(&dir, "ams-1", "ams", broker.port, 0, &tls);
    let agent = Agent::start(toml_config(&agent))
        .await
        .expect("agent starts");
    let a = agent.http_addr.port();
    let c = collectors.in_process()[0].http_addr.port();

    let client = https_client(&pki);
    let results = tokio::task::spawn_blocking(move || {
        let posted = client
            .post(&format!("https://localhost:{a}/v1/movements"))
            .header("content-type", "application/json")
            .send(r#"{"sku":"TEE","kind":"receipt","quantity":4}"#)
            .map(|r| r.status().as_u16());
        let deadline = std::time::Instant::now() + WAIT;
        let mut counted = false;
        while !counted && std::time::Instant::now() < deadline {
            let mut r = client
                .get(&format!("https://127.0.0.1:{c}/v1/stock/TEE"))
                .call()
                .expect("GET over https");
            let v: serde_json::Value =
                serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            counted = v["on_hand"] == 4;
            std::thread::sleep(Duration::from_millis(100));
        }
        // Plain HTTP on an HTTPS listener gets no HTTP answer.
        let plain = ureq::get(&format!("http://127.0.0.1:{c}/healthz")).call();
        (posted, counted, plain.is_err())
    })
    .await
    .unwrap();
    assert_eq!(results.0.expect("POST over https"), 202);
    assert!(results.1, "the movement posted over https was not counted");
    assert!(results.2, "plain HTTP was answered on the HTTPS listener");

    agent.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(webhook_pushes_over_https_to_a_private_ca_and_never_log_the_token);
async fn webhook_pushes_over_https_to_a_private_ca_and_never_log_the_token(backend: Backend) {
    const TOKEN: &str = "hkTk7Q9zXc2mWp4LrV8nB3sD6fG1jH5y";
    let dir = TempDir::new("webhook-tls");
    let pki = make_pki(&dir, free_port(), free_port());
    let broker = Broker::start(&dir);
    let receiver = receivers::Webhook::start_tls(b"hook-secret", TOKEN, &server_tls(&pki)).await;
    std::fs::write(dir.join("hook.secret"), "hook-secret").unwrap();
    std::fs::write(dir.join("hook.token"), TOKEN).unwrap();
    let channel = format!(
        "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n\
         [channels.channel.webhook]\nurl = \"https://localhost:{}/stock\"\nca_file = {:?}\n\
         secret_file = {:?}\ntoken_file = {:?}\n",
        receiver.addr.port(),
        pki.join("certs/stocksync-ca.crt"),
        dir.join("hook.secret"),
        dir.join("hook.token"),
    );
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(&channel)
        .warehouses(&["ams"])
        .env("RUST_LOG", "trace")
        .start_processes()
    else {
        return;
    };
    let agent = Agent::start(agent_config(&dir, "ams-1", "ams", broker.port, 0))
        .await
        .expect("agent starts");
    post(
        &format!("http://{}/v1/movements", agent.http_addr),
        r#"{"sku":"TEE","kind":"receipt","quantity":7}"#,
        &[],
    )
    .await;
    // Signature and bearer token are checked by the receiver: 7 arrives only if both are right.
    receiver.wait_values(WAIT, &[("TEE", 7)]).await;

    // Every collector's log (on PostgreSQL the publishing worker's among them).
    let text: String = collectors.procs.iter().map(|p| p.proc.output()).collect();
    assert!(
        text.contains("TRACE") && text.contains("ureq"),
        "trace logging was not on"
    );
    for window in TOKEN.as_bytes().windows(8) {
        let piece = std::str::from_utf8(window).unwrap();
        assert!(
            !text.contains(piece),
            "the token (`{piece}`...) is in the trace log"
        );
    }
    agent.stop().await.unwrap();
    receiver.stop();
}

on_both_backends!(shopify_adapter_sets_quantities_over_https);
/// On PostgreSQL the worker holding the publisher lease pushes to the shop.
async fn shopify_adapter_sets_quantities_over_https(backend: Backend) {
    let dir = TempDir::new("shopify-tls");
    let pki = make_pki(&dir, free_port(), free_port());
    let broker = Broker::start(&dir);
    let item = "gid://shopify/InventoryItem/1";
    let shop = shopify_fake::FakeShopify::start_tls(&[(item, 0)], &server_tls(&pki)).await;
    std::fs::write(dir.join("shop-token"), shopify_fake::FakeShopify::token()).unwrap();
    let channels = format!(
        "[[catalog.skus]]\nid = \"SKU-A\"\n[[catalog.aliases]]\nsource = \"shop\"\nexternal = \"{item}\"\nsku = \"SKU-A\"\n\
         [[channels.channel]]\nname = \"shop\"\nlocations = [\"*\"]\n[channels.channel.shopify]\n\
         url = \"https://localhost:{}/admin/api/graphql.json\"\nca_file = {:?}\n\
         location_id = \"gid://shopify/Location/1\"\ntoken_file = {:?}\n",
        shop.addr.port(),
        pki.join("certs/stocksync-ca.crt"),
        dir.join("shop-token"),
    );
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(&channels)
        .warehouses(&["ams"])
        .start()
        .await
    else {
        return;
    };
    collectors.wait_held(&["ams"]).await;
    let agent = Agent::start(agent_config(&dir, "ams-1", "ams", broker.port, 0))
        .await
        .expect("agent starts");
    post(
        &format!("http://{}/v1/movements", agent.http_addr),
        r#"{"sku":"SKU-A","kind":"receipt","quantity":6}"#,
        &[],
    )
    .await;
    wait_for(
        "shopify quantity 6 over https",
        Duration::from_secs(20),
        || async { shop.quantity(item) == Some(6) },
    )
    .await;
    agent.stop().await.unwrap();
    collectors.stop().await;
    shop.stop();
}
