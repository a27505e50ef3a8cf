//! Fresh databases for tests: a new PostgreSQL database (or SQLite file) per test, so tests never share state.
//!
//! PostgreSQL comes from `SNOWPATROL_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! When it cannot be reached the test fails with the reason: a missing database is a broken test setup, never a
//! reason to skip.

use crate::Database;
use sqlx::{Connection, Executor, PgConnection};

pub fn admin_url() -> String {
    std::env::var("SNOWPATROL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty, migrated PostgreSQL database and returns its URL.
pub async fn fresh_postgres_url() -> String {
    let url = empty_postgres_url().await;
    let db = Database::connect(&url)
        .await
        .expect("connect to test database");
    db.migrate().await.expect("migrate test database");
    db.close().await;
    url
}

/// Creates an empty PostgreSQL database with no migration applied (for upgrade tests) and returns its URL.
pub async fn empty_postgres_url() -> String {
    let admin = admin_url();
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for this test and is not reachable at {}: {e}. Start it (scripts/test.sh does) or set SNOWPATROL_TEST_DATABASE_URL.", crate::redact_url(&admin))
    });
    let name = format!("snowpatrol_test_{}", uuid::Uuid::new_v4().simple());
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin.clone());
    format!("{base}/{name}")
}

pub async fn fresh_postgres() -> Database {
    let url = fresh_postgres_url().await;
    Database::connect(&url)
        .await
        .expect("connect to test database")
}

/// A migrated SQLite database in a temporary directory (kept alive by the returned guard).
pub async fn fresh_sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open_sqlite_file(&dir.path().join("snowpatrol.db"))
        .await
        .expect("open sqlite");
    db.migrate().await.expect("migrate sqlite");
    (db, dir)
}
