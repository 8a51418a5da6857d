//! GS1 EPCIS 2.0 events through a real agent and broker into the collector's stock: every
//! default of the bizStep x disposition table, `epcList` and `quantityList`, URN and
//! Digital Link ids, per-event answers of a mixed document, ignored event types, an
//! error declaration, a duplicate, malformed JSON and an unknown location.
//!
//! Every case runs on both stores (`<case>::sqlite`, `<case>::postgres`: two workers on
//! one database).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// MUG is GTIN 09520123456788 (company prefix 952012), LID is 04012345123456 (4012345).
const CATALOG: &str = r#"
[catalog]
[[catalog.skus]]
id = "MUG"
gtin = "9520123456788"
packs = { CS = 6 }
[[catalog.skus]]
id = "LID"
gtin = "04012345123456"
[[catalog.locations]]
source = "epcis"
external = "9520123456788"
warehouse = "ams"
bin = "A-01"
[[catalog.locations]]
source = "epcis"
external = "0614141123452/254/400"
warehouse = "ams"
bin = "B-02"
[[catalog.locations]]
source = "epcis"
external = "4012345000009"
warehouse = "ber"
"#;

const AT_A01: &str = "urn:epc:id:sgln:952012.345678.0";
const AT_B02: &str = "https://id.gs1.org/414/0614141123452/254/400";
const MUG_CLASS: &str = "urn:epc:class:lgtin:952012.0345678.LOT1";

fn event(id: &str, step: &str, disposition: Option<&str>, extra: Value) -> Value {
    let mut e = json!({
        "type": "ObjectEvent",
        "eventID": id,
        "eventTime": "2026-11-25T09:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "bizStep": step,
        "bizLocation": {"id": AT_A01},
    });
    if let Some(d) = disposition {
        e["disposition"] = d.into();
    }
    for (k, v) in extra.as_object().expect("object").clone() {
        e[k] = v;
    }
    e
}

fn mugs(quantity: i64) -> Value {
    json!([{"epcClass": MUG_CLASS, "quantity": quantity, "uom": "EA"}])
}

async fn post_epcis(agent: &str, body: &str, content_type: &str) -> Reply {
    let (url, body, ct) = (
        format!("{agent}/v1/epcis/events"),
        body.to_string(),
        content_type.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = http
            .post(&url)
            .header("content-type", &ct)
            .send(&body)
            .expect("POST");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    })
    .await
    .expect("post task")
}

/// Posts one event; expects it accepted.
async fn accept(agent: &str, e: Value) -> Value {
    let r = post_epcis(agent, &e.to_string(), "application/json").await;
    assert_eq!(
        (r.status, &r.body["events"][0]["status"]),
        (202, &json!("accepted")),
        "{e} -> {}",
        r.body
    );
    r.body["events"][0].clone()
}

async fn wait_states(c: &str, sku: &str, bin: Option<&str>, want: &[(&str, i64)]) {
    let what = format!("{sku} at ams/{bin:?}: {want:?}");
    wait_for(&what, WAIT, || async {
        let row = stock_row(c, sku, "ams", bin).await;
        want.iter().all(|(f, v)| row[*f] == *v)
    })
    .await;
}

struct Stack {
    agent: Agent,
    c: String,
    a: String,
    collectors: Collectors,
    _broker: Broker,
    _dir: TempDir,
}

/// The broker, the collector side on `backend` and agent ams-1 with `agent_extra`; `None`
/// when `backend` is PostgreSQL and it is not installed.
async fn start(backend: Backend, label: &str, agent_extra: &str) -> Option<Stack> {
    let dir = TempDir::new(label);
    let broker = Broker::start(&dir);
    let collectors = CollectorSpec::new(backend, &dir, broker.port)
        .extra(CATALOG)
        .warehouses(&["ams", "ber"])
        .start()
        .await?;
    collectors.wait_held(&["ams", "ber"]).await;
    let c = collectors.url().to_string();
    let extra = agent_extra.replace("{broker}", &broker.port.to_string());
    let toml = agent_toml(&dir, "ams-1", "ams", broker.port, 0, &extra);
    let agent = Agent::start(toml_config(&toml))
        .await
        .expect("agent starts");
    let a = format!("http://{}", agent.http_addr);
    wait_for("agent has the catalog", WAIT, || async {
        get(&format!("{a}/v1/status")).await.body["catalog_skus"] == 2
    })
    .await;
    Some(Stack {
        agent,
        c,
        a,
        collectors,
        _broker: broker,
        _dir: dir,
    })
}

