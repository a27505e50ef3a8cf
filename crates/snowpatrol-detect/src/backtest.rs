//! Walk-forward evaluation: what would the daily jobs have flagged, day by day, with the data they had then?

use crate::daily::DailySeries;
use crate::error::DetectError;
use crate::metering::{AnomalyKind, AnomalyLabel, WarehouseKey};
use crate::model::{DayScore, TrainConfig, TrainedModel, train};
use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

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

/// Caught and labelled incidents of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Labelled incidents (runs of consecutive labelled days of one kind).
    pub incidents: usize,
    /// Of those, caught: any day of their window flagged (for `expected` and `drop`: flagged at all).
    pub flagged: usize,
}

/// How well flagged days match labelled ones; see [`backtest`] for the matching rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Day level: flagged days inside a cost-increase window / flagged days (flags on neutral `drop` days are
    /// not counted either way).
    pub day_precision: f64,
    /// Day level: labelled cost-increase days whose window holds a flag / labelled cost-increase days.
    pub day_recall: f64,
    pub day_f1: f64,
    pub flagged_days: usize,
    pub flagged_days_in_windows: usize,
    pub labelled_days: usize,
    pub labelled_days_caught: usize,
    /// Incident level: labelled cost-increase incidents caught / labelled.
    pub incident_recall: f64,
    pub labelled_incidents: usize,
    pub caught_incidents: usize,
    /// Flagged incidents (runs of consecutive flagged days) and those touching no cost-increase window.
    pub flagged_incidents: usize,
    pub false_alarms: usize,
    /// True flagged incidents / flagged incidents.
    pub incident_precision: f64,
    /// Scored warehouse-days / 30.4375.
    pub warehouse_months: f64,
    pub false_alarms_per_100_warehouse_months: f64,
    /// Recurring patterns labelled `expected` (e.g. month-end close): occurrences and how many were flagged.
    pub expected_occurrences: usize,
    pub expected_flagged: usize,
    /// Labelled incidents and how many were caught, per kind (drops and expected included for information).
    pub by_kind: BTreeMap<AnomalyKind, KindCounts>,
}

