//! Movement-to-channel latency: POST a movement to an agent at a fixed rate and time its
//! arrival as the channel's retained MQTT message (agent journal -> broker -> collector
//! ledger -> recompute -> channel store -> MQTT). A measurement, not a test: ignored by
//! default; run with
//! `cargo test --release -p stocksync-tests --test channel_latency -- --ignored --nocapture`
//! (both stores; add `::sqlite` or `::postgres` to the filter for one: on PostgreSQL one
//! worker on its own server, which holds the warehouses and the publisher lease). The
//! broker is the suite's (`STOCKSYNC_TEST_BROKER`), a process beside the collector.

#[path = "channels/harness.rs"]
mod harness;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;
use support::backend::on_both_backends;

const MOVEMENTS: u64 = 300;
const RATE_PER_SEC: u64 = 20;

on_both_backends!(
    #[ignore = "measurement; run explicitly"]
    movement_to_channel_mqtt_latency
);
async fn movement_to_channel_mqtt_latency(backend: Backend) {
    let dir = TempDir::new("channel-latency");
    let channels = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\nmqtt = true\n";
    let Some(collector) = Stack::start(backend, &dir, channels).await else {
        return;
    };
    let agent = agent(&dir, &collector, "ams").await;

    // Arrival time of each sellable value (value k = k movements of 1 unit applied).
    let arrivals: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; MOVEMENTS as usize + 1]));
    let opts = rumqttc::MqttOptions::new(
        "latency-sub",
        collector.broker.host.clone(),
        collector.broker.port,
    );
    let (client, mut events) = AsyncClient::new(opts, 1000);
    client
        .subscribe("stocksync/v1/channels/web/sellable/+", QoS::AtMostOnce)
        .await
        .unwrap();
    let a = arrivals.clone();
    let warm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = warm.clone();
    let sub = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                if v["sku"] == "WARM" {
                    w.store(true, std::sync::atomic::Ordering::SeqCst);
                    continue;
                }
                let n = v["sellable"].as_u64().unwrap() as usize;
                let mut a = a.lock().unwrap();
                if n < a.len() && a[n].is_none() {
                    a[n] = Some(Instant::now());
                }
            }
        }
    });

    // Warm-up: every connection (agent, collector, channel publisher, subscriber) is up once a
    // first movement made it all the way; only then does the clock run.
    post_movement(
        &agent,
        json!({"sku": "WARM", "kind": "receipt", "quantity": 1}),
    )
    .await;
    wait_for("warm-up value on MQTT", Duration::from_secs(30), || async {
        warm.load(std::sync::atomic::Ordering::SeqCst).then_some(())
    })
    .await;

    let interval = Duration::from_micros(1_000_000 / RATE_PER_SEC);
    let mut posted = Vec::with_capacity(MOVEMENTS as usize);
    let start = Instant::now();
    for i in 0..MOVEMENTS {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        posted.push(Instant::now());
        post_movement(
            &agent,
            json!({"sku": "LAT", "kind": "receipt", "quantity": 1}),
        )
        .await;
    }
    wait_for("last value on MQTT", Duration::from_secs(30), || async {
        arrivals.lock().unwrap()[MOVEMENTS as usize].map(|_| ())
    })
    .await;

    // Movement k is visible once a value >= k+1 arrived (coalescing may skip values).
    let arrivals = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = (0..MOVEMENTS as usize)
        .map(|k| {
            let seen = arrivals[k + 1..].iter().flatten().min().expect("arrived");
            seen.saturating_duration_since(posted[k])
        })
        .collect();
    let slow: Vec<(usize, u128)> = latencies
        .iter()
        .enumerate()
        .filter(|(_, l)| **l > Duration::from_millis(200))
        .map(|(k, l)| (k, l.as_millis()))
        .collect();
    println!("movements slower than 200 ms (index, ms): {slow:?}");
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{backend:?}: movement -> channel MQTT latency over {MOVEMENTS} movements at {RATE_PER_SEC}/s: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap()
    );
    assert!(
        pct(0.99) < Duration::from_secs(1),
        "p99 must stay under one second"
    );

    sub.abort();
    agent.stop().await.unwrap();
    collector.stop().await.unwrap();
}