impl Stack {
    async fn stop(self) {
        self.agent.stop().await.expect("agent stops");
        self.collectors.stop().await;
    }
}

on_both_backends!(every_default_of_the_mapping_table_reaches_the_collector);
async fn every_default_of_the_mapping_table_reaches_the_collector(backend: Backend) {
    let Some(s) = start(backend, "epcis-table", "").await else {
        return;
    };
    let (a, c) = (s.a.as_str(), s.c.as_str());
    let a01 = Some("A-01");

    // receiving, quantityList with an LGTIN class: a receipt.
    accept(
        a,
        event(
            "E-rcv",
            "receiving",
            Some("in_progress"),
            json!({"quantityList": mugs(5)}),
        ),
    )
    .await;
    wait_states(c, "MUG", a01, &[("available", 5)]).await;
    // storing, epcList: one unit per SGTIN URN or Digital Link, counted per GTIN; the
    // location as a Digital Link too; full CBV URIs.
    let e = event(
        "E-sto",
        "urn:epcglobal:cbv:bizstep:storing",
        Some("https://ref.gs1.org/cbv/Disp-sellable_accessible"),
        json!({
            "bizLocation": {"id": "https://id.gs1.org/414/9520123456788"},
            "epcList": ["urn:epc:id:sgtin:952012.0345678.S1", "https://id.gs1.org/01/09520123456788/21/S2",
                        "urn:epc:id:sgtin:4012345.012345.7"],
        }),
    );
    let answer = accept(a, e).await;
    assert_eq!(
        answer["movements"],
        json!(["E-sto:0", "E-sto:1"]),
        "{answer}"
    );
    wait_states(c, "MUG", a01, &[("available", 7)]).await;
    wait_states(c, "LID", a01, &[("available", 1)]).await;
    // A case of 6 in the catalog's pack unit.
    accept(a, event("E-rcv-cs", "receiving", None, json!({"quantityList": [{"epcClass": "https://id.gs1.org/01/09520123456788/10/L2", "quantity": 1.0, "uom": "CS"}]}))).await;
    wait_states(c, "MUG", a01, &[("available", 13)]).await;
    // picking and shipping: shipments; the PO is the order reference.
    let po = json!([{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:9520123456788:SO-1"}]);
    accept(
        a,
        event(
            "E-pck",
            "picking",
            None,
            json!({"quantityList": mugs(1), "bizTransactionList": po}),
        ),
    )
    .await;
    accept(
        a,
        event(
            "E-shp",
            "shipping",
            Some("in_transit"),
            json!({"quantityList": mugs(2), "bizTransactionList": po}),
        ),
    )
    .await;
    wait_states(c, "MUG", a01, &[("available", 10)]).await;
    let history = get(&format!("{c}/v1/stock/MUG/history?location=ams/A-01"))
        .await
        .body;
    let last = history["movements"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&last["kind"], &last["references"]["order"]),
        (&json!("shipment"), &json!("SO-1")),
        "{history}"
    );
    // departing + in_transit: a transfer out; the destination GLN names the peer warehouse.
    accept(a, event("E-dep", "departing", Some("in_transit"), json!({
        "quantityList": mugs(3),
        "bizTransactionList": [{"type": "desadv", "bizTransaction": "https://example.com/desadv/T-1"}],
        "destinationList": [{"type": "location", "destination": "urn:epc:id:sgln:4012345.00000.0"}],
    }))).await;
    wait_states(c, "MUG", a01, &[("available", 7)]).await;
    wait_for("in transit to ber", WAIT, || async {
        stock_row(c, "MUG", "ber", None).await["in_transit"] == 3
    })
    .await;
    // receiving (and arriving) with a transfer reference: a transfer in.
    let desadv = json!([{"type": "desadv", "bizTransaction": "T-2"}]);
    accept(
        a,
        event(
            "E-arr",
            "arriving",
            None,
            json!({"quantityList": mugs(2), "bizTransactionList": desadv}),
        ),
    )
    .await;
    wait_states(c, "MUG", a01, &[("available", 9)]).await;
    // disposition returned (CBV has no returning step): a return to quality control, the
    // order from the PO.
    accept(
        a,
        event(
            "E-ret",
            "receiving",
            Some("returned"),
            json!({"quantityList": mugs(2), "bizTransactionList": po}),
        ),
    )
    .await;
    wait_states(c, "MUG", a01, &[("quality_control", 2), ("available", 9)]).await;
    // inspecting: sellable_accessible releases one, damaged moves one to damaged.
    accept(
        a,
        event(
            "E-ok",
            "inspecting",
            Some("sellable_accessible"),
            json!({"quantityList": mugs(1)}),
        ),
    )
    .await;
    accept(
        a,
        event(
            "E-bad",
            "inspecting",
            Some("damaged"),
            json!({"quantityList": mugs(1)}),
        ),
    )
    .await;
    wait_states(
        c,
        "MUG",
        a01,
        &[("quality_control", 0), ("available", 10), ("damaged", 1)],
    )
    .await;
    // destroying / disposed: a write-off of damaged stock.
    accept(
        a,
        event(
            "E-des",
            "destroying",
            Some("disposed"),
            json!({"quantityList": mugs(1)}),
        ),
    )
    .await;
    wait_states(c, "MUG", a01, &[("damaged", 0), ("on_hand", 10)]).await;
    // cycle_counting and stock_taking: absolute counts, not deltas.
    let later = json!({"eventTime": "2026-11-25T10:00:00+01:00"});
    let mut e = event(
        "E-cnt",
        "cycle_counting",
        None,
        json!({"quantityList": mugs(4)}),
    );
    e["eventTime"] = later["eventTime"].clone();
    accept(a, e).await;
    wait_states(c, "MUG", a01, &[("on_hand", 4)]).await;
    let mut e = event(
        "E-tak",
        "stock_taking",
        None,
        json!({"bizLocation": {"id": AT_B02}, "quantityList": [{"epcClass": "urn:epc:idpat:sgtin:4012345.012345.*", "quantity": 8}]}),
    );
    e["eventTime"] = later["eventTime"].clone();
    accept(a, e).await;
    wait_states(c, "LID", Some("B-02"), &[("on_hand", 8)]).await;
    // The event's time and offset are the movement's.
    let history = get(&format!("{c}/v1/stock/LID/history?location=ams/B-02"))
        .await
        .body;
    assert_eq!(
        history["movements"][0]["occurred_at"], "2026-11-25T10:00:00.000+01:00",
        "{history}"
    );
    s.stop().await;
}

on_both_backends!(a_document_is_answered_per_event);
async fn a_document_is_answered_per_event(backend: Backend) {
    // A configured rule maps a user-extension step; rules go before the defaults.
    let rules = "[epcis]\nrules = [{ biz_step = \"https://example.com/steps/kitting\", kind = \"receipt\" }]\n";
    let Some(s) = start(backend, "epcis-doc", rules).await else {
        return;
    };
    let (a, c) = (s.a.as_str(), s.c.as_str());
    let doc = json!({
        "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-25T09:05:00Z",
        "epcisBody": {"eventList": [
            event("D-1", "receiving", None, json!({"quantityList": mugs(4)})),
            event("D-2", "recieving", None, json!({"quantityList": mugs(100)})),
            {"type": "AggregationEvent", "eventTime": "2026-11-25T09:00:00Z", "eventTimeZoneOffset": "+00:00",
             "action": "ADD", "parentID": "urn:epc:id:sscc:0614141.1234567890", "childEPCs": ["urn:epc:id:sgtin:952012.0345678.9"]},
            event("D-4", "sensor_reporting", None, json!({"sensorElementList": [{"sensorReport": [{"type": "Temperature", "value": 4.0}]}]})),
            event("D-5", "receiving", None, json!({"bizLocation": {"id": "urn:epc:id:sgln:952012.999999.0"}, "quantityList": mugs(100)})),
            event("D-6", "reserving", Some("reserved"), json!({"quantityList": mugs(100)})),
            event("D-7", "https://example.com/steps/kitting", None, json!({"quantityList": mugs(1)})),
            event("D-8", "receiving", None, json!({"quantityList": [{"epcClass": MUG_CLASS, "quantity": 1.5}]})),
        ]}
    });
    let r = post_epcis(a, &doc.to_string(), "application/ld+json").await;
    assert_eq!(r.status, 207, "{}", r.body);
    let status: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        [
            "accepted", "rejected", "ignored", "ignored", "rejected", "ignored", "accepted",
            "rejected"
        ],
        "{}",
        r.body
    );
    let ev = |i: usize| r.body["events"][i].clone();
    assert_eq!(
        ev(1)["field"],
        "$.epcisBody.eventList[1].bizStep",
        "{}",
        r.body
    );
    assert!(ev(2)["reason"]
        .as_str()
        .unwrap()
        .contains("AggregationEvent"));
    assert!(ev(3)["reason"].as_str().unwrap().contains("sensor"));
    assert_eq!(ev(4)["field"], "$.epcisBody.eventList[4].bizLocation.id");
    assert!(
        ev(4)["detail"]
            .as_str()
            .unwrap()
            .contains("unknown location"),
        "{}",
        r.body
    );
    assert!(ev(5)["reason"].as_str().unwrap().contains("reserving"));
    assert_eq!(
        ev(7)["field"],
        "$.epcisBody.eventList[7].quantityList[0].quantity"
    );
    // Rejected events are in the rejects queue with their path; accepted ones are counted.
    let rejects = get(&format!("{a}/v1/rejects")).await.body;
    let fields: Vec<&str> = rejects
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"$.epcisBody.eventList[1].bizStep"),
        "{rejects}"
    );
    assert_eq!(rejects[0]["source"], "epcis:epcis");
    wait_states(c, "MUG", Some("A-01"), &[("available", 5)]).await;

    // The same document again counts nothing twice: the accepted events are duplicates.
    let again = post_epcis(a, &doc.to_string(), "application/json").await;
    assert_eq!(
        (again.status, &again.body["events"][0]["duplicate"]),
        (207, &json!(true)),
        "{}",
        again.body
    );
    // An error declaration reverses D-1 through the ledger with a visible adjustment.
    let mut declared = event("D-1", "receiving", None, json!({"quantityList": mugs(4)}));
    declared["errorDeclaration"] = json!({"declarationTime": "2026-11-25T11:00:00Z", "reason": "urn:epcglobal:cbv:er:incorrect_data"});
    let r = post_epcis(a, &declared.to_string(), "application/json").await;
    assert_eq!(
        (r.status, &r.body["events"][0]["reversed"]),
        (202, &json!(true)),
        "{}",
        r.body
    );
    assert_eq!(r.body["events"][0]["movements"], json!(["D-1:0:r0"]));
    wait_states(c, "MUG", Some("A-01"), &[("available", 1)]).await;
    // Declared twice: still reversed once. A marker receipt shows the collector caught up.
    let r = post_epcis(a, &declared.to_string(), "application/json").await;
    assert_eq!(r.body["events"][0]["duplicate"], true, "{}", r.body);
    accept(
        a,
        event(
            "D-marker",
            "receiving",
            None,
            json!({"quantityList": mugs(10)}),
        ),
    )
    .await;
    wait_states(c, "MUG", Some("A-01"), &[("available", 11)]).await;
    let history = get(&format!("{c}/v1/stock/MUG/history?location=ams/A-01"))
        .await
        .body;
    let kinds: Vec<&str> = history["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "adjustment").count(),
        1,
        "{history}"
    );

    // A declaration that arrives before its event: both are journaled, net zero; the
    // late original is then a duplicate.
    let mut early = event("D-9", "receiving", None, json!({"quantityList": mugs(3)}));
    early["errorDeclaration"] = json!({"declarationTime": "2026-11-25T11:00:00Z"});
    let r = post_epcis(a, &early.to_string(), "application/json").await;
    assert_eq!(r.body["events"][0]["journaled"], 2, "{}", r.body);
    let r = post_epcis(
        a,
        &event("D-9", "receiving", None, json!({"quantityList": mugs(3)})).to_string(),
        "application/json",
    )
    .await;
    assert_eq!(r.body["events"][0]["duplicate"], true, "{}", r.body);
    accept(
        a,
        event(
            "D-marker2",
            "receiving",
            None,
            json!({"quantityList": mugs(1)}),
        ),
    )
    .await;
    wait_states(c, "MUG", Some("A-01"), &[("available", 12)]).await;
    // A count cannot be reversed: refused, naming the declaration.
    let mut count = event(
        "D-10",
        "cycle_counting",
        None,
        json!({"quantityList": mugs(3)}),
    );
    count["errorDeclaration"] = json!({"declarationTime": "2026-11-25T11:00:00Z"});
    let r = post_epcis(a, &count.to_string(), "application/json").await;
    assert_eq!(
        (r.status, &r.body["events"][0]["field"]),
        (422, &json!("$.errorDeclaration")),
        "{}",
        r.body
    );
    s.stop().await;
}

