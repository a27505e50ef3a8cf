//! Product commands on top of the engine CLI: the zero-setup demo, the operator views of the pipeline's tables
//! (`models`, `anomalies` = incidents and their days, `alerts`), incident feedback (`anomalies ack`), and the
//! offline `backtest` / `synth`
//! pair that evaluates a model on a CSV export without Snowflake, a database or a configuration file.

use crate::output::outln;
use anyhow::Context;
use chrono::NaiveDate;
use serde_json::json;
use snowpatrol_detect::backtest::{BacktestConfig, backtest};
use snowpatrol_detect::daily::{aggregate_daily, build_series};
use snowpatrol_detect::model::{ModelKind, TrainConfig};
use snowpatrol_detect::synthetic::{SyntheticConfig, generate};
use snowpatrol_engine::{
    CancellationToken, Engine, JobConfig, RunState, SchedulerSettings, resolve_jobs,
};
use snowpatrol_pipeline::PipelineStore;
use snowpatrol_pipeline::store::{
    AckReason as StoredAckReason, AnomalyRow, IncidentFilter, IncidentRow, IncidentStatus,
};
use snowpatrol_pipeline::{Pipeline, PipelineConfig, SourceConfig};
use snowpatrol_store::{Database, RunFilter};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the whole chain on an embedded SQLite database and synthetic data: the real daemon runs prep, which
/// emits the features event that triggers train, whose models event triggers predict.
pub async fn demo(json: bool) -> anyhow::Result<ExitCode> {
    // With --json the story is one JSON document on stdout at the end instead of text as it goes.
    macro_rules! say {
        ($($t:tt)*) => {
            if !json {
                outln!($($t)*);
            }
        };
    }
    let started = Instant::now();
    let dir =
        std::env::temp_dir().join(format!("snowpatrol-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = Database::open_sqlite_file(&dir.join("snowpatrol.db"))
        .await
        .context("opening the embedded database")?;
    snowpatrol_pipeline::migrate(&db)
        .await
        .context("migrating the embedded database")?;
    let end = chrono::NaiveDate::from_ymd_opt(2025, 6, 30).unwrap_or_default();
    let config = PipelineConfig {
        source: SourceConfig::Synthetic {
            seed: 42,
            warehouses: 12,
            days: 365,
            end: Some(end),
        },
        ..Default::default()
    };
    let pipeline =
        Pipeline::new(db.clone(), config, dir.clone()).context("building the pipeline")?;
    // The jobs' built-in schedules: train on the features dataset, predict on the models dataset.
    let jobs_cfg: BTreeMap<String, JobConfig> = BTreeMap::new();
    let settings = SchedulerSettings {
        poll_interval: Duration::from_millis(500),
        ..Default::default()
    };
    let jobs = resolve_jobs(&pipeline.registry(), &jobs_cfg, &settings)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = Arc::new(
        Engine::new(db.clone(), jobs, settings)?.with_failure_hook(pipeline.failure_hook()),
    );
    engine.register_jobs().await?;
    say!(
        "Snowpatrol demo: embedded SQLite at {}, 12 synthetic warehouses over 365 days\n",
        dir.display()
    );
    let stop = CancellationToken::new();
    let daemon = {
        let (e, s) = (engine.clone(), stop.clone());
        tokio::spawn(async move { e.run_daemon(s).await })
    };
    let outbox = tokio::spawn(pipeline.clone().outbox_sender_loop(stop.clone()));
    engine.trigger("prep", &[], "demo").await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let predict = loop {
        let runs = db
            .list_runs(&RunFilter {
                job_name: Some("predict".into()),
                state: None,
                limit: 1,
                ..Default::default()
            })
            .await?;
        if let Some(r) = runs.first().filter(|r| r.state.is_terminal()) {
            break r.clone();
        }
        let failed = db
            .list_runs(&RunFilter {
                job_name: None,
                state: Some(RunState::Failed),
                limit: 5,
                ..Default::default()
            })
            .await?;
        if !failed.is_empty() || Instant::now() > deadline {
            stop.cancel();
            let _ = daemon.await;
            let _ = outbox.await;
            anyhow::bail!(
                "the demo chain did not complete: {:?}",
                failed
                    .iter()
                    .map(|r| (&r.job_name, &r.error))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    daemon.await.context("daemon task")??;
    let _ = outbox.await;
    // What the sender had not done yet (queued in the last moments), bounded.
    pipeline
        .drain_outbox(Duration::from_secs(30))
        .await
        .context("delivering the demo's alerts")?;

    let (markdown, path) = pipeline
        .store
        .report_markdown(predict.run_id)
        .await?
        .unwrap_or_default();
    say!("{markdown}\n");
    say!("Report: {path}");
    let since = end - chrono::Days::new(7);
    let anomalies = pipeline.store.anomalies_since(since, None).await?;
    say!("\nAnomalies in the last 8 days ({}):", anomalies.len());
    for a in &anomalies {
        say!(
            "  {}.{} {}  actual {:.1}  expected {:.1}  excess {:.1}  (model v{}, run {})",
            a.account_name,
            a.warehouse_name,
            a.usage_date,
            a.actual_credits,
            a.expected_credits,
            a.excess_credits,
            a.model_version,
            a.run_id
        );
    }
    if let Some(labels) = pipeline.labels() {
        let truth: std::collections::BTreeSet<_> = labels
            .iter()
            .filter(|l| l.kind.is_cost_increase() && l.date >= since)
            .map(|l| (l.key.to_string(), l.date))
            .collect();
        say!(
            "  labelled cost incidents starting in that window: {}",
            truth.len()
        );
    }
    say!("\nRun history (oldest first):");
    let mut runs = db
        .list_runs(&RunFilter {
            job_name: None,
            state: None,
            limit: 50,
            ..Default::default()
        })
        .await?;
    runs.reverse();
    for r in &runs {
        let consumed = db.consumed_events(r.run_id).await?;
        let events: Vec<String> = consumed
            .iter()
            .map(|e| {
                format!(
                    "#{} {} from run {}",
                    e.event_id,
                    e.dataset_uri,
                    e.source_run_id.unwrap_or(0)
                )
            })
            .collect();
        let took = r
            .finished_at
            .zip(r.started_at)
            .map(|(f, s)| (f - s).num_milliseconds())
            .unwrap_or(0);
        say!(
            "  run {:>3} {:<8} {:<8} {:<7} {:>6} ms  consumed: {}",
            r.run_id,
            r.job_name,
            r.trigger_kind.as_str(),
            r.state.as_str(),
            took,
            if events.is_empty() {
                "-".into()
            } else {
                events.join(", ")
            }
        );
    }
    let alerts = pipeline.store.list_alerts(false, 100).await?;
    say!(
        "\nAlerts (no Slack token set, so written to files): {} under {}",
        alerts.len(),
        dir.join("alerts").display()
    );
    say!(
        "\nDone in {:.1} s. Everything above is in {}.",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    if json {
        let summary = serde_json::json!({
            "data_dir": dir.display().to_string(),
            "report": path,
            "predict_run_id": predict.run_id,
            "predict_state": predict.state,
            "anomalies": anomalies.iter().map(|a| serde_json::json!({
                "account_name": a.account_name,
                "warehouse_name": a.warehouse_name,
                "usage_date": a.usage_date,
                "actual_credits": a.actual_credits,
                "expected_credits": a.expected_credits,
                "excess_credits": a.excess_credits,
                "model_version": a.model_version,
                "run_id": a.run_id,
            })).collect::<Vec<_>>(),
            "runs": runs.iter().map(|r| serde_json::json!({
                "run_id": r.run_id,
                "job_name": r.job_name,
                "trigger_kind": r.trigger_kind,
                "state": r.state,
            })).collect::<Vec<_>>(),
            "alerts": alerts.len(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(if predict.state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_RUN_FAILED)
    })
}

// ---------------------------------------------------------------------------------------------------------
// Operator views of the pipeline's tables.
// ---------------------------------------------------------------------------------------------------------

/// `--format` of list commands that scripts consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Csv,
    Json,
}

#[derive(clap::Subcommand, Debug)]
pub enum AnomaliesCommand {
    /// Acknowledge an incident: it is never alerted again (also when it grows), and its days are marked too.
    Ack {
        /// Incident id (first column of `snowpatrol anomalies`); with --anomaly, an anomaly (day) id.
        id: i64,
        #[arg(long, value_enum)]
        reason: AckReason,
        /// ID is an anomaly id (first column of `snowpatrol anomalies --days`): acknowledge its incident.
        #[arg(long)]
        anomaly: bool,
    },
}

/// Why an operator dismissed an incident. A closed set, not free text, so the feedback can be counted later
/// (false-positive rate per model version) without cleaning up spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AckReason {
    /// The model was wrong: nothing unusual happened.
    #[value(name = "false_positive")]
    FalsePositive,
    /// Real extra spend, but announced beforehand (a backfill, a migration).
    #[value(name = "planned")]
    Planned,
    /// Real extra spend that is fine (month-end close, a known seasonal peak).
    #[value(name = "expected")]
    Expected,
}

impl AckReason {
    pub fn stored(self) -> StoredAckReason {
        match self {
            AckReason::FalsePositive => StoredAckReason::FalsePositive,
            AckReason::Planned => StoredAckReason::Planned,
            AckReason::Expected => StoredAckReason::Expected,
        }
    }
}

/// `--since`, `--start`, `--end`: clap shows this message with the flag name and the bad value.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("expected a date as YYYY-MM-DD ({e})"))
}

fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        outln!("{}", crate::output::json(value)?);
    } else {
        outln!("{}", text());
    }
    Ok(())
}

fn credits(x: f64) -> String {
    format!("{x:.2}")
}

pub async fn models(
    db: &Database,
    warehouse: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = PipelineStore::new(db.clone());
    let rows = store
        .list_models(warehouse.map(str::trim))
        .await
        .context("listing model versions")?;
    if let (true, Some(w)) = (rows.is_empty(), warehouse) {
        anyhow::bail!(
            "no model versions for warehouse `{w}` (give WAREHOUSE or ACCOUNT.WAREHOUSE as listed by `snowpatrol models`)"
        );
    }
    emit(json, &rows, || {
        if rows.is_empty() {
            return "no models yet: the train job registers one version per warehouse (`snowpatrol run train`)"
                .into();
        }
        crate::output::table(
            &[
                "account",
                "warehouse",
                "version",
                "kind",
                "aliases",
                "threshold",
                "training window",
                "run",
                "created",
            ],
            rows.iter()
                .map(|m| {
                    vec![
                        m.account_name.clone(),
                        m.warehouse_name.clone(),
                        m.version.to_string(),
                        m.model_kind.clone(),
                        m.aliases.clone(),
                        format!("{:.4}", m.threshold),
                        format!("{} .. {}", m.training_start, m.training_end),
                        m.training_run_id.map(|r| r.to_string()).unwrap_or_default(),
                        crate::output::time(Some(m.created_at)),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Columns of `anomalies --days --format csv`, stable for scripts (new columns are appended).
pub const ANOMALY_CSV_COLUMNS: [&str; 18] = [
    "anomaly_id",
    "account_name",
    "warehouse_name",
    "usage_date",
    "actual_credits",
    "expected_credits",
    "excess_credits",
    "score",
    "threshold",
    "model_version",
    "run_id",
    "incident_start",
    "detected_at",
    "acknowledged_at",
    "ack_reason",
    "explanation",
    "scored_at",
    "incident_id",
];

/// Columns of `anomalies --format csv` (incidents), stable for scripts.
pub const INCIDENT_CSV_COLUMNS: [&str; 16] = [
    "incident_id",
    "account_name",
    "warehouse_name",
    "start_day",
    "end_day",
    "days",
    "excess_credits",
    "excess_cost",
    "peak_score",
    "status",
    "ack_reason",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "created_at",
    "updated_at",
];

/// What `snowpatrol anomalies` lists.
#[derive(Clone, Debug)]
pub struct AnomaliesView {
    pub since: Option<NaiveDate>,
    pub warehouse: Option<String>,
    pub open: bool,
    pub days: bool,
    pub format: ListFormat,
}

fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

pub async fn anomalies(
    db: &Database,
    command: Option<AnomaliesCommand>,
    view: AnomaliesView,
    acknowledged_by: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = PipelineStore::new(db.clone());
    if let Some(AnomaliesCommand::Ack {
        id,
        reason,
        anomaly,
    }) = command
    {
        let incident_id = if anomaly {
            store
                .ack_anomaly(id, reason.stored(), Some(acknowledged_by))
                .await
                .with_context(|| format!("acknowledging the incident of anomaly {id}"))?
                .with_context(|| {
                    format!(
                        "no anomaly with id {id} (see the first column of `snowpatrol anomalies --days`)"
                    )
                })?
        } else {
            let found = store
                .ack_incident(id, reason.stored(), Some(acknowledged_by))
                .await
                .with_context(|| format!("acknowledging incident {id}"))?;
            if !found {
                anyhow::bail!(
                    "no incident with id {id} (see the first column of `snowpatrol anomalies`; \
                     an anomaly (day) id needs --anomaly)"
                );
            }
            id
        };
        let incident = store
            .incident(incident_id)
            .await
            .context("reading the incident")?
            .with_context(|| format!("incident {incident_id} vanished"))?;
        tracing::info!(
            incident_id,
            reason = reason.stored().as_str(),
            "incident acknowledged"
        );
        let mut out = json!({
            "incident_id": incident_id, "acknowledged": true, "reason": reason.stored().as_str(),
            "incident": incident,
        });
        if anomaly {
            out["anomaly_id"] = json!(id);
        }
        emit(json, &out, || {
            format!(
                "incident {incident_id} ({}.{}, {} .. {}, {} day(s)) acknowledged ({}); it will not be alerted again",
                incident.account_name,
                incident.warehouse_name,
                incident.start_day,
                incident.end_day,
                incident.days,
                reason.stored().as_str()
            )
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    // A warehouse nobody meters is a typo, not "no incidents": the same rule as `runs --job` and `models`.
    if let Some(w) = view.warehouse.as_deref().map(str::trim) {
        let known = store
            .warehouses(false)
            .await
            .context("listing warehouses")?;
        let matches =
            |k: &snowpatrol_detect::WarehouseKey| k.warehouse_name == w || k.to_string() == w;
        if !known.iter().any(matches) {
            anyhow::bail!(
                "no warehouse `{w}` in the metering data ({} warehouses; give WAREHOUSE or ACCOUNT.WAREHOUSE as \
                 listed by `snowpatrol models`)",
                known.len()
            );
        }
    }
    let since = view
        .since
        .unwrap_or_else(|| chrono::Utc::now().date_naive() - chrono::Days::new(30));
    let filter = IncidentFilter {
        since: Some(since),
        warehouse: view.warehouse.as_deref().map(|w| w.trim().to_string()),
        statuses: if view.open {
            vec![IncidentStatus::Open]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let format = if json { ListFormat::Json } else { view.format };
    let what = format!(
        "{}{} on or after {since}{}",
        if view.open { "open " } else { "" },
        if view.days {
            "anomalous days"
        } else {
            "incidents"
        },
        view.warehouse
            .as_deref()
            .map(|w| format!(" for warehouse `{w}`"))
            .unwrap_or_default()
    );
    if view.days {
        let rows = store
            .list_anomalies(&filter)
            .await
            .context("listing anomalies")?;
        print_days(&rows, format, &what)?;
    } else {
        let rows = store
            .list_incidents(&filter)
            .await
            .context("listing incidents")?;
        print_incidents(&rows, format, &what)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_incidents(rows: &[IncidentRow], format: ListFormat, what: &str) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => outln!("{}", crate::output::json(&rows)?),
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record(INCIDENT_CSV_COLUMNS)
                .map_err(crate::output::csv_error)?;
            for i in rows {
                w.write_record([
                    i.incident_id.to_string(),
                    i.account_name.clone(),
                    i.warehouse_name.clone(),
                    i.start_day.to_string(),
                    i.end_day.to_string(),
                    i.days.to_string(),
                    i.excess_credits.to_string(),
                    i.excess_cost.map(|c| c.to_string()).unwrap_or_default(),
                    i.peak_score.to_string(),
                    i.status.to_string(),
                    i.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
                    rfc3339(i.acknowledged_at),
                    i.acknowledged_by.clone().unwrap_or_default(),
                    rfc3339(i.resolved_at),
                    i.created_at.to_rfc3339(),
                    i.updated_at.to_rfc3339(),
                ])
                .map_err(crate::output::csv_error)?;
            }
            w.flush().map_err(crate::output::stdout_error)?;
        }
        ListFormat::Table if rows.is_empty() => outln!("no {what}"),
        ListFormat::Table => outln!(
            "{}",
            crate::output::table(
                &[
                    "id",
                    "account",
                    "warehouse",
                    "start",
                    "end",
                    "days",
                    "excess credits",
                    "cost",
                    "status",
                    "reason",
                ],
                rows.iter()
                    .map(|i| {
                        vec![
                            i.incident_id.to_string(),
                            i.account_name.clone(),
                            i.warehouse_name.clone(),
                            i.start_day.to_string(),
                            i.end_day.to_string(),
                            i.days.to_string(),
                            credits(i.excess_credits),
                            i.excess_cost.map(credits).unwrap_or_default(),
                            i.status.to_string(),
                            i.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect(),
            )
        ),
    }
    Ok(())
}

fn print_days(rows: &[AnomalyRow], format: ListFormat, what: &str) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => outln!("{}", crate::output::json(&rows)?),
        ListFormat::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record(ANOMALY_CSV_COLUMNS)
                .map_err(crate::output::csv_error)?;
            for a in rows {
                w.write_record([
                    a.anomaly_id.to_string(),
                    a.account_name.clone(),
                    a.warehouse_name.clone(),
                    a.usage_date.to_string(),
                    a.actual_credits.to_string(),
                    a.expected_credits.to_string(),
                    a.excess_credits.to_string(),
                    a.score.to_string(),
                    a.threshold.to_string(),
                    a.model_version.to_string(),
                    a.run_id.to_string(),
                    a.incident_start.to_string(),
                    a.detected_at.to_rfc3339(),
                    rfc3339(a.acknowledged_at),
                    a.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
                    a.explanation.clone(),
                    a.scored_at.to_rfc3339(),
                    a.incident_id.to_string(),
                ])
                .map_err(crate::output::csv_error)?;
            }
            w.flush().map_err(crate::output::stdout_error)?;
        }
        ListFormat::Table if rows.is_empty() => outln!("no {what}"),
        ListFormat::Table => outln!(
            "{}",
            crate::output::table(
                &[
                    "id",
                    "account",
                    "warehouse",
                    "date",
                    "actual",
                    "expected",
                    "excess",
                    "score",
                    "threshold",
                    "model",
                    "run",
                    "incident",
                    "ack",
                ],
                rows.iter()
                    .map(|a| {
                        vec![
                            a.anomaly_id.to_string(),
                            a.account_name.clone(),
                            a.warehouse_name.clone(),
                            a.usage_date.to_string(),
                            credits(a.actual_credits),
                            credits(a.expected_credits),
                            credits(a.excess_credits),
                            format!("{:.3}", a.score),
                            format!("{:.3}", a.threshold),
                            format!("v{}", a.model_version),
                            a.run_id.to_string(),
                            a.incident_id.to_string(),
                            a.ack_reason.map(|r| r.to_string()).unwrap_or_default(),
                        ]
                    })
                    .collect(),
            )
        ),
    }
    Ok(())
}

pub async fn alerts(
    db: &Database,
    pending: bool,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if limit < 1 {
        anyhow::bail!("--limit must be at least 1, got {limit}");
    }
    let store = PipelineStore::new(db.clone());
    let rows = store
        .list_alerts(pending, limit)
        .await
        .context("listing the alert outbox")?;
    emit(json, &rows, || {
        if rows.is_empty() {
            return if pending {
                "no alert is waiting to be delivered".into()
            } else {
                "the alert outbox is empty".into()
            };
        }
        crate::output::table(
            &[
                "id",
                "kind",
                "dedupe key",
                "channel",
                "state",
                "attempts",
                "next attempt",
                "last error",
                "sent",
            ],
            rows.iter()
                .map(|a| {
                    vec![
                        a.alert_id.to_string(),
                        a.kind.to_string(),
                        crate::output::short(Some(&a.dedupe_key), 50),
                        a.channel.clone(),
                        a.state.to_string(),
                        a.attempts.to_string(),
                        crate::output::time(a.next_attempt_at),
                        crate::output::short(a.last_error.as_deref(), 60),
                        crate::output::time(a.sent_at),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------------------
// Offline: backtest and synth.
// ---------------------------------------------------------------------------------------------------------

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

/// Writes through a sibling temporary file and renames it into place, so an interrupted run never leaves a
/// half-written file that looks like a complete (and quieter) result.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        use std::io::Write as _;
        w.flush()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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

pub fn backtest_cmd(args: &BacktestArgs, json: bool) -> anyhow::Result<ExitCode> {
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
    let last = series.iter().filter_map(|s| s.end()).max();
    let first = series.iter().map(|s| s.start).min();
    if let (Some(first), Some(last)) = (first, last) {
        if args.start > last {
            anyhow::bail!(
                "--start {} is after the last day in {} ({last}): nothing to score (the data covers {first} .. {last})",
                args.start,
                args.input.display()
            );
        }
        if args.start <= first {
            tracing::warn!(
                start = %args.start, %first,
                "--start is on or before the first data day: each warehouse is scored only once it has enough history to train"
            );
        }
    }
    if let Some(labels) = &labels {
        let keys: std::collections::BTreeSet<_> = series.iter().map(|s| &s.key).collect();
        let unknown = labels.iter().filter(|l| !keys.contains(&l.key)).count();
        if unknown > 0 {
            tracing::warn!(
                unknown,
                "labels name warehouses that are not in the metering export; they count as missed"
            );
        }
    }
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
    let report = backtest(&series, &cfg, labels.as_deref()).context("running the backtest")?;
    write_atomically(&args.output, |w| {
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
    emit(json, &summary, || backtest_text(&summary))?;
    Ok(ExitCode::SUCCESS)
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

pub fn synth_cmd(args: &SynthArgs, json: bool) -> anyhow::Result<ExitCode> {
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
    write_atomically(&metering, |w| {
        Ok(snowpatrol_sources::write_metering_csv(&data.rows, w)?)
    })
    .with_context(|| format!("writing {}", metering.display()))?;
    write_atomically(&labels, |w| {
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
    emit(json, &report, || {
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

/// `snowpatrol explain-alert ID`: which channels an incident is (or would be) announced in, by which route, and
/// every route's verdict, from the configured `[pipeline.alerts]`; and which alert announced it, if one did.
pub async fn explain_alert(
    db: &Database,
    config: &PipelineConfig,
    incident_id: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use snowpatrol_pipeline::routing::{IncidentFacts, RouteVerdict};
    let store = PipelineStore::new(db.clone());
    let incident = store
        .incident(incident_id)
        .await
        .context("reading the incident")?
        .with_context(|| {
            format!(
                "no incident with id {incident_id} (see the first column of `snowpatrol anomalies`)"
            )
        })?;
    let days: Vec<_> = store
        .anomalies_since(incident.start_day, Some(&incident.key()))
        .await
        .context("reading the incident's days")?
        .into_iter()
        .filter(|a| a.incident_id == incident_id)
        .collect();
    let expected: f64 = days.iter().map(|a| a.expected_credits).sum();
    let default_channel = config
        .slack
        .as_ref()
        .map_or("file".to_string(), |s| s.channel.clone());
    let decision = config.alerts.decide(
        &IncidentFacts {
            account_name: incident.account_name.clone(),
            warehouse_name: incident.warehouse_name.clone(),
            first_day: incident.start_day,
            excess_credits: incident.excess_credits,
            expected_credits: (expected > 0.0).then_some(expected),
        },
        config.price_per_credit,
        &default_channel,
    );
    let announced = match incident.alert_id {
        Some(id) => store
            .list_alerts(false, i64::MAX)
            .await
            .context("reading the alert outbox")?
            .into_iter()
            .find(|a| a.alert_id == id),
        None => None,
    };
    let verdict = |v: &RouteVerdict| -> (&'static str, String) {
        match v {
            RouteVerdict::Announced => ("announced", String::new()),
            RouteVerdict::NotCovered(w) => ("not_covered", w.clone()),
            RouteVerdict::BelowMinimum(w) => ("below_minimum", w.clone()),
            RouteVerdict::Muted(w) => ("muted", w.clone()),
        }
    };
    let value = json!({
        "incident_id": incident_id,
        "warehouse": format!("{}.{}", incident.account_name, incident.warehouse_name),
        "status": incident.status.as_str(),
        "announced_by": announced.as_ref().map(|a| json!({
            "alert_id": a.alert_id, "dedupe_key": a.dedupe_key, "channel": a.channel, "state": a.state.as_str(),
        })),
        "channels": decision.channels.iter().map(|(r, c)| json!({ "route": r, "channel": c })).collect::<Vec<_>>(),
        "routes": decision.verdicts.iter().map(|(r, v)| {
            let (k, why) = verdict(v);
            json!({ "route": r, "verdict": k, "why": why })
        }).collect::<Vec<_>>(),
        "held_back": decision.held_back(),
        "ignored": decision.ignored,
    });
    emit(json, &value, || {
        let mut out = format!(
            "incident {incident_id}: {}.{}, {} – {}, +{:.2} credits, {}\n",
            incident.account_name,
            incident.warehouse_name,
            incident.start_day,
            incident.end_day,
            incident.excess_credits,
            incident.status.as_str()
        );
        match &announced {
            Some(a) => out.push_str(&format!(
                "announced by alert {} ({}) in {}, {}\n",
                a.alert_id, a.dedupe_key, a.channel, a.state
            )),
            None if incident.status == IncidentStatus::Acknowledged => {
                out.push_str("not announced: acknowledged before any alert\n")
            }
            None => out.push_str("not announced yet\n"),
        }
        if decision.ignored {
            out.push_str(
                "routes now: no channel (ignored by a [[pipeline.alerts.overrides]] entry)\n",
            );
        } else if decision.channels.is_empty() {
            out.push_str("routes now: no channel");
            out.push_str(if decision.held_back() {
                " (held back by a minimum or a mute window; considered again on every predict run)\n"
            } else {
                " (no route covers it and [pipeline.alerts] unrouted = \"drop\")\n"
            });
        } else {
            for (route, channel) in &decision.channels {
                out.push_str(&format!("routes now: {channel} (route {route})\n"));
            }
        }
        if decision.verdicts.is_empty() && !decision.ignored {
            out.push_str("no [[pipeline.alerts.routes]] configured: everything goes to the default channel\n");
        }
        for (route, v) in &decision.verdicts {
            let (k, why) = verdict(v);
            out.push_str(&format!(
                "  route {route}: {}{}\n",
                k.replace('_', " "),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ));
        }
        out.trim_end().to_string()
    })?;
    Ok(ExitCode::SUCCESS)
}
