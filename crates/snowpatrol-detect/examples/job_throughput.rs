//! The whole per-warehouse job (decompose + fit + threshold + score the last 8 days) for many warehouses x 730
//! days, in parallel with rayon, as the train/predict jobs run it.
//!
//! `cargo run --release -p snowpatrol-detect --example job_throughput -- [warehouses] [runs] [dump.csv]`
//! With a CSV path, the first 50 series are written (date, warehouse, credits) for
//! `scripts/detect/bench_python_peer.py`, so the Python peer times the same data.

use chrono::NaiveDate;
use rayon::prelude::*;
use snowpatrol_detect::daily::{DailySeries, series_from_rows};
use snowpatrol_detect::model::{ModelKind, TrainConfig, seed_for, train};
use snowpatrol_detect::synthetic::{SyntheticConfig, generate};
use std::io::Write;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let warehouses: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3);
    let t = Instant::now();
    // Generated in chunks: 10,000 warehouses of hourly rows at once would need ~10 GB.
    let mut series: Vec<DailySeries> = Vec::with_capacity(warehouses);
    let chunk = 250;
    let end = NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default();
    for c in 0..warehouses.div_ceil(chunk) {
        let cfg = SyntheticConfig {
            seed: 1000 + c as u64,
            warehouses: chunk.min(warehouses - c * chunk),
            accounts: 1,
            days: 730,
            end,
            include_pseudo_warehouses: false,
            ..Default::default()
        };
        let mut s = series_from_rows(&generate(&cfg).rows, Some(end));
        // Give every warehouse the full 730 days so the workload is exactly 10,000 x 730.
        for x in &mut s {
            let pad = 730 - x.len();
            if pad > 0 {
                x.start = x.start - chrono::Days::new(pad as u64);
                for v in [
                    &mut x.credits,
                    &mut x.credits_compute,
                    &mut x.credits_cloud_services,
                    &mut x.hours_active,
                    &mut x.peak_hourly_credits,
                ] {
                    v.splice(0..0, std::iter::repeat_n(0.0, pad));
                }
            }
            x.key.account_name = format!("ACCOUNT_{c}");
        }
        series.extend(s);
    }
    eprintln!(
        "prepared {} series x 730 days in {:.1}s",
        series.len(),
        t.elapsed().as_secs_f64()
    );
    if let Some(path) = args.get(3) {
        let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("create {path}: {e}"));
        writeln!(f, "warehouse,day,credits").ok();
        for s in series.iter().take(50) {
            for (i, c) in s.credits.iter().enumerate() {
                writeln!(f, "{},{},{c}", s.key, i).ok();
            }
        }
        eprintln!("wrote the first 50 series to {path}");
    }
    for kind in [ModelKind::Baseline, ModelKind::Default] {
        let mut times = Vec::new();
        let mut flagged = 0;
        for _ in 0..runs {
            let t = Instant::now();
            flagged = series
                .par_iter()
                .map(|s| {
                    let cfg = TrainConfig {
                        kind,
                        seed: seed_for(&s.key, 1),
                        ..Default::default()
                    };
                    match train(s, &cfg).and_then(|m| m.score(s, 8)) {
                        Ok(days) => days.iter().filter(|d| d.is_anomaly).count(),
                        Err(e) => panic!("{}: {e}", s.key),
                    }
                })
                .sum::<usize>();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{kind}: {} warehouses x 730 days, {} threads: median {median:.2}s over {runs} runs ({:.3} ms/warehouse wall), runs {times:.2?}, {flagged} flagged days",
            series.len(),
            rayon::current_num_threads(),
            1000.0 * median / series.len() as f64
        );
    }
}