impl Metrics {
    /// Share of recurring-pattern occurrences flagged (0 when there are none).
    pub fn expected_flag_rate(&self) -> f64 {
        if self.expected_occurrences == 0 {
            0.0
        } else {
            self.expected_flagged as f64 / self.expected_occurrences as f64
        }
    }
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
/// Matching rule (with labels): a labelled cost increase (spike, runaway, resize, scale-out) day has a window:
/// its day, or for a resize its day plus `resize_tolerance_days` (a resize can first show a day late).
/// *Day level*: a flagged day is a true positive when it lies in a window, neutral on a labelled drop day,
/// else a false positive; a labelled day is caught when its window holds a flag. *Incident level*: labelled
/// incidents are runs of consecutive labelled days of one kind, caught when any of their windows holds a flag;
/// flagged incidents are runs of consecutive flagged days, a false alarm when none of their days lies in a
/// window. Days labelled `expected` (recurring patterns such as a month-end close) are false alarms when
/// flagged, and their flag rate is reported on its own.
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
    let metrics = labels.map(|l| evaluate_with(&days, &incidents, l, cfg));
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
        by_key.entry(&d.key).or_default().push(d.score.day.date);
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

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Metrics of `days` against `labels` (labels of warehouses or dates that were not scored are out of scope).
pub fn evaluate(days: &[ScoredDay], labels: &[AnomalyLabel], cfg: &BacktestConfig) -> Metrics {
    let incidents = incidents_of(days);
    evaluate_with(days, &incidents, labels, cfg)
}

/// [`evaluate`] per group of warehouses (e.g. per archetype); warehouses without a group are left out.
pub fn evaluate_by_group(
    days: &[ScoredDay],
    labels: &[AnomalyLabel],
    cfg: &BacktestConfig,
    group_of: &BTreeMap<WarehouseKey, String>,
) -> BTreeMap<String, Metrics> {
    let mut groups: BTreeMap<&str, (Vec<ScoredDay>, Vec<AnomalyLabel>)> = BTreeMap::new();
    for d in days {
        if let Some(g) = group_of.get(&d.key) {
            groups.entry(g).or_default().0.push(d.clone());
        }
    }
    for l in labels {
        if let Some(g) = group_of.get(&l.key)
            && let Some(e) = groups.get_mut(g.as_str())
        {
            e.1.push(l.clone());
        }
    }
    groups
        .into_iter()
        .map(|(g, (d, l))| (g.to_string(), evaluate(&d, &l, cfg)))
        .collect()
}

fn evaluate_with(
    days: &[ScoredDay],
    incidents: &[(WarehouseKey, NaiveDate, NaiveDate)],
    labels: &[AnomalyLabel],
    cfg: &BacktestConfig,
) -> Metrics {
    let (scored_range, flagged) = scored_ranges_and_flags(days);
    let in_scope = labels_in_scope(labels, &scored_range);
    let m = Matching::new(flagged, &in_scope, cfg.resize_tolerance_days);
    // Day level.
    let (flagged_days, flagged_in) = m.flagged_day_counts();
    let ((labelled_days, labelled_caught), expected) = m.labelled_day_counts(&in_scope);
    // Incident level: runs of consecutive labelled days of one kind.
    let (by_kind, inc_total, inc_caught) = m.labelled_incident_counts(&in_scope);
    let false_alarms = m.false_alarms(incidents);
    let warehouse_months = days.len() as f64 / 30.4375;
    let day_precision = ratio(flagged_in, flagged_days);
    let day_recall = ratio(labelled_caught, labelled_days);
    Metrics {
        day_precision,
        day_recall,
        day_f1: f1(day_precision, day_recall),
        flagged_days,
        flagged_days_in_windows: flagged_in,
        labelled_days,
        labelled_days_caught: labelled_caught,
        incident_recall: ratio(inc_caught, inc_total),
        labelled_incidents: inc_total,
        caught_incidents: inc_caught,
        flagged_incidents: incidents.len(),
        false_alarms,
        incident_precision: ratio(incidents.len() - false_alarms, incidents.len()),
        warehouse_months,
        false_alarms_per_100_warehouse_months: if warehouse_months > 0.0 {
            100.0 * false_alarms as f64 / warehouse_months
        } else {
            0.0
        },
        expected_occurrences: expected.0,
        expected_flagged: expected.1,
        by_kind,
    }
}

type DaysByKey<'a> = HashMap<&'a WarehouseKey, HashSet<NaiveDate>>;

/// The first and last scored day and the flagged days of each warehouse.
fn scored_ranges_and_flags(
    days: &[ScoredDay],
) -> (
    HashMap<&WarehouseKey, (NaiveDate, NaiveDate)>,
    DaysByKey<'_>,
) {
    let mut scored_range: HashMap<&WarehouseKey, (NaiveDate, NaiveDate)> = HashMap::new();
    let mut flagged: DaysByKey = HashMap::new();
    for d in days {
        let e = scored_range
            .entry(&d.key)
            .or_insert((d.score.day.date, d.score.day.date));
        e.0 = e.0.min(d.score.day.date);
        e.1 = e.1.max(d.score.day.date);
        if d.score.is_anomaly {
            flagged.entry(&d.key).or_default().insert(d.score.day.date);
        }
    }
    (scored_range, flagged)
}

/// The labels within their warehouse's scored range, sorted by (key, kind, date).
fn labels_in_scope<'a>(
    labels: &'a [AnomalyLabel],
    scored_range: &HashMap<&WarehouseKey, (NaiveDate, NaiveDate)>,
) -> Vec<&'a AnomalyLabel> {
    let mut in_scope: Vec<&AnomalyLabel> = labels
        .iter()
        .filter(|l| {
            scored_range
                .get(&l.key)
                .is_some_and(|(a, b)| l.date >= *a && l.date <= *b)
        })
        .collect();
    in_scope.sort_by(|a, b| (&a.key, a.kind, a.date).cmp(&(&b.key, b.kind, b.date)));
    in_scope
}

