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

/// The pipeline's jobs chained on their datasets (train on features, predict on models) in an engine on `db`,
/// registered; with the pipeline's failure alerts when `failure_alerts`. Start it with
/// `Engine::spawn_daemon`.
pub async fn chained_engine(
    db: &Database,
    pipeline: &std::sync::Arc<crate::Pipeline>,
    settings: snowpatrol_engine::SchedulerSettings,
    failure_alerts: bool,
) -> std::sync::Arc<snowpatrol_engine::Engine> {
    let jobs_cfg: std::collections::BTreeMap<String, snowpatrol_engine::JobConfig> =
        toml::from_str(&format!(
            "[train]\ndatasets = [\"{}\"]\n[predict]\ndatasets = [\"{}\"]\n",
            crate::FEATURES_DATASET,
            crate::MODELS_DATASET
        ))
        .expect("chained job config");
    let jobs = snowpatrol_engine::resolve_jobs(&pipeline.registry(), &jobs_cfg, &settings)
        .expect("resolve jobs");
    let mut engine = snowpatrol_engine::Engine::new(db.clone(), jobs, settings).expect("engine");
    if failure_alerts {
        engine = engine.with_failure_hook(pipeline.failure_hook());
    }
    engine.register_jobs().await.expect("register jobs");
    std::sync::Arc::new(engine)
}

/// The newest `limit` runs, of `job` only when given, newest first.
pub async fn runs(
    db: &Database,
    job: Option<&str>,
    limit: i64,
) -> Vec<snowpatrol_store::RunRecord> {
    db.list_runs(&snowpatrol_store::RunFilter {
        job_name: job.map(str::to_string),
        state: None,
        limit,
        ..Default::default()
    })
    .await
    .expect("list runs")
}

/// Waits, polling every `poll`, until the newest run of `job` has finished, and returns it: how a test or a
/// bench that triggered a chain knows the chain is done. Panics when that takes longer than `timeout`
/// (`None`: waits as long as it takes).
pub async fn wait_for_finished_run(
    db: &Database,
    job: &str,
    poll: std::time::Duration,
    timeout: Option<std::time::Duration>,
) -> snowpatrol_store::RunRecord {
    let started = std::time::Instant::now();
    loop {
        if let Some(r) = runs(db, Some(job), 1)
            .await
            .into_iter()
            .next()
            .filter(|r| r.state.is_terminal())
        {
            return r;
        }
        assert!(
            timeout.is_none_or(|t| started.elapsed() < t),
            "{job} did not finish"
        );
        tokio::time::sleep(poll).await;
    }
}
