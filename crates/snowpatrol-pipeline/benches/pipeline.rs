//! Pipeline benchmarks on PostgreSQL (not timed tests): `cargo bench -p snowpatrol-pipeline --bench pipeline`.
//!
//! 1. CSV export -> PostgreSQL hourly table (parse + COPY), rows per second.
//! 2. Full prep + train + predict for 1,000 warehouses x 365 days through the daemon (dataset-event chained).

use snowpatrol_detect::synthetic::{SyntheticConfig, generate};
use snowpatrol_engine::{CancellationToken, SchedulerSettings};
use snowpatrol_pipeline::{Pipeline, PipelineConfig, PipelineStore, SourceConfig};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

async fn ingest() {
    let data = generate(&SyntheticConfig {
        warehouses: 200,
        days: 365,
        seed: 3,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metering.csv");
    snowpatrol_sources::write_metering_csv(&data.rows, std::fs::File::create(&path).unwrap())
        .unwrap();
    let n = data.rows.len() as f64;
    let (mut total, mut load) = (vec![], vec![]);
    for _ in 0..3 {
        let db = snowpatrol_pipeline::testing::fresh_postgres().await;
        let store = PipelineStore::new(db.clone());
        let t0 = Instant::now();
        let rows = snowpatrol_sources::read_metering_csv(&path).unwrap();
        let t1 = Instant::now();
        let from = rows.iter().map(|r| r.start_time).min().unwrap();
        let to = rows.iter().map(|r| r.start_time).max().unwrap() + chrono::Duration::hours(1);
        let window = snowpatrol_pipeline::store::MeteringLoad {
            from: from.date_naive(),
            to: to.date_naive() + chrono::Days::new(1),
            hourly: &rows,
            daily: &[],
            run_id: None,
        };
        store.load_metering(&window, None).await.unwrap();
        let t2 = Instant::now();
        total.push(n / (t2 - t0).as_secs_f64());
        load.push(n / (t2 - t1).as_secs_f64());
        db.close().await;
    }
    println!(
        "CSV -> PostgreSQL ({} hourly rows): parse+COPY median {:.0} rows/s, COPY alone median {:.0} rows/s",
        data.rows.len(),
        median(total),
        median(load)
    );
}

async fn full_pipeline(warehouses: usize, days: usize) -> f64 {
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = PipelineConfig {
        source: SourceConfig::Synthetic {
            seed: 5,
            warehouses,
            days,
            end: chrono::NaiveDate::from_ymd_opt(2025, 6, 30),
        },
        ..Default::default()
    };
    let pipeline = Pipeline::new(db.clone(), cfg, dir.path().to_path_buf()).unwrap();
    let settings = SchedulerSettings {
        worker_concurrency: 64,
        ..Default::default()
    };
    let engine =
        snowpatrol_pipeline::testing::chained_engine(&db, &pipeline, settings, false).await;
    let stop = CancellationToken::new();
    let daemon = engine.spawn_daemon(stop.clone());
    let t0 = Instant::now();
    engine.trigger("prep", &[], "bench").await.unwrap();
    snowpatrol_pipeline::testing::wait_for_finished_run(
        &db,
        "predict",
        Duration::from_millis(20),
        None,
    )
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let mut all = snowpatrol_pipeline::testing::runs(&db, None, 10).await;
    all.reverse();
    for r in &all {
        let took = r
            .finished_at
            .zip(r.started_at)
            .map(|(f, s)| (f - s).num_milliseconds())
            .unwrap_or(0);
        println!("    {} {} {} ms", r.job_name, r.state, took);
        for t in db
            .list_task_instances(r.run_id)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.map_key.is_empty())
        {
            let took = t
                .finished_at
                .zip(t.started_at)
                .map(|(f, s)| (f - s).num_milliseconds())
                .unwrap_or(0);
            let timings = t
                .output
                .as_ref()
                .and_then(|o| o["data"].get("timings_ms").cloned());
            println!(
                "      {} {} ms {}",
                t.task_name,
                took,
                timings.map(|v| v.to_string()).unwrap_or_default()
            );
        }
    }
    stop.cancel();
    daemon.await.unwrap().unwrap();
    secs
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        ingest().await;
        let secs = full_pipeline(1000, 365).await;
        println!(
            "full prep + train + predict, 1,000 warehouses x 365 days on PostgreSQL: {secs:.2} s"
        );
    });
}
