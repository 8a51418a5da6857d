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
