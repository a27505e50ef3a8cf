//! The offline `backtest` / `synth` pair: evaluate a model on a metering CSV export without Snowflake, a
//! database or a configuration file.

use super::incidents::parse_date;
use super::print;
use anyhow::Context;
use chrono::NaiveDate;
use serde_json::json;
use snowpatrol_detect::AnomalyLabel;
use snowpatrol_detect::backtest::{
    BacktestConfig, BacktestReport, StartCheck, backtest as run_backtest,
};
use snowpatrol_detect::daily::{DailySeries, aggregate_daily, build_series};
use snowpatrol_detect::model::{ModelKind, TrainConfig};
use snowpatrol_detect::synthetic::{SyntheticConfig, generate};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BacktestArgs {
    /// Metering CSV export (WAREHOUSE_METERING_HISTORY columns; header names case-insensitive).
    #[arg(long, value_name = "FILE.csv")]
    pub input: PathBuf,
    /// First scored day; models train on the days before it (YYYY-MM-DD).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub start: NaiveDate,
    /// Where to write one row per scored warehouse-day.
    #[arg(long, value_name = "FLAGGED.csv")]
    pub output: PathBuf,
    /// Labelled anomalous days (account_name,warehouse_name,usage_date,kind): adds precision, recall and F1.
    #[arg(long, value_name = "LABELS.csv")]
    pub labels: Option<PathBuf>,
    /// default (the precise rule) or baseline (the original's Isolation Forest on residuals).
    #[arg(long, default_value = "default", value_parser = parse_model_kind)]
    pub model: ModelKind,
    /// Retrain every this many days, as a daily train job with drift gating roughly would.
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub retrain_every: usize,
    /// Score only this many days from --start (0 = to the end of the data).
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    pub score_days: usize,
    /// Seed of the baseline's Isolation Forest (results are reproducible per seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_model_kind(s: &str) -> Result<ModelKind, String> {
    s.parse::<ModelKind>().map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Directory for metering.csv and labels.csv (created if missing).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    #[arg(long, default_value_t = 12)]
    pub warehouses: usize,
    #[arg(long, default_value_t = 365)]
    pub days: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last generated day (YYYY-MM-DD); default: yesterday (UTC). Give it for byte-identical files.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub end: Option<NaiveDate>,
}

/// Columns of the backtest's FLAGGED.csv.
pub const FLAGGED_CSV_COLUMNS: [&str; 10] = [
    "account_name",
    "warehouse_name",
    "usage_date",
    "credits_used",
    "expected_credits",
    "excess_credits",
    "score",
    "threshold",
    "is_anomaly",
    "explanation",
];

/// The numbers `backtest` prints and returns as JSON.
#[derive(Debug, serde::Serialize)]
struct BacktestSummary {
    model: String,
    input: String,
    output: String,
    start: NaiveDate,
    end: Option<NaiveDate>,
    warehouses: usize,
    scored: usize,
    flagged: usize,
    incidents: usize,
    trainings: usize,
    seconds: f64,
    metrics: Option<snowpatrol_detect::backtest::Metrics>,
}

