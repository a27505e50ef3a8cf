//! Fresh databases with the whole schema (engine and pipeline) for tests; see `snowpatrol_store::testing`.
//! Compiled only with the `testing` feature, which the workspace's dev-dependencies enable.

use crate::store::migrations::migrate;
use snowpatrol_store::Database;
use snowpatrol_store::testing::{empty_sqlite, postgres_url_migrated_by};

/// A new PostgreSQL database with every migration applied; returns its URL.
pub async fn fresh_postgres_url() -> String {
    postgres_url_migrated_by(|db| async move { migrate(&db).await }).await
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
    let (db, dir) = empty_sqlite().await;
    migrate(&db).await.expect("migrate sqlite");
    (db, dir)
}
