//! The TOML side of jobs: schedules, limits, parameters and task policies that operators edit.

use crate::condition::DatasetSpec;
use crate::jobs::ConfigIssue;
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
    /// A cron job that has never run gets a run for its latest tick as soon as a daemon first schedules it,
    /// instead of waiting for the next tick (a fresh install shows results the same day).
    #[serde(default)]
    pub run_on_start: bool,
    #[serde(default = "one")]
    pub max_active_runs: u32,
    /// Parameter defaults (`name = value`) or declarations (`name = { type = "bool", default = false }`).
    #[serde(default)]
    pub params: BTreeMap<String, ParamConfig>,
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskPolicyConfig>,
}

/// A parameter in `[jobs.<name>.params]`: a new default, or a declaration with a type, a default and an
/// optional domain (`one_of`, `min`, `max`) that every value must satisfy, checked before a run is created.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged, deny_unknown_fields)]
pub enum ParamConfig {
    Declared {
        #[serde(rename = "type")]
        ty: ParamType,
        default: serde_json::Value,
        #[serde(default)]
        description: String,
        /// The only accepted values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        one_of: Option<Vec<serde_json::Value>>,
        /// Inclusive bounds of an int or float parameter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
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
    /// Finished runs (with their task instances and lineage) and consumed dataset events older than this are
    /// deleted by the leader, hourly, so the tables a scrape and an operator read stay bounded. `0s` keeps
    /// everything.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// Task log lines kept per try (`snowpatrol logs`); a notice counts the rest. Lines go with their run under
    /// `history_retention`.
    pub task_log_max_lines: usize,
    /// The least severe task log lines kept: `error`, `warn`, `info` (default), `debug` or `trace`. Independent
    /// of `[logging] level`, which filters what the daemon prints.
    pub task_log_level: snowpatrol_store::LogLevel,
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
            history_retention: Duration::from_secs(90 * 86_400),
            task_log_max_lines: crate::task_log::DEFAULT_MAX_LINES_PER_TRY,
            task_log_level: snowpatrol_store::LogLevel::Info,
        }
    }
}

impl SchedulerSettings {
    /// The lease and its renewal: a lease that expires before it is renewed runs tasks twice.
    fn lease_problems(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut issue = |key: &str, message: String| {
            out.push(ConfigIssue {
                path: format!("scheduler.{key}"),
                message,
            })
        };
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.lease.is_zero() {
            issue(
                "lease",
                "must be greater than 0: every claim would expire at once and be run again by another worker"
                    .into(),
            );
        }
        if self.heartbeat.is_zero() {
            issue(
                "heartbeat",
                "must be greater than 0 (a zero interval renews leases in a busy loop)".into(),
            );
        } else if !self.lease.is_zero() && self.heartbeat >= self.lease {
            issue(
                "heartbeat",
                format!(
                    "must be shorter than lease ({}), got {}: a lease that expires before its renewal is reaped while \
                     the task still runs, and the task runs twice; keep lease >= 3 x heartbeat (e.g. heartbeat = \"{}\")",
                    show(self.lease),
                    show(self.heartbeat),
                    show(self.lease / 3),
                ),
            );
        }
        out
    }

    /// Every setting that would make the daemon lose or repeat work, by key path (the CLI adds FILE:LINE).
    /// `resolve_jobs` reports these with the job problems, so `config check`, `run` and the daemon refuse the
    /// same files.
    pub fn problems(&self) -> Vec<ConfigIssue> {
        let mut out = self.lease_problems();
        let mut issue = |key: &str, message: String| {
            out.push(ConfigIssue {
                path: format!("scheduler.{key}"),
                message,
            })
        };
        if self.worker_concurrency == 0 {
            issue(
                "worker_concurrency",
                "must be at least 1: with 0 this process claims nothing and the runs it starts stay `running` forever"
                    .into(),
            );
        }
        if self.poll_interval.is_zero() {
            issue(
                "poll_interval",
                "must be greater than 0: a zero safety-net poll spins an idle daemon on the CPU"
                    .into(),
            );
        }
        // No rule ties poll_interval to lease: the leader renews its lease (and ticks) at least every
        // heartbeat, whatever the poll interval.
        if self.claim_batch == 0 {
            issue(
                "claim_batch",
                "must be at least 1: with 0 no task instance is ever claimed".into(),
            );
        }
        if self.max_catchup_runs == 0 {
            issue(
                "max_catchup_runs",
                "must be at least 1: with 0 a job with `catchup = true` never gets a cron run"
                    .into(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &SchedulerSettings) -> Vec<String> {
        s.problems().into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn defaults_are_safe() {
        assert_eq!(keys(&SchedulerSettings::default()), Vec::<String>::new());
    }

    #[test]
    fn dangerous_settings_are_all_reported() {
        let s = SchedulerSettings {
            heartbeat: Duration::from_secs(30),
            worker_concurrency: 0,
            poll_interval: Duration::ZERO,
            claim_batch: 0,
            max_catchup_runs: 0,
            ..Default::default()
        };
        assert_eq!(
            keys(&s),
            [
                "scheduler.heartbeat",
                "scheduler.worker_concurrency",
                "scheduler.poll_interval",
                "scheduler.claim_batch",
                "scheduler.max_catchup_runs"
            ]
        );
        let msg = s.problems()[0].message.clone();
        assert!(
            msg.contains("shorter than lease (30s)") && msg.contains("3 x heartbeat"),
            "{msg}"
        );
        let s = SchedulerSettings {
            lease: Duration::ZERO,
            heartbeat: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(keys(&s), ["scheduler.lease", "scheduler.heartbeat"]);
        // A poll longer than the lease is fine: the leader renews every heartbeat.
        let s = SchedulerSettings {
            poll_interval: Duration::from_secs(60),
            ..Default::default()
        };
        assert!(keys(&s).is_empty());
    }
}
