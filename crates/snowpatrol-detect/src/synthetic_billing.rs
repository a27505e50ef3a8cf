//! A second, independent family of labelled synthetic metering: Snowflake billing simulated mechanically.
//!
//! [`crate::synthetic`] draws each warehouse-day as an hourly utilisation profile scaled by growth and a
//! day-level log-normal multiplier, and injects anomalies by editing that day's hourly numbers. This module
//! shares none of that. It simulates the *work* a warehouse is given (scheduled jobs, analyst sessions,
//! dashboard and application queries), then bills that work the way Snowflake does. Weekly shape, day-to-day
//! variation, idle cost, multi-cluster peaks and the size of every incident fall out of the mechanics, not out
//! of a noise term, so detection rules tuned on one family and reported on the other share no generative
//! assumptions.
//!
//! How it differs in principle from [`crate::synthetic`]:
//! * noise: there is no day-level multiplier; variation comes from arrivals (Poisson queries, attendance,
//!   sessions), job durations (gamma, log-normal), failures and reruns, late upstreams and growth;
//! * spend: hours are billed from resume/suspend sessions, the 60-second minimum, idle time before suspend and
//!   per-minute cluster scaling, not from a utilisation number times size;
//! * incidents change the mechanism (auto-suspend off, a bigger size with Amdahl speed-up, extra jobs, a
//!   concurrency storm, work withheld), and their size is whatever the billing makes of that;
//! * labels mark days whose spend the incident materially changed, measured by billing with and without it,
//!   and recurring month-end closes are labelled `Expected` (false alarms if flagged);
//! * calendar: US public holidays, a year-end lull, account time zones with DST, month-end business days;
//! * archetypes: hourly loaders, nightly transforms, office BI, dev, data science and app serving, each with its
//!   own mechanics.
//!
//! # Billing model
//! * A warehouse has a size (credits per hour for one cluster: XS 1, S 2, M 4, L 8, XL 16; a resize may go up to
//!   128), `min_clusters`/`max_clusters` and `auto_suspend` (60-1800 s).
//! * Work is a list of jobs (start, duration at the original size) plus, for BI and application warehouses, a
//!   per-minute stream of short queries. Jobs in a *chain* (the models of one dbt thread, the queries of one
//!   analyst session, the chunks of a backfill) run back to back, so when a job gets faster the rest of its chain
//!   starts earlier.
//! * Durations follow Amdahl's law: a job of duration `t` at the original size `s0` takes
//!   `t * (f + (1 - f) * s0 / s)` at size `s`, with a per-warehouse serial share `f` (0.15-0.35 for transforms,
//!   0.5-0.85 for small BI/app queries). Doubling the size therefore costs `2f + (1 - f)` times as much for the
//!   same work, plus twice the idle time.
//! * The first cluster resumes when work arrives and suspends `auto_suspend` seconds after the last work ends;
//!   every second in between is billed, with a 60-second minimum per resume. Idle gaps shorter than
//!   `auto_suspend` are billed; longer ones cost a suspend and a resume.
//! * Multi-cluster warehouses (BI, app) run up to 8 concurrent queries per cluster (Snowflake's default
//!   `MAX_CONCURRENCY_LEVEL`). Each minute the concurrency (query-seconds / 60, plus a burst allowance of
//!   1.5 sqrt(concurrency)) decides how many clusters are needed; an extra cluster starts at once and stops
//!   after 2 further minutes without need (the standard scaling policy's consecutive checks). Extra clusters
//!   are billed per minute at the warehouse's size. An hour therefore bills at most size x running clusters.
//! * Cloud services are a per-warehouse fraction of compute (1-15 %, higher for query-heavy warehouses) with
//!   hour-to-hour log-normal jitter (sigma 0.35), added to `credits_used`. Rows are rounded to 3 decimals; hours
//!   without compute are omitted. All times are UTC; each account has a time zone (US, EU or APAC offset with
//!   DST) that places office hours.
//!
//! # Calendar
//! A US-style calendar for every account: New Year, MLK day, Presidents' day, Memorial day, Juneteenth,
//! Independence day, Labor day, Thanksgiving and the Friday after, Christmas (weekend dates observed on the
//! Friday/Monday). Working days between Christmas and New Year are a "lull" (half the office away).
//!
//! # Archetypes (names `LOAD_WH_n`, `TRANSFORM_WH_n`, `BI_WH_n`, `DEV_WH_n`, `DS_WH_n`, `APP_WH_n`)
//! * `hourly_loader`: a COPY job every hour (65 %) or every 15 minutes, 24x7, XS-M. Duration = fixed overhead
//!   (10-40 s) + file volume, which follows the source's business hours and days and is gamma-distributed run to
//!   run; ~1 % of runs fail part-way and are retried a few minutes later; a few start late.
//! * `nightly_transform`: a dbt-like batch of 8-40 models on 1, 2 or 4 threads, starting 00:30-06:00 UTC, 1.5-5
//!   hours of wall time, S-XL. Each model's duration varies (gamma); after weekends and holidays there is less
//!   data; 2-8 % of nights a model fails and it and part of its downstream are rerun 15-90 minutes later. On the
//!   last business day of each month a month-end close appends models worth 60-100 % of the usual batch, so that
//!   night runs 1.6-2x the usual hours (recurring and expected).
//! * `office_bi`: a headcount of 8-300 users (growing), each attending on working days with 75-90 % probability
//!   (half in the year-end lull, ~3 % at weekends and on holidays), arriving around 08:45 and leaving around
//!   17:15 local time with a lunch break; each active user fires 0.5-2 queries a minute (Poisson) of a few seconds
//!   (log-normal). Dashboard extracts run at 06:00 local on working days (and at noon on some). S-L, auto-suspend
//!   5-15 minutes, `max_clusters` provisioned for the expected peak concurrency plus 0-1 spare (2-6), so busy
//!   days use the extra clusters and growth fills them.
//! * `dev`: 2-10 developers, each with a 3-10 % chance of a session on a working day (a fraction of that
//!   otherwise); 1 + geometric sessions of log-normal length (median 25 min); queries of median 5 s with a heavy
//!   tail, separated by exponential think times and occasional long pauses. Idle most days. XS-M.
//! * `data_science`: 1-4 scientists with a 4-12 % chance of a working-day session of median 2.5 hours of heavy
//!   queries (median 60 s, tail to hours). M-XL, auto-suspend up to 30 minutes.
//! * `app_serving`: Poisson query traffic (30-3000 queries a minute at peak, median 300) with a daily cycle in
//!   the account's time zone, a weekend and holiday level, a slowly wandering intensity (Ornstein-Uhlenbeck,
//!   3-hour memory) and health checks, so some cluster always runs; S-L, 1-2 minimum clusters, maximum
//!   provisioned for the peak plus 0-2 spare (3-8).
//!
//! Every warehouse grows organically at its own compounding annual rate (about -15 % to +60 %, by archetype)
//! applied to volumes, headcounts and traffic, and ~20 % of warehouses are created mid-series (days 14 to 55 %
//! of the series).
//!
//! # Incidents and labels
//! Incidents are drawn from a separate random stream, so the underlying workload is the same at any incident
//! rate. On each day after a 60-day warm-up from the warehouse's creation (and at least 10 days after the last
//! day of the previous incident) an incident starts with probability `incident_rate` (default 1/75). A kind is
//! drawn by archetype (up to three tries); it is kept only if it is material: on a labelled day spend must change
//! by at least max(30 % of the warehouse's usual day, 3 credits), where the usual day is the mean of the
//! previous 28 unlabelled days, both measured by billing the warehouse with and without the incident. A label
//! marks each day of the incident window whose spend changed that much (an idle dev day inside a temporary
//! resize is not labelled, for example). Kinds:
//! * `Runaway`: auto-suspend disabled for 1-3 whole UTC days; the warehouse bills every hour at full size x
//!   running clusters. Not on app warehouses (they never suspend anyway).
//! * `Resize`, left in place: size x2 (70 %) or x4 from 00:00 UTC of a working day on (at most 8x the original
//!   size overall; a warehouse already at 4x is not resized again); jobs run faster per Amdahl, spend rises.
//!   Labelled on its first day only; later days are the new normal.
//! * `Resize`, temporary: x2 or x4 for 2-5 days starting on a working day, then back; each affected day.
//!   A resize's first day is always labelled (its hourly cap changes that day even when the day's work was
//!   light), the later days when their spend changed materially.
//! * `Spike`: a one-off backfill on 1 (70 %) or 2 days: chains of 5-40 minute jobs starting 09:00-15:00 local,
//!   hours of work log-normal by archetype (median 3-5 hours at the original size; 0.7-1.8 batches for a
//!   transform), 1-4 streams; the day after is labelled too if the backfill spills materially into it.
//! * `ScaleOut`: BI or app warehouses only; a storm (a runaway refresh loop, an app retry storm) pushes
//!   concurrency past every cluster for 15-22 hours of one day or 36-48 hours over two.
//! * `Drop`: an outage or pause of 1-4 days in which none (50 %) or 1-10 % of the work happens. Not a cost
//!   increase; not on dev or data-science warehouses, where idleness is normal.
//! * `Expected`: every month-end close run of a `nightly_transform` warehouse after its warm-up is labelled on
//!   its (UTC) day. It is recurring and expected: a detector flagging it raises a false alarm. No other incident
//!   window touches a close day.
//!
//! With the default config (seeds 1-3) a labelled day's spend relative to the median of the previous 28
//! unlabelled days is, at the median: `Expected` 1.7-1.9x, `Resize` 2.1-2.4x, `ScaleOut` 2.2-3.5x, `Spike`
//! 2.5x or more (often on warehouses idle the days before), `Runaway` 12x or more (mostly dev and data-science
//! warehouses that are otherwise idle; at least 1.4x on 90 % of days), `Drop` ~0. The realised rate is about
//! one incident per 80-100 warehouse-days after warm-up (spacing and rejected immaterial draws lower it from
//! `incident_rate`).
//!
//! Labels are sorted by (warehouse, date) and unique per warehouse-day. Each warehouse draws from its own
//! ChaCha8 streams (workload, incidents, cloud services) keyed on (seed, warehouse index), so generation runs
//! in parallel and is identical for a given config at any thread count.

use crate::metering::{AnomalyKind, AnomalyLabel, MeteringRow, WarehouseKey};
use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeDelta, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BillingConfig {
    pub seed: u64,
    pub accounts: usize,
    /// Total warehouses, spread round-robin over the accounts.
    pub warehouses: usize,
    pub days: usize,
    /// Last generated day (inclusive).
    pub end: NaiveDate,
    /// Chance per eligible warehouse-day (after warm-up and spacing) that an incident starts.
    pub incident_rate: f64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            accounts: 3,
            warehouses: 36,
            days: 450,
            end: NaiveDate::from_ymd_opt(2025, 6, 30).expect("2025-06-30 is a valid date"),
            incident_rate: 1.0 / 75.0,
        }
    }
}

