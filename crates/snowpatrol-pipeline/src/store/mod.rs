//! The pipeline's tables on PostgreSQL and SQLite: typed rows and the [`PipelineStore`] facade.
//!
//! The pipeline owns these tables and migrates them itself (see `migrations.rs`). Its operations are written once,
//! in `ops.rs`, and compiled once per backend (`postgres.rs`, `sqlite.rs`) like the engine's store, so both
//! backends run the same statements; what differs is in each backend's file: PostgreSQL loads hourly and daily
//! rows with binary COPY, which is what makes large backfills fast, and locks a warehouse's incidents with an
//! advisory lock.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use snowpatrol_detect::daily::DailyUsage;
use snowpatrol_detect::model::AnomalyDay;
use snowpatrol_detect::root_cause::{RootCause, WarehouseDay};
use snowpatrol_detect::{MeteringRow, WarehouseKey};
use snowpatrol_store::{Database, Pool, StoreError, TaskFence, decode_row};
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
snowpatrol_store::string_enum!(
    /// What an alert announces (`alerts.kind`): a predict run's new incidents (a digest and its replies), or a
    /// task that failed for good.
    AlertKind { Anomaly => "anomaly", TaskFailure => "task_failure" }
);

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelRow {
    pub model_id: i64,
    pub account_name: String,
    pub warehouse_name: String,
    pub version: i32,
    pub model_kind: String,
    pub threshold: f64,
    pub training_start: NaiveDate,
    pub training_end: NaiveDate,
    #[sqlx(json)]
    pub metrics: serde_json::Value,
    #[sqlx(json)]
    pub drift: serde_json::Value,
    pub training_run_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub aliases: String,
    #[serde(skip)]
    #[sqlx(json)]
    pub model: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    pub ack_reason: Option<AckReason>,
}

impl AnomalyRow {
    /// The day as the model scored it. `anomalies` keeps the figures as columns (the table is an operator
    /// interface), so this is the one place a row becomes the shared [`AnomalyDay`].
    pub fn day(&self) -> AnomalyDay {
        AnomalyDay {
            date: self.usage_date,
            actual_credits: self.actual_credits,
            expected_credits: self.expected_credits,
            excess_credits: self.excess_credits,
            score: self.score,
            threshold: self.threshold,
            explanation: self.explanation.clone(),
        }
    }
}

