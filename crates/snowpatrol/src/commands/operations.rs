//! Operator actions on runs (clear, mark) and task logs: what Airflow users do from its UI, on the command line.

use super::print;
use crate::app::{App, open_existing, triggered_by};
use crate::output::{self, outln};
use crate::settings::LoadedConfig;
use anyhow::{Context, bail};
use serde_json::json;
use snowpatrol_engine::{RunState, TaskState};
use snowpatrol_store::{ClearSelection, TaskLogRecord};
use std::process::ExitCode;
use std::time::Duration;

/// The states an operator can mark a run or task with.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum MarkState {
    Success,
    Failed,
}

/// `snowpatrol clear RUN [--task T]...`: failed (or the named) task instances run again with a new try.
pub(crate) async fn clear(
    loaded: &LoadedConfig,
    json: bool,
    run_id: i64,
    tasks: Vec<String>,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let selection = if tasks.is_empty() {
        ClearSelection::Failed
    } else {
        ClearSelection::Tasks(tasks)
    };
    let report = app
        .engine
        .clear(run_id, &selection, &triggered_by(), reason)
        .await
        .with_context(|| format!("clearing run {run_id}"))?;
    let value = json!({
        "run_id": run_id,
        "reset_task_instances": report.reset,
        "replanned_tasks": report.replanned_tasks,
        "reopened": report.reopened,
    });
    print(json, &value, || {
        let mut text = format!(
            "cleared run {run_id}: {} task instance(s) queued again with a new try",
            report.reset.len()
        );
        if !report.replanned_tasks.is_empty() {
            text.push_str(&format!(
                "; downstream planned afresh: {}",
                report.replanned_tasks.join(", ")
            ));
        }
        if report.reopened {
            text.push_str("; the run is running again (a daemon executes it)");
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol mark RUN --state S [--task T [--key K]]`: sets a run's or a task's state by hand.
pub(crate) async fn mark(
    loaded: &LoadedConfig,
    json: bool,
    run_id: i64,
    state: MarkState,
    task: Option<String>,
    key: Option<String>,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let app = App::open(loaded, false).await?;
    let who = triggered_by();
    let Some(task) = task else {
        if key.is_some() {
            bail!("--key needs --task: it names one instance of a fanned-out task");
        }
        let run_state = match state {
            MarkState::Success => RunState::Success,
            MarkState::Failed => RunState::Failed,
        };
        let run = app
            .engine
            .mark_run(run_id, run_state, &who, reason)
            .await
            .with_context(|| format!("marking run {run_id} {run_state}"))?;
        print(json, &run, || {
            format!("marked run {run_id} of {} {run_state}", run.job_name)
        })?;
        return Ok(ExitCode::SUCCESS);
    };
    let task_state = match state {
        MarkState::Success => TaskState::Success,
        MarkState::Failed => TaskState::Failed,
    };
    let report = app
        .engine
        .mark_task(run_id, &task, key.as_deref(), task_state, &who, reason)
        .await
        .with_context(|| format!("marking task `{task}` of run {run_id} {task_state}"))?;
    let value = json!({
        "run_id": run_id,
        "task": task,
        "marked_task_instances": report.marked,
        "replanned_tasks": report.replanned_tasks,
    });
    print(json, &value, || {
        let mut text = format!(
            "marked {} instance(s) of `{task}` in run {run_id} {task_state}",
            report.marked.len()
        );
        if !report.replanned_tasks.is_empty() {
            text.push_str(&format!(
                "; downstream planned afresh: {}",
                report.replanned_tasks.join(", ")
            ));
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol logs RUN [TASK] [--follow]`: the captured log lines of a run's task tries, oldest first.
pub(crate) async fn logs(
    loaded: &LoadedConfig,
    json: bool,
    run_id: i64,
    task: Option<String>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let db = open_existing(&loaded.settings).await?;
    let Some(run) = db.get_run(run_id).await.context("reading the run")? else {
        bail!("no run with id {run_id} (see `snowpatrol runs`)");
    };
    if let Some(task) = &task {
        let tasks = db
            .list_task_instances(run_id)
            .await
            .context("reading task instances")?;
        if !tasks.iter().any(|t| &t.task_name == task) {
            let mut names: Vec<&str> = tasks.iter().map(|t| t.task_name.as_str()).collect();
            names.dedup();
            bail!(
                "run {run_id} of {} has no task `{task}`; its tasks: {}",
                run.job_name,
                names.join(", ")
            );
        }
    }
    let mut after = 0;
    let mut printed = 0usize;
    loop {
        // Whether the run was over before this read: then the read saw every line it will ever have.
        let over = !follow
            || db
                .get_run(run_id)
                .await
                .context("reading the run")?
                .is_none_or(|r| r.state.is_terminal());
        loop {
            let page = db
                .task_logs(run_id, task.as_deref(), after, 1000)
                .await
                .context("reading task logs")?;
            for line in &page {
                print_line(json, line)?;
            }
            printed += page.len();
            match page.last() {
                Some(last) if page.len() == 1000 => after = last.log_id,
                Some(last) => {
                    after = last.log_id;
                    break;
                }
                None => break,
            }
        }
        if over {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if printed == 0 && !json {
        eprintln!(
            "run {run_id} of {} has no task log lines{} (lines are kept at [scheduler] task_log_level and above)",
            run.job_name,
            task.map_or(String::new(), |t| format!(" for task `{t}`"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line: time, level, task[key]#try, message, then the fields as key=value (JSON lines with `--json`).
fn print_line(json: bool, line: &TaskLogRecord) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(line)?);
        return Ok(());
    }
    let key = if line.map_key.is_empty() {
        String::new()
    } else {
        format!("[{}]", line.map_key)
    };
    let fields: Vec<String> = line
        .fields
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    outln!(
        "{} {:5} {}{key}#{} {}{}{}",
        output::time(Some(line.logged_at)),
        line.level.as_str().to_uppercase(),
        line.task_name,
        line.try_number,
        line.message,
        if fields.is_empty() { "" } else { "  " },
        fields.join(" ")
    );
    Ok(())
}
