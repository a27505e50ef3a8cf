//! The daemon: a leader loop (cron ticks, dataset triggers, run starts, lease reaping) and a worker loop
//! (claim, execute, heartbeat, finish), both woken by database notifications with a slow poll as safety net.

use crate::Condition;
use crate::config::SchedulerSettings;
use crate::jobs::{Jobs, ResolvedJob, TaskPolicy};
use crate::metrics::{HistoryTable, JobLabel, JobTaskOutcome, Metrics, TableLabel};
use crate::params::{ParamError, Params};
use crate::schedule::CronSchedule;
use crate::task::{Task, TaskContext, TaskError, TaskOutput};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use snowpatrol_store::{
    ClaimedTask, ClearReport, ClearSelection, Database, EventId, FinishReport, Leadership,
    MarkReport, NewRun, PurgedHistory, RunId, RunRecord, RunState, StoreError, TaskInstanceId,
    TaskOutcome, TaskResult, TaskState, TriggerKind,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    UnknownJob(String),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// A task of a finished run whose instances (one, or some keys of a fan-out) failed for good, for alerting:
/// one per (run, task), never one per key, so a fan-out over 1,000 warehouses that all fail is one alert.
#[derive(Clone, Debug)]
pub struct TaskFailure {
    pub run_id: RunId,
    pub job_name: String,
    pub task_name: String,
    /// Map keys of the failed instances (empty for an unmapped task), sorted, at most
    /// [`TaskFailure::MAX_KEYS_LISTED`] of them.
    pub failed_keys: Vec<String>,
    /// How many instances of the task failed, and how many the task had in this run.
    pub failed_count: usize,
    pub instance_count: usize,
    /// The highest try number among the failed instances.
    pub try_number: i32,
    /// The most frequent error, and how many failed instances ended with it.
    pub error: String,
    pub error_count: usize,
}

impl TaskFailure {
    pub const MAX_KEYS_LISTED: usize = 20;

    /// The failed instances of each task of a finished run, grouped by task.
    pub fn of_run(instances: &[snowpatrol_store::TaskInstanceRecord]) -> Vec<TaskFailure> {
        let mut by_task: BTreeMap<&str, Vec<&snowpatrol_store::TaskInstanceRecord>> =
            BTreeMap::new();
        let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
        for t in instances {
            *totals.entry(&t.task_name).or_default() += 1;
            if t.state == snowpatrol_store::TaskState::Failed {
                by_task.entry(&t.task_name).or_default().push(t);
            }
        }
        by_task
            .into_iter()
            .map(|(task, failed)| {
                let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
                for t in &failed {
                    *errors.entry(t.error.as_deref().unwrap_or("")).or_default() += 1;
                }
                let (error, error_count) = errors
                    .iter()
                    .max_by_key(|(e, n)| (**n, std::cmp::Reverse(**e)))
                    .map(|(e, n)| (e.to_string(), *n))
                    .unwrap_or_default();
                let mut keys: Vec<String> = failed
                    .iter()
                    .filter(|t| !t.map_key.is_empty())
                    .map(|t| t.map_key.clone())
                    .collect();
                keys.sort();
                keys.truncate(Self::MAX_KEYS_LISTED);
                TaskFailure {
                    run_id: failed[0].run_id,
                    job_name: failed[0].job_name.clone(),
                    task_name: task.to_string(),
                    failed_keys: keys,
                    failed_count: failed.len(),
                    instance_count: totals.get(task).copied().unwrap_or(failed.len()),
                    try_number: failed.iter().map(|t| t.try_number).max().unwrap_or(0),
                    error,
                    error_count,
                }
            })
            .collect()
    }
}

/// Called once per (run, task) with failed instances, when the run has finished (like Airflow's
/// `on_failure_callback`, but summarised over a fan-out's keys).
#[async_trait]
pub trait FailureHook: Send + Sync {
    async fn on_task_failed(&self, failure: TaskFailure);
}

pub struct Engine {
    db: Database,
    jobs: Arc<Jobs>,
    settings: SchedulerSettings,
    worker_id: String,
    metrics: Arc<Metrics>,
    cpu_pool: Arc<rayon::ThreadPool>,
    failure_hook: Option<Arc<dyn FailureHook>>,
    /// Failure alerts in flight; awaited before a worker loop returns so `snowpatrol run` does not exit first.
    hook_tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// What the leader remembers between ticks to split dataset-trigger latency from waiting (see
/// [`Metrics::trigger_latency`] and [`Metrics::event_wait`]).
#[derive(Default)]
pub struct TriggerLatency {
    /// Per dataset-scheduled job, when the last tick that created no run asked.
    declined_at: HashMap<String, DateTime<Utc>>,
    /// Runs created but not started yet, with their job and oldest consumed event.
    waiting: HashMap<RunId, (String, DateTime<Utc>)>,
}

/// What an operator action leaves in a run's and its instances' `note` column.
fn operator_note(action: &str, who: &str, reason: &str) -> String {
    let at = snowpatrol_store::now().format("%Y-%m-%d %H:%M:%S UTC");
    if reason.trim().is_empty() {
        format!("{action} by {who} at {at}")
    } else {
        format!("{action} by {who} at {at}: {}", reason.trim())
    }
}

fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0)
}

/// A task try that ended (or was abandoned) in this process.
struct Finished {
    claim: ClaimedTask,
    result: Result<TaskOutput, TaskError>,
    elapsed: Duration,
}

