//! Labelled synthetic backtest of the baseline and default models.
//!
//! `cargo run --release -p snowpatrol-detect --example backtest_synthetic -- [seed ...]`
//! Seed 1 is the tuning seed; docs/detection.md reports other seeds.

use chrono::Days;
use snowpatrol_detect::backtest::{BacktestConfig, backtest};
use snowpatrol_detect::daily::series_from_rows;
use snowpatrol_detect::model::{ModelKind, TrainConfig};
use snowpatrol_detect::synthetic::{SyntheticConfig, generate};
use std::time::Instant;

fn main() {
    let seeds: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let seeds = if seeds.is_empty() { vec![1] } else { seeds };
    let warehouses: usize = std::env::var("WAREHOUSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for seed in seeds {
        let cfg = SyntheticConfig {
            seed,
            warehouses,
            accounts: 4,
            days: 365,
            ..Default::default()
        };
        let t = Instant::now();
        let data = generate(&cfg);
        let series = series_from_rows(&data.rows, Some(cfg.end));
        let gen_s = t.elapsed().as_secs_f64();
        let start = cfg.end - Days::new(cfg.days as u64 - 91);
        println!(
            "seed {seed}: {} warehouses, {} hourly rows, {} labels, generated+aggregated in {gen_s:.2}s; scoring {start}..{}",
            series.len(),
            data.rows.len(),
            data.labels.len(),
            cfg.end
        );
        for kind in [ModelKind::Baseline, ModelKind::Default] {
            let mut tc = TrainConfig {
                kind,
                seed,
                ..Default::default()
            };
            let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
            if let Some(v) = env("Z") {
                tc.rule.z_threshold = v;
            }
            if let Some(v) = env("ZH") {
                tc.rule.z_threshold_hourly = v;
            }
            if let Some(v) = env("QUIET") {
                tc.rule.quiet_day_excess_level_ratio = v;
            }
            if let Some(v) = env("LEVELGATE") {
                tc.rule.min_excess_level_ratio = v;
            }
            let bc = BacktestConfig::new(start, tc);
            let t = Instant::now();
            let r = match backtest(&series, &bc, Some(&data.labels)) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("backtest failed: {e}");
                    std::process::exit(1);
                }
            };
            let m = r.metrics.clone().unwrap_or_else(|| unreachable!());
            println!(
                "  {kind:<8} scored {} flagged {} ({:.2}%) incidents {} | precision {:.3} recall {:.3} f1 {:.3} (tp {} fp {} fn {}) by kind {:?} [{:.1}s, {} trainings]",
                r.scored,
                r.flagged,
                100.0 * r.flagged as f64 / r.scored.max(1) as f64,
                r.incidents,
                m.precision,
                m.recall,
                m.f1,
                m.true_positives,
                m.false_positives,
                m.false_negatives,
                m.by_kind,
                t.elapsed().as_secs_f64(),
                r.trainings
            );
            if std::env::var("SHOW_FP").is_ok() && kind == ModelKind::Default {
                let labels: std::collections::HashSet<_> = data
                    .labels
                    .iter()
                    .map(|l| (l.key.clone(), l.date))
                    .collect();
                for d in r.days.iter().filter(|d| d.score.is_anomaly) {
                    let hit = (0..3)
                        .any(|k| labels.contains(&(d.key.clone(), d.score.date - Days::new(k))));
                    if !hit {
                        println!("    FP? {} {}", d.key, d.score.explanation);
                    }
                }
                let flagged: std::collections::HashSet<_> = r
                    .days
                    .iter()
                    .filter(|d| d.score.is_anomaly)
                    .map(|d| (d.key.clone(), d.score.date))
                    .collect();
                for l in data
                    .labels
                    .iter()
                    .filter(|l| l.date >= start && l.kind.is_cost_increase())
                {
                    if !(0..3).any(|k| flagged.contains(&(l.key.clone(), l.date + Days::new(k)))) {
                        let s = r
                            .days
                            .iter()
                            .find(|d| d.key == l.key && d.score.date == l.date);
                        println!(
                            "    FN {:?} {} {}",
                            l.kind,
                            l.key,
                            s.map(|s| s.score.explanation.as_str()).unwrap_or("-")
                        );
                    }
                }
            }
        }
    }
}