/// Flagged days and labelled windows per warehouse, matched against each other.
struct Matching<'a> {
    flagged: DaysByKey<'a>,
    /// Days inside a cost-increase window.
    positive: DaysByKey<'a>,
    /// Labelled drop days: a flag there counts neither way.
    neutral: DaysByKey<'a>,
    resize_tolerance_days: i64,
}

impl<'a> Matching<'a> {
    fn new(
        flagged: DaysByKey<'a>,
        in_scope: &[&'a AnomalyLabel],
        resize_tolerance_days: i64,
    ) -> Self {
        let mut m = Matching {
            flagged,
            positive: HashMap::new(),
            neutral: HashMap::new(),
            resize_tolerance_days,
        };
        // Positive (cost-increase window) and neutral (drop) days per warehouse.
        for l in in_scope {
            if l.kind.is_cost_increase() {
                let tol = m.tolerance(l);
                let set = m.positive.entry(&l.key).or_default();
                for k in 0..=tol {
                    set.insert(l.date + chrono::Days::new(k));
                }
            } else if l.kind == AnomalyKind::Drop {
                m.neutral.entry(&l.key).or_default().insert(l.date);
            }
        }
        m
    }

    /// Days after a label's day that its window also covers.
    fn tolerance(&self, l: &AnomalyLabel) -> u64 {
        if l.kind == AnomalyKind::Resize {
            self.resize_tolerance_days.max(0) as u64
        } else {
            0
        }
    }

    fn is_flagged(&self, k: &WarehouseKey, d: NaiveDate) -> bool {
        self.flagged.get(k).is_some_and(|s| s.contains(&d))
    }

    /// Whether the window of label `l` holds a flag.
    fn window_hit(&self, l: &AnomalyLabel) -> bool {
        (0..=self.tolerance(l)).any(|k| self.is_flagged(&l.key, l.date + chrono::Days::new(k)))
    }

    /// Flagged days (not counting those on labelled drop days) and, of those, the ones inside a window.
    fn flagged_day_counts(&self) -> (usize, usize) {
        let (mut flagged_days, mut flagged_in) = (0, 0);
        for (k, set) in &self.flagged {
            for d in set {
                if self.positive.get(k).is_some_and(|p| p.contains(d)) {
                    flagged_days += 1;
                    flagged_in += 1;
                } else if !self.neutral.get(k).is_some_and(|p| p.contains(d)) {
                    flagged_days += 1;
                }
            }
        }
        (flagged_days, flagged_in)
    }

    /// (labelled cost-increase days, of those caught) and (days labelled `expected`, of those flagged).
    fn labelled_day_counts(&self, in_scope: &[&AnomalyLabel]) -> ((usize, usize), (usize, usize)) {
        let (mut labelled_days, mut labelled_caught) = (0, 0);
        let mut expected = (0, 0);
        for l in in_scope {
            if l.kind.is_cost_increase() {
                labelled_days += 1;
                if self.window_hit(l) {
                    labelled_caught += 1;
                }
            } else if l.kind == AnomalyKind::Expected {
                expected.0 += 1;
                if self.is_flagged(&l.key, l.date) {
                    expected.1 += 1;
                }
            }
        }
        ((labelled_days, labelled_caught), expected)
    }

    /// Labelled incidents (runs of consecutive labelled days of one kind) and how many were caught: per kind,
    /// and the cost increases' total and caught.
    fn labelled_incident_counts(
        &self,
        in_scope: &[&AnomalyLabel],
    ) -> (BTreeMap<AnomalyKind, KindCounts>, usize, usize) {
        let mut by_kind: BTreeMap<AnomalyKind, KindCounts> = BTreeMap::new();
        let (mut inc_total, mut inc_caught) = (0, 0);
        let mut i = 0;
        while i < in_scope.len() {
            let mut j = i + 1;
            while j < in_scope.len()
                && in_scope[j].key == in_scope[i].key
                && in_scope[j].kind == in_scope[i].kind
                && (in_scope[j].date - in_scope[j - 1].date).num_days() <= 1
            {
                j += 1;
            }
            let run = &in_scope[i..j];
            let kind = run[0].kind;
            let hit = run.iter().any(|l| self.window_hit(l));
            let e = by_kind.entry(kind).or_default();
            e.incidents += 1;
            if hit {
                e.flagged += 1;
            }
            if kind.is_cost_increase() {
                inc_total += 1;
                if hit {
                    inc_caught += 1;
                }
            }
            i = j;
        }
        (by_kind, inc_total, inc_caught)
    }

    /// Flagged incidents none of whose days lies in a cost-increase window.
    fn false_alarms(&self, incidents: &[(WarehouseKey, NaiveDate, NaiveDate)]) -> usize {
        let mut false_alarms = 0;
        for (key, a, b) in incidents {
            let mut d = *a;
            let mut hit = false;
            while d <= *b {
                if self.positive.get(key).is_some_and(|p| p.contains(&d)) {
                    hit = true;
                    break;
                }
                d = d + chrono::Days::new(1);
            }
            if !hit {
                false_alarms += 1;
            }
        }
        false_alarms
    }
}

/// Where a backtest's first scored day falls against the data it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartCheck {
    /// Inside the data: there is history before it and days to score from it on.
    Inside,
    /// After the last day of data: nothing to score.
    AfterLastDay { first: NaiveDate, last: NaiveDate },
    /// On or before the first day of data: each warehouse is scored only once it has enough history to train.
    OnOrBeforeFirstDay { first: NaiveDate },
    /// No data at all.
    NoData,
}

