//! Moving a SQLite collector's ledger into PostgreSQL, for a brand that outgrows one machine.
//!
//! The SQLite file is the truth up to the moment the collector stops, so the move copies it
//! as it is (agents, every ledger row with its decided treatment, the projection, the last
//! counts, reservations and their holds, orders with their history, the rejects queue and
//! the agents' rejects, the drift, conflict, shortfall, discrepancy and reversal records)
//! rather than re-deciding anything: the PostgreSQL workers then go on from exactly where the SQLite collector
//! stood, and agents resending what was unacknowledged are deduplicated by
//! `(agent_id, seq)` as always. The exception queue's own state (statuses, comments) stays
//! behind: the workers' queue folds the moved records again, as new open exceptions. It is
//! one PostgreSQL transaction, checked before COMMIT (row counts and stock sums equal on both
//! sides), and refused while a collector holds the file's lock or when the database already
//! holds a ledger. An open order goes on on the workers: its holds are reservations, its
//! record and history the same JSON on both backends.

use std::path::Path;

use rusqlite::Connection;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::{schema, PgError};
use crate::store::StoreConfig;

/// Rows sent to PostgreSQL per statement.
const CHUNK: usize = 2000;

/// What was moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub agents: u64,
    pub movements: u64,
    pub stock_rows: u64,
    pub reservations: u64,
    pub rejects: u64,
    pub orders: u64,
}

/// Why the move did not happen; nothing was written to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("{0}")]
    Refused(String),
}

/// Moves the ledger at `path` into the database of `store`.
pub async fn move_ledger(path: &Path, store: &StoreConfig) -> Result<Moved, MoveError> {
    if !path.exists() {
        return Err(MoveError::Refused(format!(
            "ledger {} does not exist",
            path.display()
        )));
    }
    let _lock = crate::lock::LedgerLock::acquire(path)?;
    let sqlite = |source| MoveError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    crate::ledger::migrate(&conn, path)?;
    let pool = super::pool_for(store, 1, None)?;
    let mut client = pool.get().await.map_err(PgError::from)?;
    schema::migrate(&mut client).await.map_err(PgError::from)?;
    let tx = client.transaction().await.map_err(PgError::from)?;
    let existing: i64 = tx
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .map_err(PgError::from)?
        .get(0);
    if existing > 0 {
        return Err(MoveError::Refused(format!(
            "the database already holds a ledger ({existing} movements); move into an empty one"
        )));
    }
    let mut moved = Moved {
        agents: 0,
        movements: 0,
        stock_rows: 0,
        reservations: 0,
        rejects: 0,
        orders: 0,
    };
    for table in TABLES {
        let n = copy(&conn, &tx, table).await.map_err(|e| match e {
            CopyError::Sqlite(e) => sqlite(e),
            CopyError::Postgres(e) => MoveError::Postgres(e.into()),
        })?;
        match table.name {
            "agents" => moved.agents = n,
            "ledger" => moved.movements = n,
            "stock" => moved.stock_rows = n,
            "reservations" => moved.reservations = n,
            "rejects" => moved.rejects = n,
            "orders" => moved.orders = n,
            _ => {}
        }
    }
    verify(&conn, &tx).await?;
    tx.commit().await.map_err(PgError::from)?;
    Ok(moved)
}

/// The type of a copied column, as SQLite stores it and PostgreSQL declares it.
#[derive(Clone, Copy)]
enum Col {
    Text,
    OptText,
    Int,
    OptInt,
    Bytes,
}

/// One table copied column for column; `select` reads the SQLite side in `columns` order.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    select: &'static str,
    /// Extra `column = value` pairs only PostgreSQL has.
    extra: &'static str,
}

use Col::*;

