//! Records and states as stored. States are stored as their snake_case names so SQL written by hand reads well.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub type RunId = i64;
pub type EventId = i64;
pub type TaskInstanceId = i64;

/// A closed set of states stored as snake_case text (with a matching `CHECK (col IN (...))` in the migrations):
/// `as_str`, `Display`, `FromStr` (whose error names the allowed values), serde, and `ALL`. Exported for the
/// pipeline's own states; the crate using it needs `serde` and `sqlx` as dependencies and an `openapi` feature
/// (which derives `utoipa::ToSchema`). The enum is also an sqlx
/// type on every backend (stored as its text).
#[macro_export]
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(::utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
        }
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }
        // Stored as its text on every backend, so rows decode into the enum (`FromRow` fields, `Option`s
        // included) and binds take it directly; a value outside the set fails to decode with `FromStr`'s error.
        impl<DB: ::sqlx::Database> ::sqlx::Type<DB> for $name where str: ::sqlx::Type<DB> {
            fn type_info() -> DB::TypeInfo { <str as ::sqlx::Type<DB>>::type_info() }
            fn compatible(ty: &DB::TypeInfo) -> bool { <str as ::sqlx::Type<DB>>::compatible(ty) }
        }
        impl<'r, DB: ::sqlx::Database> ::sqlx::Decode<'r, DB> for $name where &'r str: ::sqlx::Decode<'r, DB> {
            fn decode(value: <DB as ::sqlx::Database>::ValueRef<'r>) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&'r str as ::sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
        impl<'q, DB: ::sqlx::Database> ::sqlx::Encode<'q, DB> for $name where &'static str: ::sqlx::Encode<'q, DB> {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as ::sqlx::Database>::ArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&'static str as ::sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}; expected one of: {}", stringify!($name),
                        [$($text),+].join(", "))) }
            }
        }
    };
}

string_enum!(
    /// Lifecycle of a job run.
    RunState { Queued => "queued", Running => "running", Success => "success", Failed => "failed", Cancelled => "cancelled" }
);
string_enum!(
    /// Lifecycle of one task instance (one try at a time; `try_number` counts them).
    TaskState { Queued => "queued", Running => "running", Success => "success", Failed => "failed",
        Skipped => "skipped", UpForRetry => "up_for_retry", Cancelled => "cancelled" }
);
string_enum!(
    /// Why a run exists.
    TriggerKind { Cron => "cron", Dataset => "dataset", Manual => "manual" }
);
string_enum!(
    /// When a task may start relative to its upstream tasks.
    TriggerRule { AllSuccess => "all_success", AllDone => "all_done" }
);

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Success | RunState::Failed | RunState::Cancelled
        )
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Skipped | TaskState::Cancelled
        )
    }
}

/// The shape of a job's task graph, as the store needs it to advance runs. Tasks are in topological order.
#[derive(Clone, Debug)]
pub struct JobShape {
    pub job_name: String,
    pub tasks: Vec<TaskShape>,
}

#[derive(Clone, Debug)]
pub struct TaskShape {
    pub name: String,
    pub depends_on: Vec<String>,
    /// Fan out over the `map_keys` returned by this upstream task: one instance per key.
    pub map_over: Option<String>,
    pub trigger_rule: TriggerRule,
    /// Dataset URIs that receive one event when the task (all its map instances) succeeds.
    pub outlets: Vec<String>,
    pub max_tries: i32,
}

