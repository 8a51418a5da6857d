//! Where the collector keeps its ledger and projection: the embedded SQLite file (default,
//! one process) or PostgreSQL (several collector workers sharing one database).
//!
//! `consume` hands every batch to an [`Ingest`]; both backends answer after the batch's
//! transaction is durable, so the ack to the agent never runs ahead of the store. The
//! backend is chosen in `[store]`; the SQLite backend is today's `ledger` module unchanged.

pub mod config;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::future::Future;

use stocksync_common::wire::{self, AckOutcome};
use tokio::sync::oneshot;

use crate::ledger::{Ledger, LedgerError, Rejected};

pub use config::{Backend, StoreConfig};

/// What `consume` needs of a store: apply a batch durably, keep what cannot be applied.
pub trait Ingest: Clone + Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Queues a batch; the receiver answers once its transaction has committed.
    fn apply(
        &self,
        received: wire::Received,
        payload: Vec<u8>,
        topic: String,
    ) -> impl Future<Output = Result<Done<Self::Error>, Self::Error>> + Send;

    /// Durably keeps a payload that cannot be applied.
    fn reject(&self, rejected: Rejected) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The answer to one batch, after its commit.
pub type Done<E> = oneshot::Receiver<Result<AckOutcome, E>>;

impl Ingest for Ledger {
    type Error = LedgerError;

    async fn apply(
        &self,
        received: wire::Received,
        payload: Vec<u8>,
        topic: String,
    ) -> Result<Done<LedgerError>, LedgerError> {
        Ledger::apply(self, received, payload, topic).await
    }

    async fn reject(&self, rejected: Rejected) -> Result<(), LedgerError> {
        Ledger::reject(self, rejected).await
    }
}
