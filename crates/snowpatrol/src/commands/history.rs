//! The run history: runs, their task instances, dataset events and lineage.

use super::{params_text, print};
use crate::app::open_existing;
use crate::output;
use crate::settings::LoadedConfig;
use anyhow::{Context, bail};
use serde_json::json;
use snowpatrol_engine::RunState;
use snowpatrol_store::{Database, EventRecord, RunFilter, RunRecord};
use std::process::ExitCode;
use std::str::FromStr;

/// `snowpatrol runs`: recent runs, filtered.
pub(crate) async fn runs(
    loaded: &LoadedConfig,
    json: bool,
    args: crate::RunsArgs,
) -> anyhow::Result<ExitCode> {
    let crate::RunsArgs {
        job,
        state,
        since,
        until,
        limit,
    } = args;
    if limit < 1 {
        bail!("--limit must be at least 1, got {limit}");
    }
    let db = open_existing(&loaded.settings).await?;
    if let Some(job) = &job {
        require_known_job(&db, job).await?;
    }
    let state = state
        .map(|s| RunState::from_str(&s))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--state: {e}"))?;
    let runs = db
        .list_runs(&RunFilter {
            job_name: job,
            state,
            since,
            until,
            limit,
        })
        .await
        .context("listing runs")?;
    print(json, &runs, || runs_table(&runs))?;
    Ok(ExitCode::SUCCESS)
}

