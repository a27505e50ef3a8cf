//! The `default` model: a causal, per-warehouse calibrated rule for cost increases.
//!
//! Stated as a rule (`docs/detection.md` has the measured behaviour). For day `d` of a warehouse, using only
//! days `<= d`:
//!
//! * **Intermittent usage is a hurdle, not an anomaly.** A day is *active* when it bills more than
//!   `active_min_credits`. The model learns how often the warehouse runs per weekday (for the explanation) and
//!   judges an active day only against what the warehouse spends *when it runs*: the reference set is the last
//!   `reference_days` active, non-holiday days within `max_lookback_days` (month boundaries enter with their
//!   learned effect removed). A
//!   dev warehouse idle most days is therefore compared with its own active days, never with a zero median.
//! * **Log scale.** Spend is multiplicative (longer jobs, more of them, a bigger size), so the level `mu(d)` is
//!   the median of `ln(credits) - weekday_profile` over the reference set, the expectation is
//!   `E = exp(mu + weekday_profile[d] + calendar_effect[class(d)])` and the score is
//!   `z = (ln(credits) - ln E) / sigma` with `sigma` the robust (1.4826 MAD) spread of causal log residuals on
//!   training days.
//! * **Calendar effects are learned.** The first and last business day of the month (per the configured holiday
//!   calendar) get their own effect: the median causal residual of their past occurrences, applied when at
//!   least two occurrences were seen and it is clearly positive. A month-end close that runs every month is
//!   thus expected. Holidays never enter a reference set.
//! * **A threshold per warehouse, calibrated to a false-alarm budget.** At training the model scores every
//!   training day from the days before it (out of sample), fits an exponential tail to the top decile of those
//!   scores and sets the threshold where the expected number of exceedances is
//!   `expected_false_alarms_per_year`; clamped to `[min_threshold, max_threshold]`. A steady ETL warehouse
//!   ends up near 3, a heavy-tailed data-science warehouse higher.
//! * **Hourly evidence** lowers the threshold to `hourly_threshold`: *left running* (hours active at least
//!   `max(usual + runaway_extra_hours, runaway_min_hours)`), or *peak above cap* (the peak hourly burn at least
//!   `resize_peak_ratio` x the highest peak of the reference days when that peak is a cap, i.e. reached on 3 or
//!   more of them; a full hour bills exactly size x clusters, so only a resize or a scale-out lifts it; without
//!   a visible cap `resize_peak_ratio_uncapped`).
//! * **Materiality**, like AWS's alert thresholds: the excess must reach `min_excess_credits`, `min_excess_ratio`
//!   of the expectation, `min_excess_cost` in money when `credit_price` is set, and, without hourly evidence,
//!   `min_excess_level_ratio` of the warehouse's typical active day (so a weekend blip of an office warehouse is
//!   not a cost problem even when it is many times that weekend's usual).
//!
//! Deterministic (no randomness at all) and causal: nothing looks at a day after `d`.

use crate::calendar::{Calendar, CalendarConfig, DayClass};
use crate::daily::DailySeries;
use crate::model::{AnomalyDay, DayScore, Evidence};
use chrono::Datelike;
use serde::{Deserialize, Serialize};

/// Knobs of the default rule. Tuned on the billing-shaped synthetic family, seed 1 only (see
/// `docs/detection.md`); everything else is held out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultRuleConfig {
    /// A day billing at most this many credits counts as idle.
    pub active_min_credits: f64,
    /// Active ordinary days the level is the median of.
    pub reference_days: usize,
    /// How far back to look for them (an intermittent warehouse's active days are sparse).
    pub max_lookback_days: usize,
    /// Fewer reference days than this: fall back to the level learned at training.
    pub min_reference_days: usize,
    /// Weeks of training data the weekday profile is estimated from.
    pub profile_weeks: usize,
    /// The false-alarm budget each warehouse's threshold is calibrated to.
    pub expected_false_alarms_per_year: f64,
    /// Prior for the log spread (0.7: a day twice the usual is one spread away) and how many days of evidence
    /// it is worth; it dominates only while a warehouse has few active days.
    pub prior_log_spread: f64,
    pub prior_days: f64,
    /// Bounds of the calibrated threshold (robust z on the log scale).
    pub min_threshold: f64,
    pub max_threshold: f64,
    /// Threshold when the hours show a runaway or a resize (the cause is visible, so less spread is needed).
    pub hourly_threshold: f64,
    /// With hourly evidence, spend at least this multiple of the expectation also suffices (for warehouses
    /// whose spend varies so much that a doubled day is not many spreads away, such as data science).
    pub hourly_spend_ratio: f64,
    /// A new, higher level is accepted after this many consecutive active days above the old one (0 = never).
    pub shift_days: usize,
    /// ... each at least this many spreads above it.
    pub shift_sigma: f64,
    /// Active days the *record* (the highest usual-adjusted day) is taken over, for the record test.
    pub record_days: usize,
    /// Bounds of the calibrated record ratio: a day must beat the highest of its last `record_days` active
    /// days by at least this factor to be flagged by the record test (0 disables the test).
    pub min_record_ratio: f64,
    pub max_record_ratio: f64,
    /// The usual level never sits below the median of the last `level_floor_days` active days (0 = off): after
    /// a dip (a holiday lull, an outage, a quiet fortnight) the return to normal is not a rise.
    pub level_floor_days: usize,

    /// Excess below this many credits is never worth an alert, however unusual.
    pub min_excess_credits: f64,
    /// Excess must also be at least this fraction of the expectation ...
    pub min_excess_ratio: f64,
    /// ... and, without hourly evidence, of the warehouse's typical active day.
    pub min_excess_level_ratio: f64,
    /// Excess in money below this is not worth an alert (applies when `credit_price` is set).
    pub min_excess_cost: f64,
    /// Price of one credit (from `[pipeline] price_per_credit`); enables the money gate and cost in reports.
    pub credit_price: Option<f64>,
    /// Left running: at least this many more active hours than usual ...
    pub runaway_extra_hours: f64,
    /// ... and at least this many in total.
    pub runaway_min_hours: f64,
    /// ... and its active hours must bill at least this share of the peak hour on average: a warehouse left
    /// running bills about its size every hour, while one that wakes for short queries all day long (CI, a
    /// dev warehouse) is active many hours at a fraction of its size.
    pub runaway_min_fill: f64,
    /// Hourly evidence seen on more training days a year than this is ordinary for the warehouse (a CI
    /// warehouse busy 18 hours some days, a BI warehouse scaling out every Monday): it no longer lowers the
    /// threshold there; the calibrated z test still applies.
    pub max_evidence_per_year: f64,
    /// Peak above cap: this multiple of the reference days' highest peak, when that peak is a cap.
    pub resize_peak_ratio: f64,
    /// The same without a visible cap (peaks vary freely): a larger jump is needed.
    pub resize_peak_ratio_uncapped: f64,
    /// Holidays (built-in rules and listed dates) for the calendar effects.
    pub calendar: CalendarConfig,
    /// Also flag falls in spend (off by default: drops do not cost money).
    pub flag_drops: bool,
}

