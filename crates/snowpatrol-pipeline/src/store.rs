//! The pipeline's tables (see migrations/*/0002_pipeline.sql, 0003_incidents.sql and 0004_alert_delivery.sql), on
//! PostgreSQL and SQLite.
//!
//! Written once in a macro like the engine's store so both backends run the same statements; PostgreSQL
//! additionally loads hourly rows with COPY, which is what makes large backfills fast.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use snowpatrol_detect::daily::DailyUsage;
use snowpatrol_detect::{MeteringRow, WarehouseKey};
use snowpatrol_store::{Database, Pool, StoreError, TaskFence};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, BTreeSet};

snowpatrol_store::string_enum!(
    /// Lifecycle of an incident (`incidents.status`). Predict creates incidents `open`, marks them `resolved`
    /// once a later day was scored and the incident did not grow (and reopens them if it grows after all);
    /// an operator moves any incident to `acknowledged`, which is final: it is never alerted again.
    IncidentStatus { Open => "open", Acknowledged => "acknowledged", Resolved => "resolved" }
);
snowpatrol_store::string_enum!(
    /// Delivery state of an alert (`alerts.state`, CHECK-constrained to these values). The report task and the
    /// failure hook insert rows `pending`; an outbox sender claims a due row (`sending`, with `claimed_by` and
    /// `claim_expires_at`), makes one attempt and moves it to `sent` / `written`, back to `pending` (with
    /// `next_attempt_at`) or to `failed` (permanent Slack error, or `max_attempts` reached). Any sender takes
    /// over a `sending` row whose claim expired.
    AlertState { Pending => "pending", Sending => "sending", Sent => "sent", Written => "written", Failed => "failed" }
);
snowpatrol_store::string_enum!(
    /// Why an operator acknowledged an incident (`ack_reason`). A closed set, not free text, so the feedback
    /// can be counted (false-positive rate per model version).
    AckReason { FalsePositive => "false_positive", Planned => "planned", Expected => "expected" }
);

#[derive(Clone, Debug, Serialize)]
pub struct ModelRow {
    pub model_id: i64,
    pub account_name: String,
    pub warehouse_name: String,
    pub version: i32,
    pub model_kind: String,
    pub threshold: f64,
    pub training_start: NaiveDate,
    pub training_end: NaiveDate,
    pub metrics: serde_json::Value,
    pub drift: serde_json::Value,
    pub training_run_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub aliases: String,
    #[serde(skip)]
    pub model: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct AnomalyRow {
    pub anomaly_id: i64,
    pub account_name: String,
    pub warehouse_name: String,
    pub usage_date: NaiveDate,
    pub model_version: i32,
    pub run_id: i64,
    pub actual_credits: f64,
    pub expected_credits: f64,
    pub excess_credits: f64,
    pub score: f64,
    pub threshold: f64,
    pub explanation: String,
    /// Start day of its incident (kept for older tooling; `incident_id` is the reference).
    pub incident_start: NaiveDate,
    /// First flagged.
    pub detected_at: DateTime<Utc>,
    /// Last (re-)scored and flagged, by `model_version` in `run_id`.
    pub scored_at: DateTime<Utc>,
    pub incident_id: i64,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub ack_reason: Option<String>,
}

/// A run of consecutive anomalous days of one warehouse (`incidents`).
#[derive(Clone, Debug, Serialize)]
pub struct IncidentRow {
    pub incident_id: i64,
    pub account_name: String,
    pub warehouse_name: String,
    pub start_day: NaiveDate,
    pub end_day: NaiveDate,
    pub days: i32,
    pub excess_credits: f64,
    /// `excess_credits` x the configured price per credit; None without a price.
    pub excess_cost: Option<f64>,
    pub peak_score: f64,
    pub status: IncidentStatus,
    pub ack_reason: Option<AckReason>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The alert that announced the incident (a run's digest); None until announced.
    pub alert_id: Option<i64>,
}

impl IncidentRow {
    pub fn key(&self) -> WarehouseKey {
        WarehouseKey::new(&self.account_name, &self.warehouse_name)
    }
}

/// Which incidents (or anomalous days) to list.
#[derive(Clone, Debug, Default)]
pub struct IncidentFilter {
    /// Incidents that end on or after this day; days on or after it.
    pub since: Option<NaiveDate>,
    /// `WAREHOUSE` (that name in every account) or `ACCOUNT.WAREHOUSE`.
    pub warehouse: Option<String>,
    /// Only incidents (days of incidents) in one of these states; empty = any.
    pub statuses: Vec<IncidentStatus>,
    /// Only these incidents; empty = any.
    pub incident_ids: Vec<i64>,
}

/// What [`PipelineStore::upsert_anomalies`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AnomalyUpsert {
    /// Days flagged for the first time.
    pub new_days: usize,
    /// Days flagged before and updated with the new scores (a rerun or a retrained model).
    pub rescored_days: usize,
    pub new_incidents: usize,
    /// New days added to an existing incident.
    pub extended_incidents: usize,
    /// Incidents absorbed by another because a new day bridged them.
    pub merged_incidents: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct AlertRow {
    pub alert_id: i64,
    pub dedupe_key: String,
    pub kind: String,
    pub run_id: Option<i64>,
    pub channel: String,
    pub state: AlertState,
    /// Delivery attempts made (posts, history look-ups, and attempts of senders that died).
    pub attempts: i32,
    pub last_error: Option<String>,
    pub slack_ts: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The sender holding the claim while `sending`.
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// Earliest next attempt of a `pending` row (None = now).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the first attempt started: how far back the history look-up reads.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// The last post may have reached Slack: look it up before posting again.
    pub outcome_unknown: bool,
    /// The alert this row replies to in its thread (a digest), with that alert's Slack ts and state.
    pub thread_of: Option<i64>,
    pub parent_ts: Option<String>,
    pub parent_state: Option<AlertState>,
    /// Name of the file this reply uploads (its bytes: [`PipelineStore::alert_attachment`]).
    pub attachment_name: Option<String>,
    #[serde(skip)]
    pub message: serde_json::Value,
}

/// One channel's digest of a run, with the incidents it announces and its replies.
#[derive(Clone, Debug)]
pub struct QueuedDigest {
    pub dedupe_key: String,
    pub channel: String,
    pub message: serde_json::Value,
    pub incident_ids: Vec<i64>,
    pub replies: Vec<DigestReply>,
}

/// A reply queued with a digest, in its thread: a line of text and, optionally, a file (a chart).
#[derive(Clone, Debug)]
pub struct DigestReply {
    pub dedupe_key: String,
    pub message: serde_json::Value,
    pub attachment: Option<(String, Vec<u8>)>,
}

/// How one attempt on a claimed alert ended, as [`PipelineStore::finish_alert_attempt`] records it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertAttempt {
    pub state: AlertState,
    /// 1 when a post or look-up was made, 0 when the claim is handed back untried (shutdown, a rate limit
    /// that arrived for another alert).
    pub counted: i32,
    pub error: Option<String>,
    pub slack_ts: Option<String>,
    /// For `pending`: not before this.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub outcome_unknown: bool,
}

/// A scored anomalous day to record.
#[derive(Clone, Debug)]
pub struct NewAnomaly {
    pub key: WarehouseKey,
    pub usage_date: NaiveDate,
    pub model_id: i64,
    pub model_version: i32,
    pub run_id: i64,
    pub actual_credits: f64,
    pub expected_credits: f64,
    pub excess_credits: f64,
    pub score: f64,
    pub threshold: f64,
    pub explanation: String,
}

/// A model version to register.
#[derive(Clone, Debug)]
pub struct NewModel {
    pub key: WarehouseKey,
    pub model_kind: String,
    pub params: serde_json::Value,
    pub threshold: f64,
    pub training_start: NaiveDate,
    pub training_end: NaiveDate,
    pub metrics: serde_json::Value,
    pub drift: serde_json::Value,
    pub model: serde_json::Value,
    pub training_run_id: Option<i64>,
}

/// What [`PipelineStore::register_model`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRegistration {
    pub model_id: i64,
    pub version: i32,
    /// False when this training run had registered this warehouse's model already (a retried try): the
    /// existing version is returned and nothing is written.
    pub created: bool,
}

/// One warehouse-day with its decomposition, as written by prep.
#[derive(Clone, Debug)]
pub struct FeatureRow {
    pub usage: DailyUsage,
    pub trend: Option<f64>,
    pub seasonal: Option<f64>,
    pub residual: Option<f64>,
}

const MODEL_COLUMNS: &str = "m.model_id, m.account_name, m.warehouse_name, m.version, m.model_kind, m.threshold, \
    m.training_start, m.training_end, m.metrics, m.drift, m.training_run_id, m.created_at, m.model";
const ANOMALY_COLUMNS: &str = "a.anomaly_id, a.account_name, a.warehouse_name, a.usage_date, a.model_version, a.run_id, \
    a.actual_credits, a.expected_credits, a.excess_credits, a.score, a.threshold, a.explanation, a.incident_start, a.detected_at, \
    a.scored_at, a.incident_id, a.acknowledged_at, a.ack_reason";
