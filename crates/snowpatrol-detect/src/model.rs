//! Models: the original's rule kept as `baseline`, and the `default` cost-increase model.
//!
//! **Baseline** (the original, reproducible now): classical decomposition of the daily credits, an Isolation
//! Forest on the residuals, threshold `mean - 3 std` of the training `decision_function`; a day is anomalous when
//! its score is `<=` the threshold. It flags drops as well as rises and, because the residual of every noisy day
//! is "unusual" to a forest fitted on a single feature, about one day in ten.
//!
//! **Default** (a robust, causal, one-sided rule; see `docs/detection.md`): the expected credits of day `d` are a
//! level (median of the deseasonalised credits of the 14 days *before* `d`) times a weekday profile learned at
//! training; the score is the excess over that expectation in robust standard deviations. A day is anomalous when
//! its score reaches the threshold and the excess is material (at least `min_excess_credits` and
//! `min_excess_ratio` of the expectation). Hourly evidence (many more active hours than usual, or a jump in peak
//! hourly burn) lowers the threshold, because it shows a runaway or a resize directly. Because the level is a
//! rolling median of past days, a persistent resize is absorbed within about a week: one incident, not a month
//! of alerts. Nothing in it looks at a day after `d`, so it needs no trend extrapolation.

use crate::daily::DailySeries;
use crate::decompose::seasonal_decompose;
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

/// Knobs of the default rule. The defaults were tuned on synthetic seed 1 and are reported on other seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefaultRuleConfig {
    /// Days before `d` whose deseasonalised median is the level; also how fast a new level is learned.
    pub level_window_days: usize,
    /// Weeks of training data the weekday profile is estimated from.
    pub profile_weeks: usize,
    /// Robust z-score a day must reach without hourly evidence.
    pub z_threshold: f64,
    /// Robust z-score that suffices when the hours show a runaway or a resize.
    pub z_threshold_hourly: f64,
    /// Excess below this many credits is never worth an alert, however unusual.
    pub min_excess_credits: f64,
    /// Excess must also be at least this fraction of the expected credits ...
    pub min_excess_ratio: f64,
    /// ... and of the warehouse's average day (its level): a weekend blip on an office warehouse is not a cost
    /// problem even when it is many times that weekend's usual zero.
    pub min_excess_level_ratio: f64,
    /// Runaway evidence: at least this many more active hours than the same weekday usually has ...
    pub runaway_extra_hours: f64,
    /// ... and at least this many active hours in total.
    pub runaway_min_hours: f64,
    /// Resize evidence: peak hourly burn at least this multiple of the highest peak of the previous 28 days,
    /// when that highest peak looks like the warehouse's cap (reached, within 10 %, on 3 or more of those days).
    /// Snowflake bills at most size x clusters per hour, so busy warehouses sit at their cap, and only a resize
    /// or a scale-out lifts it.
    pub resize_peak_ratio: f64,
    /// The same without a visible cap (peaks vary freely): a much larger jump is needed.
    pub resize_peak_ratio_uncapped: f64,
    /// On days normally quiet (expected below half an average day, e.g. weekends of an office warehouse), the
    /// excess must be at least this many average days: their zero-inflated usage makes any use look extreme.
    pub quiet_day_excess_level_ratio: f64,
    /// Also flag falls in spend (off by default: drops do not cost money).
    pub flag_drops: bool,
    /// Sustained-rise rule: the last this-many days, all above the expectation taken before them, whose combined
    /// excess reaches `z_threshold` standard errors. Catches a level shift (a resize on a warehouse without a
    /// visible cap) that no single day shows; 0 disables it.
    pub sustained_days: usize,
}

