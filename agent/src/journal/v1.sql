CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS movements (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    journaled_at_ms INTEGER NOT NULL,
    acked_at_ms INTEGER,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS movements_unacked ON movements (seq) WHERE acked_at_ms IS NULL;
CREATE INDEX IF NOT EXISTS movements_refused ON movements (seq) WHERE outcome IS NOT NULL AND outcome <> 'applied';
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    received_at_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    record INTEGER,
    field TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
