//! The detection evaluation protocol: tune on one family and seed set, report on held-out seeds of both.
//!
//! `cargo run --release -p snowpatrol-detect --example evaluate -- [--tuning] [--model default|baseline|naive]
//!  [--family billing|legacy] [--seeds 2,3,4] [--archetypes]`
//!
//! * **Tuning set**: the billing-shaped family (`synthetic_billing`), seed 1. The default model's knobs were
//!   chosen looking at this set only (`--tuning` prints it).
//! * **Held out**: billing seeds 2-5 and the legacy family (`synthetic`, built on different principles: a
//!   day-level noise model, no calendar) seeds 2-5. These are what `docs/detection.md` reports.
//!
//! Billing: 36 warehouses x 450 days, scored over the last 335 days (11 months). Legacy: 200 warehouses x 365
//! days, scored from day 91. Each day is scored once from the data up to it, retraining weekly (`backtest`).
//! `naive` is a 25-line causal rule (the day against the maximum of its last 28 days, plus hours-active and
//! peak-hour checks), kept as the bar the default model must clear.

use chrono::Days;
use snowpatrol_detect::backtest::{
    BacktestConfig, Metrics, ScoredDay, backtest, evaluate, evaluate_by_group,
};
use snowpatrol_detect::daily::{DailySeries, series_from_rows};
use snowpatrol_detect::metering::{AnomalyLabel, WarehouseKey};
use snowpatrol_detect::model::{AnomalyDay, DayScore, ModelKind, TrainConfig};
use snowpatrol_detect::{synthetic, synthetic_billing};
use std::collections::BTreeMap;
use std::time::Instant;

struct Family {
    series: Vec<DailySeries>,
    labels: Vec<AnomalyLabel>,
    groups: BTreeMap<WarehouseKey, String>,
    start: chrono::NaiveDate,
}

fn billing(seed: u64) -> Family {
    let cfg = synthetic_billing::BillingConfig {
        seed,
        ..Default::default()
    };
    let data = synthetic_billing::generate(&cfg);
    Family {
        series: series_from_rows(&data.rows, Some(cfg.end)),
        labels: data.labels,
        groups: data
            .archetypes
            .iter()
            .map(|(k, a)| (k.clone(), a.as_str().to_string()))
            .collect(),
        start: cfg.end - Days::new(334),
    }
}

fn legacy(seed: u64) -> Family {
    let cfg = synthetic::SyntheticConfig {
        seed,
        warehouses: 200,
        accounts: 4,
        days: 365,
        ..Default::default()
    };
    let data = synthetic::generate(&cfg);
    let series = series_from_rows(&data.rows, Some(cfg.end));
    let groups = series
        .iter()
        .map(|s| {
            let name = &s.key.warehouse_name;
            let g = name
                .split('_')
                .next()
                .unwrap_or("OTHER")
                .to_ascii_lowercase();
            (s.key.clone(), g)
        })
        .collect();
    Family {
        series,
        labels: data.labels,
        groups,
        start: cfg.end - Days::new(cfg.days as u64 - 91),
    }
}

/// The naive causal rule: a day above 1.3x the highest of its last 28 days by at least 2 credits, or 8 more
/// active hours than any of them, or a peak hour 1.25x above theirs.
fn naive(series: &[DailySeries], start: chrono::NaiveDate) -> Vec<ScoredDay> {
    let mut out = Vec::new();
    for s in series {
        for i in 0..s.len() {
            let date = s.date(i);
            if date < start || i < 28 {
                continue;
            }
            let w = i - 28..i;
            let max = |v: &[f64]| v[w.clone()].iter().copied().fold(0.0, f64::max);
            let (mc, mh, mp) = (
                max(&s.credits),
                max(&s.hours_active),
                max(&s.peak_hourly_credits),
            );
            let c = s.credits[i];
            let excess = c - mc;
            let flag = (c > 1.3 * mc && excess >= 2.0)
                || (s.hours_active[i] >= mh + 8.0 && excess > 0.0)
                || (s.peak_hourly_credits[i] > 1.25 * mp && excess >= 2.0);
            out.push(ScoredDay {
                key: s.key.clone(),
                score: DayScore {
                    day: AnomalyDay {
                        date,
                        actual_credits: c,
                        expected_credits: mc,
                        excess_credits: excess,
                        score: 0.0,
                        threshold: 0.0,
                        explanation: String::new(),
                    },
                    is_anomaly: flag,
                    evidence: Vec::new(),
                    normal_low: None,
                    normal_high: None,
                },
            });
        }
    }
    out
}

