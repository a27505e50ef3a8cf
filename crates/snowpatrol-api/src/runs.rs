//! Runs, their task instances, lineage and logs, and the operator actions on them (cancel, clear, mark).

use crate::auth::Scope;
use crate::problem::Problem;
use crate::{ApiState, JsonBody, QueryParams, Who};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use snowpatrol_engine::{RunState, TaskState};
use snowpatrol_store::{
    ClearSelection, EventRecord, RunFilter, RunRecord, TaskInstanceRecord, TaskLogRecord,
};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Filters of `GET /api/v1/runs`.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    pub job: Option<String>,
    /// queued, running, success, failed or cancelled.
    pub state: Option<RunState>,
    /// Runs whose logical time is at or after this (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Runs whose logical time is before this.
    pub until: Option<DateTime<Utc>>,
    /// The newest this many runs (1..=1000, default 50).
    pub limit: Option<i64>,
}

/// Recent runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = [RunRecord]), (status = 400, body = Problem)))]
pub async fn list_runs(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: QueryParams<RunsQuery>,
) -> Result<Json<Vec<RunRecord>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let q = q.into_inner()?;
    let limit = crate::limit(q.limit, 50, 1000)?;
    if let Some(job) = &q.job
        && s.engine.jobs().get(job).is_none()
    {
        return Err(Problem::not_found(s.engine.jobs().unknown_job(job)));
    }
    let runs = s
        .engine
        .db()
        .list_runs(&RunFilter {
            job_name: q.job,
            state: q.state,
            since: q.since,
            until: q.until,
            limit,
        })
        .await?;
    Ok(Json(runs))
}

/// A run with its task instances and lineage.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    pub run: RunRecord,
    pub task_instances: Vec<TaskInstanceRecord>,
    /// The dataset events the run consumed (what triggered it).
    pub consumed_events: Vec<EventRecord>,
    /// The dataset events its tasks produced.
    pub produced_events: Vec<EventRecord>,
}

async fn run_or_404(s: &ApiState, run_id: i64) -> Result<RunRecord, Problem> {
    s.engine
        .db()
        .get_run(run_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no run with id {run_id}")))
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", tag = "runs", params(("run_id" = i64, Path)),
    responses((status = 200, body = RunDetail), (status = 404, body = Problem)))]
pub async fn get_run(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
) -> Result<Json<RunDetail>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let run = run_or_404(&s, run_id).await?;
    let db = s.engine.db();
    Ok(Json(RunDetail {
        run,
        task_instances: db.list_task_instances(run_id).await?,
        consumed_events: db.consumed_events(run_id).await?,
        produced_events: db.produced_events(run_id).await?,
    }))
}

/// Filters of `GET /api/v1/runs/{run_id}/logs`.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only this task's lines.
    pub task: Option<String>,
    /// Lines after this log id (the last one a previous page ended with), to page or follow.
    pub after: Option<i64>,
    /// At most this many lines (1..=5000, default 1000).
    pub limit: Option<i64>,
}

/// A page of a run's task log lines.
#[derive(Serialize, ToSchema)]
pub struct LogPage {
    pub lines: Vec<TaskLogRecord>,
    /// Pass as `after` for the next page; equal to the request's when there are no new lines.
    pub next_after: i64,
    /// Whether the run has finished (no more lines will come once a page is empty).
    pub run_finished: bool,
}

/// The captured log lines of a run's task tries, oldest first.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}/logs", tag = "runs", params(("run_id" = i64, Path), LogsQuery),
    responses((status = 200, body = LogPage), (status = 404, body = Problem)))]
pub async fn run_logs(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
    q: QueryParams<LogsQuery>,
) -> Result<Json<LogPage>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let q = q.into_inner()?;
    let limit = crate::limit(q.limit, 1000, 5000)?;
    let run = run_or_404(&s, run_id).await?;
    let after = q.after.unwrap_or(0);
    let lines = s
        .engine
        .db()
        .task_logs(run_id, q.task.as_deref(), after, limit)
        .await?;
    Ok(Json(LogPage {
        next_after: lines.last().map_or(after, |l| l.log_id),
        lines,
        run_finished: run.state.is_terminal(),
    }))
}