/// The kind of workload a warehouse runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Archetype {
    HourlyLoader,
    NightlyTransform,
    OfficeBi,
    Dev,
    DataScience,
    AppServing,
}

impl Archetype {
    pub const ALL: [Archetype; 6] = [
        Archetype::HourlyLoader,
        Archetype::NightlyTransform,
        Archetype::OfficeBi,
        Archetype::Dev,
        Archetype::DataScience,
        Archetype::AppServing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Archetype::HourlyLoader => "hourly_loader",
            Archetype::NightlyTransform => "nightly_transform",
            Archetype::OfficeBi => "office_bi",
            Archetype::Dev => "dev",
            Archetype::DataScience => "data_science",
            Archetype::AppServing => "app_serving",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Archetype::HourlyLoader => "LOAD",
            Archetype::NightlyTransform => "TRANSFORM",
            Archetype::OfficeBi => "BI",
            Archetype::Dev => "DEV",
            Archetype::DataScience => "DS",
            Archetype::AppServing => "APP",
        }
    }
}

/// Generated metering, labels and the archetype of each warehouse.
#[derive(Clone, Debug, PartialEq)]
pub struct BillingData {
    pub rows: Vec<MeteringRow>,
    pub labels: Vec<AnomalyLabel>,
    pub archetypes: BTreeMap<WarehouseKey, Archetype>,
}

/// Generates hourly rows (by warehouse, then hour), labels sorted by (key, date) and archetypes.
pub fn generate(cfg: &BillingConfig) -> BillingData {
    assemble(simulate_all(cfg))
}

// ---------------------------------------------------------------------------------------------------------
// Constants of the model.

const DAY: i64 = 86_400;
const WARMUP_DAYS: usize = 60;
const MIN_GAP_DAYS: usize = 10;
const MATERIAL_SHARE: f64 = 0.30;
const MATERIAL_CREDITS: f64 = 3.0;
const USUAL_WINDOW_DAYS: usize = 28;
/// Snowflake's default `MAX_CONCURRENCY_LEVEL`: queries one cluster runs at once.
const SLOTS: f64 = 8.0;
/// Minutes an extra cluster keeps running after it was last needed.
const SCALE_DOWN_MINUTES: i64 = 2;
const MAX_SIZE: f64 = 128.0;
/// How far before a billing window jobs are looked at (a job or chain may run into the window).
const LOOKBACK: i64 = DAY;
const EXTRA_CHAIN_BASE: u32 = 1 << 31;
/// One archetype per slot; an account's warehouses walk this cycle from an account-specific offset.
const PATTERN: [Archetype; 12] = [
    Archetype::HourlyLoader,
    Archetype::NightlyTransform,
    Archetype::OfficeBi,
    Archetype::AppServing,
    Archetype::Dev,
    Archetype::DataScience,
    Archetype::HourlyLoader,
    Archetype::OfficeBi,
    Archetype::NightlyTransform,
    Archetype::Dev,
    Archetype::AppServing,
    Archetype::OfficeBi,
];

// ---------------------------------------------------------------------------------------------------------
// Randomness: ChaCha8 streams with a few hand-written distributions (no rand_distr dependency).

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic uniform in [0, 1) from two integers (thinning of work during outages).
fn unit_hash(a: u64, b: u64) -> f64 {
    (splitmix(a ^ splitmix(b)) >> 11) as f64 / (1u64 << 53) as f64
}

fn warehouse_key(seed: u64, w: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = splitmix(seed ^ 0x5eed_b111_u64.rotate_left(17))
        ^ (w as u64).wrapping_mul(0xd605_bbb5_8c8a_bbd5);
    for chunk in out.chunks_mut(8) {
        x = splitmix(x);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    out
}

struct Src {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Src {
    fn new(key: [u8; 32], stream: u64) -> Self {
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(stream);
        Self { rng, spare: None }
    }

    fn u(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.u()
    }

    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.u() < p
    }

    /// Standard normal, Marsaglia's polar method (keeps the second value of each pair).
    fn gauss(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let x = 2.0 * self.u() - 1.0;
            let y = 2.0 * self.u() - 1.0;
            let s = x * x + y * y;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(y * f);
                return x * f;
            }
        }
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.gauss()).exp()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.u()).ln()
    }

    /// Gamma with mean 1 and shape `k >= 1` (Marsaglia-Tsang).
    fn gamma_unit(&mut self, k: f64) -> f64 {
        let k = k.max(1.0);
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.gauss();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.u().max(1e-300);
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v / k;
            }
        }
    }

    /// Poisson: exact (Knuth) below 30, normal approximation above.
    fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0u64;
            let mut p = self.u();
            while p > limit {
                k += 1;
                p *= self.u();
            }
            k
        } else {
            (lambda + lambda.sqrt() * self.gauss()).round().max(0.0) as u64
        }
    }

    /// Failures before the first success with success probability `p`.
    fn geometric(&mut self, p: f64) -> u64 {
        let mut n = 0;
        while n < 50 && !self.chance(p) {
            n += 1;
        }
        n
    }

    fn pick<T: Copy, const N: usize>(&mut self, items: [(T, f64); N]) -> T {
        const { assert!(N > 0, "pick from a non-empty table") };
        let total: f64 = items.iter().map(|x| x.1).sum();
        let mut x = self.u() * total;
        for &(v, w) in &items {
            if x < w {
                return v;
            }
            x -= w;
        }
        items[N - 1].0
    }
}

// ---------------------------------------------------------------------------------------------------------
// Calendar and time zones.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DayType {
    Work,
    /// A working day between Christmas and New Year.
    Lull,
    Weekend,
    Holiday,
}

fn shift(d: NaiveDate, days: i64) -> NaiveDate {
    d.checked_add_signed(TimeDelta::days(days)).unwrap_or(d)
}

fn observed(d: NaiveDate) -> NaiveDate {
    match d.weekday() {
        Weekday::Sat => shift(d, -1),
        Weekday::Sun => shift(d, 1),
        _ => d,
    }
}

fn nth_weekday(year: i32, month: u32, wd: Weekday, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, wd, n)
}

fn last_weekday(year: i32, month: u32, wd: Weekday) -> Option<NaiveDate> {
    nth_weekday(year, month, wd, 5).or_else(|| nth_weekday(year, month, wd, 4))
}

fn us_holidays(year: i32) -> Vec<NaiveDate> {
    let fixed = |m: u32, d: u32| NaiveDate::from_ymd_opt(year, m, d).map(observed);
    let thanksgiving = nth_weekday(year, 11, Weekday::Thu, 4);
    [
        fixed(1, 1),
        nth_weekday(year, 1, Weekday::Mon, 3),
        nth_weekday(year, 2, Weekday::Mon, 3),
        last_weekday(year, 5, Weekday::Mon),
        if year >= 2021 { fixed(6, 19) } else { None },
        fixed(7, 4),
        nth_weekday(year, 9, Weekday::Mon, 1),
        thanksgiving,
        thanksgiving.map(|d| shift(d, 1)),
        fixed(12, 25),
    ]
    .into_iter()
    .flatten()
    .collect()
}

struct Calendar {
    start: NaiveDate,
    kind: Vec<DayType>,
    month_end: Vec<bool>,
}

impl Calendar {
    /// Covers day indices `0..n` from `start`.
    fn new(start: NaiveDate, n: usize) -> Self {
        let mut holidays = BTreeSet::new();
        let last = shift(start, n as i64 + 40);
        for y in start.year() - 1..=last.year() + 1 {
            holidays.extend(us_holidays(y));
        }
        let business =
            |d: NaiveDate| d.weekday().num_days_from_monday() < 5 && !holidays.contains(&d);
        let mut kind = Vec::with_capacity(n);
        let mut month_end = Vec::with_capacity(n);
        for i in 0..n {
            let d = shift(start, i as i64);
            let k = if holidays.contains(&d) {
                DayType::Holiday
            } else if d.weekday().num_days_from_monday() >= 5 {
                DayType::Weekend
            } else if d.month() == 12 && d.day() >= 24 {
                DayType::Lull
            } else {
                DayType::Work
            };
            kind.push(k);
            let mut is_last = business(d);
            let mut next = shift(d, 1);
            while is_last && next.month() == d.month() {
                if business(next) {
                    is_last = false;
                }
                next = shift(next, 1);
            }
            month_end.push(is_last);
        }
        Self {
            start,
            kind,
            month_end,
        }
    }

    fn day_type(&self, i: i64) -> DayType {
        let i = i.clamp(0, self.kind.len() as i64 - 1) as usize;
        self.kind[i]
    }

    fn is_business(&self, i: usize) -> bool {
        matches!(self.day_type(i as i64), DayType::Work | DayType::Lull)
    }

    fn date(&self, i: usize) -> NaiveDate {
        shift(self.start, i as i64)
    }
}

#[derive(Clone, Copy)]
enum Dst {
    Us,
    Eu,
    None,
}

fn dst_active(rule: Dst, d: NaiveDate) -> bool {
    let y = d.year();
    let (from, to) = match rule {
        Dst::Us => (
            nth_weekday(y, 3, Weekday::Sun, 2),
            nth_weekday(y, 11, Weekday::Sun, 1),
        ),
        Dst::Eu => (
            last_weekday(y, 3, Weekday::Sun),
            last_weekday(y, 10, Weekday::Sun),
        ),
        Dst::None => (None, None),
    };
    matches!((from, to), (Some(f), Some(t)) if d >= f && d < t)
}

struct Account {
    name: String,
    /// Minutes to add to UTC for local time, by day index.
    offset: Vec<i32>,
}

fn accounts(n: usize, cal: &Calendar) -> Vec<Account> {
    const ZONES: [(&str, i32, Dst); 6] = [
        ("NORTHWIND_US", -300, Dst::Us),
        ("CONTOSO_EU", 60, Dst::Eu),
        ("FABRIKAM_WEST", -480, Dst::Us),
        ("TAILSPIN_CENTRAL", -360, Dst::Us),
        ("WINGTIP_UK", 0, Dst::Eu),
        ("LITWARE_APAC", 600, Dst::None),
    ];
    (0..n)
        .map(|a| {
            let (name, std, dst) = ZONES[a % ZONES.len()];
            let name = if a < ZONES.len() {
                name.to_string()
            } else {
                format!("ACCOUNT_{a}")
            };
            let offset = (0..cal.kind.len())
                .map(|i| std + if dst_active(dst, cal.date(i)) { 60 } else { 0 })
                .collect();
            Account { name, offset }
        })
        .collect()
}

/// Minutes to add to UTC for local time on day `d`.
fn offset_min(off: &[i32], d: usize) -> i64 {
    off.get(d).or(off.last()).copied().unwrap_or(0) as i64
}