const TABLES: &[Table] = &[
    Table {
        name: "agents",
        columns: &[("agent_id", Text), ("journal_id", Int), ("warehouse", Text), ("first_seen_ms", Int), ("last_seen_ms", Int), ("clock_skew_ms", OptInt)],
        select: "SELECT agent_id, journal_id, warehouse, first_seen_ms, last_seen_ms, clock_skew_ms FROM agents",
        extra: "",
    },
    Table {
        name: "ledger",
        columns: &[("agent_id", Text), ("seq", Int), ("sku", Text), ("warehouse", Text), ("bin", Text), ("source", Text), ("kind", Text), ("quantity", Int), ("occurred_at_ms", Int), ("received_at_ms", Int), ("payload", Bytes), ("treatment", Text), ("returns_to", Text), ("transfer", OptText), ("peer", OptText), ("order_ref", OptText)],
        select: "SELECT agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, transfer, peer, order_ref FROM ledger ORDER BY id",
        extra: "applied_by",
    },
    Table {
        name: "stock",
        columns: &[("sku", Text), ("warehouse", Text), ("bin", Text), ("available", Int), ("reserved", Int), ("damaged", Int), ("quality_control", Int), ("in_transit", Int), ("incoming", Int), ("updated_at_ms", Int)],
        select: "SELECT sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming, updated_at_ms FROM stock",
        extra: "",
    },
    Table {
        name: "stock_last_count",
        columns: &[("sku", Text), ("warehouse", Text), ("bin", Text), ("occurred_at_ms", Int), ("agent_id", Text), ("seq", Int)],
        select: "SELECT sku, warehouse, bin, occurred_at_ms, agent_id, seq FROM stock_last_count",
        extra: "",
    },
    Table {
        name: "reservations",
        columns: &[("id", Text), ("order_ref", Text), ("sku", Text), ("warehouse", Text), ("quantity", Int), ("channel", OptText), ("status", Text), ("created_at_ms", Int), ("expires_at_ms", OptInt), ("closed_at_ms", OptInt), ("created_by", OptText), ("closed_by", OptText)],
        select: "SELECT id, order_ref, sku, warehouse, quantity, channel, status, created_at_ms, expires_at_ms, closed_at_ms, created_by, closed_by FROM reservations",
        extra: "",
    },
    Table {
        name: "reservation_holds",
        columns: &[("sku", Text), ("warehouse", Text), ("held", Int)],
        select: "SELECT sku, warehouse, held FROM reservation_holds",
        extra: "",
    },
    Table {
        name: "rejects",
        columns: &[("first_seen_ms", Int), ("last_seen_ms", Int), ("seen_count", Int), ("topic", Text), ("agent_id", OptText), ("first_seq", OptInt), ("last_seq", OptInt), ("reason", Text), ("field", OptText), ("payload", Bytes)],
        select: "SELECT first_seen_ms, last_seen_ms, seen_count, topic, agent_id, first_seq, last_seq, reason, field, payload FROM rejects ORDER BY id",
        extra: "payload_sha256",
    },
    Table {
        name: "orders",
        columns: &[("id", Text), ("idempotency_key", OptText), ("channel", Text), ("state", Text), ("record", Text), ("answer", Text), ("created_at_ms", Int), ("updated_at_ms", Int)],
        select: "SELECT id, idempotency_key, channel, state, record, answer, created_at_ms, updated_at_ms FROM orders",
        extra: "",
    },
    Table {
        name: "order_history",
        columns: &[("order_id", Text), ("at_ms", Int), ("event", Text), ("detail", Text)],
        select: "SELECT order_id, at_ms, event, detail FROM order_history ORDER BY seq",
        extra: "",
    },
    Table {
        name: "routing_frozen",
        columns: &[("warehouse", Text), ("reason", Text), ("at_ms", Int)],
        select: "SELECT warehouse, reason, at_ms FROM routing_frozen",
        extra: "",
    },
    Table {
        name: "routing_daily",
        columns: &[("warehouse", Text), ("day", Text), ("orders", Int)],
        select: "SELECT warehouse, day, orders FROM routing_daily",
        extra: "",
    },
    Table {
        name: "agent_rejects",
        columns: &[("agent_id", Text), ("reject_id", Int), ("received_at_ms", Int), ("warehouse", Text), ("arrived_at_ms", Int), ("source", Text), ("record", OptInt), ("field", Text), ("detail", Text), ("payload", Text)],
        select: "SELECT agent_id, reject_id, received_at_ms, warehouse, arrived_at_ms, source, record, field, detail, payload FROM agent_rejects",
        extra: "",
    },
    // The operator's records, as the ledger last wrote them (`records`).
    Table {
        name: "drift",
        columns: COUNT_RECORD,
        select: "SELECT agent_id, seq, sku, warehouse, bin, source, counted_at, counted_at_ms, expected, counted, difference, recorded_at_ms, revised_at_ms FROM drift",
        extra: "",
    },
    Table {
        name: "conflicts",
        columns: COUNT_RECORD,
        select: "SELECT agent_id, seq, sku, warehouse, bin, source, counted_at, counted_at_ms, expected, counted, difference, recorded_at_ms, revised_at_ms FROM conflicts",
        extra: "",
    },
    Table {
        name: "shortfalls",
        columns: &[("agent_id", Text), ("seq", Int), ("sku", Text), ("warehouse", Text), ("bin", Text), ("kind", Text), ("state", Text), ("occurred_at", Text), ("occurred_at_ms", Int), ("requested", Int), ("held", Int), ("excess", Int), ("recorded_at_ms", Int), ("revised_at_ms", OptInt)],
        select: "SELECT agent_id, seq, sku, warehouse, bin, kind, state, occurred_at, occurred_at_ms, requested, held, excess, recorded_at_ms, revised_at_ms FROM shortfalls",
        extra: "",
    },
    Table {
        name: "discrepancies",
        columns: &[("transfer", Text), ("sku", Text), ("from_warehouse", Text), ("to_warehouse", Text), ("shipped", Int), ("received", Int), ("difference", Int), ("recorded_at_ms", Int), ("updated_at_ms", Int)],
        select: "SELECT transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms FROM discrepancies",
        extra: "",
    },
    Table {
        name: "reversals",
        columns: &[("order_ref", Text), ("sku", Text), ("shipped", Int), ("reversed", Int), ("excess", Int), ("recorded_at_ms", Int), ("updated_at_ms", Int)],
        select: "SELECT order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms FROM reversals",
        extra: "",
    },
];