impl Engine {
    pub fn new(db: Database, jobs: Jobs, settings: SchedulerSettings) -> Result<Self, EngineError> {
        let threads = settings
            .cpu_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let cpu_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("snowpatrol-cpu-{i}"))
            .build()
            .map_err(|e| EngineError::Invalid(format!("cannot start the CPU pool: {e}")))?;
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let suffix: u32 = rand::rng().random();
        Ok(Self {
            db,
            settings,
            worker_id: format!("{host}:{}:{suffix:08x}", std::process::id()),
            metrics: {
                let m = Metrics::new();
                m.init_jobs(jobs.jobs.keys().map(String::as_str));
                Arc::new(m)
            },
            jobs: Arc::new(jobs),
            cpu_pool: Arc::new(cpu_pool),
            failure_hook: None,
            hook_tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    pub fn with_failure_hook(mut self, hook: Arc<dyn FailureHook>) -> Self {
        self.failure_hook = Some(hook);
        self
    }

    /// Reports into `metrics` (shared with the HTTP server, which may exist before the engine does); the
    /// caller registers the jobs' series with [`Metrics::init_jobs`].
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn with_worker_id(mut self, id: &str) -> Self {
        self.worker_id = id.to_string();
        self
    }

    pub fn db(&self) -> &Database {
        &self.db
    }
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
    pub fn settings(&self) -> &SchedulerSettings {
        &self.settings
    }

    fn job(&self, name: &str) -> Result<&ResolvedJob, EngineError> {
        self.jobs
            .get(name)
            .ok_or_else(|| EngineError::UnknownJob(self.jobs.unknown_job(name)))
    }

    /// Records the jobs and their dataset subscriptions in the database.
    pub async fn register_jobs(&self) -> Result<(), EngineError> {
        self.db.sync_jobs(&self.jobs.registrations()).await?;
        Ok(())
    }

    /// Queues a manual run for the daemon; parameters are type-checked first, so a bad one creates nothing.
    pub async fn trigger(
        &self,
        job: &str,
        overrides: &[String],
        triggered_by: &str,
    ) -> Result<RunId, EngineError> {
        let j = self.job(job)?;
        let params = j.params.resolve_cli(overrides)?;
        let run = NewRun {
            job_name: job.into(),
            run_key: format!("manual:{}", uuid::Uuid::new_v4()),
            trigger_kind: TriggerKind::Manual,
            logical_time: snowpatrol_store::now(),
            params,
            triggered_by: triggered_by.into(),
        };
        self.db
            .create_run(&run)
            .await?
            .ok_or_else(|| EngineError::Invalid("run key collision".into()))
    }

    /// Cancels a queued or running run: the run and its unfinished task instances become `cancelled` at once,
    /// and the workers running its tries stop them at their next heartbeat (the lease is no longer theirs; the
    /// tries' writes are refused by their fence meanwhile). An error names the state of a run already finished.
    pub async fn cancel(&self, run_id: RunId, reason: &str) -> Result<RunRecord, EngineError> {
        let Some(run) = self.db.get_run(run_id).await? else {
            return Err(EngineError::Invalid(format!("no run with id {run_id}")));
        };
        if !self.db.cancel_run(run_id, reason).await? {
            let state = self
                .db
                .get_run(run_id)
                .await?
                .map_or(run.state, |r| r.state);
            return Err(EngineError::Invalid(format!(
                "run {run_id} of {} is already {state}: only queued and running runs can be cancelled",
                run.job_name
            )));
        }
        let cancelled = snowpatrol_store::FinishedRun {
            run_id,
            job_name: run.job_name.clone(),
            state: snowpatrol_store::RunState::Cancelled,
        };
        self.metrics
            .record_finished_runs(std::slice::from_ref(&cancelled));
        info!(run_id, job = %run.job_name, reason, "run cancelled");
        Ok(self.db.get_run(run_id).await?.unwrap_or(run))
    }

    /// The shape of the job a run belongs to, which clear and mark re-plan by.
    async fn run_shape(
        &self,
        run_id: RunId,
    ) -> Result<(RunRecord, Arc<snowpatrol_store::JobShape>), EngineError> {
        let Some(run) = self.db.get_run(run_id).await? else {
            return Err(StoreError::NotFound(format!("no run with id {run_id}")).into());
        };
        let shape = self.job(&run.job_name)?.shape.clone();
        Ok((run, shape))
    }

    /// Clears task instances of a started run so they run again (Airflow's *clear*): by default its failed and
    /// cancelled instances; with [`ClearSelection::Tasks`] every instance of the named tasks. Downstream tasks
    /// are planned afresh and a finished run runs again (see `Database::clear_tasks`). `who` and `reason` go
    /// into the run's and the instances' `note`.
    pub async fn clear(
        &self,
        run_id: RunId,
        selection: &ClearSelection,
        who: &str,
        reason: &str,
    ) -> Result<ClearReport, EngineError> {
        let (run, shape) = self.run_shape(run_id).await?;
        let note = operator_note("cleared", who, reason);
        let report = self
            .db
            .clear_tasks(run_id, &shape, selection, &note)
            .await?;
        self.metrics
            .record_finished_runs(&report.report.finished_runs);
        info!(run_id, job = %run.job_name, reset = report.reset.len(), replanned = ?report.replanned_tasks,
            who, reason, "run cleared");
        Ok(report)
    }

    /// Marks the instances of one task of a run (or its instance with `key`) `success` or `failed` by hand and
    /// re-plans the run (see `Database::mark_tasks`).
    pub async fn mark_task(
        &self,
        run_id: RunId,
        task: &str,
        key: Option<&str>,
        state: TaskState,
        who: &str,
        reason: &str,
    ) -> Result<MarkReport, EngineError> {
        let (run, shape) = self.run_shape(run_id).await?;
        let note = operator_note(&format!("marked {state}"), who, reason);
        let report = self
            .db
            .mark_tasks(run_id, &shape, task, key, state, &note)
            .await?;
        self.metrics
            .record_finished_runs(&report.report.finished_runs);
        info!(run_id, job = %run.job_name, task, marked = report.marked.len(), %state, who, reason,
            "task marked");
        Ok(report)
    }

    /// Ends a run as `success` or `failed` by hand (see `Database::mark_run`). An error names a run already in
    /// that state.
    pub async fn mark_run(
        &self,
        run_id: RunId,
        state: RunState,
        who: &str,
        reason: &str,
    ) -> Result<RunRecord, EngineError> {
        let note = operator_note(&format!("marked {state}"), who, reason);
        match self.db.mark_run(run_id, state, &note).await? {
            Some(finished) => {
                self.metrics
                    .record_finished_runs(std::slice::from_ref(&finished));
                info!(run_id, job = %finished.job_name, %state, who, reason, "run marked");
            }
            None => {
                return Err(StoreError::Refused(format!("run {run_id} is already {state}")).into());
            }
        }
        Ok(self
            .db
            .get_run(run_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no run with id {run_id}")))?)
    }

    /// Queues the runs of a cron job's ticks in [`from`, `to`] (logical times), with the job's params and
    /// `overrides`, for the daemon to start oldest first within `max_active_runs`. Ticks that have a run already
    /// (a cron run, an earlier backfill) keep it: each tick has one run key. The job's cron cursor does not move,
    /// so the scheduler's own ticks are unaffected. Refuses a range reaching into the future (those ticks are
    /// the scheduler's) or holding more than [`Engine::MAX_BACKFILL_RUNS`] ticks.
    pub async fn backfill(
        &self,
        job: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        overrides: &[String],
        triggered_by: &str,
    ) -> Result<Backfill, EngineError> {
        let j = self.job(job)?;
        let Some(cron) = &j.cron else {
            return Err(EngineError::Invalid(format!(
                "job `{job}` has no cron schedule ({}): only cron jobs can be backfilled; `snowpatrol trigger` \
                 queues a single run",
                j.schedule_text()
            )));
        };
        let now = snowpatrol_store::now();
        if from > to {
            return Err(EngineError::Invalid(format!(
                "the backfill range is empty: --from {from} is after --to {to}"
            )));
        }
        if to > now {
            return Err(EngineError::Invalid(format!(
                "--to {to} is in the future: a backfill covers past ticks only (the scheduler creates the rest)"
            )));
        }
        let params = j.params.resolve_cli(overrides)?;
        let after = from - chrono::Duration::seconds(1);
        let ticks = cron.ticks_between(after, to, Self::MAX_BACKFILL_RUNS + 1);
        if ticks.len() > Self::MAX_BACKFILL_RUNS {
            return Err(EngineError::Invalid(format!(
                "{from} .. {to} holds more than {} ticks of {}: backfill a shorter range at a time",
                Self::MAX_BACKFILL_RUNS,
                cron.describe()
            )));
        }
        let created = self
            .db
            .create_cron_runs(job, &ticks, None, &params, triggered_by)
            .await?;
        info!(
            job,
            ticks = ticks.len(),
            created = created.len(),
            "backfill queued"
        );
        Ok(Backfill {
            job: job.to_string(),
            existing: ticks.len() - created.len(),
            ticks,
            created,
            max_active_runs: j.max_active_runs,
        })
    }

    /// The most ticks one backfill may queue.
    pub const MAX_BACKFILL_RUNS: usize = 1000;

    /// Runs a job now in this process (recorded like any run) and returns the finished run.
    pub async fn run_now(
        &self,
        job: &str,
        overrides: &[String],
        triggered_by: &str,
        shutdown: CancellationToken,
    ) -> Result<RunRecord, EngineError> {
        let run_id = self.trigger(job, overrides, triggered_by).await?;
        let shape = self.job(job)?.shape.clone();
        self.db.start_run(run_id, &shape).await?;
        self.worker_loop(shutdown, Some(run_id)).await;
        self.db
            .get_run(run_id)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("run {run_id} vanished")))
    }

    /// Records an external dataset event. Returns the event id and how many jobs it queued a trigger for.
    pub async fn emit(
        &self,
        uri: &str,
        extra: &serde_json::Value,
        created_by: &str,
    ) -> Result<(EventId, i64), EngineError> {
        if !uri.contains("://") {
            return Err(EngineError::Invalid(format!(
                "`{uri}` is not a dataset URI (expected scheme://path)"
            )));
        }
        Ok(self.db.emit_event(uri, extra, created_by).await?)
    }

    /// Records a batch of external dataset events in one transaction (all or none). Every URI must look like
    /// one; `allow_unknown` also accepts datasets no configured job produces, consumes or declares external.
    /// Returns the event ids, in order, and how many job triggers they queued.
    pub async fn emit_batch(
        &self,
        events: &[(String, serde_json::Value)],
        allow_unknown: bool,
        created_by: &str,
    ) -> Result<(Vec<EventId>, i64), EngineError> {
        for (i, (uri, _)) in events.iter().enumerate() {
            if !uri.contains("://") {
                return Err(EngineError::Invalid(format!(
                    "event {i}: `{uri}` is not a dataset URI (expected scheme://path)"
                )));
            }
            if !allow_unknown && !self.jobs.known_datasets.contains(uri) {
                return Err(EngineError::Invalid(format!(
                    "event {i}: no configured job produces or is scheduled on `{uri}`; declare it under [datasets] \
                     external, or send allow_unknown"
                )));
            }
        }
        Ok(self.db.emit_events(events, created_by).await?)
    }

    /// [`Engine::run_daemon`] in a task of its own, for a caller that goes on working while the daemon runs
    /// (the demo, tests, benchmarks).
    pub fn spawn_daemon(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), EngineError>> {
        let engine = self.clone();
        tokio::spawn(async move { engine.run_daemon(shutdown).await })
    }

    /// Runs leader and worker loops until `shutdown`, then drains gracefully.
    pub async fn run_daemon(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        self.register_jobs().await?;
        info!(worker_id = %self.worker_id, backend = self.db.backend_name(), jobs = self.jobs.jobs.len(), "daemon started");
        self.log_schedule();
        let listener_stop = CancellationToken::new();
        let db = self.db.clone();
        let ls = listener_stop.clone();
        let listener = tokio::spawn(async move { db.run_notification_listener(ls).await });
        tokio::join!(
            self.leader_loop(shutdown.clone()),
            self.worker_loop(shutdown.clone(), None)
        );
        listener_stop.cancel();
        let _ = listener.await;
        info!(worker_id = %self.worker_id, "daemon stopped");
        Ok(())
    }

    async fn leader_loop(&self, shutdown: CancellationToken) {
        let mut wake = self.db.subscribe();
        let mut leadership: Option<Leadership> = None;
        let mut latency = TriggerLatency::default();
        let mut next_purge = tokio::time::Instant::now() + Duration::from_secs(60);
        let retry_interval = Duration::from_secs(2).min(self.settings.poll_interval);
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut healthy = self.hold_leadership(&mut leadership).await;
            self.metrics.is_leader.set(i64::from(leadership.is_some()));
            let mut next_wait = if leadership.is_some() {
                // The lease is renewed every tick, so ticks come at least every heartbeat (< lease).
                self.settings.poll_interval.min(self.settings.heartbeat)
            } else {
                retry_interval
            };
            if leadership.is_some() && healthy {
                // Consume the change signal before the tick so changes made during it wake the next one.
                wake.borrow_and_update();
                match self.lead(&mut latency, &mut next_purge).await {
                    Ok(until_next_cron) => {
                        backoff = Duration::from_millis(100);
                        if let Some(d) = until_next_cron {
                            next_wait = next_wait.min(d);
                        }
                    }
                    Err(e) => {
                        healthy = false;
                        warn!(error = %e, "scheduler tick failed; retrying");
                    }
                }
            }
            if !healthy {
                next_wait = backoff;
                backoff = (backoff * 2).min(DbRetry::MAX);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(next_wait) => {}
            }
        }
        if let Some(l) = leadership {
            self.db.release_leadership(l, &self.worker_id).await;
            self.metrics.is_leader.set(0);
        }
    }

    /// Takes the leader lease, or renews the one held; steps down when it could not be renewed within one lease
    /// period. False when the database did not answer. Every call is bounded by the lease: a partitioned
    /// connection must not keep the leader (and its decision to step down) waiting for TCP to give up.
    async fn hold_leadership(&self, leadership: &mut Option<Leadership>) -> bool {
        let lease = self.settings.lease;
        let bounded = |what: &'static str| {
            move |_| StoreError::Unavailable(format!("{what} took longer than the lease"))
        };
        let Some(l) = leadership.as_mut() else {
            let acquired = tokio::time::timeout(
                lease,
                self.db.try_acquire_leadership(&self.worker_id, lease),
            )
            .await
            .map_err(bounded("leader election"))
            .and_then(|r| r);
            return match acquired {
                Ok(l) => {
                    if l.is_some() {
                        info!(worker_id = %self.worker_id, "became scheduler leader");
                    }
                    *leadership = l;
                    true
                }
                Err(e) => {
                    warn!(error = %e, "leader election failed; database unreachable?");
                    false
                }
            };
        };
        let renewed =
            tokio::time::timeout(lease, self.db.renew_leadership(l, &self.worker_id, lease))
                .await
                .map_err(bounded("renewing leadership"))
                .and_then(|r| r);
        match renewed {
            Ok(true) => true,
            Ok(false) => {
                warn!(worker_id = %self.worker_id, "lost scheduler leadership: another replica took the lease over (this one stalled past it)");
                self.metrics.leadership_lost.inc();
                *leadership = None;
                true
            }
            Err(e) if l.unconfirmed_for() >= lease => {
                warn!(worker_id = %self.worker_id, error = %e, "stepping down as scheduler leader: the lease could not be renewed within one lease period");
                self.metrics.leadership_lost.inc();
                *leadership = None;
                false
            }
            Err(e) => {
                // Still ours for the rest of the lease; a tick would fail on the same database anyway.
                warn!(error = %e, "renewing leadership failed; retrying");
                false
            }
        }
    }

