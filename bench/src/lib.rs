//! stocksync benchmarks: one figure per module, each measured beside its physical limit in
//! the same run (see `raw`), reported as a ratio in `docs/BENCHMARKS.md`.
//!
//! Kept out of the product crates on purpose (rumqtt keeps its `benchmarks/` beside the
//! client and broker the same way): figures drive the real `Agent`, `Collector`, embedded
//! broker, Mosquitto and the real binaries, never stand-ins.

pub mod e2e;
pub mod holds;
pub mod ingest;
pub mod inputs;
pub mod latency;
pub mod load;
pub mod orders;
pub mod pipeline;
pub mod postgres;
pub mod raw;
pub mod rss;
pub mod smoke;
pub mod stack;
pub mod store;
pub mod util;
pub mod wire_client;
