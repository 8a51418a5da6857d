//! Every figure at tiny sizes, in a few seconds, so the harness cannot rot unnoticed: CI runs
//! it (`bench/tests/smoke.rs`). Each figure checks its own outcome (every movement journaled,
//! applied once, acknowledged; rebuild row counts; query answers), so a broken pipeline fails
//! here even though no speed is asserted.

use crate::e2e::{self, DrainArgs, E2eArgs};
use crate::ingest::{self, IngestArgs};
use crate::inputs::{self, CsvArgs, EpcisArgs};
use crate::latency::{self, LatencyArgs};
use crate::orders::{self, OrdersArgs};
use crate::rss::{self, RssArgs};
use crate::stack::BrokerKind;
use crate::store::{self, QueryArgs, RebuildArgs};
use crate::util::Row;

/// Runs every figure at tiny sizes; the end-to-end and latency figures once per broker in
/// `brokers`.
pub fn run(brokers: &[BrokerKind]) -> anyhow::Result<Vec<Row>> {
    let mut rows = ingest::run(&IngestArgs {
        movements: 2000,
        batch: 100,
        batch_threads: 2,
        singles: 200,
        single_threads: 4,
    })?;
    for &broker in brokers {
        rows.extend(e2e::run(&E2eArgs {
            broker,
            movements: 3000,
        })?);
    }
    for &broker in brokers {
        rows.extend(latency::run(&LatencyArgs {
            rate: 200.0,
            seconds: 1.0,
            broker,
            backend: latency::Backend::Sqlite,
        })?);
    }
    rows.extend(e2e::drain(&DrainArgs {
        broker: BrokerKind::Embedded,
        movements: 3000,
    })?);
    rows.extend(rss::run(&RssArgs {
        movements: 2000,
        settle: 0,
    })?);
    rows.extend(store::rebuild(&RebuildArgs {
        rows: 20_000,
        keys: 2000,
    })?);
    rows.extend(store::query(&QueryArgs {
        keys: 2000,
        queries: 50,
    })?);
    rows.extend(orders::run(&OrdersArgs {
        orders: 200,
        clients: 8,
        skus: 50,
        racers: 40,
        units: 20,
        rate: 200.0,
        seconds: 0.5,
    })?);
    rows.extend(inputs::epcis(&EpcisArgs {
        events: 1000,
        threads: 2,
    })?);
    rows.extend(inputs::csv(&CsvArgs { rows: 5000 })?);
    Ok(rows)
}