const INCIDENT_COLUMNS: &str = "i.incident_id, i.account_name, i.warehouse_name, i.start_day, i.end_day, i.days, i.excess_credits, \
    i.excess_cost, i.peak_score, i.status, i.ack_reason, i.acknowledged_at, i.acknowledged_by, i.resolved_at, i.created_at, i.updated_at, i.alert_id";
const ALERT_COLUMNS: &str = "alert_id, dedupe_key, kind, run_id, channel, message, state, attempts, last_error, slack_ts, created_at, sent_at, \
    claimed_by, claim_expires_at, next_attempt_at, first_attempt_at, outcome_unknown, thread_of, attachment_name, \
    (SELECT p.slack_ts FROM alerts p WHERE p.alert_id = alerts.thread_of) AS parent_ts, \
    (SELECT p.state FROM alerts p WHERE p.alert_id = alerts.thread_of) AS parent_state";
/// Queues a top-level alert once per dedupe key (failure alerts and digests); binds key, kind, run, channel,
/// message, created_at.
const INSERT_ALERT: &str = "INSERT INTO alerts (dedupe_key, kind, run_id, channel, message, state, attempts, created_at) \
    VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING alert_id";
/// A reply waits until the alert it replies to is done (delivered, written, or failed for good).
const PARENT_DONE: &str = "(thread_of IS NULL OR EXISTS (SELECT 1 FROM alerts p WHERE p.alert_id = alerts.thread_of \
    AND p.state IN ('sent', 'written', 'failed')))";

/// How long the release before 0004 let a claim live (it wrote no `claim_expires_at`).
const LEGACY_CLAIM: chrono::Duration = chrono::Duration::minutes(10);

fn parse_state(text: String) -> Result<AlertState, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

