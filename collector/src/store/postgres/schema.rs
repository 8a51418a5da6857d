//! The PostgreSQL schema as ordered, versioned migrations, applied at start in one
//! transaction under an advisory lock (workers starting together apply each step once) and
//! recorded in `schema_migrations`. A step is never edited once released; a change is a new
//! step.

use tokio_postgres::Client;

/// `(version, SQL)`, oldest first.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, V1),
    (2, V2),
    (3, V3_ORDERS),
    (4, V4_CHANNELS),
    (5, V5_RECORDS),
    (6, V6_VIEWS),
    (7, V7_CHANNEL_STATE_AND_AGENT_REJECTS),
];

const V1: &str = "
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    journal_id BIGINT NOT NULL,
    warehouse TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    clock_skew_ms BIGINT
);
CREATE TABLE ledger (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    payload BYTEA NOT NULL,
    treatment TEXT NOT NULL,
    returns_to TEXT NOT NULL,
    transfer TEXT,
    peer TEXT,
    order_ref TEXT,
    -- The worker whose transaction inserted the row (operations; the failover test).
    applied_by TEXT NOT NULL,
    UNIQUE (agent_id, seq)
);
CREATE INDEX ledger_by_stock ON ledger (sku, warehouse, bin);
CREATE TABLE stock (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    available BIGINT NOT NULL DEFAULT 0,
    reserved BIGINT NOT NULL DEFAULT 0,
    damaged BIGINT NOT NULL DEFAULT 0,
    quality_control BIGINT NOT NULL DEFAULT 0,
    in_transit BIGINT NOT NULL DEFAULT 0,
    incoming BIGINT NOT NULL DEFAULT 0,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (sku, warehouse, bin)
);
CREATE INDEX stock_by_location ON stock (warehouse, bin);
CREATE TABLE stock_last_count (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (sku, warehouse, bin)
);
CREATE TABLE rejects (
    id BIGSERIAL PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    seen_count BIGINT NOT NULL DEFAULT 1,
    topic TEXT NOT NULL,
    agent_id TEXT,
    first_seq BIGINT,
    last_seq BIGINT,
    reason TEXT NOT NULL,
    field TEXT,
    payload BYTEA NOT NULL,
    payload_sha256 BYTEA NOT NULL,
    UNIQUE (topic, payload_sha256)
);
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    sku TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE workers (
    worker_id TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE leases (
    warehouse TEXT PRIMARY KEY,
    worker_id TEXT,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    generation BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE lease_history (
    id BIGSERIAL PRIMARY KEY,
    warehouse TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL,
    previous_worker TEXT,
    previous_expires_at TIMESTAMPTZ NOT NULL
);
";

/// Reservations (`reserve`): the holds of orders between checkout and shipment.
const V2: &str = "
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    order_ref TEXT NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    channel TEXT,
    status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    closed_at_ms BIGINT,
    created_by TEXT,
    closed_by TEXT
);
CREATE INDEX reservations_by_stock ON reservations (sku, warehouse) WHERE status = 'active';
CREATE INDEX reservations_by_order ON reservations (order_ref, sku, warehouse);
CREATE INDEX reservations_expiring ON reservations (expires_at_ms)
    WHERE status = 'active' AND expires_at_ms IS NOT NULL;
CREATE TABLE reservation_holds (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    held BIGINT NOT NULL,
    PRIMARY KEY (sku, warehouse)
);
CREATE INDEX ledger_shipments_by_order ON ledger (order_ref, sku, warehouse)
    WHERE order_ref IS NOT NULL AND kind = 'shipment';
";

/// Orders (`orders`): the SQLite collector's order tables. An order's record and first
/// answer are its JSON text, as on SQLite; its holds are `reservations` rows.
const V3_ORDERS: &str = "
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX orders_newest ON orders (created_at_ms DESC, id);
CREATE INDEX orders_by_state ON orders (state, channel, created_at_ms DESC);
CREATE TABLE order_history (
    seq BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX order_history_by_order ON order_history (order_id, seq);
CREATE TABLE routing_frozen (
    warehouse TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE TABLE routing_daily (
    warehouse TEXT NOT NULL,
    day TEXT NOT NULL,
    orders BIGINT NOT NULL,
    PRIMARY KEY (warehouse, day)
);
CREATE INDEX agents_by_warehouse ON agents (warehouse);
";

/// Channel publishing (`channels`): the publisher lease, each channel's published value per
/// SKU with the cursor (version) that set it, the change log whose key is the feed cursor,
/// each push target's delivered-up-to cursor, and the channel error queue.
const V4_CHANNELS: &str = "
CREATE TABLE publisher_lease (
    name TEXT PRIMARY KEY,
    worker_id TEXT,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    generation BIGINT NOT NULL DEFAULT 0
);
INSERT INTO publisher_lease (name) VALUES ('publisher');
CREATE TABLE publisher_history (
    id BIGSERIAL PRIMARY KEY,
    worker_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL,
    previous_worker TEXT,
    previous_expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE channel_sellable (
    channel TEXT NOT NULL,
    sku TEXT NOT NULL,
    channel_sku TEXT NOT NULL,
    value BIGINT NOT NULL,
    cursor BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel, sku)
);
CREATE TABLE channel_changes (
    cursor BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    sku TEXT NOT NULL,
    channel_sku TEXT NOT NULL,
    value BIGINT NOT NULL,
    changed_at_ms BIGINT NOT NULL
);
CREATE INDEX channel_changes_by_channel ON channel_changes (channel, cursor);
CREATE TABLE channel_cursors (
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    PRIMARY KEY (channel, target)
);
CREATE TABLE channel_errors (
    id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    seen_count BIGINT NOT NULL DEFAULT 1,
    resolved_at_ms BIGINT
);
CREATE INDEX channel_errors_open ON channel_errors (channel, target, resolved_at_ms);
";

/// The operator's records (`records`): drift, conflicts, shortfalls, transfer
/// discrepancies and reversals, with the SQLite ledger's columns and keys; and the
/// exception queue over them (`exceptions`), as on SQLite.
const V5_RECORDS: &str = "
CREATE TABLE drift (
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    counted_at TEXT NOT NULL,
    counted_at_ms BIGINT NOT NULL,
    expected BIGINT NOT NULL,
    counted BIGINT NOT NULL,
    difference BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    revised_at_ms BIGINT,
    PRIMARY KEY (agent_id, seq)
);
CREATE TABLE conflicts (LIKE drift INCLUDING ALL);
CREATE INDEX drift_by_sku ON drift (sku, warehouse);
CREATE INDEX conflicts_by_sku ON conflicts (sku, warehouse);
CREATE TABLE shortfalls (
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    requested BIGINT NOT NULL,
    held BIGINT NOT NULL,
    excess BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    revised_at_ms BIGINT,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX shortfalls_by_sku ON shortfalls (sku, warehouse);
CREATE TABLE discrepancies (
    transfer TEXT NOT NULL,
    sku TEXT NOT NULL,
    from_warehouse TEXT NOT NULL,
    to_warehouse TEXT NOT NULL,
    shipped BIGINT NOT NULL,
    received BIGINT NOT NULL,
    difference BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (transfer, sku)
);
CREATE TABLE reversals (
    order_ref TEXT NOT NULL,
    sku TEXT NOT NULL,
    shipped BIGINT NOT NULL,
    reversed BIGINT NOT NULL,
    excess BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (order_ref, sku)
);
CREATE INDEX ledger_by_transfer ON ledger (transfer, sku) WHERE transfer IS NOT NULL;
CREATE INDEX ledger_by_order ON ledger (order_ref, sku) WHERE order_ref IS NOT NULL;
ALTER TABLE rejects ADD COLUMN retried_at_ms BIGINT;
CREATE TABLE exceptions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    warehouse TEXT,
    channel TEXT,
    sku TEXT,
    source TEXT NOT NULL,
    field TEXT,
    reason TEXT NOT NULL,
    record TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    occurrences BIGINT NOT NULL,
    status TEXT NOT NULL,
    status_at_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX exceptions_by_status ON exceptions (status, kind);
CREATE INDEX exceptions_by_sku ON exceptions (sku);
CREATE TABLE exception_sources (
    origin TEXT NOT NULL,
    origin_key TEXT NOT NULL,
    exception_id TEXT NOT NULL,
    seen BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    open BOOLEAN NOT NULL DEFAULT true,
    PRIMARY KEY (origin, origin_key)
);
CREATE INDEX exception_sources_by_exception ON exception_sources (exception_id);
CREATE TABLE exception_events (
    id BIGSERIAL PRIMARY KEY,
    exception_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    action TEXT NOT NULL,
    \"by\" TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX exception_events_by_exception ON exception_events (exception_id, id);
CREATE TABLE exception_cursors (
    origin TEXT PRIMARY KEY,
    cursor_ms BIGINT NOT NULL
);
";

/// Voids (`voids`): who voided a movement, why, when, and its treatment before; the
/// ledger row stays, its treatment becomes `voided`. Alerts (`alerts`): the SQLite ledger's
/// alert tables, and the rounds evaluated by all workers.
const V6_VIEWS: &str = "
CREATE TABLE voids (
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    voided_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    voided_at_ms BIGINT NOT NULL,
    previous_treatment TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    fired_at_ms BIGINT NOT NULL,
    cleared_at_ms BIGINT
);
CREATE UNIQUE INDEX alerts_firing ON alerts (rule, subject) WHERE cleared_at_ms IS NULL;
CREATE TABLE alert_deliveries (
    id BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    state TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    webhook_done BOOLEAN NOT NULL DEFAULT false,
    mqtt_done BOOLEAN NOT NULL DEFAULT false,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX alert_deliveries_pending ON alert_deliveries (id) WHERE NOT webhook_done OR NOT mqtt_done;
CREATE TABLE alert_evaluations (
    name TEXT PRIMARY KEY,
    evaluations BIGINT NOT NULL
);
";

/// What the SQLite channel store keeps beside its change log, shared by every worker: the
/// mode set through the API (`channel_state`; `version` tells the publisher a mode moved),
/// every such change (`channel_mode_changes`), and the quantity each remote system was
/// last seen or set to hold (`channel_remote`, Shopify's compare-and-set). And the records
/// agents refused (`agent_rejects`), as the SQLite ledger keeps them, for the exception
/// queue.
const V7_CHANNEL_STATE_AND_AGENT_REJECTS: &str = "
CREATE SEQUENCE channel_state_version;
CREATE TABLE channel_state (
    channel TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    set_by TEXT NOT NULL,
    reason TEXT,
    set_at_ms BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('channel_state_version')
);
CREATE TABLE channel_mode_changes (
    id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    mode TEXT NOT NULL,
    set_by TEXT NOT NULL,
    reason TEXT,
    set_at_ms BIGINT NOT NULL
);
CREATE TABLE channel_remote (
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (channel, target, sku)
);
CREATE TABLE agent_rejects (
    agent_id TEXT NOT NULL,
    reject_id BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    warehouse TEXT NOT NULL,
    arrived_at_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    record BIGINT,
    field TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (agent_id, reject_id, received_at_ms)
);
CREATE INDEX agent_rejects_by_arrival ON agent_rejects (arrived_at_ms);
";

/// Any lock id both sides agree on; only migrations take it.
const MIGRATION_LOCK: i64 = 0x5354_4f43_4b53_594e;

/// Applies every migration the database lacks; returns the schema version.
pub async fn migrate(client: &mut Client) -> Result<i32, tokio_postgres::Error> {
    migrate_to(client, LATEST).await
}

/// The newest schema version this release knows.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies the migrations the database lacks up to version `target` (a database of an
/// older release, for the tests that migrate from every older version).
pub async fn migrate_to(client: &mut Client, target: i32) -> Result<i32, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let mut version = current;
    for (v, sql) in MIGRATIONS
        .iter()
        .filter(|(v, _)| *v > current && *v <= target)
    {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v])
            .await?;
        version = *v;
    }
    tx.commit().await?;
    if version != current {
        tracing::info!(from = current, to = version, "postgres schema migrated");
    }
    Ok(version)
}