impl Default for DefaultRuleConfig {
    fn default() -> Self {
        Self {
            active_min_credits: 0.01,
            reference_days: 14,
            max_lookback_days: 91,
            min_reference_days: 3,
            profile_weeks: 12,
            expected_false_alarms_per_year: 1.0,
            prior_log_spread: 0.7,
            prior_days: 5.0,
            min_threshold: 3.0,
            max_threshold: 8.0,
            hourly_threshold: 1.5,
            hourly_spend_ratio: 2.0,
            shift_days: 3,
            shift_sigma: 1.5,
            record_days: 28,
            min_record_ratio: 2.0,
            max_record_ratio: 4.0,
            level_floor_days: 56,
            min_excess_credits: 2.0,
            min_excess_ratio: 0.25,
            min_excess_level_ratio: 0.5,
            min_excess_cost: 0.0,
            credit_price: None,
            runaway_extra_hours: 6.0,
            runaway_min_hours: 16.0,
            runaway_min_fill: 0.6,
            max_evidence_per_year: 4.0,
            resize_peak_ratio: 1.2,
            resize_peak_ratio_uncapped: 1.5,
            calendar: CalendarConfig::default(),
            flag_drops: false,
        }
    }
}

impl DefaultRuleConfig {
    /// Every problem with the knobs at once, as `key: message`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.number_problems(&mut out);
        self.window_problems(&mut out);
        self.bound_problems(&mut out);
        self.day_count_problems(&mut out);
        out
    }

    /// Knobs that must be finite numbers above 0, and those that may also be 0.
    fn number_problems(&self, out: &mut Vec<String>) {
        let mut positive = |k: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                out.push(format!("{k}: must be a number > 0 (got {v})"));
            }
        };
        positive(
            "expected_false_alarms_per_year",
            self.expected_false_alarms_per_year,
        );
        positive("min_threshold", self.min_threshold);
        positive("max_threshold", self.max_threshold);
        positive("hourly_threshold", self.hourly_threshold);
        positive("resize_peak_ratio", self.resize_peak_ratio);
        positive(
            "resize_peak_ratio_uncapped",
            self.resize_peak_ratio_uncapped,
        );
        for (k, v) in [
            ("active_min_credits", self.active_min_credits),
            ("prior_log_spread", self.prior_log_spread),
            ("prior_days", self.prior_days),
            ("min_excess_credits", self.min_excess_credits),
            ("min_excess_ratio", self.min_excess_ratio),
            ("min_excess_level_ratio", self.min_excess_level_ratio),
            ("min_excess_cost", self.min_excess_cost),
            ("runaway_extra_hours", self.runaway_extra_hours),
            ("runaway_min_hours", self.runaway_min_hours),
            ("runaway_min_fill", self.runaway_min_fill),
            ("max_evidence_per_year", self.max_evidence_per_year),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                out.push(format!("{k}: must be a number >= 0 (got {v})"));
            }
        }
    }

    /// Day counts of the reference window that exceed their buffers or each other.
    fn window_problems(&self, out: &mut Vec<String>) {
        if self.level_floor_days > MAX_REFERENCE_DAYS {
            out.push(format!(
                "level_floor_days: must be at most {MAX_REFERENCE_DAYS} (got {})",
                self.level_floor_days
            ));
        }
        if self.reference_days > MAX_REFERENCE_DAYS {
            out.push(format!(
                "reference_days: must be at most {MAX_REFERENCE_DAYS} (got {})",
                self.reference_days
            ));
        }
        if self.shift_days > self.reference_days {
            out.push(format!(
                "shift_days: must be at most reference_days ({} > {})",
                self.shift_days, self.reference_days
            ));
        }
    }

    /// Bounds that must be ordered (record ratios, thresholds) and the credit price.
    fn bound_problems(&self, out: &mut Vec<String>) {
        if !(self.min_record_ratio == 0.0
            || (self.min_record_ratio.is_finite() && self.min_record_ratio > 1.0))
        {
            out.push(format!(
                "min_record_ratio: must be 0 (off) or a number > 1 (got {})",
                self.min_record_ratio
            ));
        }
        if self.min_record_ratio > 0.0
            && !(self.max_record_ratio.is_finite()
                && self.max_record_ratio >= self.min_record_ratio)
        {
            out.push(format!(
                "max_record_ratio: must be >= min_record_ratio ({} < {})",
                self.max_record_ratio, self.min_record_ratio
            ));
        }
        if self.max_threshold < self.min_threshold {
            out.push(format!(
                "max_threshold: must be >= min_threshold ({} < {})",
                self.max_threshold, self.min_threshold
            ));
        }
        if let Some(p) = self.credit_price
            && !(p.is_finite() && p > 0.0)
        {
            out.push(format!("credit_price: must be a number > 0 (got {p})"));
        }
    }

    /// Day counts that must be at least 1.
    fn day_count_problems(&self, out: &mut Vec<String>) {
        for (k, v) in [
            ("reference_days", self.reference_days),
            ("max_lookback_days", self.max_lookback_days),
            ("min_reference_days", self.min_reference_days),
            ("profile_weeks", self.profile_weeks),
            ("record_days", self.record_days),
        ] {
            if v == 0 {
                out.push(format!("{k}: must be >= 1"));
            }
        }
    }
}