/// UTC second of a local time on local day `li`.
fn utc_of(off: &[i32], li: i64, local_sec: i64) -> i64 {
    let i = li.clamp(0, off.len() as i64 - 1) as usize;
    li * DAY + local_sec - off[i] as i64 * 60
}

/// (local day index, local second of day) of a UTC second.
fn local_of(off: &[i32], t: i64) -> (i64, i64) {
    let d = t.div_euclid(DAY).clamp(0, off.len() as i64 - 1) as usize;
    let lt = t + off[d] as i64 * 60;
    (lt.div_euclid(DAY), lt.rem_euclid(DAY))
}

// ---------------------------------------------------------------------------------------------------------
// Warehouse specification and workload.

struct Spec {
    arch: Archetype,
    first_day: usize,
    base_size: f64,
    min_clusters: u32,
    max_clusters: u32,
    auto_suspend: i64,
    /// Amdahl serial share of a job's duration (does not speed up with size).
    serial: f64,
    ln_growth: f64,
    cloud_frac: f64,
}

impl Spec {
    fn growth(&self, day: i64) -> f64 {
        let age = (day - self.first_day as i64).max(0) as f64;
        (self.ln_growth * age / 365.0).exp()
    }
}

fn draw_spec(src: &mut Src, arch: Archetype, days: usize) -> Spec {
    let first_day = if days > 150 && src.chance(0.2) {
        src.int(14, (days as f64 * 0.55) as i64) as usize
    } else {
        0
    };
    let k = draw_knobs(src, arch);
    Spec {
        arch,
        first_day,
        base_size: k.base_size,
        min_clusters: k.min_clusters,
        max_clusters: k.max_clusters,
        auto_suspend: k.auto_suspend,
        serial: k.serial,
        ln_growth: f64::ln(1.0 + k.growth),
        cloud_frac: k.cloud_frac,
    }
}

/// The settings and habits of a warehouse as drawn for its archetype (see [`Spec`]; `growth` is the annual
/// rate, not its log).
struct Knobs {
    base_size: f64,
    min_clusters: u32,
    max_clusters: u32,
    auto_suspend: i64,
    serial: f64,
    growth: f64,
    cloud_frac: f64,
}

fn draw_knobs(src: &mut Src, arch: Archetype) -> Knobs {
    match arch {
        Archetype::HourlyLoader => Knobs {
            base_size: src.pick([(1.0, 0.55), (2.0, 0.3), (4.0, 0.15)]),
            min_clusters: 1,
            max_clusters: 1,
            auto_suspend: src.pick([(60, 0.5), (120, 0.2), (300, 0.2), (600, 0.1)]),
            serial: src.uniform(0.35, 0.6),
            growth: src.uniform(-0.05, 0.45),
            cloud_frac: src.uniform(0.06, 0.15),
        },
        Archetype::NightlyTransform => Knobs {
            base_size: src.pick([(2.0, 0.15), (4.0, 0.4), (8.0, 0.3), (16.0, 0.15)]),
            min_clusters: 1,
            max_clusters: 1,
            auto_suspend: src.pick([(60, 0.4), (300, 0.35), (600, 0.25)]),
            serial: src.uniform(0.15, 0.35),
            growth: src.uniform(0.0, 0.6),
            cloud_frac: src.uniform(0.01, 0.04),
        },
        Archetype::OfficeBi => Knobs {
            base_size: src.pick([(2.0, 0.3), (4.0, 0.45), (8.0, 0.25)]),
            min_clusters: 1,
            max_clusters: 2, // set by the workload: provisioned for its peak
            auto_suspend: src.pick([(300, 0.3), (600, 0.5), (900, 0.2)]),
            serial: src.uniform(0.5, 0.8),
            growth: src.uniform(0.0, 0.35),
            cloud_frac: src.uniform(0.04, 0.1),
        },
        Archetype::Dev => Knobs {
            base_size: src.pick([(1.0, 0.6), (2.0, 0.3), (4.0, 0.1)]),
            min_clusters: 1,
            max_clusters: 1,
            auto_suspend: src.pick([(60, 0.4), (300, 0.4), (600, 0.2)]),
            serial: src.uniform(0.3, 0.6),
            growth: src.uniform(-0.15, 0.3),
            cloud_frac: src.uniform(0.05, 0.15),
        },
        Archetype::DataScience => Knobs {
            base_size: src.pick([(4.0, 0.4), (8.0, 0.4), (16.0, 0.2)]),
            min_clusters: 1,
            max_clusters: 1,
            auto_suspend: src.pick([(300, 0.3), (600, 0.4), (1800, 0.3)]),
            serial: src.uniform(0.15, 0.4),
            growth: src.uniform(0.0, 0.5),
            cloud_frac: src.uniform(0.01, 0.04),
        },
        Archetype::AppServing => Knobs {
            base_size: src.pick([(2.0, 0.4), (4.0, 0.45), (8.0, 0.15)]),
            min_clusters: src.pick([(1, 0.8), (2, 0.2)]),
            max_clusters: 3, // set by the workload: provisioned for its peak
            auto_suspend: 600,
            serial: src.uniform(0.6, 0.85),
            growth: src.uniform(0.05, 0.5),
            cloud_frac: src.uniform(0.05, 0.12),
        },
    }
}

/// A unit of work. `work` is its duration in seconds at the warehouse's original size.
#[derive(Clone, Copy, Debug)]
struct Job {
    /// Planned start (UTC seconds from the series start). A job in a chain actually starts `gap` seconds after
    /// the previous job of its chain ends; only the first job of a chain uses `start`.
    start: i64,
    work: f32,
    gap: f32,
    /// 0: independent.
    chain: u32,
    id: u32,
}

impl Job {
    fn solo(start: i64, work: f64) -> Self {
        Self {
            start,
            work: work as f32,
            gap: 0.0,
            chain: 0,
            id: 0,
        }
    }
}

struct Workload {
    jobs: Vec<Job>,
    /// Per UTC minute of the series: concurrency of short queries (query-seconds / 60); > 0 means arrivals.
    light: Vec<f32>,
    close_days: Vec<usize>,
    /// A transform's regular batch (seconds of work at the original size, before growth) and its threads.
    batch_work: f64,
    threads: u32,
}

impl Workload {
    fn new(jobs: Vec<Job>, first_day: usize, days: usize) -> Self {
        let lo = first_day as i64 * DAY;
        let hi = days as i64 * DAY;
        let mut jobs: Vec<Job> = jobs
            .into_iter()
            .filter(|j| j.start >= lo && j.start < hi)
            .collect();
        jobs.sort_by_key(|j| j.start);
        for (i, j) in jobs.iter_mut().enumerate() {
            j.id = i as u32;
        }
        Self {
            jobs,
            light: Vec::new(),
            close_days: Vec::new(),
            batch_work: 0.0,
            threads: 1,
        }
    }
}

/// Average concurrency (query-seconds / 60) of a minute with Poisson(lambda) arrivals whose durations have mean
/// `es` and second moment `es2`; 0 when nothing arrives.
fn minute_load(src: &mut Src, lambda: f64, es: f64, es2: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 20.0 {
        let n = src.poisson(lambda);
        if n == 0 {
            return 0.0;
        }
        let n = n as f64;
        let sd = (n * (es2 - es * es)).max(0.0).sqrt();
        ((n * es + sd * src.gauss()) / 60.0).max(n * 0.2 / 60.0)
    } else {
        ((lambda * es + (lambda * es2).sqrt() * src.gauss()) / 60.0).max(lambda * 0.2 / 60.0)
    }
}

fn gen_loader(spec: &Spec, src: &mut Src, cal: &Calendar, off: &[i32], days: usize) -> Workload {
    let cadence: i64 = if src.chance(0.35) { 900 } else { 3600 };
    let phase = src.int(20, cadence / 4);
    let overhead = src.uniform(10.0, 40.0);
    let volume = if cadence == 3600 {
        src.lognormal(150.0, 0.6).clamp(20.0, 1500.0)
    } else {
        src.lognormal(40.0, 0.6).clamp(5.0, 400.0)
    };
    let shape = src.uniform(2.0, 6.0);
    let amplitude = src.uniform(0.2, 1.5);
    let peak = src.uniform(11.0, 15.0);
    let quiet = src.uniform(0.4, 0.9);
    let mut jobs = Vec::with_capacity((days - spec.first_day) * (DAY / cadence) as usize);
    for d in spec.first_day..days {
        let mut slot = 0;
        while slot < DAY {
            let mut start = d as i64 * DAY + slot + phase + src.exponential(6.0) as i64;
            if src.chance(0.03) {
                start += src.exponential(300.0) as i64;
            }
            let (li, ls) = local_of(off, start);
            let activity = match cal.day_type(li) {
                DayType::Work => 1.0,
                DayType::Lull => 0.8,
                DayType::Weekend | DayType::Holiday => quiet,
            };
            let hour = ls as f64 / 3600.0;
            let diurnal = (1.0 + amplitude * (-((hour - peak) / 3.5).powi(2)).exp())
                / (1.0 + 0.5 * amplitude);
            let work = overhead
                + volume * spec.growth(d as i64) * activity * diurnal * src.gamma_unit(shape);
            if src.chance(0.01) {
                let failed = work * src.uniform(0.2, 0.9);
                jobs.push(Job::solo(start, failed));
                jobs.push(Job::solo(start + failed as i64 + src.int(60, 600), work));
            } else {
                jobs.push(Job::solo(start, work));
            }
            slot += cadence;
        }
    }
    Workload::new(jobs, spec.first_day, days)
}

/// List-schedules `works` on `threads` chains starting at `t`; returns the planned end.
fn schedule(
    src: &mut Src,
    jobs: &mut Vec<Job>,
    works: &[f64],
    threads: u32,
    t: i64,
    next_chain: &mut u32,
) -> i64 {
    let mut free: Vec<(i64, u32, bool)> = (0..threads)
        .map(|k| {
            *next_chain += 1;
            (t + k as i64 * src.int(1, 20), *next_chain, true)
        })
        .collect();
    for &w in works {
        let Some(slot) = free.iter_mut().min_by_key(|f| f.0) else {
            break;
        };
        let gap = if slot.2 { 0.0 } else { src.uniform(2.0, 15.0) };
        let start = slot.0 + gap as i64;
        jobs.push(Job {
            start,
            work: w as f32,
            gap: gap as f32,
            chain: slot.1,
            id: 0,
        });
        *slot = (start + w as i64, slot.1, false);
    }
    free.iter().map(|f| f.0).max().unwrap_or(t)
}

