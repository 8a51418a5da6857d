//! Truth at the agent, end to end with a real broker, collector and agent: a source comes
//! from how a record arrived (a scanner claiming to be the WMS is refused, history shows
//! each movement's input path), a clock far ahead is refused or clamped, a reused
//! idempotency key or movement id with different content is a conflict, an agent without
//! a catalog says its records are unvalidated, and a second agent with the same identity
//! fails before it touches the broker.
//!
//! Every case with a collector runs on both stores (`<case>::sqlite`, `<case>::postgres`:
//! two workers on one database); the refused broker login has only an agent.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::config::AgentConfig;
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
use support::*;

const WAIT: Duration = Duration::from_secs(10);
const SCANNER_TOPIC: &str = "scanners/ams/gun-7/movements";

const CATALOG: &str = "[catalog]\n[[catalog.skus]]\nid = \"MUG\"\npacks = { case = 12 }\n";

/// An agent in `ams` whose scanner input listens on the central broker too.
fn agent_with_scanner(dir: &TempDir, broker_port: u16, extra: &str) -> AgentConfig {
    let scanner = format!(
        "[scanner]\ntopic = \"scanners/ams/+/movements\"\n[scanner.broker]\nport = {broker_port}\n{extra}"
    );
    toml_config(&agent_toml(dir, "ams-1", "ams", broker_port, 0, &scanner))
}

struct Site {
    agent: Agent,
    c: String,
    a: String,
    probe: MqttProbe,
    collectors: Collectors,
    _broker: Broker,
}

impl Site {
    /// `None` when `backend` is PostgreSQL and it is not installed.
    async fn start(
        backend: Backend,
        dir: &TempDir,
        catalog: &str,
        agent_extra: &str,
    ) -> Option<Site> {
        let broker = Broker::start(dir);
        let collectors = CollectorSpec::new(backend, dir, broker.port)
            .extra(catalog)
            .warehouses(&["ams"])
            .start()
            .await?;
        collectors.wait_held(&["ams"]).await;
        let agent = Agent::start(agent_with_scanner(dir, broker.port, agent_extra))
            .await
            .expect("agent starts");
        let probe = MqttProbe::connect(broker.port, "gun-7").await;
        let site = Site {
            c: collectors.url().to_string(),
            a: format!("http://{}", agent.http_addr),
            agent,
            probe,
            collectors,
            _broker: broker,
        };
        wait_for("agent connected", WAIT, || async {
            get(&format!("{}/v1/status", site.a)).await.body["broker"] == "connected"
        })
        .await;
        Some(site)
    }

    async fn post(&self, body: Value, headers: &[(&str, &str)]) -> Reply {
        post(
            &format!("{}/v1/movements", self.a),
            &body.to_string(),
            headers,
        )
        .await
    }

    async fn status(&self) -> Value {
        get(&format!("{}/v1/status", self.a)).await.body
    }

    async fn rejects(&self) -> Value {
        get(&format!("{}/v1/rejects", self.a)).await.body
    }

    /// Publishes `payload` as scanner gun 7 until the agent has journaled or refused it
    /// (the agent's subscription may not be live yet when the test starts).
    async fn scan(&self, payload: Value) {
        let before = self.status().await;
        let seen = |s: &Value| (s["last_seq"].clone(), s["rejects"].clone());
        let before = seen(&before);
        wait_for("scanner message handled", WAIT, || async {
            if seen(&self.status().await) != before {
                return true;
            }
            self.probe
                .publish(SCANNER_TOPIC, payload.to_string().into_bytes())
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            seen(&self.status().await) != before
        })
        .await;
    }

    async fn history(&self, sku: &str, location: &str) -> Value {
        get(&format!(
            "{}/v1/stock/{sku}/history?location={location}",
            self.c
        ))
        .await
        .body
    }

    async fn stop(self) {
        self.agent.stop().await.unwrap();
        self.collectors.stop().await;
    }
}

