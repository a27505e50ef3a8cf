//! Jobs (schedule, explain, last and next run), triggers with typed params, pause, backfill, and datasets.

use crate::auth::Scope;
use crate::problem::Problem;
use crate::{ApiState, JsonBody, Who};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use snowpatrol_store::RunRecord;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// A declared run parameter.
#[derive(Serialize, ToSchema)]
pub struct ParamInfo {
    pub name: String,
    /// `bool`, `int`, `float` or `string`.
    #[serde(rename = "type")]
    pub ty: String,
    pub default: serde_json::Value,
    pub description: String,
    /// The allowed values or bounds, when the parameter has them.
    pub domain: Option<String>,
}

/// A job as the scheduler sees it now.
#[derive(Serialize, ToSchema)]
pub struct JobInfo {
    pub name: String,
    pub description: String,
    /// Cron with time zone, dataset condition, or manual.
    pub schedule: String,
    pub paused: bool,
    pub max_active_runs: u32,
    pub queued_runs: i64,
    pub running_runs: i64,
    pub next_cron_tick: Option<DateTime<Utc>>,
    /// The dataset condition, and whether its pending events satisfy it now.
    pub condition: Option<String>,
    pub condition_met: Option<bool>,
    /// Pending events per dataset of the condition (what the next dataset run would consume).
    pub pending_events: BTreeMap<String, usize>,
    /// Why the job will or will not run next (`snowpatrol explain`).
    pub verdict: String,
    pub last_run: Option<RunRecord>,
    pub params: Vec<ParamInfo>,
    /// Datasets the job's tasks emit events on.
    pub outlets: Vec<String>,
}

async fn job_info(state: &ApiState, name: &str) -> Result<JobInfo, Problem> {
    let engine = &state.engine;
    let explanation = engine.explain(name).await?;
    let job = engine
        .jobs()
        .get(name)
        .ok_or_else(|| Problem::not_found(format!("no job `{name}`")))?;
    let last_run = engine.db().last_run(name).await?;
    Ok(JobInfo {
        name: name.to_string(),
        description: job.definition.description.clone(),
        schedule: explanation.schedule,
        paused: explanation.paused,
        max_active_runs: explanation.max_active_runs,
        queued_runs: explanation.queued_runs,
        running_runs: explanation.running_runs,
        next_cron_tick: explanation.next_cron_tick,
        condition: explanation.condition,
        condition_met: explanation.condition_met,
        pending_events: explanation
            .leaves
            .iter()
            .map(|l| (l.dataset_uri.clone(), l.pending_event_ids.len()))
            .collect(),
        verdict: explanation.verdict,
        last_run,
        params: job
            .params
            .specs
            .values()
            .map(|s| ParamInfo {
                name: s.name.clone(),
                ty: s.ty.to_string(),
                default: s.default.clone(),
                description: s.description.clone(),
                domain: s.domain_text(),
            })
            .collect(),
        outlets: job
            .shape
            .tasks
            .iter()
            .flat_map(|t| t.outlets.clone())
            .collect(),
    })
}

/// Every configured job.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    responses((status = 200, body = [JobInfo]), (status = 401, body = Problem)))]
pub async fn list_jobs(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<JobInfo>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let mut out = Vec::new();
    for name in s.engine.jobs().jobs.keys() {
        out.push(job_info(&s, name).await?);
    }
    Ok(Json(out))
}

/// One job, explained.
#[utoipa::path(get, path = "/api/v1/jobs/{job}", tag = "jobs", params(("job" = String, Path)),
    responses((status = 200, body = JobInfo), (status = 404, body = Problem)))]
pub async fn get_job(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Result<Json<JobInfo>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    Ok(Json(job_info(&s, &job).await?))
}

/// Typed parameter overrides: values of the declared types (`{"force_retrain": true}`).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// `NAME=VALUE` overrides from JSON values, checked by the engine against the declared types (so a refusal
/// reads the same as on the command line and names the allowed values).
fn overrides(params: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    params
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct Triggered {
    pub run_id: i64,
}

/// Queues a manual run with typed parameters (operate scope).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/trigger", tag = "jobs", params(("job" = String, Path)),
    request_body = TriggerRequest, security(("bearer" = [])),
    responses((status = 201, body = Triggered), (status = 422, body = Problem), (status = 403, body = Problem)))]
