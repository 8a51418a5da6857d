//! WMS CSV file drops through a real agent and broker into the collector's stock: a BOM,
//! `;` and tab delimiters, quoted fields, GTIN and location-alias columns, a bad row that
//! sends the whole file to `failed/` with its line, a file still being written, the same
//! content dropped twice and row ids shared between files. On both stores
//! (`::sqlite`, `::postgres`: two workers on one database).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;

const WAIT: Duration = Duration::from_secs(15);

const CATALOG: &str = r#"
[catalog]
[[catalog.skus]]
id = "MUG"
gtin = "9520123456788"
packs = { case = 12 }
[[catalog.skus]]
id = "LID"
[[catalog.locations]]
source = "wms"
external = "AMS-A01"
warehouse = "ams"
bin = "A-01"
"#;

async fn wait_file(path: PathBuf) {
    let what = format!("{} to exist", path.display());
    wait_for(&what, WAIT, || {
        let p = path.clone();
        async move { p.exists() }
    })
    .await;
}

async fn wait_available(c: &str, sku: &str, bin: Option<&str>, want: i64) {
    let what = format!("{sku} at ams/{bin:?}: available = {want}");
    wait_for(&what, WAIT, || async {
        stock_row(c, sku, "ams", bin).await["available"] == want
    })
    .await;
}

/// Writes a file under a temp name and renames it into place, as a careful exporter does.
fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    let temp = dir.join(format!("{name}.tmp"));
    std::fs::write(&temp, bytes).expect("write");
    std::fs::rename(&temp, dir.join(name)).expect("rename");
}

