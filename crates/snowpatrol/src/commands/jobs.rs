//! Jobs: run one now, queue one, record an external event, explain, list, pause.

use super::print;
use crate::EXIT_RUN_FAILED;
use crate::app::{App, spawn_signal_watcher, triggered_by, validate};
use crate::output;
use crate::settings::LoadedConfig;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::json;
use snowpatrol_engine::{CancellationToken, ParamSpec, ResolvedJob, RunState};
use snowpatrol_store::{JobRow, RunRecord, TaskInstanceRecord};
use std::collections::BTreeMap;
use std::process::ExitCode;
use tracing::warn;

/// `snowpatrol run JOB`: runs the job in this process and waits for it; exits non-zero when it fails.
pub(crate) async fn run(
    loaded: &LoadedConfig,
    json: bool,
    job: String,
    params: Vec<String>,
) -> anyhow::Result<ExitCode> {
    validate(loaded).await?;
    let app = App::open(loaded, true).await?;
    let shutdown = CancellationToken::new();
    spawn_signal_watcher(shutdown.clone());
    let run = app
        .engine
        .run_now(&job, &params, &triggered_by(), shutdown.clone())
        .await
        .with_context(|| format!("running job `{job}`"))?;
    if !shutdown.is_cancelled() {
        deliver_queued_alerts(&app, loaded).await;
    }
    let tasks = app
        .engine
        .db()
        .list_task_instances(run.run_id)
        .await
        .context("listing task instances")?;
    print(json, &json!({ "run": run, "tasks": tasks }), || {
        run_text(&run, &tasks)
    })?;
    Ok(if run.state == RunState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUN_FAILED)
    })
}

/// No daemon behind a one-shot run: deliver the alerts it queued before exiting, for a bounded
/// time (what is left stays pending for the daemon or the next run).
async fn deliver_queued_alerts(app: &App, loaded: &LoadedConfig) {
    let wait = loaded
        .settings
        .pipeline
        .slack
        .as_ref()
        .map_or(std::time::Duration::from_secs(60), |s| s.drain_timeout);
    if let Err(e) = app.pipeline.drain_outbox(wait).await {
        warn!(error = %e, "delivering the run's alerts failed; they stay pending");
    }
}