/// `snowpatrol backtest`: trains and scores as the daily jobs would, on a metering CSV export instead of
/// Snowflake; writes FLAGGED.csv and prints the summary (with precision and recall given labels).
pub fn backtest(args: &BacktestArgs, json: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if args.retrain_every == 0 {
        anyhow::bail!("--retrain-every must be at least 1 day");
    }
    // The sources crate's errors already name the file and line; its Io variant also repeats its cause as
    // `source()`, so the message is taken whole instead of walking the chain (which would print it twice).
    let rows = snowpatrol_sources::read_metering_csv(&args.input)
        .map_err(|e| anyhow::anyhow!("metering export {e}"))?;
    let labels = args
        .labels
        .as_deref()
        .map(|p| snowpatrol_sources::read_labels_csv(p).map_err(|e| anyhow::anyhow!("labels {e}")))
        .transpose()?;
    let series = build_series(&aggregate_daily(&rows), None);
    if series.is_empty() {
        anyhow::bail!(
            "{} holds no warehouse metering rows (pseudo warehouses such as CLOUD_SERVICES_ONLY are ignored)",
            args.input.display()
        );
    }
    check_start(args, &series)?;
    if let Some(labels) = &labels {
        warn_of_unknown_labels(&series, labels);
    }
    let report = run_backtest(&series, &backtest_config(args), labels.as_deref())
        .context("running the backtest")?;
    write_flagged_csv(&args.output, &report)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let summary = BacktestSummary {
        model: args.model.to_string(),
        input: args.input.display().to_string(),
        output: args.output.display().to_string(),
        start: args.start,
        end: report.days.iter().map(|d| d.score.day.date).max(),
        warehouses: series.len(),
        scored: report.scored,
        flagged: report.flagged,
        incidents: report.incidents,
        trainings: report.trainings,
        seconds: started.elapsed().as_secs_f64(),
        metrics: report.metrics.clone(),
    };
    print(json, &summary, || backtest_text(&summary))?;
    Ok(ExitCode::SUCCESS)
}

/// `--start` must leave days to score; one on or before the first data day only earns a warning.
fn check_start(args: &BacktestArgs, series: &[DailySeries]) -> anyhow::Result<()> {
    match snowpatrol_detect::backtest::check_start(series, args.start) {
        StartCheck::AfterLastDay { first, last } => anyhow::bail!(
            "--start {} is after the last day in {} ({last}): nothing to score (the data covers {first} .. {last})",
            args.start,
            args.input.display()
        ),
        StartCheck::OnOrBeforeFirstDay { first } => tracing::warn!(
            start = %args.start, %first,
            "--start is on or before the first data day: each warehouse is scored only once it has enough history to train"
        ),
        StartCheck::Inside | StartCheck::NoData => {}
    }
    Ok(())
}

/// Warns when labels name warehouses the metering export does not have.
fn warn_of_unknown_labels(series: &[DailySeries], labels: &[AnomalyLabel]) {
    let unknown = snowpatrol_detect::backtest::unknown_label_count(series, labels);
    if unknown > 0 {
        tracing::warn!(
            unknown,
            "labels name warehouses that are not in the metering export; they count as missed"
        );
    }
}

/// The backtest's model and retraining schedule, from the command line.
fn backtest_config(args: &BacktestArgs) -> BacktestConfig {
    let mut cfg = BacktestConfig::new(
        args.start,
        TrainConfig {
            kind: args.model,
            seed: args.seed,
            ..TrainConfig::default()
        },
    );
    cfg.retrain_every_days = args.retrain_every;
    cfg.score_days = args.score_days;
    cfg
}

/// Writes FLAGGED.csv: one row per scored warehouse-day ([`FLAGGED_CSV_COLUMNS`]).
fn write_flagged_csv(path: &Path, report: &BacktestReport) -> anyhow::Result<()> {
    snowpatrol_sources::write_atomically(path, |w| -> anyhow::Result<()> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record(FLAGGED_CSV_COLUMNS)?;
        for d in &report.days {
            let s = &d.score;
            out.write_record([
                d.key.account_name.as_str(),
                d.key.warehouse_name.as_str(),
                &s.day.date.to_string(),
                &s.day.actual_credits.to_string(),
                &s.day.expected_credits.to_string(),
                &s.day.excess_credits.to_string(),
                &s.day.score.to_string(),
                &s.day.threshold.to_string(),
                if s.is_anomaly { "true" } else { "false" },
                &s.day.explanation,
            ])?;
        }
        out.flush()?;
        Ok(())
    })
}

