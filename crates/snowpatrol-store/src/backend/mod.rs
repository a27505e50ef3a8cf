//! The scheduler's transactional operations on PostgreSQL and SQLite, and the facade that picks one.
//!
//! The operations are written once, in `ops.rs`, as ordinary Rust that rustfmt, clippy and rust-analyzer see. Each
//! backend module (`postgres.rs`, `sqlite.rs`) compiles that file as its own `ops` module through `#[path]`, with
//! its own `Db` type and a small dialect table of what differs (transaction start, row locks, commit
//! announcements, the batched result update). A generic implementation over `sqlx::Database` would need
//! `Encode`/`Decode`/`Executor` bounds on every function for both column types; compiling the same file twice
//! keeps each instance concrete and the code readable.

use crate::migrations::{COMBINED_LINE_LAST, COMBINED_LINE_TABLE};
use crate::plan::{GroupStats, PlanStep, downstream_of, plan_run};
use crate::types::*;
use crate::{Database, Pool, StoreError, decode_row};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Job shapes by job name, so finishing tasks of any job can advance its run.
pub type Shapes = HashMap<String, Arc<JobShape>>;

/// Predicate over the set of dataset URIs with pending events for a job.
pub type ConditionFn<'a> = &'a (dyn Fn(&BTreeSet<String>) -> bool + Sync);

fn parse<T: std::str::FromStr<Err = String>>(s: String) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

const TI_COLUMNS: &str = "task_instance_id, run_id, job_name, task_name, map_key, state, try_number, max_tries, \
    worker_id, lease_expires_at, next_attempt_at, queued_at, started_at, finished_at, output, error, note";
const RUN_COLUMNS: &str = "run_id, job_name, run_key, trigger_kind, logical_time, state, params, triggered_by, \
    queued_at, started_at, finished_at, error, clear_count, note";
const EVENT_COLUMNS: &str =
    "event_id, dataset_uri, extra, source_job, source_run_id, source_task, created_by, created_at";

pub(crate) mod postgres;
pub(crate) mod sqlite;

pub(crate) use postgres as pg;
pub(crate) use sqlite as lite;

/// (task instance, run, job, task, new state) of each result applied.
/// (instance, run, job, task, state) of each result accepted.
type Updated = Vec<(TaskInstanceId, RunId, String, String, TaskState)>;

/// (state, output, error, finished_at, next_attempt_at, tries granted back).
type OutcomeColumns = (
    TaskState,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i32,
);

fn outcome_columns(outcome: &TaskOutcome, now: DateTime<Utc>) -> OutcomeColumns {
    match outcome {
        TaskOutcome::Success { output } => (
            TaskState::Success,
            serde_json::to_string(output).ok(),
            None,
            Some(now),
            None,
            0,
        ),
        TaskOutcome::Failed {
            error,
            retry_at: Some(at),
        } => (
            TaskState::UpForRetry,
            None,
            Some(error.clone()),
            None,
            Some(*at),
            0,
        ),
        TaskOutcome::Failed {
            error,
            retry_at: None,
        } => (
            TaskState::Failed,
            None,
            Some(error.clone()),
            Some(now),
            None,
            0,
        ),
        // `max_tries` grows by one instead of `try_number` going back, so every try keeps a fencing token of
        // its own.
        TaskOutcome::Postponed { error, retry_at } => (
            TaskState::UpForRetry,
            None,
            Some(error.clone()),
            None,
            Some(*retry_at),
            1,
        ),
    }
}

/// Dispatches to the backend; after each write that may unblock someone, wakes this process's waiters.
macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* ) ) => {
        match &$self.pool {
            Pool::Postgres(p) => pg::$f(p $(, $arg)*).await,
            Pool::Sqlite(p) => lite::$f(p $(, $arg)*).await,
        }
    };
    (notify_if $cond:expr, $self:ident, $f:ident ( $($arg:expr),* ) ) => {{
        let r = dispatch!($self, $f($($arg),*));
        #[allow(clippy::redundant_closure_call)]
        if let Ok(v) = &r { if ($cond)(v) { $self.notify_local(); } }
        r
    }};
}

