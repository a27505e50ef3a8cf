//! Fresh databases with the whole schema (engine and pipeline) for tests; see `snowpatrol_store::testing`.
//! Compiled only with the `testing` feature, which the workspace's dev-dependencies enable.

use crate::store::migrations::migrate;
use snowpatrol_store::Database;

/// A new PostgreSQL database with every migration applied; returns its URL.
pub async fn fresh_postgres_url() -> String {
    let url = snowpatrol_store::testing::empty_postgres_url().await;
    let db = Database::connect(&url)
        .await
        .expect("connect to test database");
    migrate(&db).await.expect("migrate test database");
    db.close().await;
    url
}

/// A new, fully migrated PostgreSQL database.
pub async fn fresh_postgres() -> Database {
    let url = fresh_postgres_url().await;
    Database::connect(&url)
        .await
        .expect("connect to test database")
}

/// A fully migrated SQLite database in a temporary directory (kept alive by the returned guard).
pub async fn fresh_sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Database::open_sqlite_file(&dir.path().join("snowpatrol.db"))
        .await
        .expect("open sqlite");
    migrate(&db).await.expect("migrate sqlite");
    (db, dir)
}
