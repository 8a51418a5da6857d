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

/// The PostgreSQL figures (1, 2 and 3 workers, reservation latency on both backends, and
/// POST -> channel latency on a worker) at tiny sizes; skipped with a notice without PostgreSQL, unless `STOCKSYNC_REQUIRE_POSTGRES=1`.
#[test]
fn the_postgres_figure_runs_at_tiny_sizes() {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|e| e.path().join("bin/initdb").exists()))
        .unwrap_or(false);
    if !installed {
        assert_ne!(
            std::env::var("STOCKSYNC_REQUIRE_POSTGRES").as_deref(),
            Ok("1"),
            "PostgreSQL is not installed and STOCKSYNC_REQUIRE_POSTGRES=1"
        );
        eprintln!("NOTICE: PostgreSQL not installed; skipping the postgres figure's smoke");
        return;
    }
    let rows = stocksync_bench::postgres::run(&stocksync_bench::postgres::PgArgs {
        broker: BrokerKind::Embedded,
        movements: 2000,
        warehouses: 3,
        holds: 50,
    })
    .expect("postgres smoke run");
    stocksync_bench::util::print_rows(&rows);
    // end to end at 1, 2, 3 workers; reservation and order latency on SQLite and PostgreSQL
    assert_eq!(rows.len(), 7);
    // The latency figure on a PostgreSQL worker (202, ack, channel), on each broker.
    let mut brokers = vec![BrokerKind::Embedded];
    if std::env::var("STOCKSYNC_TEST_BROKER").as_deref() == Ok("mosquitto") {
        brokers.push(BrokerKind::Mosquitto);
    }
    for broker in brokers {
        let rows = stocksync_bench::latency::run(&stocksync_bench::latency::LatencyArgs {
            rate: 200.0,
            seconds: 1.0,
            broker,
            backend: stocksync_bench::latency::Backend::Postgres,
        })
        .expect("postgres latency smoke run");
        stocksync_bench::util::print_rows(&rows);
        assert_eq!(rows.len(), 3);
    }
}