fn backtest_text(s: &BacktestSummary) -> String {
    let rate = 100.0 * s.flagged as f64 / s.scored.max(1) as f64;
    let mut out = format!(
        "backtest of the {} model on {} ({} warehouses), scoring {} .. {}\n\
         scored {} warehouse-days, flagged {} ({rate:.2} %) in {} incidents; {} trainings; {:.1} s\n",
        s.model,
        s.input,
        s.warehouses,
        s.start,
        s.end.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
        s.scored,
        s.flagged,
        s.incidents,
        s.trainings,
        s.seconds
    );
    match &s.metrics {
        Some(m) => {
            out.push_str(&format!(
                "day level: precision {:.3}  recall {:.3}  F1 {:.3} ({} of {} flagged days in a labelled window; {} of {} labelled days caught)\n\
                 incident level: recall {:.3} ({} of {} labelled incidents caught); {} of {} flagged incidents are false alarms, \
                 {:.2} per 100 warehouse-months\n",
                m.day_precision,
                m.day_recall,
                m.day_f1,
                m.flagged_days_in_windows,
                m.flagged_days,
                m.labelled_days_caught,
                m.labelled_days,
                m.incident_recall,
                m.caught_incidents,
                m.labelled_incidents,
                m.false_alarms,
                m.flagged_incidents,
                m.false_alarms_per_100_warehouse_months,
            ));
            if m.expected_occurrences > 0 {
                out.push_str(&format!(
                    "recurring patterns labelled expected: {} of {} flagged ({:.0} %)\n",
                    m.expected_flagged,
                    m.expected_occurrences,
                    100.0 * m.expected_flag_rate()
                ));
            }
            out.push_str("labelled incidents caught by kind:\n");
            for (kind, c) in &m.by_kind {
                out.push_str(&format!(
                    "  {:<9} {}/{}\n",
                    kind.as_str(),
                    c.flagged,
                    c.incidents
                ));
            }
        }
        None => out.push_str("no --labels: precision and recall need labelled days\n"),
    }
    out.push_str(&format!("flagged days: {}", s.output));
    out
}

pub fn synth(args: &SynthArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.warehouses == 0 || args.days == 0 {
        anyhow::bail!("--warehouses and --days must be at least 1");
    }
    let end = args
        .end
        .unwrap_or_else(|| chrono::Utc::now().date_naive() - chrono::Days::new(1));
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let data = generate(&SyntheticConfig {
        seed: args.seed,
        warehouses: args.warehouses,
        days: args.days,
        end,
        ..SyntheticConfig::default()
    });
    let metering = args.output.join("metering.csv");
    let labels = args.output.join("labels.csv");
    snowpatrol_sources::write_atomically(&metering, |w| -> anyhow::Result<()> {
        Ok(snowpatrol_sources::write_metering_csv(&data.rows, w)?)
    })
    .with_context(|| format!("writing {}", metering.display()))?;
    snowpatrol_sources::write_atomically(&labels, |w| -> anyhow::Result<()> {
        Ok(snowpatrol_sources::write_labels_csv(&data.labels, w)?)
    })
    .with_context(|| format!("writing {}", labels.display()))?;
    let first = end - chrono::Days::new(args.days as u64 - 1);
    let report = json!({
        "metering": metering.display().to_string(),
        "labels": labels.display().to_string(),
        "rows": data.rows.len(),
        "label_count": data.labels.len(),
        "warehouses": args.warehouses,
        "first_day": first,
        "end": end,
        "seed": args.seed,
    });
    print(json, &report, || {
        // A start that leaves ~90 days of history gives both models room to train.
        let suggested = (first + chrono::Days::new(90)).min(end);
        format!(
            "wrote {} hourly rows to {}\nwrote {} labelled anomalies to {}\ndays {first} .. {end}, seed {}\n\
             try: snowpatrol backtest --input {} --labels {} --start {suggested} --output flagged.csv",
            data.rows.len(),
            metering.display(),
            data.labels.len(),
            labels.display(),
            args.seed,
            metering.display(),
            labels.display(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
