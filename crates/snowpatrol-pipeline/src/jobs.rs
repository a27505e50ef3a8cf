//! The three jobs and their tasks.

use crate::store::{FeatureRow, MeteringLoad, ModelRow, NewAnomaly, NewModel, day_start};
use crate::{FEATURES_DATASET, MODELS_DATASET, Pipeline, TrainSettings};
use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use snowpatrol_alert::DailyPoint;
use snowpatrol_detect::daily::{DailySeries, DailyUsage, aggregate_daily, build_series};
use snowpatrol_detect::decompose::seasonal_decompose;
use snowpatrol_detect::drift::{DriftConfig, DriftDecision, check_drift};
use snowpatrol_detect::model::{
    DEFAULT_MODEL_FORMAT, DefaultRuleConfig, ModelKind, TrainConfig, TrainedModel, seed_for, train,
};
use snowpatrol_detect::{MeteringRow, WarehouseKey};
use snowpatrol_engine::{
    DatasetSpec, JobConfig, JobDefinition, JobRegistry, ParamSpec, ParamType, TaskContext,
    TaskDefinition, TaskError, TaskOutput, TaskState, TriggerRule, task_fn,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use tracing::{info, warn};

/// A store error as a task error. A write refused by the try's fence is logged here (the try's own result is
/// discarded by the engine anyway, since another try owns the instance now).
pub(crate) fn store_err(what: &str) -> impl Fn(snowpatrol_store::StoreError) -> TaskError + '_ {
    move |e| {
        if e.is_fenced() {
            warn!(error = %e, "{what}: refused, this try lost its lease; another try owns the work");
        }
        TaskError::from_store(what, &e)
    }
}

pub fn registry(p: &Arc<Pipeline>) -> JobRegistry {
    let mut r = JobRegistry::new();
    r.register(prep_job(p));
    r.register(train_job(p));
    r.register(predict_job(p));
    r
}

/// `prep`: extract metering, then build the daily features (emits [`FEATURES_DATASET`]).
fn prep_job(p: &Arc<Pipeline>) -> JobDefinition {
    let (a, b) = (p.clone(), p.clone());
    JobDefinition::new("prep", "Extract metering, validate, build daily features")
        .default_config(JobConfig {
            cron: Some("0 6 * * *".into()),
            timezone: "UTC".into(),
            max_active_runs: 1,
            ..Default::default()
        })
        .param(
            ParamSpec::new(
                "backfill_days",
                ParamType::Int,
                json!(p.config.prep.backfill_days),
                "days loaded on the first run",
            )
            .min(1),
        )
        .param(
            ParamSpec::new(
                "reread_days",
                ParamType::Int,
                json!(p.config.prep.reread_days),
                "days re-read on every run",
            )
            .min(1),
        )
        .task(
            TaskDefinition::new("extract", task_fn(move |ctx| extract(a.clone(), ctx))).retries(3),
        )
        .task(
            TaskDefinition::new("features", task_fn(move |ctx| features(b.clone(), ctx)))
                .depends_on(&["extract"])
                .outlet(FEATURES_DATASET),
        )
}

/// `train` (on features): one training task per warehouse, then `publish` (emits [`MODELS_DATASET`]).
fn train_job(p: &Arc<Pipeline>) -> JobDefinition {
    let (a, b, c) = (p.clone(), p.clone(), p.clone());
    JobDefinition::new("train", "Drift check and per-warehouse training")
        .default_config(on_dataset(FEATURES_DATASET))
        .param(ParamSpec::new(
            "force_retrain",
            ParamType::Bool,
            json!(false),
            "retrain every warehouse, drift or not",
        ))
        .param(
            ParamSpec::new(
                "model",
                ParamType::String,
                json!("default"),
                "default or baseline",
            )
            .one_of(["default", "baseline"]),
        )
        .task(TaskDefinition::new(
            "list_warehouses",
            task_fn(move |_| list_warehouses(a.clone(), false)),
        ))
        .task(
            TaskDefinition::new(
                "train_warehouse",
                task_fn(move |ctx| train_warehouse(b.clone(), ctx)),
            )
            .map_over("list_warehouses"),
        )
        .task(
            TaskDefinition::new("publish", task_fn(move |ctx| publish(c.clone(), ctx)))
                .depends_on(&["train_warehouse"])
                .trigger_rule(TriggerRule::AllDone)
                .outlet(MODELS_DATASET),
        )
}

