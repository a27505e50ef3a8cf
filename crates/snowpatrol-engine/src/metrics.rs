//! Prometheus metrics of the engine.
//!
//! Two kinds, chosen so a scrape stays cheap after a year of history and sums correctly over replicas:
//! - **Cluster-wide gauges** read from the database at scrape time, every query reading a bounded index (the
//!   unfinished runs and task instances, one row per job): every replica reports the same value, so dashboards
//!   take `max` over instances, never `sum`.
//! - **Per-process counters and histograms** of what this process did (runs it finished, task tries it ran,
//!   history it purged): `sum(increase(...))` over replicas is the cluster's total.
//!
//! Series that an alert rule watches exist from the start at 0 (`init_jobs`), so `increase()` sees the first
//! failure. No label carries a warehouse: 10,000 warehouses would be 10,000 series per family.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use snowpatrol_store::{Database, FinishedRun, RunState, StoreError, TaskState};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

// The label is `job_name`, not `job`: Prometheus sets its own `job` label (the scrape job) on every series,
// and a target's `job` label would be stored as `exported_job`, so queries on it would match nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobState {
    pub job_name: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobTaskOutcome {
    pub job_name: String,
    pub task: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job_name: String,
}

/// The engine tables history retention deletes from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum HistoryTable {
    job_runs,
    task_instances,
    dataset_events,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: HistoryTable,
}

/// A gauge holding a float (timestamps in seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Mutex<Registry>,
    /// Queued and running runs by job (cluster-wide).
    pub runs_active: Family<JobState, Gauge>,
    /// Runs this process moved to a terminal state.
    pub runs_finished: Family<JobState, Counter>,
    /// Queued, running and up-for-retry task instances by job (cluster-wide).
    pub task_instances_active: Family<JobState, Gauge>,
    pub pending_trigger_events: Family<JobLabel, Gauge>,
    pub last_success: Family<JobLabel, FloatGauge>,
    pub last_finished: Family<JobLabel, FloatGauge>,
    pub task_duration: Family<JobTaskOutcome, Histogram>,
    /// From the moment a dataset-triggered run could be created (its condition held, the job was unpaused and
    /// below `max_active_runs`) to its creation: the engine's own latency.
    pub trigger_latency: Family<JobLabel, Histogram>,
    /// From the oldest event a dataset-triggered run consumed to the run's start, waits on a pause or on
    /// `max_active_runs` included: how long data waited for its consumer.
    pub event_wait: Family<JobLabel, Histogram>,
    pub is_leader: Gauge,
    /// Task tries this process stopped because their lease was lost or could not be confirmed.
    pub leases_lost: Counter,
    /// Times this process gave up scheduler leadership because it could not renew it in time.
    pub leadership_lost: Counter,
    /// Rows history retention deleted in this process.
    pub history_purged: Family<TableLabel, Counter>,
    /// 1 when the last scrape could read the database, else 0 (the other cluster-wide gauges are then stale).
    pub database_up: Gauge,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
    ])
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
    ])
}

