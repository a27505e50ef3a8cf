//! What the engine's test binaries share: fast settings, an engine over a job registry, a daemon in the
//! background, waiting for a condition, and the `both_backends!` runner.
#![allow(dead_code, reason = "each test binary uses its own subset")]

use snowpatrol_engine::*;
use snowpatrol_store::RunFilter;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs each named `async fn(Database)` scenario as a test on a fresh PostgreSQL database and on SQLite.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(snowpatrol_store::testing::fresh_postgres().await).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let (db, _dir) = snowpatrol_store::testing::fresh_sqlite().await; super::$name(db).await } )* }
    };
}

pub fn fast_settings() -> SchedulerSettings {
    SchedulerSettings {
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        poll_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        default_retries: 0,
        default_retry_delay: Duration::from_millis(50),
        default_max_retry_delay: Duration::from_millis(200),
        ..Default::default()
    }
}

pub fn noop() -> Arc<dyn Task> {
    task_fn(|_ctx| async { Ok(TaskOutput::empty()) })
}

pub fn cfg(toml_text: &str) -> BTreeMap<String, JobConfig> {
    toml::from_str(toml_text).expect("test config parses")
}

pub async fn engine_with(
    db: Database,
    reg: &JobRegistry,
    toml_text: &str,
    settings: SchedulerSettings,
) -> Engine {
    let jobs = resolve_jobs(reg, &cfg(toml_text), &settings).expect("valid jobs");
    let e = Engine::new(db, jobs, settings).expect("engine");
    e.register_jobs().await.expect("register");
    e
}

/// Runs the daemon in the background until the returned token is cancelled.
pub fn spawn_daemon(engine: Arc<Engine>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let h = tokio::spawn(async move {
        engine.run_daemon(s).await.expect("daemon");
    });
    (stop, h)
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn runs_of(db: &Database, job: &str) -> Vec<snowpatrol_store::RunRecord> {
    db.list_runs(&RunFilter {
        job_name: Some(job.into()),
        state: None,
        limit: 10_000,
        ..Default::default()
    })
    .await
    .unwrap()
}