/// Learned effect of the month boundaries, on the log scale (0 = none learned).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalendarEffects {
    pub first_business_day: f64,
    pub last_business_day: f64,
    /// Past occurrences the effects were learned from.
    pub first_business_day_seen: usize,
    pub last_business_day_seen: usize,
}

impl CalendarEffects {
    fn of(&self, class: DayClass) -> f64 {
        match class {
            DayClass::FirstBusinessDay => self.first_business_day,
            DayClass::LastBusinessDay => self.last_business_day,
            _ => 0.0,
        }
    }
}

/// How the threshold was calibrated, for the registry and for people asking "why 4.2?".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Training days scored out of sample (active, not holidays).
    pub scored_days: usize,
    /// Share of calendar days the warehouse was active.
    pub active_share: f64,
    /// Tail fit: 90th percentile of the scores and the exponential tail's scale above it.
    pub tail_start: f64,
    pub tail_scale: f64,
    /// The threshold before clamping to `[min_threshold, max_threshold]`.
    pub raw_threshold: f64,
}

/// What the default model learned at training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefaultModel {
    pub rule: DefaultRuleConfig,
    /// Weekday effect on the log of active-day spend (Monday first), relative to the median active day.
    pub weekday_log_profile: [f64; 7],
    /// Share of each weekday on which the warehouse ran (Monday first).
    pub weekday_active_share: [f64; 7],
    /// Robust spread of the causal log residuals on busy weekdays ...
    pub log_spread: f64,
    /// ... and on quiet ones (below half the median active day, e.g. an office warehouse's weekend), whose
    /// small, irregular spend varies far more.
    pub quiet_log_spread: f64,
    /// Level (log credits, weekday-neutral) learned at training: the fallback reference.
    pub training_log_level: Option<f64>,
    pub calendar_effects: CalendarEffects,
    /// The calibrated threshold.
    pub threshold: f64,
    pub calibration: Calibration,
    /// The record test's calibrated threshold: log of the factor by which a day must beat the highest of its
    /// last `record_days` active days.
    pub record_log_threshold: f64,
    pub record_calibration: Calibration,
    /// How often each kind of hourly evidence showed on the training days, per year (see
    /// `max_evidence_per_year`).
    pub left_running_per_year: f64,
    pub peak_above_cap_per_year: f64,
    /// Version of the stored form; a model stored by an older rule (another value, or none) is retrained.
    #[serde(default)]
    pub format: u32,
}

/// The stored form of [`DefaultModel`] this version writes and reads (see `format`).
pub const DEFAULT_MODEL_FORMAT: u32 = 4;

/// Series-wide inputs computed once per call.
struct Prepared {
    classes: Vec<DayClass>,
    /// Weekday of each day (0 = Monday); computed once, as date arithmetic per lookup dominated the profile.
    weekday: Vec<usize>,
    log_credits: Vec<f64>,
    active: Vec<bool>,
}

fn prepare(s: &DailySeries, rule: &DefaultRuleConfig) -> Prepared {
    let n = s.len();
    let end = s.end().unwrap_or(s.start);
    let cal = Calendar::new(&rule.calendar, s.start, end);
    let active: Vec<bool> = s
        .credits
        .iter()
        .map(|c| *c > rule.active_min_credits)
        .collect();
    let first = s.start.weekday().num_days_from_monday() as usize;
    Prepared {
        classes: cal.classes(s.start, n),
        weekday: (0..n).map(|i| (first + i) % 7).collect(),
        log_credits: s
            .credits
            .iter()
            .zip(&active)
            .map(|(c, a)| if *a { c.ln() } else { f64::NEG_INFINITY })
            .collect(),
        active,
    }
}

/// Median by selection (O(n), reorders `v`); the hot path scores hundreds of days per warehouse.
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let m = v.len() / 2;
    let odd = v.len() % 2 == 1;
    let (lower, upper, _) = v.select_nth_unstable_by(m, f64::total_cmp);
    let upper = *upper;
    Some(if odd {
        upper
    } else {
        let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + upper) / 2.0
    })
}

fn mad(v: &[f64]) -> Option<f64> {
    let mut a = v.to_vec();
    let med = median(&mut a)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    median(&mut dev).map(|m| 1.4826 * m)
}

