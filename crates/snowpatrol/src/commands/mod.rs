//! One function per subcommand, grouped by what they work on; [`run`] picks the one the command line names
//! (ripgrep's shape: `main` parses, this module dispatches, each mode is a documented function). Every path
//! returns `anyhow` errors with context; `main` prints them.

mod backtest;
mod config;
mod daemon;
mod demo;
mod history;
mod incidents;
mod jobs;
mod operations;

use crate::app::{init_demo_logging, init_logging, open_existing, triggered_by};
use crate::output::{self, outln};
use crate::settings::{self, LoadedConfig};
use crate::{Cli, Command, ConfigCommand, ConfiguredCommand, OfflineCommand};
use std::process::ExitCode;

pub use backtest::{BacktestArgs, SynthArgs};
pub use incidents::AnomaliesArgs;
pub use operations::MarkState;

/// Runs the command the command line names.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        config,
        json,
        log_format,
        command,
    } = cli;
    match command {
        Command::Offline(command) => {
            // These print their own story; only warnings and errors are logged.
            init_demo_logging();
            run_offline(command, json).await
        }
        Command::Configured(command) => {
            let loaded = settings::load(config.as_deref())?;
            init_logging(&loaded.settings, log_format)?;
            run_configured(command, &loaded, json).await
        }
    }
}

/// Commands that need no configuration and no database: a missing or broken configuration must not stop them.
async fn run_offline(command: OfflineCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        OfflineCommand::Demo => demo::demo(json).await,
        OfflineCommand::Backtest(args) => backtest::backtest(&args, json),
        OfflineCommand::Synth(args) => backtest::synth(&args, json),
    }
}

async fn run_configured(
    command: ConfiguredCommand,
    loaded: &LoadedConfig,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use ConfiguredCommand as C;
    match command {
        C::Config {
            command: ConfigCommand::Check,
        } => config::check(loaded, json).await,
        C::Migrate => config::migrate(loaded, json).await,
        C::Daemon => daemon::daemon(loaded).await,
        C::Runs(args) => history::runs(loaded, json, args).await,
        C::Lineage { what, id } => history::lineage_of(loaded, json, &what, id).await,
        C::Tasks { run_id } => history::tasks(loaded, json, run_id).await,
        C::Events { dataset, limit } => history::events(loaded, json, dataset, limit).await,
        C::Run { job, params } => jobs::run(loaded, json, job, params).await,
        C::Trigger { job, params } => jobs::trigger(loaded, json, job, params).await,
        C::Backfill {
            job,
            from,
            to,
            params,
        } => jobs::backfill(loaded, json, &job, (from, to), &params).await,
        C::Cancel { run_id, reason } => jobs::cancel(loaded, json, run_id, &reason).await,
        C::Clear {
            run_id,
            tasks,
            reason,
        } => operations::clear(loaded, json, run_id, tasks, &reason).await,
        C::Mark {
            run_id,
            state,
            task,
            key,
            reason,
        } => operations::mark(loaded, json, run_id, state, task, key, &reason).await,
        C::Logs {
            run_id,
            task,
            follow,
        } => operations::logs(loaded, json, run_id, task, follow).await,
        C::Emit {
            dataset,
            extra,
            allow_unknown,
        } => jobs::emit(loaded, json, dataset, extra, allow_unknown).await,
        C::Explain { job } => jobs::explain(loaded, json, job).await,
        C::Jobs => jobs::jobs(loaded, json).await,
        C::Pause { job } => jobs::set_paused(loaded, json, &job, true).await,
        C::Unpause { job } => jobs::set_paused(loaded, json, &job, false).await,
        C::Models { warehouse } => {
            let db = open_existing(&loaded.settings).await?;
            incidents::models(&db, warehouse.as_deref(), json).await
        }
        C::Anomalies(args) => {
            let db = open_existing(&loaded.settings).await?;
            let currency = loaded.settings.pipeline.currency.as_deref();
            incidents::anomalies(
                &db,
                args.command,
                args.view,
                &triggered_by(),
                json,
                currency,
            )
            .await
        }
        C::ExplainAlert { incident } => {
            let db = open_existing(&loaded.settings).await?;
            incidents::explain_alert(&db, &loaded.settings.pipeline, incident, json).await
        }
        C::Alerts { pending, limit } => {
            let db = open_existing(&loaded.settings).await?;
            incidents::alerts(&db, pending, limit, json).await
        }
    }
}

/// Prints `value` as JSON with `--json`, else the text `text` makes.
pub(crate) fn print<T: serde::Serialize>(
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
