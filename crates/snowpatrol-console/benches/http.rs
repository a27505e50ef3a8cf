//! HTTP benchmarks of the API and the console on PostgreSQL (not timed tests):
//! `cargo bench -p snowpatrol-console --bench http`.
//!
//! 1. External events through `POST /api/v1/events` from 8 concurrent producers in batches: events accepted per
//!    second, then every event consumed exactly once by the subscribed job and none left in the queue.
//! 2. One external event through the API -> the triggered run's first task started: p50/p99 from the database's
//!    own timestamps (event `created_at` to task `started_at`), the daemon idle between events.
//! 3. Read latency of the API and the console with a year of runs, 1,000 warehouses' incidents and 100,000 task
//!    instances in the database: p50/p99 per endpoint, measured by the client on the same machine.

use serde_json::{Value, json};
use snowpatrol_api::{ApiState, ApiTokens};
use snowpatrol_engine::*;
use snowpatrol_pipeline::PipelineStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-operate-token";
const READY: &str = "bench://ready";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Bench {
    db: Database,
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

async fn start() -> Bench {
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let mut reg = JobRegistry::new();
    reg.external_dataset(READY);
    reg.register(JobDefinition::new("consumer", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async { Ok(TaskOutput::empty()) }),
    )));
    let cfg: BTreeMap<String, JobConfig> =
        toml::from_str(&format!("[consumer]\ndatasets = [\"{READY}\"]\n")).unwrap();
    let settings = SchedulerSettings {
        poll_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let jobs = resolve_jobs(&reg, &cfg, &settings).unwrap();
    let engine = Arc::new(Engine::new(db.clone(), jobs, settings).unwrap());
    engine.register_jobs().await.unwrap();
    let stop = CancellationToken::new();
    engine.spawn_daemon(stop.clone());
    let state = Arc::new(ApiState {
        currency: None,
        engine,
        store: PipelineStore::new(db.clone()),
        tokens: ApiTokens::new(None, Some(&TOKEN.to_string().into())),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = snowpatrol_api::router(state.clone()).merge(snowpatrol_console::router(state));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    Bench {
        db,
        base,
        http: reqwest::Client::new(),
        stop,
    }
}

fn pg(db: &Database) -> &sqlx::PgPool {
    match db.pool() {
        snowpatrol_store::Pool::Postgres(p) => p,
        snowpatrol_store::Pool::Sqlite(_) => unreachable!("the benchmark runs on PostgreSQL"),
    }
}

async fn scalar(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pg(db))
        .await
        .unwrap()
}

async fn ingest(b: &Bench, producers: usize, batches: usize, batch: usize) {
    let before = scalar(&b.db, "SELECT count(*) FROM run_consumed_events").await;
    let runs_before = scalar(&b.db, "SELECT count(*) FROM job_runs").await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let http = b.http.clone();
        let url = format!("{}/api/v1/events", b.base);
        tasks.push(tokio::spawn(async move {
            for k in 0..batches {
                let events: Vec<Value> = (0..batch)
                    .map(
                        |i| json!({"dataset": READY, "extra": {"producer": p, "batch": k, "i": i}}),
                    )
                    .collect();
                let r = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&json!({ "events": events }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = started.elapsed().as_secs_f64();
    let total = (producers * batches * batch) as i64;
    // Every event consumed once by `consumer`, none stranded.
    let drained = Instant::now();
    loop {
        let queued = scalar(&b.db, "SELECT count(*) FROM dataset_trigger_queue").await;
        let active = scalar(
            &b.db,
            "SELECT count(*) FROM job_runs WHERE state IN ('queued', 'running')",
        )
        .await;
        if queued == 0 && active == 0 {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(120),
            "{queued} events still queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consumed = scalar(
        &b.db,
        "SELECT count(DISTINCT event_id) FROM run_consumed_events",
    )
    .await
        - before;
    let rows = scalar(&b.db, "SELECT count(*) FROM run_consumed_events").await - before;
    let runs = scalar(&b.db, "SELECT count(*) FROM job_runs").await - runs_before;
    assert_eq!(
        (consumed, rows),
        (total, total),
        "every event consumed exactly once"
    );
    println!(
        "ingest: {total} events from {producers} producers in batches of {batch}: {:.0} events/s accepted \
         ({accepted:.2} s); consumed exactly once by {runs} runs, queue drained {:.2} s after the last batch",
        total as f64 / accepted,
        drained.elapsed().as_secs_f64()
    );
}

async fn trigger_latency(b: &Bench, samples: usize, when: &str) {
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let r: Value = b
            .http
            .post(format!("{}/api/v1/events", b.base))
            .bearer_auth(TOKEN)
            .json(&json!({"events": [{"dataset": READY, "extra": {"latency": i}}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let event_id = r["event_ids"][0].as_i64().unwrap();
        let sql = format!(
            "SELECT CAST(EXTRACT(EPOCH FROM (t.started_at - e.created_at)) * 1000000 AS BIGINT) \
             FROM run_consumed_events c JOIN dataset_events e USING (event_id) \
             JOIN task_instances t ON t.run_id = c.run_id \
             WHERE c.event_id = {event_id} AND t.started_at IS NOT NULL"
        );
        let started = Instant::now();
        let micros = loop {
            let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_optional(pg(&b.db))
                .await
                .unwrap();
            if let Some(m) = found {
                break m;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "event {event_id} never started a run"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(micros as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "external event via the API -> first task started ({when}): p50 {:.1} ms, p99 {:.1} ms ({samples} events)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}

/// A year of daily prep/train/predict runs, 100,000 task instances (a 1,000-warehouse fan-out in the newest
/// 100 train and predict runs), 1,000 warehouses with an incident each.
async fn fill(b: &Bench) {
    for sql in [
        "INSERT INTO jobs (job_name, schedule, registered_at, updated_at) \
         SELECT j, 'cron', now(), now() FROM unnest(ARRAY['prep', 'train', 'predict']) j ON CONFLICT DO NOTHING",
        "INSERT INTO job_runs (job_name, run_key, trigger_kind, logical_time, state, params, triggered_by, queued_at, \
         started_at, finished_at) SELECT j, 'cron:' || d, 'cron', now() - d * interval '1 day', 'success', '{}', \
         'bench', now() - d * interval '1 day', now() - d * interval '1 day', \
         now() - d * interval '1 day' + interval '5 minutes' \
         FROM generate_series(1, 365) d, unnest(ARRAY['prep', 'train', 'predict']) j",
        "INSERT INTO task_instances (run_id, job_name, task_name, map_key, state, try_number, max_tries, worker_id, \
         queued_at, started_at, finished_at) SELECT r.run_id, r.job_name, 'warehouse', 'ACME.WH_' || k, 'success', \
         1, 3, 'bench', r.queued_at, r.started_at, r.finished_at FROM (SELECT run_id, job_name, queued_at, \
         started_at, finished_at FROM job_runs WHERE job_name IN ('train', 'predict') ORDER BY run_id DESC LIMIT 100) r, \
         generate_series(1, 1000) k",
        "INSERT INTO incidents (account_name, warehouse_name, start_day, end_day, days, excess_credits, peak_score, \
         status, created_at, updated_at) SELECT 'ACME', 'WH_' || k, current_date - (k % 300), \
         current_date - (k % 300), 1, k % 50 + 3, 5, 'open', now(), now() FROM generate_series(1, 1000) k",
        "ANALYZE",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(pg(&b.db))
            .await
            .unwrap();
    }
}

async fn read_latency(b: &Bench, samples: usize) {
    fill(b).await;
    let run_id = scalar(
        &b.db,
        "SELECT max(run_id) FROM job_runs WHERE job_name = 'predict'",
    )
    .await;
    let incident = scalar(&b.db, "SELECT min(incident_id) FROM incidents").await;
    let paths = [
        "/api/v1/jobs".to_string(),
        "/api/v1/runs?limit=50".into(),
        "/api/v1/runs?job=consumer&state=success&limit=100".into(),
        format!("/api/v1/runs/{run_id}"),
        format!("/api/v1/runs/{run_id}/logs"),
        "/api/v1/incidents?status=open".into(),
        "/api/v1/events?limit=100".into(),
        "/ui/jobs".into(),
        "/ui/runs".into(),
        format!("/ui/runs/{run_id}"),
        "/ui/incidents".into(),
        format!("/ui/incidents/{incident}"),
    ];
    println!("| endpoint | p50 ms | p99 ms | bytes |");
    println!("|---|---|---|---|");
    for path in paths {
        let mut times = Vec::with_capacity(samples);
        let mut bytes = 0;
        for _ in 0..samples {
            let started = Instant::now();
            let r = b
                .http
                .get(format!("{}{path}", b.base))
                .header("cookie", format!("snowpatrol_session={TOKEN}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            bytes = r.bytes().await.unwrap().len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| `{path}` | {:.1} | {:.1} | {bytes} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let b = start().await;
    trigger_latency(&b, 60, "empty database").await;
    ingest(&b, 8, 20, 500).await;
    trigger_latency(&b, 60, "after 80,000 events").await;
    read_latency(&b, 100).await;
    b.stop.cancel();
}
