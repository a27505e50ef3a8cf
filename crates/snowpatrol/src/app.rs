//! How the application is put together: configuration to database, jobs, pipeline and engine. One wiring for
//! every process: the daemon, the demo and the one-shot commands build the same [`App`], so what the demo shows
//! is what the daemon runs.

use crate::examples;
use crate::settings::{self, LoadedConfig, LogFormat, Settings};
use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use snowpatrol_engine::metrics::Metrics;
use snowpatrol_engine::{CancellationToken, ConfigErrors, ConfigIssue, Engine, Jobs, resolve_jobs};
use snowpatrol_pipeline::Pipeline;
use snowpatrol_store::{Database, redact_url};
use std::sync::Arc;
use tracing::{info, warn};

/// The engine with its jobs and the pipeline they run, on one database.
pub(crate) struct App {
    /// Shared with the HTTP API, which triggers and operates runs through it.
    pub(crate) engine: Arc<Engine>,
    pub(crate) pipeline: Arc<Pipeline>,
}

impl App {
    /// Jobs, pipeline and engine on `db` (the daemon registers the jobs when it starts). `with_sources`
    /// builds the metering source and Slack (reading their credentials); commands that only inspect or queue
    /// jobs go without, so they work on a machine that has no credentials. `metrics`: the daemon's registry.
    pub(crate) async fn build(
        loaded: &LoadedConfig,
        db: Database,
        with_sources: bool,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<Self> {
        let (jobs, pipeline) = build_jobs(loaded, &db, with_sources)?;
        let mut engine = Engine::new(db, jobs, loaded.settings.scheduler.clone())
            .context("starting the engine")?
            .with_failure_hook(pipeline.failure_hook());
        if let Some(metrics) = metrics {
            metrics.init_jobs(engine.jobs().jobs.keys().map(String::as_str));
            engine = engine.with_metrics(metrics);
        }
        Ok(Self {
            engine: Arc::new(engine),
            pipeline,
        })
    }

    /// [`App::build`] on the configured database, made ready first (see [`open_ready`]), with the jobs
    /// registered so the runs and events a one-shot command records refer to them.
    pub(crate) async fn open(loaded: &LoadedConfig, with_sources: bool) -> anyhow::Result<Self> {
        let db = open_ready(&loaded.settings).await?;
        let app = Self::build(loaded, db, with_sources, None).await?;
        app.register_jobs().await?;
        Ok(app)
    }

    pub(crate) async fn register_jobs(&self) -> anyhow::Result<()> {
        self.engine
            .register_jobs()
            .await
            .context("registering jobs in the database")
    }

    pub(crate) fn jobs(&self) -> &Jobs {
        self.engine.jobs()
    }

    /// Runs the scheduler and workers until `shutdown`, with the alert outbox sender beside them: alerts are
    /// delivered off the runs' critical path, woken by every enqueue, retried with backoff, taking over the
    /// claims of replicas that died. On shutdown the sender finishes the attempt in flight and hands back the
    /// rest.
    pub(crate) async fn serve(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let outbox = tokio::spawn(self.pipeline.clone().outbox_sender_loop(shutdown.clone()));
        let result = self.engine.run_daemon(shutdown).await;
        let _ = outbox.await;
        result.context("the scheduler stopped with an error")
    }
}

/// Opens the configured database. `retry` is for the daemon, which must survive a database that starts later.
pub(crate) async fn connect(settings: &Settings, retry: bool) -> anyhow::Result<Database> {
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
pub(crate) async fn open_existing(settings: &Settings) -> anyhow::Result<Database> {
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
pub(crate) async fn open_ready(settings: &Settings) -> anyhow::Result<Database> {
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

/// The job set (the pipeline's jobs, plus the examples when enabled, validated against `[jobs.*]`) and the
/// pipeline; see [`App::build`] for `with_sources`.
pub(crate) fn build_jobs(
    loaded: &LoadedConfig,
    db: &Database,
    with_sources: bool,
) -> anyhow::Result<(Jobs, Arc<Pipeline>)> {
    let s = &loaded.settings;
    // Every problem at once, located in the file: the pipeline's settings, the scheduler's and the job tables
    // (both in `resolve_jobs`), before any source or secret is touched.
    let mut issues = s.pipeline.problems();
    for (i, uri) in s.datasets.external.iter().enumerate() {
        if uri.trim().is_empty() || uri.trim() != uri {
            issues.push(snowpatrol_engine::ConfigIssue {
                path: format!("datasets.external[{i}]"),
                message: format!(
                    "{uri:?} is not a dataset URI (e.g. \"s3://bucket/exports/ready\")"
                ),
            });
        }
    }
    if with_sources {
        add_task_process_problems(loaded, db, &mut issues);
    }
    if !issues.is_empty() {
        return Err(with_job_problems(loaded, db, issues));
    }
    let pipeline = if with_sources {
        match Pipeline::new(db.clone(), s.pipeline.clone(), s.data_dir()) {
            Ok(p) => p,
            Err(snowpatrol_pipeline::PipelineError::Source(e)) => {
                // With the job and scheduler problems too, so one `config check` lists them all.
                return Err(with_job_problems(loaded, db, vec![source_issue(&e)]));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context("setting up the pipeline ([pipeline])"));
            }
        }
    } else {
        Pipeline::definitions_only(db.clone(), s.pipeline.clone(), s.data_dir())
    };
    let jobs = resolve_job_set(loaded, &pipeline).map_err(|e| loaded.locate(&e.0))?;
    Ok((jobs, pipeline))
}

/// The problems of what a process that runs tasks needs beyond the settings (a usable data directory, the
/// deferred secrets), added to `issues`.
fn add_task_process_problems(loaded: &LoadedConfig, db: &Database, issues: &mut Vec<ConfigIssue>) {
    let s = &loaded.settings;
    // Processes that run tasks write models, reports and alerts there, and need the secrets of the
    // sources and alerts they build.
    if let Some(message) = settings::data_dir_problem(&s.data_dir()) {
        issues.push(ConfigIssue {
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
        // in the same list; without the other problems `Pipeline::new` in `build_jobs` reports them.
        let mut without_slack = s.pipeline.clone();
        without_slack.slack = None;
        if let Err(snowpatrol_pipeline::PipelineError::Source(e)) =
            Pipeline::new(db.clone(), without_slack, s.data_dir())
        {
            issues.push(source_issue(&e));
        }
    }
}

/// The error listing `issues` and the problems of the job and scheduler tables, located in the file.
fn with_job_problems(
    loaded: &LoadedConfig,
    db: &Database,
    mut issues: Vec<ConfigIssue>,
) -> anyhow::Error {
    let s = &loaded.settings;
    let defs = Pipeline::definitions_only(db.clone(), s.pipeline.clone(), s.data_dir());
    if let Err(e) = resolve_job_set(loaded, &defs) {
        issues.extend(e.0);
    }
    loaded.locate(&issues).into()
}

/// The jobs `pipeline` defines, plus the examples when enabled, resolved against `[jobs.*]` and `[scheduler]`.
fn resolve_job_set(loaded: &LoadedConfig, pipeline: &Arc<Pipeline>) -> Result<Jobs, ConfigErrors> {
    let s = &loaded.settings;
    let mut registry = pipeline.registry();
    for uri in &s.datasets.external {
        registry.external_dataset(uri);
    }
    let mut configs = s.jobs.clone();
    if s.examples.enabled {
        examples::register(&mut registry);
        examples::default_configs(&mut configs);
    }
    resolve_jobs(&registry, &configs, &s.scheduler)
}

/// A metering source's problem as a config issue, at the key that causes it when the source says which.
pub(crate) fn source_issue(e: &snowpatrol_sources::SourceError) -> snowpatrol_engine::ConfigIssue {
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

/// The validation of `config check`, run before the daemon or `run` touches the database: the same file is
/// refused by all three, with every problem listed at once.
pub(crate) async fn validate(loaded: &LoadedConfig) -> anyhow::Result<(Jobs, Arc<Pipeline>)> {
    // Validation needs no real database: the pipeline only keeps the handle, so an in-memory one stands in.
    let scratch = Database::connect("sqlite::memory:")
        .await
        .context("opening a scratch in-memory database")?;
    let built = build_jobs(loaded, &scratch, true)?;
    scratch.close().await;
    Ok(built)
}

/// Cancels `token` on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
pub(crate) fn spawn_signal_watcher(token: CancellationToken) {
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

pub(crate) fn init_logging(
    settings: &Settings,
    cli_format: Option<LogFormat>,
) -> anyhow::Result<()> {
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
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // `[logging] level` filters what is printed only; task logs have their own level (`[scheduler]
    // task_log_level`), so a daemon printing warnings still keeps each try's info lines.
    let fmt = match cli_format.unwrap_or(settings.logging.format) {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(
            snowpatrol_engine::TaskLogLayer::from_settings(&settings.scheduler).with_filter(
                tracing_subscriber::filter::LevelFilter::from_level(
                    snowpatrol_engine::TaskLogLayer::level(&settings.scheduler),
                ),
            ),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// The demo prints its own story; only warnings and errors are logged.
pub(crate) fn init_demo_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
