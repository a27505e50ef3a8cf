//! The pipeline's own migration line: metering, features, models, anomalies, incidents, reports and alerts.
//!
//! Recorded in `_snowpatrol_pipeline_migrations`, numbered independently of the engine's line (versions 2 to 8
//! kept the numbers they had in the combined line, so a database that line migrated adopts them; see
//! `snowpatrol_store::MigrationLine`).

use snowpatrol_store::{Database, MigrationLine, StoreError};

/// The pipeline's migrations (`crates/snowpatrol-pipeline/migrations`).
pub const PIPELINE: MigrationLine = MigrationLine {
    owner: "pipeline",
    table: "_snowpatrol_pipeline_migrations",
    postgres: || sqlx::migrate!("./migrations/postgres"),
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
};

/// Brings the whole schema up to date: the engine's tables first (the pipeline's scheduling rests on them), then
/// the pipeline's. Idempotent; every replica runs it at start.
pub async fn migrate(db: &Database) -> Result<(), StoreError> {
    db.migrate().await?;
    db.migrate_line(&PIPELINE).await
}

/// True when every engine and pipeline migration this binary knows is applied (the readiness probe).
pub async fn schema_ready(db: &Database) -> Result<bool, StoreError> {
    Ok(db.is_ready().await? && db.line_applied(&PIPELINE).await?)
}
