//! `[pipeline]` settings: where metering comes from, how models train and score, where alerts go.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use snowpatrol_detect::model::{DefaultRuleConfig, ModelKind};
use snowpatrol_engine::ConfigIssue;
use snowpatrol_sources::SnowflakeConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub prep: PrepConfig,
    pub train: TrainSettings,
    pub predict: PredictSettings,
    pub slack: Option<SlackSettings>,
    /// Price of one credit in your contract currency; adds a cost column to reports and enables the default
    /// model's money gate (`detection.min_excess_cost`).
    pub price_per_credit: Option<f64>,
    /// `[pipeline.detection]`: the default model's knobs (false-alarm budget, materiality, holiday calendar).
    pub detection: DefaultRuleConfig,
    /// `[pipeline.alerts]`: which channel hears about which incident (routes with globs, minimums, mutes).
    pub alerts: crate::routing::AlertRouting,
    /// Currency code shown beside money (`USD`, `EUR`, ...). With `credit_prices = "snowflake"` the contract
    /// currency from `USAGE_IN_CURRENCY_DAILY` is used instead.
    pub currency: Option<String>,
    /// Where the price of a credit comes from: `config` (`price_per_credit`) or `snowflake` (the effective rate
    /// per account and day in `ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY`, read by prep; `price_per_credit`,
    /// when set, covers days the view has no rate for yet).
    pub credit_prices: CreditPrices,
    /// `[pipeline.root_cause]`: what predict looks up about each anomalous day.
    pub root_cause: RootCauseSettings,
}

/// Where the price of a credit comes from (`[pipeline] credit_prices`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditPrices {
    #[default]
    Config,
    Snowflake,
}

/// `[pipeline.root_cause]`: the root-cause lookup of predict's `root_causes` task.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RootCauseSettings {
    /// Look up queries, users, roles, query tags and warehouse events in Snowflake's ACCOUNT_USAGE views (a
    /// Snowflake source only; needs the grants in docs/alerts.md). The hourly shape of the day is always
    /// computed from the loaded metering.
    pub snowflake: bool,
    /// Anomalous days looked up per run at most (the largest by excess first); the rest wait for the next run.
    pub max_days: usize,
    /// Days before an anomalous day whose hourly median is its usual curve.
    pub usual_days: u32,
}

impl Default for RootCauseSettings {
    fn default() -> Self {
        Self {
            snowflake: true,
            max_days: 300,
            usual_days: 28,
        }
    }
}

