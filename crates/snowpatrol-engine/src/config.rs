//! The TOML side of jobs: schedules, limits, parameters and task policies that operators edit.

use crate::condition::DatasetSpec;
use crate::params::ParamType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

fn utc() -> String {
    "UTC".into()
}
fn one() -> u32 {
    1
}

/// `[jobs.<name>]`. A job with neither `cron` nor `datasets` runs only when triggered by hand; with both, either
/// fires it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// 5-field cron expression or @hourly/@daily/@weekly/@monthly, evaluated in `timezone`.
    pub cron: Option<String>,
    #[serde(default = "utc")]
    pub timezone: String,
    /// All-of list of dataset URIs, or an expression with `&`, `|` and parentheses.
    pub datasets: Option<DatasetSpec>,
    /// After downtime, run every missed cron tick (true) or only the latest one (false).
    #[serde(default)]
    pub catchup: bool,
    #[serde(default = "one")]
    pub max_active_runs: u32,
    /// Parameter defaults (`name = value`) or declarations (`name = { type = "bool", default = false }`).
    #[serde(default)]
    pub params: BTreeMap<String, ParamConfig>,
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskPolicyConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ParamConfig {
    Declared {
        #[serde(rename = "type")]
        ty: ParamType,
        default: serde_json::Value,
        #[serde(default)]
        description: String,
    },
    Value(serde_json::Value),
}

/// `[jobs.<name>.tasks.<task>]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskPolicyConfig {
    /// Extra tries after the first one fails.
    pub retries: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub retry_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub max_retry_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
}

/// `[scheduler]`: how this daemon schedules and executes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Task instances this process runs at once.
    pub worker_concurrency: usize,
    /// Threads of the CPU pool that mapped tasks run their heavy work on (default: number of cores).
    pub cpu_threads: Option<usize>,
    /// How long a claim lasts without a heartbeat; a killed worker's tasks are retried after this.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Safety-net poll; wake-ups normally come from LISTEN/NOTIFY or the in-process signal.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// On SIGTERM, running tasks get this long to finish before their leases are given back.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most task instances claimed in one query.
    pub claim_batch: usize,
    /// With `catchup`, at most this many missed cron ticks are created at once.
    pub max_catchup_runs: usize,
    pub default_retries: u32,
    #[serde(with = "humantime_serde")]
    pub default_retry_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub default_max_retry_delay: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            worker_concurrency: 32,
            cpu_threads: None,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            claim_batch: 256,
            max_catchup_runs: 100,
            default_retries: 2,
            default_retry_delay: Duration::from_secs(30),
            default_max_retry_delay: Duration::from_secs(600),
        }
    }
}
