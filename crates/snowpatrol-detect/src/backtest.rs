//! Walk-forward evaluation: what would the daily jobs have flagged, day by day, with the data they had then?

use crate::daily::DailySeries;
use crate::error::DetectError;
use crate::metering::{AnomalyKind, AnomalyLabel, WarehouseKey};
use crate::model::{DayScore, TrainConfig, TrainedModel, train};
use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BacktestConfig {
    /// First scored day.
    pub start: NaiveDate,
    /// Retrain on all data before the cutoff every this many days (the first cutoff is `start`).
    pub retrain_every_days: usize,
    pub model: TrainConfig,
    /// How many days to score from `start` (0 = through the end of each series). Each day is scored once,
    /// with the data up to it; the original's predict job re-scored the last 8 days on every run and so
    /// reported the same anomaly up to 8 times.
    pub score_days: usize,
    /// Days after a resize's first day that still count as catching it (the rise can show a day late).
    pub resize_tolerance_days: i64,
}

impl BacktestConfig {
    pub fn new(start: NaiveDate, model: TrainConfig) -> Self {
        Self {
            start,
            retrain_every_days: 7,
            model,
            score_days: 0,
            resize_tolerance_days: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredDay {
    pub key: WarehouseKey,
    pub score: DayScore,
}

/// Incident-level metrics on cost increases; see [`backtest`] for the matching rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Incidents that match a labelled cost increase.
    pub true_positives: usize,
    /// Incidents that match none (a flagged drop counts here: it is not a cost increase).
    pub false_positives: usize,
    /// Labelled cost increases no flagged day caught.
    pub false_negatives: usize,
    /// Labelled cost increases that were caught.
    pub detected_labels: usize,
    pub labels: usize,
    /// (detected, labelled) per kind, drops included for information.
    pub by_kind: BTreeMap<AnomalyKind, (usize, usize)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BacktestReport {
    pub days: Vec<ScoredDay>,
    /// Flagged warehouse-days.
    pub flagged: usize,
    pub scored: usize,
    /// Runs of consecutive flagged days per warehouse.
    pub incidents: usize,
    pub trainings: usize,
    pub metrics: Option<Metrics>,
}

/// Walk-forward backtest, parallel over warehouses.
///
/// For each warehouse, from `start` to its last day: on `start` and every `retrain_every_days` after it, train
/// on the days strictly before that day (warehouses too young to train are scored once they can be); then
/// score day `d` from the series truncated to `d`, so nothing after `d` is seen (for the baseline, that means the
/// decomposition's trend end is extrapolated exactly as on the morning after `d`).
///
/// Matching rule (with labels): an incident is a run of consecutive flagged days of one warehouse. A labelled
/// cost increase (spike, runaway, resize) has a window: its day, or for a resize its first day plus
/// `resize_tolerance_days`. An incident is a true positive when any of its days falls in the window of a
/// labelled cost increase of that warehouse, else a false positive. A label is detected when any day in its
/// window is flagged. Precision = TP / (TP + FP) incidents; recall = detected / labelled cost increases within the
/// scored period; F1 their harmonic mean.
pub fn backtest(
    series: &[DailySeries],
    cfg: &BacktestConfig,
    labels: Option<&[AnomalyLabel]>,
) -> Result<BacktestReport, DetectError> {
    if cfg.retrain_every_days == 0 {
        return Err(DetectError::InvalidParameter(
            "retrain_every_days must be >= 1".into(),
        ));
    }
    let per: Vec<Result<(Vec<ScoredDay>, usize), DetectError>> =
        series.par_iter().map(|s| backtest_one(s, cfg)).collect();
    let mut days = Vec::new();
    let mut trainings = 0;
    for r in per {
        let (d, t) = r?;
        days.extend(d);
        trainings += t;
    }
    let flagged = days.iter().filter(|d| d.score.is_anomaly).count();
    let incidents = incidents_of(&days);
    let metrics = labels.map(|l| evaluate(&days, &incidents, l, cfg));
    Ok(BacktestReport {
        scored: days.len(),
        flagged,
        incidents: incidents.len(),
        trainings,
        days,
        metrics,
    })
}

fn backtest_one(
    s: &DailySeries,
    cfg: &BacktestConfig,
) -> Result<(Vec<ScoredDay>, usize), DetectError> {
    let mut out = Vec::new();
    let Some(mut end) = s.end() else {
        return Ok((out, 0));
    };
    if cfg.score_days > 0 {
        end = end.min(cfg.start + chrono::Days::new(cfg.score_days as u64 - 1));
    }
    let first = s.start.max(cfg.start);
    let mut model: Option<TrainedModel> = None;
    let mut trainings = 0;
    let mut next_train = first;
    let mut d = first;
    while d <= end {
        if d >= next_train {
            let Some(i) = s.index_of(d) else { break };
            let hist = s.slice(0, i);
            match train(&hist, &cfg.model) {
                Ok(m) => {
                    model = Some(m);
                    trainings += 1;
                    next_train = d + chrono::Days::new(cfg.retrain_every_days as u64);
                }
                Err(DetectError::TooShort { .. }) => next_train = d + chrono::Days::new(1),
                Err(e) => return Err(e),
            }
        }
        if let Some(m) = &model {
            let view = s.truncated_to(d);
            match m.score(&view, 1) {
                Ok(scores) => {
                    if let Some(last) = scores.into_iter().last() {
                        out.push(ScoredDay {
                            key: s.key.clone(),
                            score: last,
                        });
                    }
                }
                Err(DetectError::TooShort { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        d = d + chrono::Days::new(1);
    }
    Ok((out, trainings))
}

/// (key, first, last) of each run of consecutive flagged days.
fn incidents_of(days: &[ScoredDay]) -> Vec<(WarehouseKey, NaiveDate, NaiveDate)> {
    let mut by_key: BTreeMap<&WarehouseKey, Vec<NaiveDate>> = BTreeMap::new();
    for d in days.iter().filter(|d| d.score.is_anomaly) {
        by_key.entry(&d.key).or_default().push(d.score.date);
    }
    let mut out = Vec::new();
    for (k, mut dates) in by_key {
        dates.sort();
        let mut cur: Option<(NaiveDate, NaiveDate)> = None;
        for date in dates {
            cur = match cur {
                Some((a, b)) if (date - b).num_days() <= 1 => Some((a, date)),
                Some((a, b)) => {
                    out.push((k.clone(), a, b));
                    Some((date, date))
                }
                None => Some((date, date)),
            };
        }
        if let Some((a, b)) = cur {
            out.push((k.clone(), a, b));
        }
    }
    out
}

fn evaluate(
    days: &[ScoredDay],
    incidents: &[(WarehouseKey, NaiveDate, NaiveDate)],
    labels: &[AnomalyLabel],
    cfg: &BacktestConfig,
) -> Metrics {
    let mut scored_range: HashMap<&WarehouseKey, (NaiveDate, NaiveDate)> = HashMap::new();
    let mut flagged: HashMap<&WarehouseKey, Vec<NaiveDate>> = HashMap::new();
    for d in days {
        let e = scored_range
            .entry(&d.key)
            .or_insert((d.score.date, d.score.date));
        e.0 = e.0.min(d.score.date);
        e.1 = e.1.max(d.score.date);
        if d.score.is_anomaly {
            flagged.entry(&d.key).or_default().push(d.score.date);
        }
    }
    let window = |l: &AnomalyLabel| {
        let tol = if l.kind == AnomalyKind::Resize {
            cfg.resize_tolerance_days.max(0)
        } else {
            0
        };
        (l.date, l.date + chrono::Days::new(tol as u64))
    };
    let in_scope: Vec<&AnomalyLabel> = labels
        .iter()
        .filter(|l| {
            scored_range
                .get(&l.key)
                .is_some_and(|(a, b)| l.date >= *a && l.date <= *b)
        })
        .collect();
    let mut by_kind: BTreeMap<AnomalyKind, (usize, usize)> = BTreeMap::new();
    let (mut detected, mut total) = (0, 0);
    for l in &in_scope {
        let (a, b) = window(l);
        let hit = flagged
            .get(&l.key)
            .is_some_and(|ds| ds.iter().any(|d| *d >= a && *d <= b));
        let e = by_kind.entry(l.kind).or_insert((0, 0));
        e.1 += 1;
        if hit {
            e.0 += 1;
        }
        if l.kind.is_cost_increase() {
            total += 1;
            if hit {
                detected += 1;
            }
        }
    }
    let (mut tp, mut fp) = (0, 0);
    for (key, a, b) in incidents {
        let hit = in_scope.iter().any(|l| {
            let (la, lb) = window(l);
            l.kind.is_cost_increase() && &l.key == key && la <= *b && lb >= *a
        });
        if hit { tp += 1 } else { fp += 1 }
    }
    let precision = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if total == 0 {
        0.0
    } else {
        detected as f64 / total as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Metrics {
        precision,
        recall,
        f1,
        true_positives: tp,
        false_positives: fp,
        false_negatives: total - detected,
        detected_labels: detected,
        labels: total,
        by_kind,
    }
}
