//! Criterion benches on one 730-day warehouse: `cargo bench -p snowpatrol-detect --bench detect`.

use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::ArrayView2;
use snowpatrol_detect::daily::series_from_rows;
use snowpatrol_detect::decompose::{seasonal_decompose, stl};
use snowpatrol_detect::iforest::{IsolationForest, IsolationForestParams};
use snowpatrol_detect::ks::ks_2samp;
use snowpatrol_detect::model::{ModelKind, TrainConfig, train};
use snowpatrol_detect::synthetic::{SyntheticConfig, generate};
use std::hint::black_box;

fn series_730() -> snowpatrol_detect::daily::DailySeries {
    let cfg = SyntheticConfig {
        warehouses: 2,
        accounts: 1,
        days: 730,
        end: NaiveDate::from_ymd_opt(2025, 6, 30).unwrap(),
        ..Default::default()
    };
    let data = generate(&cfg);
    // Warehouse 0 is an ETL warehouse that exists from day one: 730 days.
    series_from_rows(&data.rows, Some(cfg.end))
        .into_iter()
        .find(|s| s.len() == 730)
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let s = series_730();
    let y = s.credits.clone();
    let dec = seasonal_decompose(&y, 7).unwrap();
    let x = ArrayView2::from_shape((y.len(), 1), &dec.resid).unwrap();
    let params = IsolationForestParams::default().with_seed(7);
    let forest = IsolationForest::fit(x, &params).unwrap();
    let last8 = ArrayView2::from_shape((8, 1), &dec.resid[722..]).unwrap();

    c.bench_function("seasonal_decompose_730", |b| {
        b.iter(|| seasonal_decompose(black_box(&y), 7).unwrap())
    });
    c.bench_function("stl_730", |b| b.iter(|| stl(black_box(&y), 7).unwrap()));
    c.bench_function("iforest_fit_730", |b| {
        b.iter(|| IsolationForest::fit(black_box(x), &params).unwrap())
    });
    c.bench_function("iforest_score_730", |b| {
        b.iter(|| forest.decision_function(black_box(x)).unwrap())
    });
    c.bench_function("iforest_score_8", |b| {
        b.iter(|| forest.decision_function(black_box(last8)).unwrap())
    });
    c.bench_function("ks_2samp_7_vs_723", |b| {
        b.iter(|| ks_2samp(black_box(&y[723..]), black_box(&y[..723])).unwrap())
    });
    c.bench_function("ks_2samp_720_vs_168", |b| {
        b.iter(|| ks_2samp(black_box(&y[..720]), black_box(&y[562..])).unwrap())
    });
    let base = TrainConfig {
        kind: ModelKind::Baseline,
        seed: 7,
        ..Default::default()
    };
    c.bench_function("job_baseline_730", |b| {
        b.iter(|| {
            let m = train(black_box(&s), &base).unwrap();
            m.score(&s, 8).unwrap()
        })
    });
    let def = TrainConfig::default();
    c.bench_function("job_default_730", |b| {
        b.iter(|| {
            let m = train(black_box(&s), &def).unwrap();
            m.score(&s, 8).unwrap()
        })
    });
}

criterion_group!(detect, benches);
criterion_main!(detect);
