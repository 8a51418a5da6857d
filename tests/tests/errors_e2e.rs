//! Error answers end to end (issue 12, item 5): both real processes answer a malformed JSON
//! body, a body that is not JSON by its content type, and a failure of their own store in the
//! documented shape `{error, field, detail}`, never in axum's plain text; the store's error
//! text goes to the process's log under a reference and never to the client.
//!
//! The store failure is real: a second connection renames a table in the running process's
//! SQLite file, or in the PostgreSQL workers' database (as a botched manual repair would),
//! and renaming it back heals the process. The collector's case runs on both stores
//! (`<case>::sqlite`, `<case>::postgres`), each answering its documented status: `500
//! internal error` on SQLite, `503 store unavailable` on PostgreSQL (a database that fails
//! a read is treated as one that may come back).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
use support::*;

/// POST `body` with exactly the given content type (none when `None`).
fn post_typed(url: &str, body: &str, content_type: Option<&str>) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = agent.post(url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let mut resp = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("POST {url}: {status} is not JSON ({e}): {text}"));
    Reply { status, body }
}

/// The documented error shape: `error` and `detail` strings, `field` a string or null.
fn assert_shape(what: &str, r: &Reply, status: u16, field: Option<&str>) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert!(r.body["error"].is_string(), "{what}: {}", r.body);
    assert!(r.body["detail"].is_string(), "{what}: {}", r.body);
    assert_eq!(r.body["field"].as_str(), field, "{what}: {}", r.body);
}

/// Renames `from` to `to` in the SQLite file a running process has open.
fn rename_table(db: &Path, from: &str, to: &str) {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}"))
        .expect("rename");
}

/// Renames table `from` to `to` in the collector side's store.
fn rename_in_store(collectors: &Collectors, dir: &TempDir, from: &str, to: &str) {
    match &collectors.pg {
        None => rename_table(&dir.join("ledger.db"), from, to),
        Some(pg) => {
            pg.query(&format!("ALTER TABLE {from} RENAME TO {to}"));
        }
    }
}

/// How a store's failure is answered and logged on `backend`: (status, error, the store's
/// own words for a missing table).
fn store_failure(backend: Backend) -> (u16, &'static str, &'static str) {
    match backend {
        Backend::Sqlite => (500, "internal error", "no such table"),
        Backend::Postgres => (503, "store unavailable", "does not exist"),
    }
}

/// A `500` (`503` on PostgreSQL) says "internal error" ("store unavailable") and a
/// reference, not the store's text; the log has both.
fn assert_internal(what: &str, backend: Backend, r: &Reply, log: impl Fn() -> String) {
    let (status, error, store_text) = store_failure(backend);
    assert_shape(what, r, status, None);
    assert_eq!(r.body["error"], error, "{what}: {}", r.body);
    let text = r.body.to_string();
    assert!(!text.contains(store_text), "{what} leaks: {text}");
    assert!(!text.contains(".db"), "{what} leaks a path: {text}");
    let reference = r.body["reference"].as_str().expect("a reference");
    assert!(
        r.body["detail"].as_str().unwrap().contains(reference),
        "{what}: {}",
        r.body
    );
    wait_blocking(Duration::from_secs(10), || {
        log()
            .lines()
            .any(|l| l.contains(reference) && l.contains(store_text))
    })
    .unwrap_or_else(|_| panic!("{what}: reference {reference} not logged:\n{}", log()));
}