/// Fails unless the database has a job named `job`, listing those it has.
async fn require_known_job(db: &Database, job: &str) -> anyhow::Result<()> {
    let jobs = db.list_jobs().await.context("listing jobs")?;
    if !jobs.iter().any(|j| j.job_name == job) {
        let names: Vec<&str> = jobs.iter().map(|j| j.job_name.as_str()).collect();
        bail!(
            "no job `{job}` in this database; jobs: {}",
            if names.is_empty() {
                "(none yet)".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(())
}

/// `runs` for people: one table row per run.
fn runs_table(runs: &[RunRecord]) -> String {
    output::table(
        &[
            "run",
            "job",
            "state",
            "trigger",
            "logical time",
            "started",
            "duration",
            "params",
            "by",
            "error",
        ],
        runs.iter()
            .map(|r| {
                vec![
                    r.run_id.to_string(),
                    r.job_name.clone(),
                    r.state.to_string(),
                    r.trigger_kind.to_string(),
                    output::time(Some(r.logical_time)),
                    output::time(r.started_at),
                    output::duration(r.started_at, r.finished_at),
                    params_text(&r.params),
                    r.triggered_by.clone(),
                    output::short(r.error.as_deref(), 60),
                ]
            })
            .collect(),
    )
}

/// `snowpatrol lineage RUN | anomaly ID | incident ID`: a run's events, or a prediction's chain back to its data.
pub(crate) async fn lineage_of(
    loaded: &LoadedConfig,
    json: bool,
    what: &str,
    id: Option<i64>,
) -> anyhow::Result<ExitCode> {
    if let (Ok(run_id), None) = (what.parse::<i64>(), id) {
        return lineage(loaded, json, run_id).await;
    }
    match (what, id) {
        ("anomaly", Some(id)) => anomaly_lineage(loaded, json, &[id], false).await,
        ("incident", Some(id)) => {
            let db = open_existing(&loaded.settings).await?;
            let store = snowpatrol_pipeline::PipelineStore::new(db.clone());
            store
                .incident(id)
                .await
                .context("reading the incident")?
                .with_context(|| {
                    format!("no incident with id {id} (see `snowpatrol anomalies`)")
                })?;
            let days: Vec<i64> = store
                .list_anomalies(&snowpatrol_pipeline::store::IncidentFilter {
                    incident_ids: vec![id],
                    ..Default::default()
                })
                .await
                .context("reading the incident's days")?
                .into_iter()
                .map(|a| a.anomaly_id)
                .collect();
            anomaly_lineage(loaded, json, &days, true).await
        }
        _ => {
            eprintln!(
                "error: lineage takes RUN_ID, `anomaly ID` or `incident ID` (got {what}{})",
                id.map(|i| format!(" {i}")).unwrap_or_default()
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// The lineage of each anomaly of `ids` (the days of an incident when `incident`).
async fn anomaly_lineage(
    loaded: &LoadedConfig,
    json: bool,
    ids: &[i64],
    incident: bool,
) -> anyhow::Result<ExitCode> {
    let db = open_existing(&loaded.settings).await?;
    let store = snowpatrol_pipeline::PipelineStore::new(db.clone());
    let mut chains = Vec::new();
    for &id in ids {
        let chain = snowpatrol_pipeline::lineage::anomaly_lineage(&db, &store, id)
            .await
            .context("reading the lineage")?
            .with_context(|| {
                format!("no anomaly with id {id} (see the first column of `snowpatrol anomalies --days`)")
            })?;
        chains.push(chain);
    }
    let value = if incident {
        serde_json::to_value(&chains)?
    } else {
        serde_json::to_value(chains.first())?
    };
    print(json, &value, || {
        chains
            .iter()
            .map(|c| c.text())
            .collect::<Vec<_>>()
            .join("\n\n")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol lineage RUN`: the dataset events a run consumed and produced.
pub(crate) async fn lineage(
    loaded: &LoadedConfig,
    json: bool,
    run_id: i64,
) -> anyhow::Result<ExitCode> {
    let db = open_existing(&loaded.settings).await?;
    let Some(run) = db.get_run(run_id).await.context("reading the run")? else {
        bail!("no run with id {run_id} (see `snowpatrol runs`)");
    };
    let consumed = db
        .consumed_events(run_id)
        .await
        .context("reading consumed events")?;
    let produced = db
        .produced_events(run_id)
        .await
        .context("reading produced events")?;
    let report = json!({
        "run_id": run_id,
        "job": run.job_name,
        "trigger_kind": run.trigger_kind,
        "logical_time": run.logical_time,
        "consumed": consumed,
        "produced": produced,
    });
    print(json, &report, || {
        lineage_text(run_id, &run, &consumed, &produced)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `lineage` prints for people: the run, then its consumed and its produced events, one per line.
fn lineage_text(
    run_id: i64,
    run: &RunRecord,
    consumed: &[EventRecord],
    produced: &[EventRecord],
) -> String {
    let mut out = format!(
        "run {run_id} of {} ({} run, logical time {})\nconsumed:",
        run.job_name,
        run.trigger_kind,
        output::time(Some(run.logical_time))
    );
    for (events, origin, none) in [
        (consumed, true, " (none: not triggered by datasets)"),
        (produced, false, " (none)"),
    ] {
        if !origin {
            out.push_str("\nproduced:");
        }
        if events.is_empty() {
            out.push_str(none);
        }
        for e in events {
            out.push_str(&lineage_line(e, origin));
        }
    }
    out
}

/// One event of `lineage`; with `origin`, where it came from.
fn lineage_line(e: &EventRecord, origin: bool) -> String {
    // A consumed event says where it came from; a produced one comes from this run.
    let from = match (origin, e.source_run_id) {
        (false, _) => String::new(),
        (true, Some(r)) => format!(" from run {r}"),
        (true, None) => format!(" by {}", e.created_by),
    };
    format!(
        "\n  #{} {} at {}{from}",
        e.event_id,
        e.dataset_uri,
        output::time(Some(e.created_at))
    )
}

/// `snowpatrol tasks RUN`: the task instances of a run.
pub(crate) async fn tasks(
    loaded: &LoadedConfig,
    json: bool,
    run_id: i64,
) -> anyhow::Result<ExitCode> {
    let db = open_existing(&loaded.settings).await?;
    if db
        .get_run(run_id)
        .await
        .context("reading the run")?
        .is_none()
    {
        bail!("no run with id {run_id} (see `snowpatrol runs`)");
    }
    let tasks = db
        .list_task_instances(run_id)
        .await
        .context("listing task instances")?;
    print(json, &tasks, || {
        output::table(
            &[
                "id", "task", "key", "state", "try", "worker", "started", "duration", "error",
            ],
            tasks
                .iter()
                .map(|t| {
                    vec![
                        t.task_instance_id.to_string(),
                        t.task_name.clone(),
                        t.map_key.clone(),
                        t.state.to_string(),
                        format!("{}/{}", t.try_number, t.max_tries),
                        t.worker_id.clone().unwrap_or_default(),
                        output::time(t.started_at),
                        output::duration(t.started_at, t.finished_at),
                        output::short(t.error.as_deref(), 60),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol events`: recent dataset events.
pub(crate) async fn events(
    loaded: &LoadedConfig,
    json: bool,
    dataset: Option<String>,
    limit: i64,
) -> anyhow::Result<ExitCode> {
    if limit < 1 {
        bail!("--limit must be at least 1, got {limit}");
    }
    let db = open_existing(&loaded.settings).await?;
    let events = db
        .list_events(dataset.as_deref(), limit)
        .await
        .context("listing dataset events")?;
    print(json, &events, || {
        output::table(
            &["event", "dataset", "created", "source", "extra"],
            events
                .iter()
                .map(|e| {
                    let source = match (&e.source_job, e.source_run_id, &e.source_task) {
                        (Some(j), Some(r), Some(t)) => format!("{j} run {r} task {t}"),
                        _ => e.created_by.clone(),
                    };
                    vec![
                        e.event_id.to_string(),
                        e.dataset_uri.clone(),
                        output::time(Some(e.created_at)),
                        source,
                        output::short(Some(&e.extra.to_string()), 60),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
