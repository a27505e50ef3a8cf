//! `snowpatrol`: the command line and the daemon. This is the edge of the program: errors become messages a
//! person can act on and a non-zero exit code, never a panic.

mod app;
mod commands;
mod examples;
mod output;
mod process_metrics;
mod server;
mod settings;
mod slack_feedback;

use clap::{Parser, Subcommand};
use settings::LogFormat;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code of `snowpatrol run` when the run finished but did not succeed.
pub const EXIT_RUN_FAILED: u8 = 3;
/// Exit code for configuration errors (bad TOML, bad schedule, unknown dataset, ...).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for every other error (database unreachable, unknown job, bad parameter, ...).
pub const EXIT_ERROR: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "snowpatrol",
    version,
    about = "Finds anomalous Snowflake spend and tells people about it."
)]
pub struct Cli {
    /// Configuration file (default: config/snowpatrol.toml if it exists, else built-in defaults).
    #[arg(long, global = true, env = "SNOWPATROL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr (overrides `[logging] format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// What the command line asks for. The commands that need no configuration and no database come first, so a
/// missing or broken configuration cannot stop them.
#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Offline(OfflineCommand),
    #[command(flatten)]
    Configured(ConfiguredCommand),
}

#[derive(Subcommand, Debug)]
pub enum OfflineCommand {
    /// Zero-setup demo: embedded SQLite, synthetic warehouses, the real daemon running prep -> train -> predict.
    Demo,
    /// Walk-forward evaluation of a detection model over a metering CSV export (no database, no config).
    Backtest(commands::BacktestArgs),
    /// Write a seeded synthetic metering.csv and labels.csv, to try `backtest` without Snowflake.
    Synth(commands::SynthArgs),
}