/// Registers a job and what it listens to, so `emit` from any process queues triggers for the right jobs.
#[derive(Clone, Debug)]
pub struct JobRegistration {
    pub job_name: String,
    pub schedule: String,
    pub datasets: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct NewRun {
    pub job_name: String,
    pub run_key: String,
    pub trigger_kind: TriggerKind,
    pub logical_time: DateTime<Utc>,
    pub params: serde_json::Value,
    pub triggered_by: String,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunRecord {
    pub run_id: RunId,
    pub job_name: String,
    pub run_key: String,
    pub trigger_kind: TriggerKind,
    pub logical_time: DateTime<Utc>,
    pub state: RunState,
    #[sqlx(json)]
    pub params: serde_json::Value,
    pub triggered_by: String,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// How many times an operator cleared tasks of this run.
    pub clear_count: i32,
    /// The last operator action on the run (who cleared or marked it, when and why).
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskInstanceRecord {
    pub task_instance_id: TaskInstanceId,
    pub run_id: RunId,
    pub job_name: String,
    pub task_name: String,
    pub map_key: String,
    pub state: TaskState,
    pub try_number: i32,
    pub max_tries: i32,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(json(nullable))]
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The last operator action on this instance (cleared, marked success or failed).
    pub note: Option<String>,
}

impl TaskInstanceRecord {
    /// The `data` this instance's successful try returned (`TaskOutput::with_data_of`), decoded as `T`. None
    /// when the try returned no data, or data of another shape.
    pub fn output_data<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let data = self.output.as_ref()?.get("data")?;
        T::deserialize(data).ok()
    }
}

/// A task instance a worker has claimed (state `running`, lease held by the worker).
#[derive(Clone, Debug)]
pub struct ClaimedTask {
    pub task_instance_id: TaskInstanceId,
    pub run_id: RunId,
    pub job_name: String,
    pub task_name: String,
    pub map_key: String,
    pub try_number: i32,
    pub max_tries: i32,
    pub params: serde_json::Value,
    pub logical_time: DateTime<Utc>,
    pub trigger_kind: TriggerKind,
}

/// The result of a successful task.
/// Stored as the task instance's `output` (JSON, keys absent when empty); the store reads `map_keys`, `extra` and
/// `outlets_suppressed` back when it advances the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    /// For a task that downstream mapped tasks fan out over: one task instance per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_keys: Option<Vec<String>>,
    /// Becomes the `extra` payload of the dataset events this task's outlets emit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
    /// Anything else worth recording (shown by `snowpatrol tasks RUN_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The task succeeded but produced nothing new (e.g. a training run that changed no model): its outlets
    /// emit no dataset event, so downstream jobs do not run for nothing. Recorded in the output as
    /// `"outlets_suppressed": true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlets_suppressed: bool,
}

impl TaskOutput {
    pub fn empty() -> Self {
        Self::default()
    }
    pub fn with_map_keys(keys: Vec<String>) -> Self {
        Self {
            map_keys: Some(keys),
            ..Default::default()
        }
    }
    pub fn with_extra(extra: serde_json::Value) -> Self {
        Self {
            extra: Some(extra),
            ..Default::default()
        }
    }
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
    /// [`TaskOutput::with_data`] from a typed value, read back downstream with
    /// `TaskInstanceRecord::output_data`. A value that cannot be represented as JSON (a map with non-string
    /// keys) is recorded as `null`.
    pub fn with_data_of<T: serde::Serialize>(self, data: &T) -> Self {
        self.with_data(serde_json::to_value(data).unwrap_or(serde_json::Value::Null))
    }
    /// See [`TaskOutput::outlets_suppressed`].
    pub fn without_outlet_events(mut self) -> Self {
        self.outlets_suppressed = true;
        self
    }
}

#[derive(Clone, Debug)]
pub enum TaskOutcome {
    Success {
        output: TaskOutput,
    },
    /// `retry_at` is set when tries remain: the instance becomes `up_for_retry` until then.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// The try could not do its work because a dependency it cannot do without (the database) was unreachable:
    /// `up_for_retry` until `retry_at`, and the try does not count against `max_tries` (it is granted back), so
    /// an outage longer than the retry budget delays a run instead of failing it.
    Postponed {
        error: String,
        retry_at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug)]
pub struct TaskResult {
    pub task_instance_id: TaskInstanceId,
    pub try_number: i32,
    pub outcome: TaskOutcome,
}