    /// One tick as the leader, bounded by the lease, then history retention once an hour. Returns the time
    /// until the next cron tick.
    async fn lead(
        &self,
        latency: &mut TriggerLatency,
        next_purge: &mut tokio::time::Instant,
    ) -> Result<Option<Duration>, EngineError> {
        let lease = self.settings.lease;
        let until_next_cron = tokio::time::timeout(lease, self.scheduler_tick(latency))
            .await
            .unwrap_or_else(|_| {
                Err(EngineError::Store(StoreError::Unavailable(
                    "scheduler tick took longer than the lease".into(),
                )))
            })?;
        if tokio::time::Instant::now() >= *next_purge {
            *next_purge = tokio::time::Instant::now() + Duration::from_secs(3600);
            if let Err(e) = self.purge_history(lease).await {
                warn!(error = %e, "history retention failed; retrying in an hour");
            }
        }
        Ok(until_next_cron)
    }

    /// One pass of the leader's work. Returns the time until the next cron tick, if any. Public for tests.
    pub async fn scheduler_tick(
        &self,
        latency: &mut TriggerLatency,
    ) -> Result<Option<Duration>, EngineError> {
        let (reaped, report) = self.db.reap_expired_leases(&self.jobs.shapes).await?;
        self.metrics.record_finished_runs(&report.finished_runs);
        self.alert_failed_runs(&report.finished_runs);
        if reaped > 0 {
            warn!(
                reaped,
                "returned task instances with expired leases to the queue"
            );
        }
        let now = snowpatrol_store::now();
        let mut until_next: Option<Duration> = None;
        for job in self.jobs.jobs.values() {
            if let Some(cron) = &job.cron {
                self.create_cron_runs(job, cron, now).await?;
                if let Some(next) = cron.next_after(now) {
                    let d = (next - now).to_std().unwrap_or_default() + Duration::from_millis(5);
                    until_next = Some(until_next.map_or(d, |u| u.min(d)));
                }
            }
            if let Some(cond) = &job.condition {
                self.trigger_on_datasets(job, cond, latency).await?;
            }
            self.start_queued_runs(job, latency).await?;
        }
        Ok(until_next)
    }