fn quantile_sorted(a: &[f64], q: f64) -> f64 {
    if a.is_empty() {
        return f64::NAN;
    }
    let pos = (a.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    a[lo] + (a[hi] - a[lo]) * (pos - lo as f64)
}

/// The reference days of day `i`: what "usual" means for it.
struct Reference {
    /// Weekday-neutral log level; `None` when the warehouse never ran before.
    log_level: Option<f64>,
    /// Highest weekday-neutral log level of the last `record_days` active days.
    record_level: Option<f64>,
    /// Where the scan for the level floor stands (see [`DefaultModel::floor_level`]).
    floor_scan: FloorScan,
    usual_hours: f64,
    usual_peak: f64,
    capped: bool,
    days: usize,
}

/// The weekday-neutral levels scanned so far, newest first, and where to continue for more.
struct FloorScan {
    levels: [f64; MAX_REFERENCE_DAYS],
    count: usize,
    resume_at: usize,
    stop: usize,
}

/// What the walk back over the days before day `i` collected (see [`DefaultModel::scan_reference`]).
struct ReferenceScan {
    /// Weekday-neutral log levels, hours active, peak hourly burns and busy-weekday flags of the reference
    /// days, newest first; the first `count` are filled.
    levels: [f64; MAX_REFERENCE_DAYS],
    hours: [f64; MAX_REFERENCE_DAYS],
    peaks: [f64; MAX_REFERENCE_DAYS],
    busy: [bool; MAX_REFERENCE_DAYS],
    count: usize,
    record_level: Option<f64>,
    floor_scan: FloorScan,
}

/// The model's view of one day before the threshold is applied.
struct Assessment {
    expected: f64,
    log_residual: f64,
    /// Log of the day's weekday-neutral spend over the record of its reference window (-inf: none).
    record_residual: f64,
    reference: Reference,
    left_running: bool,
    peak_above_cap: bool,
}

/// Upper bound of `reference_days` (the reference set lives in fixed buffers on the stack).
pub const MAX_REFERENCE_DAYS: usize = 64;

/// Weekdays whose usual active spend is below half the median active day are quiet.
const QUIET_LOG_PROFILE: f64 = -std::f64::consts::LN_2;

impl DefaultModel {
    fn is_quiet(&self, weekday: usize) -> bool {
        model_is_quiet(&self.weekday_log_profile, weekday)
    }

    fn spread(&self, weekday: usize) -> f64 {
        if self.is_quiet(weekday) {
            self.quiet_log_spread
        } else {
            self.log_spread
        }
    }

    /// Log spend of active day `t` with its weekday and calendar effects taken out.
    fn neutral_level(&self, p: &Prepared, t: usize) -> f64 {
        p.log_credits[t]
            - self.weekday_log_profile[p.weekday[t]]
            - self.calendar_effects.of(p.classes[t])
    }

    fn reference(&self, s: &DailySeries, p: &Prepared, i: usize) -> Reference {
        let mut scan = self.scan_reference(s, p, i);
        let m = scan.count;
        let (levels, hours, peaks, busy) = (
            &mut scan.levels[..m],
            &mut scan.hours[..m],
            &scan.peaks[..m],
            &scan.busy[..m],
        );
        let days = levels.len();
        let log_level = self.usual_log_level(levels, busy);

        let usual_peak = peaks.iter().copied().fold(0.0, f64::max);
        // A full hour bills exactly size x clusters, so a warehouse at its cap repeats the same peak to the
        // third decimal; 2 % slack allows for cloud-services rounding in exports.
        let capped =
            usual_peak > 0.0 && peaks.iter().filter(|x| **x >= 0.98 * usual_peak).count() >= 3;
        Reference {
            log_level,
            record_level: scan.record_level,
            floor_scan: scan.floor_scan,
            usual_hours: median(hours).unwrap_or(0.0),
            usual_peak,
            capped,
            days,
        }
    }

    /// Walks back from day `i` over the active days that are not holidays, within `max_lookback_days`:
    /// the reference days, the record over the last `record_days` and the first levels of the floor.
    fn scan_reference(&self, s: &DailySeries, p: &Prepared, i: usize) -> ReferenceScan {
        let r = &self.rule;
        let k = r.reference_days.max(1);
        let stop = i.saturating_sub(r.max_lookback_days.max(1));
        // Fixed-size buffers on the stack: this runs for every scored and calibrated day.
        let mut lv = [0.0; MAX_REFERENCE_DAYS];
        let mut hv = [0.0; MAX_REFERENCE_DAYS];
        let mut pv = [0.0; MAX_REFERENCE_DAYS];
        let mut bv = [false; MAX_REFERENCE_DAYS];
        let k = k.min(MAX_REFERENCE_DAYS);
        let record_days = r.record_days;
        let floor_days = r.level_floor_days.min(MAX_REFERENCE_DAYS);
        let mut fv = [0.0; MAX_REFERENCE_DAYS];
        let mut nf = 0;
        let mut m = 0;
        let mut seen = 0;
        let mut record_level: Option<f64> = None;
        let mut t = i;
        // The floor's longer scan is only made for days that rise above the usual level (`floor_level`).
        let first_scan = k.max(record_days).min(floor_days);
        while t > stop && (m < k || seen < record_days || nf < first_scan) {
            t -= 1;
            if p.active[t] && p.classes[t] != DayClass::Holiday {
                let level = self.neutral_level(p, t);
                if seen < record_days {
                    record_level = Some(record_level.map_or(level, |x: f64| x.max(level)));
                    seen += 1;
                }
                if nf < floor_days {
                    fv[nf] = level;
                    nf += 1;
                }
                if m < k {
                    lv[m] = level;
                    hv[m] = s.hours_active[t];
                    pv[m] = s.peak_hourly_credits[t];
                    bv[m] = !self.is_quiet(p.weekday[t]);
                    m += 1;
                }
            }
        }
        ReferenceScan {
            levels: lv,
            hours: hv,
            peaks: pv,
            busy: bv,
            count: m,
            record_level,
            floor_scan: FloorScan {
                levels: fv,
                count: nf,
                resume_at: t,
                stop,
            },
        }
    }

    /// The usual weekday-neutral log level from the reference days' `levels` (newest first; reordered) and
    /// whether each was a busy weekday.
    fn usual_log_level(&self, levels: &mut [f64], busy: &[bool]) -> Option<f64> {
        let r = &self.rule;
        let days = levels.len();
        // A new level is accepted once the last `shift_days` active days all sat clearly above the old one
        // (a resize left in place, new workloads): flagged on its first days, then learned, instead of
        // alerting until the median of two weeks has moved. Only upwards: after an outage the old level must
        // stay, or the return to normal would look like a rise.
        // Judged on busy days only: an office warehouse's weekend is too noisy to confirm or refute anything.
        let k_shift = r.shift_days;
        let mut rv = [0.0; MAX_REFERENCE_DAYS];
        let mut nr = 0;
        for (l, _) in levels.iter().zip(busy).filter(|(_, b)| **b).take(k_shift) {
            rv[nr] = *l;
            nr += 1;
        }
        let recent = &mut rv[..nr];
        let enough = days >= r.min_reference_days.max(1);
        // `median` reorders `levels`; `recent` was copied out first.
        let long = if enough { median(levels) } else { None };
        let shifted = match long {
            Some(long)
                if k_shift >= 1
                    && recent.len() == k_shift
                    && self.log_spread.is_finite()
                    && recent
                        .iter()
                        .all(|l| *l > long + r.shift_sigma * self.log_spread) =>
            {
                median(recent)
            }
            _ => None,
        };
        if let Some(l) = shifted {
            Some(l)
        } else if enough {
            long
        } else {
            self.training_log_level.or_else(|| median(levels))
        }
    }

    /// Median level of the last `level_floor_days` active days (continuing the reference scan), when there
    /// are more of them than reference days (else the floor would say nothing the reference set does not).
    fn floor_level(&self, p: &Prepared, scan: &mut FloorScan) -> Option<f64> {
        let want = self.rule.level_floor_days.min(MAX_REFERENCE_DAYS);
        let mut t = scan.resume_at;
        while t > scan.stop && scan.count < want {
            t -= 1;
            if p.active[t] && p.classes[t] != DayClass::Holiday {
                scan.levels[scan.count] = self.neutral_level(p, t);
                scan.count += 1;
            }
        }
        scan.resume_at = t;
        if scan.count <= self.rule.reference_days.max(1) {
            return None;
        }
        let mut v = scan.levels;
        median(&mut v[..scan.count])
    }

    fn assess(&self, s: &DailySeries, p: &Prepared, i: usize) -> Assessment {
        let mut reference = self.reference(s, p, i);
        let w = p.weekday[i];
        self.raise_level_to_floor(p, i, &mut reference);
        let log_expected = reference
            .log_level
            .map(|l| l + self.weekday_log_profile[w] + self.calendar_effects.of(p.classes[i]));
        let expected = log_expected.map_or(0.0, f64::exp);
        let log_residual = match log_expected {
            Some(e) if p.active[i] => p.log_credits[i] - e,
            Some(_) => f64::NEG_INFINITY,
            None if p.active[i] => f64::INFINITY,
            None => 0.0,
        };
        let record_residual = match reference.record_level {
            Some(rec) if p.active[i] => self.neutral_level(p, i) - rec,
            _ => f64::NEG_INFINITY,
        };
        let left_running = self.left_running(s, p, i, &reference);
        let peak_above_cap = self.peak_above_cap(s, i, &reference);
        Assessment {
            expected,
            log_residual,
            record_residual,
            reference,
            left_running,
            peak_above_cap,
        }
    }

    /// A rise is measured from the higher of the usual level and the longer run's (the floor), so the
    /// return to normal after a dip is not a rise. Only days more than a spread above the usual level need
    /// it (no other day can be flagged), so the longer scan is skipped for most days; while the spread is
    /// not estimated yet (the first training pass) it is skipped for all.
    fn raise_level_to_floor(&self, p: &Prepared, i: usize, reference: &mut Reference) {
        let w = p.weekday[i];
        if self.rule.level_floor_days > 0
            && p.active[i]
            && let Some(l) = reference.log_level
        {
            let day_level = self.neutral_level(p, i);
            if day_level > l + self.spread(w)
                && let Some(f) = self.floor_level(p, &mut reference.floor_scan)
                && f > l
            {
                // Never above the day itself: a partial recovery is not a drop below the longer run.
                reference.log_level = Some(f.min(day_level));
            }
        }
    }

    /// Hourly evidence of a warehouse left running: far more active hours than usual, each billing near the
    /// peak hour (unless such days are the warehouse's habit).
    fn left_running(&self, s: &DailySeries, p: &Prepared, i: usize, reference: &Reference) -> bool {
        let r = &self.rule;
        let hours = s.hours_active[i];
        // A learned calendar effect (the close run) lengthens the usual day too.
        let usual_hours =
            (reference.usual_hours * self.calendar_effects.of(p.classes[i]).exp()).min(24.0);
        let peak = s.peak_hourly_credits[i];
        let fill = if hours > 0.0 && peak > 0.0 {
            s.credits[i] / (hours * peak)
        } else {
            0.0
        };
        p.active[i]
            && hours >= (usual_hours + r.runaway_extra_hours).max(r.runaway_min_hours)
            && fill >= r.runaway_min_fill
            && self.left_running_per_year <= r.max_evidence_per_year
    }

    /// Hourly evidence of a resize or a scale-out: the peak hourly burn well above the reference days' peak
    /// (unless such days are the warehouse's habit).
    fn peak_above_cap(&self, s: &DailySeries, i: usize, reference: &Reference) -> bool {
        let r = &self.rule;
        let ratio = if reference.capped {
            r.resize_peak_ratio
        } else {
            r.resize_peak_ratio_uncapped
        };
        reference.days >= r.min_reference_days.max(1)
            && reference.usual_peak > 0.0
            && s.peak_hourly_credits[i] >= ratio * reference.usual_peak
            && self.peak_above_cap_per_year <= r.max_evidence_per_year
    }

    /// The smallest excess (credits) worth an alert for a day expected to bill `expected`.
    fn material_excess(&self, expected: f64, log_level: Option<f64>, hourly: bool) -> f64 {
        let r = &self.rule;
        let mut m = r.min_excess_credits.max(r.min_excess_ratio * expected);
        if let Some(price) = r.credit_price
            && price > 0.0
        {
            m = m.max(r.min_excess_cost / price);
        }
        if !hourly && let Some(l) = log_level {
            m = m.max(r.min_excess_level_ratio * l.exp());
        }
        m
    }

    /// Scores the days `from..s.len()`, each from the days up to it.
    pub fn score_range(&self, s: &DailySeries, from: usize) -> Vec<DayScore> {
        let p = prepare(s, &self.rule);
        (from..s.len())
            .map(|i| self.score_prepared(s, &p, i))
            .collect()
    }

    fn score_prepared(&self, s: &DailySeries, p: &Prepared, i: usize) -> DayScore {
        let r = &self.rule;
        let date = s.date(i);
        let actual = s.credits[i];
        let a = self.assess(s, p, i);
        let sigma = self.spread(p.weekday[i]).max(1e-6);
        let z = capped_score(a.log_residual, sigma);
        let hourly = a.left_running || a.peak_above_cap;
        let threshold = if hourly {
            self.threshold.min(r.hourly_threshold)
        } else {
            self.threshold
        };
        let excess = actual - a.expected;
        let material = self.material_excess(a.expected, a.reference.log_level, hourly);
        // Reported expectation: what it spends when it runs on an active day; on an idle day, that times the
        // share of such weekdays it runs on (so actual - expected = excess holds on every row).
        let expected = if p.active[i] {
            a.expected
        } else {
            a.expected * self.weekday_active_share[p.weekday[i]]
        };
        let doubled = hourly && a.expected > 0.0 && actual >= r.hourly_spend_ratio * a.expected;
        let w = p.weekday[i];
        let above_record = self.above_record(&a);
        let rise = p.active[i] && (z >= threshold || doubled || above_record) && excess >= material;
        let fall = r.flag_drops
            && a.reference.log_level.is_some()
            && (z <= -threshold || (!p.active[i] && self.weekday_active_share[w] >= 0.9))
            && -excess >= material;
        let is_anomaly = rise || fall;
        let evidence = self.evidence(s, i, &a, above_record);
        let explanation = self.explain(s, p, i, &a, z, threshold, is_anomaly, rise, &evidence);
        let (normal_low, normal_high) = if p.active[i] && a.expected > 0.0 {
            normal_range(a.expected, threshold * sigma, material)
        } else {
            (None, None)
        };
        DayScore {
            day: AnomalyDay {
                date,
                actual_credits: actual,
                expected_credits: expected,
                excess_credits: actual - expected,
                score: z,
                threshold,
                explanation,
            },
            is_anomaly,
            evidence,
            normal_low,
            normal_high,
        }
    }

    /// Far above the highest day of the recent past (the test that suits heavy-tailed, intermittent
    /// warehouses, whose spread on the log scale is too wide for the z test).
    fn above_record(&self, a: &Assessment) -> bool {
        let r = &self.rule;
        // Judged, like at calibration, only with enough reference days behind the record.
        r.min_record_ratio > 0.0
            && a.reference.days >= r.min_reference_days.max(1)
            && a.record_residual.is_finite()
            && a.record_residual >= self.record_log_threshold
    }

    /// What the hourly and record tests saw on day `i`, for the report.
    fn evidence(
        &self,
        s: &DailySeries,
        i: usize,
        a: &Assessment,
        above_record: bool,
    ) -> Vec<Evidence> {
        let mut evidence = Vec::new();
        if a.left_running {
            evidence.push(Evidence::LeftRunning {
                hours_active: s.hours_active[i],
                usual_hours: a.reference.usual_hours,
            });
        }
        if a.peak_above_cap {
            evidence.push(Evidence::PeakAboveCap {
                peak_hourly_credits: s.peak_hourly_credits[i],
                usual_peak_hourly_credits: a.reference.usual_peak,
                capped: a.reference.capped,
            });
        }
        if above_record {
            evidence.push(Evidence::AboveRecord {
                record_credits: s.credits[i] / a.record_residual.exp(),
                record_days: self.rule.record_days,
            });
        }
        evidence
    }

    /// The excess in money, as a clause of the explanation, when a credit price is set.
    fn cost_clause(&self, excess: f64) -> String {
        self.rule
            .credit_price
            .filter(|p| *p > 0.0)
            .map(|p| format!(", {:+.2} in money", excess * p))
            .unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        s: &DailySeries,
        p: &Prepared,
        i: usize,
        a: &Assessment,
        z: f64,
        threshold: f64,
        is_anomaly: bool,
        rise: bool,
        evidence: &[Evidence],
    ) -> String {
        let date = s.date(i);
        let actual = s.credits[i];
        let w = p.weekday[i];
        let share = self.weekday_active_share[w];
        if !p.active[i] {
            return format!(
                "{date}: idle (runs on {:.0}% of {}s)",
                100.0 * share,
                weekday_name(w)
            );
        }
        let Some(_) = a.reference.log_level else {
            return format!(
                "{date}: {actual:.2} credits; first active day, nothing to compare with"
            );
        };
        let excess = actual - a.expected;
        let pct = if a.expected > 0.0 {
            format!("{:+.0}%", 100.0 * excess / a.expected)
        } else {
            "new usage".into()
        };
        let usual = intermittent_clause(share, w);
        let cost = self.cost_clause(excess);
        // The z test as it stands; the other tests that fired are listed from the evidence below.
        let cmp = z_comparison(z, threshold, is_anomaly, rise);
        let mut out = format!(
            "{date}: {actual:.2} credits vs {:.2} expected{usual} ({excess:+.2}, {pct}{cost}); score {z:.1} {cmp} threshold {threshold:.1}",
            a.expected
        );
        let class = p.classes[i];
        let effect = self.calendar_effects.of(class);
        if effect != 0.0 {
            out.push_str(&format!(
                "; {} usually x{:.2}",
                class.as_str(),
                effect.exp()
            ));
        }
        for e in evidence {
            out.push_str(&evidence_text(e, actual));
        }
        out
    }
}

/// For a warehouse that does not run on every such weekday (`share` of them), that the expectation is
/// what it spends when it runs.
fn intermittent_clause(share: f64, w: usize) -> String {
    if share < 0.9 {
        format!(
            " when it runs (it runs on {:.0}% of {}s)",
            100.0 * share,
            weekday_name(w)
        )
    } else {
        String::new()
    }
}

/// How the z test compared with the threshold, as the explanation states it.
fn z_comparison(z: f64, threshold: f64, is_anomaly: bool, rise: bool) -> &'static str {
    if is_anomaly && !rise {
        "<= -"
    } else if z >= threshold && !is_anomaly {
        ">= (not material)"
    } else if z >= threshold {
        ">="
    } else {
        "<"
    }
}