/// The columns of a drift or conflict record.
const COUNT_RECORD: &[(&str, Col)] = &[
    ("agent_id", Text),
    ("seq", Int),
    ("sku", Text),
    ("warehouse", Text),
    ("bin", Text),
    ("source", Text),
    ("counted_at", Text),
    ("counted_at_ms", Int),
    ("expected", Int),
    ("counted", Int),
    ("difference", Int),
    ("recorded_at_ms", Int),
    ("revised_at_ms", OptInt),
];

enum CopyError {
    Sqlite(rusqlite::Error),
    Postgres(tokio_postgres::Error),
}

/// One column's values of a chunk, typed for PostgreSQL's `unnest`.
enum Values {
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Bytes(Vec<Vec<u8>>),
}

impl Values {
    fn new(col: Col) -> Values {
        match col {
            Text => Values::Text(Vec::new()),
            OptText => Values::OptText(Vec::new()),
            Int => Values::Int(Vec::new()),
            OptInt => Values::OptInt(Vec::new()),
            Bytes => Values::Bytes(Vec::new()),
        }
    }

    fn push(&mut self, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<()> {
        match self {
            Values::Text(v) => v.push(row.get(i)?),
            Values::OptText(v) => v.push(row.get(i)?),
            Values::Int(v) => v.push(row.get(i)?),
            Values::OptInt(v) => v.push(row.get(i)?),
            Values::Bytes(v) => v.push(row.get(i)?),
        }
        Ok(())
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Values::Text(v) => v,
            Values::OptText(v) => v,
            Values::Int(v) => v,
            Values::OptInt(v) => v,
            Values::Bytes(v) => v,
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Values::Text(_) | Values::OptText(_) => "text[]",
            Values::Int(_) | Values::OptInt(_) => "bigint[]",
            Values::Bytes(_) => "bytea[]",
        }
    }
}

