//! Prometheus metrics of the engine. State gauges are refreshed from the database at scrape time, so every
//! replica reports the same cluster-wide truth; histograms are this process's own observations.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use snowpatrol_store::{Database, StoreError};
use std::sync::Mutex;

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

pub struct Metrics {
    registry: Mutex<Registry>,
    pub runs: Family<JobState, Gauge>,
    pub task_instances: Family<JobState, Gauge>,
    pub pending_trigger_events: Family<JobLabel, Gauge>,
    pub task_duration: Family<JobTaskOutcome, Histogram>,
    pub trigger_latency: Family<JobLabel, Histogram>,
    pub is_leader: Gauge,
    /// Task tries this process stopped because their lease was lost or could not be confirmed.
    pub leases_lost: Counter,
    /// Times this process gave up scheduler leadership because it could not renew it in time.
    pub leadership_lost: Counter,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("snowpatrol");
        let runs = Family::<JobState, Gauge>::default();
        let task_instances = Family::<JobState, Gauge>::default();
        let pending = Family::<JobLabel, Gauge>::default();
        let task_duration = Family::<JobTaskOutcome, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let trigger_latency = Family::<JobLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let is_leader = Gauge::default();
        let leases_lost = Counter::default();
        let leadership_lost = Counter::default();
        registry.register(
            "task_leases_lost",
            "Task tries this process stopped because their lease was lost or could not be renewed in time",
            leases_lost.clone(),
        );
        registry.register(
            "leadership_lost",
            "Times this process stepped down as scheduler leader (renewal refused or not possible in time)",
            leadership_lost.clone(),
        );
        registry.register(
            "job_runs",
            "Job runs by job and state (cluster-wide)",
            runs.clone(),
        );
        registry.register(
            "task_instances",
            "Task instances by job and state (cluster-wide)",
            task_instances.clone(),
        );
        registry.register(
            "pending_trigger_events",
            "Dataset events waiting to trigger a run, by job",
            pending.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Task try duration in this process",
            task_duration.clone(),
        );
        registry.register(
            "dataset_trigger_latency_seconds",
            "From the oldest consumed dataset event to the triggered run's start",
            trigger_latency.clone(),
        );
        registry.register(
            "is_leader",
            "1 when this replica evaluates cron and dataset triggers",
            is_leader.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            runs,
            task_instances,
            pending_trigger_events: pending,
            task_duration,
            trigger_latency,
            is_leader,
            leases_lost,
            leadership_lost,
        }
    }

    /// Reloads the cluster-wide gauges, then renders the Prometheus text format.
    pub async fn render(&self, db: &Database) -> Result<String, StoreError> {
        let counts = db.state_counts().await?;
        self.runs.clear();
        for (job, state, n) in counts.runs {
            self.runs
                .get_or_create(&JobState {
                    job_name: job,
                    state,
                })
                .set(n);
        }
        self.task_instances.clear();
        for (job, state, n) in counts.task_instances {
            self.task_instances
                .get_or_create(&JobState {
                    job_name: job,
                    state,
                })
                .set(n);
        }
        self.pending_trigger_events.clear();
        for (job, n) in counts.pending_triggers {
            self.pending_trigger_events
                .get_or_create(&JobLabel { job_name: job })
                .set(n);
        }
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .map_err(|_| StoreError::Corrupt("metrics registry poisoned".into()))?;
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| StoreError::Corrupt(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}
