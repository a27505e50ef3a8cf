//! The pages and the actions behind their forms.

use crate::chart::{ChartDay, hourly_chart, usage_chart};
use crate::{
    Actor, ConsoleState, Flash, Reader, Session, back, csrf_field, engine, layout, not_found,
    state_badge, store,
};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Days, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::daily::build_series;
use snowpatrol_detect::model::TrainedModel;
use snowpatrol_engine::{RunState, TaskState};
use snowpatrol_pipeline::store::{AckReason, IncidentFilter, IncidentStatus};
use snowpatrol_store::{ClearSelection, RunFilter, RunRecord};
use std::collections::BTreeMap;
use std::sync::Arc;

type S = State<Arc<ConsoleState>>;

/// Money with its currency when known ("EUR 1234.50"), else "1234.50 in money".
fn money(amount: f64, currency: Option<&str>) -> String {
    match currency {
        Some(c) => format!("{c} {amount:.2}"),
        None => format!("{amount:.2} in money"),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("–".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn duration(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => {
            let s = (b - a).num_milliseconds().max(0) as f64 / 1000.0;
            if s < 120.0 {
                format!("{s:.1} s")
            } else {
                format!("{:.1} min", s / 60.0)
            }
        }
        _ => "–".into(),
    }
}

/// Shown instead of action buttons to a session that cannot act.
fn cannot_act(session: &Session) -> Markup {
    html! {
        p.muted {
            @if !session.can_operate { "Actions need an operate token ([api] operate_token); none is configured." }
            @else { "Sign in with the operate token to act on runs and incidents." }
        }
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login_form(State(s): S, Query(flash): Query<Flash>) -> Response {
    let session = Session::of(&s.tokens, &Default::default());
    layout(
        "Sign in",
        "",
        &session,
        &flash,
        html! {
            div.login {
                h1 { "Sign in" }
                @if s.tokens.required() {
                    p { "Paste the read or the operate token ([api] read_token / operate_token)." }
                    form method="post" action="/ui/login" {
                        p { input type="password" name="token" autocomplete="off" required size="40" aria-label="token"; }
                        button.primary type="submit" { "Sign in" }
                    }
                } @else {
                    p { "No token is configured: pages are open and actions are refused. Set [api] operate_token to act from here." }
                    p { a href="/ui/jobs" { "Go to the jobs" } }
                }
            }
        },
    )
}

pub async fn login(State(s): S, Form(f): Form<LoginForm>) -> Response {
    if s.tokens.scope_of(&f.token).is_none() {
        return back(
            "/ui/login",
            Err("that token is not the read or the operate token".into()),
        );
    }
    // Percent-encoded: a token may hold characters a cookie value may not (`;`, spaces, quotes).
    let value: String = form_urlencoded::byte_serialize(f.token.trim().as_bytes()).collect();
    let cookie = format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/ui",
        crate::COOKIE
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/jobs")).into_response()
}

pub async fn logout() -> Response {
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0",
        crate::COOKIE
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}

pub async fn jobs(State(s): S, Reader(session): Reader, Query(flash): Query<Flash>) -> Response {
    let e = engine(&s);
    let mut rows = Vec::new();
    for name in e.jobs().jobs.keys() {
        let explained = e.explain(name).await;
        let last = e.db().last_run(name).await.ok().flatten();
        rows.push((name.clone(), explained, last));
    }
    let body = html! {
        h1 { "Jobs" }
        table {
            thead { tr { th { "Job" } th { "Schedule" } th { "Last run" } th { "Next cron tick" } th { "Pending events" } th { "Will it run?" } th {} } }
            tbody {
                @for (name, explained, last) in &rows {
                    tr {
                        td { strong { (name) } }
                        @match explained {
                            Ok(x) => {
                                td { (x.schedule) @if x.paused { " " span.state { "paused" } } }
                                td {
                                    @if let Some(r) = last {
                                        a href={ "/ui/runs/" (r.run_id) } { "#" (r.run_id) } " " (state_badge(r.state.as_str()))
                                        br; span.muted { (time(r.finished_at.or(r.started_at))) }
                                    } @else { span.muted { "never" } }
                                }
                                td { (time(x.next_cron_tick)) }
                                td.num { (x.leaves.iter().map(|l| l.pending_event_ids.len()).sum::<usize>()) }
                                td { (x.verdict) }
                            }
                            Err(err) => { td colspan="5" { "cannot explain: " (err.to_string()) } }
                        }
                        td {
                            @if session.may_act() {
                                form.inline method="post" action={ "/ui/jobs/" (name) "/trigger" } {
                                    (csrf_field(&session)) button type="submit" { "Trigger" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !session.may_act() { (cannot_act(&session)) }
    };
    layout("Jobs", "/ui/jobs", &session, &flash, body)
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    reason: String,
}

pub async fn trigger(
    State(s): S,
    Actor(session): Actor,
    Path(job): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let result = match session.check_action(&f.csrf) {
        Err(e) => Err(e),
        Ok(()) => engine(&s)
            .trigger(&job, &[], "console")
            .await
            .map(|id| format!("queued run {id} of {job}"))
            .map_err(|e| e.to_string()),
    };
    back("/ui/jobs", result)
}

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    job: Option<String>,
    state: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

pub async fn runs(State(s): S, Reader(session): Reader, Query(q): Query<RunsQuery>) -> Response {
    let e = engine(&s);
    let state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<RunState>().ok());
    let job = q.job.clone().filter(|j| !j.is_empty());
    let list = e
        .db()
        .list_runs(&RunFilter {
            job_name: job.clone(),
            state,
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    // The grid: each job's last 30 runs, oldest to newest, as coloured squares.
    let mut grid: Vec<(String, Vec<RunRecord>)> = Vec::new();
    for name in e.jobs().jobs.keys() {
        let mut r = e
            .db()
            .list_runs(&RunFilter {
                job_name: Some(name.clone()),
                limit: 30,
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        r.reverse();
        grid.push((name.clone(), r));
    }
    let body = html! {
        h1 { "Runs" }
        table {
            thead { tr { th { "Job" } th { "Last 30 runs (oldest to newest)" } } }
            tbody {
                @for (name, rs) in &grid {
                    tr { td { (name) } td { div.grid {
                        @for r in rs {
                            a class=(r.state.as_str()) href={ "/ui/runs/" (r.run_id) }
                              title={ "#" (r.run_id) " " (r.state) " " (r.logical_time.format("%Y-%m-%d %H:%M")) } {}
                        }
                    } } }
                }
            }
        }
        h2 { "Recent runs" }
        form method="get" action="/ui/runs" {
            select name="job" aria-label="job" {
                option value="" { "every job" }
                @for name in e.jobs().jobs.keys() { option value=(name) selected[job.as_deref() == Some(name.as_str())] { (name) } }
            }
            " "
            select name="state" aria-label="state" {
                option value="" { "any state" }
                @for st in RunState::ALL { option value=(st.as_str()) selected[state == Some(*st)] { (st.as_str()) } }
            }
            " " button type="submit" { "Filter" }
        }
        br;
        table {
            thead { tr { th { "Run" } th { "Job" } th { "State" } th { "Trigger" } th { "Logical time" } th { "Started" } th { "Duration" } th { "By" } th { "Error / note" } } }
            tbody {
                @for r in &list {
                    tr {
                        td { a href={ "/ui/runs/" (r.run_id) } { "#" (r.run_id) } }
                        td { (r.job_name) } td { (state_badge(r.state.as_str())) } td { (r.trigger_kind) }
                        td { (time(Some(r.logical_time))) } td { (time(r.started_at)) }
                        td.num { (duration(r.started_at, r.finished_at)) } td { (r.triggered_by) }
                        td { (r.error.as_deref().or(r.note.as_deref()).unwrap_or("")) }
                    }
                }
            }
        }
    };
    layout("Runs", "/ui/runs", &session, &q.flash, body)
}

/// How the run page shows its logs: `?follow=1` reloads the page every 2 s while the run is unfinished and shows
/// the newest lines (server-rendered, so it works without scripts).
#[derive(Default, Deserialize)]
pub struct RunView {
    #[serde(default)]
    follow: Option<u8>,
}

/// Log lines a run page shows.
const LOG_LINES: i64 = 500;

pub async fn run(
    State(s): S,
    Reader(session): Reader,
    Path(run_id): Path<i64>,
    Query(flash): Query<Flash>,
    Query(view): Query<RunView>,
) -> Response {
    let db = engine(&s).db();
    let Ok(Some(run)) = db.get_run(run_id).await else {
        return not_found(&session, format!("No run {run_id}"));
    };
    let following = view.follow.unwrap_or(0) != 0;
    let tasks = db.list_task_instances(run_id).await.unwrap_or_default();
    let consumed = db.consumed_events(run_id).await.unwrap_or_default();
    let produced = db.produced_events(run_id).await.unwrap_or_default();
    let logs = if following {
        db.task_logs_tail(run_id, LOG_LINES).await
    } else {
        db.task_logs(run_id, None, 0, LOG_LINES).await
    }
    .unwrap_or_default();
    let refresh = following && !run.state.is_terminal();
    let any_failed = tasks
        .iter()
        .any(|t| matches!(t.state, TaskState::Failed | TaskState::Cancelled));
    let body = html! {
        h1 { "Run #" (run.run_id) " of " (run.job_name) " " (state_badge(run.state.as_str())) }
        dl.facts {
            dt { "Trigger" } dd { (run.trigger_kind) " by " (run.triggered_by) }
            dt { "Logical time" } dd { (time(Some(run.logical_time))) }
            dt { "Started / finished" } dd { (time(run.started_at)) " / " (time(run.finished_at)) " (" (duration(run.started_at, run.finished_at)) ")" }
            dt { "Params" } dd { code { (run.params) } }
            @if let Some(e) = &run.error { dt { "Error" } dd { (e) } }
            @if let Some(n) = &run.note { dt { "Note" } dd { (n) } }
            @if run.clear_count > 0 { dt { "Cleared" } dd { (run.clear_count) " time(s)" } }
        }
        @if session.may_act() {
            div.actions {
                @if !run.state.is_terminal() {
                    (action_form(&session, run_id, "cancel", "Cancel run", ""))
                }
                @if any_failed { (action_form(&session, run_id, "clear", "Clear failed tasks", "")) }
                @if run.state != RunState::Success { (action_form(&session, run_id, "mark-success", "Mark success", "")) }
                @if run.state != RunState::Failed { (action_form(&session, run_id, "mark-failed", "Mark failed", "")) }
            }
        } @else { (cannot_act(&session)) }
        h2 { "Task instances" }
        table {
            thead { tr { th { "Task" } th { "Key" } th { "State" } th { "Try" } th { "Ran on" } th { "Started" } th { "Duration" } th { "Error / note" } th {} } }
            tbody {
                @for t in &tasks {
                    tr {
                        td { (t.task_name) } td { (t.map_key) } td { (state_badge(t.state.as_str())) }
                        td.num { (t.try_number) " / " (t.max_tries) } td { (t.worker_id.as_deref().unwrap_or("–")) }
                        td { (time(t.started_at)) } td.num { (duration(t.started_at, t.finished_at)) }
                        td { (t.error.as_deref().unwrap_or("")) @if let Some(n) = &t.note { br; span.muted { (n) } } }
                        td { @if session.may_act() && t.state.is_terminal() { (action_form(&session, run_id, "clear", "Clear", &t.task_name)) } }
                    }
                }
            }
        }
        h2 { "Lineage" }
        table {
            thead { tr { th { "Direction" } th { "Event" } th { "Dataset" } th { "Produced by" } th { "At" } } }
            tbody {
                @for (dir, e) in consumed.iter().map(|e| ("consumed", e)).chain(produced.iter().map(|e| ("produced", e))) {
                    tr {
                        td { (dir) } td { "#" (e.event_id) } td { (e.dataset_uri) }
                        td { @if let Some(r) = e.source_run_id { a href={ "/ui/runs/" (r) } { (e.source_job.as_deref().unwrap_or("")) " #" (r) } } @else { (e.created_by) } }
                        td { (time(Some(e.created_at))) }
                    }
                }
            }
        }
        h2 #logs { "Logs" }
        p.muted {
            @if refresh {
                "Following: this page reloads every 2 seconds until the run ends and shows the newest "
                (LOG_LINES) " lines. " a href={ "/ui/runs/" (run_id) "#logs" } { "Stop following" }
            } @else if !run.state.is_terminal() {
                a.follow href={ "/ui/runs/" (run_id) "?follow=1#logs" } { "Follow the logs" }
                " (reloads every 2 seconds while the run is unfinished)"
            } @else if logs.len() as i64 == LOG_LINES {
                "The first " (LOG_LINES) " lines; " a href={ "/ui/runs/" (run_id) "?follow=1#logs" } { "the last " (LOG_LINES) } ", or `snowpatrol logs " (run_id) "` for all."
            }
        }
        @if logs.is_empty() { p.muted { "No task log lines (kept at [scheduler] task_log_level and above)." } }
        @else {
            pre.log {
                @for l in &logs {
                    span class=(l.level.as_str()) {
                        (l.logged_at.format("%H:%M:%S%.3f")) " " (format!("{:5}", l.level.as_str().to_uppercase())) " "
                        (l.task_name) @if !l.map_key.is_empty() { "[" (l.map_key) "]" } "#" (l.try_number) " " (l.message)
                        @if let Some(obj) = l.fields.as_object() { @for (k, v) in obj { " " (k) "=" (v) } }
                    } "\n"
                }
            }
        }
    };
    let page = layout(&format!("Run {run_id}"), "/ui/runs", &session, &flash, body);
    if refresh {
        // The standard Refresh header: the browser reloads the same URL (fragment included) in 2 s.
        let mut page = page;
        if let Ok(v) =
            axum::http::HeaderValue::from_str(&format!("2; url=/ui/runs/{run_id}?follow=1#logs"))
        {
            page.headers_mut().insert("refresh", v);
        }
        return page;
    }
    page
}

fn action_form(session: &Session, run_id: i64, action: &str, label: &str, task: &str) -> Markup {
    let class = if action.starts_with("mark-failed") || action == "cancel" {
        "danger"
    } else {
        ""
    };
    html! {
        form.inline method="post" action={ "/ui/runs/" (run_id) "/" (action) } {
            (csrf_field(session))
            input type="hidden" name="task" value=(task);
            button class=(class) type="submit" { (label) }
        }
    }
}

pub async fn run_action(
    State(s): S,
    Actor(session): Actor,
    Path((run_id, action)): Path<(i64, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    let to = format!("/ui/runs/{run_id}");
    if let Err(e) = session.check_action(&f.csrf) {
        return back(&to, Err(e));
    }
    let e = engine(&s);
    let who = "console";
    let result = match action.as_str() {
        "cancel" => {
            let reason = if f.reason.is_empty() {
                "cancelled from the console"
            } else {
                &f.reason
            };
            e.cancel(run_id, reason)
                .await
                .map(|_| "run cancelled".to_string())
        }
        "clear" => {
            let selection = if f.task.is_empty() {
                ClearSelection::Failed
            } else {
                ClearSelection::Tasks(vec![f.task.clone()])
            };
            e.clear(run_id, &selection, who, &f.reason).await.map(|r| {
                format!(
                    "{} task instance(s) queued again; downstream planned afresh: {}",
                    r.reset.len(),
                    if r.replanned_tasks.is_empty() {
                        "none".to_string()
                    } else {
                        r.replanned_tasks.join(", ")
                    }
                )
            })
        }
        "mark-success" => e
            .mark_run(run_id, RunState::Success, who, &f.reason)
            .await
            .map(|_| "run marked success".into()),
        "mark-failed" => e
            .mark_run(run_id, RunState::Failed, who, &f.reason)
            .await
            .map(|_| "run marked failed".into()),
        other => return back(&to, Err(format!("unknown action `{other}`"))),
    };
    back(&to, result.map_err(|e| e.to_string()))
}

pub async fn datasets(
    State(s): S,
    Reader(session): Reader,
    Query(flash): Query<Flash>,
) -> Response {
    let e = engine(&s);
    let datasets = snowpatrol_api::datasets(e.jobs());
    let events = e.db().list_events(None, 50).await.unwrap_or_default();
    let body = html! {
        h1 { "Datasets" }
        table {
            thead { tr { th { "Dataset" } th { "Produced by" } th { "Jobs scheduled on it" } } }
            tbody {
                @for d in &datasets {
                    tr {
                        td { code { (d.uri) } }
                        td { @if d.external { span.muted { "external" } } @else { (d.producers.join(", ")) } }
                        td { (d.consumers.join(", ")) }
                    }
                }
            }
        }
        h2 { "Recent events" }
        table {
            thead { tr { th { "Event" } th { "Dataset" } th { "Source" } th { "Extra" } th { "At" } } }
            tbody {
                @for ev in &events {
                    tr {
                        td { "#" (ev.event_id) } td { (ev.dataset_uri) }
                        td { @if let Some(r) = ev.source_run_id { a href={ "/ui/runs/" (r) } { (ev.source_job.as_deref().unwrap_or("")) " #" (r) } } @else { (ev.created_by) } }
                        td { code { (ev.extra) } } td { (time(Some(ev.created_at))) }
                    }
                }
            }
        }
    };
    layout("Datasets", "/ui/datasets", &session, &flash, body)
}

pub async fn models(State(s): S, Reader(session): Reader, Query(flash): Query<Flash>) -> Response {
    let models = store(&s).list_models(None).await.unwrap_or_default();
    let body = html! {
        h1 { "Models" }
        table {
            thead { tr { th { "Warehouse" } th { "Version" } th { "Kind" } th { "Aliases" } th { "Threshold" } th { "Training window" } th { "Training run" } th { "Metrics" } } }
            tbody {
                @for m in &models {
                    tr {
                        td { (m.account_name) "." (m.warehouse_name) } td.num { "v" (m.version) } td { (m.model_kind) }
                        td { (m.aliases) } td.num { (format!("{:.2}", m.threshold)) }
                        td { (m.training_start) " .. " (m.training_end) }
                        td { @if let Some(r) = m.training_run_id { a href={ "/ui/runs/" (r) } { "#" (r) } } }
                        td { code { (m.metrics) } }
                    }
                }
            }
        }
    };
    layout("Models", "/ui/models", &session, &flash, body)
}

#[derive(Deserialize, Default)]
pub struct IncidentsQuery {
    status: Option<String>,
    warehouse: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

pub async fn incidents(
    State(s): S,
    Reader(session): Reader,
    Query(q): Query<IncidentsQuery>,
) -> Response {
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<IncidentStatus>().ok());
    let warehouse = q.warehouse.clone().filter(|w| !w.is_empty());
    let currency = s.currency().await;
    let filter = IncidentFilter {
        warehouse: warehouse.clone(),
        statuses: status.into_iter().collect(),
        ..Default::default()
    };
    let list = store(&s).list_incidents(&filter).await.unwrap_or_default();
    let body = html! {
        h1 { "Incidents" }
        form method="get" action="/ui/incidents" {
            select name="status" aria-label="status" {
                option value="" { "any status" }
                @for st in IncidentStatus::ALL { option value=(st.as_str()) selected[status == Some(*st)] { (st.as_str()) } }
            }
            " " input name="warehouse" placeholder="WAREHOUSE or ACCOUNT.WAREHOUSE" value=(warehouse.as_deref().unwrap_or("")) aria-label="warehouse";
            " " button type="submit" { "Filter" }
        }
        br;
        table {
            thead { tr { th { "Incident" } th { "Warehouse" } th { "Days" } th { "Excess credits" } th { "Excess cost" } th { "Peak score" } th { "Status" } th {} } }
            tbody {
                @for i in &list {
                    tr {
                        td { a href={ "/ui/incidents/" (i.incident_id) } { "#" (i.incident_id) } }
                        td { (i.account_name) "." (i.warehouse_name) }
                        td { (i.start_day) @if i.end_day != i.start_day { " .. " (i.end_day) } " (" (i.days) ")" }
                        td.num { (format!("{:.2}", i.excess_credits)) }
                        td.num { (i.excess_cost.map_or("–".into(), |c| money(c, currency.as_deref()))) }
                        td.num { (format!("{:.1}", i.peak_score)) }
                        td { (state_badge(i.status.as_str())) }
                        td { @if i.status != IncidentStatus::Acknowledged && session.may_act() { (ack_forms(&session, i.incident_id)) } }
                    }
                }
            }
        }
        @if !session.may_act() { (cannot_act(&session)) }
    };
    layout("Incidents", "/ui/incidents", &session, &q.flash, body)
}

fn ack_forms(session: &Session, id: i64) -> Markup {
    html! {
        @for reason in AckReason::ALL {
            form.inline method="post" action={ "/ui/incidents/" (id) "/ack" } {
                (csrf_field(session))
                input type="hidden" name="reason" value=(reason.as_str());
                button type="submit" name="ack" value=(reason.as_str()) { "Ack: " (reason.as_str().replace('_', " ")) }
            } " "
        }
    }
}

/// The chart's days: the warehouse's daily credits from 30 days before the incident to 7 after, with what
/// its newest model expected each day (scored as predict scores, causally).
async fn chart_days(
    s: &ConsoleState,
    key: &WarehouseKey,
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<ChartDay> {
    let Ok(daily) = store(s).load_daily(Some(key)).await else {
        return vec![];
    };
    let from = start.checked_sub_days(Days::new(30)).unwrap_or(start);
    let to = end.checked_add_days(Days::new(7)).unwrap_or(end);
    let upto: Vec<_> = daily.into_iter().filter(|d| d.date <= to).collect();
    let Some(series) = build_series(&upto, None).into_iter().next() else {
        return vec![];
    };
    let model = store(s)
        .model_by_alias(key, "latest")
        .await
        .ok()
        .flatten()
        .and_then(|m| serde_json::from_value::<TrainedModel>(m.model).ok());
    let first = (0..series.len())
        .find(|&i| series.date(i) >= from)
        .unwrap_or(0);
    let take = series.len() - first;
    // Scoring is CPU work: off the async threads.
    tokio::task::spawn_blocking(move || {
        snowpatrol_detect::model::expected_days(model.as_ref(), &series, take)
    })
    .await
    .unwrap_or_default()
}

pub async fn incident(
    State(s): S,
    Reader(session): Reader,
    Path(id): Path<i64>,
    Query(flash): Query<Flash>,
) -> Response {
    let st = store(&s);
    let Ok(Some(i)) = st.incident(id).await else {
        return not_found(&session, format!("No incident {id}"));
    };
    let days = st
        .list_anomalies(&IncidentFilter {
            incident_ids: vec![id],
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let key = WarehouseKey::new(&i.account_name, &i.warehouse_name);
    let chart = chart_days(&s, &key, i.start_day, i.end_day).await;
    let hourly_from = i
        .start_day
        .checked_sub_days(Days::new(1))
        .unwrap_or(i.start_day);
    let hourly_to = i
        .end_day
        .checked_add_days(Days::new(2))
        .unwrap_or(i.end_day);
    let midnight = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_default()
    };
    let hours = st
        .hourly_credits(&key, midnight(hourly_from), midnight(hourly_to))
        .await
        .unwrap_or_default();
    let flagged: BTreeMap<NaiveDate, f64> = days
        .iter()
        .map(|a| (a.usage_date, a.expected_credits))
        .collect();
    let causes = st
        .root_causes(Some(&key), i.start_day, i.end_day)
        .await
        .unwrap_or_default();
    let currency = s.currency().await;
    let body = html! {
        h1 { "Incident #" (i.incident_id) ": " (i.account_name) "." (i.warehouse_name) " " (state_badge(i.status.as_str())) }
        dl.facts {
            dt { "Days" } dd { (i.start_day) " .. " (i.end_day) " (" (i.days) ")" }
            dt { "Excess" } dd { (format!("{:.2}", i.excess_credits)) " credits" @if let Some(c) = i.excess_cost { " (" (money(c, currency.as_deref())) ")" } }
            dt { "Peak score" } dd { (format!("{:.2}", i.peak_score)) }
            @if let Some(r) = i.ack_reason { dt { "Acknowledged" } dd { (r.as_str()) " by " (i.acknowledged_by.as_deref().unwrap_or("?")) " at " (time(i.acknowledged_at)) } }
        }
        @if i.status != IncidentStatus::Acknowledged {
            @if session.may_act() { div.actions { (ack_forms(&session, i.incident_id)) } } @else { (cannot_act(&session)) }
        }
        h2 { "Root cause" }
        @if causes.is_empty() {
            p.muted { "Not looked up yet: predict's root_causes task records it for the anomalous days of the scored window." }
        }
        @for c in &causes {
            section.cause id={ "cause-" (c.usage_date) } {
                h3 { (c.usage_date) }
                @if !c.summary.is_empty() { p.summary { (c.summary) } }
                ul {
                    @for line in c.detail.detail_lines() { li { (line) } }
                }
                p.muted { "Looked up " (time(Some(c.looked_up_at))) @if let Some(r) = c.run_id { " by run " a href={ "/ui/runs/" (r) } { "#" (r) } } }
            }
        }
        h2 { "Daily credits" }
        (usage_chart(&chart, &flagged))
        h2 { "Credits per hour" }
        (hourly_chart(&hours, (i.start_day, i.end_day)))
        h2 { "Anomalous days" }
        table {
            thead { tr { th { "Day" } th { "Actual" } th { "Expected" } th { "Excess" } th { "Score" } th { "Why" } th { "Model" } } }
            tbody {
                @for a in &days {
                    tr {
                        td { (a.usage_date) } td.num { (format!("{:.2}", a.actual_credits)) } td.num { (format!("{:.2}", a.expected_credits)) }
                        td.num { (format!("{:+.2}", a.excess_credits)) } td.num { (format!("{:.2}", a.score)) }
                        td { (a.explanation) } td { "v" (a.model_version) " (run " a href={ "/ui/runs/" (a.run_id) } { "#" (a.run_id) } ")" }
                    }
                }
            }
        }
    };
    layout(
        &format!("Incident {id}"),
        "/ui/incidents",
        &session,
        &flash,
        body,
    )
}

#[derive(Deserialize)]
pub struct AckForm {
    #[serde(default)]
    csrf: String,
    reason: String,
}

pub async fn ack(
    State(s): S,
    Actor(session): Actor,
    Path(id): Path<i64>,
    Form(f): Form<AckForm>,
) -> Response {
    let to = format!("/ui/incidents/{id}");
    if let Err(e) = session.check_action(&f.csrf) {
        return back(&to, Err(e));
    }
    let reason: AckReason = match f.reason.parse() {
        Ok(r) => r,
        Err(e) => return back(&to, Err(e)),
    };
    let result = match store(&s).ack_incident(id, reason, Some("console")).await {
        Ok(true) => Ok(format!("incident {id} acknowledged ({reason})")),
        Ok(false) => Err(format!("no incident {id}")),
        Err(e) => Err(e.to_string()),
    };
    back(&to, result)
}

pub async fn alerts(State(s): S, Reader(session): Reader, Query(flash): Query<Flash>) -> Response {
    let list = store(&s).list_alerts(false, 200).await.unwrap_or_default();
    let body = html! {
        h1 { "Alerts" }
        table {
            thead { tr { th { "Alert" } th { "Kind" } th { "Channel" } th { "State" } th { "Attempts" } th { "Created" } th { "Sent" } th { "Last error" } } }
            tbody {
                @for a in &list {
                    tr {
                        td { "#" (a.alert_id) } td { (a.kind) } td { (a.channel) } td { (state_badge(a.state.as_str())) }
                        td.num { (a.attempts) } td { (time(Some(a.created_at))) } td { (time(a.sent_at)) }
                        td { (a.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    layout("Alerts", "/ui/alerts", &session, &flash, body)
}