/// Checks `start` against the days `series` cover (see [`StartCheck`]).
pub fn check_start(series: &[DailySeries], start: NaiveDate) -> StartCheck {
    let last = series.iter().filter_map(|s| s.end()).max();
    let first = series.iter().map(|s| s.start).min();
    match (first, last) {
        (Some(first), Some(last)) if start > last => StartCheck::AfterLastDay { first, last },
        (Some(first), Some(_)) if start <= first => StartCheck::OnOrBeforeFirstDay { first },
        (Some(_), Some(_)) => StartCheck::Inside,
        _ => StartCheck::NoData,
    }
}

/// How many labels name a warehouse the series do not have (they can only count as missed).
pub fn unknown_label_count(series: &[DailySeries], labels: &[AnomalyLabel]) -> usize {
    let keys: std::collections::BTreeSet<&WarehouseKey> = series.iter().map(|s| &s.key).collect();
    labels.iter().filter(|l| !keys.contains(&l.key)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daily::series_from_rows;
    use crate::synthetic::{SyntheticConfig, generate};

    fn data() -> (Vec<DailySeries>, Vec<AnomalyLabel>) {
        let end = NaiveDate::from_ymd_opt(2025, 6, 30).unwrap();
        let d = generate(&SyntheticConfig {
            seed: 7,
            warehouses: 2,
            days: 60,
            end,
            ..SyntheticConfig::default()
        });
        (series_from_rows(&d.rows, Some(end)), d.labels)
    }

    #[test]
    fn the_start_is_checked_against_the_days_the_data_covers() {
        let (series, _) = data();
        let day = |m, d| NaiveDate::from_ymd_opt(2025, m, d).unwrap();
        let first = series.iter().map(|s| s.start).min().unwrap();
        assert_eq!(check_start(&series, day(6, 1)), StartCheck::Inside);
        assert_eq!(
            check_start(&series, day(7, 1)),
            StartCheck::AfterLastDay {
                first,
                last: day(6, 30)
            }
        );
        assert_eq!(
            check_start(&series, first),
            StartCheck::OnOrBeforeFirstDay { first }
        );
        assert_eq!(check_start(&[], day(6, 1)), StartCheck::NoData);
    }

    #[test]
    fn labels_of_warehouses_without_data_are_counted() {
        let (series, labels) = data();
        assert_eq!(unknown_label_count(&series, &labels), 0);
        let mut other = labels.clone();
        other.extend(labels.iter().take(2).map(|l| AnomalyLabel {
            key: WarehouseKey::new("ELSEWHERE", &l.key.warehouse_name),
            ..l.clone()
        }));
        assert_eq!(unknown_label_count(&series, &other), labels.len().min(2));
    }
}
