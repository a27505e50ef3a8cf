//! Snowpatrol's data-aware scheduler, in the spirit of Airflow's Datasets, done without its event-loss bugs.
//!
//! Jobs are task graphs registered in code ([`JobDefinition`]) and scheduled from TOML ([`JobConfig`]): on
//! cron ticks in a time zone, on dataset conditions, both, or by hand. Everything durable lives in the
//! database through `snowpatrol-store`; this crate holds the loops and the rules. It knows nothing of
//! Snowflake or machine learning.

pub mod condition;
pub mod config;
pub mod engine;
pub mod jobs;
pub mod metrics;
pub mod params;
pub mod schedule;
pub mod task;
pub mod task_log;

pub use condition::{Condition, DatasetSpec};
pub use config::{JobConfig, ParamConfig, SchedulerSettings, TaskPolicyConfig};
pub use engine::{
    Backfill, Engine, EngineError, Explanation, FailureHook, TaskFailure, TriggerLatency,
    backoff_delay,
};
pub use jobs::{
    ConfigErrors, ConfigIssue, JobDefinition, JobRegistry, Jobs, ResolvedJob, TaskDefinition,
    resolve_jobs,
};
pub use params::{ParamSpec, ParamType, Params};
pub use snowpatrol_store::{Database, RunState, TaskState, TriggerRule};
pub use task::{Task, TaskContext, TaskError, TaskOutput, task_fn};
pub use task_log::{TaskLogLayer, TaskLogSink};
pub use tokio_util::sync::CancellationToken;
