-- Version 1: the ledger file of the last release without a version number (user_version 0).
-- Frozen: a change of layout is a new migration in migrate.rs, never an edit here.
-- Columns added to older files are in v1.rs (ADDED_COLUMNS, then INDEXES).
-- Ledger, projection and the collector's rejects.
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    journal_id INTEGER NOT NULL,
    warehouse TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS ledger_by_stock ON ledger (sku, warehouse, bin);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    available INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    damaged INTEGER NOT NULL DEFAULT 0,
    quality_control INTEGER NOT NULL DEFAULT 0,
    in_transit INTEGER NOT NULL DEFAULT 0,
    incoming INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, warehouse, bin)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stock_by_location ON stock (warehouse, bin);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    seen_count INTEGER NOT NULL DEFAULT 1,
    topic TEXT NOT NULL,
    agent_id TEXT,
    first_seq INTEGER,
    last_seq INTEGER,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (topic, payload)
);
CREATE TABLE IF NOT EXISTS stock_last_count (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sku, warehouse, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    counted_at TEXT NOT NULL,
    counted_at_ms INTEGER NOT NULL,
    expected INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    difference INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    revised_at_ms INTEGER,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    counted_at TEXT NOT NULL,
    counted_at_ms INTEGER NOT NULL,
    expected INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    difference INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    revised_at_ms INTEGER,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS discrepancies (
    transfer TEXT NOT NULL,
    sku TEXT NOT NULL,
    from_warehouse TEXT NOT NULL,
    to_warehouse TEXT NOT NULL,
    shipped INTEGER NOT NULL,
    received INTEGER NOT NULL,
    difference INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (transfer, sku)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reversals (
    order_ref TEXT NOT NULL,
    sku TEXT NOT NULL,
    shipped INTEGER NOT NULL,
    reversed INTEGER NOT NULL,
    excess INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (order_ref, sku)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shortfalls (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    requested INTEGER NOT NULL,
    held INTEGER NOT NULL,
    excess INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    revised_at_ms INTEGER,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS voids (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    voided_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    voided_at_ms INTEGER NOT NULL,
    previous_treatment TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
-- Reservations and the held amount per (SKU, warehouse).
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    order_ref TEXT NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    channel TEXT,
    status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER,
    closed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_by_stock ON reservations (sku, warehouse) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS reservations_by_order ON reservations (order_ref, sku, warehouse);
DROP INDEX IF EXISTS reservations_expiring;
CREATE INDEX IF NOT EXISTS reservations_expiring_at ON reservations (expires_at_ms)
    WHERE status = 'active' AND expires_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS reservation_holds (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    held INTEGER NOT NULL,
    PRIMARY KEY (sku, warehouse)
) WITHOUT ROWID;
-- Orders.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_state ON orders (state, channel, created_at_ms);
CREATE INDEX IF NOT EXISTS orders_by_update ON orders (updated_at_ms);
CREATE TABLE IF NOT EXISTS order_history (
    seq INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_history_by_order ON order_history (order_id, seq);
CREATE TABLE IF NOT EXISTS routing_frozen (
    warehouse TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routing_daily (
    warehouse TEXT NOT NULL,
    day TEXT NOT NULL,
    orders INTEGER NOT NULL,
    PRIMARY KEY (warehouse, day)
) WITHOUT ROWID;
-- The exception queue.
CREATE TABLE IF NOT EXISTS exceptions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    warehouse TEXT,
    channel TEXT,
    sku TEXT,
    source TEXT NOT NULL,
    field TEXT,
    reason TEXT NOT NULL,
    record TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    occurrences INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_at_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exceptions_by_status ON exceptions (status, kind);
CREATE INDEX IF NOT EXISTS exceptions_by_sku ON exceptions (sku);
CREATE TABLE IF NOT EXISTS exception_sources (
    origin TEXT NOT NULL,
    origin_key TEXT NOT NULL,
    exception_id TEXT NOT NULL,
    seen INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    open INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (origin, origin_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exception_sources_by_exception ON exception_sources (exception_id);
CREATE TABLE IF NOT EXISTS exception_events (
    id INTEGER PRIMARY KEY,
    exception_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS exception_events_by_exception ON exception_events (exception_id, id);
CREATE TABLE IF NOT EXISTS exception_cursors (
    origin TEXT PRIMARY KEY,
    cursor_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Rejects forwarded by agents.
CREATE TABLE IF NOT EXISTS agent_rejects (
    agent_id TEXT NOT NULL,
    reject_id INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    warehouse TEXT NOT NULL,
    arrived_at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    record INTEGER,
    field TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (agent_id, reject_id, received_at_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agent_rejects_by_arrival ON agent_rejects (arrived_at_ms);
-- Alerts.
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    fired_at_ms INTEGER NOT NULL,
    cleared_at_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_firing ON alerts (rule, subject) WHERE cleared_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY,
    alert_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    webhook_done INTEGER NOT NULL DEFAULT 0,
    mqtt_done INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS alert_deliveries_pending ON alert_deliveries (id) WHERE webhook_done = 0 OR mqtt_done = 0;