macro_rules! pipeline_backend {
    ($module:ident, $DB:ty, begin = $begin:literal, fence = $fence:ident) => {
        pub(crate) mod $module {
            use super::*;
            type DB = $DB;
            type PoolT = sqlx::Pool<DB>;
            type RowT = <DB as sqlx::Database>::Row;

            /// The last statement before a task's commit: refuses the whole transaction when the try lost its
            /// lease (see [`TaskFence`]). `None`: an operator command or a test, not a task try.
            pub async fn check_fence(tx: &mut sqlx::Transaction<'_, DB>, fence: Option<&TaskFence>) -> Result<(), StoreError> {
                match fence {
                    Some(f) => f.$fence(&mut **tx).await,
                    None => Ok(()),
                }
            }

            pub async fn delete_hourly_window(tx: &mut sqlx::Transaction<'_, DB>, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64, StoreError> {
                Ok(sqlx::query("DELETE FROM warehouse_metering_hourly WHERE start_time >= $1 AND start_time < $2")
                    .bind(from)
                    .bind(to)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected())
            }

            /// Marks every day of the load's window loaded (with its hourly row count), replacing earlier marks.
            pub async fn record_loaded_days(tx: &mut sqlx::Transaction<'_, DB>, load: &MeteringLoad<'_>) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM metering_loads WHERE usage_date >= $1 AND usage_date < $2")
                    .bind(load.from)
                    .bind(load.to)
                    .execute(&mut **tx)
                    .await?;
                let mut per_day: BTreeMap<NaiveDate, i64> = BTreeMap::new();
                let mut d = load.from;
                while d < load.to {
                    per_day.insert(d, 0);
                    d = d + chrono::Days::new(1);
                }
                for r in load.hourly {
                    if let Some(n) = per_day.get_mut(&r.start_time.date_naive()) {
                        *n += 1;
                    }
                }
                let now = snowpatrol_store::now();
                let days: Vec<(NaiveDate, i64)> = per_day.into_iter().collect();
                for chunk in days.chunks(1000) {
                    let mut qb = sqlx::QueryBuilder::<DB>::new(
                        "INSERT INTO metering_loads (usage_date, hourly_rows, loaded_by_run_id, loaded_at) ",
                    );
                    qb.push_values(chunk, |mut b, (day, n)| {
                        b.push_bind(*day).push_bind(*n).push_bind(load.run_id).push_bind(now);
                    });
                    qb.build().execute(&mut **tx).await?;
                }
                // Freshness per account moves forward only: reloading an older window (a healed gap) must not
                // make the data look staler than it is.
                let mut newest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
                for r in load.hourly {
                    let at = newest.entry(r.account_name.as_str()).or_insert(r.start_time);
                    *at = (*at).max(r.start_time);
                }
                for (account, hour) in newest {
                    sqlx::query(
                        "INSERT INTO metering_freshness (account_name, newest_hour, loaded_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (account_name) DO UPDATE SET loaded_at = excluded.loaded_at, \
                           newest_hour = CASE WHEN excluded.newest_hour > metering_freshness.newest_hour \
                                              THEN excluded.newest_hour ELSE metering_freshness.newest_hour END",
                    )
                    .bind(account)
                    .bind(hour)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            pub async fn last_loaded_day(pool: &PoolT) -> Result<Option<NaiveDate>, StoreError> {
                Ok(sqlx::query_scalar("SELECT max(usage_date) FROM metering_loads").fetch_one(pool).await?)
            }

            pub async fn loaded_days(pool: &PoolT, since: NaiveDate) -> Result<BTreeSet<NaiveDate>, StoreError> {
                let days: Vec<NaiveDate> = sqlx::query_scalar("SELECT usage_date FROM metering_loads WHERE usage_date >= $1")
                    .bind(since)
                    .fetch_all(pool)
                    .await?;
                Ok(days.into_iter().collect())
            }

            /// SQLite's hourly load (PostgreSQL uses COPY).
            #[allow(dead_code)]
            pub async fn insert_hourly_batched(tx: &mut sqlx::Transaction<'_, DB>, rows: &[MeteringRow], run_id: Option<i64>) -> Result<(), StoreError> {
                for chunk in rows.chunks(2000) {
                    let mut qb = sqlx::QueryBuilder::<DB>::new(
                        "INSERT INTO warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, start_time, end_time, \
                         credits_used, credits_used_compute, credits_used_cloud_services, loaded_by_run_id) ",
                    );
                    qb.push_values(chunk, |mut b, r| {
                        b.push_bind(r.account_name.as_str())
                            .push_bind(r.warehouse_id)
                            .push_bind(r.warehouse_name.as_str())
                            .push_bind(r.service_type.as_str())
                            .push_bind(r.start_time)
                            .push_bind(r.end_time)
                            .push_bind(r.credits_used)
                            .push_bind(r.credits_used_compute)
                            .push_bind(r.credits_used_cloud_services)
                            .push_bind(run_id);
                    });
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            pub async fn upsert_features(pool: &PoolT, rows: &[FeatureRow], fence: Option<&TaskFence>) -> Result<(), StoreError> {
                let mut tx = pool.begin_with($begin).await?;
                upsert_features_in(&mut tx, rows).await?;
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(())
            }

            pub async fn upsert_features_in(tx: &mut sqlx::Transaction<'_, DB>, rows: &[FeatureRow]) -> Result<(), StoreError> {
                let now = snowpatrol_store::now();
                for chunk in rows.chunks(1000) {
                    let mut qb = sqlx::QueryBuilder::<DB>::new(
                        "INSERT INTO warehouse_daily_usage (account_name, warehouse_name, usage_date, credits_used, credits_used_compute, \
                         credits_used_cloud_services, hours_active, peak_hourly_credits, trend, seasonal, residual, updated_at) ",
                    );
                    qb.push_values(chunk, |mut b, f| {
                        let u = &f.usage;
                        b.push_bind(u.key.account_name.as_str())
                            .push_bind(u.key.warehouse_name.as_str())
                            .push_bind(u.date)
                            .push_bind(u.credits)
                            .push_bind(u.credits_compute)
                            .push_bind(u.credits_cloud_services)
                            .push_bind(u.hours_active)
                            .push_bind(u.peak_hourly_credits)
                            .push_bind(f.trend)
                            .push_bind(f.seasonal)
                            .push_bind(f.residual)
                            .push_bind(now);
                    });
                    qb.push(
                        " ON CONFLICT (account_name, warehouse_name, usage_date) DO UPDATE SET credits_used = excluded.credits_used, \
                         credits_used_compute = excluded.credits_used_compute, credits_used_cloud_services = excluded.credits_used_cloud_services, \
                         hours_active = excluded.hours_active, peak_hourly_credits = excluded.peak_hourly_credits, trend = excluded.trend, \
                         seasonal = excluded.seasonal, residual = excluded.residual, updated_at = excluded.updated_at",
                    );
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            fn usage_from_row(r: &RowT) -> Result<DailyUsage, StoreError> {
                Ok(DailyUsage {
                    key: WarehouseKey::new(r.try_get::<String, _>("account_name")?, r.try_get::<String, _>("warehouse_name")?),
                    date: r.try_get("usage_date")?,
                    credits: r.try_get("credits_used")?,
                    credits_compute: r.try_get("credits_used_compute")?,
                    credits_cloud_services: r.try_get("credits_used_cloud_services")?,
                    hours_active: r.try_get("hours_active")?,
                    peak_hourly_credits: r.try_get("peak_hourly_credits")?,
                })
            }

            pub async fn load_daily(pool: &PoolT, key: Option<&WarehouseKey>) -> Result<Vec<DailyUsage>, StoreError> {
                let mut qb = sqlx::QueryBuilder::<DB>::new(
                    "SELECT account_name, warehouse_name, usage_date, credits_used, credits_used_compute, credits_used_cloud_services, \
                     hours_active, peak_hourly_credits FROM warehouse_daily_usage WHERE 1 = 1",
                );
                if let Some(k) = key {
                    qb.push(" AND account_name = ").push_bind(k.account_name.clone());
                    qb.push(" AND warehouse_name = ").push_bind(k.warehouse_name.clone());
                }
                qb.push(" ORDER BY account_name, warehouse_name, usage_date");
                let rows = qb.build().fetch_all(pool).await?;
                rows.iter().map(usage_from_row).collect()
            }

            pub async fn daily_range(pool: &PoolT) -> Result<Option<(NaiveDate, NaiveDate)>, StoreError> {
                let row = sqlx::query("SELECT min(usage_date) AS lo, max(usage_date) AS hi FROM warehouse_daily_usage")
                    .fetch_one(pool)
                    .await?;
                let lo: Option<NaiveDate> = row.try_get("lo")?;
                let hi: Option<NaiveDate> = row.try_get("hi")?;
                Ok(lo.zip(hi))
            }

            pub async fn warehouses(pool: &PoolT, with_model: bool) -> Result<Vec<WarehouseKey>, StoreError> {
                let sql = if with_model {
                    "SELECT DISTINCT account_name, warehouse_name FROM model_aliases WHERE alias = 'latest' ORDER BY account_name, warehouse_name"
                } else {
                    "SELECT DISTINCT account_name, warehouse_name FROM warehouse_daily_usage ORDER BY account_name, warehouse_name"
                };
                let rows = sqlx::query(sql).fetch_all(pool).await?;
                rows.iter().map(|r| Ok(WarehouseKey::new(r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?))).collect()
            }

            fn model_from_row(r: &RowT) -> Result<ModelRow, StoreError> {
                Ok(ModelRow {
                    model_id: r.try_get("model_id")?,
                    account_name: r.try_get("account_name")?,
                    warehouse_name: r.try_get("warehouse_name")?,
                    version: r.try_get("version")?,
                    model_kind: r.try_get("model_kind")?,
                    threshold: r.try_get("threshold")?,
                    training_start: r.try_get("training_start")?,
                    training_end: r.try_get("training_end")?,
                    metrics: r.try_get::<Json<serde_json::Value>, _>("metrics")?.0,
                    drift: r.try_get::<Json<serde_json::Value>, _>("drift")?.0,
                    training_run_id: r.try_get("training_run_id")?,
                    created_at: r.try_get("created_at")?,
                    aliases: r.try_get::<Option<String>, _>("aliases").ok().flatten().unwrap_or_default(),
                    model: r.try_get::<Json<serde_json::Value>, _>("model")?.0,
                })
            }

            pub async fn model_by_alias(pool: &PoolT, key: &WarehouseKey, alias: &str) -> Result<Option<ModelRow>, StoreError> {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {MODEL_COLUMNS}, a.alias AS aliases FROM model_aliases a JOIN models m ON m.model_id = a.model_id \
                     WHERE a.account_name = $1 AND a.warehouse_name = $2 AND a.alias = $3"
                )))
                .bind(&key.account_name)
                .bind(&key.warehouse_name)
                .bind(alias)
                .fetch_optional(pool)
                .await?;
                row.as_ref().map(model_from_row).transpose()
            }

            pub async fn register_model(pool: &PoolT, m: &NewModel, fence: Option<&TaskFence>) -> Result<ModelRegistration, StoreError> {
                let now = snowpatrol_store::now();
                let mut tx = pool.begin_with($begin).await?;
                // One version per (training run, warehouse): a retried or stale try of the same run gets the
                // version the first try registered (the unique index `models_once_per_run` backs this up).
                if let Some(run_id) = m.training_run_id {
                    let existing: Option<(i64, i32)> = sqlx::query_as(
                        "SELECT model_id, version FROM models WHERE training_run_id = $1 AND account_name = $2 AND warehouse_name = $3 \
                         AND duplicate_of_model_id IS NULL",
                    )
                    .bind(run_id)
                    .bind(&m.key.account_name)
                    .bind(&m.key.warehouse_name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((model_id, version)) = existing {
                        return Ok(ModelRegistration { model_id, version, created: false });
                    }
                }
                let version: i32 = sqlx::query_scalar(
                    "SELECT CAST(coalesce(max(version), 0) + 1 AS INTEGER) FROM models WHERE account_name = $1 AND warehouse_name = $2",
                )
                .bind(&m.key.account_name)
                .bind(&m.key.warehouse_name)
                .fetch_one(&mut *tx)
                .await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, training_end, \
                     metrics, drift, model, training_run_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING model_id",
                )
                .bind(&m.key.account_name)
                .bind(&m.key.warehouse_name)
                .bind(version)
                .bind(&m.model_kind)
                .bind(Json(&m.params))
                .bind(m.threshold)
                .bind(m.training_start)
                .bind(m.training_end)
                .bind(Json(&m.metrics))
                .bind(Json(&m.drift))
                .bind(Json(&m.model))
                .bind(m.training_run_id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO model_aliases (account_name, warehouse_name, alias, model_id, updated_at) VALUES ($1, $2, 'latest', $3, $4) \
                     ON CONFLICT (account_name, warehouse_name, alias) DO UPDATE SET model_id = excluded.model_id, updated_at = excluded.updated_at",
                )
                .bind(&m.key.account_name)
                .bind(&m.key.warehouse_name)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(ModelRegistration { model_id: id, version, created: true })
            }

            pub async fn list_models(pool: &PoolT, warehouse: Option<&str>) -> Result<Vec<ModelRow>, StoreError> {
                let mut qb = sqlx::QueryBuilder::<DB>::new(format!(
                    "SELECT {MODEL_COLUMNS}, (SELECT min(a.alias) FROM model_aliases a WHERE a.model_id = m.model_id) AS aliases FROM models m WHERE 1 = 1"
                ));
                if let Some(w) = warehouse {
                    qb.push(" AND (m.warehouse_name = ").push_bind(w.to_string());
                    qb.push(" OR m.account_name || '.' || m.warehouse_name = ").push_bind(w.to_string()).push(")");
                }
                qb.push(" ORDER BY m.account_name, m.warehouse_name, m.version");
                let rows = qb.build().fetch_all(pool).await?;
                rows.iter().map(model_from_row).collect()
            }

            fn anomaly_from_row(r: &RowT) -> Result<AnomalyRow, StoreError> {
                Ok(AnomalyRow {
                    anomaly_id: r.try_get("anomaly_id")?,
                    account_name: r.try_get("account_name")?,
                    warehouse_name: r.try_get("warehouse_name")?,
                    usage_date: r.try_get("usage_date")?,
                    model_version: r.try_get("model_version")?,
                    run_id: r.try_get("run_id")?,
                    actual_credits: r.try_get("actual_credits")?,
                    expected_credits: r.try_get("expected_credits")?,
                    excess_credits: r.try_get("excess_credits")?,
                    score: r.try_get("score")?,
                    threshold: r.try_get("threshold")?,
                    explanation: r.try_get("explanation")?,
                    incident_start: r.try_get("incident_start")?,
                    detected_at: r.try_get("detected_at")?,
                    scored_at: r.try_get("scored_at")?,
                    incident_id: r.try_get("incident_id")?,
                    acknowledged_at: r.try_get("acknowledged_at")?,
                    ack_reason: r.try_get("ack_reason")?,
                })
            }

            fn incident_from_row(r: &RowT) -> Result<IncidentRow, StoreError> {
                let status: String = r.try_get("status")?;
                let reason: Option<String> = r.try_get("ack_reason")?;
                Ok(IncidentRow {
                    incident_id: r.try_get("incident_id")?,
                    account_name: r.try_get("account_name")?,
                    warehouse_name: r.try_get("warehouse_name")?,
                    start_day: r.try_get("start_day")?,
                    end_day: r.try_get("end_day")?,
                    days: r.try_get("days")?,
                    excess_credits: r.try_get("excess_credits")?,
                    excess_cost: r.try_get("excess_cost")?,
                    peak_score: r.try_get("peak_score")?,
                    status: status.parse().map_err(StoreError::Corrupt)?,
                    ack_reason: reason.map(|r| r.parse()).transpose().map_err(StoreError::Corrupt)?,
                    acknowledged_at: r.try_get("acknowledged_at")?,
                    acknowledged_by: r.try_get("acknowledged_by")?,
                    resolved_at: r.try_get("resolved_at")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                    alert_id: r.try_get("alert_id")?,
                })
            }

            async fn incident_in_tx(tx: &mut sqlx::Transaction<'_, DB>, id: i64) -> Result<IncidentRow, StoreError> {
                let row = sqlx::query(AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.incident_id = $1")))
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
                incident_from_row(&row)
            }

            /// Recomputes an incident from its days (range, count, totals, cost, peak), reopens it when it grew at
            /// its end after being resolved, and mirrors its start day and acknowledgement onto its days.
            async fn refresh_incident(tx: &mut sqlx::Transaction<'_, DB>, id: i64, price: Option<f64>, grew: bool, now: DateTime<Utc>) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE incidents SET \
                       start_day = (SELECT min(usage_date) FROM anomalies WHERE incident_id = $1), \
                       end_day = (SELECT max(usage_date) FROM anomalies WHERE incident_id = $1), \
                       days = (SELECT count(*) FROM anomalies WHERE incident_id = $1), \
                       excess_credits = (SELECT sum(excess_credits) FROM anomalies WHERE incident_id = $1), \
                       excess_cost = (SELECT sum(excess_credits) FROM anomalies WHERE incident_id = $1) * $2, \
                       peak_score = (SELECT max(score) FROM anomalies WHERE incident_id = $1), \
                       updated_at = $3 \
                     WHERE incident_id = $1",
                )
                .bind(id)
                .bind(price)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                if grew {
                    sqlx::query("UPDATE incidents SET status = 'open', resolved_at = NULL WHERE incident_id = $1 AND status = 'resolved'")
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                }
                let inc = incident_in_tx(tx, id).await?;
                sqlx::query("UPDATE anomalies SET incident_start = $1 WHERE incident_id = $2 AND incident_start <> $1")
                    .bind(inc.start_day)
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                if inc.status == IncidentStatus::Acknowledged {
                    sqlx::query("UPDATE anomalies SET acknowledged_at = $1, ack_reason = $2 WHERE incident_id = $3 AND acknowledged_at IS NULL")
                        .bind(inc.acknowledged_at)
                        .bind(inc.ack_reason.map(|r| r.as_str()))
                        .bind(id)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Moves the days of `other` to `keep` and deletes `other`. The merged incident is acknowledged when
            /// either was, with the earlier acknowledgement (time, reason, who).
            async fn merge_incidents(tx: &mut sqlx::Transaction<'_, DB>, keep: i64, other: i64) -> Result<(), StoreError> {
                let (k, o) = (incident_in_tx(tx, keep).await?, incident_in_tx(tx, other).await?);
                let take_ack = o.status == IncidentStatus::Acknowledged
                    && (k.status != IncidentStatus::Acknowledged || o.acknowledged_at < k.acknowledged_at);
                if take_ack {
                    sqlx::query("UPDATE incidents SET status = 'acknowledged', ack_reason = $1, acknowledged_at = $2, acknowledged_by = $3 WHERE incident_id = $4")
                        .bind(o.ack_reason.map(|r| r.as_str()))
                        .bind(o.acknowledged_at)
                        .bind(o.acknowledged_by.as_deref())
                        .bind(keep)
                        .execute(&mut **tx)
                        .await?;
                }
                if o.status == IncidentStatus::Open && k.status == IncidentStatus::Resolved {
                    sqlx::query("UPDATE incidents SET status = 'open', resolved_at = NULL WHERE incident_id = $1")
                        .bind(keep)
                        .execute(&mut **tx)
                        .await?;
                }
                // Announced when either was: the merged incident is not news.
                if k.alert_id.is_none() && o.alert_id.is_some() {
                    sqlx::query("UPDATE incidents SET alert_id = $1 WHERE incident_id = $2")
                        .bind(o.alert_id)
                        .bind(keep)
                        .execute(&mut **tx)
                        .await?;
                }
                sqlx::query("UPDATE anomalies SET incident_id = $1 WHERE incident_id = $2")
                    .bind(keep)
                    .bind(other)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("DELETE FROM incidents WHERE incident_id = $1").bind(other).execute(&mut **tx).await?;
                widen_incident(tx, keep, o.start_day).await?;
                widen_incident(tx, keep, o.end_day).await
            }

            /// Stretches an incident's range to cover `day`, so later days of the same batch find it as their
            /// neighbour; its totals are recomputed once per batch by `refresh_incident`.
            async fn widen_incident(tx: &mut sqlx::Transaction<'_, DB>, id: i64, day: NaiveDate) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE incidents SET start_day = CASE WHEN $2 < start_day THEN $2 ELSE start_day END, \
                     end_day = CASE WHEN $2 > end_day THEN $2 ELSE end_day END WHERE incident_id = $1",
                )
                .bind(id)
                .bind(day)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// Records flagged days: a day flagged before is updated in place (model, run, scores, scored_at); a
            /// new day joins the incident of an adjacent day (merging two incidents it bridges) or starts one.
            /// Incident totals are recomputed once per touched incident at the end of the batch (predict re-scores
            /// the same days on every run); everything commits in one transaction. `lock` (PostgreSQL)
            /// serializes writers per warehouse so two predict runs cannot split one incident.
            pub async fn upsert_anomalies(pool: &PoolT, rows: &[NewAnomaly], price: Option<f64>, lock: &str, fence: Option<&TaskFence>) -> Result<AnomalyUpsert, StoreError> {
                let mut out = AnomalyUpsert::default();
                if rows.is_empty() {
                    return Ok(out);
                }
                let now = snowpatrol_store::now();
                let mut sorted: Vec<&NewAnomaly> = rows.iter().collect();
                sorted.sort_by(|a, b| (&a.key, a.usage_date).cmp(&(&b.key, b.usage_date)));
                let mut tx = pool.begin_with($begin).await?;
                let mut locked: BTreeSet<&WarehouseKey> = BTreeSet::new();
                // Incident id -> whether it grew at its end (a resolved one is then reopened).
                let mut touched: BTreeMap<i64, bool> = BTreeMap::new();
                for a in sorted {
                    if !lock.is_empty() && locked.insert(&a.key) {
                        sqlx::query(AssertSqlSafe(lock.to_string()))
                            .bind(&a.key.account_name)
                            .bind(&a.key.warehouse_name)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let existing: Option<i64> = sqlx::query_scalar(
                        "SELECT incident_id FROM anomalies WHERE account_name = $1 AND warehouse_name = $2 AND usage_date = $3",
                    )
                    .bind(&a.key.account_name)
                    .bind(&a.key.warehouse_name)
                    .bind(a.usage_date)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(incident_id) = existing {
                        sqlx::query(
                            "UPDATE anomalies SET model_id = $1, model_version = $2, run_id = $3, actual_credits = $4, expected_credits = $5, \
                             excess_credits = $6, score = $7, threshold = $8, explanation = $9, scored_at = $10 \
                             WHERE account_name = $11 AND warehouse_name = $12 AND usage_date = $13",
                        )
                        .bind(a.model_id)
                        .bind(a.model_version)
                        .bind(a.run_id)
                        .bind(a.actual_credits)
                        .bind(a.expected_credits)
                        .bind(a.excess_credits)
                        .bind(a.score)
                        .bind(a.threshold)
                        .bind(&a.explanation)
                        .bind(now)
                        .bind(&a.key.account_name)
                        .bind(&a.key.warehouse_name)
                        .bind(a.usage_date)
                        .execute(&mut *tx)
                        .await?;
                        touched.entry(incident_id).or_insert(false);
                        out.rescored_days += 1;
                        continue;
                    }
                    // Every day between an incident's start and end is one of its days, so a new day is in no
                    // incident; at most two touch it: one ending the day before and one starting the day after.
                    let neighbours: Vec<(i64, NaiveDate)> = sqlx::query_as(
                        "SELECT incident_id, end_day FROM incidents WHERE account_name = $1 AND warehouse_name = $2 \
                         AND end_day >= $3 AND start_day <= $4 ORDER BY start_day",
                    )
                    .bind(&a.key.account_name)
                    .bind(&a.key.warehouse_name)
                    .bind(a.usage_date - chrono::Days::new(1))
                    .bind(a.usage_date + chrono::Days::new(1))
                    .fetch_all(&mut *tx)
                    .await?;
                    // A resolved incident that grows at its end is going on after all: it is reopened.
                    let grew_at_end = neighbours.last().is_some_and(|(_, end)| a.usage_date > *end);
                    let incident_id = match neighbours.split_first() {
                        None => {
                            out.new_incidents += 1;
                            sqlx::query_scalar(
                                "INSERT INTO incidents (account_name, warehouse_name, start_day, end_day, days, excess_credits, excess_cost, \
                                 peak_score, status, created_at, updated_at) VALUES ($1, $2, $3, $3, 1, $4, $5, $6, 'open', $7, $7) RETURNING incident_id",
                            )
                            .bind(&a.key.account_name)
                            .bind(&a.key.warehouse_name)
                            .bind(a.usage_date)
                            .bind(a.excess_credits)
                            .bind(price.map(|p| p * a.excess_credits))
                            .bind(a.score)
                            .bind(now)
                            .fetch_one(&mut *tx)
                            .await?
                        }
                        Some((&(keep, _), others)) => {
                            out.extended_incidents += 1;
                            for &(other, _) in others {
                                merge_incidents(&mut tx, keep, other).await?;
                                out.merged_incidents += 1;
                                if touched.remove(&other) == Some(true) {
                                    touched.insert(keep, true);
                                }
                            }
                            widen_incident(&mut tx, keep, a.usage_date).await?;
                            keep
                        }
                    };
                    sqlx::query(
                        "INSERT INTO anomalies (account_name, warehouse_name, usage_date, model_id, model_version, run_id, actual_credits, \
                         expected_credits, excess_credits, score, threshold, explanation, incident_start, detected_at, scored_at, incident_id) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $3, $13, $13, $14)",
                    )
                    .bind(&a.key.account_name)
                    .bind(&a.key.warehouse_name)
                    .bind(a.usage_date)
                    .bind(a.model_id)
                    .bind(a.model_version)
                    .bind(a.run_id)
                    .bind(a.actual_credits)
                    .bind(a.expected_credits)
                    .bind(a.excess_credits)
                    .bind(a.score)
                    .bind(a.threshold)
                    .bind(&a.explanation)
                    .bind(now)
                    .bind(incident_id)
                    .execute(&mut *tx)
                    .await?;
                    *touched.entry(incident_id).or_insert(false) |= grew_at_end;
                    out.new_days += 1;
                }
                for (id, grew) in touched {
                    refresh_incident(&mut tx, id, price, grew, now).await?;
                }
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(out)
            }

            /// Marks `resolved` the open incidents of a warehouse that end before `newest_scored_day`: a later
            /// day was scored and the incident did not grow into it.
            pub async fn resolve_incidents(pool: &PoolT, key: &WarehouseKey, newest_scored_day: NaiveDate, fence: Option<&TaskFence>) -> Result<u64, StoreError> {
                let now = snowpatrol_store::now();
                let mut tx = pool.begin_with($begin).await?;
                let n = sqlx::query(
                    "UPDATE incidents SET status = 'resolved', resolved_at = $1, updated_at = $1 \
                     WHERE account_name = $2 AND warehouse_name = $3 AND status = 'open' AND end_day < $4",
                )
                .bind(now)
                .bind(&key.account_name)
                .bind(&key.warehouse_name)
                .bind(newest_scored_day)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(n)
            }

            fn push_filter(qb: &mut sqlx::QueryBuilder<DB>, f: &IncidentFilter, day_column: &str) {
                if let Some(since) = f.since {
                    qb.push(format_args!(" AND {day_column} >= ")).push_bind(since);
                }
                if let Some(w) = &f.warehouse {
                    qb.push(" AND (i.warehouse_name = ").push_bind(w.clone());
                    qb.push(" OR i.account_name || '.' || i.warehouse_name = ").push_bind(w.clone()).push(")");
                }
                if !f.statuses.is_empty() {
                    qb.push(" AND i.status IN (");
                    let mut list = qb.separated(", ");
                    for st in &f.statuses {
                        list.push_bind(st.as_str());
                    }
                    list.push_unseparated(")");
                }
                if !f.incident_ids.is_empty() {
                    qb.push(" AND i.incident_id IN (");
                    let mut list = qb.separated(", ");
                    for id in &f.incident_ids {
                        list.push_bind(*id);
                    }
                    list.push_unseparated(")");
                }
            }

            pub async fn list_incidents(pool: &PoolT, f: &IncidentFilter) -> Result<Vec<IncidentRow>, StoreError> {
                let mut qb = sqlx::QueryBuilder::<DB>::new(format!("SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE 1 = 1"));
                push_filter(&mut qb, f, "i.end_day");
                qb.push(" ORDER BY i.account_name, i.warehouse_name, i.start_day");
                let rows = qb.build().fetch_all(pool).await?;
                rows.iter().map(incident_from_row).collect()
            }

            pub async fn list_anomalies(pool: &PoolT, f: &IncidentFilter) -> Result<Vec<AnomalyRow>, StoreError> {
                let mut qb = sqlx::QueryBuilder::<DB>::new(format!(
                    "SELECT {ANOMALY_COLUMNS} FROM anomalies a JOIN incidents i ON i.incident_id = a.incident_id WHERE 1 = 1"
                ));
                push_filter(&mut qb, f, "a.usage_date");
                qb.push(" ORDER BY a.account_name, a.warehouse_name, a.usage_date");
                let rows = qb.build().fetch_all(pool).await?;
                rows.iter().map(anomaly_from_row).collect()
            }

            pub async fn anomalies_since(pool: &PoolT, since: NaiveDate, key: Option<&WarehouseKey>) -> Result<Vec<AnomalyRow>, StoreError> {
                let mut qb = sqlx::QueryBuilder::<DB>::new(format!("SELECT {ANOMALY_COLUMNS} FROM anomalies a WHERE a.usage_date >= "));
                qb.push_bind(since);
                if let Some(k) = key {
                    qb.push(" AND a.account_name = ").push_bind(k.account_name.clone());
                    qb.push(" AND a.warehouse_name = ").push_bind(k.warehouse_name.clone());
                }
                qb.push(" ORDER BY a.account_name, a.warehouse_name, a.usage_date");
                let rows = qb.build().fetch_all(pool).await?;
                rows.iter().map(anomaly_from_row).collect()
            }

            pub async fn incident(pool: &PoolT, id: i64) -> Result<Option<IncidentRow>, StoreError> {
                let row = sqlx::query(AssertSqlSafe(format!("SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.incident_id = $1")))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                row.as_ref().map(incident_from_row).transpose()
            }

            /// Acknowledges an incident and every one of its days (acking again overwrites the reason).
            pub async fn ack_incident(pool: &PoolT, id: i64, reason: AckReason, by: Option<&str>) -> Result<bool, StoreError> {
                let now = snowpatrol_store::now();
                let mut tx = pool.begin_with($begin).await?;
                let n = sqlx::query(
                    "UPDATE incidents SET status = 'acknowledged', ack_reason = $1, acknowledged_at = $2, acknowledged_by = $3, updated_at = $2 \
                     WHERE incident_id = $4",
                )
                .bind(reason.as_str())
                .bind(now)
                .bind(by)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("UPDATE anomalies SET acknowledged_at = $1, ack_reason = $2 WHERE incident_id = $3")
                    .bind(now)
                    .bind(reason.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(n > 0)
            }

            /// Acknowledges the incident of an anomalous day; returns that incident's id.
            pub async fn ack_anomaly(pool: &PoolT, anomaly_id: i64, reason: AckReason, by: Option<&str>) -> Result<Option<i64>, StoreError> {
                let incident: Option<i64> = sqlx::query_scalar("SELECT incident_id FROM anomalies WHERE anomaly_id = $1")
                    .bind(anomaly_id)
                    .fetch_optional(pool)
                    .await?;
                match incident {
                    Some(id) if ack_incident(pool, id, reason, by).await? => Ok(Some(id)),
                    _ => Ok(None),
                }
            }

            pub async fn save_report(pool: &PoolT, run_id: i64, markdown: &str, path: &str, anomalies: i32, fence: Option<&TaskFence>) -> Result<(), StoreError> {
                let mut tx = pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO reports (run_id, markdown, path, anomalies, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (run_id) DO UPDATE SET markdown = excluded.markdown, path = excluded.path, anomalies = excluded.anomalies",
                )
                .bind(run_id)
                .bind(markdown)
                .bind(path)
                .bind(anomalies)
                .bind(snowpatrol_store::now())
                .execute(&mut *tx)
                .await?;
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(())
            }

            pub async fn report_markdown(pool: &PoolT, run_id: i64) -> Result<Option<(String, String)>, StoreError> {
                let row = sqlx::query("SELECT markdown, path FROM reports WHERE run_id = $1").bind(run_id).fetch_optional(pool).await?;
                row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
            }

            /// Enqueues an alert (`pending`, due now). `None` when an alert with this dedupe key exists already (it
            /// was sent, or is queued or being sent): one alert per key, ever.
            pub async fn insert_alert(pool: &PoolT, dedupe_key: &str, kind: &str, run_id: Option<i64>, channel: &str, message: &serde_json::Value, fence: Option<&TaskFence>) -> Result<Option<i64>, StoreError> {
                let mut tx = pool.begin_with($begin).await?;
                let id = sqlx::query_scalar(
                    INSERT_ALERT,
                )
                .bind(dedupe_key)
                .bind(kind)
                .bind(run_id)
                .bind(channel)
                .bind(Json(message))
                .bind(snowpatrol_store::now())
                .fetch_optional(&mut *tx)
                .await?;
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(id)
            }

            /// Queues a run's digests (one per channel) with their replies and marks the incidents they announce, in
            /// one fenced transaction: an incident is announced (`incidents.alert_id`) by the first digest naming
            /// it. `Ok(vec![])` when the first digest was queued before (a retried try queues nothing);
            /// [`StoreError::Conflict`] when another run announced one of the incidents meanwhile (nothing is
            /// written; the caller's retry recomputes the list).
            pub async fn enqueue_digests(pool: &PoolT, kind: &str, run_id: Option<i64>, digests: &[QueuedDigest], fence: Option<&TaskFence>) -> Result<Vec<i64>, StoreError> {
                let mut tx = pool.begin_with($begin).await?;
                let mut ids = Vec::new();
                let mut wanted = BTreeSet::new();
                let mut marked = 0;
                for d in digests {
                    let id: Option<i64> = sqlx::query_scalar(
                        INSERT_ALERT,
                    )
                    .bind(&d.dedupe_key)
                    .bind(kind)
                    .bind(run_id)
                    .bind(&d.channel)
                    .bind(Json(&d.message))
                    .bind(snowpatrol_store::now())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(id) = id else {
                        // Queued by an earlier try of this run: all of its digests were, in one transaction.
                        tx.rollback().await?;
                        return Ok(Vec::new());
                    };
                    ids.push(id);
                    wanted.extend(d.incident_ids.iter().copied());
                    // Chunked: both backends cap the number of bind parameters of one statement.
                    for chunk in d.incident_ids.chunks(1000) {
                        let mut qb = sqlx::QueryBuilder::<DB>::new("UPDATE incidents SET alert_id = ");
                        qb.push_bind(id);
                        qb.push(" WHERE alert_id IS NULL AND incident_id IN (");
                        let mut list = qb.separated(", ");
                        for i in chunk {
                            list.push_bind(*i);
                        }
                        qb.push(")");
                        marked += qb.build().execute(&mut *tx).await?.rows_affected();
                    }
                    for r in &d.replies {
                        let (name, bytes) = match &r.attachment {
                            Some((n, b)) => (Some(n.as_str()), Some(b.as_slice())),
                            None => (None, None),
                        };
                        sqlx::query(
                            "INSERT INTO alerts (dedupe_key, kind, run_id, channel, message, state, attempts, created_at, thread_of, attachment, attachment_name) \
                             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8, $9)",
                        )
                        .bind(&r.dedupe_key)
                        .bind(kind)
                        .bind(run_id)
                        .bind(&d.channel)
                        .bind(Json(&r.message))
                        .bind(snowpatrol_store::now())
                        .bind(id)
                        .bind(bytes)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if marked != wanted.len() as u64 {
                    tx.rollback().await?;
                    return Err(StoreError::Conflict(format!(
                        "{} of the {} incidents of run {run_id:?}'s digests were announced by another alert meanwhile",
                        wanted.len() as u64 - marked,
                        wanted.len()
                    )));
                }
                check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(ids)
            }

            /// The file a reply uploads, by alert id.
            pub async fn alert_attachment(pool: &PoolT, id: i64) -> Result<Option<(String, Vec<u8>)>, StoreError> {
                let row: Option<(Option<String>, Option<Vec<u8>>)> =
                    sqlx::query_as("SELECT attachment_name, attachment FROM alerts WHERE alert_id = $1")
                        .bind(id)
                        .fetch_optional(pool)
                        .await?;
                Ok(row.and_then(|(n, b)| Some((n.unwrap_or_else(|| format!("alert-{id}")), b?))))
            }

            /// Records the end of an attempt on a row `sender` claimed. False when the claim was lost meanwhile (it
            /// expired and another sender took the row over): then nothing is written, the other sender decides.
            pub async fn finish_alert_attempt(pool: &PoolT, id: i64, sender: &str, a: &AlertAttempt) -> Result<bool, StoreError> {
                let now = snowpatrol_store::now();
                let sent = matches!(a.state, AlertState::Sent | AlertState::Written).then_some(now);
                let done = sqlx::query(
                    "UPDATE alerts SET state = $1, attempts = attempts + $2, last_error = $3, slack_ts = COALESCE($4, slack_ts), \
                       attachment = CASE WHEN $1 IN ('sent', 'written') THEN NULL ELSE attachment END, \
                       sent_at = $5, next_attempt_at = $6, outcome_unknown = $7, claimed_by = NULL, claim_expires_at = NULL \
                     WHERE alert_id = $8 AND state = 'sending' AND claimed_by = $9",
                )
                .bind(a.state.as_str())
                .bind(a.counted)
                .bind(a.error.as_deref())
                .bind(a.slack_ts.as_deref())
                .bind(sent)
                .bind(a.next_attempt_at)
                .bind(a.outcome_unknown)
                .bind(id)
                .bind(sender)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            /// Claims up to `limit` alerts for `sender` until `expires`: `pending` rows that are due, and `sending`
            /// rows whose claim expired (their sender died mid-attempt: that attempt is counted and its outcome is
            /// unknown, so the new sender looks in Slack's history before posting). The claim is a state change
            /// (rows locked with SKIP LOCKED on PostgreSQL), so two senders never hold the same row. A row a replica of
            /// the previous release claimed during a rolling upgrade has no `claim_expires_at`: its old 10-minute
            /// rule applies.
            pub async fn claim_alerts(pool: &PoolT, sender: &str, expires: DateTime<Utc>, limit: i64, skip_locked: &str) -> Result<Vec<AlertRow>, StoreError> {
                let now = snowpatrol_store::now();
                let mut tx = pool.begin_with($begin).await?;
                let rows = sqlx::query(AssertSqlSafe(format!(
                    "UPDATE alerts SET state = 'sending', claimed_by = $1, claimed_at = $2, claim_expires_at = $3, \
                       first_attempt_at = COALESCE(first_attempt_at, $2), \
                       attempts = attempts + CASE WHEN state = 'sending' THEN 1 ELSE 0 END, \
                       outcome_unknown = (outcome_unknown OR state = 'sending') \
                     WHERE alert_id IN (\
                       SELECT alert_id FROM alerts \
                       WHERE ((state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)) \
                          OR (state = 'sending' AND claim_expires_at < $2) \
                          OR (state = 'sending' AND claim_expires_at IS NULL AND claimed_at < $5)) \
                         AND {PARENT_DONE} \
                       ORDER BY alert_id LIMIT $4 {skip_locked}) \
                     RETURNING {ALERT_COLUMNS}"
                )))
                .bind(sender)
                .bind(now)
                .bind(expires)
                .bind(limit)
                .bind(now - LEGACY_CLAIM)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let mut rows = rows.iter().map(alert_from_row).collect::<Result<Vec<_>, _>>()?;
                rows.sort_by_key(|a| a.alert_id);
                Ok(rows)
            }

            /// When the next undelivered alert becomes due: the earliest `next_attempt_at` of a pending row (its
            /// creation when due now) or claim expiry of a sending row; None when nothing is undelivered.
            pub async fn next_alert_due(pool: &PoolT) -> Result<Option<DateTime<Utc>>, StoreError> {
                Ok(sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT min(CASE WHEN state = 'pending' THEN COALESCE(next_attempt_at, created_at) ELSE claim_expires_at END) \
                     FROM alerts WHERE state IN ('pending', 'sending') AND {PARENT_DONE}",
                )))
                .fetch_one(pool)
                .await?)
            }

            /// What a metrics scrape reads from the pipeline's tables: the outbox's undelivered and failed rows,
            /// open incidents and data freshness, each through a partial index or a table of one row per account.
            pub async fn scrape_gauges(pool: &PoolT) -> Result<ScrapeGauges, StoreError> {
                let mut g = ScrapeGauges::default();
                for r in sqlx::query("SELECT state, count(*), min(created_at) FROM alerts WHERE state IN ('pending', 'sending') GROUP BY state")
                    .fetch_all(pool)
                    .await?
                {
                    g.outbox.push((parse_state(r.try_get(0)?)?, r.try_get(1)?));
                    let oldest: Option<DateTime<Utc>> = r.try_get(2)?;
                    g.oldest_undelivered = match (g.oldest_undelivered, oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE state = 'failed'").fetch_one(pool).await?;
                g.outbox.push((AlertState::Failed, failed));
                for r in sqlx::query(
                    "SELECT account_name, count(*), sum(excess_credits) FROM incidents WHERE status = 'open' GROUP BY account_name",
                )
                .fetch_all(pool)
                .await?
                {
                    g.open_incidents.push((r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<f64>, _>(2)?.unwrap_or(0.0)));
                }
                for r in sqlx::query("SELECT account_name, newest_hour, loaded_at FROM metering_freshness").fetch_all(pool).await? {
                    g.freshness.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
                }
                Ok(g)
            }

            fn alert_from_row(r: &RowT) -> Result<AlertRow, StoreError> {
                Ok(AlertRow {
                    alert_id: r.try_get("alert_id")?,
                    dedupe_key: r.try_get("dedupe_key")?,
                    kind: r.try_get("kind")?,
                    run_id: r.try_get("run_id")?,
                    channel: r.try_get("channel")?,
                    state: parse_state(r.try_get("state")?)?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    slack_ts: r.try_get("slack_ts")?,
                    created_at: r.try_get("created_at")?,
                    sent_at: r.try_get("sent_at")?,
                    claimed_by: r.try_get("claimed_by")?,
                    claim_expires_at: r.try_get("claim_expires_at")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    first_attempt_at: r.try_get("first_attempt_at")?,
                    outcome_unknown: r.try_get("outcome_unknown")?,
                    thread_of: r.try_get("thread_of")?,
                    parent_ts: r.try_get("parent_ts")?,
                    parent_state: r
                        .try_get::<Option<String>, _>("parent_state")?
                        .map(parse_state)
                        .transpose()?,
                    attachment_name: r.try_get("attachment_name")?,
                    message: r.try_get::<Json<serde_json::Value>, _>("message")?.0,
                })
            }

            pub async fn list_alerts(pool: &PoolT, pending_only: bool, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
                let filter = if pending_only { "WHERE state IN ('pending', 'sending')" } else { "" };
                let rows = sqlx::query(AssertSqlSafe(format!("SELECT {ALERT_COLUMNS} FROM alerts {filter} ORDER BY alert_id DESC LIMIT $1")))
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(alert_from_row).collect()
            }
        }
    };
}

pipeline_backend!(pg, sqlx::Postgres, begin = "BEGIN", fence = check_postgres);
pipeline_backend!(
    lite,
    sqlx::Sqlite,
    begin = "BEGIN IMMEDIATE",
    fence = check_sqlite
);

/// Serializes incident maintenance per warehouse on PostgreSQL (transaction-scoped advisory lock, two-key form).
/// SQLite writers are serialized anyway.
const PG_WAREHOUSE_LOCK: &str =
    "SELECT pg_advisory_xact_lock(1936682871, hashtext($1 || '.' || $2))";

macro_rules! dispatch {
    ($db:expr, $f:ident ( $($arg:expr),* )) => {
        match $db.pool() {
            Pool::Postgres(p) => pg::$f(p $(, $arg)*).await,
            Pool::Sqlite(p) => lite::$f(p $(, $arg)*).await,
        }
    };
}

/// The pipeline's side of a metrics scrape (see `scrape_gauges`).
#[derive(Clone, Debug, Default)]
pub struct ScrapeGauges {
    /// Alert outbox rows by state: pending, sending and failed (delivered rows are history).
    pub outbox: Vec<(AlertState, i64)>,
    /// Creation time of the oldest pending or sending alert.
    pub oldest_undelivered: Option<DateTime<Utc>>,
    /// (account, open incidents, their excess credits).
    pub open_incidents: Vec<(String, i64, f64)>,
    /// (account, newest hourly row loaded, when prep last loaded it).
    pub freshness: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
}

/// Typed access to the pipeline's tables.
#[derive(Clone, Debug)]
pub struct PipelineStore {
    db: Database,
}

impl PipelineStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// One prep load: replaces the hourly rows with START_TIME in the window's days and the daily rows of those
    /// days, then marks the days in the load ledger (`metering_loads`), every transaction fenced by the task's
    /// lease. The ledger is what makes it all-or-nothing: its marks for the window are removed in the hourly
    /// transaction and written back only after both loads committed, so after an interruption anywhere the
    /// window's first day is missing from the ledger and the next prep reloads the whole window (see
    /// [`PipelineStore::loaded_days`]). On PostgreSQL the hourly and daily loads (binary COPY) run at once on
    /// two connections, which saves about a fifth of prep's time against one transaction for both (measured in
    /// docs/benchmarks.md); SQLite serializes writers, so it uses one transaction.
    pub async fn load_metering(
        &self,
        load: &MeteringLoad<'_>,
        fence: Option<&TaskFence>,
    ) -> Result<u64, StoreError> {
        let (from, to) = (day_start(load.from), day_start(load.to));
        match self.db.pool() {
            Pool::Postgres(p) => {
                let hourly = async {
                    let mut tx = p.begin().await?;
                    sqlx::query(
                        "DELETE FROM metering_loads WHERE usage_date >= $1 AND usage_date < $2",
                    )
                    .bind(load.from)
                    .bind(load.to)
                    .execute(&mut *tx)
                    .await?;
                    let deleted = pg::delete_hourly_window(&mut tx, from, to).await?;
                    copy_hourly(&mut tx, load.hourly, load.run_id).await?;
                    snowpatrol_store::failpoint("prep.load.before_commit")?;
                    pg::check_fence(&mut tx, fence).await?;
                    tx.commit().await?;
                    Ok::<u64, StoreError>(deleted)
                };
                let daily = async {
                    let mut tx = p.begin().await?;
                    sqlx::query("DELETE FROM warehouse_daily_usage WHERE usage_date >= $1 AND usage_date < $2")
                        .bind(load.from)
                        .bind(load.to)
                        .execute(&mut *tx)
                        .await?;
                    copy_daily(&mut tx, load.daily).await?;
                    pg::check_fence(&mut tx, fence).await?;
                    tx.commit().await?;
                    Ok::<(), StoreError>(())
                };
                let (hourly, daily) = tokio::join!(hourly, daily);
                let deleted = hourly?;
                daily?;
                snowpatrol_store::failpoint("prep.load.before_ledger")?;
                let mut tx = p.begin().await?;
                pg::record_loaded_days(&mut tx, load).await?;
                pg::check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(deleted)
            }
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let deleted = lite::delete_hourly_window(&mut tx, from, to).await?;
                lite::insert_hourly_batched(&mut tx, load.hourly, load.run_id).await?;
                snowpatrol_store::failpoint("prep.load.before_commit")?;
                sqlx::query(
                    "DELETE FROM warehouse_daily_usage WHERE usage_date >= $1 AND usage_date < $2",
                )
                .bind(load.from)
                .bind(load.to)
                .execute(&mut *tx)
                .await?;
                lite::upsert_features_in(&mut tx, load.daily).await?;
                snowpatrol_store::failpoint("prep.load.before_ledger")?;
                lite::record_loaded_days(&mut tx, load).await?;
                lite::check_fence(&mut tx, fence).await?;
                tx.commit().await?;
                Ok(deleted)
            }
        }
    }

    /// The last day a prep load covered (the end of the newest load window), if any.
    pub async fn last_loaded_day(&self) -> Result<Option<NaiveDate>, StoreError> {
        dispatch!(self.db, last_loaded_day())
    }

    /// The days from `since` on that a prep load committed completely (the load ledger).
    pub async fn loaded_days(&self, since: NaiveDate) -> Result<BTreeSet<NaiveDate>, StoreError> {
        dispatch!(self.db, loaded_days(since))
    }

    /// Upserts daily rows (a few reloaded days).
    pub async fn upsert_features(
        &self,
        rows: &[FeatureRow],
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        dispatch!(self.db, upsert_features(rows, fence))
    }

    /// Replaces the whole daily table by `rows` (the features task's rewrite with decompositions), atomically
    /// and fenced. PostgreSQL truncates and loads with binary COPY, an order of magnitude faster than
    /// `INSERT ... ON CONFLICT` for a year of a thousand warehouses.
    pub async fn replace_daily(
        &self,
        rows: &[FeatureRow],
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        match self.db.pool() {
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("DELETE FROM warehouse_daily_usage")
                    .execute(&mut *tx)
                    .await?;
                lite::upsert_features_in(&mut tx, rows).await?;
                snowpatrol_store::failpoint("prep.features.before_commit")?;
                lite::check_fence(&mut tx, fence).await?;
                tx.commit().await?;
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                // TRUNCATE leaves no dead tuples (a daily DELETE of every row would bloat the table) at the
                // price of a brief exclusive lock; the readers, train and predict, run after this task.
                sqlx::query("TRUNCATE warehouse_daily_usage")
                    .execute(&mut *tx)
                    .await?;
                copy_daily(&mut tx, rows).await?;
                snowpatrol_store::failpoint("prep.features.before_commit")?;
                pg::check_fence(&mut tx, fence).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    pub async fn load_daily(
        &self,
        key: Option<&WarehouseKey>,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        dispatch!(self.db, load_daily(key))
    }
    pub async fn daily_range(&self) -> Result<Option<(NaiveDate, NaiveDate)>, StoreError> {
        dispatch!(self.db, daily_range())
    }
    pub async fn warehouses(&self, with_model: bool) -> Result<Vec<WarehouseKey>, StoreError> {
        dispatch!(self.db, warehouses(with_model))
    }
    pub async fn model_by_alias(
        &self,
        key: &WarehouseKey,
        alias: &str,
    ) -> Result<Option<ModelRow>, StoreError> {
        dispatch!(self.db, model_by_alias(key, alias))
    }
    /// Registers a model version and points `latest` at it, fenced; idempotent per (training run, warehouse).
    pub async fn register_model(
        &self,
        m: &NewModel,
        fence: Option<&TaskFence>,
    ) -> Result<ModelRegistration, StoreError> {
        dispatch!(self.db, register_model(m, fence))
    }
    pub async fn list_models(&self, warehouse: Option<&str>) -> Result<Vec<ModelRow>, StoreError> {
        dispatch!(self.db, list_models(warehouse))
    }
    /// Records flagged days and maintains their incidents (see `upsert_anomalies` in the backend macro): a day
    /// flagged again (rerun, retrained model) updates its one row; `price_per_credit` fills `excess_cost`.
    pub async fn upsert_anomalies(
        &self,
        rows: &[NewAnomaly],
        price_per_credit: Option<f64>,
        fence: Option<&TaskFence>,
    ) -> Result<AnomalyUpsert, StoreError> {
        match self.db.pool() {
            Pool::Postgres(p) => {
                pg::upsert_anomalies(p, rows, price_per_credit, PG_WAREHOUSE_LOCK, fence).await
            }
            Pool::Sqlite(p) => lite::upsert_anomalies(p, rows, price_per_credit, "", fence).await,
        }
    }
    /// Marks `resolved` the open incidents of `key` that end before `newest_scored_day` (see
    /// [`IncidentStatus`]); returns how many.
    pub async fn resolve_incidents(
        &self,
        key: &WarehouseKey,
        newest_scored_day: NaiveDate,
        fence: Option<&TaskFence>,
    ) -> Result<u64, StoreError> {
        dispatch!(self.db, resolve_incidents(key, newest_scored_day, fence))
    }
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        dispatch!(self.db, list_incidents(filter))
    }
    /// Anomalous days, filtered like incidents (`since` applies to the day, the status to its incident).
    pub async fn list_anomalies(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<AnomalyRow>, StoreError> {
        dispatch!(self.db, list_anomalies(filter))
    }
    pub async fn incident(&self, incident_id: i64) -> Result<Option<IncidentRow>, StoreError> {
        dispatch!(self.db, incident(incident_id))
    }
    /// Acknowledges an incident and its days; false when no incident has this id.
    pub async fn ack_incident(
        &self,
        incident_id: i64,
        reason: AckReason,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        dispatch!(self.db, ack_incident(incident_id, reason, by))
    }
    pub async fn anomalies_since(
        &self,
        since: NaiveDate,
        key: Option<&WarehouseKey>,
    ) -> Result<Vec<AnomalyRow>, StoreError> {
        dispatch!(self.db, anomalies_since(since, key))
    }
    /// Acknowledges the incident an anomalous day belongs to (anomaly ids predate incidents); returns the
    /// incident's id, None when no anomaly has this id.
    pub async fn ack_anomaly(
        &self,
        anomaly_id: i64,
        reason: AckReason,
        by: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self.db, ack_anomaly(anomaly_id, reason, by))
    }
    pub async fn save_report(
        &self,
        run_id: i64,
        markdown: &str,
        path: &str,
        anomalies: i32,
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        dispatch!(
            self.db,
            save_report(run_id, markdown, path, anomalies, fence)
        )
    }
    pub async fn report_markdown(
        &self,
        run_id: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        dispatch!(self.db, report_markdown(run_id))
    }
    pub async fn insert_alert(
        &self,
        dedupe_key: &str,
        kind: &str,
        run_id: Option<i64>,
        channel: &str,
        message: &serde_json::Value,
        fence: Option<&TaskFence>,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(
            self.db,
            insert_alert(dedupe_key, kind, run_id, channel, message, fence)
        )
    }
    /// Queues a run's digests and marks the incidents they announce (see the backend function).
    pub async fn enqueue_digests(
        &self,
        kind: &str,
        run_id: Option<i64>,
        digests: &[QueuedDigest],
        fence: Option<&TaskFence>,
    ) -> Result<Vec<i64>, StoreError> {
        dispatch!(self.db, enqueue_digests(kind, run_id, digests, fence))
    }
    /// The file a reply uploads (name and bytes), if it has one.
    pub async fn alert_attachment(&self, id: i64) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        dispatch!(self.db, alert_attachment(id))
    }
    /// Claims due alerts for `sender` until `expires` (see the backend function).
    pub async fn claim_alerts(
        &self,
        sender: &str,
        expires: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<AlertRow>, StoreError> {
        match self.db.pool() {
            Pool::Postgres(p) => {
                pg::claim_alerts(p, sender, expires, limit, "FOR UPDATE SKIP LOCKED").await
            }
            Pool::Sqlite(p) => lite::claim_alerts(p, sender, expires, limit, "").await,
        }
    }
    /// Records an attempt's outcome if `sender` still holds the claim; false when it does not.
    pub async fn finish_alert_attempt(
        &self,
        id: i64,
        sender: &str,
        attempt: &AlertAttempt,
    ) -> Result<bool, StoreError> {
        dispatch!(self.db, finish_alert_attempt(id, sender, attempt))
    }
    pub async fn next_alert_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        dispatch!(self.db, next_alert_due())
    }
    pub async fn scrape_gauges(&self) -> Result<ScrapeGauges, StoreError> {
        dispatch!(self.db, scrape_gauges())
    }
    pub async fn list_alerts(
        &self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<AlertRow>, StoreError> {
        dispatch!(self.db, list_alerts(pending_only, limit))
    }
}

/// A prep load: the window [from, to) in UTC days, its hourly rows and the daily rows aggregated from them.
#[derive(Clone, Copy, Debug)]
pub struct MeteringLoad<'a> {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hourly: &'a [MeteringRow],
    pub daily: &'a [FeatureRow],
    pub run_id: Option<i64>,
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

async fn copy_hourly(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[MeteringRow],
    run_id: Option<i64>,
) -> Result<(), StoreError> {
    let mut copy = tx
        .copy_in_raw(
            "COPY warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, start_time, end_time, \
             credits_used, credits_used_compute, credits_used_cloud_services, loaded_by_run_id) FROM STDIN WITH (FORMAT binary)",
        )
        .await?;
    let mut enc = BinaryCopy::new();
    for r in rows {
        enc.row(10);
        enc.text(&r.account_name);
        enc.i64(r.warehouse_id);
        enc.text(&r.warehouse_name);
        enc.text(&r.service_type);
        enc.timestamp(r.start_time);
        enc.timestamp(r.end_time);
        enc.f64(r.credits_used);
        enc.f64(r.credits_used_compute);
        enc.f64(r.credits_used_cloud_services);
        enc.opt_i64(run_id);
        if let Some(chunk) = enc.take_if_full() {
            copy.send(chunk).await?;
        }
    }
    copy.send(enc.finish()).await?;
    copy.finish().await?;
    Ok(())
}

async fn copy_daily(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[FeatureRow],
) -> Result<(), StoreError> {
    let now = snowpatrol_store::now();
    let mut copy = tx
        .copy_in_raw(
            "COPY warehouse_daily_usage (account_name, warehouse_name, usage_date, credits_used, credits_used_compute, \
             credits_used_cloud_services, hours_active, peak_hourly_credits, trend, seasonal, residual, updated_at) \
             FROM STDIN WITH (FORMAT binary)",
        )
        .await?;
    let mut enc = BinaryCopy::new();
    for f in rows {
        let u = &f.usage;
        enc.row(12);
        enc.text(&u.key.account_name);
        enc.text(&u.key.warehouse_name);
        enc.date(u.date);
        for v in [
            u.credits,
            u.credits_compute,
            u.credits_cloud_services,
            u.hours_active,
            u.peak_hourly_credits,
        ] {
            enc.f64(v);
        }
        for v in [f.trend, f.seasonal, f.residual] {
            enc.opt_f64(v);
        }
        enc.timestamp(now);
        if let Some(chunk) = enc.take_if_full() {
            copy.send(chunk).await?;
        }
    }
    copy.send(enc.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// Encoder for PostgreSQL's binary COPY format. Hand-written (the format is a header, length-prefixed
/// big-endian fields and a trailer) because the server then parses no text per value, which was most of its
/// cost per row with text COPY; sqlx exposes only the raw COPY stream.
struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    const CHUNK: usize = 4 << 20;
    /// Microseconds (timestamps) and days (dates) count from 2000-01-01 in PostgreSQL.
    const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
    const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

    fn new() -> Self {
        let mut buf = Vec::with_capacity(Self::CHUNK + 4096);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf }
    }
    fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }
    fn field(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }
    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }
    fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.field(&v.to_be_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.f64(v),
            None => self.null(),
        }
    }
    fn timestamp(&mut self, t: DateTime<Utc>) {
        self.i64(t.timestamp_micros() - Self::PG_EPOCH_UNIX_MICROS);
    }
    fn date(&mut self, d: NaiveDate) {
        let days =
            d.signed_duration_since(NaiveDate::default()).num_days() - Self::PG_EPOCH_UNIX_DAYS;
        self.field(&(days as i32).to_be_bytes());
    }
    /// A chunk to send once the buffer is large, so memory stays bounded for big loads.
    fn take_if_full(&mut self) -> Option<Vec<u8>> {
        (self.buf.len() >= Self::CHUNK)
            .then(|| std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK + 4096)))
    }
    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}
