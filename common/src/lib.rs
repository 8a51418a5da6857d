//! The vocabulary every stocksync process shares: what a stock movement is, how it travels
//! between an agent and the collector, and how both are configured.
//!
//! This crate does no I/O on purpose. Agents in warehouses and the central collector are
//! upgraded at different times; keeping the model and the wire format in one small, stable
//! crate is what lets an old agent and a new collector agree on every byte. The exceptions are
//! behind features, shared by both processes so they behave alike: `mqtt` (client options),
//! `tls` (rustls configs from PEM files) and `server` (the HTTP server loop and token auth).

pub mod agent_reject;
pub mod catalog;
pub mod config;
pub mod gs1;
pub mod input;
pub mod inputs;
pub mod model;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod rollback;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "supervisor")]
pub mod supervisor;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topics;
pub mod wire;

pub use model::{
    Direction, Location, Movement, MovementKind, OccurredAt, References, Sku, BASE_UNIT,
};
