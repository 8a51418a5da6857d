//! The benchmark harness at tiny sizes, so CI notices when a figure stops running. Needs the
//! `stocksync-agent` and `stocksync-collector` binaries (built by `cargo test --workspace`).
//! Like the end-to-end suites, `STOCKSYNC_TEST_BROKER=mosquitto` runs the end-to-end figure
//! and the latency figures through a real Mosquitto as well as the embedded broker.

use stocksync_bench::stack::BrokerKind;

#[test]
fn every_figure_runs_at_tiny_sizes() {
    let mut brokers = vec![BrokerKind::Embedded];
    if std::env::var("STOCKSYNC_TEST_BROKER").as_deref() == Ok("mosquitto") {
        brokers.push(BrokerKind::Mosquitto);
    }
    let rows = stocksync_bench::smoke::run(&brokers).expect("smoke run");
    stocksync_bench::util::print_rows(&rows);
    // ingest 2, e2e 1 per broker, latency 3 per broker (202, ack, channel), drain 1, rss 4,
    // rebuild 1, query 2, orders 3 (HTTP vs store, paced latency, hot-SKU race), epcis 1, csv 2
    assert_eq!(rows.len(), 16 + 4 * brokers.len());
}