    /// The runs of the cron ticks due since the job's cursor (one, or up to `max_catchup_runs` with catchup).
    async fn create_cron_runs(
        &self,
        job: &ResolvedJob,
        cron: &CronSchedule,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let name = job.name();
        let Some(cursor) = self.db.get_cron_cursor(name).await? else {
            // First sight of this job: schedule from now on; the past is not backfilled, except the latest tick
            // of a `run_on_start` job that never ran (within a month).
            let mut ticks = Vec::new();
            if job.run_on_start && !self.has_runs(name).await? {
                ticks = cron.ticks_between(now - chrono::Days::new(32), now, 1);
            }
            let ids = self
                .db
                .create_cron_runs(
                    name,
                    &ticks,
                    Some(now),
                    &job.params.defaults(),
                    &self.worker_id,
                )
                .await?;
            if let (Some(tick), false) = (ticks.first(), ids.is_empty()) {
                info!(job = name, %tick, "run_on_start: the job never ran; created a run for its latest tick");
            }
            return Ok(());
        };
        let limit = if job.catchup {
            self.settings.max_catchup_runs
        } else {
            1
        };
        let ticks = cron.ticks_between(cursor, now, limit);
        if let Some(last) = ticks.last().copied() {
            let ids = self
                .db
                .create_cron_runs(
                    name,
                    &ticks,
                    Some(last),
                    &job.params.defaults(),
                    &self.worker_id,
                )
                .await?;
            info!(
                job = name,
                created = ids.len(),
                ticks = ticks.len(),
                "cron runs created"
            );
        }
        Ok(())
    }

    /// Creates one run consuming the job's pending events when its condition holds, and measures the engine's
    /// part of the wait.
    async fn trigger_on_datasets(
        &self,
        job: &ResolvedJob,
        cond: &Condition,
        latency: &mut TriggerLatency,
    ) -> Result<(), EngineError> {
        let name = job.name();
        let predicate = |set: &BTreeSet<String>| cond.is_satisfied(set);
        let asked_at = snowpatrol_store::now();
        let triggered = self
            .db
            .trigger_dataset_run(
                name,
                job.max_active_runs as i64,
                &job.params.defaults(),
                &self.worker_id,
                &predicate,
            )
            .await?;
        let Some(t) = triggered else {
            latency.declined_at.insert(name.to_string(), asked_at);
            return Ok(());
        };
        info!(
            job = name,
            run_id = t.run_id,
            events = t.events.len(),
            "dataset-triggered run created"
        );
        // The run could be created from the later of: its newest event (the one that completed the condition)
        // and the last tick that declined (paused, at max_active_runs, or the condition not yet met); what came
        // before is waiting, not engine latency.
        let ready = latency
            .declined_at
            .remove(name)
            .map_or(t.newest_event_at, |d| d.max(t.newest_event_at));
        self.metrics
            .trigger_latency
            .get_or_create(&JobLabel {
                job_name: name.to_string(),
            })
            .observe(secs_between(ready, snowpatrol_store::now()));
        latency
            .waiting
            .insert(t.run_id, (name.to_string(), t.oldest_event_at));
        Ok(())
    }