/// A run of consecutive anomalous days of one warehouse (`incidents`).
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl IncidentFilter {
    /// Incidents nobody acknowledged (open, or resolved meanwhile) that end on or after `since`; for days, the
    /// days of such incidents from `since` on.
    pub fn unacknowledged_since(since: NaiveDate) -> Self {
        Self {
            since: Some(since),
            statuses: vec![IncidentStatus::Open, IncidentStatus::Resolved],
            ..Default::default()
        }
    }
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

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRow {
    pub alert_id: i64,
    pub dedupe_key: String,
    pub kind: AlertKind,
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
    #[sqlx(json)]
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
    pub model_id: i64,
    pub model_version: i32,
    pub run_id: i64,
    /// The day as the model scored it (`usage_date` is its `date`).
    pub day: AnomalyDay,
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
const ANOMALY_COLUMNS: &str = "a.anomaly_id, a.account_name, a.warehouse_name, a.usage_date, a.model_version, \
                               a.run_id, \
    a.actual_credits, a.expected_credits, a.excess_credits, a.score, a.threshold, a.explanation, a.incident_start, \
     a.detected_at, \
    a.scored_at, a.incident_id, a.acknowledged_at, a.ack_reason";
const INCIDENT_COLUMNS: &str = "i.incident_id, i.account_name, i.warehouse_name, i.start_day, i.end_day, i.days, \
                                i.excess_credits, \
    i.excess_cost, i.peak_score, i.status, i.ack_reason, i.acknowledged_at, i.acknowledged_by, i.resolved_at, \
     i.created_at, i.updated_at, i.alert_id";
const ALERT_COLUMNS: &str = "alert_id, dedupe_key, kind, run_id, channel, message, state, attempts, last_error, \
                             slack_ts, created_at, sent_at, \
    claimed_by, claim_expires_at, next_attempt_at, first_attempt_at, outcome_unknown, thread_of, attachment_name, \
    (SELECT p.slack_ts FROM alerts p WHERE p.alert_id = alerts.thread_of) AS parent_ts, \
    (SELECT p.state FROM alerts p WHERE p.alert_id = alerts.thread_of) AS parent_state";
/// Queues a top-level alert once per dedupe key (failure alerts and digests); binds key, kind, run, channel,
/// message, created_at.
const INSERT_ALERT: &str = "INSERT INTO alerts (dedupe_key, kind, run_id, channel, message, state, attempts, \
                            created_at) \
    VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6) ON CONFLICT (dedupe_key) DO NOTHING RETURNING alert_id";
/// A reply waits until the alert it replies to is done (delivered, written, or failed for good).
const PARENT_DONE: &str = "(thread_of IS NULL OR EXISTS (SELECT 1 FROM alerts p WHERE p.alert_id = alerts.thread_of \
    AND p.state IN ('sent', 'written', 'failed')))";

/// How long the release before 0004 let a claim live (it wrote no `claim_expires_at`).
const LEGACY_CLAIM: chrono::Duration = chrono::Duration::minutes(10);

fn parse_state(text: String) -> Result<AlertState, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

pub mod migrations;
mod postgres;
mod sqlite;

use postgres as pg;
use sqlite as lite;

/// Runs one operation on the backend of `$db`.
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
    /// [`PipelineStore::loaded_days`]). Returns the hourly rows replaced.
    pub async fn load_metering(
        &self,
        load: &MeteringLoad<'_>,
        fence: Option<&TaskFence>,
    ) -> Result<u64, StoreError> {
        dispatch!(self.db, load_metering(load, fence))
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
    /// and fenced.
    pub async fn replace_daily(
        &self,
        rows: &[FeatureRow],
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        dispatch!(self.db, replace_daily(rows, fence))
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
    /// Records flagged days and maintains their incidents (see `upsert_anomalies` in `ops.rs`): a day
    /// flagged again (rerun, retrained model) updates its one row; `price_per_credit` fills `excess_cost`.
    pub async fn upsert_anomalies(
        &self,
        rows: &[NewAnomaly],
        price_per_credit: Option<f64>,
        fence: Option<&TaskFence>,
    ) -> Result<AnomalyUpsert, StoreError> {
        dispatch!(self.db, upsert_anomalies(rows, price_per_credit, fence))
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
        kind: AlertKind,
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
        kind: AlertKind,
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
        dispatch!(self.db, claim_alerts(sender, expires, limit))
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
    /// A warehouse's credits per hour in [`from`, `to`), summed over service types (what the console's hourly
    /// panel draws); pseudo warehouses are left out as everywhere.
    pub async fn hourly_credits(
        &self,
        key: &WarehouseKey,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
        dispatch!(self.db, hourly_credits(key, from, to))
    }
    /// Credits per hour in [`from`, `to`) of each of `keys` (summed over service types), in one query: what
    /// the root-cause task reads for the hourly shapes of all the run's anomalous days.
    pub async fn hourly_credits_of(
        &self,
        keys: &[WarehouseKey],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(WarehouseKey, DateTime<Utc>, f64)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.db, hourly_credits_of(keys, from, to))
    }
    /// One anomalous day by its id.
    pub async fn anomaly(&self, anomaly_id: i64) -> Result<Option<AnomalyRow>, StoreError> {
        dispatch!(self.db, anomaly(anomaly_id))
    }
    /// The hourly rows of `key` in [`from`, `to`) grouped by the prep run that loaded them (lineage).
    pub async fn hourly_loads(
        &self,
        key: &WarehouseKey,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HourlyLoad>, StoreError> {
        dispatch!(self.db, hourly_loads(key, from, to))
    }
    /// Stores root causes, one row per warehouse-day (a day looked up again is replaced), fenced.
    pub async fn save_root_causes(
        &self,
        rows: &[NewRootCause],
        run_id: Option<i64>,
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        dispatch!(self.db, save_root_causes(rows, run_id, fence))
    }
    /// Stored root causes of days in [from, to] (both included), of one warehouse or all.
    pub async fn root_causes(
        &self,
        key: Option<&WarehouseKey>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<RootCauseRow>, StoreError> {
        dispatch!(self.db, root_causes(key, from, to))
    }
    /// Replaces the stored tags of the `looked_up` warehouses by `tags`, fenced.
    pub async fn replace_warehouse_tags(
        &self,
        looked_up: &[WarehouseKey],
        tags: &BTreeMap<WarehouseKey, BTreeMap<String, String>>,
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        dispatch!(self.db, replace_warehouse_tags(looked_up, tags, fence))
    }
    /// Every stored warehouse tag, by warehouse.
    pub async fn warehouse_tags(
        &self,
    ) -> Result<BTreeMap<WarehouseKey, BTreeMap<String, String>>, StoreError> {
        dispatch!(self.db, warehouse_tags())
    }
    /// Upserts credit rates per account and day, fenced.
    pub async fn upsert_credit_rates(
        &self,
        rates: &[CreditRateRow],
        fence: Option<&TaskFence>,
    ) -> Result<(), StoreError> {
        dispatch!(self.db, upsert_credit_rates(rates, fence))
    }
    /// Each account's newest credit rate on or before `day`.
    pub async fn latest_credit_rates(
        &self,
        day: NaiveDate,
    ) -> Result<Vec<CreditRateRow>, StoreError> {
        dispatch!(self.db, latest_credit_rates(day))
    }
}

/// A root cause to store ([`PipelineStore::save_root_causes`]).
#[derive(Clone, Debug)]
pub struct NewRootCause {
    pub day: WarehouseDay,
    /// [`RootCause::summary`] of the day, stored beside the findings for readers of the table.
    pub summary: String,
    pub cause: RootCause,
}

/// A stored root cause (`root_causes`).
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RootCauseRow {
    pub account_name: String,
    pub warehouse_name: String,
    pub usage_date: NaiveDate,
    pub summary: String,
    /// The findings: `attribution` (basis, total, top_queries, users, roles, query_tags), `events`,
    /// `changes`, `hours` (day and usual curve) and `unavailable`.
    #[sqlx(json)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: RootCause,
    pub looked_up_at: DateTime<Utc>,
    pub run_id: Option<i64>,
}

/// Hourly rows of a warehouse loaded by one prep run (`loaded_by_run_id`; None for rows loaded outside a run).
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HourlyLoad {
    pub run_id: Option<i64>,
    pub hourly_rows: i64,
    pub first_hour: DateTime<Utc>,
    pub last_hour: DateTime<Utc>,
}

/// Compute usage of an account on a day in credits and in its contract currency (`credit_rates`).
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct CreditRateRow {
    pub account_name: String,
    pub usage_date: NaiveDate,
    pub currency: String,
    pub credits: f64,
    pub amount: f64,
}

impl CreditRateRow {
    /// The effective price of one credit.
    pub fn price_per_credit(&self) -> Option<f64> {
        (self.credits > 0.0 && self.amount.is_finite()).then(|| self.amount / self.credits)
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

/// Midnight UTC starting day `d`: where the hourly rows of a UTC day begin.
pub(crate) fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}
