//! The Snowpatrol product: `prep` → `train` → `predict` jobs on the engine, chained by dataset events.
//!
//! - `prep` (cron): extract hourly metering, validate, replace the window, aggregate days, decompose; emits
//!   [`FEATURES_DATASET`].
//! - `train` (on features): fan out per warehouse; KS drift gate; train, register a version, move `latest`;
//!   emits [`MODELS_DATASET`] once per run with counts.
//! - `predict` (on models): fan out per warehouse; score recent days with `latest`; record anomalies; then one
//!   `report` task (all_done) writes the Markdown report and charts and queues alerts for NEW incidents only,
//!   which the daemon's outbox sender delivers ([`alerts`]).

pub mod alerts;
pub mod config;
pub mod jobs;
pub mod lineage;
pub mod metrics;
mod report;
mod root_causes;
pub mod routing;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    CreditPrices, PipelineConfig, PredictSettings, PrepConfig, RootCauseSettings, SlackSettings,
    SourceConfig, TrainSettings,
};
pub use store::PipelineStore;
pub use store::migrations::{PIPELINE as PIPELINE_MIGRATIONS, migrate, schema_ready};

use chrono::NaiveDate;
use snowpatrol_alert::{SlackConfig, SlackNotifier};
use snowpatrol_detect::AnomalyLabel;
use snowpatrol_detect::synthetic::SyntheticConfig;
use snowpatrol_engine::{FailureHook, JobRegistry};
use snowpatrol_sources::{
    ContextSource, CsvSource, MeteringSource, SnowflakeSource, SyntheticSource,
};
use snowpatrol_store::Database;
use std::path::PathBuf;
use std::sync::Arc;

pub const FEATURES_DATASET: &str = "snowpatrol://features/daily";
pub const MODELS_DATASET: &str = "snowpatrol://models/latest";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] snowpatrol_store::StoreError),
    #[error(transparent)]
    Source(#[from] snowpatrol_sources::SourceError),
    #[error(transparent)]
    Alert(#[from] snowpatrol_alert::AlertError),
}

/// Shared state of the pipeline's tasks.
pub struct Pipeline {
    pub db: Database,
    pub store: PipelineStore,
    pub config: PipelineConfig,
    pub data_dir: PathBuf,
    source: Arc<dyn MeteringSource>,
    /// Root causes, tags and prices (a Snowflake source only).
    context: Option<Arc<dyn ContextSource>>,
    /// Last day the source has complete data for (synthetic sources end on a fixed day).
    data_end: Option<NaiveDate>,
    labels: Option<Vec<AnomalyLabel>>,
    slack: Option<(SlackNotifier, String)>,
    outbox: alerts::Outbox,
}

impl Pipeline {
    pub fn new(
        db: Database,
        config: PipelineConfig,
        data_dir: PathBuf,
    ) -> Result<Arc<Self>, PipelineError> {
        let MeteringInput {
            source,
            context,
            data_end,
            labels,
        } = metering_input(&config.source)?;
        let slack = config.slack.as_ref().map(slack_delivery).transpose()?;
        let problems = config.problems();
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(PipelineError::Config(text.join("; ")));
        }
        Ok(Arc::new(Self {
            store: PipelineStore::new(db.clone()),
            db,
            config,
            data_dir,
            source,
            context,
            data_end,
            labels,
            slack,
            outbox: alerts::Outbox::new(),
        }))
    }

    /// The jobs' definitions without building sources or Slack (no credentials read): for commands that only
    /// inspect or queue jobs (`explain`, `jobs`, `trigger`, ...). Running a task of it fails with a clear error.
    pub fn definitions_only(db: Database, config: PipelineConfig, data_dir: PathBuf) -> Arc<Self> {
        let data_end = match &config.source {
            SourceConfig::Synthetic { end, .. } => *end,
            _ => None,
        };
        Arc::new(Self {
            store: PipelineStore::new(db.clone()),
            db,
            config,
            data_dir,
            source: Arc::new(NoSource),
            context: None,
            data_end,
            labels: None,
            slack: None,
            outbox: alerts::Outbox::new(),
        })
    }

    /// Slack delivery, or None when alerts go to files under the data directory.
    pub fn slack(&self) -> Option<&(SlackNotifier, String)> {
        self.slack.as_ref()
    }

    /// The default Slack channel alerts go to, or None when alerts are written to files.
    pub fn slack_channel(&self) -> Option<&str> {
        self.slack.as_ref().map(|(_, channel)| channel.as_str())
    }

    pub fn source_description(&self) -> String {
        self.source.describe()
    }

    /// Labels of the synthetic source, for scoring the demo's findings.
    pub fn labels(&self) -> Option<&[AnomalyLabel]> {
        self.labels.as_deref()
    }

    /// The jobs `prep`, `train` and `predict`.
    pub fn registry(self: &Arc<Self>) -> JobRegistry {
        jobs::registry(self)
    }

    pub fn failure_hook(self: &Arc<Self>) -> Arc<dyn FailureHook> {
        Arc::new(alerts::FailureAlerts(self.clone()))
    }

    /// Last complete day of source data.
    /// The newest day to load and score: a fixed end for sources that have one, else the last UTC day that
    /// ended at least `[pipeline.prep] complete_after` ago.
    pub fn data_end(&self) -> NaiveDate {
        self.data_end.unwrap_or_else(|| {
            last_complete_day(chrono::Utc::now(), self.config.prep.complete_after)
        })
    }
}

