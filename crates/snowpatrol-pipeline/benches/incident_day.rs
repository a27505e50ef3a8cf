//! A bad day at scale (issue #9's goal), on PostgreSQL through the daemon, with the local Slack peer:
//! `cargo bench -p snowpatrol-pipeline --bench incident_day [-- WAREHOUSES SPIKING]` (default 10,000 and 300).
//!
//! 10,000 warehouses in 10 accounts with 90 days of daily usage (hourly metering for the warehouses that spike),
//! 300 of them running away on the last day. `train` is triggered by hand (prep's extraction is measured
//! elsewhere); `predict` follows on the models event: it scores every warehouse, looks up the root causes
//! (here: the hourly shapes; the Snowflake statements are counted by the fakesnow test), writes the report and
//! queues one digest with five chart replies, which the outbox sender delivers to the Slack peer. Printed: how
//! long predict took after its last scoring task, each task's time, and the Slack calls by method.

#[path = "../tests/common/mod.rs"]
mod common;

use chrono::{Datelike, Days, NaiveDate};
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::daily::DailyUsage;
use snowpatrol_engine::{CancellationToken, SchedulerSettings};
use snowpatrol_pipeline::store::{FeatureRow, MeteringLoad};
use snowpatrol_pipeline::{Pipeline, PipelineConfig, SourceConfig};
use std::time::{Duration, Instant};

const DAYS: u64 = 90;

fn end() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap()
}

/// A small deterministic hash for noise and sizes.
fn mix(a: u64, b: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 10_000) as f64 / 10_000.0
}

/// Daily rows of every warehouse, and hourly rows of the spiking ones (their last 29 days).
fn data(
    warehouses: usize,
    spiking: usize,
) -> (Vec<FeatureRow>, Vec<snowpatrol_detect::MeteringRow>) {
    let first = end() - Days::new(DAYS - 1);
    let step = (warehouses / spiking.max(1)).max(1);
    let (mut daily, mut hourly) = (Vec::new(), Vec::new());
    for w in 0..warehouses {
        let key = WarehouseKey::new(format!("ACCT_{}", w % 10), format!("WH_{w:05}"));
        let base = 1.0 + 49.0 * mix(w as u64, 1);
        let spikes = w % step == 0 && w / step < spiking;
        for i in 0..DAYS {
            let date = first + Days::new(i);
            let weekend = date.weekday().number_from_monday() >= 6;
            let last = date == end();
            let noise = 0.9 + 0.2 * mix(w as u64, i + 7);
            let (credits, hours) = match (spikes && last, weekend) {
                (true, _) => (base * 6.0, 24.0),
                (false, true) => (base * 0.4 * noise, 4.0),
                (false, false) => (base * noise, 10.0),
            };
            daily.push(FeatureRow {
                usage: DailyUsage {
                    key: key.clone(),
                    date,
                    credits,
                    credits_compute: credits * 0.95,
                    credits_cloud_services: credits * 0.05,
                    hours_active: hours,
                    peak_hourly_credits: credits / hours * 1.5,
                },
                trend: None,
                seasonal: None,
                residual: None,
            });
            if spikes && i + 29 >= DAYS {
                let start_hour = if hours >= 24.0 { 0 } else { 8 };
                for h in start_hour..start_hour + hours as u32 {
                    let start = date.and_hms_opt(h, 0, 0).unwrap().and_utc();
                    hourly.push(snowpatrol_detect::MeteringRow {
                        account_name: key.account_name.clone(),
                        warehouse_id: w as i64 + 1,
                        warehouse_name: key.warehouse_name.clone(),
                        service_type: "WAREHOUSE_METERING".into(),
                        start_time: start,
                        end_time: start + chrono::Duration::hours(1),
                        credits_used: credits / hours,
                        credits_used_compute: credits / hours * 0.95,
                        credits_used_cloud_services: credits / hours * 0.05,
                    });
                }
            }
        }
    }
    (daily, hourly)
}

fn ms(a: Option<chrono::DateTime<chrono::Utc>>, b: Option<chrono::DateTime<chrono::Utc>>) -> i64 {
    a.zip(b)
        .map(|(a, b)| (a - b).num_milliseconds())
        .unwrap_or(-1)
}