on_both_backends!(a_source_comes_from_the_input_and_history_shows_the_path);
async fn a_source_comes_from_the_input_and_history_shows_the_path(backend: Backend) {
    let dir = TempDir::new("source-binding");
    let Some(site) = Site::start(backend, &dir, "", "").await else {
        return;
    };

    // The reproduction: a scanner claims to be the WMS and sends a count.
    site.scan(
        json!({"sku": "MUG", "kind": "count", "quantity": 500, "bin": "A-01", "source": "wms"}),
    )
    .await;
    let rejects = site.rejects().await;
    assert_eq!(rejects[0]["field"], "$.source", "{rejects}");
    assert_eq!(rejects[0]["source"], format!("scanner:{SCANNER_TOPIC}"));
    assert!(
        rejects[0]["detail"].as_str().unwrap().contains("scanner"),
        "{rejects}"
    );
    assert_eq!(site.status().await["last_seq"], 0, "nothing journaled");

    // Over HTTP the listener speaks for the WMS only: the ERP is refused by path.
    let r = site
        .post(
            json!({"sku": "MUG", "kind": "receipt", "quantity": 1, "source": "erp"}),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("$.source"))
    );
    let r = site
        .post(
            json!([{"sku": "MUG", "kind": "receipt", "quantity": 1},
                   {"sku": "MUG", "kind": "receipt", "quantity": 1, "source": "scanner"}]),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("$[1].source"))
    );
    assert_eq!(site.status().await["rejects"], 3);

    // What each input may say is applied, and the collector's history names the path.
    site.scan(json!({"sku": "MUG", "kind": "receipt", "quantity": 2, "bin": "A-01"}))
        .await;
    let r = site
        .post(
            json!({"sku": "MUG", "kind": "receipt", "quantity": 3, "bin": "A-01"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_for("both applied", WAIT, || async {
        on_hand(&site.c, "MUG").await == 5
    })
    .await;
    let history = site.history("MUG", "ams/A-01").await;
    let inputs: Vec<(Value, Value)> = history["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["source"].clone(), m["input"].clone()))
        .collect();
    assert_eq!(
        inputs,
        [
            (json!("scanner"), json!(format!("scanner:{SCANNER_TOPIC}"))),
            (json!("wms"), json!("http"))
        ],
        "{history}"
    );

    // The collector measured the agent's clock on its v2 batches.
    let agents = get(&format!("{}/v1/agents", site.c)).await.body;
    assert_eq!(agents[0]["agent_id"], "ams-1", "{agents}");
    assert_eq!(agents[0]["warehouse"], "ams");
    let skew = agents[0]["clock_skew_ms"].as_i64().expect("skew measured");
    assert!(skew.abs() < 60_000, "same machine, skew {skew} ms");
    site.stop().await;
}

on_both_backends!(a_count_dated_in_2030_is_refused_at_the_agent);
async fn a_count_dated_in_2030_is_refused_at_the_agent(backend: Backend) {
    let dir = TempDir::new("future-count");
    let Some(site) = Site::start(backend, &dir, "", "").await else {
        return;
    };
    let future = json!({"sku": "MUG", "kind": "count", "quantity": 7, "bin": "A-01",
                        "occurred_at": "2030-01-01T00:00:00Z"});
    let r = site.post(future.clone(), &[]).await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (422, json!("$.occurred_at"))
    );
    assert!(
        r.body["detail"].as_str().unwrap().contains("ahead"),
        "{:?}",
        r.body
    );
    let mut scanned = future.clone();
    scanned["source"] = json!("scanner");
    site.scan(scanned).await;
    let rejects = site.rejects().await;
    assert_eq!(rejects[0]["field"], "$.occurred_at", "{rejects}");
    assert_eq!(rejects[0]["source"], format!("scanner:{SCANNER_TOPIC}"));
    // Later movements still count: nothing froze the bin.
    site.post(
        json!({"sku": "MUG", "kind": "receipt", "quantity": 4, "bin": "A-01"}),
        &[],
    )
    .await;
    wait_for("receipt applied", WAIT, || async {
        on_hand(&site.c, "MUG").await == 4
    })
    .await;
    site.stop().await;
}

on_both_backends!(a_clamping_agent_journals_the_receive_time_with_a_visible_note);
async fn a_clamping_agent_journals_the_receive_time_with_a_visible_note(backend: Backend) {
    let dir = TempDir::new("clamp");
    let Some(site) = Site::start(backend, &dir, "", "[clock]\non_ahead = \"clamp\"\n").await else {
        return;
    };
    let r = site
        .post(
            json!({"sku": "MUG", "kind": "count", "quantity": 7, "bin": "A-01",
                   "occurred_at": "2030-01-01T00:00:00Z"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_for("count applied", WAIT, || async {
        on_hand(&site.c, "MUG").await == 7
    })
    .await;
    let history = site.history("MUG", "ams/A-01").await;
    let m = &history["movements"][0];
    assert!(
        m["note"]
            .as_str()
            .unwrap()
            .starts_with("occurred_at clamped: 2030-01-01"),
        "{history}"
    );
    assert!(!m["occurred_at"].as_str().unwrap().starts_with("2030"));
    // A later shipment is not hidden behind the clamped count.
    site.post(
        json!({"sku": "MUG", "kind": "shipment", "quantity": 2, "bin": "A-01"}),
        &[],
    )
    .await;
    wait_for("shipment applied", WAIT, || async {
        on_hand(&site.c, "MUG").await == 5
    })
    .await;
    site.stop().await;
}

on_both_backends!(a_reused_idempotency_key_with_another_body_is_409);
async fn a_reused_idempotency_key_with_another_body_is_409(backend: Backend) {
    let dir = TempDir::new("reused-key");
    let Some(site) = Site::start(backend, &dir, "", "").await else {
        return;
    };
    let key = [("Idempotency-Key", "batch-42")];
    let first = json!({"sku": "MUG", "kind": "receipt", "quantity": 5});
    assert_eq!(site.post(first.clone(), &key).await.status, 202);
    let r = site.post(first, &key).await;
    assert_eq!((r.status, r.body["replayed"].clone()), (200, json!(true)));
    let other = json!([{"sku": "MUG", "kind": "receipt", "quantity": 9},
                       {"sku": "MUG", "kind": "receipt", "quantity": 1}]);
    let r = site.post(other, &key).await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (409, json!("Idempotency-Key")),
        "{:?}",
        r.body
    );
    assert!(r.body["detail"].as_str().unwrap().contains("batch-42"));
    let rejects = site.rejects().await;
    assert_eq!(rejects[0]["field"], "Idempotency-Key", "{rejects}");
    assert!(rejects[0]["payload"]
        .as_str()
        .unwrap()
        .contains("\"quantity\":9"));
    assert_eq!(
        site.status().await["last_seq"],
        1,
        "the new body was not journaled"
    );
    site.stop().await;
}

on_both_backends!(a_reused_movement_id_with_other_content_is_a_conflict);
async fn a_reused_movement_id_with_other_content_is_a_conflict(backend: Backend) {
    let dir = TempDir::new("reused-id");
    let Some(site) = Site::start(backend, &dir, "", "").await else {
        return;
    };
    let first = json!({"sku": "MUG", "kind": "receipt", "quantity": 5, "id": "mv-1"});
    assert_eq!(site.post(first.clone(), &[]).await.status, 202);
    // An identical resend is a silent duplicate.
    let r = site.post(first, &[]).await;
    assert_eq!(
        (
            r.status,
            r.body["journaled"].clone(),
            r.body["duplicates"].clone()
        ),
        (202, json!(0), json!(1))
    );
    // The same id for another movement is refused, showing both versions.
    let r = site
        .post(
            json!([{"sku": "MUG", "kind": "receipt", "quantity": 1},
                   {"sku": "TEE", "kind": "shipment", "quantity": 2, "id": "mv-1"}]),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (409, json!("$[1].id")),
        "{:?}",
        r.body
    );
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"MUG\"") && detail.contains("\"TEE\""),
        "{detail}"
    );
    assert_eq!(
        site.status().await["last_seq"],
        1,
        "nothing of the batch journaled"
    );
    // On the scanner path the rejects queue is the only place it can show.
    site.scan(
        json!({"sku": "MUG", "kind": "receipt", "quantity": 3, "id": "gun-1", "source": "scanner"}),
    )
    .await;
    site.scan(json!({"sku": "MUG", "kind": "damage", "quantity": 3, "id": "gun-1"}))
        .await;
    let rejects = site.rejects().await;
    assert_eq!(rejects[0]["field"], "$.id", "{rejects}");
    assert!(rejects[0]["detail"].as_str().unwrap().contains("damage"));
    wait_for("first versions applied", WAIT, || async {
        on_hand(&site.c, "MUG").await == 8
    })
    .await;
    site.stop().await;
}

on_both_backends!(an_agent_without_a_catalog_says_its_records_are_unvalidated);
async fn an_agent_without_a_catalog_says_its_records_are_unvalidated(backend: Backend) {
    let dir = TempDir::new("unvalidated");
    let Some(site) = Site::start(backend, &dir, "", "").await else {
        return;
    };
    assert_eq!(site.status().await["validating"], false);
    let r = site
        .post(
            json!({"sku": "NEW-1", "kind": "receipt", "quantity": 2}),
            &[],
        )
        .await;
    assert_eq!((r.status, r.body["validated"].clone()), (202, json!(false)));
    wait_for("applied", WAIT, || async {
        on_hand(&site.c, "NEW-1").await == 2
    })
    .await;
    let history = site.history("NEW-1", "ams").await;
    assert_eq!(history["movements"][0]["validated"], false, "{history}");
    site.stop().await;

    // With the collector's catalog the agent validates, and says so.
    let dir = TempDir::new("validated");
    let Some(site) = Site::start(backend, &dir, CATALOG, "").await else {
        return;
    };
    wait_for("catalog received", WAIT, || async {
        site.status().await["validating"] == true
    })
    .await;
    let r = site
        .post(
            json!({"sku": "MUG", "kind": "receipt", "quantity": 1, "unit": "case"}),
            &[],
        )
        .await;
    assert_eq!((r.status, r.body.get("validated")), (202, None));
    site.stop().await;
}

/// Runs the agent binary with `config_text` and waits (with a deadline) for it to exit.
fn run_second_agent(dir: &TempDir, name: &str, config_text: &str) -> (bool, String) {
    let config = dir.join(&format!("{name}.toml"));
    std::fs::write(&config, config_text).unwrap();
    let mut proc = Proc::spawn(
        &bin("stocksync-agent"),
        &["--config", config.to_str().unwrap()],
        dir.join(&format!("{name}.log")),
    );
    let mut exited = None;
    wait_blocking(WAIT, || {
        exited = proc.try_wait();
        exited.is_some()
    })
    .unwrap_or_else(|_| panic!("second agent still running: {}", proc.output()));
    (exited == Some(0), proc.output())
}

on_both_backends!(a_second_agent_fails_fast_without_touching_the_broker);
async fn a_second_agent_fails_fast_without_touching_the_broker(backend: Backend) {
    let dir = TempDir::new("second-agent");
    let Some(site) = Site::start(backend, &dir, "", "").await else {
        return;
    };
    let port = site.agent.http_addr.port();
    assert_eq!(site.status().await["broker_connects"], 1);

    // Same identity: same journal (and port). The journal lock is taken first.
    let same = agent_toml(&dir, "ams-1", "ams", site._broker.port, port, "");
    let (ok, locked) = run_second_agent(&dir, "same", &same);
    assert!(!ok, "{locked}");
    assert!(
        locked.contains("in use by another agent") && locked.contains("journal-ams-1.db.lock"),
        "{locked}"
    );
    // Another journal on the taken port: the port is named.
    let elsewhere = TempDir::new("second-agent-port");
    let taken = agent_toml(&elsewhere, "ams-1", "ams", site._broker.port, port, "");
    let (ok, output) = run_second_agent(&dir, "port", &taken);
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{output}"
    );
    for output in [&locked, &output] {
        assert!(!output.contains("forwarder connected"), "{output}");
    }

    // The running agent kept its one broker session: a movement still flows through it.
    site.post(json!({"sku": "MUG", "kind": "receipt", "quantity": 1}), &[])
        .await;
    wait_for("movement applied", WAIT, || async {
        on_hand(&site.c, "MUG").await == 1
    })
    .await;
    let status = site.status().await;
    assert_eq!(
        (status["broker"].clone(), status["broker_connects"].clone()),
        (json!("connected"), json!(1)),
        "{status}"
    );
    site.stop().await;
}

on_both_backends!(blocking logs_to_a_file_have_no_colour_codes_and_config_errors_are_said_once);
/// Both binaries, logging to a file: no colour codes, and a config error said once. The
/// collector is the SQLite collector or a PostgreSQL worker (no broker: neither needs one
/// to start).
fn logs_to_a_file_have_no_colour_codes_and_config_errors_are_said_once(backend: Backend) {
    let dir = TempDir::new("plain-logs");
    let agent = agent_toml(&dir, "ams-1", "ams", free_port(), 0, "");
    let config = dir.join("stocksync-agent.toml");
    std::fs::write(&config, &agent).unwrap();
    let proc = Proc::spawn(
        &bin("stocksync-agent"),
        &["--config", config.to_str().unwrap()],
        dir.join("stocksync-agent.log"),
    );
    plain_log_says(&proc, "stocksync-agent", "agent listening");
    drop(proc);
    config_error_said_once("stocksync-agent", &config, &agent);

    let Some(mut collectors) = CollectorSpec::new(backend, &dir, free_port())
        .warehouses(&["ams"])
        .workers(1)
        .start_processes()
    else {
        return;
    };
    let ready = match backend {
        Backend::Sqlite => "collector listening",
        Backend::Postgres => "collector worker listening",
    };
    let collector = &mut collectors.procs[0];
    plain_log_says(&collector.proc, "stocksync-collector", ready);
    collector.kill();
    let text = std::fs::read_to_string(collectors.config_path(0)).unwrap();
    config_error_said_once("stocksync-collector", &collectors.config_path(0), &text);
}

/// `proc` logs `ready` to its file, without colour codes.
fn plain_log_says(proc: &Proc, program: &str, ready: &str) {
    wait_blocking(WAIT, || proc.output().contains(ready))
        .unwrap_or_else(|_| panic!("{program}: {}", proc.output()));
    assert!(!proc.output().contains('\u{1b}'), "{}", proc.output());
}

/// `program` with `text` plus an unknown option in `[broker]` at `config` refuses to
/// start, naming the option once in its message (and once in the line it quotes), without
/// a cause chain.
fn config_error_said_once(program: &str, config: &std::path::Path, text: &str) {
    let bad = text.replacen("[broker]\n", "[broker]\nnot_an_option = 1\n", 1);
    assert_ne!(bad, text, "no [broker] in {text}");
    std::fs::write(config, bad).unwrap();
    let out = std::process::Command::new(bin(program))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("not_an_option").count(), 2, "{program}: {err}");
    assert!(!err.contains("Caused by"), "{program}: {err}");
}