    /// Starts the job's queued runs within `max_active_runs`; a dataset run's end-to-end wait ends here.
    async fn start_queued_runs(
        &self,
        job: &ResolvedJob,
        latency: &mut TriggerLatency,
    ) -> Result<(), EngineError> {
        let (started, _) = self
            .db
            .start_queued_runs(&job.shape, job.max_active_runs as i64)
            .await?;
        for run_id in started {
            info!(job = job.name(), run_id, "run started");
            if let Some((job, at)) = latency.waiting.remove(&run_id) {
                self.metrics
                    .event_wait
                    .get_or_create(&JobLabel { job_name: job })
                    .observe(secs_between(at, snowpatrol_store::now()));
            }
        }
        Ok(())
    }

    async fn has_runs(&self, job: &str) -> Result<bool, StoreError> {
        let runs = self
            .db
            .list_runs(&snowpatrol_store::RunFilter {
                job_name: Some(job.to_string()),
                state: None,
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok(!runs.is_empty())
    }

    /// Logs what will run when, once at daemon start: the next tick of each cron job, the condition of each
    /// dataset-scheduled job.
    fn log_schedule(&self) {
        let now = snowpatrol_store::now();
        for job in self.jobs.jobs.values() {
            if let Some(cron) = &job.cron {
                match cron.next_after(now) {
                    Some(next) => {
                        info!(job = job.name(), schedule = %cron.describe(), %next, run_on_start = job.run_on_start, "next cron run")
                    }
                    None => {
                        warn!(job = job.name(), schedule = %cron.describe(), "cron schedule has no future tick")
                    }
                }
            } else if job.condition.is_some() {
                info!(job = job.name(), schedule = %job.schedule_text(), "runs when its datasets are updated");
            } else {
                info!(job = job.name(), "manual only (snowpatrol trigger / run)");
            }
        }
    }

    /// Deletes history older than `history_retention` in batches, each bounded by `limit` so a slow database
    /// cannot hold the leader past its lease. Public for tests.
    pub async fn purge_history(&self, limit: Duration) -> Result<PurgedHistory, EngineError> {
        let mut total = PurgedHistory::default();
        if self.settings.history_retention.is_zero() {
            return Ok(total);
        }
        let before = snowpatrol_store::now()
            - chrono::Duration::from_std(self.settings.history_retention)
                .unwrap_or(chrono::Duration::MAX);
        const BATCH: i64 = 1000;
        loop {
            let pass = tokio::time::timeout(limit, self.db.purge_history(before, BATCH))
                .await
                .map_err(|_| {
                    StoreError::Unavailable("history retention took longer than the lease".into())
                })??;
            total.runs += pass.runs;
            total.task_instances += pass.task_instances;
            total.events += pass.events;
            for (table, n) in [
                (HistoryTable::job_runs, pass.runs),
                (HistoryTable::task_instances, pass.task_instances),
                (HistoryTable::dataset_events, pass.events),
            ] {
                self.metrics
                    .history_purged
                    .get_or_create(&TableLabel { table })
                    .inc_by(n);
            }
            if pass.runs < BATCH as u64 && pass.events < BATCH as u64 {
                break;
            }
        }
        if total != PurgedHistory::default() {
            info!(
                runs = total.runs,
                task_instances = total.task_instances,
                events = total.events,
                before = %before,
                "history retention deleted old runs and events"
            );
        }
        Ok(total)
    }

    fn lease_until(&self) -> DateTime<Utc> {
        snowpatrol_store::now()
            + chrono::Duration::from_std(self.settings.lease).unwrap_or_default()
    }

    /// Claims and runs task instances until shutdown (daemon) or until `only_run` has finished (`run_now`).
    async fn worker_loop(&self, shutdown: CancellationToken, only_run: Option<RunId>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Finished>();
        let mut w = WorkerState::default();
        let mut wake = self.db.subscribe();
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Ok(f) = rx.try_recv() {
                w.finished(f);
            }
            if self.record_results(&mut w, only_run).await {
                break;
            }
            if shutdown.is_cancelled() && w.draining.is_none() {
                info!(
                    running = w.running.len(),
                    grace_s = self.settings.shutdown_grace.as_secs(),
                    "shutting down: no new claims, waiting for running tasks"
                );
                w.draining = Some(tokio::time::Instant::now() + self.settings.shutdown_grace);
            }
            if self.drained(&mut w).await || self.one_run_over(&w, only_run).await {
                break;
            }
            if self.claim(&mut w, &mut wake, only_run, &tx).await
                && w.running.len() < self.settings.worker_concurrency
            {
                continue;
            }
            let now = tokio::time::Instant::now();
            let wake_at = match w.db_retry.at {
                Some(t) if t > now => t,
                _ => now + self.settings.poll_interval,
            };
            tokio::select! {
                Some(f) = rx.recv() => w.finished(f),
                _ = wake.changed(), if w.draining.is_none() => {}
                _ = heartbeat.tick() => {
                    w.lease_confirmed.retain(|id, _| w.running.contains_key(id));
                    if !w.running.is_empty() {
                        self.heartbeat_running(&mut w.running, &mut w.lease_confirmed).await;
                        self.flush_task_logs(&[]).await;
                    }
                }
                _ = shutdown.cancelled(), if w.draining.is_none() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
        self.drain_failure_hooks(self.settings.shutdown_grace).await;
    }

    /// Writes the captured log lines of this process's tries (see [`crate::task_log`]); `finished` tries are
    /// forgotten by the sink. Best effort: a failed write drops the lines with a warning.
    async fn flush_task_logs(&self, finished: &[TaskInstanceId]) {
        let Some(sink) = crate::TaskLogSink::installed() else {
            return;
        };
        let lines = sink.drain(finished);
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.db.append_task_logs(&lines).await {
            warn!(error = %e, lines = lines.len(), "could not store task log lines; they are dropped");
        }
    }

    /// Records the finished tries' results in one batch; kept for the next pass when the database fails. True
    /// when the one run a `snowpatrol run` worker serves finished.
    async fn record_results(&self, w: &mut WorkerState, only_run: Option<RunId>) -> bool {
        if w.unsent.is_empty() {
            return false;
        }
        let finished: Vec<TaskInstanceId> =
            w.unsent.iter().map(|f| f.claim.task_instance_id).collect();
        self.flush_task_logs(&finished).await;
        match self.finish_batch(&w.unsent).await {
            Ok(report) => {
                w.unsent.clear();
                w.db_retry.succeeded();
                only_run.is_some_and(|run| report.finished_runs.iter().any(|r| r.run_id == run))
            }
            Err(e) => {
                w.db_retry.failed();
                warn!(error = %e, results = w.unsent.len(), "could not record task results; keeping them and retrying");
                false
            }
        }
    }

    /// While shutting down: true once nothing runs or is unrecorded, or when the grace period is over (the
    /// running tries are then cancelled and their leases given back).
    async fn drained(&self, w: &mut WorkerState) -> bool {
        let Some(deadline) = w.draining else {
            return false;
        };
        if w.running.is_empty() && w.unsent.is_empty() {
            return true;
        }
        if tokio::time::Instant::now() < deadline {
            return false;
        }
        let ids: Vec<_> = w.running.keys().copied().collect();
        for (_, (_, token)) in w.running.drain() {
            token.cancel();
        }
        match self.db.release_tasks(&self.worker_id, &ids).await {
            Ok(n) => info!(
                released = n,
                "grace period over: gave back the leases of unfinished tasks"
            ),
            Err(e) => {
                warn!(error = %e, "could not give back leases; they expire by themselves")
            }
        }
        true
    }

    /// A `snowpatrol run` worker with nothing in hand stops once its run is over (or gone).
    async fn one_run_over(&self, w: &WorkerState, only_run: Option<RunId>) -> bool {
        let Some(run) = only_run else {
            return false;
        };
        if !w.running.is_empty() || !w.unsent.is_empty() {
            return false;
        }
        match self.db.get_run(run).await {
            Ok(Some(r)) => r.state.is_terminal(),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Claims as many ready task instances as there are free slots and starts them. True when it claimed any.
    async fn claim(
        &self,
        w: &mut WorkerState,
        wake: &mut tokio::sync::watch::Receiver<u64>,
        only_run: Option<RunId>,
        tx: &mpsc::UnboundedSender<Finished>,
    ) -> bool {
        let free = self
            .settings
            .worker_concurrency
            .saturating_sub(w.running.len());
        if w.draining.is_some() || free == 0 || !w.db_retry.due() {
            return false;
        }
        wake.borrow_and_update();
        let limit = free.min(self.settings.claim_batch) as i64;
        match self
            .db
            .claim_tasks(&self.worker_id, limit, self.lease_until(), only_run)
            .await
        {
            Ok(claims) => {
                w.db_retry.succeeded();
                let claimed_any = !claims.is_empty();
                for claim in claims {
                    let token = CancellationToken::new();
                    w.running
                        .insert(claim.task_instance_id, (claim.clone(), token.clone()));
                    w.lease_confirmed
                        .insert(claim.task_instance_id, Instant::now());
                    self.spawn_task(claim, token, tx.clone());
                }
                claimed_any
            }
            Err(e) => {
                w.db_retry.failed();
                warn!(error = %e, "claiming tasks failed; database unreachable?");
                false
            }
        }
    }

    /// Renews the leases of this worker's running tries. A try whose lease the database no longer shows as
    /// this worker's (reaped after a stall, cancelled) is cancelled here; so is every try whose lease could not
    /// be confirmed for a whole lease period (database unreachable or partitioned), because by then the leader
    /// of another replica may have handed the instance to someone else. Either way the try's writes are also
    /// refused by its [`snowpatrol_store::TaskFence`], so stopping here only saves work.
    async fn heartbeat_running(
        &self,
        running: &mut HashMap<TaskInstanceId, (ClaimedTask, CancellationToken)>,
        lease_confirmed: &mut HashMap<TaskInstanceId, Instant>,
    ) {
        let ids: Vec<_> = running.keys().copied().collect();
        let beat = tokio::time::timeout(
            self.settings.lease,
            self.db.heartbeat(&self.worker_id, &ids, self.lease_until()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "heartbeat took longer than the lease ({})",
                humantime::format_duration(self.settings.lease)
            )))
        });
        let now = Instant::now();
        let lost: Vec<(TaskInstanceId, &'static str)> = match beat {
            Ok(kept) => {
                let kept: BTreeSet<_> = kept.into_iter().collect();
                for id in &kept {
                    lease_confirmed.insert(*id, now);
                }
                ids.iter()
                    .filter(|id| !kept.contains(id))
                    .map(|id| (*id, "lease lost (reaped or cancelled); abandoning the try"))
                    .collect()
            }
            Err(e) => {
                warn!(error = %e, "heartbeat failed; will retry");
                lease_confirmed
                    .iter()
                    .filter(|(_, at)| now.duration_since(**at) >= self.settings.lease)
                    .map(|(id, _)| {
                        (
                            *id,
                            "lease not confirmed for a whole lease period; stopping the try",
                        )
                    })
                    .collect()
            }
        };
        for (id, why) in lost {
            lease_confirmed.remove(&id);
            if let Some((c, token)) = running.remove(&id) {
                warn!(run_id = c.run_id, job = %c.job_name, task = %c.task_name, key = %c.map_key, try_number = c.try_number, "{why}");
                self.metrics.leases_lost.inc();
                token.cancel();
            }
        }
    }

    /// Waits (up to `limit`) for failure alerts still being delivered.
    async fn drain_failure_hooks(&self, limit: Duration) {
        let mut set = match self.hook_tasks.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(_) => return,
        };
        if set.is_empty() {
            return;
        }
        let drained =
            tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                pending = set.len(),
                "failure alerts still in flight at exit; they stay pending in the outbox"
            );
        }
    }

    /// What a claimed try's task sees: its instance, params, fence, database and CPU pool.
    fn task_context(&self, claim: &ClaimedTask, cancel: CancellationToken) -> TaskContext {
        TaskContext {
            run_id: claim.run_id,
            task_instance_id: claim.task_instance_id,
            job_name: claim.job_name.clone(),
            task_name: claim.task_name.clone(),
            map_key: (!claim.map_key.is_empty()).then(|| claim.map_key.clone()),
            try_number: claim.try_number,
            max_tries: claim.max_tries,
            params: Params::from_value(&claim.params),
            logical_time: claim.logical_time,
            trigger_kind: claim.trigger_kind,
            cancel: cancel.clone(),
            fence: snowpatrol_store::TaskFence {
                task_instance_id: claim.task_instance_id,
                try_number: claim.try_number,
                worker_id: self.worker_id.clone(),
            },
            db: self.db.clone(),
            cpu_pool: self.cpu_pool.clone(),
        }
    }

    fn spawn_task(
        &self,
        claim: ClaimedTask,
        cancel: CancellationToken,
        tx: mpsc::UnboundedSender<Finished>,
    ) {
        let job = self.jobs.get(&claim.job_name);
        let task = job
            .and_then(|j| j.task(&claim.task_name))
            .map(|t| t.task.clone());
        let policy = job.and_then(|j| j.policies.get(&claim.task_name)).cloned();
        let ctx = self.task_context(&claim, cancel.clone());
        // Named `task_log::TASK_SPAN`; its fields identify the try whose log lines it captures.
        let span = info_span!("task", run_id = claim.run_id, job = %claim.job_name, task = %claim.task_name,
            key = %claim.map_key, try_number = claim.try_number, task_instance_id = claim.task_instance_id);
        tokio::spawn(
            async move {
                let started = Instant::now();
                let result = match task {
                    None => Err(TaskError::permanent(format!(
                        "this worker does not know task `{}` of job `{}` (configuration differs between replicas?)",
                        claim.task_name, claim.job_name
                    ))),
                    Some(task) => {
                        let timeout = policy.as_ref().and_then(|p| p.timeout);
                        run_try(task, ctx, timeout, &cancel).await
                    }
                };
                if cancel.is_cancelled() {
                    // Lease lost or given back: another try owns the row now; drop the result.
                    return;
                }
                match &result {
                    Ok(_) => debug!(elapsed_ms = started.elapsed().as_millis() as u64, "task succeeded"),
                    Err(e) => warn!(error = %e.message, "task try failed"),
                }
                let _ = tx.send(Finished { claim, result, elapsed: started.elapsed() });
            }
            .instrument(span),
        );
    }

    async fn finish_batch(&self, batch: &[Finished]) -> Result<FinishReport, StoreError> {
        let now = snowpatrol_store::now();
        let results: Vec<TaskResult> = batch
            .iter()
            .map(|f| TaskResult {
                task_instance_id: f.claim.task_instance_id,
                try_number: f.claim.try_number,
                outcome: self.outcome_of(f, now),
            })
            .collect();
        let report = self
            .db
            .finish_tasks(&self.worker_id, &results, &self.jobs.shapes)
            .await?;
        for f in batch {
            let outcome = if f.result.is_ok() {
                snowpatrol_store::TaskState::Success
            } else {
                snowpatrol_store::TaskState::Failed
            };
            self.metrics
                .task_duration
                .get_or_create(&JobTaskOutcome {
                    job_name: f.claim.job_name.clone(),
                    task: f.claim.task_name.clone(),
                    outcome: outcome.as_str().into(),
                })
                .observe(f.elapsed.as_secs_f64());
        }
        for r in &report.finished_runs {
            info!(run_id = r.run_id, job = %r.job_name, state = %r.state, "run finished");
        }
        self.metrics.record_finished_runs(&report.finished_runs);
        if !report.events.is_empty() {
            info!(events = ?report.events, "dataset events emitted");
        }
        self.alert_failed_runs(&report.finished_runs);
        Ok(report)
    }

    /// What a finished try means for its instance: success; a retry after the task's backoff while tries
    /// remain and the error is retryable; postponed (the try is granted back) when a dependency was down;
    /// failed otherwise.
    fn outcome_of(&self, f: &Finished, now: DateTime<Utc>) -> TaskOutcome {
        let e = match &f.result {
            Ok(out) => {
                return TaskOutcome::Success {
                    output: out.clone(),
                };
            }
            Err(e) => e,
        };
        let policy = self
            .jobs
            .get(&f.claim.job_name)
            .and_then(|j| j.policies.get(&f.claim.task_name));
        let backoff = |p: &TaskPolicy| {
            now + chrono::Duration::from_std(backoff_delay(p, f.claim.try_number))
                .unwrap_or_default()
        };
        if e.dependency_unavailable {
            let default_delay = || {
                now + chrono::Duration::from_std(self.settings.default_retry_delay)
                    .unwrap_or_default()
            };
            TaskOutcome::Postponed {
                error: e.message.clone(),
                retry_at: policy.map_or_else(default_delay, backoff),
            }
        } else {
            let retryable = e.retryable && f.claim.try_number < f.claim.max_tries;
            TaskOutcome::Failed {
                error: e.message.clone(),
                retry_at: policy.filter(|_| retryable).map(backoff),
            }
        }
    }

    /// Hands the failed tasks of runs that just finished `failed` to the failure hook, one call per (run,
    /// task), off the caller's path. Exactly one process sees a run finish (the transaction that finished it),
    /// whether a worker recorded the last result or the leader reaped the last lease.
    fn alert_failed_runs(&self, finished: &[snowpatrol_store::FinishedRun]) {
        let Some(hook) = &self.failure_hook else {
            return;
        };
        for run in finished {
            if run.state != snowpatrol_store::RunState::Failed {
                continue;
            }
            let (hook, db, run_id) = (hook.clone(), self.db.clone(), run.run_id);
            if let Ok(mut set) = self.hook_tasks.lock() {
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    // The run's failure may itself come from a database outage: keep trying for a while.
                    let mut delay = Duration::from_millis(500);
                    for attempt in 1..=8 {
                        match db.list_task_instances(run_id).await {
                            Ok(instances) => {
                                for failure in TaskFailure::of_run(&instances) {
                                    hook.on_task_failed(failure).await;
                                }
                                return;
                            }
                            Err(e) if attempt < 8 => {
                                debug!(run_id, error = %e, "reading the failed run's tasks; retrying");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(30));
                            }
                            Err(e) => warn!(run_id, error = %e, "could not read the failed run's tasks; no failure alert"),
                        }
                    }
                });
            }
        }
    }

    /// Why a job will or will not run next.
    pub async fn explain(&self, job: &str) -> Result<Explanation, EngineError> {
        let j = self.job(job)?;
        let jobs = self.db.list_jobs().await?;
        let row = jobs.iter().find(|r| r.job_name == job);
        let pending = self.db.pending_events(job).await?;
        let (queued, running) = self.db.active_run_count(job).await?;
        let now = snowpatrol_store::now();
        let next_cron = j
            .cron
            .as_ref()
            .and_then(|c| c.next_after(row.and_then(|r| r.cron_cursor).unwrap_or(now).max(now)));
        let mut by_uri: BTreeMap<String, Vec<EventId>> = BTreeMap::new();
        for p in pending {
            by_uri.entry(p.dataset_uri).or_default().push(p.event_id);
        }
        let leaves: Vec<LeafStatus> = j
            .condition
            .as_ref()
            .map(|c| c.datasets())
            .unwrap_or_default()
            .into_iter()
            .map(|uri| LeafStatus {
                pending_event_ids: by_uri.get(&uri).cloned().unwrap_or_default(),
                dataset_uri: uri,
            })
            .collect();
        let updated: BTreeSet<String> = leaves
            .iter()
            .filter(|l| !l.pending_event_ids.is_empty())
            .map(|l| l.dataset_uri.clone())
            .collect();
        let mut x = Explanation {
            job: job.into(),
            schedule: j.schedule_text(),
            paused: row.is_some_and(|r| r.paused),
            condition: j.condition.as_ref().map(|c| c.to_string()),
            condition_met: j.condition.as_ref().map(|c| c.is_satisfied(&updated)),
            leaves,
            max_active_runs: j.max_active_runs,
            queued_runs: queued,
            running_runs: running,
            next_cron_tick: next_cron,
            catchup: j.catchup,
            verdict: String::new(),
        };
        let zone = j.cron.as_ref().map_or(chrono_tz::UTC, |c| c.timezone);
        x.verdict = x.verdict_in(zone);
        Ok(x)
    }
}