on_both_backends!(bodies_that_are_not_epcis_are_refused_whole);
async fn bodies_that_are_not_epcis_are_refused_whole(backend: Backend) {
    let Some(s) = start(backend, "epcis-bad", "").await else {
        return;
    };
    let a = s.a.as_str();
    let r = post_epcis(a, "{\"type\": \"EPCISDocument\", ", "application/json").await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (400, &json!("$")),
        "{}",
        r.body
    );
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));
    let r = post_epcis(a, "{\"type\": \"EPCISDocument\"}", "application/json").await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (422, &json!("$.epcisBody.eventList")),
        "{}",
        r.body
    );
    let r = post_epcis(a, "[]", "text/plain").await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (415, &json!("content-type")),
        "{}",
        r.body
    );
    // A single event and a bare array are read too; a missing eventTimeZoneOffset is a reject.
    let mut e = event("S-1", "receiving", None, json!({"quantityList": mugs(1)}));
    e.as_object_mut().unwrap().remove("eventTimeZoneOffset");
    let r = post_epcis(a, &json!([e]).to_string(), "application/json").await;
    assert_eq!(
        (r.status, &r.body["events"][0]["field"]),
        (422, &json!("$[0].eventTimeZoneOffset")),
        "{}",
        r.body
    );
    let rejects = get(&format!("{a}/v1/rejects")).await.body;
    assert_eq!(rejects.as_array().map(Vec::len), Some(3), "{rejects}");
    s.stop().await;
}

