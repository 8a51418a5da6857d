//! The ways movements reach the agent. Each path validates with the same rules
//! (`crate::input`) and journals through the same group-commit writer, so a
//! movement means the same whether it came over HTTP, from a scanner, as an EPCIS event or
//! in a WMS file drop.

pub mod epcis;
mod error;
pub mod files;
pub mod http;
pub mod openapi;
pub mod retry;
pub mod scanner;