/// Runs one try of a task, ended early by its timeout or by `cancel` (lease lost or shutdown).
async fn run_try(
    task: Arc<dyn Task>,
    ctx: TaskContext,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<TaskOutput, TaskError> {
    let fut = task.run(ctx);
    tokio::select! {
        r = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                    Err(TaskError::retryable(format!("timed out after {}", humantime::format_duration(t))))
                }),
                None => fut.await,
            }
        } => r,
        _ = cancel.cancelled() => Err(TaskError::retryable("cancelled: lease lost or shutdown")),
    }
}

impl Explanation {
    /// Whether the job will run, and if not, every reason why (cron ticks shown in `zone`).
    fn verdict_in(&self, zone: chrono_tz::Tz) -> String {
        let mut reasons = Vec::new();
        if self.paused {
            reasons.push("the job is paused".to_string());
        }
        let (queued, running) = (self.queued_runs, self.running_runs);
        let active = queued + running;
        if active >= self.max_active_runs as i64 {
            let relation = if active > self.max_active_runs as i64 {
                "more than"
            } else {
                "as many as"
            };
            reasons.push(format!(
                "{active} run{} active (queued {queued}, running {running}): {relation} max_active_runs allows ({}); \
                 pending events wait until one finishes",
                if active == 1 { "" } else { "s" },
                self.max_active_runs
            ));
        }
        if let (Some(false), Some(c)) = (self.condition_met, &self.condition) {
            let missing: Vec<_> = self
                .leaves
                .iter()
                .filter(|l| l.pending_event_ids.is_empty())
                .map(|l| l.dataset_uri.as_str())
                .collect();
            reasons.push(format!(
                "dataset condition `{c}` not met; no pending events for: {}",
                missing.join(", ")
            ));
        }
        if !reasons.is_empty() {
            format!("will not run now: {}", reasons.join("; "))
        } else if self.condition_met == Some(true) {
            "will run: its dataset condition is met and it has room for a run".to_string()
        } else if let Some(t) = self.next_cron_tick {
            format!(
                "will run at the next cron tick, {}",
                t.with_timezone(&zone).to_rfc3339()
            )
        } else {
            "manual only: runs when triggered (`snowpatrol trigger` or `snowpatrol run`)"
                .to_string()
        }
    }
}