fn gen_transform(spec: &Spec, src: &mut Src, cal: &Calendar, days: usize) -> Workload {
    let threads = src.pick([(1u32, 0.3), (2, 0.3), (4, 0.4)]);
    let models = src.int(8, 40) as usize;
    let wall = src.uniform(1.5, 5.0) * 3600.0;
    let base = model_sizes(src, models, wall, threads);
    let start_sec = src.uniform(0.5, 6.0) * 3600.0;
    let quiet = src.uniform(0.5, 0.85);
    let shape = src.uniform(12.0, 30.0);
    let p_fail = src.uniform(0.02, 0.08);
    let mut jobs = Vec::new();
    let mut close_days = Vec::new();
    let mut chain = 0u32;
    for d in spec.first_day..days {
        let g = spec.growth(d as i64);
        // The batch processes the previous day's data.
        let volume = match cal.day_type(d as i64 - 1) {
            DayType::Work => 1.0,
            DayType::Lull => 0.85,
            DayType::Weekend | DayType::Holiday => quiet,
        };
        let mut t = d as i64 * DAY + start_sec as i64 + src.exponential(120.0) as i64;
        if src.chance(0.05) {
            t += src.exponential(1200.0) as i64; // an upstream source was late
        }
        let mut works: Vec<f64> = base
            .iter()
            .map(|&w| w * g * volume * src.gamma_unit(shape) + src.uniform(5.0, 20.0))
            .collect();
        if cal.month_end[d] {
            works.extend(month_end_close(src, &base, g));
            close_days.push(d);
        }
        let end = schedule(src, &mut jobs, &works, threads, t, &mut chain);
        if src.chance(p_fail) {
            schedule_rerun(src, &mut jobs, &works, threads, end, &mut chain);
        }
    }
    let mut wl = Workload::new(jobs, spec.first_day, days);
    wl.close_days = close_days;
    wl.batch_work = base.iter().sum();
    wl.threads = threads;
    wl
}

/// Seconds of work of each model of a transform's batch (at the original size, before growth): log-normal,
/// but no model longer than 40 % of the wall time (the critical path fits).
fn model_sizes(src: &mut Src, models: usize, wall: f64, threads: u32) -> Vec<f64> {
    let mut base: Vec<f64> = (0..models).map(|_| src.lognormal(1.0, 0.7)).collect();
    for _ in 0..4 {
        let total: f64 = base.iter().sum::<f64>().max(1e-9);
        for b in base.iter_mut() {
            *b = (*b * wall * threads as f64 / total).min(0.4 * wall);
        }
    }
    base
}

/// The models a month-end close appends to the night's batch: 60-100 % of the regular batch (`base` at growth
/// `g`) in 3-10 models.
fn month_end_close(src: &mut Src, base: &[f64], g: f64) -> Vec<f64> {
    // The close works on the month's data, not on yesterday's, so it does not shrink after a weekend.
    let regular: f64 = base.iter().sum::<f64>() * g;
    let extra = regular * src.uniform(0.6, 1.0);
    let n = src.int(3, 10) as usize;
    let weights: Vec<f64> = (0..n).map(|_| src.lognormal(1.0, 0.5)).collect();
    let sum: f64 = weights.iter().sum::<f64>().max(1e-9);
    weights.iter().map(|w| extra * w / sum).collect()
}

/// A failed batch (whose planned end is `end`): the failed model and about a quarter of the models after it
/// run again 15-90 minutes later.
fn schedule_rerun(
    src: &mut Src,
    jobs: &mut Vec<Job>,
    works: &[f64],
    threads: u32,
    end: i64,
    next_chain: &mut u32,
) {
    let failed = src.int(0, works.len() as i64 - 1) as usize;
    let rerun: Vec<f64> = works[failed..]
        .iter()
        .enumerate()
        .filter_map(|(i, &w)| (i == 0 || src.chance(0.25)).then_some(w))
        .collect();
    let delay = src.uniform(900.0, 5400.0) as i64;
    schedule(src, jobs, &rerun, threads, end + delay, next_chain);
}

fn add_presence(diff: &mut [i32], a: f64, b: f64) {
    let a = (a.round() as i64).clamp(0, 1440) as usize;
    let b = (b.round() as i64).clamp(0, 1440) as usize;
    if b > a {
        diff[a] += 1;
        diff[b] -= 1;
    }
}

/// Clusters an administrator provisions for a peak concurrency: what the peak needs plus 0..=`spare`.
fn provision(src: &mut Src, peak_concurrency: f64, spare: i64, lo: u32, hi: u32) -> u32 {
    let c = peak_concurrency.max(0.0);
    let need = ((c + 1.5 * c.sqrt()) / SLOTS).ceil().max(1.0) as u32;
    (need + src.int(0, spare) as u32).clamp(lo, hi)
}

/// An office's BI habits: who comes in, how hard they query, and the dashboard extracts.
struct OfficeHabits {
    headcount: f64,
    attend: f64,
    /// Queries a minute of each active user.
    rate: f64,
    /// Mean and second moment of a query's duration (seconds; log-normal).
    es: f64,
    es2: f64,
    extracts: i64,
    extract_med: f64,
    /// Extracts also run at noon.
    noon: bool,
}

impl OfficeHabits {
    fn draw(src: &mut Src) -> Self {
        let headcount = src.lognormal(45.0, 0.6).clamp(8.0, 300.0);
        let attend = src.uniform(0.75, 0.9);
        let rate = src.uniform(0.5, 2.0);
        let s_med = src.uniform(2.0, 8.0);
        let s_sigma: f64 = 1.0;
        let es = s_med * (s_sigma * s_sigma / 2.0).exp();
        let es2 = s_med * s_med * (2.0 * s_sigma * s_sigma).exp();
        let extracts = src.int(2, 8);
        let extract_med = src.lognormal(240.0, 0.4);
        let noon = src.chance(0.4);
        Self {
            headcount,
            attend,
            rate,
            es,
            es2,
            extracts,
            extract_med,
            noon,
        }
    }

    /// Marks in `diff` (a difference array over the local minutes of the day) when each of `heads` people who
    /// show up on a day of type `dt` (with probability `p`) is present.
    fn presence(&self, src: &mut Src, diff: &mut [i32], dt: DayType, p: f64, heads: usize) {
        for _ in 0..heads {
            if !src.chance(p) {
                continue;
            }
            if matches!(dt, DayType::Work | DayType::Lull) {
                let arrive = (525.0 + 45.0 * src.gauss()).clamp(360.0, 720.0);
                let leave = (1035.0 + 60.0 * src.gauss()).clamp(arrive + 60.0, 1380.0);
                if src.chance(0.6) {
                    let lunch = 725.0 + 20.0 * src.gauss();
                    let back = lunch + src.uniform(25.0, 60.0);
                    add_presence(diff, arrive, lunch.max(arrive));
                    add_presence(diff, back.min(leave), leave);
                } else {
                    add_presence(diff, arrive, leave);
                }
            } else {
                let arrive = src.uniform(540.0, 1200.0);
                add_presence(diff, arrive, arrive + src.lognormal(45.0, 0.6));
            }
        }
    }

    /// Adds the query load of the people present on local day `li` (UTC offset `o` minutes) to the UTC minutes
    /// of `light` within `utc_minutes`.
    fn add_query_load(
        &self,
        src: &mut Src,
        light: &mut [f32],
        diff: &[i32],
        li: i64,
        o: i64,
        utc_minutes: std::ops::Range<i64>,
    ) {
        let mut active = 0i32;
        for (m, &delta) in diff.iter().take(1440).enumerate() {
            active += delta;
            if active <= 0 {
                continue;
            }
            let utc = li * 1440 + m as i64 - o;
            let c = minute_load(src, active as f64 * self.rate, self.es, self.es2);
            if c > 0.0 && utc >= utc_minutes.start && utc < utc_minutes.end {
                light[utc as usize] += c as f32;
            }
        }
    }

    /// Queues the dashboard extracts of local day `li` (growth `g`) starting around `local_sec`.
    fn refresh(
        &self,
        src: &mut Src,
        jobs: &mut Vec<Job>,
        off: &[i32],
        li: i64,
        g: f64,
        local_sec: i64,
    ) {
        let t = utc_of(off, li, local_sec + src.int(0, 600));
        for k in 0..self.extracts {
            jobs.push(Job::solo(
                t + k * src.int(1, 30),
                src.lognormal(self.extract_med, 0.5) * g,
            ));
        }
    }
}

fn gen_bi(spec: &mut Spec, src: &mut Src, cal: &Calendar, off: &[i32], days: usize) -> Workload {
    let office = OfficeHabits::draw(src);
    spec.max_clusters = provision(
        src,
        office.headcount * office.attend * 0.9 * office.rate * office.es / 60.0,
        1,
        2,
        6,
    );
    let mut light = vec![0f32; days * 1440];
    let mut jobs = Vec::new();
    let mut diff = vec![0i32; 1441];
    let lo = spec.first_day as i64 * 1440;
    let hi = days as i64 * 1440;
    for li in spec.first_day as i64..=days as i64 {
        let dt = cal.day_type(li);
        let g = spec.growth(li);
        let p = match dt {
            DayType::Work => office.attend,
            DayType::Lull => office.attend * 0.5,
            DayType::Weekend | DayType::Holiday => 0.03,
        };
        diff.fill(0);
        let heads = (office.headcount * g).round() as usize;
        office.presence(src, &mut diff, dt, p, heads);
        let o = offset_min(off, li.max(0) as usize);
        office.add_query_load(src, &mut light, &diff, li, o, lo..hi);
        if dt == DayType::Work {
            office.refresh(src, &mut jobs, off, li, g, 6 * 3600);
            if office.noon {
                office.refresh(src, &mut jobs, off, li, g, 12 * 3600);
            }
        }
    }
    let mut wl = Workload::new(jobs, spec.first_day, days);
    wl.light = light;
    wl
}

fn gen_app(spec: &mut Spec, src: &mut Src, cal: &Calendar, off: &[i32], days: usize) -> Workload {
    let peak = src.lognormal(300.0, 0.7).clamp(30.0, 3000.0);
    let trough = src.uniform(0.15, 0.4);
    let peak_hour = src.uniform(13.0, 20.0);
    let weekend = src.uniform(0.6, 1.1);
    let holiday = src.uniform(0.7, 0.95);
    let s_med = src.uniform(0.2, 1.5);
    let s_sigma: f64 = 0.8;
    let es = s_med * (s_sigma * s_sigma / 2.0).exp();
    let es2 = s_med * s_med * (2.0 * s_sigma * s_sigma).exp();
    let ou_sigma = src.uniform(0.1, 0.25);
    let phi = (-5.0f64 / 180.0).exp();
    let step = ou_sigma * (1.0 - phi * phi).sqrt();
    let health = src.uniform(2.0, 6.0);
    spec.max_clusters = provision(src, peak * es / 60.0 * 1.2, 2, 3, 8).max(spec.min_clusters + 1);
    let cycle: Vec<f64> = (0..1440)
        .map(|m| {
            let x = (2.0 * std::f64::consts::PI * (m as f64 / 60.0 - peak_hour) / 24.0).cos();
            trough + (1.0 - trough) * ((1.0 + x) / 2.0).powf(1.5)
        })
        .collect();
    let mut light = vec![0f32; days * 1440];
    let mut x = ou_sigma * src.gauss();
    let mut intensity = x.exp();
    for d in spec.first_day..days {
        let g = spec.growth(d as i64);
        let o = offset_min(off, d);
        for mm in 0..1440i64 {
            let m = d as i64 * 1440 + mm;
            if mm % 5 == 0 {
                x = phi * x + step * src.gauss();
                intensity = x.exp();
            }
            let lm = m + o;
            let level = match cal.day_type(lm.div_euclid(1440)) {
                DayType::Weekend => weekend,
                DayType::Holiday => holiday,
                DayType::Work | DayType::Lull => 1.0,
            };
            let lambda =
                peak * cycle[lm.rem_euclid(1440) as usize] * level * g * intensity + health;
            light[m as usize] = minute_load(src, lambda, es, es2) as f32;
        }
    }
    let mut wl = Workload::new(Vec::new(), spec.first_day, days);
    wl.light = light;
    wl
}

