//! What each subcommand does. Every path returns `anyhow` errors with context; `main` prints them.

use crate::output::outln;
use crate::settings::{self, LoadedConfig, LogFormat, Settings};
use crate::{Cli, Command, ConfigCommand, EXIT_RUN_FAILED, examples, output, server};
use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use serde_json::json;
use snowpatrol_engine::{CancellationToken, Engine, Jobs, RunState, resolve_jobs};
use snowpatrol_pipeline::Pipeline;
use snowpatrol_store::{Database, RunFilter, redact_url};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use tracing::{info, warn};

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(cli.command, Command::Demo) {
        init_demo_logging();
        return crate::pipeline_cli::demo(cli.json).await;
    }
    // Offline commands: they read and write files only, so a missing database or config must not stop them.
    let cli = match cli.command {
        Command::Backtest(args) => {
            init_demo_logging();
            return crate::pipeline_cli::backtest_cmd(&args, cli.json);
        }
        Command::Synth(args) => {
            init_demo_logging();
            return crate::pipeline_cli::synth_cmd(&args, cli.json);
        }
        command => Cli { command, ..cli },
    };
    let loaded = settings::load(cli.config.as_deref())?;
    init_logging(&loaded.settings, cli.log_format)?;
    let json = cli.json;
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&loaded, json).await,
        Command::Demo => crate::pipeline_cli::demo(json).await,
        Command::Migrate => {
            let db = connect(&loaded.settings, false).await?;
            snowpatrol_pipeline::migrate(&db)
                .await
                .with_context(|| format!("migrating {}", db.url_redacted()))?;
            print(
                json,
                &json!({ "migrated": true, "database": db.url_redacted() }),
                || format!("migrated {} ({})", db.url_redacted(), db.backend_name()),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon => daemon(loaded).await,
        Command::Runs {
            job,
            state,
            since,
            until,
            limit,
        } => {
            if limit < 1 {
                bail!("--limit must be at least 1, got {limit}");
            }
            let db = open_existing(&loaded.settings).await?;
            if let Some(job) = &job {
                let jobs = db.list_jobs().await.context("listing jobs")?;
                if !jobs.iter().any(|j| &j.job_name == job) {
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
            print(json, &runs, || {
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
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lineage { run_id } => {
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
                let mut out = format!(
                    "run {run_id} of {} ({} run, logical time {})\nconsumed:",
                    run.job_name,
                    run.trigger_kind,
                    output::time(Some(run.logical_time))
                );
                // A consumed event says where it came from; a produced one comes from this run.
                let line = |e: &snowpatrol_store::EventRecord, origin: bool| {
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
                };
                for (events, origin, none) in [
                    (&consumed, true, " (none: not triggered by datasets)"),
                    (&produced, false, " (none)"),
                ] {
                    if !origin {
                        out.push_str("\nproduced:");
                    }
                    if events.is_empty() {
                        out.push_str(none);
                    }
                    for e in events {
                        out.push_str(&line(e, origin));
                    }
                }
                out
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tasks { run_id } => {
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
                        "id", "task", "key", "state", "try", "worker", "started", "duration",
                        "error",
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
        Command::Events { dataset, limit } => {
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
        Command::Run { job, params } => {
            validate(&loaded).await?;
            let app = App::open(&loaded, true).await?;
            let shutdown = CancellationToken::new();
            spawn_signal_watcher(shutdown.clone());
            let run = app
                .engine
                .run_now(&job, &params, &triggered_by(), shutdown.clone())
                .await
                .with_context(|| format!("running job `{job}`"))?;
            // No daemon behind a one-shot run: deliver the alerts it queued before exiting, for a bounded
            // time (what is left stays pending for the daemon or the next run).
            if !shutdown.is_cancelled() {
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
            let tasks = app
                .engine
                .db()
                .list_task_instances(run.run_id)
                .await
                .context("listing task instances")?;
            print(json, &json!({ "run": run, "tasks": tasks }), || {
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
            })?;
            Ok(if run.state == RunState::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUN_FAILED)
            })
        }
        Command::Trigger { job, params } => {
            let app = App::open(&loaded, false).await?;
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
                &json!({ "run_id": run_id, "job": job, "state": "queued", "paused": paused }),
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
        Command::Emit {
            dataset,
            extra,
            allow_unknown,
        } => {
            let extra: serde_json::Value = match extra {
                Some(s) => serde_json::from_str(&s)
                    .with_context(|| format!("--extra is not valid JSON: {s}"))?,
                None => json!({}),
            };
            let app = App::open(&loaded, false).await?;
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
        Command::Explain { job } => {
            let app = App::open(&loaded, false).await?;
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
        Command::Jobs => {
            let app = App::open(&loaded, false).await?;
            let rows = app.engine.db().list_jobs().await.context("listing jobs")?;
            let now = snowpatrol_store::now();
            // Last run and next run of each job: what an operator asks first.
            let mut last = std::collections::BTreeMap::new();
            for name in app.jobs().jobs.keys() {
                let runs = app
                    .engine
                    .db()
                    .list_runs(&RunFilter {
                        job_name: Some(name.clone()),
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                    .context("reading the last runs")?;
                if let Some(r) = runs.into_iter().next() {
                    last.insert(name.clone(), r);
                }
            }
            let next_run = |j: &snowpatrol_engine::ResolvedJob| -> (Option<chrono::DateTime<chrono::Utc>>, String) {
                match (&j.cron, &j.condition) {
                    (Some(c), _) => {
                        let t = c.next_after(now);
                        (t, t.map_or_else(|| "never".into(), |t| output::time(Some(t))))
                    }
                    (None, Some(_)) => (None, "when its datasets update".into()),
                    (None, None) => (None, "manual".into()),
                }
            };
            let list: Vec<serde_json::Value> = app
                .jobs()
                .jobs
                .values()
                .map(|j| {
                    let paused = rows.iter().any(|r| r.job_name == j.name() && r.paused);
                    let l = last.get(j.name());
                    json!({
                        "job": j.name(),
                        "schedule": j.schedule_text(),
                        "paused": paused,
                        "last_run": l.map(|r| json!({"run_id": r.run_id, "state": r.state, "logical_time": r.logical_time, "finished_at": r.finished_at})),
                        "next_run": next_run(j).0,
                        "max_active_runs": j.max_active_runs,
                        "description": j.definition.description,
                        "params": j.params.specs.values().map(|p| json!({"name": p.name, "type": p.ty.to_string(), "default": p.default, "one_of": p.one_of, "min": p.min, "max": p.max})).collect::<Vec<_>>(),
                    })
                })
                .collect();
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
                        .map(|j| {
                            let paused = rows.iter().any(|r| r.job_name == j.name() && r.paused);
                            let params: Vec<String> = j
                                .params
                                .specs
                                .values()
                                .map(|p| match p.domain_text() {
                                    Some(d) => {
                                        format!("{}: {} = {} ({d})", p.name, p.ty, p.default)
                                    }
                                    None => format!("{}: {} = {}", p.name, p.ty, p.default),
                                })
                                .collect();
                            let last_run = last.get(j.name()).map_or_else(
                                || "never".to_string(),
                                |r| {
                                    format!(
                                        "{} {} ({})",
                                        r.run_id,
                                        r.state,
                                        output::time(
                                            r.finished_at.or(r.started_at).or(Some(r.logical_time))
                                        )
                                    )
                                },
                            );
                            vec![
                                j.name().to_string(),
                                j.schedule_text(),
                                if paused { "yes".into() } else { "no".into() },
                                last_run,
                                next_run(j).1,
                                params.join(", "),
                                j.definition.description.clone(),
                            ]
                        })
                        .collect(),
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { warehouse } => {
            let db = open_existing(&loaded.settings).await?;
            crate::pipeline_cli::models(&db, warehouse.as_deref(), json).await
        }
        Command::Anomalies {
            command,
            since,
            warehouse,
            open,
            days,
            format,
        } => {
            let db = open_existing(&loaded.settings).await?;
            let view = crate::pipeline_cli::AnomaliesView {
                since,
                warehouse,
                open,
                days,
                format,
            };
            crate::pipeline_cli::anomalies(&db, command, view, &triggered_by(), json).await
        }
        Command::ExplainAlert { incident } => {
            let db = open_existing(&loaded.settings).await?;
            crate::pipeline_cli::explain_alert(&db, &loaded.settings.pipeline, incident, json).await
        }
        Command::Alerts { pending, limit } => {
            let db = open_existing(&loaded.settings).await?;
            crate::pipeline_cli::alerts(&db, pending, limit, json).await
        }
        Command::Backtest(args) => crate::pipeline_cli::backtest_cmd(&args, json),
        Command::Synth(args) => crate::pipeline_cli::synth_cmd(&args, json),
        Command::Pause { job } => set_paused(&loaded, json, &job, true).await,
        Command::Unpause { job } => set_paused(&loaded, json, &job, false).await,
    }
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        outln!("{}", output::json(value)?);
    } else {
        outln!("{}", text());
    }
    Ok(())
}

/// A run's params as `key=value, …` (empty for none), the way `trigger -p` takes them.
fn params_text(params: &serde_json::Value) -> String {
    match params.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => params.to_string(),
    }
}

/// Who asked, recorded on runs and events (`cli:<user>@<host>`).
pub(crate) fn triggered_by() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = hostname_lossy();
    format!("cli:{user}@{host}")
}

fn hostname_lossy() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn init_logging(settings: &Settings, cli_format: Option<LogFormat>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .with_context(|| format!("RUST_LOG `{v}` is not a valid tracing filter"))?,
        _ => {
            let level = &settings.logging.level;
            // PostgreSQL's NOTICEs (e.g. "relation already exists, skipping" during migrations) are logged by
            // sqlx at INFO; they are not news to an operator, so they show from `warn` unless asked for.
            let quiet = if level.contains("sqlx") {
                ""
            } else {
                ",sqlx::postgres::notice=warn"
            };
            EnvFilter::try_new(format!("{level}{quiet}")).with_context(|| {
                format!("[logging] level `{level}` is not a valid tracing filter (e.g. `info` or `info,snowpatrol_engine=debug`)")
            })?
        }
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match cli_format.unwrap_or(settings.logging.format) {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// Opens the configured database. `retry` is for the daemon, which must survive a database that starts later.
async fn connect(settings: &Settings, retry: bool) -> anyhow::Result<Database> {
    match settings.database_url() {
        Some(url) => {
            let url = url.expose_secret();
            let redacted = redact_url(url);
            let db = if retry {
                Database::connect_with_retry(url, settings.database.connect_timeout).await
            } else {
                Database::connect(url).await
            };
            db.with_context(|| {
                format!("connecting to the database {redacted} (from SNOWPATROL_DATABASE_URL or [database] url)")
            })
        }
        None => {
            let path = settings.data_dir().join("snowpatrol.db");
            Database::open_sqlite_file(&path).await.with_context(|| {
                format!("opening the embedded SQLite database {} ([server] data_dir / SNOWPATROL_DATA_DIR)", path.display())
            })
        }
    }
}

/// `open_ready` for commands that only read what runs left behind: with the embedded database, a data
/// directory that has none is an error that says where it looked, instead of a new empty database and an
/// empty list (a command run from the wrong directory would otherwise look like "nothing happened yet").
async fn open_existing(settings: &Settings) -> anyhow::Result<Database> {
    if settings.database_url().is_none() {
        let path = settings.data_dir().join("snowpatrol.db");
        if !path.exists() {
            bail!(
                "no Snowpatrol database at {}: run a job first (`snowpatrol run prep`), start the daemon, or point \
                 SNOWPATROL_DATA_DIR / [server] data_dir (or [database] url) at the one you mean",
                path.display()
            );
        }
    }
    open_ready(settings).await
}

/// Connects and makes sure the schema is there. The embedded SQLite file belongs to this one process, so it is
/// migrated on the spot; a shared PostgreSQL database is migrated deliberately (`snowpatrol migrate` or the
/// daemon's `migrate_on_start`), never behind an operator's back by a read-only command.
async fn open_ready(settings: &Settings) -> anyhow::Result<Database> {
    let db = connect(settings, false).await?;
    let ready = snowpatrol_pipeline::schema_ready(&db)
        .await
        .with_context(|| format!("checking the schema of {}", db.url_redacted()))?;
    if !ready {
        if db.backend_name() == "sqlite" {
            snowpatrol_pipeline::migrate(&db)
                .await
                .with_context(|| format!("migrating {}", db.url_redacted()))?;
        } else {
            bail!(
                "the database {} is not migrated to this version: run `snowpatrol migrate` (or start the daemon with [database] migrate_on_start = true)",
                db.url_redacted()
            );
        }
    }
    Ok(db)
}

/// Builds the job set: the pipeline's jobs, plus the examples when enabled, validated against `[jobs.*]`.
/// Jobs and the pipeline. `with_sources` builds the metering source and Slack (reading their credentials);
/// commands that only inspect or queue jobs go without, so they work on a machine that has no credentials.
fn build_jobs(
    loaded: &LoadedConfig,
    db: &Database,
    with_sources: bool,
) -> anyhow::Result<(Jobs, Arc<Pipeline>)> {
    let s = &loaded.settings;
    let resolve = |pipeline: &Arc<Pipeline>| {
        let mut registry = pipeline.registry();
        let mut configs = s.jobs.clone();
        if s.examples.enabled {
            examples::register(&mut registry);
            examples::default_configs(&mut configs);
        }
        resolve_jobs(&registry, &configs, &s.scheduler)
    };
    // Every problem at once, located in the file: the pipeline's settings, the scheduler's and the job tables
    // (both in `resolve_jobs`), before any source or secret is touched.
    let mut issues = s.pipeline.problems();
    if with_sources {
        // Processes that run tasks write models, reports and alerts there, and need the secrets of the
        // sources and alerts they build.
        if let Some(message) = settings::data_dir_problem(&s.data_dir()) {
            issues.push(snowpatrol_engine::ConfigIssue {
                path: "server.data_dir".into(),
                message: if s.server.data_dir.is_none() {
                    format!("{message} (from SNOWPATROL_DATA_DIR or the default ./.snowpatrol)")
                } else {
                    message
                },
            });
        }
        issues.extend(loaded.deferred.iter().cloned());
        if !issues.is_empty() {
            // The metering source's own problems (a private key that is missing or will not decrypt) belong
            // in the same list; without the other problems `Pipeline::new` below reports them.
            let mut without_slack = s.pipeline.clone();
            without_slack.slack = None;
            if let Err(snowpatrol_pipeline::PipelineError::Source(e)) =
                Pipeline::new(db.clone(), without_slack, s.data_dir())
            {
                issues.push(source_issue(&e));
            }
        }
    }
    if !issues.is_empty() {
        let defs = Pipeline::definitions_only(db.clone(), s.pipeline.clone(), s.data_dir());
        if let Err(e) = resolve(&defs) {
            issues.extend(e.0);
        }
        return Err(loaded.locate(&issues).into());
    }
    let pipeline = if with_sources {
        match Pipeline::new(db.clone(), s.pipeline.clone(), s.data_dir()) {
            Ok(p) => p,
            Err(snowpatrol_pipeline::PipelineError::Source(e)) => {
                // With the job and scheduler problems too, so one `config check` lists them all.
                let mut issues = vec![source_issue(&e)];
                let defs = Pipeline::definitions_only(db.clone(), s.pipeline.clone(), s.data_dir());
                if let Err(e) = resolve(&defs) {
                    issues.extend(e.0);
                }
                return Err(loaded.locate(&issues).into());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("setting up the pipeline ([pipeline])"));
            }
        }
    } else {
        Pipeline::definitions_only(db.clone(), s.pipeline.clone(), s.data_dir())
    };
    let jobs = resolve(&pipeline).map_err(|e| loaded.locate(&e.0))?;
    Ok((jobs, pipeline))
}

/// A metering source's problem as a config issue, at the key that causes it when the source says which.
fn source_issue(e: &snowpatrol_sources::SourceError) -> snowpatrol_engine::ConfigIssue {
    snowpatrol_engine::ConfigIssue {
        path: match e {
            snowpatrol_sources::SourceError::Setting { key, .. } => {
                format!("pipeline.source.{key}")
            }
            _ => "pipeline.source".into(),
        },
        message: e.to_string(),
    }
}

struct App {
    engine: Engine,
    pipeline: Arc<Pipeline>,
}

impl App {
    /// Database, jobs and engine for a one-shot command; jobs are registered so runs and events refer to them.
    async fn open(loaded: &LoadedConfig, with_sources: bool) -> anyhow::Result<Self> {
        let db = open_ready(&loaded.settings).await?;
        let (jobs, pipeline) = build_jobs(loaded, &db, with_sources)?;
        let engine = Engine::new(db, jobs, loaded.settings.scheduler.clone())
            .context("starting the engine")?
            .with_failure_hook(pipeline.failure_hook());
        engine
            .register_jobs()
            .await
            .context("registering jobs in the database")?;
        Ok(Self { engine, pipeline })
    }
    fn jobs(&self) -> &Jobs {
        self.engine.jobs()
    }
}

async fn set_paused(
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

/// The validation of `config check`, run before the daemon or `run` touches the database: the same file is
/// refused by all three, with every problem listed at once.
async fn validate(loaded: &LoadedConfig) -> anyhow::Result<(Jobs, Arc<Pipeline>)> {
    // Validation needs no real database: the pipeline only keeps the handle, so an in-memory one stands in.
    let scratch = Database::connect("sqlite::memory:")
        .await
        .context("opening a scratch in-memory database")?;
    let built = build_jobs(loaded, &scratch, true)?;
    scratch.close().await;
    Ok(built)
}

async fn config_check(loaded: &LoadedConfig, json: bool) -> anyhow::Result<ExitCode> {
    let (jobs, pipeline) = validate(loaded).await?;
    let source = pipeline.source_description();
    let slack = match pipeline.slack_channel() {
        Some(channel) => format!("Slack, default channel {channel}"),
        None => format!(
            "no Slack token: alerts are written under {}",
            loaded.settings.data_dir().join("alerts").display()
        ),
    };
    let s = &loaded.settings;
    let database = match s.database_url() {
        Some(u) => redact_url(u.expose_secret()),
        None => format!(
            "sqlite://{} (embedded)",
            s.data_dir().join("snowpatrol.db").display()
        ),
    };
    let list: Vec<_> = jobs
        .jobs
        .values()
        .map(|j| json!({ "job": j.name(), "schedule": j.schedule_text() }))
        .collect();
    // Secrets by where they came from, never by value.
    let secrets: Vec<_> = loaded
        .secrets
        .iter()
        .map(|o| json!({ "key": o.path, "value": snowpatrol_store::REDACTED, "from": o.origin }))
        .collect();
    let report = json!({
        "ok": true,
        "file": loaded.file_display(),
        "database": database,
        "health_addr": s.server.health_addr.to_string(),
        "data_dir": s.data_dir().display().to_string(),
        "source": source,
        "alerts": slack,
        "secrets": secrets,
        "jobs": list,
    });
    print(json, &report, || {
        let mut out = format!(
            "configuration OK: {}\ndatabase: {database}\nhealth: {}\nsource: {source}\nalerts: {slack}\nsecrets:",
            loaded.file_display(),
            s.server.health_addr
        );
        if loaded.secrets.is_empty() {
            out.push_str(" (none)");
        }
        for o in &loaded.secrets {
            out.push_str(&format!(
                "\n  {}: {} (from {})",
                o.path,
                snowpatrol_store::REDACTED,
                o.origin
            ));
        }
        out.push_str("\njobs:");
        if jobs.jobs.is_empty() {
            out.push_str(" (none)");
        }
        for j in jobs.jobs.values() {
            out.push_str(&format!("\n  {}: {}", j.name(), j.schedule_text()));
        }
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `token` on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
fn spawn_signal_watcher(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => info!("received SIGTERM; shutting down"),
                        _ = tokio::signal::ctrl_c() => info!("received SIGINT; shutting down"),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process gracefully");
                    let _ = tokio::signal::ctrl_c().await;
                    info!("received SIGINT; shutting down");
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            info!("received Ctrl-C; shutting down");
        }
        token.cancel();
    });
}

async fn daemon(loaded: LoadedConfig) -> anyhow::Result<ExitCode> {
    let s = &loaded.settings;
    let shutdown = CancellationToken::new();
    spawn_signal_watcher(shutdown.clone());
    info!(config = %loaded.file_display(), "snowpatrol daemon starting");
    // Refuse a dangerous file before waiting for the database: the same checks as `config check`.
    validate(&loaded).await?;
    // The probes answer from here on: alive while the daemon waits for the database or migrates it, ready
    // (and the Slack endpoint served) once it runs.
    let listener = tokio::net::TcpListener::bind(s.server.health_addr)
        .await
        .with_context(|| {
            format!(
                "binding the health/metrics address {} ([server] health_addr)",
                s.server.health_addr
            )
        })?;
    let metrics = Arc::new(snowpatrol_engine::metrics::Metrics::new());
    metrics.register(crate::process_metrics::register);
    let http = server::HttpState::new(metrics.clone());
    let server_stop = CancellationToken::new();
    let server_task = tokio::spawn(server::serve(
        listener,
        server::router(http.clone()),
        server_stop.clone(),
    ));
    info!(addr = %s.server.health_addr, "serving /healthz, /readyz and /metrics");
    let result = daemon_until_stopped(&loaded, &http, metrics, shutdown).await;
    // Probes keep answering while the engine drains; the server stops last.
    server_stop.cancel();
    match server_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "health server stopped with an error"),
        Err(e) => warn!(error = %e, "health server task failed"),
    }
    result?;
    info!("snowpatrol daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// The daemon behind its probes: connect (waiting for the database), migrate, run until `shutdown`.
async fn daemon_until_stopped(
    loaded: &LoadedConfig,
    http: &server::HttpState,
    metrics: Arc<snowpatrol_engine::metrics::Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let s = &loaded.settings;
    let db = tokio::select! {
        db = connect(s, true) => db?,
        _ = shutdown.cancelled() => {
            info!("stopped before the database was reachable");
            return Ok(());
        }
    };
    info!(database = %db.url_redacted(), backend = db.backend_name(), "database connected");
    if s.database.migrate_on_start {
        snowpatrol_pipeline::migrate(&db)
            .await
            .with_context(|| format!("migrating {} on start", db.url_redacted()))?;
        info!("migrations applied");
    } else if !snowpatrol_pipeline::schema_ready(&db)
        .await
        .context("checking the schema")?
    {
        bail!(
            "the database {} is not migrated and [database] migrate_on_start is false: run `snowpatrol migrate`",
            db.url_redacted()
        );
    }
    let (jobs, pipeline) = build_jobs(loaded, &db, true)?;
    let job_names: Vec<String> = jobs.jobs.keys().cloned().collect();
    metrics.init_jobs(job_names.iter().map(String::as_str));
    let engine = Engine::new(db.clone(), jobs, s.scheduler.clone())
        .context("starting the engine")?
        .with_metrics(metrics)
        .with_failure_hook(pipeline.failure_hook());
    let routes = pipeline.slack_signing_secret().is_some().then(|| {
        info!(addr = %s.server.health_addr, "serving Slack feedback at POST /slack/interactivity");
        crate::slack_feedback::router(pipeline.clone())
    });
    http.set_ready(server::Ready {
        db: db.clone(),
        jobs: job_names,
        store: pipeline.store.clone(),
        routes,
    });
    // Alerts are delivered by the outbox sender, off the runs' critical path: woken by every enqueue, retrying
    // with backoff, taking over the claims of replicas that died. On shutdown it finishes the attempt in
    // flight and hands back the rest.
    let outbox = tokio::spawn(pipeline.clone().outbox_sender_loop(shutdown.clone()));
    let result = engine.run_daemon(shutdown.clone()).await;
    let _ = outbox.await;
    db.close().await;
    result.context("the scheduler stopped with an error")
}

/// The demo prints its own story; only warnings and errors are logged.
fn init_demo_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