/// The metering source `[pipeline.source]` configures, with what a synthetic one knows besides its rows.
struct MeteringInput {
    source: Arc<dyn MeteringSource>,
    /// The same Snowflake connection as context source (root causes, tags, prices).
    context: Option<Arc<dyn ContextSource>>,
    /// Last day the source has complete data for (synthetic sources end on a fixed day).
    data_end: Option<NaiveDate>,
    /// The anomalies a synthetic source planted.
    labels: Option<Vec<AnomalyLabel>>,
}

/// Builds the configured metering source.
fn metering_input(config: &SourceConfig) -> Result<MeteringInput, PipelineError> {
    let mut data_end = None;
    let mut labels = None;
    let mut context: Option<Arc<dyn ContextSource>> = None;
    let source: Arc<dyn MeteringSource> = match config {
        SourceConfig::Snowflake { snowflake } => {
            let src = Arc::new(SnowflakeSource::new((**snowflake).clone())?);
            context = Some(src.clone());
            src
        }
        SourceConfig::Csv { path } => {
            // Opened now, so `config check` reports a missing or unreadable export at its line instead of
            // the first prep run failing.
            if let Err(e) = std::fs::File::open(path) {
                return Err(PipelineError::Source(
                    snowpatrol_sources::SourceError::Setting {
                        key: "path",
                        message: format!("cannot open the CSV export {}: {e}", path.display()),
                    },
                ));
            }
            Arc::new(CsvSource::new(path.clone()))
        }
        SourceConfig::Synthetic {
            seed,
            warehouses,
            days,
            end,
        } => {
            let end = end.unwrap_or_else(|| chrono::Utc::now().date_naive() - chrono::Days::new(1));
            let src = SyntheticSource::new(SyntheticConfig {
                seed: *seed,
                warehouses: *warehouses,
                days: *days,
                end,
                ..SyntheticConfig::default()
            });
            data_end = Some(end);
            labels = Some(src.labels().to_vec());
            Arc::new(src)
        }
    };
    Ok(MeteringInput {
        source,
        context,
        data_end,
        labels,
    })
}

/// The Slack notifier `[pipeline.slack]` configures, with its default channel.
fn slack_delivery(s: &SlackSettings) -> Result<(SlackNotifier, String), PipelineError> {
    // The variable named by `token_env` wins (as `SNOWPATROL_DATABASE_URL` does for the database),
    // then the token the settings resolved (TOML, its environment override or a file).
    let from_env = std::env::var(&s.token_env)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let token = match (&s.token, from_env) {
        (Some(t), None) => t.clone(),
        _ => SlackConfig::token_from_env_or_file(&s.token_env, s.token_file.as_deref())?,
    };
    let mut cfg = SlackConfig::new(s.channel.clone(), token);
    cfg.api_url = s.api_url.clone();
    cfg.max_attempts = s.max_attempts;
    cfg.request_timeout = s.request_timeout;
    cfg.initial_backoff = s.initial_backoff;
    cfg.max_backoff = s.max_backoff;
    Ok((SlackNotifier::new(cfg)?, s.channel.clone()))
}

/// The last UTC day that ended at least `complete_after` before `now`.
pub fn last_complete_day(
    now: chrono::DateTime<chrono::Utc>,
    complete_after: std::time::Duration,
) -> NaiveDate {
    let lag = chrono::Duration::from_std(complete_after).unwrap_or(chrono::Duration::zero());
    (now - lag).date_naive() - chrono::Days::new(1)
}

/// The source of a definitions-only pipeline.
struct NoSource;

#[async_trait::async_trait]
impl MeteringSource for NoSource {
    async fn fetch(
        &self,
        _from: chrono::DateTime<chrono::Utc>,
        _to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<snowpatrol_detect::MeteringRow>, snowpatrol_sources::SourceError> {
        Err(snowpatrol_sources::SourceError::Config(
            "this process was started for a read-only command and has no metering source; run prep with `snowpatrol run prep` or the daemon".into(),
        ))
    }
    fn describe(&self) -> String {
        "none (definitions only)".into()
    }
}

#[cfg(test)]
mod complete_day_tests {
    use super::*;
    use chrono::TimeZone;

    /// With a 6 h lag the day before is complete from 06:00 UTC on; before that, the day before it.
    #[test]
    fn a_day_is_complete_only_after_the_lag() {
        let six = std::time::Duration::from_secs(6 * 3600);
        let at = |h, m| chrono::Utc.with_ymd_and_hms(2025, 3, 10, h, m, 0).unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2025, 3, d).unwrap();
        assert_eq!(last_complete_day(at(5, 59), six), day(8));
        assert_eq!(last_complete_day(at(6, 0), six), day(9));
        assert_eq!(last_complete_day(at(23, 0), six), day(9));
        assert_eq!(
            last_complete_day(at(0, 30), std::time::Duration::ZERO),
            day(9)
        );
    }
}