struct SessionParams {
    people: i64,
    p_work: f64,
    p_off: f64,
    /// Chance a further session follows (1 + geometric sessions a day).
    more: f64,
    len_median: f64,
    len_sigma: f64,
    len_max: f64,
    start_hours: (f64, f64),
    query_median: f64,
    query_sigma: f64,
    query_max: f64,
    gap_mean: f64,
    pause_p: f64,
    pause_median: f64,
}

fn gen_sessions(
    spec: &Spec,
    src: &mut Src,
    cal: &Calendar,
    off: &[i32],
    days: usize,
    p: &SessionParams,
) -> Workload {
    let mut jobs = Vec::new();
    let mut chain = 0u32;
    for li in spec.first_day as i64..=days as i64 {
        let base = match cal.day_type(li) {
            DayType::Work => p.p_work,
            DayType::Lull => p.p_work * 0.4,
            DayType::Weekend | DayType::Holiday => p.p_off,
        };
        let prob = (base * spec.growth(li)).min(0.6);
        for _ in 0..p.people {
            if !src.chance(prob) {
                continue;
            }
            let sessions = 1 + src.geometric(1.0 - p.more);
            for _ in 0..sessions {
                let local = src.uniform(p.start_hours.0, p.start_hours.1) * 3600.0;
                let len = src
                    .lognormal(p.len_median, p.len_sigma)
                    .clamp(180.0, p.len_max);
                chain += 1;
                let mut t = utc_of(off, li, local as i64);
                let end = t + len as i64;
                let mut gap = 0.0;
                while t < end {
                    let q = src
                        .lognormal(p.query_median, p.query_sigma)
                        .clamp(0.2, p.query_max);
                    jobs.push(Job {
                        start: t,
                        work: q as f32,
                        gap: gap as f32,
                        chain,
                        id: 0,
                    });
                    gap = if src.chance(p.pause_p) {
                        src.lognormal(p.pause_median, 0.8)
                    } else {
                        src.exponential(p.gap_mean)
                    };
                    t += (q + gap) as i64 + 1;
                }
            }
        }
    }
    Workload::new(jobs, spec.first_day, days)
}