impl Database {
    pub async fn sync_jobs(&self, jobs: &[JobRegistration]) -> Result<(), StoreError> {
        dispatch!(self, sync_jobs(jobs))
    }
    pub async fn list_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        dispatch!(self, list_jobs())
    }
    pub async fn set_paused(&self, job: &str, paused: bool) -> Result<bool, StoreError> {
        dispatch!(notify_if |v: &bool| *v, self, set_paused(job, paused))
    }
    /// `None` when a run with the same (job, run_key) exists already.
    pub async fn create_run(&self, run: &NewRun) -> Result<Option<RunId>, StoreError> {
        dispatch!(notify_if |v: &Option<RunId>| v.is_some(), self, create_run(run))
    }
    pub async fn get_cron_cursor(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        dispatch!(self, get_cron_cursor(job))
    }
    /// Creates the runs of `ticks` (each once: the run key is the tick) and moves the job's cron cursor
    /// forward to `cursor`, if given, in the same transaction. A backfill passes no cursor, so the scheduler's
    /// own catch-up decisions are untouched.
    pub async fn create_cron_runs(
        &self,
        job: &str,
        ticks: &[DateTime<Utc>],
        cursor: Option<DateTime<Utc>>,
        params: &serde_json::Value,
        triggered_by: &str,
    ) -> Result<Vec<RunId>, StoreError> {
        dispatch!(
            notify_if |v: &Vec<RunId>| !v.is_empty(),
            self,
            create_cron_runs(job, ticks, cursor, params, triggered_by)
        )
    }
    /// Creates ONE run consuming every pending event of `job` when `condition` holds over the datasets with
    /// pending events and fewer than `max_active_runs` runs are queued or running; otherwise leaves them queued.
    pub async fn trigger_dataset_run(
        &self,
        job: &str,
        max_active_runs: i64,
        params: &serde_json::Value,
        triggered_by: &str,
        condition: ConditionFn<'_>,
    ) -> Result<Option<TriggeredRun>, StoreError> {
        dispatch!(
            notify_if |v: &Option<TriggeredRun>| v.is_some(),
            self,
            trigger_dataset_run(job, max_active_runs, params, triggered_by, condition)
        )
    }
    pub async fn start_queued_runs(
        &self,
        shape: &JobShape,
        max_active_runs: i64,
    ) -> Result<(Vec<RunId>, FinishReport), StoreError> {
        dispatch!(
            notify_if |v: &(Vec<RunId>, FinishReport)| !v.0.is_empty(),
            self,
            start_queued_runs(shape, max_active_runs)
        )
    }
    pub async fn emit_event(
        &self,
        uri: &str,
        extra: &serde_json::Value,
        created_by: &str,
    ) -> Result<(EventId, i64), StoreError> {
        dispatch!(notify_if |_: &(EventId, i64)| true, self, emit_event(uri, extra, created_by))
    }
    pub async fn claim_tasks(
        &self,
        worker: &str,
        limit: i64,
        lease_until: DateTime<Utc>,
        only_run: Option<RunId>,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        dispatch!(self, claim_tasks(worker, limit, lease_until, only_run))
    }
    pub async fn heartbeat(
        &self,
        worker: &str,
        ids: &[TaskInstanceId],
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<TaskInstanceId>, StoreError> {
        dispatch!(self, heartbeat(worker, ids, lease_until))
    }
    pub async fn finish_tasks(
        &self,
        worker: &str,
        results: &[TaskResult],
        shapes: &Shapes,
    ) -> Result<FinishReport, StoreError> {
        dispatch!(notify_if |_: &FinishReport| true, self, finish_tasks(worker, results, shapes))
    }
    pub async fn release_tasks(
        &self,
        worker: &str,
        ids: &[TaskInstanceId],
    ) -> Result<u64, StoreError> {
        dispatch!(notify_if |v: &u64| *v > 0, self, release_tasks(worker, ids))
    }
    pub async fn reap_expired_leases(
        &self,
        shapes: &Shapes,
    ) -> Result<(u64, FinishReport), StoreError> {
        dispatch!(notify_if |v: &(u64, FinishReport)| v.0 > 0, self, reap_expired_leases(shapes))
    }
    pub async fn cancel_run(&self, run_id: RunId, reason: &str) -> Result<bool, StoreError> {
        dispatch!(notify_if |v: &bool| *v, self, cancel_run(run_id, reason))
    }
    /// Records external events in one transaction; their ids and the job triggers they queued.
    pub async fn emit_events(
        &self,
        events: &[(String, serde_json::Value)],
        created_by: &str,
    ) -> Result<(Vec<EventId>, i64), StoreError> {
        dispatch!(notify_if |v: &(Vec<EventId>, i64)| v.1 > 0, self, emit_events(events, created_by))
    }
    /// Resets task instances of a run so they run again (see [`ClearSelection`] and [`ClearReport`]).
    pub async fn clear_tasks(
        &self,
        run_id: RunId,
        shape: &JobShape,
        selection: &ClearSelection,
        note: &str,
    ) -> Result<ClearReport, StoreError> {
        dispatch!(notify_if |_: &ClearReport| true, self, clear_tasks(run_id, shape, selection, note))
    }
    /// Sets the instances of one task (or one key of it) to `success` or `failed` by hand and re-plans the run.
    pub async fn mark_tasks(
        &self,
        run_id: RunId,
        shape: &JobShape,
        task: &str,
        key: Option<&str>,
        state: TaskState,
        note: &str,
    ) -> Result<MarkReport, StoreError> {
        dispatch!(notify_if |_: &MarkReport| true, self, mark_tasks(run_id, shape, task, key, state, note))
    }
    /// Ends a run as `success` or `failed` by hand; `None` when it already was in that state.
    pub async fn mark_run(
        &self,
        run_id: RunId,
        state: RunState,
        note: &str,
    ) -> Result<Option<FinishedRun>, StoreError> {
        dispatch!(notify_if |v: &Option<FinishedRun>| v.is_some(), self, mark_run(run_id, state, note))
    }
    /// Stores captured task log lines (one batch insert).
    pub async fn append_task_logs(&self, lines: &[TaskLogLine]) -> Result<(), StoreError> {
        dispatch!(self, append_task_logs(lines))
    }
    /// A run's log lines after `after_log_id`, oldest first, optionally of one task, at most `limit`.
    pub async fn task_logs(
        &self,
        run_id: RunId,
        task: Option<&str>,
        after_log_id: i64,
        limit: i64,
    ) -> Result<Vec<TaskLogRecord>, StoreError> {
        dispatch!(self, task_logs(run_id, task, after_log_id, limit))
    }
    /// A run's newest `limit` log lines, oldest first (what a follower shows).
    pub async fn task_logs_tail(
        &self,
        run_id: RunId,
        limit: i64,
    ) -> Result<Vec<TaskLogRecord>, StoreError> {
        dispatch!(self, task_logs_tail(run_id, limit))
    }
    pub async fn start_run(
        &self,
        run_id: RunId,
        shape: &JobShape,
    ) -> Result<FinishReport, StoreError> {
        dispatch!(notify_if |_: &FinishReport| true, self, start_run(run_id, shape))
    }
    pub async fn get_run(&self, run_id: RunId) -> Result<Option<RunRecord>, StoreError> {
        dispatch!(self, get_run(run_id))
    }
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        dispatch!(self, list_runs(filter))
    }
    /// The newest run of `job`, if it has one (what "last run" means on every screen).
    pub async fn last_run(&self, job: &str) -> Result<Option<RunRecord>, StoreError> {
        let filter = RunFilter {
            job_name: Some(job.to_string()),
            limit: 1,
            ..Default::default()
        };
        Ok(self.list_runs(&filter).await?.into_iter().next())
    }
    /// (queued, running) runs of a job.
    pub async fn active_run_count(&self, job: &str) -> Result<(i64, i64), StoreError> {
        dispatch!(self, active_run_count(job))
    }
    pub async fn list_task_instances(
        &self,
        run_id: RunId,
    ) -> Result<Vec<TaskInstanceRecord>, StoreError> {
        dispatch!(self, list_task_instances(run_id))
    }
    pub async fn task_instances_of(
        &self,
        run_id: RunId,
        task: &str,
    ) -> Result<Vec<TaskInstanceRecord>, StoreError> {
        dispatch!(self, task_instances_of(run_id, task))
    }
    pub async fn get_task_instance(
        &self,
        id: TaskInstanceId,
    ) -> Result<Option<TaskInstanceRecord>, StoreError> {
        dispatch!(self, get_task_instance(id))
    }
    pub async fn list_events(
        &self,
        dataset: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        dispatch!(self, list_events(dataset, limit))
    }
    pub async fn produced_events(&self, run_id: RunId) -> Result<Vec<EventRecord>, StoreError> {
        dispatch!(self, produced_events(run_id))
    }
    pub async fn consumed_events(&self, run_id: RunId) -> Result<Vec<EventRecord>, StoreError> {
        dispatch!(self, consumed_events(run_id))
    }
    pub async fn pending_events(&self, job: &str) -> Result<Vec<PendingEvent>, StoreError> {
        dispatch!(self, pending_events(job))
    }
    pub async fn state_counts(&self) -> Result<StateCounts, StoreError> {
        dispatch!(self, state_counts())
    }
    pub async fn purge_history(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<PurgedHistory, StoreError> {
        dispatch!(self, purge_history(before, batch))
    }
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, try_lease(name, holder, until))
    }
    pub async fn drop_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        dispatch!(self, drop_lease(name, holder))
    }
}