/// What `run` prints for people: the run's outcome and the error of each failed task.
fn run_text(run: &RunRecord, tasks: &[TaskInstanceRecord]) -> String {
    let mut s = format!("run {} of {}: {}", run.run_id, run.job_name, run.state);
    if let Some(e) = &run.error {
        s.push_str(&format!(" ({e})"));
    }
    let failed: Vec<String> = tasks
        .iter()
        .filter(|t| t.state == snowpatrol_engine::TaskState::Failed)
        .map(|t| {
            format!(
                "  {}[{}]: {}",
                t.task_name,
                t.map_key,
                t.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    if !failed.is_empty() {
        s.push_str("\nfailed tasks:\n");
        s.push_str(&failed.join("\n"));
    }
    s
}

/// `snowpatrol trigger JOB`: queues a manual run for the daemon.
pub(crate) async fn trigger(
    loaded: &LoadedConfig,
    json: bool,
    job: String,
    params: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let run_id = app
        .engine
        .trigger(&job, &params, &triggered_by())
        .await
        .with_context(|| format!("triggering job `{job}`"))?;
    let paused = app
        .engine
        .explain(&job)
        .await
        .map(|x| x.paused)
        .unwrap_or(false);
    print(
        json,
        &json!({ "run_id": run_id, "job": job, "state": RunState::Queued, "paused": paused }),
        || {
            if paused {
                format!(
                    "queued run {run_id} of {job}; the job is paused: the run starts after `snowpatrol unpause {job}`"
                )
            } else {
                format!("queued run {run_id} of {job}; a running daemon will start it")
            }
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol backfill JOB --from --to`: queues a cron job's runs for the past ticks of a range.
pub(crate) async fn backfill(
    loaded: &LoadedConfig,
    json: bool,
    job: &str,
    (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    params: &[String],
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let b = app
        .engine
        .backfill(job, from, to, params, &triggered_by())
        .await
        .with_context(|| format!("backfilling job `{job}`"))?;
    print(json, &b, || {
        let range = match (b.ticks.first(), b.ticks.last()) {
            (Some(first), Some(last)) => format!(
                "ticks {} .. {}",
                output::time(Some(*first)),
                output::time(Some(*last))
            ),
            _ => "no tick in that range".to_string(),
        };
        format!(
            "queued {} run(s) of {job} for {range} ({} tick(s) had a run already); a running daemon starts them \
             oldest first, {} at a time (max_active_runs)",
            b.created.len(),
            b.existing,
            b.max_active_runs
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol cancel RUN`: cancels a queued or running run.
pub(crate) async fn cancel(
    loaded: &LoadedConfig,
    json: bool,
    run_id: i64,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let run = app
        .engine
        .cancel(run_id, reason)
        .await
        .with_context(|| format!("cancelling run {run_id}"))?;
    print(json, &run, || {
        format!(
            "cancelled run {run_id} of {} ({reason}); its running tries stop at their next heartbeat",
            run.job_name
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol emit DATASET`: records an external dataset event.
pub(crate) async fn emit(
    loaded: &LoadedConfig,
    json: bool,
    dataset: String,
    extra: Option<String>,
    allow_unknown: bool,
) -> anyhow::Result<ExitCode> {
    let extra: serde_json::Value = match extra {
        Some(s) => {
            serde_json::from_str(&s).with_context(|| format!("--extra is not valid JSON: {s}"))?
        }
        None => json!({}),
    };
    let app = App::open(loaded, false).await?;
    // Like every filter and name on the command line: a name that matches nothing configured is an
    // error that lists what exists, not a silent no-op.
    if !app.jobs().known_datasets.contains(&dataset) && !allow_unknown {
        let known: Vec<&str> = app
            .jobs()
            .known_datasets
            .iter()
            .map(String::as_str)
            .collect();
        bail!(
            "no configured job produces or subscribes to `{dataset}`; known datasets: {} \
                 (pass --allow-unknown to record it anyway)",
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let (event_id, queued) = app
        .engine
        .emit(&dataset, &extra, &triggered_by())
        .await
        .with_context(|| format!("emitting {dataset}"))?;
    print(
        json,
        &json!({ "event_id": event_id, "dataset": dataset, "queued_triggers": queued }),
        || format!("event {event_id} on {dataset}; queued for {queued} subscribing job(s)"),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol explain JOB`: why a job will or will not run.
pub(crate) async fn explain(
    loaded: &LoadedConfig,
    json: bool,
    job: String,
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let x = app
        .engine
        .explain(&job)
        .await
        .with_context(|| format!("explaining job `{job}`"))?;
    print(json, &x, || {
        let mut s = String::new();
        s.push_str(&format!("job:             {}\n", x.job));
        s.push_str(&format!("schedule:        {}\n", x.schedule));
        s.push_str(&format!(
            "paused:          {}\n",
            if x.paused { "yes" } else { "no" }
        ));
        if let Some(c) = &x.condition {
            let met = match x.condition_met {
                Some(true) => "met",
                _ => "not met",
            };
            s.push_str(&format!("condition:       {c} ({met})\n"));
            for l in &x.leaves {
                // Event ids, marked as such: "pending events: 1, 3" read like a count.
                let ids: Vec<String> = l
                    .pending_event_ids
                    .iter()
                    .map(|i| format!("#{i}"))
                    .collect();
                let pending = match ids.len() {
                    0 => "no pending event".to_string(),
                    1 => format!("1 pending event: {}", ids[0]),
                    n => format!("{n} pending events: {}", ids.join(", ")),
                };
                s.push_str(&format!("  {}  {pending}\n", l.dataset_uri));
            }
        }
        s.push_str(&format!(
            "max_active_runs: {} (queued {}, running {})\n",
            x.max_active_runs, x.queued_runs, x.running_runs
        ));
        let next = x
            .next_cron_tick
            .map_or_else(|| "none".to_string(), |t| t.to_rfc3339());
        s.push_str(&format!(
            "next cron tick:  {next}{}\n",
            if x.catchup { " (catchup on)" } else { "" }
        ));
        s.push_str(&format!("verdict:         {}", x.verdict));
        s
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol jobs`: every job with its schedule, paused state, last and next run.
pub(crate) async fn jobs(loaded: &LoadedConfig, json: bool) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let listing = JobListing {
        rows: app.engine.db().list_jobs().await.context("listing jobs")?,
        now: snowpatrol_store::now(),
        // Last run and next run of each job: what an operator asks first.
        last: last_runs(&app).await?,
    };
    let list: Vec<serde_json::Value> = app.jobs().jobs.values().map(|j| listing.json(j)).collect();
    print(json, &list, || {
        output::table(
            &[
                "job",
                "schedule",
                "paused",
                "last run",
                "next run",
                "params",
                "description",
            ],
            app.jobs()
                .jobs
                .values()
                .map(|j| listing.table_row(j))
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The last run of every configured job that has one, by job name.
async fn last_runs(app: &App) -> anyhow::Result<BTreeMap<String, RunRecord>> {
    let mut last = BTreeMap::new();
    for name in app.jobs().jobs.keys() {
        let run = app
            .engine
            .db()
            .last_run(name)
            .await
            .context("reading the last runs")?;
        if let Some(r) = run {
            last.insert(name.clone(), r);
        }
    }
    Ok(last)
}

/// What `snowpatrol jobs` shows of each job besides its definition.
struct JobListing {
    /// The jobs as registered in the database (their paused state).
    rows: Vec<JobRow>,
    /// When the listing was taken: next runs are computed from it.
    now: DateTime<Utc>,
    /// The last run of each job that has one, by name.
    last: BTreeMap<String, RunRecord>,
}

impl JobListing {
    fn paused(&self, j: &ResolvedJob) -> bool {
        self.rows.iter().any(|r| r.job_name == j.name() && r.paused)
    }

    /// When the job runs next: its cron's next tick (`None` for other jobs), and that in words.
    fn next_run(&self, j: &ResolvedJob) -> (Option<DateTime<Utc>>, String) {
        match (&j.cron, &j.condition) {
            (Some(c), _) => {
                let t = c.next_after(self.now);
                (
                    t,
                    t.map_or_else(|| "never".into(), |t| output::time(Some(t))),
                )
            }
            (None, Some(_)) => (None, "when its datasets update".into()),
            (None, None) => (None, "manual".into()),
        }
    }

    fn json(&self, j: &ResolvedJob) -> serde_json::Value {
        let l = self.last.get(j.name());
        json!({
            "job": j.name(),
            "schedule": j.schedule_text(),
            "paused": self.paused(j),
            "last_run": l.map(|r| json!({"run_id": r.run_id, "state": r.state, "logical_time": r.logical_time, "finished_at": r.finished_at})),
            "next_run": self.next_run(j).0,
            "max_active_runs": j.max_active_runs,
            "description": j.definition.description,
            "params": j.params.specs.values().map(|p| json!({"name": p.name, "type": p.ty.to_string(), "default": p.default, "one_of": p.one_of, "min": p.min, "max": p.max})).collect::<Vec<_>>(),
        })
    }

    fn table_row(&self, j: &ResolvedJob) -> Vec<String> {
        let params: Vec<String> = j.params.specs.values().map(param_text).collect();
        let last_run = self.last.get(j.name()).map_or_else(
            || "never".to_string(),
            |r| {
                format!(
                    "{} {} ({})",
                    r.run_id,
                    r.state,
                    output::time(r.finished_at.or(r.started_at).or(Some(r.logical_time)))
                )
            },
        );
        vec![
            j.name().to_string(),
            j.schedule_text(),
            if self.paused(j) {
                "yes".into()
            } else {
                "no".into()
            },
            last_run,
            self.next_run(j).1,
            params.join(", "),
            j.definition.description.clone(),
        ]
    }
}

/// A parameter as `name: type = default`, with its allowed values when it has a domain.
fn param_text(p: &ParamSpec) -> String {
    match p.domain_text() {
        Some(d) => format!("{}: {} = {} ({d})", p.name, p.ty, p.default),
        None => format!("{}: {} = {}", p.name, p.ty, p.default),
    }
}

pub(crate) async fn set_paused(
    loaded: &LoadedConfig,
    json: bool,
    job: &str,
    paused: bool,
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    if app.jobs().get(job).is_none() {
        bail!("{}", app.jobs().unknown_job(job));
    }
    let changed = app
        .engine
        .db()
        .set_paused(job, paused)
        .await
        .with_context(|| format!("updating job `{job}`"))?;
    if !changed {
        bail!("job `{job}` is not registered in the database");
    }
    let word = if paused { "paused" } else { "unpaused" };
    print(json, &json!({ "job": job, "paused": paused }), || {
        format!("{word} {job}")
    })?;
    Ok(ExitCode::SUCCESS)
}
