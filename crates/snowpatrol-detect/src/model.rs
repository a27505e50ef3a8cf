//! Models: the original's rule kept as `baseline`, and the `default` cost-increase model.
//!
//! **Baseline** (the original, reproducible now): classical decomposition of the daily credits, an Isolation
//! Forest on the residuals, threshold `mean - 3 std` of the training `decision_function`; a day is anomalous when
//! its score is `<=` the threshold. It flags drops as well as rises and, because the residual of every noisy day
//! is "unusual" to a forest fitted on a single feature, about one day in ten.
//!
//! **Default** (`crate::default_model`): a causal rule for cost increases that judges an active day against what
//! the warehouse spends when it runs, learns weekday and month-boundary effects, calibrates each warehouse's
//! threshold to a false-alarm budget on its own out-of-sample history, and lowers it when the hours show a
//! runaway or a resize.

use crate::daily::DailySeries;
use crate::decompose::seasonal_decompose;
use crate::default_model;
pub use crate::default_model::{DEFAULT_MODEL_FORMAT, DefaultModel, DefaultRuleConfig};
use crate::error::{DetectError, check_finite};
use crate::iforest::{IsolationForest, IsolationForestParams};
use crate::metering::WarehouseKey;
use chrono::NaiveDate;
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Default,
    Baseline,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Default => "default",
            ModelKind::Baseline => "baseline",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelKind {
    type Err = DetectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(ModelKind::Default),
            "baseline" => Ok(ModelKind::Baseline),
            other => Err(DetectError::InvalidParameter(format!(
                "unknown model kind {other:?} (expected default or baseline)"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub seed: u64,
    /// Warehouses with fewer days are refused (the original skipped them): 14 = two weekly periods.
    pub min_days: usize,
    /// Baseline only; scikit-learn's defaults.
    pub iforest: IsolationForestParams,
    /// Default model only.
    pub rule: DefaultRuleConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Default,
            seed: 0,
            min_days: 14,
            iforest: IsolationForestParams::default(),
            rule: DefaultRuleConfig::default(),
        }
    }
}

/// A stable seed per (warehouse, model version): FNV-1a then SplitMix64. Not `std`'s `RandomState`, which is
/// randomised per process and would make every replica train a different forest.
pub fn seed_for(key: &WarehouseKey, version: i64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(key.account_name.as_bytes());
    eat(&[0]);
    eat(key.warehouse_name.as_bytes());
    eat(&[0]);
    eat(&version.to_le_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub training_days: usize,
    /// Mean and population std of the training scores (baseline: `decision_function`; default: robust z).
    pub score_mean: f64,
    pub score_std: f64,
    /// Fraction of training days the model itself would flag.
    pub training_anomaly_rate: f64,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detector {
    Baseline { forest: IsolationForest },
    Default(Box<DefaultModel>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub kind: ModelKind,
    /// Baseline: anomaly when `score <= threshold`. Default: anomaly when `score >= threshold` (and the gates).
    pub threshold: f64,
    pub training_start: NaiveDate,
    pub training_end: NaiveDate,
    pub metrics: TrainingMetrics,
    pub detector: Detector,
}

/// One scored day of one warehouse: what the model saw and why it judged so. The shape every stage shares: the
/// detector's [`DayScore`] embeds it, the pipeline records it ([`DayScore::day`] of each flagged day) and the
/// report and Slack messages show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyDay {
    pub date: NaiveDate,
    pub actual_credits: f64,
    pub expected_credits: f64,
    /// Kept separate from `actual - expected` because the detector decides what "expected" means
    /// (e.g. trend + seasonal) and may clamp negative excess; the report shows what it was given.
    pub excess_credits: f64,
    /// Detector score. Its direction depends on the model: the baseline flags `score <= threshold`
    /// (scikit-learn's `decision_function`), the default model `score >= threshold` (a robust z) or one of
    /// its other tests, which the explanation names.
    pub score: f64,
    pub threshold: f64,
    /// Free text from the detector (e.g. "peak hourly burn 4x usual: likely resize").
    pub explanation: String,
}

/// A model's judgement of one day: the [`AnomalyDay`] figures (flattened in JSON) and what only the detector needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DayScore {
    #[serde(flatten)]
    pub day: AnomalyDay,
    pub is_anomaly: bool,
    /// What the hours showed that day (default model; empty for the baseline and for rows stored before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// The range the model considered normal for an active day: below `normal_high` (the spend at which the
    /// day would be flagged without hourly evidence or the record test: the z threshold and the materiality
    /// together) and above `normal_low` (the same distance below). Default model only; charts draw it as a band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_high: Option<f64>,
}

/// Hourly evidence of a cost increase: it shows the cause, so the default model needs less of a daily rise.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// Many more active hours than usual: a warehouse left running (auto-suspend off, a stuck session).
    LeftRunning { hours_active: f64, usual_hours: f64 },
    /// The peak hourly burn is above the usual peak; when that peak is a cap (size x clusters), only a resize
    /// or a scale-out lifts it.
    PeakAboveCap {
        peak_hourly_credits: f64,
        usual_peak_hourly_credits: f64,
        capped: bool,
    },
    /// Far above the highest day of the warehouse's recent active days (weekday-adjusted): how a heavy-tailed,
    /// intermittent warehouse's runaway shows.
    AboveRecord {
        record_credits: f64,
        record_days: usize,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Incident {
    pub key: WarehouseKey,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub days: Vec<DayScore>,
}

impl Incident {
    pub fn excess_credits(&self) -> f64 {
        self.days
            .iter()
            .map(|d| d.day.excess_credits.max(0.0))
            .sum()
    }
}

/// Consecutive anomalous days form one incident (one alert), so a persisting resize is not a month of alerts.
pub fn group_incidents(key: &WarehouseKey, days: &[DayScore]) -> Vec<Incident> {
    let mut flagged: Vec<&DayScore> = days.iter().filter(|d| d.is_anomaly).collect();
    flagged.sort_by_key(|d| d.day.date);
    let mut out: Vec<Incident> = Vec::new();
    for d in flagged {
        match out.last_mut() {
            Some(inc) if (d.day.date - inc.last_day).num_days() <= 1 => {
                if d.day.date > inc.last_day {
                    inc.last_day = d.day.date;
                }
                if inc.days.last().map(|x| x.day.date) != Some(d.day.date) {
                    inc.days.push(d.clone());
                }
            }
            _ => out.push(Incident {
                key: key.clone(),
                first_day: d.day.date,
                last_day: d.day.date,
                days: vec![d.clone()],
            }),
        }
    }
    out
}

fn check_series(series: &DailySeries) -> Result<(), DetectError> {
    check_finite("daily credits", &series.credits)?;
    check_finite("daily hours active", &series.hours_active)?;
    check_finite("daily peak hourly credits", &series.peak_hourly_credits)
}

/// Trains on every day of `series` (the caller truncates it to the training cutoff).
pub fn train(series: &DailySeries, cfg: &TrainConfig) -> Result<TrainedModel, DetectError> {
    let n = series.len();
    if n < cfg.min_days.max(1) {
        return Err(DetectError::TooShort {
            what: "training",
            needed: cfg.min_days.max(1),
            got: n,
        });
    }
    check_series(series)?;
    match cfg.kind {
        ModelKind::Baseline => train_baseline(series, cfg),
        ModelKind::Default => Ok(train_default(series, cfg)),
    }
}

/// The baseline: an isolation forest on the seasonal decomposition's residuals, flagging scores at most
/// mean - 3 std of the training scores.
fn train_baseline(series: &DailySeries, cfg: &TrainConfig) -> Result<TrainedModel, DetectError> {
    let n = series.len();
    let dec = seasonal_decompose(&series.credits, 7)?;
    let params = cfg.iforest.clone().with_seed(cfg.seed);
    let x = ArrayView2::from_shape((n, 1), &dec.resid)
        .map_err(|e| DetectError::InvalidParameter(format!("residual shape: {e}")))?;
    let forest = IsolationForest::fit(x, &params)?;
    let scores = forest.decision_function(x)?;
    let scores = scores.as_slice().unwrap_or(&[]);
    let (mean, std) = mean_std(scores);
    let threshold = mean - 3.0 * std;
    let flagged = scores.iter().filter(|s| **s <= threshold).count();
    Ok(trained_model(
        series,
        cfg,
        ModelKind::Baseline,
        threshold,
        scores,
        flagged,
        Detector::Baseline { forest },
    ))
}

/// The default model, with training metrics from scoring its last 90 training days.
fn train_default(series: &DailySeries, cfg: &TrainConfig) -> TrainedModel {
    let n = series.len();
    let model = default_model::fit(series, &cfg.rule);
    let from = n.saturating_sub(90).max(7).min(n);
    let scores = model.score_range(series, from);
    let z: Vec<f64> = scores.iter().map(|s| s.day.score).collect();
    let flagged = scores.iter().filter(|s| s.is_anomaly).count();
    trained_model(
        series,
        cfg,
        ModelKind::Default,
        model.threshold,
        &z,
        flagged,
        Detector::Default(Box::new(model)),
    )
}

/// Wraps a fitted detector with what every kind records about its training, so that the kinds report it
/// alike: the span of `series`, and the mean, spread and flagged share of the training `scores` it was
/// judged on (`flagged` of them anomalous).
fn trained_model(
    series: &DailySeries,
    cfg: &TrainConfig,
    kind: ModelKind,
    threshold: f64,
    scores: &[f64],
    flagged: usize,
    detector: Detector,
) -> TrainedModel {
    let n = series.len();
    let (score_mean, score_std) = mean_std(scores);
    TrainedModel {
        kind,
        threshold,
        training_start: series.start,
        training_end: series.date(n - 1),
        metrics: TrainingMetrics {
            training_days: n,
            score_mean,
            score_std,
            training_anomaly_rate: if scores.is_empty() {
                0.0
            } else {
                flagged as f64 / scores.len() as f64
            },
            seed: cfg.seed,
        },
        detector,
    }
}

/// Mean and population standard deviation (numpy's default `ddof=0`, as the original's threshold uses).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// A day as a chart draws it: what the warehouse spent, what its model expected and the range it called normal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectedDay {
    pub date: NaiveDate,
    pub credits: f64,
    /// None before the model's window, or without a model.
    pub expected: Option<f64>,
    pub normal_low: Option<f64>,
    pub normal_high: Option<f64>,
}

/// The last `last_days` days of `series` with what `model` expected of each, scored as predict scores them
/// (causally); only the credits where there is no model or it cannot score. What the report's and the
/// console's charts draw.
pub fn expected_days(
    model: Option<&TrainedModel>,
    series: &DailySeries,
    last_days: usize,
) -> Vec<ExpectedDay> {
    let n = series.len();
    let take = last_days.min(n);
    let scores: std::collections::HashMap<NaiveDate, DayScore> = model
        .and_then(|m| m.score(series, take).ok())
        .map(|v| v.into_iter().map(|d| (d.day.date, d)).collect())
        .unwrap_or_default();
    (n - take..n)
        .map(|i| {
            let date = series.date(i);
            let s = scores.get(&date);
            ExpectedDay {
                date,
                credits: series.credits[i],
                expected: s.map(|s| s.day.expected_credits),
                normal_low: s.and_then(|s| s.normal_low),
                normal_high: s.and_then(|s| s.normal_high),
            }
        })
        .collect()
}

impl TrainedModel {
    /// Scores the last `last_days` days of `series`, as the daily predict job does.
    ///
    /// Baseline: decomposes the whole series (its trend ends extrapolated, as the original) and scores the
    /// residuals of the last days. Default: each day from the days before it only.
    pub fn score(
        &self,
        series: &DailySeries,
        last_days: usize,
    ) -> Result<Vec<DayScore>, DetectError> {
        let n = series.len();
        if last_days > n {
            return Err(DetectError::ScoreWindow {
                requested: last_days,
                available: n,
            });
        }
        check_series(series)?;
        match &self.detector {
            Detector::Baseline { forest } => {
                let dec = seasonal_decompose(&series.credits, 7)?;
                let from = n - last_days;
                let x = ArrayView2::from_shape((last_days, 1), &dec.resid[from..])
                    .map_err(|e| DetectError::InvalidParameter(format!("residual shape: {e}")))?;
                let scores = forest.decision_function(x)?;
                Ok((from..n)
                    .zip(scores.iter())
                    .map(|(i, &score)| {
                        let date = series.date(i);
                        let actual = series.credits[i];
                        let expected = dec.trend[i] + dec.seasonal[i];
                        let excess = actual - expected;
                        let is_anomaly = score <= self.threshold;
                        let cmp = if is_anomaly { "<=" } else { ">" };
                        DayScore {
                            day: AnomalyDay {
                                date,
                                actual_credits: actual,
                                expected_credits: expected,
                                excess_credits: excess,
                                score,
                                threshold: self.threshold,
                                explanation: format!(
                                    "{date}: {actual:.2} credits vs {expected:.2} expected (trend + seasonal, \
                                     {excess:+.2}); isolation score {score:.4} {cmp} threshold {:.4}",
                                    self.threshold
                                ),
                            },
                            is_anomaly,
                            evidence: Vec::new(),
                            normal_low: None,
                            normal_high: None,
                        }
                    })
                    .collect())
            }
            Detector::Default(m) => Ok(m.score_range(series, n - last_days)),
        }
    }

    /// Parameters for the model registry row (no serialized forest: that goes in the model blob).
    pub fn params_json(&self) -> serde_json::Value {
        let detector = match &self.detector {
            Detector::Baseline { forest } => serde_json::json!({
                "iforest": forest.params,
                "effective_max_samples": forest.max_samples,
                "offset": forest.offset,
                "decomposition": "seasonal_decompose(additive, period=7, extrapolate_trend=freq)",
                "rule": "anomaly when decision_function <= mean - 3*std of training scores",
            }),
            Detector::Default(m) => serde_json::json!({
                "rule": m.rule,
                "weekday_log_profile": m.weekday_log_profile,
                "weekday_active_share": m.weekday_active_share,
                "log_spread": m.log_spread,
                "quiet_log_spread": m.quiet_log_spread,
                "calendar_effects": m.calendar_effects,
                "calibration": m.calibration,
            }),
        };
        serde_json::json!({
            "kind": self.kind,
            "threshold": self.threshold,
            "training_start": self.training_start,
            "training_end": self.training_end,
            "seed": self.metrics.seed,
            "detector": detector,
        })
    }
}