impl PipelineConfig {
    /// Every semantic problem of the `[pipeline]` tables at once, by key path (the CLI adds FILE:LINE).
    pub fn problems(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let a = self.train.drift_alpha;
        if !(a > 0.0 && a < 1.0) {
            out.push(ConfigIssue {
                path: "pipeline.train.drift_alpha".into(),
                message: format!("must be between 0 and 1 (exclusive), got {a}"),
            });
        }
        // The defaults of prep's `reread_days` and `backfill_days` params: refused here, at their own lines,
        // rather than clamped to 1 when a run reads them.
        for (key, v) in [
            ("reread_days", self.prep.reread_days),
            ("backfill_days", self.prep.backfill_days),
        ] {
            if v < 1 {
                out.push(ConfigIssue {
                    path: format!("pipeline.prep.{key}"),
                    message: format!("must be at least 1, got {v}"),
                });
            }
        }
        // A route's money minimum needs some price: the configured one, or Snowflake's rates.
        let money_known = self
            .price_per_credit
            .or((self.credit_prices == CreditPrices::Snowflake).then_some(1.0));
        out.extend(self.alerts.problems(money_known));
        if let Some(p) = self.price_per_credit
            && !(p.is_finite() && p > 0.0)
        {
            out.push(ConfigIssue {
                path: "pipeline.price_per_credit".into(),
                message: format!("must be a number > 0, got {p}"),
            });
        }
        if self.detection.credit_price.is_some() {
            out.push(ConfigIssue {
                path: "pipeline.detection.credit_price".into(),
                message: "set the price once, as pipeline.price_per_credit".into(),
            });
        }
        if let Some(slack) = &self.slack {
            out.extend(slack.problems());
        }
        if self.root_cause.max_days == 0 {
            out.push(ConfigIssue {
                path: "pipeline.root_cause.max_days".into(),
                message: "must be at least 1 (set snowflake = false to skip the Snowflake lookups)"
                    .into(),
            });
        }
        if self.root_cause.usual_days == 0 {
            out.push(ConfigIssue {
                path: "pipeline.root_cause.usual_days".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.credit_prices == CreditPrices::Snowflake
            && !matches!(self.source, SourceConfig::Snowflake { .. })
        {
            out.push(ConfigIssue {
                path: "pipeline.credit_prices".into(),
                message: "\"snowflake\" needs [pipeline.source] kind = \"snowflake\"; use \"config\" with price_per_credit"
                    .into(),
            });
        }
        if let Some(c) = &self.currency
            && !(c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            out.push(ConfigIssue {
                path: "pipeline.currency".into(),
                message: format!("must be an ISO 4217 code such as \"USD\", got {c:?}"),
            });
        }
        for problem in self.detection.problems() {
            let (key, message) = problem.split_once(": ").unwrap_or(("", problem.as_str()));
            out.push(ConfigIssue {
                path: format!("pipeline.detection.{key}"),
                message: message.to_string(),
            });
        }
        out
    }

    /// What the Snowflake role needs for what this configuration reads, one line per grant (for `config check`;
    /// empty for other sources). Snowpatrol cannot check grants without running queries, so it names them.
    pub fn snowflake_grants(&self) -> Vec<String> {
        let SourceConfig::Snowflake { snowflake } = &self.source else {
            return Vec::new();
        };
        let role = snowflake
            .role
            .as_deref()
            .unwrap_or("<the user's default role>");
        let mut out = vec![match snowflake.view {
            snowpatrol_sources::UsageView::OrganizationUsage => format!(
                "metering (ORGANIZATION_USAGE.WAREHOUSE_METERING_HISTORY): GRANT DATABASE ROLE \
                 SNOWFLAKE.ORGANIZATION_USAGE_VIEWER TO ROLE {role}"
            ),
            snowpatrol_sources::UsageView::AccountUsage => format!(
                "metering (ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY): GRANT DATABASE ROLE SNOWFLAKE.USAGE_VIEWER TO \
                 ROLE {role}"
            ),
        }];
        if self.root_cause.snowflake {
            out.push(format!(
                "root causes (QUERY_ATTRIBUTION_HISTORY, WAREHOUSE_EVENTS_HISTORY): GRANT DATABASE ROLE \
                 SNOWFLAKE.USAGE_VIEWER TO ROLE {role}"
            ));
            out.push(format!(
                "root causes and routing by tag (QUERY_HISTORY, TAG_REFERENCES): GRANT DATABASE ROLE \
                 SNOWFLAKE.GOVERNANCE_VIEWER TO ROLE {role}"
            ));
            if snowflake.account_name.is_none() {
                out.push(
                    "root causes: set [pipeline.source] account_name to the ACCOUNT_NAME of the account Snowpatrol \
                     logs in to (ACCOUNT_USAGE describes only that account); until then only the hourly shape is \
                     recorded"
                        .into(),
                );
            }
        }
        if self.credit_prices == CreditPrices::Snowflake {
            out.push(format!(
                "credit prices (ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY): GRANT DATABASE ROLE \
                 SNOWFLAKE.ORGANIZATION_BILLING_VIEWER TO ROLE {role} (organization account)"
            ));
        }
        out
    }

    /// The default model's rule as training should use it (the credit price filled in).
    pub fn detection_rule(&self) -> DefaultRuleConfig {
        let mut rule = self.detection.clone();
        rule.credit_price = self.price_per_credit;
        rule
    }
}

/// Where metering rows come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    Snowflake {
        #[serde(flatten)]
        snowflake: Box<SnowflakeConfig>,
    },
    Csv {
        path: PathBuf,
    },
    /// Seeded synthetic warehouses with labelled anomalies (the demo's source).
    Synthetic {
        #[serde(default = "default_seed")]
        seed: u64,
        #[serde(default = "default_warehouses")]
        warehouses: usize,
        #[serde(default = "default_days")]
        days: usize,
        /// Last generated day; default: yesterday (UTC).
        #[serde(default)]
        end: Option<chrono::NaiveDate>,
    },
}

fn default_seed() -> u64 {
    42
}
fn default_warehouses() -> usize {
    12
}
fn default_days() -> usize {
    365
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic {
            seed: default_seed(),
            warehouses: default_warehouses(),
            days: default_days(),
            end: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepConfig {
    /// Days re-read on every run: the organisation views lag by up to a day.
    pub reread_days: i64,
    /// Days loaded on the first run (empty database).
    pub backfill_days: i64,
    /// How long after a UTC day ends its metering counts as complete in a live source. Snowflake's usage
    /// views fill in with a lag (hours in ACCOUNT_USAGE, longer in some ORGANIZATION_USAGE views): a day
    /// scored before it is complete would show a half-seen spike as normal or a missing evening as a drop.
    /// prep loads and predict scores only days complete by this rule; raise it if your views lag more.
    #[serde(with = "humantime_serde")]
    pub complete_after: std::time::Duration,
}

impl Default for PrepConfig {
    fn default() -> Self {
        Self {
            reread_days: 3,
            backfill_days: 365,
            complete_after: std::time::Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Warehouses with fewer days are skipped (logged, not failed).
    pub min_days: usize,
    /// Drift when the KS p-value of the last `drift_window_days` against the history before is <= this.
    pub drift_alpha: f64,
    pub drift_window_days: usize,
    /// Below this much history every warehouse retrains.
    pub drift_min_history_days: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            min_days: 14,
            drift_alpha: 0.05,
            drift_window_days: 7,
            drift_min_history_days: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictSettings {
    /// Most recent days scored on every run.
    pub score_days: usize,
    /// Days of history shown around an anomaly in reports and charts.
    pub history_days: i64,
}

impl Default for PredictSettings {
    fn default() -> Self {
        Self {
            score_days: 8,
            history_days: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Channel id (`C…`) the bot is a member of.
    pub channel: String,
    /// The bot token (`xoxb-…`). A secret: set it from `SNOWPATROL__PIPELINE__SLACK__TOKEN`, a file
    /// (`token_file`, `SNOWPATROL__PIPELINE__SLACK__TOKEN_FILE`) or `token_env`, rather than in the TOML.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// The Slack app's signing secret. When set, digests offer a feedback menu on each incident and the daemon
    /// serves Slack's interactivity requests at `POST /slack/interactivity` on `[server] health_addr`
    /// (verified with this secret). A secret: from `SNOWPATROL__PIPELINE__SLACK__SIGNING_SECRET`, its `_FILE`
    /// form or `signing_secret_file`, rather than in the TOML.
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    /// Environment variable holding the bot token; when set it wins over `token` and `token_file`.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// File holding the token (e.g. a mounted Kubernetes secret), used when the variable is unset.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Overrides https://slack.com/api/ (tests, proxies).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Delivery attempts per alert, including the first; after the last one the alert is `failed`.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Bound of one HTTP call to Slack (a post, or one page of the history look-up). Short, because a hung
    /// Slack costs the outbox sender this much per attempt.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Wait before an alert's second attempt; doubles per attempt (with jitter) up to `max_backoff`. A 429's
    /// Retry-After is waited at least.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a sender's claim on an alert lasts; another replica takes the alert over after that (its
    /// sender died). Must outlast one attempt: a history look-up (up to `history_pages` calls) plus a post.
    #[serde(default = "default_claim_ttl", with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// Pages of `conversations.history` read when checking whether a post whose outcome is unknown arrived.
    #[serde(default = "default_history_pages")]
    pub history_pages: u32,
    /// `snowpatrol run` and `snowpatrol demo` (no daemon) wait this long at most for the alerts they queued
    /// to be delivered before exiting; what is left stays `pending` for the daemon.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl SlackSettings {
    /// Problems of the delivery settings, by key path.
    pub fn problems(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let issue = |key: &str, message: String| ConfigIssue {
            path: format!("pipeline.slack.{key}"),
            message,
        };
        if self.max_attempts == 0 {
            out.push(issue("max_attempts", "must be at least 1".into()));
        }
        if self.request_timeout.is_zero() {
            out.push(issue("request_timeout", "must be more than 0 s".into()));
        }
        if self.history_pages == 0 {
            out.push(issue("history_pages", "must be at least 1".into()));
        }
        let attempt = self.request_timeout * (self.history_pages.saturating_add(1));
        if self.claim_ttl <= attempt {
            out.push(issue(
                "claim_ttl",
                format!(
                    "must be longer than one attempt, (history_pages + 1) x request_timeout = {} s, or a slow attempt \
                     loses its claim to another sender; got {} s",
                    attempt.as_secs_f64(),
                    self.claim_ttl.as_secs_f64()
                ),
            ));
        }
        out
    }
}

fn default_token_env() -> String {
    "SNOWPATROL_SLACK_TOKEN".into()
}
fn default_attempts() -> u32 {
    5
}
fn default_request_timeout() -> Duration {
    snowpatrol_alert::DEFAULT_REQUEST_TIMEOUT
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_claim_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_history_pages() -> u32 {
    3
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Default model for `train` when the run does not say (`model` param).
pub const DEFAULT_MODEL: ModelKind = ModelKind::Default;