/// One piece of evidence as a clause of the explanation (of a day that billed `actual`).
fn evidence_text(e: &Evidence, actual: f64) -> String {
    match e {
        Evidence::LeftRunning {
            hours_active,
            usual_hours,
        } => format!("; {hours_active:.0} h active vs usual {usual_hours:.0} h (left running?)"),
        Evidence::PeakAboveCap {
            peak_hourly_credits,
            usual_peak_hourly_credits,
            capped,
        } => format!(
            "; peak {peak_hourly_credits:.2} credits/h vs {} {usual_peak_hourly_credits:.2} (resize or scale-out?)",
            if *capped { "its cap of" } else { "at most" }
        ),
        Evidence::AboveRecord {
            record_credits,
            record_days,
        } => format!(
            "; x{:.1} its highest day of the last {record_days} active days ({record_credits:.2} credits, weekday-adjusted)",
            if *record_credits > 0.0 {
                actual / record_credits
            } else {
                f64::INFINITY
            }
        ),
    }
}

/// The z score of a log residual, capped so that a day with nothing to compare with (or an idle one) still
/// serializes as a number.
fn capped_score(log_residual: f64, sigma: f64) -> f64 {
    if log_residual.is_finite() {
        (log_residual / sigma).clamp(-99.0, 99.0)
    } else if log_residual > 0.0 {
        99.0
    } else {
        -99.0
    }
}

