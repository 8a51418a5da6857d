//! HTTP limits end to end (issue 10, item 8): half-sent requests no longer hold a process.
//! Hundreds of connections that send part of their headers, headers but only part of the
//! body, or nothing at all are closed after `[http.limits]`'s timeouts, and a valid POST
//! made while they are open (with more of them than `max_connections`) still succeeds.
//! The collector's cases run on both stores (`<case>::sqlite`, `<case>::postgres`).

mod support;

use std::time::{Duration, Instant};

use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: &str =
    "[http.limits]\nheader_read_timeout_ms = 1000\nrequest_timeout_ms = 2000\nmax_connections = 50\n";
const HALF_OPEN: usize = 150;

/// What each kind of hostile connection sends before going quiet.
fn half_request(i: usize, path: &str) -> String {
    match i % 3 {
        0 => format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-"),
        1 => format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[{{\"sku\":"
        ),
        _ => String::new(),
    }
}

async fn open_half_requests(addr: std::net::SocketAddr, path: &str) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for i in 0..HALF_OPEN {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(half_request(i, path).as_bytes())
            .await
            .expect("send");
        conns.push(s);
    }
    conns
}

/// Waits until the server closed every connection (EOF or reset), reading whatever it sent.
async fn all_closed(conns: Vec<TcpStream>, deadline: Duration) -> Result<usize, String> {
    let until = Instant::now() + deadline;
    let mut timed_out_408 = 0;
    for (i, mut s) in conns.into_iter().enumerate() {
        let mut got = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Err(_) => return Err(format!("connection {i} still open after {deadline:?}")),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
        if got.starts_with(b"HTTP/1.1 408") {
            timed_out_408 += 1;
        }
    }
    Ok(timed_out_408)
}

async fn hold_and_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) {
    let conns = open_half_requests(addr, path).await;
    let started = Instant::now();
    let reply = post(&format!("http://{addr}{path}"), body, headers).await;
    assert!(
        reply.status < 300,
        "a valid POST failed while {HALF_OPEN} half-sent requests were open: {} {:?}",
        reply.status,
        reply.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "POST took {:?}",
        started.elapsed()
    );
    let with_408 = all_closed(conns, Duration::from_secs(10)).await.unwrap();
    // Those that sent complete headers but not the body are answered 408 before closing.
    assert_eq!(with_408, HALF_OPEN / 3, "408 answers to half-sent bodies");
}

/// Held by a variant of the half-sent case: each opens hundreds of connections and times
/// their closing, so the two run one after the other rather than loading each other.
static HALF_SENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

on_both_backends!(half_sent_requests_are_closed_and_valid_ones_still_served);
async fn half_sent_requests_are_closed_and_valid_ones_still_served(backend: Backend) {
    let _one_at_a_time = HALF_SENT.lock().await;
    let dir = TempDir::new("http-limits");
    let broker = Broker::start(&dir);
    let channel = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n";
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(&format!("{LIMITS}{channel}"))
        .warehouses(&["ams"])
        .start()
        .await
    else {
        return;
    };
    let agent = agent_toml(&dir, "ams-1", "ams", broker.port, 0, LIMITS);
    let agent = Agent::start(toml_config(&agent))
        .await
        .expect("agent starts");

    let receipt = r#"{"sku":"TEE","kind":"receipt","quantity":3,"bin":"A-01"}"#;
    hold_and_post(agent.http_addr, "/v1/movements", receipt, &[]).await;

    let c = collectors.url().to_string();
    wait_for("receipt counted", Duration::from_secs(10), || async {
        on_hand(&c, "TEE").await == 3
    })
    .await;
    let reserve = r#"{"id":"r1","order":"SO-1","sku":"TEE","warehouse":"ams","quantity":1}"#;
    let addr = c.trim_start_matches("http://").parse().expect("address");
    hold_and_post(addr, "/v1/reservations", reserve, &[]).await;

    agent.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(trailing_garbage_and_huge_strings_are_refused_by_the_collector);
/// Issue 10, item 9: the collector took trailing garbage after a JSON body and ids of a
/// megabyte. Both are refused with the JSON path, and nothing is held or stored.
async fn trailing_garbage_and_huge_strings_are_refused_by_the_collector(backend: Backend) {
    let dir = TempDir::new("http-bodies");
    let broker = Broker::start(&dir);
    // The workers' one warehouse is not `ams`: nothing reports for `ams` on either store.
    let Some(collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .warehouses(&["ber"])
        .start()
        .await
    else {
        return;
    };
    let c = collectors.url().to_string();

    let garbage = r#"{"id":"r1","order":"SO-1","sku":"TEE","warehouse":"ams","quantity":1}garbage"#;
    let r = post(&format!("{c}/v1/reservations"), garbage, &[]).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["field"], "$", "{:?}", r.body);

    let huge = "x".repeat(1 << 20);
    let order = format!(
        r#"{{"id":"{huge}","channel":"web","lines":[{{"sku":"TEE","quantity":1}}],"ship_to":{{"country":"NL"}}}}"#
    );
    let r = post(&format!("{c}/v1/orders"), &order, &[]).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["field"], "$.id", "{:?}", r.body);

    let void = format!(r#"{{"agent_id":"ams-1","seq":1,"by":"op","reason":"{huge}"}}"#);
    let r = post(&format!("{c}/v1/movements/void"), &void, &[]).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["field"], "$.reason", "{:?}", r.body);

    // Without the garbage the same body is decided on its merits (nothing reports for `ams`).
    let clean = garbage.trim_end_matches("garbage");
    let r = post(&format!("{c}/v1/reservations"), clean, &[]).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["field"], "$.warehouse", "{:?}", r.body);
    collectors.stop().await;
}
