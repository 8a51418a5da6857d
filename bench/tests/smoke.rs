//! The benchmark harness at tiny sizes, so CI notices when a figure stops running. Needs the
//! `stocksync-agent` and `stocksync-collector` binaries (built by `cargo test --workspace`)
//! and `mosquitto` on the PATH or in /usr/sbin.

#[test]
fn every_figure_runs_at_tiny_sizes() {
    let rows = stocksync_bench::smoke::run().expect("smoke run");
    stocksync_bench::util::print_rows(&rows);
    // ingest 2, e2e 2, latency 2, drain 1, rss 4, rebuild 1, query 2
    assert_eq!(rows.len(), 14);
}