/// What a worker loop keeps between passes.
#[derive(Default)]
struct WorkerState {
    /// Each running try with the token that cancels it.
    running: HashMap<TaskInstanceId, (ClaimedTask, CancellationToken)>,
    /// When each running try's lease was last confirmed (claimed or heartbeated) in the database.
    lease_confirmed: HashMap<TaskInstanceId, Instant>,
    /// Results not recorded yet (the database failed): kept and retried.
    unsent: Vec<Finished>,
    /// Shutting down: no new claims, and the grace period ends then.
    draining: Option<tokio::time::Instant>,
    /// After a database error the loop waits until `db_retry.at` before claiming again; the deadline lives
    /// across passes (heartbeat ticks and wake-ups must not postpone it, as a sleep re-created on every pass
    /// would be).
    db_retry: DbRetry,
}

impl WorkerState {
    fn finished(&mut self, f: Finished) {
        self.running.remove(&f.claim.task_instance_id);
        self.unsent.push(f);
    }
}

/// When the worker loop may use the database again after an error: exponential backoff from 100 ms to
/// [`DbRetry::MAX`], reset by the first success.
#[derive(Debug)]
struct DbRetry {
    at: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl Default for DbRetry {
    fn default() -> Self {
        Self {
            at: None,
            backoff: Duration::from_millis(100),
        }
    }
}

impl DbRetry {
    /// Short enough that work resumes within seconds of a database coming back.
    const MAX: Duration = Duration::from_secs(10);