fn gen_workload(
    spec: &mut Spec,
    src: &mut Src,
    cal: &Calendar,
    off: &[i32],
    days: usize,
) -> Workload {
    match spec.arch {
        Archetype::HourlyLoader => gen_loader(spec, src, cal, off, days),
        Archetype::NightlyTransform => gen_transform(spec, src, cal, days),
        Archetype::OfficeBi => gen_bi(spec, src, cal, off, days),
        Archetype::AppServing => gen_app(spec, src, cal, off, days),
        Archetype::Dev => {
            let p = SessionParams {
                people: src.int(2, 10),
                p_work: src.uniform(0.03, 0.10),
                p_off: 0.004,
                more: 0.45,
                len_median: 1500.0,
                len_sigma: 1.0,
                len_max: 10.0 * 3600.0,
                start_hours: (9.0, 18.0),
                query_median: 5.0,
                query_sigma: 1.5,
                query_max: 7200.0,
                gap_mean: src.uniform(60.0, 180.0),
                pause_p: 0.12,
                pause_median: 600.0,
            };
            gen_sessions(spec, src, cal, off, days, &p)
        }
        Archetype::DataScience => {
            let p = SessionParams {
                people: src.int(1, 4),
                p_work: src.uniform(0.04, 0.12),
                p_off: 0.005,
                more: 0.3,
                len_median: 9000.0,
                len_sigma: 0.6,
                len_max: 12.0 * 3600.0,
                start_hours: (9.0, 16.0),
                query_median: 60.0,
                query_sigma: 1.3,
                query_max: 3.0 * 3600.0,
                gap_mean: src.uniform(120.0, 480.0),
                pause_p: 0.1,
                pause_median: 1200.0,
            };
            gen_sessions(spec, src, cal, off, days, &p)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Billing.

/// What incidents changed, on top of the workload.
#[derive(Clone)]
struct Plan {
    /// Credits per hour of one cluster, by day (resizes take effect at 00:00 UTC).
    size: Vec<f64>,
    /// Share of the day's work that still happens (outages), by day.
    keep: Vec<f32>,
    /// Backfill jobs, sorted by start.
    extra: Vec<Job>,
    /// Seconds during which the warehouse does not suspend (auto-suspend disabled).
    alive: Vec<(i64, i64)>,
    /// Minutes in which concurrency exceeds every cluster (storms).
    storm: Vec<(i64, i64)>,
}

impl Plan {
    fn new(spec: &Spec, days: usize) -> Self {
        Self {
            size: vec![spec.base_size; days],
            keep: vec![1.0; days],
            extra: Vec::new(),
            alive: Vec::new(),
            storm: Vec::new(),
        }
    }

    fn day_of(&self, t: i64) -> usize {
        t.div_euclid(DAY).clamp(0, self.size.len() as i64 - 1) as usize
    }

    /// Duration factor of the work of `day` (Amdahl).
    fn shrink(&self, spec: &Spec, day: usize) -> f64 {
        spec.serial + (1.0 - spec.serial) * spec.base_size / self.size[day]
    }
}

const LIGHT_SALT: u64 = 0x5bd1_e995;
const OFFSET_SALT: u64 = 0x27d4_eb2f;

#[allow(clippy::too_many_arguments)]
fn run_jobs(
    list: &[Job],
    thin: bool,
    t0: i64,
    t1: i64,
    spec: &Spec,
    plan: &Plan,
    salt: u64,
    chains: &mut HashMap<u32, i64>,
    out: &mut Vec<(i64, i64)>,
) {
    let from = list.partition_point(|j| j.start < t0 - LOOKBACK);
    for j in &list[from..] {
        if j.start >= t1 {
            break;
        }
        let day = plan.day_of(j.start);
        if thin {
            let keep = plan.keep[day];
            if keep < 1.0 && unit_hash(salt, j.id as u64) >= keep as f64 {
                continue;
            }
        }
        let s = match chains.get(&j.chain) {
            Some(&end) if j.chain != 0 => end + j.gap as i64,
            _ => j.start,
        };
        let e = s + (j.work as f64 * plan.shrink(spec, day)).round().max(1.0) as i64;
        if j.chain != 0 {
            chains.insert(j.chain, e);
        }
        if e > t0 && s < t1 {
            out.push((s.max(t0), e.min(t1)));
        }
    }
}

/// Whether the light queries of minute `m` still happen on a day where only `keep` of the work happens.
fn light_kept(keep: f32, salt: u64, m: usize) -> bool {
    keep >= 1.0 || unit_hash(salt ^ LIGHT_SALT, m as u64) < keep as f64
}

/// Adds `rate(hour) * seconds / 3600` for [s, e) to the hour buckets starting at t0.
fn add_span(hours: &mut [f64], t0: i64, s: i64, e: i64, rate: impl Fn(usize) -> f64) {
    let mut t = s;
    while t < e {
        let h = ((t - t0) / 3600) as usize;
        if h >= hours.len() {
            break;
        }
        let seg = e.min(t0 + (h as i64 + 1) * 3600);
        hours[h] += (seg - t) as f64 / 3600.0 * rate(h);
        t = seg;
    }
}

/// Compute credits per hour for days [d0, d1) (the warehouse is taken to be suspended at d0 00:00).
fn bill(spec: &Spec, wl: &Workload, plan: &Plan, d0: usize, d1: usize, salt: u64) -> Vec<f64> {
    let d1 = d1.min(plan.size.len());
    if d0 >= d1 {
        return Vec::new();
    }
    let b = Billing {
        spec,
        wl,
        plan,
        salt,
        d0,
        d1,
        t0: d0 as i64 * DAY,
        t1: d1 as i64 * DAY,
        nm: (d1 - d0) * 1440,
    };
    let mut hours = vec![0.0f64; (d1 - d0) * 24];
    let multi = spec.max_clusters > spec.min_clusters;
    // Concurrency per minute of the window, for the scaling decision of multi-cluster warehouses.
    let mut conc = if multi { vec![0f32; b.nm] } else { Vec::new() };

    let runs = b.job_runs();
    let busy = b.busy_spans(&runs, multi.then_some(&mut conc[..]));
    let sessions = b.first_cluster_sessions(&busy);
    let base_rate = |h: usize| plan.size[d0 + h / 24] * spec.min_clusters as f64;
    for &(s, e) in &sessions {
        add_span(&mut hours, b.t0, s, e, base_rate);
    }

    if multi {
        b.add_run_and_storm_concurrency(&runs, &mut conc);
        b.bill_extra_clusters(&conc, &sessions, &mut hours);
    }
    hours
}

/// One billing of the days [d0, d1) (seconds [t0, t1), `nm` minutes) of a warehouse under a plan.
struct Billing<'a> {
    spec: &'a Spec,
    wl: &'a Workload,
    plan: &'a Plan,
    salt: u64,
    d0: usize,
    d1: usize,
    t0: i64,
    t1: i64,
    nm: usize,
}

impl Billing<'_> {
    /// When the jobs of the workload and the plan's extra jobs run within the window.
    fn job_runs(&self) -> Vec<(i64, i64)> {
        let (spec, plan, salt) = (self.spec, self.plan, self.salt);
        let mut runs = Vec::new();
        let mut chains = HashMap::new();
        run_jobs(
            &self.wl.jobs,
            true,
            self.t0,
            self.t1,
            spec,
            plan,
            salt,
            &mut chains,
            &mut runs,
        );
        run_jobs(
            &plan.extra,
            false,
            self.t0,
            self.t1,
            spec,
            plan,
            salt,
            &mut chains,
            &mut runs,
        );
        runs
    }

    /// Everything that keeps the warehouse awake, sorted: short queries, disabled auto-suspend, storms and job
    /// runs. Adds the short queries' concurrency to `conc` (multi-cluster warehouses only).
    fn busy_spans(&self, runs: &[(i64, i64)], conc: Option<&mut [f32]>) -> Vec<(i64, i64)> {
        let (t0, t1) = (self.t0, self.t1);
        let mut busy: Vec<(i64, i64)> = Vec::with_capacity(runs.len() + 64);
        self.add_light_spans(&mut busy, conc);
        let storm_secs = self.plan.storm.iter().map(|&(a, b)| (a * 60, b * 60));
        for (s, e) in self.plan.alive.iter().copied().chain(storm_secs) {
            if e > t0 && s < t1 {
                busy.push((s.max(t0), e.min(t1)));
            }
        }
        busy.extend_from_slice(runs);
        busy.sort_unstable();
        busy
    }

    /// Short queries: each minute with arrivals is busy for its query-seconds at a hashed offset; runs closer
    /// than `auto_suspend` are merged on the way (the session pass would merge them anyway).
    fn add_light_spans(&self, busy: &mut Vec<(i64, i64)>, mut conc: Option<&mut [f32]>) {
        let (spec, wl, plan, salt, d0) = (self.spec, self.wl, self.plan, self.salt, self.d0);
        let mut cur: Option<(i64, i64)> = None;
        for day in d0..self.d1 {
            let from = day * 1440;
            if from >= wl.light.len() {
                break;
            }
            let keep = plan.keep[day];
            let shrink = plan.shrink(spec, day) as f32;
            let slice = &wl.light[from..(from + 1440).min(wl.light.len())];
            for (k, &c) in slice.iter().enumerate() {
                if c <= 0.0 {
                    continue;
                }
                let m = from + k;
                if !light_kept(keep, salt, m) {
                    continue;
                }
                if let Some(conc) = conc.as_deref_mut() {
                    conc[m - d0 * 1440] += c * shrink;
                }
                let secs = (c as f64 * 60.0).clamp(1.0, 60.0) as i64;
                let jitter = (splitmix(salt ^ OFFSET_SALT ^ m as u64) >> 58) as i64; // 0..63
                let s = m as i64 * 60 + jitter * (60 - secs) / 64;
                let e = s + secs;
                cur = match cur {
                    Some((cs, ce)) if s <= ce + spec.auto_suspend => Some((cs, ce.max(e))),
                    Some(iv) => {
                        busy.push(iv);
                        Some((s, e))
                    }
                    None => Some((s, e)),
                };
            }
        }
        busy.extend(cur);
    }

    /// Sessions of the first cluster(s): resume on work, suspend `auto_suspend` after it, 60 s minimum.
    fn first_cluster_sessions(&self, busy: &[(i64, i64)]) -> Vec<(i64, i64)> {
        let (a, t1) = (self.spec.auto_suspend, self.t1);
        let mut sessions: Vec<(i64, i64)> = Vec::new();
        let mut it = busy.iter().copied();
        if let Some((mut cs, mut ce)) = it.next() {
            for (s, e) in it {
                if s <= ce + a {
                    ce = ce.max(e);
                } else {
                    sessions.push((cs, (ce + a).max(cs + 60).min(t1)));
                    cs = s;
                    ce = e;
                }
            }
            sessions.push((cs, (ce + a).max(cs + 60).min(t1)));
        }
        sessions
    }

    /// Adds the job runs' concurrency per minute, and the storms' flood, to `conc`.
    fn add_run_and_storm_concurrency(&self, runs: &[(i64, i64)], conc: &mut [f32]) {
        let (t0, nm) = (self.t0, self.nm);
        for &(s, e) in runs {
            let mut t = s;
            while t < e {
                let i = ((t - t0) / 60) as usize;
                if i >= nm {
                    break;
                }
                let seg = e.min(t0 + (i as i64 + 1) * 60);
                conc[i] += (seg - t) as f32 / 60.0;
                t = seg;
            }
        }
        let flood = (SLOTS * self.spec.max_clusters as f64) as f32;
        for &(ms, me) in &self.plan.storm {
            let from = (ms - t0 / 60).clamp(0, nm as i64) as usize;
            let to = (me - t0 / 60).clamp(0, nm as i64) as usize;
            for c in &mut conc[from..to] {
                *c += flood;
            }
        }
    }

    /// Bills the clusters beyond `min_clusters` per minute, from the concurrency per minute.
    fn bill_extra_clusters(&self, conc: &[f32], sessions: &[(i64, i64)], hours: &mut [f64]) {
        let (spec, t0, d0) = (self.spec, self.t0, self.d0);
        // Cluster k runs while the warehouse runs and k clusters were needed in this or the previous
        // SCALE_DOWN_MINUTES minutes, so the running count is the recent maximum of the need.
        let (lo, hi) = (spec.min_clusters as usize, spec.max_clusters as usize);
        let mut recent = [0usize; SCALE_DOWN_MINUTES as usize + 1];
        let mut sp = 0;
        for (i, &c) in conc.iter().enumerate() {
            let ms = t0 + i as i64 * 60;
            while sp < sessions.len() && sessions[sp].1 <= ms {
                sp += 1;
            }
            let running = sp < sessions.len() && sessions[sp].0 < ms + 60;
            let c = c as f64;
            let need = if c > 0.0 {
                (((c + 1.5 * c.sqrt()) / SLOTS).ceil() as usize).min(hi)
            } else {
                0
            };
            recent[i % recent.len()] = need;
            let on = recent.iter().copied().max().unwrap_or(0).saturating_sub(lo);
            if running && on > 0 {
                hours[i / 60] += on as f64 * self.plan.size[d0 + i / 1440] / 60.0;
            }
        }
    }
}

fn daily(hours: &[f64]) -> Vec<f64> {
    hours.chunks(24).map(|c| c.iter().sum()).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Incidents.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incident {
    Backfill,
    Runaway,
    ResizeLeft,
    ResizeTemp,
    Storm,
    Outage,
}

struct Candidate {
    plan: Plan,
    first: usize,
    /// Days [first, label_end) may be labelled.
    label_end: usize,
    kind: AnomalyKind,
    first_only: bool,
    reduces: bool,
}

fn kind_weights(arch: Archetype) -> [f64; 6] {
    // Backfill, Runaway, ResizeLeft, ResizeTemp, Storm, Outage.
    match arch {
        Archetype::HourlyLoader => [0.30, 0.20, 0.15, 0.15, 0.0, 0.20],
        Archetype::NightlyTransform => [0.30, 0.15, 0.15, 0.15, 0.0, 0.25],
        Archetype::OfficeBi => [0.20, 0.15, 0.15, 0.10, 0.25, 0.15],
        Archetype::Dev => [0.35, 0.35, 0.15, 0.15, 0.0, 0.0],
        Archetype::DataScience => [0.35, 0.30, 0.15, 0.20, 0.0, 0.0],
        Archetype::AppServing => [0.20, 0.0, 0.20, 0.15, 0.30, 0.15],
    }
}

fn next_business(cal: &Calendar, d: usize, days: usize) -> Option<usize> {
    (d..(d + 5).min(days)).find(|&i| cal.is_business(i))
}

/// One warehouse's fixed inputs to drawing and judging incidents.
struct IncidentPlanner<'a> {
    spec: &'a Spec,
    wl: &'a Workload,
    cal: &'a Calendar,
    off: &'a [i32],
    days: usize,
    salt: u64,
}

impl IncidentPlanner<'_> {
    /// Draws an incident starting around day `d` on top of `plan`; `None` when the drawn kind does not apply.
    fn draw_candidate(
        &self,
        src: &mut Src,
        plan: &Plan,
        d: usize,
        next_chain: &mut u32,
    ) -> Option<Candidate> {
        let spec = self.spec;
        let w = kind_weights(spec.arch);
        let multi = spec.max_clusters > spec.min_clusters;
        let incident = src.pick([
            (Incident::Backfill, w[0]),
            (Incident::Runaway, w[1]),
            (Incident::ResizeLeft, w[2]),
            (Incident::ResizeTemp, w[3]),
            (Incident::Storm, if multi { w[4] } else { 0.0 }),
            (Incident::Outage, w[5]),
        ]);
        let p = plan.clone();
        match incident {
            Incident::Runaway => self.runaway(src, p, d),
            Incident::ResizeLeft => self.resize_left(src, p, d),
            Incident::ResizeTemp => self.resize_temp(src, p, d),
            Incident::Backfill => self.backfill(src, p, d, next_chain),
            Incident::Storm => self.storm(src, p, d, multi),
            Incident::Outage => self.outage(src, p, d),
        }
    }

    /// A candidate raising spend on days [first, label_end) (cut at the end of the series).
    fn candidate(
        &self,
        plan: Plan,
        first: usize,
        label_end: usize,
        kind: AnomalyKind,
    ) -> Candidate {
        Candidate {
            plan,
            first,
            label_end: label_end.min(self.days),
            kind,
            first_only: false,
            reduces: false,
        }
    }

    /// Auto-suspend disabled for 1-3 whole days.
    fn runaway(&self, src: &mut Src, mut p: Plan, d: usize) -> Option<Candidate> {
        if self.spec.arch == Archetype::AppServing {
            return None;
        }
        let days = self.days;
        let k = src.pick([(1usize, 0.5), (2, 0.3), (3, 0.2)]);
        p.alive
            .push((d as i64 * DAY, ((d + k).min(days)) as i64 * DAY));
        Some(self.candidate(p, d, d + k, AnomalyKind::Runaway))
    }

    /// A resize left in place from the next business day on; labelled on its first day only.
    fn resize_left(&self, src: &mut Src, mut p: Plan, d: usize) -> Option<Candidate> {
        let spec = self.spec;
        let a = next_business(self.cal, d, self.days)?;
        let factor = src.pick([(2.0, 0.7), (4.0, 0.3)]);
        // Left-in-place resizes compound; a warehouse already at 4x its original size is not resized again.
        if p.size[a] >= 4.0 * spec.base_size {
            return None;
        }
        for s in &mut p.size[a..] {
            *s = (*s * factor).min(8.0 * spec.base_size).min(MAX_SIZE);
        }
        Some(Candidate {
            first_only: true,
            ..self.candidate(p, a, a + 1, AnomalyKind::Resize)
        })
    }

    /// A resize for 2-5 days from the next business day, then back.
    fn resize_temp(&self, src: &mut Src, mut p: Plan, d: usize) -> Option<Candidate> {
        let a = next_business(self.cal, d, self.days)?;
        let factor = src.pick([(2.0, 0.6), (4.0, 0.4)]);
        let k = src.int(2, 5) as usize;
        let b = (a + k).min(self.days);
        for s in &mut p.size[a..b] {
            *s = (*s * factor).min(MAX_SIZE);
        }
        Some(self.candidate(p, a, b, AnomalyKind::Resize))
    }

    /// A one-off backfill on one day or two; the day after is a candidate label too (it may spill over).
    fn backfill(
        &self,
        src: &mut Src,
        mut p: Plan,
        d: usize,
        next_chain: &mut u32,
    ) -> Option<Candidate> {
        let k = if src.chance(0.3) { 2 } else { 1 };
        for i in d..(d + k).min(self.days) {
            self.add_backfill_day(src, &mut p, i, next_chain);
        }
        p.extra.sort_by_key(|j| j.start);
        Some(self.candidate(p, d, d + k + 1, AnomalyKind::Spike))
    }

    /// Adds day `i`'s backfill to the plan's extra jobs: streams of chained chunks starting 09:00-15:00 local.
    fn add_backfill_day(&self, src: &mut Src, p: &mut Plan, i: usize, next_chain: &mut u32) {
        let spec = self.spec;
        let g = spec.growth(i as i64);
        let (hours, streams) = backfill_size(src, spec.arch, self.wl);
        let local = src.uniform(9.0, 15.0) * 3600.0;
        let start = i as i64 * DAY + (local as i64 - offset_min(self.off, i) * 60).rem_euclid(DAY);
        let shrink = p.shrink(spec, i);
        for s in 0..streams {
            *next_chain += 1;
            let chain = EXTRA_CHAIN_BASE + *next_chain;
            let mut t = start + s * src.int(0, 300);
            let mut left = hours * g * 3600.0 / streams as f64;
            let mut gap = 0.0;
            while left > 1.0 {
                let chunk = left.min(src.uniform(300.0, 2400.0));
                p.extra.push(Job {
                    start: t,
                    work: chunk as f32,
                    gap: gap as f32,
                    chain,
                    id: 0,
                });
                left -= chunk;
                gap = src.uniform(5.0, 30.0);
                t += (chunk * shrink + gap) as i64;
            }
        }
    }

    /// A concurrency storm over 15-22 hours of one day or 36-48 hours over two (multi-cluster warehouses).
    fn storm(&self, src: &mut Src, mut p: Plan, d: usize, multi: bool) -> Option<Candidate> {
        if !multi {
            return None;
        }
        let two = src.chance(0.35);
        let start_h = src.uniform(0.0, 6.0);
        let len_h = if two {
            src.uniform(36.0, 48.0 - start_h)
        } else {
            src.uniform(15.0, 22.0f64.min(24.0 - start_h))
        };
        let m0 = d as i64 * 1440 + (start_h * 60.0) as i64;
        let m1 = (m0 + (len_h * 60.0) as i64).min(self.days as i64 * 1440);
        p.storm.push((m0, m1));
        let k = if two { 2 } else { 1 };
        Some(self.candidate(p, d, d + k, AnomalyKind::ScaleOut))
    }

    /// An outage or pause of 1-4 days in which none or 1-10 % of the work happens.
    fn outage(&self, src: &mut Src, mut p: Plan, d: usize) -> Option<Candidate> {
        if matches!(self.spec.arch, Archetype::Dev | Archetype::DataScience) {
            return None;
        }
        let k = src.int(1, 4) as usize;
        let keep = if src.chance(0.5) {
            0.0
        } else {
            src.uniform(0.01, 0.1)
        };
        let b = (d + k).min(self.days);
        for x in &mut p.keep[d..b] {
            *x = keep as f32;
        }
        Some(Candidate {
            reduces: true,
            ..self.candidate(p, d, b, AnomalyKind::Drop)
        })
    }

    /// Draws up to three candidates for an incident starting on day `d`: the first that touches no month-end
    /// close and changes spend materially, with the days it changes.
    fn first_material(
        &self,
        src: &mut Src,
        plan: &Plan,
        flagged: &[bool],
        d: usize,
        next_chain: &mut u32,
    ) -> Option<(Candidate, Vec<usize>)> {
        for _ in 0..3 {
            let Some(c) = self.draw_candidate(src, plan, d, next_chain) else {
                continue;
            };
            if self
                .wl
                .close_days
                .iter()
                .any(|&x| x + 1 >= c.first && x <= c.label_end)
            {
                continue;
            }
            let hit = material_days(self.spec, self.wl, plan, &c, flagged, self.salt);
            if !hit.is_empty() {
                return Some((c, hit));
            }
        }
        None
    }
}

