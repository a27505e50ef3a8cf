//! Turns a predict run's anomalies into things people read: a Markdown report, one PNG chart per
//! anomalous warehouse, and a Slack message — plus short Slack alerts for failed tasks.
//!
//! The crate deliberately knows nothing of the database, the scheduler or the ML crate: it takes
//! plain structs and returns text, PNG bytes and delivery outcomes. That keeps it testable on its
//! own and lets the pipeline own persistence (the alert outbox and its dedupe keys), which is what
//! makes delivery at-least-once without repeats across restarts and replicas.

mod chart;
mod digest;
mod error;
mod feedback;
mod format;
mod report;
mod slack;

pub use chart::{chart_file_name, render_chart_png};
pub use digest::{
    DIGEST_CHART_REPLIES, DIGEST_TOP_INCIDENTS, Digest, DigestIncident, chart_reply_incidents,
    digest_message, reply_text,
};
pub use error::AlertError;
pub use feedback::{
    FEEDBACK_ACTION_ID, FEEDBACK_REASONS, FeedbackClick, FeedbackError, acknowledged_blocks,
    parse_click, verify_request,
};
pub use report::{CONTEXT_DAYS, render_markdown};
pub use slack::{
    AlertMetadata, DEFAULT_REQUEST_TIMEOUT, DeliveryOutcome, LookupFailure, METADATA_EVENT_TYPE,
    PostOutcome, SlackConfig, SlackMessage, SlackNotifier, failure_message, report_message,
};
/// Re-exported so callers can inspect or store [`SlackMessage::blocks`] without depending on
/// slack-morphism themselves.
pub use slack_morphism::blocks::SlackBlock;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Title shared by the Markdown report, the Slack header and the plain-text fallback, so that
/// people searching Slack or the report directory find both with the same words.
pub const REPORT_TITLE: &str = "Anomalous activity in Snowflake usage";

/// One anomalous day of one warehouse, as the detector scored it: the detector's own type, so a day goes from
/// the model to the report without being copied field by field.
pub use snowpatrol_detect::model::AnomalyDay;

/// One day of a warehouse's recent history, for the context table and the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyPoint {
    pub date: NaiveDate,
    pub credits: f64,
    /// What the model expected that day, when it has an opinion (none before the model's window).
    pub expected: Option<f64>,
    /// The range the model considered normal that day (drawn as a band), when it says.
    #[serde(default)]
    pub normal_low: Option<f64>,
    #[serde(default)]
    pub normal_high: Option<f64>,
}

/// Everything the report says about one (account, warehouse).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarehouseSection {
    pub account_name: String,
    pub warehouse_name: String,
    pub model_version: i64,
    pub anomalies: Vec<AnomalyDay>,
    /// About 30 days around and before the anomalies.
    pub history: Vec<DailyPoint>,
    /// The root cause of each anomalous day that has one (its summary sentence).
    #[serde(default)]
    pub root_causes: std::collections::BTreeMap<NaiveDate, String>,
    /// The price of a credit in this warehouse's account, when it differs from the report's (Snowflake's
    /// effective rate per account).
    #[serde(default)]
    pub price_per_credit: Option<f64>,
    /// The hours of the largest anomalous day against the usual hourly curve, drawn as a second panel of the
    /// chart when known.
    #[serde(default)]
    pub hourly: Option<HourlyPanel>,
}

/// One day's credits per UTC hour against the usual curve (from the day's root cause).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourlyPanel {
    pub date: NaiveDate,
    pub shape: snowpatrol_detect::root_cause::HourlyShape,
}

impl WarehouseSection {
    /// `ACCOUNT.WAREHOUSE`: warehouse names repeat across accounts (every account has a
    /// `COMPUTE_WH`), so a warehouse is never shown without its account.
    pub fn display_key(&self) -> String {
        format!("{}.{}", self.account_name, self.warehouse_name)
    }

    /// Sum of excess credits over this section's anomalous days.
    pub fn total_excess_credits(&self) -> f64 {
        self.anomalies.iter().map(|a| a.excess_credits).sum()
    }
}

/// The output of one predict run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub generated_at: DateTime<Utc>,
    /// When set, excess credits are also shown as cost (in whatever currency the price is in).
    pub price_per_credit: Option<f64>,
    /// ISO code shown beside money (`USD`), when known.
    #[serde(default)]
    pub currency: Option<String>,
    pub sections: Vec<WarehouseSection>,
    /// Incidents of the scored days left out because someone acknowledged them; the report says so rather
    /// than claiming that every day was normal.
    #[serde(default)]
    pub acknowledged_incidents: usize,
    /// Incidents not alerted yet because a route's minimum or mute window held them back, with why.
    #[serde(default)]
    pub held_back: Vec<HeldBack>,
}

/// An incident a route held back (below its minimum, or in a mute window), for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldBack {
    /// `ACCOUNT.WAREHOUSE`.
    pub warehouse: String,
    pub first_day: NaiveDate,
    pub excess_credits: f64,
    /// One line per route that held it back, e.g. "route platform: excess 4.10 credits < min_excess_credits 10".
    pub reasons: Vec<String>,
}

impl Report {
    /// Number of anomalous warehouse-days across all sections.
    pub fn anomaly_count(&self) -> usize {
        self.sections.iter().map(|s| s.anomalies.len()).sum()
    }

    /// Sections that actually carry anomalies; empty sections are tolerated but not reported.
    pub fn anomalous_sections(&self) -> impl Iterator<Item = &WarehouseSection> {
        self.sections.iter().filter(|s| !s.anomalies.is_empty())
    }
}