/// Why an operator acts; recorded in the run's note.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: String,
}

/// Cancels a queued or running run; its running tries stop at their next heartbeat (operate scope).
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/cancel", tag = "runs", params(("run_id" = i64, Path)),
    request_body = Reason, security(("bearer" = [])),
    responses((status = 200, body = RunRecord), (status = 409, body = Problem)))]
pub async fn cancel_run(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
    body: JsonBody<Reason>,
) -> Result<Json<RunRecord>, Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let reason = body.into_inner()?.unwrap_or_default().reason;
    let reason = if reason.trim().is_empty() {
        "cancelled through the API".to_string()
    } else {
        reason
    };
    Ok(Json(s.engine.cancel(run_id, &reason).await?))
}

/// What to clear: the failed and cancelled instances (no `tasks`), or every instance of the named tasks.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    #[serde(default)]
    pub tasks: Vec<String>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Cleared {
    pub run_id: i64,
    /// Instances queued again with a new try.
    pub reset_task_instances: Vec<i64>,
    /// Downstream tasks planned afresh.
    pub replanned_tasks: Vec<String>,
    /// The run had finished and runs again.
    pub reopened: bool,
}

/// Runs failed (or chosen) task instances again, downstream re-planned (operate scope).
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/clear", tag = "runs", params(("run_id" = i64, Path)),
    request_body = ClearRequest, security(("bearer" = [])),
    responses((status = 200, body = Cleared), (status = 409, body = Problem)))]
pub async fn clear_run(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
    body: JsonBody<ClearRequest>,
) -> Result<Json<Cleared>, Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let body = body.into_inner()?.unwrap_or_default();
    let selection = if body.tasks.is_empty() {
        ClearSelection::Failed
    } else {
        ClearSelection::Tasks(body.tasks)
    };
    let r = s
        .engine
        .clear(run_id, &selection, &Who::api(), &body.reason)
        .await?;
    Ok(Json(Cleared {
        run_id,
        reset_task_instances: r.reset,
        replanned_tasks: r.replanned_tasks,
        reopened: r.reopened,
    }))
}

/// The states a run or task can be marked with.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum MarkState {
    Success,
    Failed,
}

/// A mark: the run's state, or with `task` (and `key`) the state of a task's instances.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRequest {
    pub state: MarkState,
    pub task: Option<String>,
    pub key: Option<String>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Marked {
    pub run: RunRecord,
    /// Task instances whose state changed (with `task`).
    pub marked_task_instances: Vec<i64>,
    pub replanned_tasks: Vec<String>,
}

/// Sets a run's or a task's state by hand; a task marked success lets its skipped downstream run (operate
/// scope).
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/mark", tag = "runs", params(("run_id" = i64, Path)),
    request_body = MarkRequest, security(("bearer" = [])),
    responses((status = 200, body = Marked), (status = 409, body = Problem)))]
pub async fn mark_run(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(run_id): Path<i64>,
    body: JsonBody<MarkRequest>,
) -> Result<Json<Marked>, Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let Some(body) = body.into_inner()? else {
        return Err(Problem::bad_request(
            "send {\"state\": \"success\" | \"failed\"}",
        ));
    };
    let who = Who::api();
    let Some(task) = body.task else {
        if body.key.is_some() {
            return Err(Problem::bad_request(
                "key needs task: it names one instance of a fanned-out task",
            ));
        }
        let state = match body.state {
            MarkState::Success => RunState::Success,
            MarkState::Failed => RunState::Failed,
        };
        let run = s.engine.mark_run(run_id, state, &who, &body.reason).await?;
        return Ok(Json(Marked {
            run,
            marked_task_instances: vec![],
            replanned_tasks: vec![],
        }));
    };
    let state = match body.state {
        MarkState::Success => TaskState::Success,
        MarkState::Failed => TaskState::Failed,
    };
    let r = s
        .engine
        .mark_task(
            run_id,
            &task,
            body.key.as_deref(),
            state,
            &who,
            &body.reason,
        )
        .await?;
    Ok(Json(Marked {
        run: run_or_404(&s, run_id).await?,
        marked_task_instances: r.marked,
        replanned_tasks: r.replanned_tasks,
    }))
}
