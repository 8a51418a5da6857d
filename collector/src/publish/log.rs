//! Where a push target reads its channel's change log and records what it delivered and
//! what failed, and what a remote system was last seen to hold: the SQLite channel store
//! (`store`), or the channel tables in PostgreSQL for the worker that holds the publisher
//! lease (`store::postgres::channels`). The delivery loop (`target`) and every target
//! (MQTT, webhook, Shopify) are written once against this trait.

use std::collections::BTreeMap;
use std::future::Future;

use super::store::{self, Published, Store};
use super::PublishError;

/// One read of the change log for a target.
pub struct Read {
    /// The newest cursor of the channel.
    pub latest: i64,
    /// The cursor the target has reached once `items` are delivered.
    pub next: i64,
    /// Latest value per SKU, in cursor order.
    pub items: Vec<Published>,
}

/// A channel's change log as a push target sees it.
pub trait ChangeLog: Clone + Send + Sync + 'static {
    /// Where `target` resumes: `None` starts it with a snapshot of every current value.
    fn resume(
        &self,
        channel: &str,
        target: &'static str,
    ) -> impl Future<Output = Result<Option<i64>, PublishError>> + Send;

    /// Every current value (`since` = `None`), or the changes after `since`, at most
    /// `limit` log rows folded to the latest value per SKU.
    fn read(
        &self,
        channel: &str,
        since: Option<i64>,
        limit: usize,
    ) -> impl Future<Output = Result<Read, PublishError>> + Send;

    /// Records that `target` delivered everything up to `cursor`; closes its open errors.
    fn delivered(
        &self,
        channel: &str,
        target: &'static str,
        cursor: i64,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Keeps a failure of `target` in the channel's error queue.
    fn record_error(
        &self,
        channel: &str,
        target: &'static str,
        detail: &str,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// The quantities the remote system of `target` was last seen or set to hold, for those
    /// of `items` it is known for (Shopify's compare-and-set).
    fn remote_quantities(
        &self,
        channel: &str,
        target: &'static str,
        items: Vec<String>,
    ) -> impl Future<Output = Result<BTreeMap<String, i64>, PublishError>> + Send;

    /// Remembers the quantities the remote system of `target` holds.
    fn set_remote_quantities(
        &self,
        channel: &str,
        target: &'static str,
        quantities: BTreeMap<String, i64>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl ChangeLog for Store {
    async fn resume(
        &self,
        channel: &str,
        target: &'static str,
    ) -> Result<Option<i64>, PublishError> {
        let c = channel.to_string();
        self.read(move |conn| store::target_cursor(conn, &c, target))
            .await
    }

    async fn read(
        &self,
        channel: &str,
        since: Option<i64>,
        limit: usize,
    ) -> Result<Read, PublishError> {
        let c = channel.to_string();
        Store::read(self, move |conn| {
            let latest = store::latest_cursor(conn, &c)?;
            let (next, items) = match since {
                None => store::snapshot(conn, &c)?,
                Some(since) => store::changes_since(conn, &c, since, limit)?,
            };
            Ok(Read {
                latest,
                next,
                items,
            })
        })
        .await
    }

    async fn delivered(
        &self,
        channel: &str,
        target: &'static str,
        cursor: i64,
    ) -> Result<(), PublishError> {
        let c = channel.to_string();
        self.run(move |conn| store::delivered(conn, &c, target, cursor))
            .await
    }

    async fn record_error(
        &self,
        channel: &str,
        target: &'static str,
        detail: &str,
    ) -> Result<(), PublishError> {
        let (c, d) = (channel.to_string(), detail.to_string());
        self.run(move |conn| store::record_error(conn, &c, target, &d))
            .await
    }

    async fn remote_quantities(
        &self,
        channel: &str,
        target: &'static str,
        items: Vec<String>,
    ) -> Result<BTreeMap<String, i64>, PublishError> {
        let c = channel.to_string();
        self.read(move |conn| {
            let mut out = BTreeMap::new();
            for item in items {
                if let Some(q) = store::remote_quantity(conn, &c, target, &item)? {
                    out.insert(item, q);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn set_remote_quantities(
        &self,
        channel: &str,
        target: &'static str,
        quantities: BTreeMap<String, i64>,
    ) -> Result<(), PublishError> {
        let c = channel.to_string();
        self.run(move |conn| {
            for (item, q) in &quantities {
                store::set_remote_quantity(conn, &c, target, item, *q)?;
            }
            Ok(())
        })
        .await
    }
}