/// Copies one table in chunks; returns the rows copied.
async fn copy(conn: &Connection, tx: &Transaction<'_>, table: &Table) -> Result<u64, CopyError> {
    let names: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
    let fresh = || {
        table
            .columns
            .iter()
            .map(|c| Values::new(c.1))
            .collect::<Vec<_>>()
    };
    let mut stmt = conn.prepare(table.select).map_err(CopyError::Sqlite)?;
    let mut rows = stmt.query([]).map_err(CopyError::Sqlite)?;
    let (mut chunk, mut in_chunk, mut total) = (fresh(), 0usize, 0u64);
    loop {
        let row = rows.next().map_err(CopyError::Sqlite)?;
        if let Some(row) = row {
            for (i, values) in chunk.iter_mut().enumerate() {
                values.push(row, i).map_err(CopyError::Sqlite)?;
            }
            in_chunk += 1;
        }
        if in_chunk > 0 && (in_chunk == CHUNK || row.is_none()) {
            insert(tx, table, &names, &chunk)
                .await
                .map_err(CopyError::Postgres)?;
            total += in_chunk as u64;
            (chunk, in_chunk) = (fresh(), 0);
        }
        if row.is_none() {
            return Ok(total);
        }
    }
}

async fn insert(
    tx: &Transaction<'_>,
    table: &Table,
    names: &[&str],
    chunk: &[Values],
) -> Result<(), tokio_postgres::Error> {
    let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().map(Values::param).collect();
    let unnest: Vec<String> = chunk
        .iter()
        .enumerate()
        .map(|(i, v)| format!("${}::{}", i + 1, v.sql_type()))
        .collect();
    let (extra_col, extra_val) = match table.extra {
        "applied_by" => (", applied_by", ", 'sqlite-move'".to_string()),
        "payload_sha256" => (", payload_sha256", ", sha256(m.payload)".to_string()),
        _ => ("", String::new()),
    };
    let sql = format!(
        "INSERT INTO {} ({}{extra_col}) SELECT m.*{extra_val} FROM unnest({}) AS m({})",
        table.name,
        names.join(", "),
        unnest.join(", "),
        names.join(", "),
    );
    tx.execute(&sql, &params).await.map(drop)
}

/// Row counts and stock sums must agree before the move commits.
async fn verify(conn: &Connection, tx: &Transaction<'_>) -> Result<(), MoveError> {
    const CHECKS: &[(&str, &str)] = &[
        ("movements", "SELECT COUNT(*) FROM ledger"),
        ("drift records", "SELECT COUNT(*) FROM drift"),
        ("conflict records", "SELECT COUNT(*) FROM conflicts"),
        ("shortfall records", "SELECT COUNT(*) FROM shortfalls"),
        ("discrepancy records", "SELECT COUNT(*) FROM discrepancies"),
        ("reversal records", "SELECT COUNT(*) FROM reversals"),
        ("reservations", "SELECT COUNT(*) FROM reservations"),
        ("orders", "SELECT COUNT(*) FROM orders"),
        ("order history", "SELECT COUNT(*) FROM order_history"),
        ("available", "SELECT COALESCE(SUM(available), 0) FROM stock"),
        ("reserved", "SELECT COALESCE(SUM(reserved), 0) FROM stock"),
        ("damaged", "SELECT COALESCE(SUM(damaged), 0) FROM stock"),
        (
            "quality_control",
            "SELECT COALESCE(SUM(quality_control), 0) FROM stock",
        ),
        (
            "in_transit",
            "SELECT COALESCE(SUM(in_transit), 0) FROM stock",
        ),
        ("incoming", "SELECT COALESCE(SUM(incoming), 0) FROM stock"),
        (
            "held",
            "SELECT COALESCE(SUM(held), 0) FROM reservation_holds",
        ),
    ];
    for (what, sql) in CHECKS {
        let here: i64 =
            conn.query_row(sql, [], |r| r.get(0))
                .map_err(|source| MoveError::Sqlite {
                    path: "ledger".into(),
                    source,
                })?;
        let there: i64 = tx
            .query_one(&format!("SELECT ({sql})::bigint"), &[])
            .await
            .map_err(PgError::from)?
            .get(0);
        if here != there {
            return Err(MoveError::Refused(format!(
                "{what} differ after the copy ({here} in SQLite, {there} in PostgreSQL); nothing was committed"
            )));
        }
    }
    Ok(())
}
