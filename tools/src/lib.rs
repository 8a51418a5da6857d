//! Tools around stocksync that are not the product: the one-command demo, the scanner
//! simulator that feeds it (and benchmarks, and operators testing a site), and the oversell
//! simulation of one business day.
//!
//! They sit in their own crate so that load generators never become dependencies of the
//! agent or the collector; they drive the product only through its public entry points.

pub mod demo;
pub mod oversell;
pub mod scenario;
pub mod simulator;
