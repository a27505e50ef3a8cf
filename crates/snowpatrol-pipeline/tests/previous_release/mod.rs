//! Databases as the previous release left them, for upgrade tests.
//!
//! `migrations/` is the combined migration line exactly as releases up to 0.1 shipped it (engine and pipeline
//! tables in one directory, recorded in `_sqlx_migrations`). It is frozen: never edit these files, they are what
//! existing databases were built with.

use snowpatrol_store::{Database, Pool};

/// Applies the previous release's migrations up to and including `version`: builds a database at an older
/// schema, so an upgrade test can fill it the way that release did and then run `snowpatrol_pipeline::migrate`.
pub async fn migrate_to(db: &Database, version: i64) {
    match db.pool() {
        Pool::Postgres(p) => sqlx::migrate!("tests/previous_release/migrations/postgres")
            .run_to(version, p)
            .await
            .expect("migrate postgres to version"),
        Pool::Sqlite(p) => sqlx::migrate!("tests/previous_release/migrations/sqlite")
            .run_to(version, p)
            .await
            .expect("migrate sqlite to version"),
    }
}