fn row(label: &str, m: &Metrics) -> String {
    format!(
        "| {label} | {:.3} | {:.3} | **{:.3}** | {:.3} ({}/{}) | {:.2} | {} | {:.0} % ({}/{}) |",
        m.day_precision,
        m.day_recall,
        m.day_f1,
        m.incident_recall,
        m.caught_incidents,
        m.labelled_incidents,
        m.false_alarms_per_100_warehouse_months,
        m.false_alarms,
        100.0 * m.expected_flag_rate(),
        m.expected_flagged,
        m.expected_occurrences,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let model = value("--model").unwrap_or_else(|| "default".into());
    let families: Vec<String> = match value("--family") {
        Some(f) => vec![f],
        None => vec!["billing".into(), "legacy".into()],
    };
    let seeds: Vec<u64> = match value("--seeds") {
        Some(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        None if flag("--tuning") => vec![1],
        None => vec![2, 3, 4, 5],
    };
    println!(
        "model {model}; seeds {seeds:?}{}",
        if flag("--tuning") {
            " (TUNING SET)"
        } else {
            " (held out)"
        }
    );
    println!(
        "| family, seed | day precision | day recall | day F1 | incident recall | false alarms / 100 wh-months | false alarms | expected (month-end) flagged |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for family in &families {
        let mut all_days = Vec::new();
        let mut all_labels = Vec::new();
        let mut all_groups = BTreeMap::new();
        let mut kinds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for &seed in &seeds {
            let f = match family.as_str() {
                "billing" => billing(seed),
                "legacy" => legacy(seed),
                other => {
                    eprintln!("unknown family {other} (billing or legacy)");
                    std::process::exit(2);
                }
            };
            let t = Instant::now();
            let mut tc = TrainConfig {
                kind: if model == "baseline" {
                    ModelKind::Baseline
                } else {
                    ModelKind::Default
                },
                seed,
                ..Default::default()
            };
            // Tuning aid: RULE='{"shift_days": 2}' overrides knobs of the default rule.
            if let Ok(json) = std::env::var("RULE") {
                let mut v = serde_json::to_value(&tc.rule).unwrap_or_default();
                if let (Some(base), Ok(serde_json::Value::Object(over))) = (
                    v.as_object_mut(),
                    serde_json::from_str::<serde_json::Value>(&json),
                ) {
                    base.extend(over);
                }
                match serde_json::from_value(v) {
                    Ok(r) => tc.rule = r,
                    Err(e) => {
                        eprintln!("RULE: {e}");
                        std::process::exit(2);
                    }
                }
            }
            let cfg = BacktestConfig::new(f.start, tc);
            let days = if model == "naive" {
                naive(&f.series, f.start)
            } else {
                match backtest(&f.series, &cfg, None) {
                    Ok(r) => r.days,
                    Err(e) => {
                        eprintln!("backtest failed: {e}");
                        std::process::exit(1);
                    }
                }
            };
            let m = evaluate(&days, &f.labels, &cfg);
            println!(
                "{} <!-- {} warehouses, {:.1}s -->",
                row(&format!("{family} {seed}"), &m),
                f.series.len(),
                t.elapsed().as_secs_f64()
            );
            for (k, c) in &m.by_kind {
                let e = kinds.entry(k.as_str().to_string()).or_default();
                e.0 += c.flagged;
                e.1 += c.incidents;
            }
            if flag("--show") {
                show(&days, &f.labels);
            }
            if flag("--misses") {
                misses(&days, &f.labels, &cfg);
            }
            // Tuning aid: DUMP=ACCOUNT.WAREHOUSE prints that warehouse's scored days.
            if let Ok(which) = std::env::var("DUMP") {
                for d in days.iter().filter(|d| d.key.to_string() == which) {
                    println!("    DAY {}", d.score.day.explanation);
                }
            }
            // Seeds reuse warehouse names: prefix the account with the seed so pooled seeds stay apart.
            let tag = |k: &WarehouseKey| {
                WarehouseKey::new(
                    format!("S{seed}_{}", k.account_name),
                    k.warehouse_name.clone(),
                )
            };
            all_days.extend(days.into_iter().map(|d| ScoredDay {
                key: tag(&d.key),
                score: d.score,
            }));
            all_labels.extend(f.labels.iter().map(|l| AnomalyLabel {
                key: tag(&l.key),
                ..l.clone()
            }));
            all_groups.extend(f.groups.iter().map(|(k, g)| (tag(k), g.clone())));
        }
        let cfg = BacktestConfig::new(chrono::NaiveDate::MIN, TrainConfig::default());
        println!(
            "{}",
            row(
                &format!("{family}, all seeds"),
                &evaluate(&all_days, &all_labels, &cfg)
            )
        );
        let by_kind: Vec<String> = kinds
            .iter()
            .map(|(k, (a, b))| format!("{k} {a}/{b}"))
            .collect();
        println!(
            "  incidents caught by kind ({family}): {}",
            by_kind.join(", ")
        );
        if flag("--archetypes") {
            for (g, m) in evaluate_by_group(&all_days, &all_labels, &cfg, &all_groups) {
                println!("{}", row(&format!("{family}: {g}"), &m));
            }
        }
    }
}

/// Prints the false alarms and misses (for looking at the tuning set only).
fn show(days: &[ScoredDay], labels: &[AnomalyLabel]) {
    use std::collections::HashSet;
    let lab: HashSet<_> = labels.iter().map(|l| (&l.key, l.date)).collect();
    for d in days.iter().filter(|d| d.score.is_anomaly) {
        let hit = (0..3).any(|k| lab.contains(&(&d.key, d.score.day.date - Days::new(k))));
        if !hit {
            println!("    FP {} {}", d.key, d.score.day.explanation);
        }
    }
    let flagged: HashSet<_> = days
        .iter()
        .filter(|d| d.score.is_anomaly)
        .map(|d| (&d.key, d.score.day.date))
        .collect();
    for l in labels {
        let caught = (0..3).any(|k| flagged.contains(&(&l.key, l.date + Days::new(k))));
        let s = days
            .iter()
            .find(|d| d.key == l.key && d.score.day.date == l.date);
        if let Some(s) = s
            && (!caught || !l.kind.is_cost_increase())
        {
            println!(
                "    {} {:?} {} {}",
                if l.kind.is_cost_increase() {
                    "FN"
                } else {
                    "LBL"
                },
                l.kind,
                l.key,
                s.score.day.explanation
            );
        }
    }
}

/// How far from reach the missed labelled days are: for each missed cost-increase label, the largest rise over
/// the expectation within its window. A miss whose window never rose 25 % above the expectation cannot be
/// caught by any rule with the default materiality (`min_excess_ratio`).
fn misses(days: &[ScoredDay], labels: &[AnomalyLabel], cfg: &BacktestConfig) {
    use std::collections::HashMap;
    let by_day: HashMap<_, &DayScore> = days
        .iter()
        .map(|d| ((&d.key, d.score.day.date), &d.score))
        .collect();
    let mut out: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for l in labels.iter().filter(|l| l.kind.is_cost_increase()) {
        let tol = if l.kind == snowpatrol_detect::AnomalyKind::Resize {
            cfg.resize_tolerance_days
        } else {
            0
        };
        let window: Vec<&DayScore> = (0..=tol)
            .filter_map(|k| by_day.get(&(&l.key, l.date + Days::new(k as u64))).copied())
            .collect();
        if window.is_empty() {
            continue;
        }
        let e = out.entry(l.kind.as_str()).or_default();
        if window.iter().any(|d| d.is_anomaly) {
            e[0] += 1;
            continue;
        }
        let rise = window
            .iter()
            .map(|d| {
                if d.day.expected_credits > 0.0 {
                    d.day.actual_credits / d.day.expected_credits - 1.0
                } else {
                    f64::INFINITY
                }
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let bucket = if rise < 0.25 {
            1
        } else if rise < 1.0 {
            2
        } else {
            3
        };
        e[bucket] += 1;
    }
    for (k, [hit, immaterial, modest, large]) in out {
        println!(
            "    labelled {k} days: {hit} caught; missed: {immaterial} rose < 25 % over the expectation, {modest} rose 25-100 %, {large} rose > 100 %"
        );
    }
}