/// `predict` (on models): one scoring task per warehouse with a model, the `root_causes` of the anomalous
/// days, then the `report` (which runs whatever the lookup did).
fn predict_job(p: &Arc<Pipeline>) -> JobDefinition {
    let (a, b, c, d) = (p.clone(), p.clone(), p.clone(), p.clone());
    JobDefinition::new(
        "predict",
        "Score recent days, record anomalies, report and alert",
    )
    .default_config(on_dataset(MODELS_DATASET))
    .task(TaskDefinition::new(
        "list_warehouses",
        task_fn(move |_| list_warehouses(a.clone(), true)),
    ))
    .task(
        TaskDefinition::new(
            "score_warehouse",
            task_fn(move |ctx| score_warehouse(b.clone(), ctx)),
        )
        .map_over("list_warehouses"),
    )
    .task(
        TaskDefinition::new(
            "root_causes",
            task_fn(move |ctx| crate::root_causes::root_causes(d.clone(), ctx)),
        )
        .depends_on(&["score_warehouse"])
        .trigger_rule(TriggerRule::AllDone)
        .retries(2),
    )
    .task(
        TaskDefinition::new(
            "report",
            task_fn(move |ctx| crate::report::report(c.clone(), ctx)),
        )
        .depends_on(&["score_warehouse", "root_causes"])
        .trigger_rule(TriggerRule::AllDone),
    )
}

/// The chain's built-in schedule: a job that runs whenever `uri` gets an event.
fn on_dataset(uri: &str) -> JobConfig {
    JobConfig {
        datasets: Some(DatasetSpec::AllOf(vec![uri.to_string()])),
        timezone: "UTC".into(),
        max_active_runs: 1,
        ..Default::default()
    }
}

/// Checks extracted rows; the error names what is wrong and where.
pub fn validate_rows(
    rows: &[MeteringRow],
    from: NaiveDate,
    to_exclusive: NaiveDate,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let days = check_each_row(rows, &mut problems);
    if rows.is_empty() {
        problems.push(format!("no metering rows at all between {from} and {to_exclusive}: check the source and its grants"));
    } else if let Some(missing) = missing_days_problem(&days, from, to_exclusive) {
        problems.push(missing);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let n = problems.len();
        Err(format!(
            "validation failed ({n} problem(s)): {}{}",
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            if n > 10 { "; …" } else { "" }
        ))
    }
}

/// The problems of each row on its own (names, credits, duplicates) into `problems`; returns the days the rows
/// cover.
fn check_each_row(rows: &[MeteringRow], problems: &mut Vec<String>) -> BTreeSet<NaiveDate> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut days = BTreeSet::new();
    for r in rows {
        let key = format!("{}.{}", r.account_name, r.warehouse_name);
        if r.account_name.trim().is_empty() || r.warehouse_name.trim().is_empty() {
            problems.push(format!(
                "empty account or warehouse name at {} (warehouse id {})",
                r.start_time, r.warehouse_id
            ));
        }
        for (name, v) in [
            ("CREDITS_USED", r.credits_used),
            ("CREDITS_USED_COMPUTE", r.credits_used_compute),
            ("CREDITS_USED_CLOUD_SERVICES", r.credits_used_cloud_services),
        ] {
            // NaN is as wrong as a negative value.
            if v.is_nan() || v < 0.0 {
                problems.push(format!("{name} = {v} for {key} at {}", r.start_time));
            }
        }
        // The view has several rows per warehouse name and hour by design: one per SERVICE_TYPE
        // (WAREHOUSE_METERING, WAREHOUSE_METERING_READER) and one per warehouse id when a warehouse was dropped
        // and re-created under the same name. A duplicate is the same (account, id, service type, hour).
        if !seen.insert((
            r.account_name.as_str(),
            r.warehouse_id,
            r.service_type.as_str(),
            r.start_time,
        )) {
            problems.push(format!(
                "duplicate hour {} for {key} (warehouse id {}, service type {})",
                r.start_time, r.warehouse_id, r.service_type
            ));
        }
        days.insert(r.start_time.date_naive());
    }
    days
}