/// A broker that refuses the agent's login: the agent says why in its log and its status
/// (it used to log nothing). Needs Mosquitto (the embedded broker has no passwords), so it
/// runs in the Mosquitto pass of the suites.
#[test]
fn a_refused_broker_login_is_logged_and_shown_in_status() {
    let dir = TempDir::new("refused-login");
    if Broker::start(&dir).kind != BrokerKind::Mosquitto {
        eprintln!("skipped: needs STOCKSYNC_TEST_BROKER=mosquitto");
        return;
    }
    let passwords = dir.join("passwords");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c", passwords.to_str().unwrap(), "ams-1", "right"])
        .output()
        .expect("mosquitto_passwd");
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let conf = dir.join("locked.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    )
    .unwrap();
    let _broker = Proc::spawn(
        std::path::Path::new("/usr/sbin/mosquitto"),
        &["-c", conf.to_str().unwrap()],
        dir.join("locked-broker.log"),
    );
    std::fs::write(dir.join("password"), "wrong").unwrap();
    let http = free_port();
    let text = agent_toml(&dir, "ams-1", "ams", port, http, "").replace(
        "[broker]\n",
        &format!(
            "[broker]\nusername = \"ams-1\"\npassword_file = {:?}\n",
            dir.join("password")
        ),
    );
    let agent = Service::start(&dir, "stocksync-agent", "agent", &text, http);
    let mut status = Value::Null;
    wait_blocking(WAIT, || {
        status = get_blocking(&format!("{}/v1/status", agent.url)).body;
        status["broker_last_error"].is_string()
    })
    .unwrap_or_else(|_| panic!("{status}: {}", agent.proc.output()));
    let error = status["broker_last_error"].as_str().unwrap();
    assert!(
        error.contains("refused the login: not authorized"),
        "{error}"
    );
    assert_eq!(status["broker"], "disconnected");
    wait_blocking(WAIT, || {
        agent
            .proc
            .output()
            .contains("broker refused the connection")
    })
    .unwrap_or_else(|_| panic!("{}", agent.proc.output()));
}

on_both_backends!(a_v1_batch_is_still_applied_with_an_unknown_input_path);
/// An agent from before wire v2 still counts: its v1 batch is applied, its movements show
/// no input path, and no clock skew is claimed for it.
async fn a_v1_batch_is_still_applied_with_an_unknown_input_path(backend: Backend) {
    use stocksync_common::model::*;
    use stocksync_common::wire::{self, Batch};
    let dir = TempDir::new("v1-batch");
    let broker = Broker::start(&dir);
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .warehouses(&["ams"])
        .start()
        .await
    else {
        return;
    };
    collectors.wait_held(&["ams"]).await;
    let c = collectors.url().to_string();
    let mut probe = MqttProbe::connect(broker.port, "old-agent").await;
    probe.subscribe("stocksync/v1/ams/acks/old-agent").await;
    let movement = Movement {
        seq: 1,
        sku: Sku("OLD".into()),
        location: Location {
            warehouse: "ams".into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 4,
        unit: "each".into(),
        unit_quantity: 4,
        occurred_at: stocksync_common::OccurredAt::now(),
        references: References::default(),
        external_id: None,
        note: None,
        origin: Origin::default(),
    };
    let batch = Batch {
        agent_id: "old-agent".into(),
        journal_id: 3,
        warehouse: "ams".into(),
        movements: vec![movement],
        sent_at_ms: None,
    };
    probe
        .publish("stocksync/v1/ams/movements", wire::encode_batch_v1(&batch))
        .await;
    let ack = wire::decode_ack(&probe.next(WAIT).await.payload).unwrap();
    assert_eq!((ack.first_seq, ack.last_seq), (1, 1));
    assert_eq!(on_hand(&c, "OLD").await, 4);
    let history = get(&format!("{c}/v1/stock/OLD/history?location=ams"))
        .await
        .body;
    assert_eq!(history["movements"][0]["input"], Value::Null, "{history}");
    let agents = get(&format!("{c}/v1/agents")).await.body;
    assert_eq!(agents[0]["clock_skew_ms"], Value::Null, "{agents}");
    collectors.stop().await;
}
