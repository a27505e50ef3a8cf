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

/// Creates an empty PostgreSQL database with the engine's migrations applied and returns its URL.
pub async fn fresh_postgres_url() -> String {
    postgres_url_migrated_by(|db| async move { db.migrate().await }).await
}

/// Creates an empty PostgreSQL database, applies `migrate` to it (a product's whole schema) and returns its URL.
pub async fn postgres_url_migrated_by<F, Fut>(migrate: F) -> String
where
    F: FnOnce(Database) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::StoreError>>,
{
    let url = empty_postgres_url().await;
    let db = Database::connect(&url)
        .await
        .expect("connect to test database");
    migrate(db.clone()).await.expect("migrate test database");
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

/// An SQLite database with the engine's migrations applied, in a temporary directory (kept alive by the
/// returned guard).
pub async fn fresh_sqlite() -> (Database, tempfile::TempDir) {
    let (db, dir) = empty_sqlite().await;
    db.migrate().await.expect("migrate sqlite");
    (db, dir)
}

/// An SQLite database with no migration applied, in a temporary directory (kept alive by the returned guard).
pub async fn empty_sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open_sqlite_file(&dir.path().join("snowpatrol.db"))
        .await
        .expect("open sqlite");
    (db, dir)
}
