//! What the agent and the collector processes share at run time but never send to each other:
//! the HTTP server loop and its token auth (`server`), rustls configs from PEM files (`tls`),
//! MQTT client options from a `BrokerConfig` (`mqtt`) and task supervision (`supervisor`).
//!
//! Kept out of `stocksync-common` on purpose: `common` is the vocabulary that crosses a process
//! boundary (model, wire, topics, catalog, broker options) and does no I/O, so an old agent and a
//! new collector agree on every byte without sharing a server stack.

pub mod flock;
pub mod mqtt;
pub mod openapi;
pub mod server;
pub mod supervisor;
pub mod tls;