impl Default for DefaultRuleConfig {
    fn default() -> Self {
        Self {
            level_window_days: 14,
            profile_weeks: 8,
            z_threshold: 3.5,
            z_threshold_hourly: 1.5,
            min_excess_credits: 2.0,
            min_excess_ratio: 0.3,
            min_excess_level_ratio: 0.5,
            runaway_extra_hours: 6.0,
            runaway_min_hours: 16.0,
            resize_peak_ratio: 1.2,
            resize_peak_ratio_uncapped: 1.5,
            quiet_day_excess_level_ratio: 1.0,
            flag_drops: false,
            sustained_days: 0,
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

/// What the default model learned at training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefaultModel {
    pub rule: DefaultRuleConfig,
    /// Multiplicative weekday profile (Monday first), mean 1.
    pub profile: [f64; 7],
    /// Robust relative spread of busy days: 1.4826 MAD of `(actual - expected) / expected`.
    pub scale_rel: f64,
    /// Robust absolute spread, the floor for quiet days (weekends of an office-hours warehouse).
    pub scale_abs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detector {
    Baseline { forest: IsolationForest },
    Default(DefaultModel),
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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DayScore {
    pub date: NaiveDate,
    pub actual_credits: f64,
    pub expected_credits: f64,
    pub excess_credits: f64,
    pub score: f64,
    pub threshold: f64,
    pub is_anomaly: bool,
    pub explanation: String,
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
        self.days.iter().map(|d| d.excess_credits.max(0.0)).sum()
    }
}

/// Consecutive anomalous days form one incident (one alert), so a persisting resize is not a month of alerts.
pub fn group_incidents(key: &WarehouseKey, days: &[DayScore]) -> Vec<Incident> {
    let mut flagged: Vec<&DayScore> = days.iter().filter(|d| d.is_anomaly).collect();
    flagged.sort_by_key(|d| d.date);
    let mut out: Vec<Incident> = Vec::new();
    for d in flagged {
        match out.last_mut() {
            Some(inc) if (d.date - inc.last_day).num_days() <= 1 => {
                if d.date > inc.last_day {
                    inc.last_day = d.date;
                }
                if inc.days.last().map(|x| x.date) != Some(d.date) {
                    inc.days.push(d.clone());
                }
            }
            _ => out.push(Incident {
                key: key.clone(),
                first_day: d.date,
                last_day: d.date,
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
    let (training_start, training_end) = (series.start, series.date(n - 1));
    match cfg.kind {
        ModelKind::Baseline => {
            let dec = seasonal_decompose(&series.credits, 7)?;
            let params = cfg.iforest.clone().with_seed(cfg.seed);
            let x = ArrayView2::from_shape((n, 1), &dec.resid)
                .map_err(|e| DetectError::InvalidParameter(format!("residual shape: {e}")))?;
            let forest = IsolationForest::fit(x, &params)?;
            let scores = forest.decision_function(x)?;
            let (mean, std) = mean_std(scores.as_slice().unwrap_or(&[]));
            let threshold = mean - 3.0 * std;
            let flagged = scores.iter().filter(|s| **s <= threshold).count();
            Ok(TrainedModel {
                kind: ModelKind::Baseline,
                threshold,
                training_start,
                training_end,
                metrics: TrainingMetrics {
                    training_days: n,
                    score_mean: mean,
                    score_std: std,
                    training_anomaly_rate: flagged as f64 / n as f64,
                    seed: cfg.seed,
                },
                detector: Detector::Baseline { forest },
            })
        }
        ModelKind::Default => {
            let model = fit_default(series, &cfg.rule);
            let from = n.saturating_sub(90).max(7).min(n);
            let scores: Vec<DayScore> = (from..n).map(|i| model.score_day(series, i)).collect();
            let z: Vec<f64> = scores.iter().map(|s| s.score).collect();
            let (mean, std) = mean_std(&z);
            let flagged = scores.iter().filter(|s| s.is_anomaly).count();
            Ok(TrainedModel {
                kind: ModelKind::Default,
                threshold: cfg.rule.z_threshold,
                training_start,
                training_end,
                metrics: TrainingMetrics {
                    training_days: n,
                    score_mean: mean,
                    score_std: std,
                    training_anomaly_rate: if scores.is_empty() {
                        0.0
                    } else {
                        flagged as f64 / scores.len() as f64
                    },
                    seed: cfg.seed,
                },
                detector: Detector::Default(model),
            })
        }
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

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn mad(v: &mut [f64]) -> Option<f64> {
    let med = median(v)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    median(&mut dev).map(|m| 1.4826 * m)
}

fn fit_default(series: &DailySeries, rule: &DefaultRuleConfig) -> DefaultModel {
    let n = series.len();
    let from = n.saturating_sub(rule.profile_weeks.max(2) * 7);
    let mut by_day: [Vec<f64>; 7] = Default::default();
    for i in from..n {
        by_day[series.weekday(i)].push(series.credits[i]);
    }
    let mut profile = [1.0; 7];
    for (p, v) in profile.iter_mut().zip(by_day.iter_mut()) {
        *p = median(v).unwrap_or(0.0).max(0.0);
    }
    let mean = profile.iter().sum::<f64>() / 7.0;
    if mean > 0.0 {
        for p in &mut profile {
            *p /= mean;
        }
    } else {
        profile = [1.0; 7];
    }
    let mut model = DefaultModel {
        rule: rule.clone(),
        profile,
        scale_rel: 0.0,
        scale_abs: 0.0,
    };
    let start = n.saturating_sub(90).max(7).min(n);
    let expected: Vec<(f64, f64)> = (start..n)
        .map(|i| (model.expected(series, i), series.credits[i]))
        .collect();
    let level_mean = series.credits[from..n].iter().sum::<f64>() / (n - from).max(1) as f64;
    let mean_e = expected.iter().map(|(e, _)| *e).sum::<f64>() / expected.len().max(1) as f64;
    let mut rel: Vec<f64> = expected
        .iter()
        .filter(|(e, _)| *e > 0.0 && *e >= 0.5 * mean_e)
        .map(|(e, c)| (c - e) / e)
        .collect();
    let mut abs_quiet: Vec<f64> = expected
        .iter()
        .filter(|(e, _)| *e < 0.5 * mean_e)
        .map(|(e, c)| c - e)
        .collect();
    // Spend is right-skewed (log-normal-ish): the MAD describes the bulk, the upper tail is heavier. Take the
    // larger of the MAD and the 95th percentile read as a normal quantile, so a warehouse whose good days are
    // often +100 % needs more than that to alert.
    let upper = {
        let mut a = rel.clone();
        a.sort_by(f64::total_cmp);
        if a.is_empty() {
            0.0
        } else {
            a[((a.len() - 1) as f64 * 0.95).round() as usize] / 1.645
        }
    };
    model.scale_rel = mad(&mut rel).unwrap_or(0.1).max(upper).max(0.03);
    let floor = 0.02 * level_mean + 0.01;
    // Quiet days are zero-inflated (an office warehouse's weekends), where the MAD is 0: take half the 90th
    // percentile of their absolute residuals too, so the odd weekend query does not look like 20 sigma.
    let q90 = {
        let mut a: Vec<f64> = abs_quiet.iter().map(|v| v.abs()).collect();
        a.sort_by(f64::total_cmp);
        if a.is_empty() {
            0.0
        } else {
            a[((a.len() - 1) as f64 * 0.9).round() as usize]
        }
    };
    model.scale_abs = mad(&mut abs_quiet)
        .unwrap_or(floor)
        .max(0.5 * q90)
        .max(floor);
    model
}

impl DefaultModel {
    fn level(&self, s: &DailySeries, i: usize) -> f64 {
        let from = i.saturating_sub(self.rule.level_window_days.max(1));
        let mut v: Vec<f64> = (from..i)
            .filter_map(|t| {
                let w = self.profile[s.weekday(t)];
                (w >= 0.2).then(|| s.credits[t] / w)
            })
            .collect();
        median(&mut v).unwrap_or(0.0)
    }

    /// Expected credits of day `i` from days before `i` only.
    pub fn expected(&self, s: &DailySeries, i: usize) -> f64 {
        self.level(s, i) * self.profile[s.weekday(i)]
    }

    /// Combined score of the last `sustained_days` days ending at `i`, each measured against the expectation
    /// as it stood before the first of them; `None` unless every one of them is clearly (half a spread) above.
    fn sustained_rise(&self, s: &DailySeries, i: usize) -> Option<(f64, usize)> {
        let k = self.rule.sustained_days;
        if k < 2 || i + 1 < k + 7 {
            return None;
        }
        let first = i + 1 - k;
        let level = self.level(s, first);
        let (mut excess, mut var) = (0.0, 0.0);
        for t in first..=i {
            let e = level * self.profile[s.weekday(t)];
            let spread = self.scale_rel * e + self.scale_abs;
            let x = s.credits[t] - e;
            if x < 1.0 * spread {
                return None;
            }
            excess += x;
            var += spread * spread;
        }
        Some((excess / var.sqrt(), k))
    }

    /// Scores day `i` of `s` using days `..=i` only.
    pub fn score_day(&self, s: &DailySeries, i: usize) -> DayScore {
        let r = &self.rule;
        let date = s.date(i);
        let actual = s.credits[i];
        if i < 7 {
            return DayScore {
                date,
                actual_credits: actual,
                expected_credits: actual,
                excess_credits: 0.0,
                score: 0.0,
                threshold: r.z_threshold,
                is_anomaly: false,
                explanation: format!(
                    "{date}: {actual:.2} credits; fewer than 7 days of history, not scored"
                ),
            };
        }
        let expected = self.expected(s, i);
        let excess = actual - expected;
        let spread = self.scale_rel * expected + self.scale_abs;
        let z = excess / spread;
        let mut same_weekday: Vec<f64> = (1..=4)
            .filter_map(|w| i.checked_sub(7 * w))
            .map(|t| s.hours_active[t])
            .collect();
        let usual_hours = median(&mut same_weekday).unwrap_or(0.0);
        let hours = s.hours_active[i];
        let runaway = hours >= (usual_hours + r.runaway_extra_hours).max(r.runaway_min_hours);
        let from = i.saturating_sub(28);
        let recent_peaks = &s.peak_hourly_credits[from..i];
        let usual_peak = recent_peaks.iter().copied().fold(0.0, f64::max);
        // A full hour bills exactly size x clusters, so a warehouse at its cap repeats the same peak to the
        // third decimal; 2 % slack allows for cloud-services rounding in exports.
        let capped = recent_peaks
            .iter()
            .filter(|p| **p >= 0.98 * usual_peak)
            .count()
            >= 3;
        let peak = s.peak_hourly_credits[i];
        let ratio = if capped {
            r.resize_peak_ratio
        } else {
            r.resize_peak_ratio_uncapped
        };
        let resize = usual_peak > 0.0 && peak >= ratio * usual_peak;
        let threshold = if runaway || resize {
            r.z_threshold_hourly
        } else {
            r.z_threshold
        };
        let sustained = self.sustained_rise(s, i);
        // The level gates guard against noise on bursty warehouses; hourly evidence already shows the cause, so
        // with it only the absolute and relative gates apply (a resize adds ~50 %, less than half a level on a
        // busy weekday).
        let level = self.level(s, i);
        let mut material = r.min_excess_credits.max(r.min_excess_ratio * expected);
        if !(runaway || resize) {
            material = material.max(r.min_excess_level_ratio * level);
            if expected < 0.5 * level {
                material = material.max(r.quiet_day_excess_level_ratio * level);
            }
        }
        let rise = (z >= threshold && excess >= material)
            || sustained.is_some_and(|(z3, _)| {
                z3 >= r.z_threshold
                    && excess >= r.min_excess_credits.max(r.min_excess_ratio * expected)
            });
        let fall = r.flag_drops && z <= -threshold && -excess >= material;
        let is_anomaly = rise || fall;
        let pct = if expected > 0.0 {
            format!("{:+.0}%", 100.0 * excess / expected)
        } else {
            "new usage".into()
        };
        let mut why = Vec::new();
        if runaway {
            why.push(format!(
                "{hours:.0} h active vs usual {usual_hours:.0} h (left running?)"
            ));
        }
        if let Some((z3, k)) = sustained
            && z3 >= r.z_threshold
        {
            why.push(format!(
                "spend above expectation for {k} days running (combined score {z3:.1})"
            ));
        }
        if resize {
            why.push(format!("peak {peak:.2} credits/h vs at most {usual_peak:.2} in 4 weeks (resize or scale-out?)"));
        }
        let cmp = if is_anomaly {
            if rise { ">=" } else { "<= -" }
        } else {
            "vs"
        };
        let explanation = format!(
            "{date}: {actual:.2} credits vs {expected:.2} expected ({excess:+.2}, {pct}); score {z:.1} {cmp} threshold {threshold:.1}{}{}",
            if why.is_empty() { "" } else { "; " },
            why.join("; ")
        );
        DayScore {
            date,
            actual_credits: actual,
            expected_credits: expected,
            excess_credits: excess,
            score: z,
            threshold,
            is_anomaly,
            explanation,
        }
    }
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
                            date,
                            actual_credits: actual,
                            expected_credits: expected,
                            excess_credits: excess,
                            score,
                            threshold: self.threshold,
                            is_anomaly,
                            explanation: format!(
                                "{date}: {actual:.2} credits vs {expected:.2} expected (trend + seasonal, {excess:+.2}); \
                                 isolation score {score:.4} {cmp} threshold {:.4}",
                                self.threshold
                            ),
                        }
                    })
                    .collect())
            }
            Detector::Default(m) => {
                Ok((n - last_days..n).map(|i| m.score_day(series, i)).collect())
            }
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
                "profile": m.profile,
                "scale_rel": m.scale_rel,
                "scale_abs": m.scale_abs,
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