/// Hours of work (at the original size, before growth) of one day's backfill and the streams it runs in.
fn backfill_size(src: &mut Src, arch: Archetype, wl: &Workload) -> (f64, i64) {
    match arch {
        Archetype::HourlyLoader => (src.lognormal(3.0, 0.7).clamp(0.5, 16.0), 1),
        Archetype::NightlyTransform => (
            src.uniform(0.7, 1.8) * wl.batch_work / 3600.0,
            wl.threads.max(1) as i64,
        ),
        Archetype::OfficeBi => (src.lognormal(4.0, 0.6).clamp(1.0, 24.0), src.int(2, 4)),
        Archetype::Dev => (src.lognormal(3.0, 0.8).clamp(0.5, 16.0), 1),
        Archetype::DataScience => (src.lognormal(5.0, 0.6).clamp(1.0, 24.0), src.int(1, 2)),
        Archetype::AppServing => (src.lognormal(5.0, 0.6).clamp(1.0, 24.0), src.int(2, 3)),
    }
}

/// Bills the candidate against the current plan; returns the days it changes materially.
fn material_days(
    spec: &Spec,
    wl: &Workload,
    plan: &Plan,
    c: &Candidate,
    flagged: &[bool],
    salt: u64,
) -> Vec<usize> {
    let days = plan.size.len();
    let lo = c.first.saturating_sub(1).max(spec.first_day);
    let hi = (c.label_end + 1).min(days);
    let before = daily(&bill(spec, wl, plan, lo, hi, salt));
    let after = daily(&bill(spec, wl, &c.plan, lo, hi, salt));
    let u0 = c
        .first
        .saturating_sub(USUAL_WINDOW_DAYS)
        .max(spec.first_day);
    let history = daily(&bill(spec, wl, plan, u0, c.first, salt));
    let normal: Vec<f64> = history
        .iter()
        .enumerate()
        .filter(|(i, _)| !flagged[u0 + i])
        .map(|(_, &v)| v)
        .collect();
    let usual = if normal.is_empty() {
        0.0
    } else {
        normal.iter().sum::<f64>() / normal.len() as f64
    };
    let threshold = (MATERIAL_SHARE * usual).max(MATERIAL_CREDITS);
    let mut out = Vec::new();
    for day in c.first..c.label_end {
        let (b, a) = (before[day - lo], after[day - lo]);
        let change = if c.reduces { b - a } else { a - b };
        if change >= threshold {
            out.push(day);
        }
        if c.first_only {
            break;
        }
    }
    out
}

fn plan_incidents(
    cfg: &BillingConfig,
    spec: &Spec,
    wl: &Workload,
    cal: &Calendar,
    off: &[i32],
    src: &mut Src,
    salt: u64,
) -> (Plan, Vec<(usize, AnomalyKind)>) {
    let days = cfg.days;
    let planner = IncidentPlanner {
        spec,
        wl,
        cal,
        off,
        days,
        salt,
    };
    let mut plan = Plan::new(spec, days);
    let mut labels = Vec::new();
    let mut flagged = vec![false; days];
    let warm = spec.first_day + WARMUP_DAYS;
    for &d in &wl.close_days {
        flagged[d] = true;
        if d >= warm {
            labels.push((d, AnomalyKind::Expected));
        }
    }
    let mut next_chain = 0u32;
    let mut d = warm;
    while d < days && cfg.incident_rate > 0.0 {
        if !src.chance(cfg.incident_rate) {
            d += 1;
            continue;
        }
        match planner.first_material(src, &plan, &flagged, d, &mut next_chain) {
            Some((c, hit)) => {
                for &day in &labelled_days(&c, hit) {
                    flagged[day] = true;
                    labels.push((day, c.kind));
                }
                d = c.label_end.max(c.first + 1) + MIN_GAP_DAYS;
                plan = c.plan;
            }
            None => d += 1,
        }
    }
    labels.sort_by_key(|l| l.0);
    (plan, labels)
}

/// The days an accepted candidate labels, from the days it changes materially (`hit`).
fn labelled_days(c: &Candidate, mut hit: Vec<usize>) -> Vec<usize> {
    // A resize changes the warehouse from its first day on, and the hourly cap shows it even when
    // that day's work was light (a Monday after a quiet weekend): label the first day too.
    if c.kind == AnomalyKind::Resize && hit.first() != Some(&c.first) {
        hit.insert(0, c.first);
        if c.first_only {
            hit.truncate(1);
        }
    }
    hit
}

// ---------------------------------------------------------------------------------------------------------
// Assembly.

/// One simulated warehouse; `first_day`, `size` and `max_clusters` are kept for the tests' invariants.
#[cfg_attr(not(test), allow(dead_code))]
struct Sim {
    key: WarehouseKey,
    arch: Archetype,
    first_day: usize,
    /// Size per day, after resizes.
    size: Vec<f64>,
    max_clusters: u32,
    rows: Vec<MeteringRow>,
    labels: Vec<AnomalyLabel>,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn simulate_all(cfg: &BillingConfig) -> Vec<Sim> {
    if cfg.days == 0 || cfg.warehouses == 0 {
        return Vec::new();
    }
    let start = cfg
        .end
        .checked_sub_days(Days::new(cfg.days as u64 - 1))
        .unwrap_or(cfg.end);
    let cal = Calendar::new(start, cfg.days + 2);
    let n_accounts = cfg.accounts.max(1);
    let accts = accounts(n_accounts, &cal);
    (0..cfg.warehouses)
        .into_par_iter()
        .map(|w| simulate(cfg, &cal, &accts, w))
        .collect()
}

fn simulate(cfg: &BillingConfig, cal: &Calendar, accts: &[Account], w: usize) -> Sim {
    let days = cfg.days;
    let account = w % accts.len();
    let local = w / accts.len();
    let arch = PATTERN[(local + 5 * account) % PATTERN.len()];
    let key = WarehouseKey::new(
        accts[account].name.clone(),
        format!("{}_WH_{}", arch.prefix(), w + 1),
    );
    let off = &accts[account].offset;
    let seed = warehouse_key(cfg.seed, w);
    let salt = u64::from_le_bytes([
        seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7],
    ]);
    let mut work_src = Src::new(seed, 1);
    let mut incident_src = Src::new(seed, 2);
    let mut cloud_src = Src::new(seed, 3);