pub async fn trigger_job(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(job): Path<String>,
    body: JsonBody<TriggerRequest>,
) -> Result<(StatusCode, Json<Triggered>), Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let body = body.into_inner()?.unwrap_or_default();
    let run_id = s
        .engine
        .trigger(&job, &overrides(&body.params), &Who::api())
        .await?;
    Ok((StatusCode::CREATED, Json(Triggered { run_id })))
}

#[derive(Serialize, ToSchema)]
pub struct Paused {
    pub job: String,
    pub paused: bool,
}

async fn set_paused(
    s: &ApiState,
    headers: &HeaderMap,
    job: &str,
    paused: bool,
) -> Result<Json<Paused>, Problem> {
    s.tokens.authorize(headers, Scope::Operate)?;
    if s.engine.jobs().get(job).is_none() {
        return Err(Problem::not_found(s.engine.jobs().unknown_job(job)));
    }
    s.engine.db().set_paused(job, paused).await?;
    Ok(Json(Paused {
        job: job.to_string(),
        paused,
    }))
}

/// Pauses a job: no new cron or dataset runs; events keep queueing (operate scope).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/pause", tag = "jobs", params(("job" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Paused), (status = 404, body = Problem)))]
pub async fn pause_job(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Result<Json<Paused>, Problem> {
    set_paused(&s, &headers, &job, true).await
}

/// Unpauses a job (operate scope).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/unpause", tag = "jobs", params(("job" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Paused), (status = 404, body = Problem)))]
pub async fn unpause_job(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(job): Path<String>,
) -> Result<Json<Paused>, Problem> {
    set_paused(&s, &headers, &job, false).await
}

/// A backfill of a cron job over past logical times.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BackfillQueued {
    pub job: String,
    pub ticks: Vec<DateTime<Utc>>,
    /// Runs created, one per tick that had none.
    pub created: Vec<i64>,
    /// Ticks that had a run already.
    pub existing: usize,
    pub max_active_runs: u32,
}

/// Queues a run for every past tick of a cron job in [from, to] (operate scope).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/backfill", tag = "jobs", params(("job" = String, Path)),
    request_body = BackfillRequest, security(("bearer" = [])),
    responses((status = 200, body = BackfillQueued), (status = 422, body = Problem)))]
pub async fn backfill_job(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(job): Path<String>,
    body: JsonBody<BackfillRequest>,
) -> Result<Json<BackfillQueued>, Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let Some(body) = body.into_inner()? else {
        return Err(Problem::bad_request("send {\"from\": ..., \"to\": ...}"));
    };
    let b = s
        .engine
        .backfill(
            &job,
            body.from,
            body.to,
            &overrides(&body.params),
            &Who::api(),
        )
        .await?;
    Ok(Json(BackfillQueued {
        job: b.job,
        ticks: b.ticks,
        created: b.created,
        existing: b.existing,
        max_active_runs: b.max_active_runs,
    }))
}

/// A dataset, with the jobs that produce it and the jobs scheduled on it.
#[derive(Serialize, ToSchema)]
pub struct DatasetInfo {
    pub uri: String,
    /// `job.task` of each producing task.
    pub producers: Vec<String>,
    pub consumers: Vec<String>,
    /// Declared under `[datasets] external`: updated outside Snowpatrol.
    pub external: bool,
}

/// Every dataset the configuration knows.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets", responses((status = 200, body = [DatasetInfo])))]
pub async fn list_datasets(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<DatasetInfo>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    Ok(Json(datasets(s.engine.jobs())))
}

/// Every dataset the configured jobs know, with the tasks producing it and the jobs scheduled on it, ordered
/// by URI (the API's `/datasets` and the console's page).
pub fn datasets(jobs: &snowpatrol_engine::Jobs) -> Vec<DatasetInfo> {
    let mut out: BTreeMap<String, DatasetInfo> = jobs
        .known_datasets
        .iter()
        .map(|uri| {
            (
                uri.clone(),
                DatasetInfo {
                    uri: uri.clone(),
                    producers: vec![],
                    consumers: vec![],
                    external: true,
                },
            )
        })
        .collect();
    for (name, job) in &jobs.jobs {
        for task in &job.shape.tasks {
            for uri in &task.outlets {
                if let Some(d) = out.get_mut(uri) {
                    d.producers.push(format!("{name}.{}", task.name));
                    d.external = false;
                }
            }
        }
        if let Some(c) = &job.condition {
            for uri in c.datasets() {
                if let Some(d) = out.get_mut(&uri) {
                    d.consumers.push(name.clone());
                }
            }
        }
    }
    // Produced datasets are not external; consumed ones with no producer are declared external (or the
    // configuration would not have resolved).
    out.into_values().collect()
}
