//! Each owner migrates its own tables (the engine's line in `_sqlx_migrations`, the pipeline's in
//! `_snowpatrol_pipeline_migrations`), on PostgreSQL and SQLite; and a database the previous release's combined
//! line migrated, fully or part way, is handed over to the two lines in place: nothing lost, nothing applied
//! twice, idempotent, and safe when replicas start together.

#[macro_use]
mod backends;
mod previous_release;

use snowpatrol_pipeline::{PIPELINE_MIGRATIONS, migrate, schema_ready};
use snowpatrol_store::{COMBINED_LINE_TABLE, Database, ENGINE, Pool};

both_backends!(
    a_new_database_gets_two_lines_and_no_combined_history,
    a_fully_migrated_previous_release_is_handed_over_without_rerunning_anything,
    a_partly_migrated_previous_release_gets_the_rest_from_the_right_line,
);

async fn versions(db: &Database, table: &str) -> Vec<i64> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE success ORDER BY version"
    ));
    match db.pool() {
        Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
    }
}

async fn count(db: &Database, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db.pool() {
        Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    }
}

async fn exec(db: &Database, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match db.pool() {
        Pool::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
        Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap(),
    }
}

async fn table_exists(db: &Database, table: &str) -> bool {
    let sql = match db.pool() {
        Pool::Postgres(_) => format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"),
        Pool::Sqlite(_) => {
            format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
        }
    };
    count(db, &sql).await > 0
}

/// The versions each line has on `db`'s backend, read from the migration files this binary carries.
fn line_versions(db: &Database, engine: bool) -> Vec<i64> {
    let line = if engine { ENGINE } else { PIPELINE_MIGRATIONS };
    let migrator = match db.pool() {
        Pool::Postgres(_) => (line.postgres)(),
        Pool::Sqlite(_) => (line.sqlite)(),
    };
    migrator.iter().map(|m| m.version).collect()
}

/// The schema is ready and each line's record table lists exactly its own versions.
async fn assert_both_lines_applied(db: &Database) {
    assert!(schema_ready(db).await.unwrap());
    assert_eq!(
        versions(db, "_sqlx_migrations").await,
        line_versions(db, true)
    );
    assert_eq!(
        versions(db, "_snowpatrol_pipeline_migrations").await,
        line_versions(db, false)
    );
}

async fn a_new_database_gets_two_lines_and_no_combined_history(db: Database) {
    assert!(!schema_ready(&db).await.unwrap());
    migrate(&db).await.unwrap();
    assert_both_lines_applied(&db).await;
    assert!(!table_exists(&db, COMBINED_LINE_TABLE).await);
    // The engine line alone is not the whole schema.
    let dir = tempfile::tempdir().unwrap();
    let engine_only = match db.pool() {
        Pool::Postgres(_) => {
            Database::connect(&snowpatrol_store::testing::empty_postgres_url().await)
                .await
                .unwrap()
        }
        Pool::Sqlite(_) => Database::open_sqlite_file(&dir.path().join("engine-only.db"))
            .await
            .unwrap(),
    };
    engine_only.migrate().await.unwrap();
    assert!(engine_only.is_ready().await.unwrap());
    assert!(!schema_ready(&engine_only).await.unwrap());
    assert!(!table_exists(&engine_only, "models").await);
}

async fn a_fully_migrated_previous_release_is_handed_over_without_rerunning_anything(db: Database) {
    previous_release::migrate_to(&db, 8).await;
    // Data of every owner, written by the previous release.
    exec(
        &db,
        "INSERT INTO jobs (job_name, paused, schedule, registered_at, updated_at) \
         VALUES ('prep', false, '', '2025-06-01T00:00:00+00:00', '2025-06-01T00:00:00+00:00')",
    )
    .await;
    exec(
        &db,
        "INSERT INTO metering_freshness (account_name, newest_hour, loaded_at) \
         VALUES ('ACME', '2025-06-01T05:00:00+00:00', '2025-06-01T06:00:00+00:00')",
    )
    .await;
    let combined = versions(&db, "_sqlx_migrations").await;
    assert_eq!(combined, (1..=8).collect::<Vec<_>>());

    migrate(&db).await.unwrap();
    assert_both_lines_applied(&db).await;
    // The combined history is kept as it was.
    assert_eq!(versions(&db, COMBINED_LINE_TABLE).await, combined);
    // Nothing ran twice (a second CREATE TABLE would have failed) and nothing was lost.
    assert_eq!(count(&db, "SELECT count(*) FROM jobs").await, 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM metering_freshness").await,
        1
    );

    // Idempotent: a restart changes nothing.
    migrate(&db).await.unwrap();
    assert_eq!(
        versions(&db, "_sqlx_migrations").await,
        line_versions(&db, true)
    );
    assert_eq!(versions(&db, COMBINED_LINE_TABLE).await, combined);
}

async fn a_partly_migrated_previous_release_gets_the_rest_from_the_right_line(db: Database) {
    // Stopped after 0006 (incidents, digests); 0007 (threads) and 0008 (scrape indexes and freshness) are missing.
    previous_release::migrate_to(&db, 6).await;
    exec(
        &db,
        "INSERT INTO warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, \
         start_time, end_time, credits_used, credits_used_compute, credits_used_cloud_services) \
         VALUES ('ACME', 7, 'WH', 'WAREHOUSE_METERING', '2025-06-01T05:00:00+00:00', \
         '2025-06-01T06:00:00+00:00', 1.5, 1.4, 0.1)",
    )
    .await;
    migrate(&db).await.unwrap();
    assert_both_lines_applied(&db).await;
    assert_eq!(
        versions(&db, COMBINED_LINE_TABLE).await,
        (1..=6).collect::<Vec<_>>()
    );
    // The pipeline's 0008 ran (freshness seeded from the hourly row) and so did the engine's (its index).
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metering_freshness WHERE account_name = 'ACME'"
        )
        .await,
        1
    );
    let index = match db.pool() {
        Pool::Postgres(_) => {
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'task_instances_active'"
        }
        Pool::Sqlite(_) => {
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'task_instances_active'"
        }
    };
    assert_eq!(count(&db, index).await, 1);
    // 0007's column exists.
    exec(&db, "SELECT thread_of FROM alerts").await;
}

/// PostgreSQL only: several replicas share one PostgreSQL database, while an SQLite file has one daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_hand_over_once() {
    let url = snowpatrol_store::testing::empty_postgres_url().await;
    let db = Database::connect(&url).await.unwrap();
    previous_release::migrate_to(&db, 8).await;
    // Three replicas, each with its own pool.
    let (r1, r2) = (
        Database::connect(&url).await.unwrap(),
        Database::connect(&url).await.unwrap(),
    );
    let (a, b, c) = tokio::join!(migrate(&db), migrate(&r1), migrate(&r2));
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_both_lines_applied(&db).await;
    assert_eq!(
        versions(&db, COMBINED_LINE_TABLE).await,
        (1..=8).collect::<Vec<_>>()
    );
}