/// What a batch of finished tasks caused.
#[derive(Clone, Debug, Default)]
pub struct FinishReport {
    /// Results applied; a result whose lease was lost meanwhile (another worker owns the row) is discarded.
    pub accepted: usize,
    pub discarded: usize,
    pub events: Vec<EventId>,
    pub finished_runs: Vec<FinishedRun>,
    pub failed_tasks: Vec<TaskInstanceId>,
    pub created_instances: usize,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRecord {
    pub event_id: EventId,
    pub dataset_uri: String,
    #[sqlx(json)]
    pub extra: serde_json::Value,
    pub source_job: Option<String>,
    pub source_run_id: Option<RunId>,
    pub source_task: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PendingEvent {
    pub event_id: EventId,
    pub dataset_uri: String,
    pub created_at: DateTime<Utc>,
}

/// A dataset-triggered run and the events it consumed.
#[derive(Clone, Debug)]
pub struct TriggeredRun {
    pub run_id: RunId,
    pub events: Vec<EventId>,
    pub oldest_event_at: DateTime<Utc>,
    /// The newest consumed event: the one that (at the latest) made the job's condition hold.
    pub newest_event_at: DateTime<Utc>,
}

/// A run that reached a terminal state in the transaction that reported it (exactly one process sees each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedRun {
    pub run_id: RunId,
    pub job_name: String,
    pub state: RunState,
}

#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub job_name: Option<String>,
    pub state: Option<RunState>,
    /// Runs whose logical time is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Runs whose logical time is before this.
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRow {
    pub job_name: String,
    pub paused: bool,
    pub schedule: String,
    pub cron_cursor: Option<DateTime<Utc>>,
}

/// What a metrics scrape reads from the engine's tables. Every query behind it reads an index of bounded
/// size (the unfinished rows, one row per job), never the history, so a scrape stays cheap after a year of
/// runs: finished runs and task tries are counted by the processes that finish them instead.
#[derive(Clone, Debug, Default)]
pub struct StateCounts {
    /// (job, state, count) of queued and running runs.
    pub active_runs: Vec<(String, RunState, i64)>,
    /// (job, state, count) of queued, running and up-for-retry task instances.
    pub active_task_instances: Vec<(String, TaskState, i64)>,
    /// (job, number of dataset events waiting to trigger it).
    pub pending_triggers: Vec<(String, i64)>,
    /// (job, when its newest successful run finished).
    pub last_success: Vec<(String, DateTime<Utc>)>,
    /// (job, when its newest run finished, whatever its state).
    pub last_finished: Vec<(String, DateTime<Utc>)>,
}

string_enum!(
    /// Severity of a captured task log line (tracing's levels).
    LogLevel { Error => "error", Warn => "warn", Info => "info", Debug => "debug", Trace => "trace" }
);

/// One tracing event of a task try, captured for `task_logs`.
#[derive(Clone, Debug, Serialize)]
pub struct TaskLogLine {
    pub run_id: RunId,
    pub task_instance_id: TaskInstanceId,
    pub task_name: String,
    pub map_key: String,
    pub try_number: i32,
    pub logged_at: DateTime<Utc>,
    pub level: LogLevel,
    pub target: String,
    pub message: String,
    /// The event's fields and those of the spans it happened in below the task's own (e.g. `warehouse`).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A stored task log line.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskLogRecord {
    pub log_id: i64,
    pub run_id: RunId,
    pub task_instance_id: TaskInstanceId,
    pub task_name: String,
    pub map_key: String,
    pub try_number: i32,
    pub logged_at: DateTime<Utc>,
    pub level: LogLevel,
    pub target: String,
    pub message: String,
    #[sqlx(json)]
    pub fields: serde_json::Value,
}

/// Which task instances of a run `clear` resets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClearSelection {
    /// The instances that ended `failed` or `cancelled` (only the failed keys of a fan-out).
    Failed,
    /// Every instance of these tasks, whatever their state (a rerun on purpose).
    Tasks(Vec<String>),
}

/// What a clear did. Cleared instances run again with a new try; their downstream tasks are planned afresh.
#[derive(Clone, Debug, Default)]
pub struct ClearReport {
    /// Instances reset to `queued` in place (their try numbers go on, each gets the task's tries again).
    pub reset: Vec<TaskInstanceId>,
    /// Downstream tasks whose instances were removed so the planner creates them again (a fan-out's keys may
    /// change with its upstream's new output).
    pub replanned_tasks: Vec<String>,
    /// The run was finished and is running again.
    pub reopened: bool,
    /// What re-planning the run created at once.
    pub report: FinishReport,
}