/// The days of the window without a single row, as a problem (None: no such day). `days` are the days the
/// rows cover.
fn missing_days_problem(
    days: &BTreeSet<NaiveDate>,
    from: NaiveDate,
    to_exclusive: NaiveDate,
) -> Option<String> {
    // Days before the first row are before the data starts (a new account); gaps after it are real holes.
    let mut d = days.first().copied().unwrap_or(from).max(from);
    let mut missing = Vec::new();
    while d < to_exclusive {
        if !days.contains(&d) {
            missing.push(d.to_string());
        }
        d = d + Days::new(1);
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "no metering rows at all on {} day(s) of the window: {}",
        missing.len(),
        missing
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

async fn extract(p: Arc<Pipeline>, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
    // A source that knows where its data ends (a CSV export) says so; a live one is complete up to yesterday.
    let end = match p.source.last_complete_day().await {
        Ok(Some(day)) => day,
        Ok(None) => p.data_end(),
        Err(e) => return Err(source_err(e)),
    };
    let to = end + Days::new(1);
    let backfill = days_param(&ctx, "backfill_days", p.config.prep.backfill_days);
    let reread = days_param(&ctx, "reread_days", p.config.prep.reread_days);
    let from = load_window_start(&p, to, backfill, reread).await?;
    info!(source = %p.source_description(), %from, %to, "extracting metering");
    let started = std::time::Instant::now();
    let rows = p
        .source
        .fetch(day_start(from), day_start(to))
        .await
        .map_err(source_err)?;
    let t_fetch = started.elapsed();
    // Validation and aggregation are CPU work over every hourly row: keep them off tokio's threads.
    let rows = Arc::new(rows);
    let checked = rows.clone();
    let daily = ctx
        .run_cpu(move || validate_rows(&checked, from, to).map(|()| aggregate_daily(&checked)))
        .await?
        .map_err(TaskError::permanent)?;
    let t_validate = started.elapsed();
    let features = undecomposed(daily);
    // Hourly rows, daily rows and the load ledger commit together, fenced by this try's lease: an interrupted
    // load leaves nothing behind, and a try that lost its lease cannot load the window a second time.
    p.store
        .load_metering(
            &MeteringLoad {
                from,
                to,
                hourly: &rows,
                daily: &features,
                run_id: Some(ctx.run_id),
            },
            Some(&ctx.fence),
        )
        .await
        .map_err(store_err("loading metering"))?;
    let t_load = started.elapsed();
    info!(rows = rows.len(), days = features.len(), "metering loaded");
    let credit_rates = load_credit_rates(&p, &ctx, from, to).await?;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    Ok(TaskOutput::empty().with_data_of(&ExtractOutput {
        from,
        to: end,
        hourly_rows: rows.len(),
        warehouse_days: features.len(),
        credit_rates,
        timings_ms: ExtractTimings {
            fetch: ms(t_fetch),
            validate_aggregate: ms(t_validate - t_fetch),
            load_hourly_and_daily: ms(t_load - t_validate),
        },
    }))
}

/// Daily rows as feature rows without their decomposition, which `features` computes over whole series.
fn undecomposed(daily: Vec<DailyUsage>) -> Vec<FeatureRow> {
    daily
        .into_iter()
        .map(|usage| FeatureRow {
            usage,
            trend: None,
            seasonal: None,
            residual: None,
        })
        .collect()
}

/// A source error as a task error: retryable when trying again later can succeed (a network error).
fn source_err(e: snowpatrol_sources::SourceError) -> TaskError {
    if e.is_transient() {
        TaskError::retryable(e.to_string())
    } else {
        TaskError::permanent(e.to_string())
    }
}

/// A number of days from the run's params (`default` when not given), at least 1.
fn days_param(ctx: &TaskContext, name: &str, default: i64) -> u64 {
    ctx.params.int(name).unwrap_or(default).max(1) as u64
}

/// What `extract` loaded (its output data): the window's days (`to` inclusive), read by `features` for the
/// dataset event's `extra`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExtractOutput {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hourly_rows: usize,
    pub warehouse_days: usize,
    /// Credit rates loaded from USAGE_IN_CURRENCY_DAILY (`credit_prices = "snowflake"` only).
    #[serde(default)]
    pub credit_rates: Option<CreditRatesLoaded>,
    pub timings_ms: ExtractTimings,
}

/// What prep read of `USAGE_IN_CURRENCY_DAILY`: rows loaded, or why none (a missing grant does not fail
/// prep: money falls back to `price_per_credit`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditRatesLoaded {
    Loaded(usize),
    Unavailable(String),
}

