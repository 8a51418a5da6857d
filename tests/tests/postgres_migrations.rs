//! The PostgreSQL schema is a list of versioned migrations applied at start. A database left
//! at any older version (an older release's workers) must migrate to exactly the schema a
//! new database gets, and keep what it held. Each older version is built here by applying
//! the migrations up to it, with a ledger row written once the ledger exists; then the
//! current migrations run, and the tables, columns and indexes are compared with a fresh
//! database's.
//!
//! Without PostgreSQL installed this test prints a notice and passes; CI sets
//! `STOCKSYNC_REQUIRE_POSTGRES=1`, which makes it fail instead.

mod support;

use stocksync_collector::store::postgres::schema;
use support::postgres::Postgres;
use support::TempDir;
use tokio_postgres::{Client, NoTls};

/// A new database on `pg`, and a client on it.
async fn database(pg: &Postgres, name: &str) -> Client {
    pg.query(&format!("CREATE DATABASE {name} OWNER stocksync"));
    let base = pg.url.rsplit_once('/').expect("a database in the URL").0;
    let url = format!("{base}/{name}");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Tables with their columns, and indexes, as the catalog describes them.
async fn shape(client: &Client) -> Vec<String> {
    let columns = client
        .query(
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || COALESCE(column_default, '')
             FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .expect("columns");
    let indexes = client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
            &[],
        )
        .await
        .expect("indexes");
    columns
        .iter()
        .chain(&indexes)
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_every_older_schema_migrates_to_the_current_one() {
    let dir = TempDir::new("pg-migrations");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let mut fresh = database(&pg, "fresh").await;
    assert_eq!(
        schema::migrate(&mut fresh).await.expect("migrate"),
        schema::LATEST
    );
    let want = shape(&fresh).await;
    assert!(want.iter().any(|c| c.starts_with("ledger.agent_id ")));
    for older in 0..schema::LATEST {
        let mut client = database(&pg, &format!("v{older}")).await;
        assert_eq!(
            schema::migrate_to(&mut client, older)
                .await
                .expect("older schema"),
            older
        );
        if older >= 1 {
            client
                .batch_execute(
                    "INSERT INTO agents (agent_id, journal_id, warehouse, first_seen_ms, last_seen_ms) VALUES ('ams-1', 7, 'ams', 1, 1);
                     INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, applied_by)
                     VALUES ('ams-1', 1, 'MUG', 'ams', '', 'wms', 'receipt', 5, 1, 1, '\\x00', 'apply', 'available', 'w1')",
                )
                .await
                .expect("a ledger row in the older schema");
        }
        assert_eq!(
            schema::migrate(&mut client).await.expect("migrate"),
            schema::LATEST,
            "from version {older}"
        );
        assert_eq!(shape(&client).await, want, "migrated from version {older}");
        // Migrating again is a no-op.
        assert_eq!(
            schema::migrate(&mut client).await.expect("again"),
            schema::LATEST
        );
        if older >= 1 {
            let kept: i64 = client
                .query_one(
                    "SELECT quantity FROM ledger WHERE agent_id = 'ams-1' AND seq = 1",
                    &[],
                )
                .await
                .expect("the row is kept")
                .get(0);
            assert_eq!(kept, 5, "from version {older}");
        }
    }
}