async fn run(warehouses: usize, spiking: usize) {
    let peer = common::SlackPeer::start().await;
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, common::TOKEN).unwrap();
    let mut cfg: PipelineConfig = toml::from_str(&format!(
        "price_per_credit = 3.0\ncurrency = \"USD\"\n[slack]\nchannel = \"{}\"\ntoken_env = \"SNOWPATROL_BENCH_UNSET\"\n\
         token_file = \"{}\"\napi_url = \"{}\"\n",
        common::CHANNEL,
        token.display(),
        peer.api_url
    ))
    .unwrap();
    cfg.source = SourceConfig::Synthetic {
        seed: 1,
        warehouses: 1,
        days: 30,
        end: Some(end()),
    };
    let pipeline = Pipeline::new(db.clone(), cfg, dir.path().to_path_buf()).unwrap();
    let (daily, hourly) = data(warehouses, spiking);
    let t = Instant::now();
    pipeline
        .store
        .load_metering(
            &MeteringLoad {
                from: end() - Days::new(DAYS - 1),
                to: end() + Days::new(1),
                hourly: &hourly,
                daily: &daily,
                run_id: None,
            },
            None,
        )
        .await
        .unwrap();
    println!(
        "loaded {} daily and {} hourly rows in {:.1} s",
        daily.len(),
        hourly.len(),
        t.elapsed().as_secs_f64()
    );
    drop((daily, hourly));
    let settings = SchedulerSettings {
        worker_concurrency: 64,
        ..Default::default()
    };
    let engine =
        snowpatrol_pipeline::testing::chained_engine(&db, &pipeline, settings, false).await;
    let stop = CancellationToken::new();
    let daemon = engine.spawn_daemon(stop.clone());
    let sender = tokio::spawn(pipeline.clone().outbox_sender_loop(stop.clone()));
    let t = Instant::now();
    engine.trigger("train", &[], "bench").await.unwrap();
    snowpatrol_pipeline::testing::wait_for_finished_run(
        &db,
        "predict",
        Duration::from_millis(20),
        None,
    )
    .await;
    let chain = t.elapsed();
    // The outbox sender delivers what predict queued.
    let delivered = Instant::now();
    while !pipeline
        .store
        .list_alerts(true, 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            delivered.elapsed() < Duration::from_secs(120),
            "alerts not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let predict = snowpatrol_pipeline::testing::runs(&db, Some("predict"), 1)
        .await
        .remove(0);
    let tasks = db.list_task_instances(predict.run_id).await.unwrap();
    let last_scored = tasks
        .iter()
        .filter(|t| t.task_name == "score_warehouse")
        .filter_map(|t| t.finished_at)
        .max();
    let incidents = pipeline
        .store
        .list_incidents(&Default::default())
        .await
        .unwrap();
    println!(
        "{warehouses} warehouses, {spiking} spiking: train + predict {:.1} s; predict {} ms, of which after the last \
         scoring task {} ms; {} incidents",
        chain.as_secs_f64(),
        ms(predict.finished_at, predict.started_at),
        ms(predict.finished_at, last_scored),
        incidents.len()
    );
    for name in ["list_warehouses", "root_causes", "report"] {
        if let Some(t) = tasks.iter().find(|t| t.task_name == name) {
            println!(
                "  {name}: {} ms {}",
                ms(t.finished_at, t.started_at),
                t.output
                    .as_ref()
                    .map(|o| o["data"].to_string())
                    .unwrap_or_default()
            );
        }
    }
    let mut by_method: std::collections::BTreeMap<String, usize> = Default::default();
    for (path, _, _, _) in peer.requests() {
        *by_method
            .entry(path.rsplit('/').next().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    println!("  Slack calls by method: {by_method:?}");
    let digest = peer
        .channel()
        .into_iter()
        .find(|p| p.dedupe_key().is_some_and(|k| !k.contains(":chart:")))
        .expect("the digest");
    println!(
        "  digest: {} blocks, {} characters of JSON",
        digest.body["blocks"].as_array().map_or(0, Vec::len),
        digest.body.to_string().len()
    );
    stop.cancel();
    daemon.await.unwrap().unwrap();
    let _ = sender.await;
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let warehouses = args.first().copied().unwrap_or(10_000);
    let spiking = args.get(1).copied().unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(warehouses, spiking));
}