on_both_backends!(csv_drops_are_journaled_whole_once);
async fn csv_drops_are_journaled_whole_once(backend: Backend) {
    let dir = TempDir::new("files");
    let folder = dir.join("drop");
    std::fs::create_dir_all(&folder).unwrap();
    let broker = Broker::start(&dir);
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(CATALOG)
        .warehouses(&["ams"])
        .start()
        .await
    else {
        return;
    };
    collectors.wait_held(&["ams"]).await;
    let c = collectors.url().to_string();
    let epcis = dir.join("epcis");
    let extra = format!(
        "[[files]]\npath = {folder:?}\nsource = \"wms\"\npoll_ms = 50\nsettle_ms = 200\n\
         [[files]]\npath = {epcis:?}\nsource = \"wms-epcis\"\nformat = \"epcis\"\npoll_ms = 50\nsettle_ms = 200\n"
    );
    let agent = Agent::start(toml_config(&agent_toml(
        &dir,
        "ams-1",
        "ams",
        broker.port,
        0,
        &extra,
    )))
    .await
    .expect("agent starts");
    let a = format!("http://{}", agent.http_addr);
    wait_for("agent has the catalog", WAIT, || async {
        get(&format!("{a}/v1/status")).await.body["catalog_skus"] == 2
    })
    .await;

    // BOM, `;`, a quoted field holding the delimiter, a GTIN column, a location alias and a case.
    let a_csv = "\u{feff}SKU;GTIN;Location;Quantity;Unit;Kind;Note\n;9520123456788;AMS-A01;2;case;receipt;\"dock 3; morning\"\nLID;;AMS-A01;5;;receipt;\n";
    drop_file(&folder, "a.csv", a_csv.as_bytes());
    wait_file(folder.join("processed/a.csv")).await;
    wait_available(&c, "MUG", Some("A-01"), 24).await;
    wait_available(&c, "LID", Some("A-01"), 5).await;

    // The same content under another name is not counted twice.
    drop_file(&folder, "a-again.csv", a_csv.as_bytes());
    wait_file(folder.join("processed/a-again.csv")).await;
    // Tab-delimited, with row ids: a later file repeating id R-1 counts it once.
    drop_file(
        &folder,
        "b.tsv",
        b"sku\tquantity\tkind\tid\nLID\t1\treceipt\tR-1\n",
    );
    wait_file(folder.join("processed/b.tsv")).await;
    drop_file(
        &folder,
        "c.csv",
        b"sku,quantity,kind,id\nLID,1,receipt,R-1\nLID,2,receipt,R-2\n",
    );
    wait_file(folder.join("processed/c.csv")).await;
    wait_available(&c, "LID", None, 3).await;
    assert_eq!(
        stock_row(&c, "MUG", "ams", Some("A-01")).await["available"],
        24
    );
    assert_eq!(
        stock_row(&c, "LID", "ams", Some("A-01")).await["available"],
        5
    );

    // One bad row refuses the whole file: nothing of it is counted, the errors name the line.
    let bad = "sku,quantity,kind,occurred_at\nMUG,100,receipt,\nMUG,x,receipt,\nMUG,1,receipt,2026-11-25T10:00:00\n";
    drop_file(&folder, "bad.csv", bad.as_bytes());
    wait_file(folder.join("failed/bad.csv.errors.csv")).await;
    assert!(folder.join("failed/bad.csv").exists());
    let errors = std::fs::read_to_string(folder.join("failed/bad.csv.errors.csv")).unwrap();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines[0], "line,column,reason");
    assert!(lines[1].starts_with("3,quantity,"), "{errors}");
    assert!(lines[2].starts_with("4,occurred_at,"), "{errors}");
    let rejects = get(&format!("{a}/v1/rejects")).await.body;
    assert_eq!(
        (&rejects[0]["source"], &rejects[0]["record"]),
        (&"file:wms".into(), &3.into()),
        "{rejects}"
    );

    // A file still being written (temp name) is not read; once renamed it is.
    std::fs::write(
        folder.join("big.csv.part"),
        "sku,quantity,kind\nLID,7,receipt\n",
    )
    .unwrap();
    drop_file(&folder, "marker.csv", b"sku,quantity,kind\nMUG,1,receipt\n");
    wait_file(folder.join("processed/marker.csv")).await;
    wait_available(&c, "MUG", None, 1).await;
    assert!(folder.join("big.csv.part").exists());
    assert_eq!(stock_row(&c, "LID", "ams", None).await["available"], 3);
    std::fs::rename(folder.join("big.csv.part"), folder.join("big.csv")).unwrap();
    wait_file(folder.join("processed/big.csv")).await;
    wait_available(&c, "LID", None, 10).await;
    // The bad file's good rows were never counted.
    assert_eq!(stock_row(&c, "MUG", "ams", None).await["available"], 1);

    // A folder of EPCIS documents: processed per event, like POST /v1/epcis/events; a
    // document with a rejected event goes to failed/ with the event's path, its good
    // events are counted.
    let event = |id: &str, step: &str, quantity: i64| {
        format!(
            r#"{{"type":"ObjectEvent","eventID":"{id}","action":"OBSERVE","eventTime":"2026-11-25T09:00:00Z","eventTimeZoneOffset":"+00:00","bizStep":"{step}","quantityList":[{{"epcClass":"urn:epc:idpat:sgtin:952012.0345678.*","quantity":{quantity}}}]}}"#
        )
    };
    let doc = format!(
        "[{},{}]",
        event("F-1", "receiving", 4),
        event("F-2", "recieving", 9)
    );
    drop_file(&epcis, "events.json", doc.as_bytes());
    wait_file(epcis.join("failed/events.json.errors.csv")).await;
    let errors = std::fs::read_to_string(epcis.join("failed/events.json.errors.csv")).unwrap();
    assert!(
        errors.starts_with("event,field,reason\n1,$[1].bizStep,"),
        "{errors}"
    );
    wait_available(&c, "MUG", None, 5).await;
    drop_file(&epcis, "more.json", event("F-3", "shipping", 2).as_bytes());
    wait_file(epcis.join("processed/more.json")).await;
    wait_available(&c, "MUG", None, 3).await;

    agent.stop().await.expect("agent stops");
    collectors.stop().await;
    drop(broker);
}