on_both_backends!(blocking the_collector_answers_every_error_as_json);
fn the_collector_answers_every_error_as_json(backend: Backend) {
    let dir = TempDir::new("errors-collector");
    let broker = Broker::start(&dir);
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .warehouses(&["ams"])
        .workers(1)
        .start_processes()
    else {
        return;
    };
    let collector = &collectors.procs[0];
    let url = format!("{}/v1/reservations", collector.url);

    // Cut off inside the value of `sku`: the path says where the JSON broke.
    let r = post_typed(&url, r#"{"id": "r1", "sku": "#, Some("application/json"));
    assert_shape("malformed JSON", &r, 400, Some("$.sku"));
    let r = post_typed(
        &url,
        r#"{"id":"r1","order":"o1","sku":"T","warehouse":"ams","quantity":"two"}"#,
        Some("application/json"),
    );
    assert_shape("a bad field", &r, 422, Some("$.quantity"));
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = post_typed(&url, r#"{"id":"r1"}"#, ct);
        assert_shape(
            &format!("content type {ct:?}"),
            &r,
            415,
            Some("content-type"),
        );
    }

    let r = post_typed(&format!("{}/v1/rejects/abc/retry", collector.url), "", None);
    assert_shape("a path parameter", &r, 400, Some("id"));
    let r = get_blocking(&format!("{}/v1/nothing-here", collector.url));
    match backend {
        Backend::Sqlite => assert_shape("no route", &r, 404, Some("path")),
        // A worker cannot tell a path it does not serve yet from one nobody serves.
        Backend::Postgres => {
            assert_shape("no route", &r, 501, None);
            assert_eq!(r.body["error"], "not_supported_on_backend", "{}", r.body);
        }
    }
    let r = post_typed(
        &format!("{}/v1/stock", collector.url),
        "{}",
        Some("application/json"),
    );
    assert_shape("a method not served", &r, 405, Some("method"));

    let rejects = format!("{}/v1/rejects", collector.url);
    assert_eq!(get_blocking(&rejects).status, 200);
    rename_in_store(&collectors, &dir, "rejects", "rejects_moved");
    let r = get_blocking(&rejects);
    assert_internal("collector store failure", backend, &r, || {
        collector.proc.output()
    });
    // Long enough for every periodic task to meet the missing table: none may end the process.
    std::thread::sleep(Duration::from_millis(1200));
    rename_in_store(&collectors, &dir, "rejects_moved", "rejects");
    let r = get_blocking(&rejects);
    assert_eq!(r.status, 200, "healed: {}", r.body);

    // A write that fails in the ledger writer: refused as ours, and the writer lives on.
    let freeze = format!("{}/v1/routing/warehouses/ams", collector.url);
    let put = |body: &str| {
        let (r, _) = request_blocking("PUT", &freeze, Some(body), &[]);
        r
    };
    rename_in_store(&collectors, &dir, "routing_frozen", "frozen_moved");
    let r = put(r#"{"frozen": true}"#);
    assert_internal("collector write failure", backend, &r, || {
        collector.proc.output()
    });
    std::thread::sleep(Duration::from_millis(1200));
    rename_in_store(&collectors, &dir, "frozen_moved", "routing_frozen");
    let r = put(r#"{"frozen": true}"#);
    assert_eq!(r.status, 200, "the writer lives on: {}", r.body);
    let health = get_blocking(&format!("{}/healthz", collector.url));
    assert_eq!(health.status, 200, "{}", health.body);
}

#[test]
fn the_agent_answers_every_error_as_json() {
    let dir = TempDir::new("errors-agent");
    let broker = Broker::start(&dir);
    let port = free_port();
    let toml = agent_toml(&dir, "ams-1", "ams", broker.port, port, "");
    let agent = Service::start(&dir, "stocksync-agent", "agent", &toml, port);

    let movements = format!("{}/v1/movements", agent.url);
    let r = post_typed(&movements, r#"{"sku": "MUG", "#, Some("application/json"));
    assert_shape("malformed JSON", &r, 400, Some("$"));
    for (path, ct) in [
        ("/v1/movements", Some("text/plain")),
        ("/v1/movements", None),
        ("/v1/epcis/events", Some("application/xml")),
    ] {
        let good = r#"{"sku":"MUG","kind":"receipt","quantity":1}"#;
        let r = post_typed(&format!("{}{path}", agent.url), good, ct);
        assert_shape(&format!("{path} as {ct:?}"), &r, 415, Some("content-type"));
    }
    // Refused for its type, nothing of it was journaled.
    let status = get_blocking(&format!("{}/v1/status", agent.url));
    assert_eq!(status.body["last_seq"], Value::from(0), "{}", status.body);

    let r = post_typed(&format!("{}/v1/rejects/abc/retry", agent.url), "", None);
    assert_shape("a path parameter", &r, 400, Some("id"));
    let r = get_blocking(&format!("{}/v1/nothing-here", agent.url));
    assert_shape("no route", &r, 404, Some("path"));

    let rejects = format!("{}/v1/rejects", agent.url);
    assert_eq!(get_blocking(&rejects).status, 200);
    let journal = dir.join("journal-ams-1.db");
    rename_table(&journal, "rejects", "rejects_moved");
    let r = get_blocking(&rejects);
    assert_internal("agent store failure", Backend::Sqlite, &r, || {
        agent.proc.output()
    });
    // The reject forwarder meets the missing table too: its failed read must not end the
    // process (the next request below is answered).
    wait_blocking(Duration::from_secs(10), || {
        agent
            .proc
            .output()
            .contains("cannot read rejects to forward")
    })
    .unwrap_or_else(|_| panic!("no failed read logged: {}", agent.proc.output()));
    rename_table(&journal, "rejects_moved", "rejects");
    let r = get_blocking(&rejects);
    assert_eq!(r.status, 200, "healed: {}", r.body);

    // A movement the journal writer cannot store: refused as ours, nothing journaled, and
    // the writer takes the next one.
    let good = r#"{"sku":"MUG","kind":"receipt","quantity":1}"#;
    rename_table(&journal, "movements", "movements_moved");
    let r = post_typed(&movements, good, Some("application/json"));
    assert_internal("agent write failure", Backend::Sqlite, &r, || {
        agent.proc.output()
    });
    // The movement forwarder's read fails as well, and must not end the process either.
    wait_blocking(Duration::from_secs(10), || {
        agent
            .proc
            .output()
            .contains("cannot read the journal to forward")
    })
    .unwrap_or_else(|_| panic!("no failed read logged: {}", agent.proc.output()));
    rename_table(&journal, "movements_moved", "movements");
    let r = post_typed(&movements, good, Some("application/json"));
    assert_eq!(r.status, 202, "the writer lives on: {}", r.body);
    assert_eq!(r.body["first_seq"], Value::from(1), "{}", r.body);
}
