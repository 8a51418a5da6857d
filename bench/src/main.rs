//! `stocksync-bench <figure>`: runs one figure and prints its rows of the results table.
//! `stocksync-bench smoke` runs every figure at tiny sizes and fails if anything is wrong.

use clap::{Parser, Subcommand};
use stocksync_bench::{e2e, ingest, inputs, latency, orders, postgres, rss, smoke, store, util};

#[derive(Parser)]
#[command(about = "stocksync benchmarks against the physical limit (see docs/BENCHMARKS.md)")]
struct Args {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand)]
enum Figure {
    /// Agent durable ingest (HTTP, batched and single) vs raw SQLite WAL group commit.
    Ingest(ingest::IngestArgs),
    /// End-to-end throughput vs raw broker QoS 1 throughput.
    E2e(e2e::E2eArgs),
    /// Open-loop latency POST -> durable at agent and -> visible at collector.
    Latency(latency::LatencyArgs),
    /// RSS of the real agent and collector processes, idle and under load.
    Rss(rss::RssArgs),
    /// Backlog drain after an outage vs raw broker QoS 1 throughput.
    Drain(e2e::DrainArgs),
    /// End-to-end movements/s on the PostgreSQL store at 1 and 2 workers vs raw INSERTs.
    Postgres(postgres::PgArgs),
    /// Full projection rebuild from a generated ledger vs a raw scan of it.
    Rebuild(store::RebuildArgs),
    /// Stock query latency on a large projection vs the same SQL on a raw connection.
    Query(store::QueryArgs),
    /// Orders of 3 lines over HTTP vs the same transactions straight to the ledger writer;
    /// the hot-SKU race.
    Orders(orders::OrdersArgs),
    /// Agent EPCIS 2.0 ingest (documents of 100 events) vs its JSON ingest in the same run.
    Epcis(inputs::EpcisArgs),
    /// Agent CSV file drop (rows/s, peak RSS) vs its JSON ingest in the same run.
    Csv(inputs::CsvArgs),
    /// Every figure at tiny sizes, in seconds; non-zero exit if anything is wrong.
    Smoke {
        /// Brokers the end-to-end figure runs through.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "embedded,mosquitto"
        )]
        brokers: Vec<stocksync_bench::stack::BrokerKind>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every figure here waits on fsync: other processes' dirty pages written back during a
    // run would be paid by its commits. Flush them first.
    let _ = std::process::Command::new("sync").status();
    eprintln!("load before: {}", util::load_note());
    let rows = match &args.figure {
        Figure::Ingest(a) => ingest::run(a)?,
        Figure::E2e(a) => e2e::run(a)?,
        Figure::Latency(a) => latency::run(a)?,
        Figure::Rss(a) => rss::run(a)?,
        Figure::Drain(a) => e2e::drain(a)?,
        Figure::Postgres(a) => postgres::run(a)?,
        Figure::Rebuild(a) => store::rebuild(a)?,
        Figure::Query(a) => store::query(a)?,
        Figure::Orders(a) => orders::run(a)?,
        Figure::Epcis(a) => inputs::epcis(a)?,
        Figure::Csv(a) => inputs::csv(a)?,
        Figure::Smoke { brokers } => smoke::run(brokers)?,
    };
    util::print_rows(&rows);
    eprintln!("load after: {}", util::load_note());
    Ok(())
}
