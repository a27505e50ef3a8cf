//! Hourly metering rows to daily series per (account, warehouse).

use crate::metering::{MeteringRow, WarehouseKey};
use chrono::{Datelike, NaiveDate, Timelike};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One warehouse's days, dense and zero-filled, so index arithmetic equals calendar arithmetic
/// (the decomposition's period 7 must mean "one week").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailySeries {
    pub key: WarehouseKey,
    pub start: NaiveDate,
    pub credits: Vec<f64>,
    pub credits_compute: Vec<f64>,
    pub credits_cloud_services: Vec<f64>,
    /// Hours with compute burn; a warehouse left running shows here before its daily sum looks odd.
    pub hours_active: Vec<f64>,
    /// Highest hourly compute burn; bounded by size x clusters, so a resize moves it directly.
    pub peak_hourly_credits: Vec<f64>,
}

impl DailySeries {
    pub fn len(&self) -> usize {
        self.credits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.credits.is_empty()
    }

    pub fn end(&self) -> Option<NaiveDate> {
        if self.is_empty() {
            None
        } else {
            Some(self.date(self.len() - 1))
        }
    }

    pub fn date(&self, i: usize) -> NaiveDate {
        self.start + chrono::Days::new(i as u64)
    }

    /// Index of `date`, if the series holds it.
    pub fn index_of(&self, date: NaiveDate) -> Option<usize> {
        let offset = (date - self.start).num_days();
        (offset >= 0 && (offset as usize) < self.len()).then_some(offset as usize)
    }

    /// The series as a job running on the morning after `last` would have seen it (no look-ahead).
    pub fn truncated_to(&self, last: NaiveDate) -> DailySeries {
        let offset = (last - self.start).num_days() + 1;
        let n = offset.clamp(0, self.len() as i64) as usize;
        self.slice(0, n)
    }

    /// Days `[from, to)` by index.
    pub fn slice(&self, from: usize, to: usize) -> DailySeries {
        let to = to.min(self.len());
        let from = from.min(to);
        DailySeries {
            key: self.key.clone(),
            start: self.date(from),
            credits: self.credits[from..to].to_vec(),
            credits_compute: self.credits_compute[from..to].to_vec(),
            credits_cloud_services: self.credits_cloud_services[from..to].to_vec(),
            hours_active: self.hours_active[from..to].to_vec(),
            peak_hourly_credits: self.peak_hourly_credits[from..to].to_vec(),
        }
    }

    /// Weekday of day `i` (0 = Monday), for weekly profiles.
    pub fn weekday(&self, i: usize) -> usize {
        self.date(i).weekday().num_days_from_monday() as usize
    }
}

/// One aggregated day as the pipeline stores it in the database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailyUsage {
    pub key: WarehouseKey,
    pub date: NaiveDate,
    pub credits: f64,
    pub credits_compute: f64,
    pub credits_cloud_services: f64,
    pub hours_active: f64,
    pub peak_hourly_credits: f64,
}

#[derive(Default)]
struct DayAcc {
    credits: f64,
    compute: f64,
    cloud: f64,
    /// Compute per UTC hour; summed first because several service types may meter the same hour.
    hourly: [f64; 24],
}

/// Sums hourly rows per (account, warehouse, UTC date of START_TIME). Pseudo warehouses (`warehouse_id <= 0`)
/// are dropped as the original's `WAREHOUSE_ID > 0` filter did. Output is sorted by key, then date.
pub fn aggregate_daily(rows: &[MeteringRow]) -> Vec<DailyUsage> {
    let mut groups: HashMap<(&str, &str), BTreeMap<NaiveDate, DayAcc>> = HashMap::new();
    for row in rows.iter().filter(|r| r.warehouse_id > 0) {
        let date = row.start_time.date_naive();
        let hour = row.start_time.hour() as usize;
        let acc = groups
            .entry((row.account_name.as_str(), row.warehouse_name.as_str()))
            .or_default()
            .entry(date)
            .or_default();
        acc.credits += row.credits_used;
        acc.compute += row.credits_used_compute;
        acc.cloud += row.credits_used_cloud_services;
        acc.hourly[hour] += row.credits_used_compute;
    }
    let mut keys: Vec<_> = groups.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for ((account, warehouse), days) in keys {
        let key = WarehouseKey::new(account, warehouse);
        for (date, acc) in days {
            let hours_active = acc.hourly.iter().filter(|v| **v > 0.0).count() as f64;
            let peak = acc.hourly.iter().copied().fold(0.0_f64, f64::max);
            out.push(DailyUsage {
                key: key.clone(),
                date,
                credits: acc.credits,
                credits_compute: acc.compute,
                credits_cloud_services: acc.cloud,
                hours_active,
                peak_hourly_credits: peak,
            });
        }
    }
    out
}

/// Builds one dense series per warehouse, zero-filled from its first day to `end` (or to its own last day when
/// `end` is `None`). A warehouse whose first day is after `end` yields no series. Days after `end` are ignored.
/// Sorted by key.
pub fn build_series(days: &[DailyUsage], end: Option<NaiveDate>) -> Vec<DailySeries> {
    let mut by_key: BTreeMap<&WarehouseKey, Vec<&DailyUsage>> = BTreeMap::new();
    for d in days {
        by_key.entry(&d.key).or_default().push(d);
    }
    let mut out = Vec::with_capacity(by_key.len());
    for (key, mut ds) in by_key {
        ds.sort_by_key(|d| d.date);
        let Some(first) = ds.first().map(|d| d.date) else {
            continue;
        };
        let last = match (end, ds.last()) {
            (Some(e), _) => e,
            (None, Some(d)) => d.date,
            (None, None) => continue,
        };
        if first > last {
            continue;
        }
        let n = (last - first).num_days() as usize + 1;
        let mut s = DailySeries {
            key: key.clone(),
            start: first,
            credits: vec![0.0; n],
            credits_compute: vec![0.0; n],
            credits_cloud_services: vec![0.0; n],
            hours_active: vec![0.0; n],
            peak_hourly_credits: vec![0.0; n],
        };
        for d in ds {
            if d.date > last {
                break;
            }
            let i = (d.date - first).num_days() as usize;
            // `+=` rather than `=`: tolerate a caller passing the same day twice (e.g. two service types).
            s.credits[i] += d.credits;
            s.credits_compute[i] += d.credits_compute;
            s.credits_cloud_services[i] += d.credits_cloud_services;
            s.hours_active[i] = (s.hours_active[i] + d.hours_active).min(24.0);
            s.peak_hourly_credits[i] = s.peak_hourly_credits[i].max(d.peak_hourly_credits);
        }
        out.push(s);
    }
    out
}

/// Rows straight to series, for tests, the demo and backtests.
pub fn series_from_rows(rows: &[MeteringRow], end: Option<NaiveDate>) -> Vec<DailySeries> {
    build_series(&aggregate_daily(rows), end)
}