/// What marking task instances did.
#[derive(Clone, Debug, Default)]
pub struct MarkReport {
    /// Instances whose state changed.
    pub marked: Vec<TaskInstanceId>,
    /// Downstream tasks that had been skipped because of the old state and are planned afresh.
    pub replanned_tasks: Vec<String>,
    /// Re-planning the run: instances it created, or the run finishing again.
    pub report: FinishReport,
}

/// What one pass of history retention deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgedHistory {
    pub runs: u64,
    pub task_instances: u64,
    pub events: u64,
}

/// The identity of one task try, which every write the try makes is fenced by.
///
/// A try's lease can pass to another try while it still runs: its worker froze (SIGSTOP, a long GC-like stall,
/// a partition) past `lease`, the leader reaped the instance and another worker claimed it. Without a fence the
/// stale try would keep writing (a second model version from the same run, a second load of the same hours).
/// So each write transaction a task makes calls [`TaskFence::check_postgres`] / [`TaskFence::check_sqlite`]
/// as its last statement before `COMMIT`: the check passes only while the instance is `running` with this try
/// number, this worker and an unexpired lease, and on PostgreSQL it locks the instance row (`FOR SHARE`) until
/// the commit, so the reaper cannot take the lease between the check and the commit. Checking last keeps that
/// lock short (the heartbeat's `UPDATE` of the row waits for it); the reaper skips locked rows rather than
/// wait. SQLite serializes writers (`BEGIN IMMEDIATE`), which gives the same guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFence {
    pub task_instance_id: TaskInstanceId,
    pub try_number: i32,
    pub worker_id: String,
}

/// The fence check, one statement for both backends (PostgreSQL adds `FOR SHARE`). The lease condition is in
/// the `WHERE` clause so a refused check locks nothing (see `TaskFence::verdict`).
macro_rules! fence_check_sql {
    () => {
        "SELECT 1 FROM task_instances \
         WHERE task_instance_id = $1 AND try_number = $2 AND worker_id = $3 AND state = 'running' AND lease_expires_at > $4"
    };
}

impl TaskFence {
    const CHECK: &'static str = fence_check_sql!();
    const CHECK_LOCKING: &'static str = concat!(fence_check_sql!(), " FOR SHARE");

    fn lost(&self, detail: &str) -> crate::StoreError {
        crate::StoreError::Fenced(format!(
            "task instance {} try {} of worker {} {detail}; its write was refused",
            self.task_instance_id, self.try_number, self.worker_id
        ))
    }

    /// Checks, inside `tx`, that this try still holds its lease, and keeps the instance row locked until the
    /// transaction ends.
    pub async fn check_postgres(
        &self,
        tx: &mut sqlx::PgConnection,
    ) -> Result<(), crate::StoreError> {
        let row: Option<i32> = sqlx::query_scalar(Self::CHECK_LOCKING)
            .bind(self.task_instance_id)
            .bind(self.try_number)
            .bind(&self.worker_id)
            .bind(crate::now())
            .fetch_optional(tx)
            .await?;
        self.verdict(row.is_some())
    }

    /// [`TaskFence::check_postgres`] for SQLite (the write lock of `BEGIN IMMEDIATE` stands in for the row lock).
    pub async fn check_sqlite(
        &self,
        tx: &mut sqlx::SqliteConnection,
    ) -> Result<(), crate::StoreError> {
        let row: Option<i32> = sqlx::query_scalar(Self::CHECK)
            .bind(self.task_instance_id)
            .bind(self.try_number)
            .bind(&self.worker_id)
            .bind(crate::now())
            .fetch_optional(tx)
            .await?;
        self.verdict(row.is_some())
    }

    /// The lease condition is in the `WHERE` clause so a refused check locks nothing: the refused
    /// transaction's rollback may reach the server only when its connection is next used.
    fn verdict(&self, holds: bool) -> Result<(), crate::StoreError> {
        if holds {
            Ok(())
        } else {
            Err(self
                .lost("does not hold an unexpired lease (expired, reaped, retried or cancelled)"))
        }
    }
}
