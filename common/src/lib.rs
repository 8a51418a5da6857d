//! The vocabulary every stocksync process shares: what a stock movement is, how it travels
//! between an agent and the collector, the catalog the collector distributes, and how both
//! reach the broker.
//!
//! This crate does no I/O on purpose. Agents in warehouses and the central collector are
//! upgraded at different times; keeping the model and the wire format in one small, stable
//! crate is what lets an old agent and a new collector agree on every byte. What both processes
//! share at run time (HTTP server loop, TLS, MQTT options, supervision) is `stocksync-runtime`.

pub mod agent_reject;
pub mod catalog;
pub mod config;
pub mod gs1;
pub mod model;
pub mod rollback;
pub mod topics;
pub mod wire;

pub use model::{
    Direction, Location, Movement, MovementKind, OccurredAt, References, Sku, BASE_UNIT,
};