/// The normal range of an active day expected to bill `expected`: up to where the z test (`log_threshold`,
/// the day's threshold in log units) and the materiality would both flag it, and as far below.
fn normal_range(expected: f64, log_threshold: f64, material: f64) -> (Option<f64>, Option<f64>) {
    let factor = log_threshold.min(50.0).exp();
    (
        Some((expected / factor).min((expected - material).max(0.0))),
        Some((expected * factor).max(expected + material)),
    )
}

fn weekday_name(w: usize) -> &'static str {
    [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ][w.min(6)]
}

fn model_is_quiet(profile: &[f64; 7], weekday: usize) -> bool {
    profile[weekday] < QUIET_LOG_PROFILE
}

/// Fits the default model on every day of `s` (the caller truncates it to the training cutoff).
pub fn fit(s: &DailySeries, rule: &DefaultRuleConfig) -> DefaultModel {
    let n = s.len();
    let p = prepare(s, rule);
    let (weekday_log_profile, weekday_active_share) = weekday_profile(&p, n, rule);
    let mut model = DefaultModel::untrained(rule, weekday_log_profile, weekday_active_share);
    // Fallback level: the median weekday-neutral log spend of the last year's active ordinary days.
    let year = n.saturating_sub(365);
    let mut lv: Vec<f64> = (year..n)
        .filter(|&i| p.active[i] && p.classes[i] == DayClass::Ordinary)
        .map(|i| p.log_credits[i] - model.weekday_log_profile[p.weekday[i]])
        .collect();
    model.training_log_level = median(&mut lv);
    // Out-of-sample residuals of the training days (each from the days before it), without calendar effects.
    // Two passes: the spread from residuals without level-shift acceptance, then the residuals as scoring
    // will see them (with it).
    let cal_from = year.max(7);
    let first = model.training_residuals(s, &p, cal_from..n);
    model.log_spread = shrunk_spread(&first.residuals, &p, &weekday_log_profile, false, rule);
    model.quiet_log_spread =
        shrunk_spread(&first.residuals, &p, &weekday_log_profile, true, rule).max(model.log_spread);
    // Evidence rates from this pass, while the model's own rates are still 0 (so every occurrence counts).
    let TrainingResiduals {
        residuals,
        records,
        evidence,
    } = model.training_residuals(s, &p, cal_from..n);
    let years = (n - cal_from).max(1) as f64 / 365.0;
    model.left_running_per_year = evidence[0] as f64 / years;
    model.peak_above_cap_per_year = evidence[1] as f64 / years;
    model.calendar_effects = learned_calendar_effects(&residuals, &p, model.log_spread);
    model.calibrate_thresholds(&residuals, records, &p, cal_from, n);
    model
}