    fn due(&self) -> bool {
        self.at.is_none_or(|t| tokio::time::Instant::now() >= t)
    }

    fn failed(&mut self) {
        // A failure while a retry is already scheduled (another call of the same pass) does not push it back.
        if self.due() {
            self.at = Some(tokio::time::Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Self::MAX);
        }
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// Exponential backoff with jitter: the n-th retry waits a random time in [d/2, d] with d = delay·2^(n-1),
/// capped, so many failing instances do not retry in lockstep.
pub fn backoff_delay(policy: &TaskPolicy, try_number: i32) -> Duration {
    let exp = try_number.clamp(1, 30) as u32 - 1;
    let base = policy
        .retry_delay
        .saturating_mul(2u32.saturating_pow(exp))
        .min(policy.max_retry_delay);
    let jitter: f64 = rand::rng().random_range(0.5..=1.0);
    base.mul_f64(jitter)
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LeafStatus {
    pub dataset_uri: String,
    pub pending_event_ids: Vec<EventId>,
}

/// What [`Engine::backfill`] queued.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Backfill {
    pub job: String,
    /// Every tick of the range, oldest first.
    pub ticks: Vec<DateTime<Utc>>,
    /// The runs created, one per tick that had none.
    pub created: Vec<RunId>,
    /// Ticks that had a run already.
    pub existing: usize,
    /// The daemon starts the queued runs oldest first, this many at a time.
    pub max_active_runs: u32,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Explanation {
    pub job: String,
    pub schedule: String,
    pub paused: bool,
    pub condition: Option<String>,
    pub condition_met: Option<bool>,
    pub leaves: Vec<LeafStatus>,
    pub max_active_runs: u32,
    pub queued_runs: i64,
    pub running_runs: i64,
    pub next_cron_tick: Option<DateTime<Utc>>,
    pub catchup: bool,
    pub verdict: String,
}