fn wait_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds(at: chrono::DateTime<chrono::Utc>) -> f64 {
    at.timestamp_micros() as f64 / 1e6
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("snowpatrol");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            runs_active: Family::default(),
            runs_finished: Family::default(),
            task_instances_active: Family::default(),
            pending_trigger_events: Family::default(),
            last_success: Family::default(),
            last_finished: Family::default(),
            task_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            trigger_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            event_wait: Family::new_with_constructor(wait_histogram as fn() -> Histogram),
            is_leader: Gauge::default(),
            leases_lost: Counter::default(),
            leadership_lost: Counter::default(),
            history_purged: Family::default(),
            database_up: Gauge::default(),
        };
        m.register_cluster_gauges(registry);
        m.register_process_metrics(registry);
        for table in [
            HistoryTable::job_runs,
            HistoryTable::task_instances,
            HistoryTable::dataset_events,
        ] {
            let _ = m.history_purged.get_or_create(&TableLabel { table });
        }
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = root;
        m
    }

    /// The gauges read from the database at scrape time: the same in every replica (take `max` over them).
    fn register_cluster_gauges(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "job_runs_active",
            "Queued and running job runs by job and state (cluster-wide; take max over replicas)",
            m.runs_active.clone(),
        );
        registry.register(
            "task_instances_active",
            "Queued, running and up-for-retry task instances by job and state (cluster-wide)",
            m.task_instances_active.clone(),
        );
        registry.register(
            "pending_trigger_events",
            "Dataset events waiting to trigger a run, by job (cluster-wide)",
            m.pending_trigger_events.clone(),
        );
        registry.register(
            "job_last_success_timestamp_seconds",
            "When the newest successful run of each job finished (cluster-wide; absent until one succeeded)",
            m.last_success.clone(),
        );
        registry.register(
            "job_last_finished_timestamp_seconds",
            "When the newest run of each job finished, in any state (cluster-wide)",
            m.last_finished.clone(),
        );
        registry.register(
            "database_up",
            "1 when this scrape could read the database; 0 means the cluster-wide gauges are stale",
            m.database_up.clone(),
        );
    }

    /// What this process did and measured: counters and histograms to `sum(increase())` over replicas.
    fn register_process_metrics(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "job_runs_finished",
            "Job runs this process moved to success, failed or cancelled (sum over replicas)",
            m.runs_finished.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Task try duration in this process, by outcome",
            m.task_duration.clone(),
        );
        registry.register(
            "dataset_trigger_latency_seconds",
            "From the moment a dataset-triggered run could be created (condition met, job unpaused, below max_active_runs) to its creation",
            m.trigger_latency.clone(),
        );
        registry.register(
            "dataset_event_wait_seconds",
            "From the oldest dataset event a run consumed to the run's start, including waits on a pause or max_active_runs",
            m.event_wait.clone(),
        );
        registry.register(
            "is_leader",
            "1 when this replica evaluates cron and dataset triggers",
            m.is_leader.clone(),
        );
        registry.register(
            "task_leases_lost",
            "Task tries this process stopped because their lease was lost or could not be renewed in time",
            m.leases_lost.clone(),
        );
        registry.register(
            "leadership_lost",
            "Times this process stepped down as scheduler leader (renewal refused or not possible in time)",
            m.leadership_lost.clone(),
        );
        registry.register(
            "history_purged_rows",
            "Rows deleted by history retention in this process, by table",
            m.history_purged.clone(),
        );
    }

    /// Lets the application register its own metrics (and collectors) in the same registry, so one
    /// `/metrics` page serves everything. Families registered under `sub_registry_with_prefix("snowpatrol")`
    /// share the engine's prefix.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry);
    }

    /// Creates every per-job series at 0, so a dashboard or an alert rule sees a job before its first run and
    /// `increase()` sees its first failure.
    pub fn init_jobs<'a>(&self, jobs: impl IntoIterator<Item = &'a str>) {
        for job in jobs {
            for state in [RunState::Success, RunState::Failed, RunState::Cancelled] {
                let _ = self.runs_finished.get_or_create(&JobState {
                    job_name: job.to_string(),
                    state: state.as_str().into(),
                });
            }
        }
    }

    /// Counts the runs this process finished (the transaction that finished a run reports it once).
    pub fn record_finished_runs(&self, runs: &[FinishedRun]) {
        for run in runs {
            self.runs_finished
                .get_or_create(&JobState {
                    job_name: run.job_name.clone(),
                    state: run.state.as_str().into(),
                })
                .inc();
        }
    }

    /// Reloads the cluster-wide gauges from the database. Every registered job gets its active series (at 0
    /// when nothing is active), so a drop to zero is seen as such rather than as a series that vanished.
    pub async fn refresh(&self, db: &Database, jobs: &[String]) -> Result<(), StoreError> {
        let counts = db.state_counts().await?;
        self.runs_active.clear();
        self.task_instances_active.clear();
        self.pending_trigger_events.clear();
        self.last_success.clear();
        self.last_finished.clear();
        let key = |job: &str, state: &str| JobState {
            job_name: job.to_string(),
            state: state.to_string(),
        };
        for job in jobs {
            for state in [RunState::Queued, RunState::Running] {
                let _ = self.runs_active.get_or_create(&key(job, state.as_str()));
            }
            for state in [TaskState::Queued, TaskState::Running, TaskState::UpForRetry] {
                let _ = self
                    .task_instances_active
                    .get_or_create(&key(job, state.as_str()));
            }
            let _ = self.pending_trigger_events.get_or_create(&JobLabel {
                job_name: job.clone(),
            });
        }
        for (job, state, n) in counts.active_runs {
            self.runs_active
                .get_or_create(&key(&job, state.as_str()))
                .set(n);
        }
        for (job, state, n) in counts.active_task_instances {
            self.task_instances_active
                .get_or_create(&key(&job, state.as_str()))
                .set(n);
        }
        for (job, n) in counts.pending_triggers {
            self.pending_trigger_events
                .get_or_create(&JobLabel { job_name: job })
                .set(n);
        }
        for (job, at) in counts.last_success {
            self.last_success
                .get_or_create(&JobLabel { job_name: job })
                .set(seconds(at));
        }
        for (job, at) in counts.last_finished {
            self.last_finished
                .get_or_create(&JobLabel { job_name: job })
                .set(seconds(at));
        }
        Ok(())
    }

    /// Renders the Prometheus text format (OpenMetrics) of everything registered.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }

    /// Refreshes the cluster-wide gauges within `timeout`; false (logged) when the database failed or did not
    /// answer in time. A scrape still renders then: this process's own metrics are worth having, and the
    /// caller sets `snowpatrol_database_up` to say the rest is stale.
    pub async fn refresh_within(
        &self,
        db: &Database,
        jobs: &[String],
        timeout: std::time::Duration,
    ) -> bool {
        match tokio::time::timeout(timeout, self.refresh(db, jobs)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: reading the database failed");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "metrics: the database did not answer in time"
                );
                false
            }
        }
    }
}
