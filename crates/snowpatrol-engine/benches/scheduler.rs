//! Scheduler benchmarks on PostgreSQL (not timed tests): `cargo bench -p snowpatrol-engine --bench scheduler`.
//!
//! 1. Dataset event -> triggered run's first task started: p50/p99 over many events, from the database's own
//!    timestamps (event `created_at` to task `started_at`), with the daemon idle between events.
//! 2. 10,000 mapped no-op task instances created, executed and recorded (wall time, median of runs).

use serde_json::json;
use snowpatrol_engine::*;
use snowpatrol_store::RunFilter;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn noop() -> Arc<dyn Task> {
    task_fn(|_| async { Ok(TaskOutput::empty()) })
}

async fn trigger_latency(samples: usize) -> Vec<f64> {
    let db = snowpatrol_store::testing::fresh_postgres().await;
    let mut reg = JobRegistry::new();
    reg.external_dataset("bench://in");
    reg.register(JobDefinition::new("consumer", "").task(TaskDefinition::new("t", noop())));
    let cfg: BTreeMap<String, JobConfig> =
        toml::from_str("[consumer]\ndatasets = [\"bench://in\"]\n").unwrap();
    let settings = SchedulerSettings {
        poll_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let jobs = resolve_jobs(&reg, &cfg, &settings).unwrap();
    let engine = Arc::new(Engine::new(db.clone(), jobs, settings).unwrap());
    engine.register_jobs().await.unwrap();
    let stop = CancellationToken::new();
    let daemon = engine.spawn_daemon(stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let (event_id, _) = db
            .emit_event("bench://in", &json!({ "i": i }), "bench")
            .await
            .unwrap();
        let event = loop {
            let runs = db
                .list_runs(&RunFilter {
                    job_name: Some("consumer".into()),
                    state: None,
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            if let Some(r) = runs.first().filter(|r| r.state.is_terminal()) {
                let consumed = db.consumed_events(r.run_id).await.unwrap();
                if consumed.iter().any(|e| e.event_id == event_id) {
                    let ti = &db.list_task_instances(r.run_id).await.unwrap()[0];
                    break (consumed[0].created_at, ti.started_at.unwrap());
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push((event.1 - event.0).num_microseconds().unwrap() as f64 / 1000.0);
        // Idle gap, so each event meets an idle daemon (the realistic case).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    daemon.await.unwrap().unwrap();
    latencies
}

async fn mapped(n: usize) -> f64 {
    let db = snowpatrol_store::testing::fresh_postgres().await;
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("fan", "")
            .task(TaskDefinition::new(
                "list",
                task_fn(move |_| async move {
                    Ok(TaskOutput::with_map_keys(
                        (0..n).map(|i| format!("k{i}")).collect(),
                    ))
                }),
            ))
            .task(TaskDefinition::new("work", noop()).map_over("list")),
    );
    let settings = SchedulerSettings {
        worker_concurrency: 512,
        claim_batch: 512,
        ..Default::default()
    };
    let jobs = resolve_jobs(&reg, &BTreeMap::new(), &settings).unwrap();
    let engine = Engine::new(db.clone(), jobs, settings).unwrap();
    engine.register_jobs().await.unwrap();
    let started = Instant::now();
    let run = engine
        .run_now("fan", &[], "bench", CancellationToken::new())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(run.state, RunState::Success);
    let done = db
        .list_task_instances(run.run_id)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.state == TaskState::Success)
        .count();
    assert_eq!(done, n + 1);
    secs
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut lat = trigger_latency(300).await;
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "event -> first task started (PostgreSQL, {} events): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99),
            lat[lat.len() - 1]
        );
        let mut times = vec![];
        for _ in 0..5 {
            times.push(mapped(10_000).await);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("10,000 mapped no-op task instances (PostgreSQL): median {:.2} s, runs {times:.2?}", times[2]);
    });
}
