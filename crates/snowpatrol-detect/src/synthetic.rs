//! A seeded generator of realistic hourly warehouse metering with labelled anomalies, for the demo, tests and
//! backtests.
//!
//! Hand-written because no crate generates Snowflake metering. What it models, and why:
//! * four workload types: ETL (fixed night batch, every day), BI (office hours, weekdays, may scale out to two
//!   clusters), ad-hoc (bursty, heavy-tailed analyst queries) and dev (light, weekdays);
//! * hourly compute bounded by size x clusters, as Snowflake bills it; cloud services a few percent on top;
//! * weekly seasonality, compound growth, day-level log-normal noise, warehouses created mid-series;
//! * injected anomalies with labels: a one-day `spike` (extra work on top of the day), a `runaway` day (left
//!   running: 24 hours at full size), a silent `resize` (size doubled from that day on; queries finish faster,
//!   so spend and the peak hourly burn rise ~1.5x; labelled on its first day) and a `drop`
//!   (1-5 days of almost no use).
//!
//! Each warehouse draws from its own ChaCha stream derived from (seed, warehouse index), so generation is
//! parallel and yet identical for a given config.

use crate::metering::{AnomalyKind, AnomalyLabel, MeteringRow, WarehouseKey};
use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyntheticConfig {
    pub seed: u64,
    pub accounts: usize,
    /// Total warehouses, spread round-robin over the accounts; the first in each account is `COMPUTE_WH`.
    pub warehouses: usize,
    pub days: usize,
    /// Last generated day (inclusive).
    pub end: NaiveDate,
    /// Chance per warehouse-day that an anomaly starts (after a 45-day warm-up, at least 10 days apart).
    pub anomaly_rate: f64,
    /// Relative weights of spike, runaway, resize, drop.
    pub kind_weights: [f64; 4],
    /// Emit the `CLOUD_SERVICES_ONLY` pseudo warehouse (id 0) too, so consumers must drop it.
    pub include_pseudo_warehouses: bool,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            accounts: 2,
            warehouses: 12,
            days: 365,
            end: NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default(),
            anomaly_rate: 1.0 / 90.0,
            kind_weights: [0.4, 0.2, 0.2, 0.2],
            include_pseudo_warehouses: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticData {
    pub rows: Vec<MeteringRow>,
    pub labels: Vec<AnomalyLabel>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Etl,
    Bi,
    AdHoc,
    Dev,
}

struct Profile {
    workload: Workload,
    size: f64,
    max_clusters: f64,
    growth_per_day: f64,
    day_sigma: f64,
    first_day: usize,
    /// ETL batch window.
    batch_start: usize,
    batch_hours: usize,
    base_util: f64,
}

fn account_name(a: usize) -> String {
    const NAMES: [&str; 6] = [
        "ACME_PROD",
        "ACME_ANALYTICS",
        "GLOBEX",
        "INITECH",
        "UMBRELLA",
        "HOOLI",
    ];
    if a < NAMES.len() {
        NAMES[a].to_string()
    } else {
        format!("ACCOUNT_{a}")
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller: one normal per call is plenty here and avoids another dependency (rand_distr).
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Generates hourly rows (sorted by warehouse, then hour) and the labels of the injected anomalies.
pub fn generate(cfg: &SyntheticConfig) -> SyntheticData {
    let accounts = cfg.accounts.max(1);
    let start = cfg.end - Duration::days(cfg.days.saturating_sub(1) as i64);
    let per: Vec<(Vec<MeteringRow>, Vec<AnomalyLabel>)> = (0..cfg.warehouses)
        .into_par_iter()
        .map(|w| {
            let account = w % accounts;
            let local = w / accounts;
            let mut rng = ChaCha8Rng::seed_from_u64(
                cfg.seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            let workload = match (local + account) % 4 {
                0 => Workload::Etl,
                1 => Workload::Bi,
                2 => Workload::AdHoc,
                _ => Workload::Dev,
            };
            let name = if local == 0 {
                "COMPUTE_WH".to_string()
            } else {
                let prefix = match workload {
                    Workload::Etl => "ETL",
                    Workload::Bi => "BI",
                    Workload::AdHoc => "ADHOC",
                    Workload::Dev => "DEV",
                };
                format!("{prefix}_WH_{local}")
            };
            let key = WarehouseKey::new(account_name(account), name);
            warehouse(cfg, &mut rng, key, (w + 1) as i64, workload, start)
        })
        .collect();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (r, l) in per {
        rows.extend(r);
        labels.extend(l);
    }
    if cfg.include_pseudo_warehouses {
        for a in 0..accounts.min(cfg.warehouses) {
            for d in 0..cfg.days {
                let date = start + Duration::days(d as i64);
                let t = Utc.from_utc_datetime(&date.and_hms_opt(12, 0, 0).unwrap_or_default());
                rows.push(MeteringRow {
                    account_name: account_name(a),
                    warehouse_id: 0,
                    warehouse_name: "CLOUD_SERVICES_ONLY".into(),
                    service_type: "WAREHOUSE_METERING".into(),
                    start_time: t,
                    end_time: t + Duration::hours(1),
                    credits_used: 0.05,
                    credits_used_compute: 0.0,
                    credits_used_cloud_services: 0.05,
                });
            }
        }
    }
    labels.sort_by(|a, b| (&a.key, a.date).cmp(&(&b.key, b.date)));
    SyntheticData { rows, labels }
}

fn warehouse(
    cfg: &SyntheticConfig,
    rng: &mut ChaCha8Rng,
    key: WarehouseKey,
    id: i64,
    workload: Workload,
    start: NaiveDate,
) -> (Vec<MeteringRow>, Vec<AnomalyLabel>) {
    let p = draw_profile(cfg, rng, workload);
    let mut rows = Vec::with_capacity(cfg.days * 12);
    let mut labels = Vec::new();
    let mut state = AnomalyState {
        size: p.size,
        util_factor: 1.0,
        cooldown: 45,
        drop_left: 0,
    };
    let mut recent: Vec<f64> = Vec::with_capacity(cfg.days);
    let total_w: f64 = cfg.kind_weights.iter().sum::<f64>().max(1e-12);
    for d in p.first_day..cfg.days {
        let date = start + Duration::days(d as i64);
        let weekday = date.weekday().num_days_from_monday() as usize;
        let weekend = weekday >= 5;
        let age = (d - p.first_day) as f64;
        let growth = (p.growth_per_day * age).exp();
        let day_noise = (p.day_sigma * normal(rng)).exp();
        let hourly = hourly_utilisation(&p, rng, weekend, growth, day_noise);
        // Anomaly injection.
        let label = state.next_day(cfg, rng, d, weekend, total_w);
        let in_drop = state.drop_left > 0 || label == Some(AnomalyKind::Drop);
        let compute = day_compute(&p, &state, &hourly, label, in_drop, &recent, rng);
        if let Some(kind) = label {
            labels.push(AnomalyLabel {
                key: key.clone(),
                date,
                kind,
            });
        }
        let day_total = push_day_rows(&mut rows, rng, &key, id, date, &compute);
        if label.is_none() && !in_drop {
            recent.push(day_total);
        }
    }
    (rows, labels)
}

/// Draws a warehouse's size, growth, noise and habits for its workload type.
fn draw_profile(cfg: &SyntheticConfig, rng: &mut ChaCha8Rng, workload: Workload) -> Profile {
    let sizes = [1.0, 2.0, 4.0, 8.0];
    let late = rng.random::<f64>() < 0.2;
    Profile {
        workload,
        size: sizes[rng.random_range(0..sizes.len())],
        max_clusters: if workload == Workload::Bi && rng.random::<f64>() < 0.5 {
            2.0
        } else {
            1.0
        },
        growth_per_day: (0.0008 + 0.0005 * normal(rng)).max(0.0),
        day_sigma: match workload {
            Workload::Etl => 0.08,
            Workload::Bi => 0.15,
            Workload::AdHoc => 0.25,
            Workload::Dev => 0.2,
        },
        first_day: if late {
            rng.random_range(0..cfg.days.max(2) / 3)
        } else {
            0
        },
        batch_start: rng.random_range(0..6),
        batch_hours: rng.random_range(2..6),
        base_util: match workload {
            Workload::Etl => 0.9,
            Workload::Bi => 0.35 + 0.3 * rng.random::<f64>(),
            Workload::AdHoc => 0.5,
            Workload::Dev => 0.3,
        },
    }
}

/// A day's utilisation per hour (in fractions of one cluster at the original size), before anomalies.
fn hourly_utilisation(
    p: &Profile,
    rng: &mut ChaCha8Rng,
    weekend: bool,
    growth: f64,
    day_noise: f64,
) -> [f64; 24] {
    let mut hourly = [0.0f64; 24];
    match p.workload {
        Workload::Etl => {
            let factor = if weekend { 0.6 } else { 1.0 };
            // Per-second billing: the batch's last hour is partial, so spend varies smoothly with its length.
            let duration = (p.batch_hours as f64 * growth * factor * day_noise).clamp(0.5, 20.0);
            let mut h = 0;
            while (h as f64) < duration {
                let u = (p.base_util + 0.1 * normal(rng)).clamp(0.3, 1.0);
                hourly[(p.batch_start + h) % 24] = u * (duration - h as f64).min(1.0);
                h += 1;
            }
        }
        Workload::Bi | Workload::AdHoc | Workload::Dev => {
            let (open, close, p_active, weekend_p) = match p.workload {
                Workload::Bi => (8, 18, 0.95, 0.08),
                Workload::AdHoc => (9, 19, 0.6, 0.04),
                _ => (10, 17, 0.5, 0.02),
            };
            let pa = if weekend { weekend_p } else { p_active };
            for (h, slot) in hourly.iter_mut().enumerate().take(close).skip(open) {
                if rng.random::<f64>() < pa {
                    let u = match p.workload {
                        Workload::AdHoc => (p.base_util * (0.5 * normal(rng)).exp()).min(1.5),
                        _ => (p.base_util * (1.0 + 0.25 * normal(rng))).clamp(0.05, 1.5),
                    };
                    *slot = u * if h == open { 0.6 } else { 1.0 };
                }
            }
            for slot in hourly.iter_mut() {
                *slot *= growth * day_noise;
            }
        }
    }
    hourly
}

/// What the anomalies injected so far leave behind from one day to the next.
struct AnomalyState {
    /// Credits per hour of one cluster (doubled by each resize).
    size: f64,
    /// Share of the time the same work keeps a cluster busy (each resize makes it 75 %).
    util_factor: f64,
    /// Days before another anomaly may start.
    cooldown: usize,
    /// Further days the current drop lasts.
    drop_left: usize,
}

impl AnomalyState {
    /// Advances to day `d`: counts down a drop or the cooldown, or else draws whether an anomaly starts (and
    /// applies a resize or a drop's length). Returns the day's label.
    fn next_day(
        &mut self,
        cfg: &SyntheticConfig,
        rng: &mut ChaCha8Rng,
        d: usize,
        weekend: bool,
        total_w: f64,
    ) -> Option<AnomalyKind> {
        let mut label: Option<AnomalyKind> = None;
        if self.drop_left > 0 {
            self.drop_left -= 1;
        } else if self.cooldown > 0 {
            self.cooldown -= 1;
        } else if d + 1 < cfg.days && rng.random::<f64>() < cfg.anomaly_rate {
            let kind = draw_kind(cfg, rng, total_w);
            // Resizes are done by people at work: weekdays only (a weekend draw is skipped).
            let kind = if kind == AnomalyKind::Resize && weekend {
                None
            } else {
                Some(kind)
            };
            label = kind;
            if kind.is_some() {
                self.cooldown = 10;
            }
            match kind.unwrap_or(AnomalyKind::Spike) {
                AnomalyKind::Resize if label.is_some() => {
                    self.size *= 2.0;
                    self.util_factor *= 0.75;
                }
                AnomalyKind::Drop if label.is_some() => self.drop_left = rng.random_range(0..5),
                _ => {}
            }
        }
        label
    }
}

/// Draws an anomaly kind by `cfg.kind_weights` (whose sum is `total_w`).
fn draw_kind(cfg: &SyntheticConfig, rng: &mut ChaCha8Rng, total_w: f64) -> AnomalyKind {
    let mut x = rng.random::<f64>() * total_w;
    let mut kind = AnomalyKind::Drop;
    for (k, w) in [
        AnomalyKind::Spike,
        AnomalyKind::Runaway,
        AnomalyKind::Resize,
        AnomalyKind::Drop,
    ]
    .into_iter()
    .zip(cfg.kind_weights)
    {
        if x < w {
            kind = k;
            break;
        }
        x -= w;
    }
    kind
}

/// The day's compute credits per hour: the utilisation billed at the current size, up to the cap of its
/// clusters, with the day's anomaly applied.
fn day_compute(
    p: &Profile,
    state: &AnomalyState,
    hourly: &[f64; 24],
    label: Option<AnomalyKind>,
    in_drop: bool,
    recent: &[f64],
    rng: &mut ChaCha8Rng,
) -> [f64; 24] {
    let size = state.size;
    let cap = p.max_clusters;
    let mut compute = [0.0f64; 24];
    for h in 0..24 {
        // Utilisation is in "fraction of one cluster at the original size"; after a resize the same work
        // burns `size` per hour for 75 % of the time.
        compute[h] = (hourly[h] * state.util_factor).min(cap) * size;
    }
    let typical = typical_day(recent, &compute);
    match label {
        Some(AnomalyKind::Spike) => {
            add_spike(&mut compute, rng, p.workload, typical, size, cap);
        }
        Some(AnomalyKind::Runaway) => {
            for c in compute.iter_mut() {
                *c = c.max(size);
            }
        }
        _ => {}
    }
    if in_drop {
        for c in compute.iter_mut() {
            *c *= 0.05;
        }
    }
    compute
}

/// The usual day a spike is measured in: the mean of the last 14 ordinary days (the day itself at first).
fn typical_day(recent: &[f64], compute: &[f64; 24]) -> f64 {
    if recent.is_empty() {
        compute.iter().sum::<f64>()
    } else {
        let from = recent.len().saturating_sub(14);
        recent[from..].iter().sum::<f64>() / (recent.len() - from) as f64
    }
}

/// Adds a spike's extra work to the day, hour after hour from a random one, up to the hourly cap.
fn add_spike(
    compute: &mut [f64; 24],
    rng: &mut ChaCha8Rng,
    workload: Workload,
    typical: f64,
    size: f64,
    cap: f64,
) {
    // A runaway query or a reload: one to three extra typical days of work on steady warehouses. On
    // bursty ones (ad-hoc, dev) a day of one to three typical days happens on its own every few
    // weeks, so what anyone would call a spike there is larger: two to five.
    let (lo, hi) = match workload {
        Workload::Etl | Workload::Bi => (1.0, 3.0),
        Workload::AdHoc | Workload::Dev => (2.0, 5.0),
    };
    let mut extra = typical.max(size) * (lo + (hi - lo) * rng.random::<f64>());
    let mut h = rng.random_range(0..24);
    let mut guard = 0;
    while extra > 1e-9 && guard < 24 {
        let room = cap * size - compute[h];
        let add = room.min(extra).max(0.0);
        compute[h] += add;
        extra -= add;
        h = (h + 1) % 24;
        guard += 1;
    }
}

/// Pushes the day's metering rows (hours with compute, cloud services drawn on top); returns the day's compute.
fn push_day_rows(
    rows: &mut Vec<MeteringRow>,
    rng: &mut ChaCha8Rng,
    key: &WarehouseKey,
    id: i64,
    date: NaiveDate,
    compute: &[f64; 24],
) -> f64 {
    let mut day_total = 0.0;
    for (h, &c) in compute.iter().enumerate() {
        if c <= 0.0 {
            continue;
        }
        let c = (c * 1000.0).round() / 1000.0;
        if c <= 0.0 {
            continue;
        }
        let cloud = (c * (0.02 + 0.06 * rng.random::<f64>()) * 1000.0).round() / 1000.0;
        let t = Utc.from_utc_datetime(&date.and_hms_opt(h as u32, 0, 0).unwrap_or_default());
        rows.push(MeteringRow {
            account_name: key.account_name.clone(),
            warehouse_id: id,
            warehouse_name: key.warehouse_name.clone(),
            service_type: "WAREHOUSE_METERING".into(),
            start_time: t,
            end_time: t + Duration::hours(1),
            credits_used: c + cloud,
            credits_used_compute: c,
            credits_used_cloud_services: cloud,
        });
        day_total += c;
    }
    day_total
}