/// Weekday profile of active-day spend (log), relative to the median active day, shrunk towards 0 when a
/// weekday has few active days (an intermittent warehouse's weekdays are noisy); and the share of each
/// weekday the warehouse ran on. Over the last `profile_weeks` of the `n` days.
fn weekday_profile(p: &Prepared, n: usize, rule: &DefaultRuleConfig) -> ([f64; 7], [f64; 7]) {
    let from = n.saturating_sub(rule.profile_weeks.max(1) * 7);
    let mut all = Vec::new();
    let mut by_day: [Vec<f64>; 7] = Default::default();
    let mut days_of: [usize; 7] = [0; 7];
    let mut active_of: [usize; 7] = [0; 7];
    for i in from..n {
        if p.classes[i] == DayClass::Holiday {
            continue;
        }
        let w = p.weekday[i];
        days_of[w] += 1;
        if p.active[i] {
            active_of[w] += 1;
            if p.classes[i] == DayClass::Ordinary {
                by_day[w].push(p.log_credits[i]);
                all.push(p.log_credits[i]);
            }
        }
    }
    let overall = median(&mut all.clone());
    let mut weekday_log_profile = [0.0; 7];
    let mut weekday_active_share = [0.0; 7];
    for w in 0..7 {
        let k = by_day[w].len();
        weekday_active_share[w] = active_of[w] as f64 / days_of[w].max(1) as f64;
        if let (Some(o), Some(m)) = (overall, median(&mut by_day[w])) {
            weekday_log_profile[w] = (m - o) * k as f64 / (k as f64 + 2.0);
        }
    }
    (weekday_log_profile, weekday_active_share)
}

/// The out-of-sample view of the training days (see [`DefaultModel::training_residuals`]).
struct TrainingResiduals {
    /// (day, log residual) of the days with enough reference days behind them.
    residuals: Vec<(usize, f64)>,
    /// Record residuals of those days (see [`Assessment::record_residual`]).
    records: Vec<f64>,
    /// Days showing left running and peak above cap, on otherwise ordinary days.
    evidence: [usize; 2],
}

/// The spread of the ordinary days' residuals on busy (or, with `quiet`, quiet) weekdays.
///
/// The spread is shrunk towards a wide prior (`prior_log_spread`, worth `prior_days` days) so that a
/// warehouse with few active days (a young or intermittent one) starts cautious instead of with the
/// spread of a handful of similar days.
fn shrunk_spread(
    res: &[(usize, f64)],
    p: &Prepared,
    weekday_log_profile: &[f64; 7],
    quiet: bool,
    rule: &DefaultRuleConfig,
) -> f64 {
    let ordinary: Vec<f64> = res
        .iter()
        .filter(|(i, _)| {
            p.classes[*i] == DayClass::Ordinary
                && model_is_quiet(weekday_log_profile, p.weekday[*i]) == quiet
        })
        .map(|(_, r)| *r)
        .collect();
    let k = ordinary.len() as f64;
    let m = mad(&ordinary).unwrap_or(0.0);
    let k0 = rule.prior_days;
    let prior = rule.prior_log_spread;
    ((k * m * m + k0 * prior * prior) / (k + k0).max(1e-9))
        .sqrt()
        .max(0.05)
}

