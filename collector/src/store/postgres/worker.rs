//! Starting one collector worker on the PostgreSQL store: the HTTP reads, reservations and
//! orders, the lease task, a consumer that follows the leases, the consumer of agents'
//! rejects (which follows them too), the channel publisher (which publishes only while this
//! worker holds the publisher lease) and the follower of the change log (for SSE streams). What a worker does
//! not do yet (alerts) it refuses to be configured for, rather than
//! silently not doing it.

use std::sync::Arc;
use std::time::Duration;

use crate::config::CollectorConfig;
use stocksync_common::catalog::Catalog;
use stocksync_runtime::supervisor::Supervisor;
use tokio::sync::watch;

use super::api::{self, PgApp};
use super::channels::lease::PublisherLease;
use super::channels::{PgChannels, Publisher};
use super::leases::{self, Leases, Owned};
use super::{PgStore, Policies};
use crate::authority::Authority;
use crate::consume::{self, Subscriptions};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::store::StoreConfig;
use crate::Collector;

/// The warehouses the workers share out: `[store] warehouses`, `[[locations]]` and the
/// catalog's location aliases.
pub fn warehouses(config: &CollectorConfig, store: &StoreConfig) -> Vec<String> {
    let mut all: Vec<String> = store.warehouses.clone();
    all.extend(config.locations.iter().map(|l| l.warehouse.clone()));
    all.extend(config.catalog.locations.iter().map(|l| l.warehouse.clone()));
    all.sort_unstable();
    all.dedup();
    all
}

/// Starts a worker; `store` is the checked `[store]` table with `backend = "postgres"`.
pub async fn start(config: CollectorConfig, store: StoreConfig) -> anyhow::Result<Collector> {
    let listen = config.http.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} ([http] listen): {e}"))?;
    let Some(broker) = config.broker.clone() else {
        anyhow::bail!("[store] backend = \"postgres\" needs an external [broker] that every worker and agent shares; the embedded broker is for one SQLite collector");
    };
    let worker_id = store.worker_id.clone().unwrap_or_default();
    let shared = warehouses(&config, &store);
    if shared.is_empty() {
        anyhow::bail!("[store] backend = \"postgres\": no warehouses to share out among workers; list them in [store] warehouses or [[locations]]");
    }
    crate::check_channel_warehouses(&config, &shared)?;
    let catalog = Arc::new(Catalog::new(config.catalog.clone())?);
    let orders = Arc::new(crate::orders::Orders::new(
        config.orders.clone(),
        config.channels.channel.iter().map(|c| c.name.clone()),
        catalog.clone(),
    )?);
    let tokens = stocksync_runtime::server::auth::Tokens::load(&config.http.tokens)?;
    let http_addr = listener.local_addr()?;
    let server = stocksync_runtime::server::Server::new(
        listener,
        config.http.tls.as_ref(),
        config.http.limits.clone(),
    )?;
    let metrics = Arc::new(Metrics::default());
    let policies = Policies {
        worker_id: worker_id.clone(),
        authority: Authority::new(&config.locations),
        intake: Intake::new(config.ledger.max_future_skew_secs, Some(&catalog)),
    };
    let pg = PgStore::open(&store, policies, metrics.clone()).await?;
    let channels = Arc::new(PgChannels::resolve(&config, pg.side_pool(2))?);
    let lease = Duration::from_secs(store.lease_secs);
    let leases = Leases::new(pg.side_pool(1), worker_id.clone(), lease, &shared).await?;
    let (owned_tx, owned_rx) = watch::channel(Owned::new());
    let subscriptions = Subscriptions::Owned {
        worker_id: worker_id.clone(),
        owned: owned_rx.clone(),
    };
    crate::presence::check(&broker, &consume::presence(&broker, &subscriptions)?).await?;
    let mut tasks = Supervisor::default();
    let watch_rx = tasks.shutdown_signal();
    tasks.spawn("leases", leases::run(leases, owned_tx, watch_rx.clone()));
    tasks.spawn(
        "consume",
        consume::run(
            broker.clone(),
            pg.clone(),
            metrics.clone(),
            catalog.to_json(),
            subscriptions,
            watch_rx.clone(),
        ),
    );
    tasks.spawn(
        "reroute",
        super::orders::auto_reroute(pg.side_pool(1), orders.clone(), watch_rx.clone()),
    );
    tasks.spawn(
        "expiry",
        super::reserve::expire_every_second(pg.side_pool(1), watch_rx.clone()),
    );
    tasks.spawn(
        "publisher",
        super::channels::run(
            Publisher {
                // The pass and the outbox poll, and each push target's reads and cursor.
                pool: pg.side_pool(2 + 3 * config.channels.channel.len()),
                lease: PublisherLease::new(pg.side_pool(1), worker_id.clone(), lease),
                channels: channels.clone(),
                broker: broker.clone(),
                coalesce: coalesce(&config),
            },
            watch_rx.clone(),
        ),
    );
    let (commands, rejects) = super::agent_rejects::connect(&broker, &worker_id)?;
    tasks.spawn(
        "agent-rejects",
        super::agent_rejects::run(rejects, pg.clone(), owned_rx.clone(), watch_rx.clone()),
    );
    tasks.spawn(
        "channel-follow",
        super::channels::follow::run(pg.side_pool(1), channels.clone(), watch_rx.clone()),
    );
    let deliver = crate::alerts::Deliver::start_as(
        &config.operations,
        &broker,
        Some(format!("stocksync-collector-{worker_id}-alerts")),
        watch_rx.clone(),
    )?;
    tasks.spawn(
        "alerts",
        super::alerts::run(
            pg.side_pool(1),
            config.operations.clone(),
            catalog.clone(),
            deliver,
            watch_rx.clone(),
        ),
    );
    let scheme = server.scheme();
    let router = api::router(Arc::new(PgApp {
        pool: pg.side_pool(store.pool_size),
        catalog,
        metrics,
        tasks: tasks.health(),
        worker_id: worker_id.clone(),
        owned: owned_rx,
        orders,
        channels,
        store: pg.clone(),
        operations: config.operations.clone(),
        commands,
        shutdown: watch_rx.clone(),
    }));
    let router = stocksync_runtime::server::auth::protect(router, tokens, crate::auth::scope_for);
    let http_shutdown = watch_rx;
    tasks.spawn("http", async move {
        server.serve(router, http_shutdown).await?;
        Ok(())
    });
    tracing::info!(%http_addr, scheme, worker = %worker_id, warehouses = shared.len(), "collector worker listening (postgres store)");
    Ok(Collector {
        http_addr,
        broker,
        tasks,
        _lock: None,
    })
}

/// The shortest `coalesce_ms` of the channels: one pass serves them all.
fn coalesce(config: &CollectorConfig) -> Duration {
    let default = config.channels.coalesce_ms;
    let ms = config
        .channels
        .channel
        .iter()
        .map(|c| c.coalesce_ms.unwrap_or(default))
        .min()
        .unwrap_or(default);
    Duration::from_millis(ms)
}