on_both_backends!(epcis_documents_arrive_on_the_scanner_topic);
async fn epcis_documents_arrive_on_the_scanner_topic(backend: Backend) {
    let scanner = "[scanner]\nepcis_topic = \"scanners/+/epcis\"\n[scanner.broker]\nhost = \"127.0.0.1\"\nport = {broker}\nkeep_alive_secs = 5\n";
    let Some(s) = start(backend, "epcis-mqtt", scanner).await else {
        return;
    };
    let (a, c) = (s.a.as_str(), s.c.as_str());
    let probe = MqttProbe::connect(s._broker.port, "epcis-scanner").await;
    let mut e = event("M-1", "receiving", None, json!({"quantityList": mugs(3)}));
    e.as_object_mut().unwrap().remove("bizLocation");
    let doc = json!([
        e,
        event("M-2", "recieving", None, json!({"quantityList": mugs(1)}))
    ])
    .to_string();
    // Published until the agent's subscription is up; the eventID makes every repeat a duplicate.
    wait_for("the scanner's receipt at the collector", WAIT, || async {
        probe
            .publish("scanners/s1/epcis", doc.clone().into_bytes())
            .await;
        stock_row(c, "MUG", "ams", None).await["available"] == 3
    })
    .await;
    let rejects = get(&format!("{a}/v1/rejects")).await.body;
    assert_eq!(
        rejects[0]["source"], "scanner:scanners/s1/epcis",
        "{rejects}"
    );
    assert_eq!(rejects[0]["field"], "$[1].bizStep");
    let history = get(&format!("{c}/v1/stock/MUG/history?location=ams"))
        .await
        .body;
    assert_eq!(
        history["movements"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    assert_eq!(history["movements"][0]["source"], "scanner");
    s.stop().await;
}