/// Calendar effects: the median residual of the last six occurrences, when seen twice and clearly positive.
fn learned_calendar_effects(
    residuals: &[(usize, f64)],
    p: &Prepared,
    log_spread: f64,
) -> CalendarEffects {
    let mut effects = CalendarEffects::default();
    for class in [DayClass::FirstBusinessDay, DayClass::LastBusinessDay] {
        let mut occ: Vec<f64> = residuals
            .iter()
            .rev()
            .filter(|(i, _)| p.classes[*i] == class)
            .take(6)
            .map(|(_, r)| *r)
            .collect();
        let seen = occ.len();
        let effect = if seen >= 2 {
            median(&mut occ)
                .filter(|m| *m > 0.5 * log_spread)
                .unwrap_or(0.0)
        } else {
            0.0
        };
        match class {
            DayClass::FirstBusinessDay => {
                effects.first_business_day = effect;
                effects.first_business_day_seen = seen;
            }
            _ => {
                effects.last_business_day = effect;
                effects.last_business_day_seen = seen;
            }
        }
    }
    effects
}

impl DefaultModel {
    /// The model before anything but the weekday profile is learned.
    fn untrained(
        rule: &DefaultRuleConfig,
        weekday_log_profile: [f64; 7],
        weekday_active_share: [f64; 7],
    ) -> Self {
        DefaultModel {
            rule: rule.clone(),
            weekday_log_profile,
            weekday_active_share,
            // Infinite until estimated: the first residual pass must not accept level shifts.
            log_spread: f64::INFINITY,
            quiet_log_spread: f64::INFINITY,
            training_log_level: None,
            calendar_effects: CalendarEffects::default(),
            threshold: rule.min_threshold,
            calibration: Calibration::default(),
            // Finite: JSON has no infinity, and a stored model must read back (the test off never flags).
            record_log_threshold: f64::MAX,
            record_calibration: Calibration::default(),
            left_running_per_year: 0.0,
            peak_above_cap_per_year: 0.0,
            format: DEFAULT_MODEL_FORMAT,
        }
    }

    /// Assesses each active, non-holiday day of `days` from the days before it, as the model stands.
    fn training_residuals(
        &self,
        s: &DailySeries,
        p: &Prepared,
        days: std::ops::Range<usize>,
    ) -> TrainingResiduals {
        let rule = &self.rule;
        let mut records = Vec::new();
        let mut evidence = [0usize; 2];
        let residuals = days
            .filter(|&i| p.active[i] && p.classes[i] != DayClass::Holiday)
            .filter_map(|i| {
                let a = self.assess(s, p, i);
                // Evidence on a day the spend test alone would flag is an incident of the history, not the
                // warehouse's habit: only evidence on otherwise ordinary days counts.
                let ordinary = a.log_residual / self.spread(p.weekday[i]) < rule.min_threshold;
                evidence[0] += usize::from(a.left_running && ordinary);
                evidence[1] += usize::from(a.peak_above_cap && ordinary);
                if a.record_residual.is_finite()
                    && a.reference.days >= rule.min_reference_days.max(1)
                {
                    records.push(a.record_residual);
                }
                (a.reference.days >= rule.min_reference_days.max(1) && a.log_residual.is_finite())
                    .then_some((i, a.log_residual))
            })
            .collect();
        TrainingResiduals {
            residuals,
            records,
            evidence,
        }
    }

    /// Calibrates the z test's and the record test's thresholds on the training days from `cal_from` to `n`.
    fn calibrate_thresholds(
        &mut self,
        residuals: &[(usize, f64)],
        mut records: Vec<f64>,
        p: &Prepared,
        cal_from: usize,
        n: usize,
    ) {
        let rule = &self.rule;
        // Calibration: scores of the training days with the calendar effects applied.
        let mut z: Vec<f64> = residuals
            .iter()
            .map(|(i, r)| {
                (r - self.calendar_effects.of(p.classes[*i])) / self.spread(p.weekday[*i])
            })
            .collect();
        z.sort_by(f64::total_cmp);
        let span = (n - cal_from).max(1);
        let active_share = (cal_from..n).filter(|&i| p.active[i]).count() as f64 / span as f64;
        let (threshold, calibration) = calibrate(
            &z,
            active_share,
            rule,
            (rule.min_threshold, rule.max_threshold),
        );
        let record = (rule.min_record_ratio > 0.0).then(|| {
            records.sort_by(f64::total_cmp);
            let bounds = (
                rule.min_record_ratio.ln(),
                rule.max_record_ratio.max(rule.min_record_ratio).ln(),
            );
            calibrate(&records, active_share, rule, bounds)
        });
        self.threshold = threshold;
        self.calibration = calibration;
        if let Some((t, c)) = record {
            self.record_log_threshold = t;
            self.record_calibration = c;
        }
    }
}

/// Threshold for which the expected number of exceedances per year is the budget: an exponential tail fitted
/// above the 90th percentile of the out-of-sample scores (its scale from the median excess, so a few past
/// incidents in the history do not inflate it). Too few scores: the lower bound.
fn calibrate(
    sorted_z: &[f64],
    active_share: f64,
    rule: &DefaultRuleConfig,
    (lower, upper): (f64, f64),
) -> (f64, Calibration) {
    let n = sorted_z.len();
    let mut cal = Calibration {
        scored_days: n,
        active_share,
        ..Calibration::default()
    };
    if n < 20 {
        cal.raw_threshold = lower;
        return (lower, cal);
    }
    // Chance per active day that the budget allows.
    let q = (rule.expected_false_alarms_per_year / (365.0 * active_share.max(1.0 / 365.0)))
        .clamp(1e-6, 0.5);
    let u = quantile_sorted(sorted_z, 0.9);
    let mut excess: Vec<f64> = sorted_z.iter().filter(|x| **x > u).map(|x| x - u).collect();
    let beta = if excess.len() >= 5 {
        median(&mut excess).map_or(0.5, |m| m / std::f64::consts::LN_2)
    } else {
        0.5
    }
    .max(0.1);
    let raw = if q >= 0.1 {
        quantile_sorted(sorted_z, 1.0 - q)
    } else {
        u + beta * (0.1 / q).ln()
    };
    cal.tail_start = u;
    cal.tail_scale = beta;
    cal.raw_threshold = raw;
    let t = if raw.is_finite() {
        raw.clamp(lower, upper)
    } else {
        upper
    };
    (t, cal)
}