#[derive(Subcommand, Debug)]
pub enum ConfiguredCommand {
    /// Run the scheduler and workers until SIGTERM/SIGINT; serves /healthz, /readyz and /metrics.
    Daemon,
    /// Run a job now in this process (recorded like any run); exits non-zero when the run fails.
    Run {
        job: String,
        /// Parameter override NAME=VALUE, checked against the declared type (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Queue a manual run for the daemon to execute.
    Trigger {
        job: String,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Queue runs of a cron job for every past tick from --from to --to (logical times); the daemon starts them
    /// oldest first within max_active_runs. Ticks that have a run already keep it.
    Backfill {
        job: String,
        /// First logical time: 2025-06-01, 2025-06-01T06:00:00Z or an age (7d).
        #[arg(long, value_name = "WHEN", value_parser = output::parse_when)]
        from: chrono::DateTime<chrono::Utc>,
        /// Last logical time, not in the future (same forms as --from).
        #[arg(long, value_name = "WHEN", value_parser = output::parse_when)]
        to: chrono::DateTime<chrono::Utc>,
        /// Parameter override NAME=VALUE for every run, checked against the declared type (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Cancel a queued or running run; its running tries stop at their next heartbeat.
    Cancel {
        run_id: i64,
        /// Why, recorded as the run's error.
        #[arg(long, default_value = "cancelled by an operator")]
        reason: String,
    },
    /// Run a started run's failed and cancelled task instances again (or every instance of the tasks named with
    /// --task), each with a new try; their downstream tasks are planned afresh and a finished run runs again.
    Clear {
        run_id: i64,
        /// Rerun this task, whatever its state (repeatable); without it, the failed and cancelled instances.
        #[arg(long = "task", value_name = "TASK")]
        tasks: Vec<String>,
        /// Why, recorded in the run's and the instances' note.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Set a run's state by hand, or with --task the state of a task's instances (then the run is re-planned:
    /// a task marked success lets its skipped downstream run). No outlet event is emitted for marked work.
    Mark {
        run_id: i64,
        #[arg(long, value_enum)]
        state: commands::MarkState,
        /// Mark this task's instances instead of the run.
        #[arg(long)]
        task: Option<String>,
        /// With --task: only the instance with this map key (e.g. ACME_PROD.COMPUTE_WH).
        #[arg(long)]
        key: Option<String>,
        /// Why, recorded in the note.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The log lines captured from a run's task tries (all tasks, or TASK), oldest first.
    Logs {
        run_id: i64,
        task: Option<String>,
        /// Keep printing new lines until the run finishes.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Record an external dataset event (queues runs of jobs scheduled on the dataset).
    Emit {
        dataset: String,
        /// JSON payload stored with the event.
        #[arg(long)]
        extra: Option<String>,
        /// Record the event although no configured job produces or subscribes to the dataset (a subscriber
        /// added later does not see it: events queue only for the jobs subscribed when they are recorded).
        #[arg(long)]
        allow_unknown: bool,
    },

    /// List recent runs.
    Runs(RunsArgs),
    /// Lineage. `lineage RUN`: the dataset events a run consumed (what triggered it) and the ones it produced.
    /// `lineage anomaly ID` / `lineage incident ID`: from a prediction back to its data (predict run, model
    /// version, training run and its events, the prep runs that loaded the training and scored data).
    Lineage {
        /// A run id, or `anomaly` or `incident`.
        what: String,
        /// The anomaly's (day's) or incident's id, after `anomaly` or `incident`.
        id: Option<i64>,
    },
    /// List the task instances of a run.
    Tasks { run_id: i64 },
    /// List recent dataset events.
    Events {
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Explain why a job will or will not run: condition leaves, pending events, max_active_runs, next cron tick.
    Explain { job: String },
    /// List jobs with their schedule and paused state.
    Jobs,
    /// Pause a job: no new cron or dataset runs (events keep queueing and are consumed after unpause).
    Pause { job: String },
    /// Unpause a job.
    Unpause { job: String },
    /// Apply database migrations.
    Migrate,
    /// Model versions per warehouse (version, kind, aliases, threshold, training window, training run).
    Models {
        /// WAREHOUSE (every account) or ACCOUNT.WAREHOUSE.
        #[arg(long, value_name = "W")]
        warehouse: Option<String>,
    },

    /// Incidents found by predict (runs of anomalous days per warehouse); `--days` lists the days;
    /// `anomalies ack ID --reason R` acknowledges an incident.
    Anomalies(commands::AnomaliesArgs),
    /// Where an incident's alert went (or goes), by which route, and why not elsewhere ([pipeline.alerts]).
    ExplainAlert {
        /// Incident id (first column of `snowpatrol anomalies`).
        incident: i64,
    },
    /// The alert outbox: what was sent (or written to files), what is pending, what failed.
    Alerts {
        /// Only alerts still waiting to be delivered.
        #[arg(long)]
        pending: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `snowpatrol runs`.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[arg(long)]
    pub job: Option<String>,
    /// queued, running, success, failed or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// Runs whose logical time is at or after this: 2025-06-28T06:00:00Z, 2025-06-28 or an age (36h, 7d).
    #[arg(long, value_name = "WHEN", value_parser = output::parse_when)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Runs whose logical time is before this (same forms as --since).
    #[arg(long, value_name = "WHEN", value_parser = output::parse_when)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The newest this many runs (at least 1).
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration (syntax, types, schedules, datasets, cycles) without touching the database.
    Check,
}

fn main() -> ExitCode {
    // Two TLS stacks (sqlx/reqwest and the Snowflake/Slack clients) pull in rustls providers; without an
    // explicit choice rustls panics at the first handshake.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // The reader of our stdout went away (`| head`): nothing more to say, and nobody to say it to.
            if e.downcast_ref::<output::StdoutClosed>().is_some() {
                return ExitCode::SUCCESS;
            }
            if let Some(p) = e.downcast_ref::<settings::ConfigProblems>() {
                eprintln!("error: invalid configuration\n{p}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