/// Loads the effective credit prices of [from, to) when `credit_prices = "snowflake"`, fenced.
async fn load_credit_rates(
    p: &Pipeline,
    ctx: &TaskContext,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Option<CreditRatesLoaded>, TaskError> {
    let Some(context) = p
        .context
        .as_ref()
        .filter(|_| p.config.credit_prices == crate::CreditPrices::Snowflake)
    else {
        return Ok(None);
    };
    let rates = match context.credit_rates(from, to).await {
        Ok(r) => r,
        Err(e) if e.is_transient() => return Err(source_err(e)),
        Err(e) => {
            warn!(error = %e, "credit prices not read; money uses [pipeline] price_per_credit");
            return Ok(Some(CreditRatesLoaded::Unavailable(e.to_string())));
        }
    };
    let rows: Vec<crate::store::CreditRateRow> = rates
        .into_iter()
        .map(|r| crate::store::CreditRateRow {
            account_name: r.account_name,
            usage_date: r.day,
            currency: r.currency,
            credits: r.credits,
            amount: r.amount,
        })
        .collect();
    p.store
        .upsert_credit_rates(&rows, Some(&ctx.fence))
        .await
        .map_err(store_err("loading credit rates"))?;
    Ok(Some(CreditRatesLoaded::Loaded(rows.len())))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExtractTimings {
    pub fetch: u64,
    pub validate_aggregate: u64,
    pub load_hourly_and_daily: u64,
}

/// First day prep must (re)load: the re-read window (Snowflake revises the last days of metering), and
/// before it every day since the first loaded one that the load ledger lacks (an interrupted load, downtime
/// of any length, a day that failed validation), so nothing stays missing. On an empty database: the
/// backfill.
async fn load_window_start(
    p: &Pipeline,
    to: NaiveDate,
    backfill: u64,
    reread: u64,
) -> Result<NaiveDate, TaskError> {
    let backfill_start = to - Days::new(backfill);
    let reread_start = to - Days::new(reread).min(Days::new(backfill));
    let loaded = p
        .store
        .loaded_days(backfill_start)
        .await
        .map_err(store_err("reading the load ledger"))?;
    // Where the data starts: the first loaded day, or an earlier day the daily table holds without a ledger
    // entry (a database from before the ledger whose hourly load was lost).
    let daily_first = p
        .store
        .daily_range()
        .await
        .map_err(store_err("reading loaded range"))?
        .map(|(lo, _)| lo);
    let Some(first) = loaded.first().copied().into_iter().chain(daily_first).min() else {
        return Ok(backfill_start);
    };
    let mut d = first.max(backfill_start);
    while d < reread_start {
        if !loaded.contains(&d) {
            return Ok(d);
        }
        d = d + Days::new(1);
    }
    Ok(reread_start)
}

/// The last day prep loaded (the load ledger), which is where every series ends for features, training and
/// scoring: padding series to "yesterday" before today's prep ran would invent an idle day. Falls back to the
/// source's end on a database prep has not filled yet.
pub(crate) async fn loaded_end(p: &Pipeline) -> Result<NaiveDate, TaskError> {
    Ok(p.store
        .last_loaded_day()
        .await
        .map_err(store_err("reading the load ledger"))?
        .unwrap_or_else(|| p.data_end()))
}

/// The days predict scores, first and last (both included): the last `score_days` up to [`loaded_end`]. The
/// root-cause lookup and the report work on the same window.
pub(crate) async fn scored_window(p: &Pipeline) -> Result<(NaiveDate, NaiveDate), TaskError> {
    let end = loaded_end(p).await?;
    Ok((
        end - Days::new(p.config.predict.score_days.saturating_sub(1) as u64),
        end,
    ))
}

async fn features(p: Arc<Pipeline>, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
    let started = std::time::Instant::now();
    let days = p
        .store
        .load_daily(None)
        .await
        .map_err(store_err("loading daily usage"))?;
    let t_read = started.elapsed();
    let extracted = ctx.upstream("extract").await?;
    let window: Option<ExtractOutput> = extracted.first().and_then(|t| t.output_data());
    let end = loaded_end(&p).await?;
    let rows = ctx.run_cpu(move || feature_rows(&days, end)).await?;
    let warehouses = rows
        .iter()
        .map(|r| &r.usage.key)
        .collect::<BTreeSet<_>>()
        .len();
    let t_compute = started.elapsed();
    // The decomposition of every day changes as days arrive, so the whole table is rewritten in one go.
    p.store
        .replace_daily(&rows, Some(&ctx.fence))
        .await
        .map_err(store_err("writing features"))?;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let timings = json!({ "read_daily": ms(t_read), "decompose": ms(t_compute - t_read), "write": ms(started.elapsed() - t_compute) });
    Ok(TaskOutput::with_extra(json!({
        "from": window.as_ref().map(|w| w.from), "to": window.as_ref().map(|w| w.to),
        "hourly_rows": window.as_ref().map(|w| w.hourly_rows),
        "warehouses": warehouses, "feature_rows": rows.len()
    }))
    .with_data(json!({ "timings_ms": timings })))
}

/// Every day of every warehouse's series (ending on `end`) with its seasonal decomposition (weekly, for series
/// of at least two weeks), the warehouses in parallel.
fn feature_rows(days: &[DailyUsage], end: NaiveDate) -> Vec<FeatureRow> {
    use rayon::prelude::*;
    let series = build_series(days, Some(end));
    series
        .par_iter()
        .flat_map_iter(|s| {
            let dec = if s.len() >= 14 {
                seasonal_decompose(&s.credits, 7).ok()
            } else {
                None
            };
            (0..s.len()).map(move |i| FeatureRow {
                usage: DailyUsage {
                    key: s.key.clone(),
                    date: s.date(i),
                    credits: s.credits[i],
                    credits_compute: s.credits_compute[i],
                    credits_cloud_services: s.credits_cloud_services[i],
                    hours_active: s.hours_active[i],
                    peak_hourly_credits: s.peak_hourly_credits[i],
                },
                trend: dec.as_ref().map(|d| d.trend[i]),
                seasonal: dec.as_ref().map(|d| d.seasonal[i]),
                residual: dec.as_ref().map(|d| d.resid[i]),
            })
        })
        .collect::<Vec<_>>()
}

async fn list_warehouses(p: Arc<Pipeline>, with_model: bool) -> Result<TaskOutput, TaskError> {
    let keys = p
        .store
        .warehouses(with_model)
        .await
        .map_err(store_err("listing warehouses"))?;
    Ok(TaskOutput::with_map_keys(
        keys.iter().map(|k| k.to_string()).collect(),
    ))
}

fn key_of(ctx: &TaskContext) -> Result<WarehouseKey, TaskError> {
    let raw = ctx.map_key.clone().unwrap_or_default();
    WarehouseKey::parse(&raw)
        .ok_or_else(|| TaskError::permanent(format!("map key `{raw}` is not ACCOUNT.WAREHOUSE")))
}

async fn series_for(p: &Pipeline, key: &WarehouseKey) -> Result<Option<DailySeries>, TaskError> {
    let days = p
        .store
        .load_daily(Some(key))
        .await
        .map_err(store_err("loading daily usage"))?;
    let end = loaded_end(p).await?;
    Ok(build_series(&days, Some(end)).into_iter().next())
}

async fn train_warehouse(p: Arc<Pipeline>, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
    let key = key_of(&ctx)?;

    let kind: ModelKind = ctx
        .params
        .string("model")
        .unwrap_or("default")
        .parse()
        .map_err(|e| TaskError::permanent(format!("param model: {e}")))?;
    let force = ctx.params.bool("force_retrain").unwrap_or(false);
    let Some(series) = series_for(&p, &key).await? else {
        return Ok(TaskOutput::empty().with_data_of(&TrainOutcome::skipped("no usage rows")));
    };
    let settings = &p.config.train;
    if series.len() < settings.min_days {
        let reason = format!(
            "only {} day(s) of history, fewer than min_days = {}",
            series.len(),
            settings.min_days
        );
        info!(warehouse = %key, "{reason}: skipped");
        return Ok(TaskOutput::empty().with_data_of(&TrainOutcome::skipped(reason)));
    }
    let latest = p
        .store
        .model_by_alias(&key, "latest")
        .await
        .map_err(store_err("reading latest model"))?;
    let (drift, drift_json) = drift_check(settings, &series)?;
    // The warehouse's own rule: [pipeline.detection] with its [[pipeline.alerts.overrides]] budget and drop flag.
    let rule = p.config.alerts.rule_for(
        &key.account_name,
        &key.warehouse_name,
        &p.config.detection_rule(),
    );
    let reason = match retrain_decision(latest.as_ref(), kind, force, &drift, &drift_json, &rule) {
        RetrainDecision::Retrain(reason) => reason,
        RetrainDecision::Keep { version } => {
            info!(warehouse = %key, version, "no drift: keeping the model");
            return Ok(TaskOutput::empty().with_data_of(&TrainOutcome::Skipped {
                reason: NO_DRIFT.into(),
                drift: Some(drift_json),
                version: Some(version),
            }));
        }
    };
    let next_version = latest.as_ref().map_or(1, |m| m.version as i64 + 1);
    let cfg = TrainConfig {
        kind,
        seed: seed_for(&key, next_version),
        min_days: settings.min_days,
        rule,
        ..TrainConfig::default()
    };
    train_and_register(&p, &ctx, &key, series, cfg, reason, drift_json).await
}

/// The drift check of a warehouse's series ([pipeline.train] settings), with its summary for the task's output
/// and the model's record.
fn drift_check(
    settings: &TrainSettings,
    series: &DailySeries,
) -> Result<(DriftDecision, serde_json::Value), TaskError> {
    let drift_cfg = DriftConfig {
        window_days: settings.drift_window_days,
        alpha: settings.drift_alpha,
        min_history_days: settings.drift_min_history_days,
    };
    let drift = check_drift(series, &drift_cfg)
        .map_err(|e| TaskError::permanent(format!("drift check: {e}")))?;
    let drift_json = match &drift {
        DriftDecision::Drift { pvalue, statistic } => {
            json!({ "result": "drift", "pvalue": pvalue, "statistic": statistic })
        }
        DriftDecision::NoDrift { pvalue, statistic } => {
            json!({ "result": "no_drift", "pvalue": pvalue, "statistic": statistic })
        }
        DriftDecision::InsufficientHistory { days } => {
            json!({ "result": "insufficient_history", "days": days })
        }
    };
    Ok((drift, drift_json))
}

/// Whether a warehouse gets a new model version.
enum RetrainDecision {
    /// Train one, for this reason.
    Retrain(String),
    /// Keep the current version: its data did not drift.
    Keep { version: i32 },
}

/// Whether the warehouse's `latest` model is retrained (and why): forced, none yet, another kind asked for, a
/// stale default model, or drift.
fn retrain_decision(
    latest: Option<&ModelRow>,
    kind: ModelKind,
    force: bool,
    drift: &DriftDecision,
    drift_json: &serde_json::Value,
    rule: &DefaultRuleConfig,
) -> RetrainDecision {
    // A default model also retrains when it was stored in a format this version cannot read, or trained
    // with other [pipeline.detection] settings.
    let stale = latest
        .filter(|m| m.model_kind == ModelKind::Default.as_str())
        .and_then(|m| match stored_rule(&m.model) {
            None => Some(format!(
                "model v{} was stored by an older version of Snowpatrol and cannot be read",
                m.version
            )),
            Some(r) if &r != rule => Some("the [pipeline.detection] settings changed".to_string()),
            Some(_) => None,
        });
    let reason = match (latest, stale) {
        _ if force => "force_retrain".to_string(),
        (None, _) => "no model yet".to_string(),
        (Some(m), _) if m.model_kind != kind.as_str() => format!(
            "model kind changed from {} to {}",
            m.model_kind,
            kind.as_str()
        ),
        (Some(_), Some(why)) => why,
        (Some(_), None) if drift.should_retrain() => format!("drift: {drift_json}"),
        (Some(m), None) => return RetrainDecision::Keep { version: m.version },
    };
    RetrainDecision::Retrain(reason)
}

/// Trains the warehouse's next model version (on the task's CPU pool) and registers it as `latest`; a retried
/// try keeps the version an earlier try of this run registered.
async fn train_and_register(
    p: &Pipeline,
    ctx: &TaskContext,
    key: &WarehouseKey,
    series: DailySeries,
    cfg: TrainConfig,
    reason: String,
    drift_json: serde_json::Value,
) -> Result<TaskOutput, TaskError> {
    let kind = cfg.kind;
    let model = ctx
        .run_cpu(move || train(&series, &cfg))
        .await?
        .map_err(|e| TaskError::permanent(format!("training {key}: {e}")))?;
    let model_json = serde_json::to_value(&model)
        .map_err(|e| TaskError::permanent(format!("serializing model: {e}")))?;
    let registered = p
        .store
        .register_model(
            &NewModel {
                key: key.clone(),
                model_kind: kind.as_str().into(),
                params: model.params_json(),
                threshold: model.threshold,
                training_start: model.training_start,
                training_end: model.training_end,
                metrics: serde_json::to_value(&model.metrics).unwrap_or_default(),
                drift: drift_json.clone(),
                model: model_json,
                training_run_id: Some(ctx.run_id),
            },
            Some(&ctx.fence),
        )
        .await
        .map_err(store_err("registering model"))?;
    snowpatrol_store::failpoint("train.after_register").map_err(store_err("failpoint"))?;
    let (model_id, version) = (registered.model_id, registered.version);
    if registered.created {
        info!(warehouse = %key, version, model_id, %reason, "model trained");
    } else {
        info!(warehouse = %key, version, model_id, "this run had registered the model already (a retried try): kept it");
    }
    Ok(TaskOutput::empty().with_data_of(&TrainOutcome::Trained {
        version,
        model_id,
        reason,
        drift: drift_json,
    }))
}

/// Why a warehouse whose data did not drift keeps its model.
const NO_DRIFT: &str = "no drift";

/// What `train_warehouse` did for one warehouse (its output data, tagged by `status`), read back by `publish`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum TrainOutcome {
    /// A new version was registered (or had been by an earlier try of this run).
    Trained {
        version: i32,
        model_id: i64,
        reason: String,
        drift: serde_json::Value,
    },
    /// No new version: too little history, no usage, or no drift (then `version` is the model kept).
    Skipped {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drift: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<i32>,
    },
}

impl TrainOutcome {
    fn skipped(reason: impl Into<String>) -> Self {
        TrainOutcome::Skipped {
            reason: reason.into(),
            drift: None,
            version: None,
        }
    }

    /// The warehouse has a current model after this outcome: retrained, or kept because its data did not drift.
    fn leaves_current_model(&self) -> bool {
        match self {
            TrainOutcome::Trained { .. } => true,
            TrainOutcome::Skipped {
                version, reason, ..
            } => version.is_some() && reason == NO_DRIFT,
        }
    }
}

/// The detection settings a stored default model was trained with; `None` when the model was stored in a
/// format this version cannot read (the previous default rule's fields are refused by `deny_unknown_fields`).
/// Reads only the rule, not the whole model.
fn stored_rule(model: &serde_json::Value) -> Option<DefaultRuleConfig> {
    // A model of another stored form (an older rule without the record test, say) is refused even when its
    // settings read back equal: its fitted fields are not what this version scores with.
    if model.pointer("/detector/format").and_then(|f| f.as_u64())
        != Some(u64::from(DEFAULT_MODEL_FORMAT))
    {
        return None;
    }
    model
        .pointer("/detector/rule")
        .and_then(|r| DefaultRuleConfig::deserialize(r).ok())
}

/// The `extra` of a training run's models event: what happened to its warehouses.
#[derive(Debug, Serialize)]
struct TrainingSummary {
    trained: usize,
    skipped: usize,
    failed: usize,
    training_run_id: i64,
}

async fn publish(_p: Arc<Pipeline>, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
    let results = ctx.upstream("train_warehouse").await?;
    let mut summary = TrainingSummary {
        trained: 0,
        skipped: 0,
        failed: 0,
        training_run_id: ctx.run_id,
    };
    // Warehouses with a current model after this run: retrained, or kept because their data did not drift.
    let mut current = 0;
    for t in &results {
        let outcome: Option<TrainOutcome> = t.output_data();
        match (t.state, &outcome) {
            (TaskState::Success, Some(TrainOutcome::Trained { .. })) => summary.trained += 1,
            (TaskState::Success | TaskState::Skipped, _) => summary.skipped += 1,
            _ => summary.failed += 1,
        }
        if outcome
            .as_ref()
            .is_some_and(TrainOutcome::leaves_current_model)
        {
            current += 1;
        }
    }
    let extra = serde_json::to_value(&summary).unwrap_or_default();
    info!(%extra, "training run summary");
    // Useful work is a warehouse with a current model (retrained, or kept for the new data, which predict must
    // still score). When every warehouse failed or had too little history, predict has nothing to score with:
    // no models event, so a broken training run does not start a predict run.
    if current == 0 {
        info!("no warehouse has a current model after this run: no models event");
        return Ok(TaskOutput::with_extra(extra).without_outlet_events());
    }
    Ok(TaskOutput::with_extra(extra))
}

async fn score_warehouse(p: Arc<Pipeline>, ctx: TaskContext) -> Result<TaskOutput, TaskError> {
    let key = key_of(&ctx)?;
    let Some(m) = p
        .store
        .model_by_alias(&key, "latest")
        .await
        .map_err(store_err("reading latest model"))?
    else {
        return Ok(
            TaskOutput::empty().with_data(json!({ "status": "skipped", "reason": "no model" }))
        );
    };
    let model: TrainedModel = serde_json::from_value(m.model.clone()).map_err(|e| {
        TaskError::permanent(format!("model {} v{} cannot be read: {e}", key, m.version))
    })?;
    let Some(series) = series_for(&p, &key).await? else {
        return Ok(TaskOutput::empty()
            .with_data(json!({ "status": "skipped", "reason": "no usage rows" })));
    };
    let days = p.config.predict.score_days;
    let scores = ctx
        .run_cpu(move || model.score(&series, days))
        .await?
        .map_err(|e| TaskError::permanent(format!("scoring {key}: {e}")))?;
    let anomalies: Vec<NewAnomaly> = scores
        .iter()
        .filter(|s| s.is_anomaly)
        .map(|s| NewAnomaly {
            key: key.clone(),
            model_id: m.model_id,
            model_version: m.version,
            run_id: ctx.run_id,
            day: s.day.clone(),
        })
        .collect();
    // The price only matters for the incidents of flagged days: a quiet warehouse (most of them) reads no rates.
    let newest_scored = scores.iter().map(|s| s.day.date).max();
    let price = match newest_scored.filter(|_| !anomalies.is_empty()) {
        Some(day) => crate::root_causes::Prices::read(&p, day)
            .await?
            .price(&key.account_name),
        None => p.config.price_per_credit,
    };
    let recorded = p
        .store
        .upsert_anomalies(&anomalies, price, Some(&ctx.fence))
        .await
        .map_err(store_err("recording anomalies"))?;
    snowpatrol_store::failpoint("predict.score.after_upsert").map_err(store_err("failpoint"))?;
    // Incidents that ended before the newest scored day are over: mark them resolved.
    let resolved = match newest_scored {
        Some(newest) => p
            .store
            .resolve_incidents(&key, newest, Some(&ctx.fence))
            .await
            .map_err(store_err("resolving incidents"))?,
        None => 0,
    };
    if !anomalies.is_empty() {
        warn!(warehouse = %key, flagged = anomalies.len(), new = recorded.new_days, rescored = recorded.rescored_days, "anomalous days");
    }
    Ok(TaskOutput::empty().with_data(json!({
        "scored": scores.len(), "flagged": anomalies.len(), "new": recorded.new_days,
        "rescored": recorded.rescored_days, "new_incidents": recorded.new_incidents,
        "extended_incidents": recorded.extended_incidents, "merged_incidents": recorded.merged_incidents,
        "resolved_incidents": resolved, "model_version": m.version
    })))
}

/// The last `days` days of a warehouse for its chart: credits, and what its `latest` model expected with the
/// normal range (scored on the task's CPU pool).
pub(crate) async fn history_points(
    p: &Pipeline,
    ctx: &TaskContext,
    key: &WarehouseKey,
    days: i64,
) -> Result<Vec<DailyPoint>, TaskError> {
    let Some(series) = series_for(p, key).await? else {
        return Ok(vec![]);
    };
    let take = days.max(1) as usize;
    let model = p
        .store
        .model_by_alias(key, "latest")
        .await
        .map_err(store_err("reading model"))?
        .and_then(|m| serde_json::from_value::<TrainedModel>(m.model).ok());
    ctx.run_cpu(move || {
        snowpatrol_detect::model::expected_days(model.as_ref(), &series, take)
            .into_iter()
            .map(|d| DailyPoint {
                date: d.date,
                credits: d.credits,
                expected: d.expected,
                normal_low: d.normal_low,
                normal_high: d.normal_high,
            })
            .collect()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rule_reads_current_models_and_refuses_the_previous_format() {
        let current = serde_json::json!({ "detector": { "type": "default",
            "rule": serde_json::to_value(DefaultRuleConfig::default()).unwrap_or_default(),
            "format": DEFAULT_MODEL_FORMAT } });
        assert_eq!(stored_rule(&current), Some(DefaultRuleConfig::default()));
        // The same settings stored by the previous form of the model (no record test, no format): retrained.
        let before_record_test = serde_json::json!({ "detector": { "type": "default",
            "rule": serde_json::to_value(DefaultRuleConfig::default()).unwrap_or_default() } });
        assert_eq!(stored_rule(&before_record_test), None);
        // The previous default rule's knobs are unknown fields now: the model must be retrained.
        let previous = serde_json::json!({ "detector": { "type": "default",
            "rule": { "level_window_days": 14, "z_threshold": 3.5 }, "scale_rel": 0.1 } });
        assert_eq!(stored_rule(&previous), None);
        let changed = serde_json::json!({ "detector": { "type": "default",
            "rule": { "expected_false_alarms_per_year": 2.0 }, "format": DEFAULT_MODEL_FORMAT } });
        assert_ne!(stored_rule(&changed), Some(DefaultRuleConfig::default()));
    }
}