    let mut spec = draw_spec(&mut work_src, arch, days);
    let wl = gen_workload(&mut spec, &mut work_src, cal, off, days);
    let (plan, labelled) = plan_incidents(cfg, &spec, &wl, cal, off, &mut incident_src, salt);
    let hours = bill(&spec, &wl, &plan, spec.first_day, days, salt);
    let rows = metering_rows(&key, w, &spec, cal, &hours, &mut cloud_src);
    let labels = labelled
        .into_iter()
        .map(|(d, kind)| AnomalyLabel {
            key: key.clone(),
            date: cal.date(d),
            kind,
        })
        .collect();
    Sim {
        key,
        arch,
        first_day: spec.first_day,
        size: plan.size,
        max_clusters: spec.max_clusters,
        rows,
        labels,
    }
}

/// The metering rows of warehouse `w` from its billed compute per hour (from its first day on), with cloud
/// services drawn on top.
fn metering_rows(
    key: &WarehouseKey,
    w: usize,
    spec: &Spec,
    cal: &Calendar,
    hours: &[f64],
    cloud_src: &mut Src,
) -> Vec<MeteringRow> {
    let t_start = cal.start.and_time(NaiveTime::MIN).and_utc();
    let mut rows = Vec::with_capacity(hours.len() / 2);
    for (h, &c) in hours.iter().enumerate() {
        let compute = round3(c);
        if compute <= 0.0 {
            continue;
        }
        let jitter = (0.35 * cloud_src.gauss() - 0.06).exp().min(3.0);
        let cloud = round3(compute * spec.cloud_frac * jitter);
        let t = t_start + TimeDelta::hours((spec.first_day * 24 + h) as i64);
        rows.push(MeteringRow {
            account_name: key.account_name.clone(),
            warehouse_id: w as i64 + 1,
            warehouse_name: key.warehouse_name.clone(),
            service_type: "WAREHOUSE_METERING".into(),
            start_time: t,
            end_time: t + TimeDelta::hours(1),
            credits_used: round3(compute + cloud),
            credits_used_compute: compute,
            credits_used_cloud_services: cloud,
        });
    }
    rows
}

fn assemble(sims: Vec<Sim>) -> BillingData {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut archetypes = BTreeMap::new();
    for s in sims {
        archetypes.insert(s.key, s.arch);
        rows.extend(s.rows);
        labels.extend(s.labels);
    }
    labels.sort_by(|a, b| (&a.key, a.date).cmp(&(&b.key, b.date)));
    BillingData {
        rows,
        labels,
        archetypes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::OnceLock;

    fn default_sims() -> &'static [Sim] {
        static SIMS: OnceLock<Vec<Sim>> = OnceLock::new();
        SIMS.get_or_init(|| simulate_all(&BillingConfig::default()))
    }

    fn small() -> BillingConfig {
        BillingConfig {
            seed: 11,
            accounts: 2,
            warehouses: 12,
            days: 200,
            ..BillingConfig::default()
        }
    }

    fn start_of(cfg: &BillingConfig) -> NaiveDate {
        shift(cfg.end, -(cfg.days as i64 - 1))
    }

    #[test]
    fn deterministic_for_a_seed_and_thread_count() {
        let cfg = small();
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a, b);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool");
        let c = pool.install(|| generate(&cfg));
        assert_eq!(a, c);
        let d = generate(&BillingConfig { seed: 12, ..cfg });
        assert_ne!(a.rows, d.rows);
    }

    #[test]
    fn rows_are_well_formed() {
        let data = generate(&small());
        assert!(!data.rows.is_empty());
        for r in &data.rows {
            assert!(r.warehouse_id > 0);
            assert_eq!(r.service_type, "WAREHOUSE_METERING");
            assert_eq!(r.end_time - r.start_time, TimeDelta::hours(1));
            assert_eq!(r.start_time.timestamp() % 3600, 0);
            assert!(r.credits_used_compute > 0.0);
            assert!(
                (r.credits_used - round3(r.credits_used_compute + r.credits_used_cloud_services))
                    .abs()
                    < 1e-9
            );
            assert!(r.credits_used_cloud_services <= 0.5 * r.credits_used_compute + 0.001);
        }
        let sorted = data
            .labels
            .windows(2)
            .all(|w| (&w[0].key, w[0].date) < (&w[1].key, w[1].date));
        assert!(sorted, "labels sorted by (key, date) and unique");
    }

    #[test]
    fn no_hour_exceeds_size_times_max_clusters() {
        let start = start_of(&BillingConfig::default());
        for s in default_sims() {
            for r in &s.rows {
                let day = (r.start_time.date_naive() - start).num_days() as usize;
                let cap = s.size[day] * s.max_clusters as f64;
                assert!(
                    r.credits_used_compute <= cap + 1e-6,
                    "{} {}: {} > {cap}",
                    s.key,
                    r.start_time,
                    r.credits_used_compute
                );
            }
        }
    }

    #[test]
    fn every_archetype_appears_with_the_default_config() {
        let data = assemble(
            default_sims()
                .iter()
                .map(|s| Sim {
                    key: s.key.clone(),
                    arch: s.arch,
                    first_day: s.first_day,
                    size: Vec::new(),
                    max_clusters: s.max_clusters,
                    rows: Vec::new(),
                    labels: Vec::new(),
                })
                .collect(),
        );
        for a in Archetype::ALL {
            assert!(
                data.archetypes.values().any(|&x| x == a),
                "{} missing",
                a.as_str()
            );
        }
        assert!(
            data.archetypes
                .keys()
                .all(|k| k.warehouse_name.contains("_WH_"))
        );
    }

    #[test]
    fn month_end_labels_fall_on_last_business_days() {
        let cfg = BillingConfig::default();
        let start = start_of(&cfg);
        let cal = Calendar::new(start, cfg.days + 2);
        let mut per_key: HashMap<&WarehouseKey, usize> = HashMap::new();
        for s in default_sims() {
            for l in s.labels.iter().filter(|l| l.kind == AnomalyKind::Expected) {
                assert_eq!(s.arch, Archetype::NightlyTransform);
                let i = (l.date - start).num_days() as usize;
                assert!(
                    cal.is_business(i) && cal.month_end[i],
                    "{} {}",
                    s.key,
                    l.date
                );
                let mut next = shift(l.date, 1);
                while next.month() == l.date.month() {
                    let j = (next - start).num_days() as usize;
                    assert!(!cal.is_business(j));
                    next = shift(next, 1);
                }
                *per_key.entry(&s.key).or_default() += 1;
            }
            if s.arch == Archetype::NightlyTransform {
                // One per month after the warm-up.
                let months = (s.first_day + WARMUP_DAYS..cfg.days)
                    .filter(|&i| cal.month_end[i])
                    .count();
                assert_eq!(
                    per_key.get(&s.key).copied().unwrap_or(0),
                    months,
                    "{}",
                    s.key
                );
            }
        }
        assert!(!per_key.is_empty());
    }

    #[test]
    fn month_end_close_runs_longer() {
        let cfg = BillingConfig::default();
        let start = start_of(&cfg);
        for s in default_sims()
            .iter()
            .filter(|s| s.arch == Archetype::NightlyTransform)
        {
            let mut credits: HashMap<NaiveDate, f64> = HashMap::new();
            for r in &s.rows {
                *credits.entry(r.start_time.date_naive()).or_default() += r.credits_used_compute;
            }
            let close: Vec<f64> = s
                .labels
                .iter()
                .filter(|l| l.kind == AnomalyKind::Expected)
                .map(|l| credits.get(&l.date).copied().unwrap_or(0.0))
                .collect();
            let mut normal: Vec<f64> = (0..cfg.days)
                .map(|i| shift(start, i as i64))
                .filter(|d| !s.labels.iter().any(|l| l.date == *d))
                .filter_map(|d| credits.get(&d).copied())
                .collect();
            normal.sort_unstable_by(f64::total_cmp);
            let median = normal.get(normal.len() / 2).copied().unwrap_or(0.0);
            let close_mean = close.iter().sum::<f64>() / close.len().max(1) as f64;
            assert!(
                close_mean >= 1.3 * median,
                "{}: close {close_mean} vs usual {median}",
                s.key
            );
        }
    }

    #[test]
    fn runaway_days_have_24_active_hours() {
        let mut seen = 0;
        for s in default_sims() {
            let mut hours: HashMap<NaiveDate, usize> = HashMap::new();
            for r in &s.rows {
                *hours.entry(r.start_time.date_naive()).or_default() += 1;
            }
            for l in s.labels.iter().filter(|l| l.kind == AnomalyKind::Runaway) {
                assert_eq!(
                    hours.get(&l.date).copied(),
                    Some(24),
                    "{} {}",
                    s.key,
                    l.date
                );
                seen += 1;
            }
        }
        assert!(seen > 0, "the default config injects runaways");
    }

    #[test]
    fn labels_only_after_the_warm_up() {
        let start = start_of(&BillingConfig::default());
        for s in default_sims() {
            let first = shift(start, s.first_day as i64);
            for l in &s.labels {
                assert!(
                    (l.date - first).num_days() >= WARMUP_DAYS as i64,
                    "{} {}",
                    s.key,
                    l.date
                );
            }
        }
    }

    #[test]
    fn tiny_and_odd_configs_do_not_panic() {
        for (accounts, warehouses, days) in [
            (0, 1, 1),
            (1, 1, 30),
            (5, 2, 61),
            (2, 7, 100),
            (1, 6, 0),
            (3, 0, 10),
        ] {
            let cfg = BillingConfig {
                accounts,
                warehouses,
                days,
                ..BillingConfig::default()
            };
            let data = generate(&cfg);
            assert!(days > WARMUP_DAYS || data.labels.is_empty());
            assert_eq!(
                data.archetypes.len(),
                if days == 0 { 0 } else { warehouses }
            );
        }
        let rare = generate(&BillingConfig {
            warehouses: 6,
            days: 200,
            incident_rate: 1.0,
            ..BillingConfig::default()
        });
        let start = shift(BillingConfig::default().end, -199);
        assert!(rare.rows.iter().all(|r| r.start_time.date_naive() >= start));
    }

    #[test]
    fn no_incidents_at_rate_zero_and_workload_unchanged_by_incidents() {
        let cfg = small();
        let quiet = generate(&BillingConfig {
            incident_rate: 0.0,
            ..cfg.clone()
        });
        assert!(quiet.labels.iter().all(|l| l.kind == AnomalyKind::Expected));
        // Before any incident, spend is identical: incidents come from their own random stream.
        let noisy = generate(&cfg);
        let first_incident = noisy
            .labels
            .iter()
            .filter(|l| l.kind != AnomalyKind::Expected)
            .map(|l| l.date)
            .min();
        if let Some(first) = first_incident {
            let cut = |rows: &[MeteringRow]| -> Vec<(String, i64, f64)> {
                rows.iter()
                    .filter(|r| r.start_time.date_naive() < shift(first, -2))
                    .map(|r| {
                        (
                            r.warehouse_name.clone(),
                            r.start_time.timestamp(),
                            r.credits_used_compute,
                        )
                    })
                    .collect()
            };
            assert_eq!(cut(&quiet.rows), cut(&noisy.rows));
        }
    }
}
