//! `both_backends!(name, ...)`: each `async fn name(db: Database)` becomes a test on a fresh, EMPTY PostgreSQL
//! database (no migration applied) and one on a new SQLite file, so a test migrates as far as it needs (the
//! upgrade tests stop at an older version and write that schema's data first).

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
            let url = snowpatrol_store::testing::empty_postgres_url().await;
            super::$name(snowpatrol_store::Database::connect(&url).await.expect("connect")).await
        } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let db = snowpatrol_store::Database::open_sqlite_file(&dir.path().join("snowpatrol.db")).await.expect("open sqlite");
            super::$name(db).await
        } )* }
    };
}
