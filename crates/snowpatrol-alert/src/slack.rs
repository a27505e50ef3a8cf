//! Slack messages (Block Kit plus plain-text fallback) and their delivery through
//! `slack-morphism`'s `chat.postMessage`, with message metadata so that a post whose outcome is
//! unknown can be found again in `conversations.history` instead of being posted twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use slack_morphism::api::{
    SlackApiChatPostMessageRequest, SlackApiFilesComplete,
    SlackApiFilesCompleteUploadExternalRequest, SlackApiFilesGetUploadUrlExternalRequest,
    SlackApiFilesGetUploadUrlExternalResponse, SlackApiFilesUploadViaUrlRequest,
    SlackApiPostWebhookMessageRequest,
};
use slack_morphism::blocks::{
    SlackBlock, SlackBlockMarkDownText, SlackBlockPlainTextOnly, SlackBlockText, SlackContextBlock,
    SlackContextBlockElement, SlackHeaderBlock, SlackSectionBlock,
};
use slack_morphism::errors::{SlackClientError, SlackClientHttpError};
use slack_morphism::hyper_tokio::{SlackClientHyperConnector, SlackClientHyperHttpsConnector};
use slack_morphism::{
    SlackApiToken, SlackApiTokenValue, SlackChannelId, SlackClient, SlackClientSession,
    SlackMessageContent, SlackMessageMetadata, SlackResponseUrl, SlackTs,
};

use crate::format::{credits, score, slack as esc, truncate};
use crate::{AlertError, REPORT_TITLE, Report, WarehouseSection};

/// Slack's documented limits (<https://api.slack.com/reference/block-kit/blocks>). Exceeding any
/// of them makes Slack answer `invalid_blocks`, a permanent failure, so messages stay below.
pub(crate) const MAX_BLOCKS: usize = 50;
pub(crate) const MAX_HEADER_CHARS: usize = 150;
pub(crate) const MAX_SECTION_CHARS: usize = 3000;
const MAX_FIELD_CHARS: usize = 2000;
/// `text` may be 40k characters, but as a notification preview anything past a few lines is
/// noise; the blocks carry the detail.
pub(crate) const MAX_FALLBACK_CHARS: usize = 3000;
/// Default bound of one HTTP call: a hung Slack costs a sender this long per attempt, never more.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// `metadata.event_type` of every alert Snowpatrol posts; the history look-up matches on it.
pub const METADATA_EVENT_TYPE: &str = "snowpatrol_alert";
/// A message can carry a timestamp slightly before the request that made it (clocks of the sender and Slack
/// differ), so the history look-up starts this much before the first attempt.
const HISTORY_MARGIN: chrono::Duration = chrono::Duration::minutes(2);

/// A message ready for `chat.postMessage`: Block Kit blocks plus the plain-text fallback Slack
/// shows in notifications and to clients that cannot render blocks.
///
/// Serializable so the pipeline can store it in its outbox as JSON and send it later unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackMessage {
    pub text: String,
    pub blocks: Vec<SlackBlock>,
}

impl SlackMessage {
    /// The blocks as the JSON Slack receives.
    pub fn blocks_json(&self) -> serde_json::Value {
        // Serializing these plain data types cannot fail; Null is an unreachable fallback.
        serde_json::to_value(&self.blocks).unwrap_or(serde_json::Value::Null)
    }
}

pub(crate) fn header(text: &str) -> SlackBlock {
    SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(truncate(
        text,
        MAX_HEADER_CHARS,
    )))
    .into()
}

pub(crate) fn section(mrkdwn: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(
            truncate(&mrkdwn, MAX_SECTION_CHARS),
        )))
        .into()
}

pub(crate) fn context(mrkdwn: String) -> SlackBlock {
    SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
        SlackBlockMarkDownText::new(truncate(&mrkdwn, MAX_SECTION_CHARS)),
    )])
    .into()
}

/// Inline code in mrkdwn cannot escape a backquote, so one inside an id would end the span early.
pub(crate) fn code(text: &str) -> String {
    format!("`{}`", esc(&text.replace('`', "'")))
}

/// The run's report as a Slack message: a header, one section per anomalous warehouse and a
/// context line with the run id (so a reader can find the full report and the run's logs).
///
/// When there are more warehouses than Slack allows blocks, the last section says how many were
/// left out and points to the full report rather than failing the whole message.
pub fn report_message(report: &Report) -> SlackMessage {
    let sections: Vec<_> = report.anomalous_sections().collect();
    let mut blocks = vec![header(REPORT_TITLE)];

    if sections.is_empty() {
        blocks.push(section(
            "No anomalous activity found: every scored warehouse-day was within its expected range."
                .to_string(),
        ));
    } else {
        // Header + context take two blocks; keep one for the "and N more" line.
        let room = MAX_BLOCKS - 3;
        let shown = if sections.len() > room + 1 {
            room
        } else {
            sections.len()
        };
        for s in &sections[..shown] {
            blocks.push(section(warehouse_text(s, report.price_per_credit)));
        }
        if shown < sections.len() {
            blocks.push(section(format!(
                "…and {} more warehouses with anomalies; see the full report for run {}.",
                sections.len() - shown,
                code(&report.run_id)
            )));
        }
    }

    let mut ctx = format!(
        "Run {} · generated {}",
        code(&report.run_id),
        report.generated_at.format("%Y-%m-%d %H:%M UTC")
    );
    if let Some(price) = report.price_per_credit {
        let _ = write!(ctx, " · price per credit {}", credits(price));
    }
    blocks.push(context(ctx));

    SlackMessage {
        text: truncate(&report_fallback_text(report, &sections), MAX_FALLBACK_CHARS),
        blocks,
    }
}

/// One anomalous warehouse's section of the report message: a line per anomalous day, by date, with its
/// credits, score and explanation.
fn warehouse_text(s: &WarehouseSection, price_per_credit: Option<f64>) -> String {
    let mut body = format!("*{}* (model v{})", esc(&s.display_key()), s.model_version);
    let mut anomalies: Vec<_> = s.anomalies.iter().collect();
    anomalies.sort_by_key(|a| a.date);
    for a in anomalies {
        let _ = write!(
            body,
            "\n• *{}*: {} credits, expected {}, excess *{}*",
            a.date,
            credits(a.actual_credits),
            credits(a.expected_credits),
            credits(a.excess_credits)
        );
        if let Some(price) = price_per_credit {
            let _ = write!(body, " (cost {})", credits(a.excess_credits * price));
        }
        // The score's direction depends on the model (the baseline flags low scores, the default
        // model high ones), so the numbers are shown side by side and the explanation says why.
        let _ = write!(
            body,
            "; score {} (threshold {})",
            score(a.score),
            score(a.threshold)
        );
        let explanation = crate::digest::without_date_prefix(&a.explanation, Some(a.date));
        if !explanation.is_empty() {
            let _ = write!(body, "\n    _{}_", esc(&truncate(explanation, 300)));
        }
    }
    body
}

/// The report message's plain-text fallback: counts, warehouses and total excess, or that there was nothing.
fn report_fallback_text(report: &Report, sections: &[&WarehouseSection]) -> String {
    if sections.is_empty() {
        format!("{REPORT_TITLE}: no anomalies (run {}).", report.run_id)
    } else {
        let total: f64 = sections.iter().map(|s| s.total_excess_credits()).sum();
        let names: Vec<String> = sections.iter().map(|s| s.display_key()).collect();
        format!(
            "{REPORT_TITLE}: {} anomalous day{} in {} warehouse{} ({}), {} excess credits (run {}).",
            report.anomaly_count(),
            if report.anomaly_count() == 1 { "" } else { "s" },
            sections.len(),
            if sections.len() == 1 { "" } else { "s" },
            names.join(", "),
            credits(total),
            report.run_id
        )
    }
}

/// A short alert for a task that failed after its retries: job, task, map key, run id and error.
pub fn failure_message(
    job: &str,
    task: &str,
    map_key: Option<&str>,
    run_id: &str,
    error: &str,
) -> SlackMessage {
    let key = map_key.unwrap_or("–");
    let field = |label: &str, value: &str| {
        SlackBlockText::MarkDown(SlackBlockMarkDownText::new(truncate(
            &format!("*{label}*\n{}", code(value)),
            MAX_FIELD_CHARS,
        )))
    };
    let fields = SlackSectionBlock::new().with_fields(vec![
        field("Job", job),
        field("Task", task),
        field("Key", key),
        field("Run", run_id),
    ]);
    // A code block ends at the first ``` inside it; swap them for look-alikes.
    let error_text = esc(&truncate(error.trim(), MAX_SECTION_CHARS - 20)).replace("```", "'''");
    let blocks = vec![
        header(&format!("Snowpatrol task failed: {job} / {task}")),
        fields.into(),
        section(format!("*Error*\n```{error_text}```")),
        context(format!("Run {} · failed after its retries", code(run_id))),
    ];
    let where_ = match map_key {
        Some(k) => format!("{job}/{task}[{k}]"),
        None => format!("{job}/{task}"),
    };
    let text = format!(
        "Snowpatrol task failed: {where_} in run {run_id}: {}",
        error.trim()
    );
    SlackMessage {
        text: truncate(&text, MAX_FALLBACK_CHARS),
        blocks,
    }
}

/// Where and how to post. The token is a [`SecretString`], so `Debug` prints `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// Channel id (`C0123…`) or name; ids survive channel renames.
    pub channel: String,
    pub token: SecretString,
    /// Base URL of the Web API (default `https://slack.com/api`); tests point it at a local peer.
    pub api_url: Option<String>,
    /// Total attempts per `send` (and per alert in the pipeline's outbox), including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles per attempt up to `max_backoff` (Retry-After wins).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound of one HTTP call (post or history page); the outbox's claims must outlast a few of them.
    pub request_timeout: Duration,
}

impl SlackConfig {
    /// Defaults for production: 5 attempts, 1 s doubling to at most 60 s (Retry-After wins), 10 s per call.
    pub fn new(channel: impl Into<String>, token: SecretString) -> Self {
        Self {
            channel: channel.into(),
            token,
            api_url: None,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Reads the bot token from `env_var` if it is set and non-empty, otherwise from `file`
    /// (trimmed, so a trailing newline from `echo` or a Kubernetes secret does not break auth).
    ///
    /// The environment wins so that an operator can override a mounted file for one run.
    pub fn token_from_env_or_file(
        env_var: &str,
        file: Option<&Path>,
    ) -> Result<SecretString, AlertError> {
        if let Ok(value) = std::env::var(env_var) {
            let trimmed = value.trim();
            if !trimmed.is_empty() {
                return Ok(SecretString::from(trimmed.to_string()));
            }
        }
        let Some(path) = file else {
            return Err(AlertError::TokenMissing {
                env_var: env_var.to_string(),
                file: None,
            });
        };
        let contents = match std::fs::read_to_string(path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AlertError::TokenMissing {
                    env_var: env_var.to_string(),
                    file: Some(path.to_path_buf()),
                });
            }
            Err(source) => {
                return Err(AlertError::TokenFileUnreadable {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let trimmed = contents.trim();
        if trimmed.is_empty() {
            return Err(AlertError::TokenEmpty {
                origin: path.display().to_string(),
            });
        }
        Ok(SecretString::from(trimmed.to_string()))
    }
}

/// The result of one `send`, for the outbox: delivered (with Slack's message timestamp), or
/// failed — permanently (do not retry: fix the config) or after exhausting retries (retry later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryOutcome {
    Delivered {
        ts: String,
        attempts: u32,
    },
    Failed {
        error: String,
        permanent: bool,
        attempts: u32,
    },
}

impl DeliveryOutcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, DeliveryOutcome::Delivered { .. })
    }
}

/// What identifies an alert in Slack: sent as the message's `metadata` (`event_type` [`METADATA_EVENT_TYPE`],
/// `event_payload` with the outbox's dedupe key and alert id), invisible to readers, returned by
/// `conversations.history` with `include_all_metadata`. Slack has no idempotency key for `chat.postMessage`;
/// this is what lets a sender find out whether a post that timed out reached the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMetadata {
    pub dedupe_key: String,
    pub alert_id: i64,
}

impl AlertMetadata {
    fn to_slack(&self) -> SlackMessageMetadata {
        let payload = HashMap::from([
            ("dedupe_key".to_string(), self.dedupe_key.clone()),
            ("alert_id".to_string(), self.alert_id.to_string()),
        ]);
        SlackMessageMetadata::new(METADATA_EVENT_TYPE.to_string()).with_event_payload(payload)
    }
}

/// The result of ONE `chat.postMessage` call ([`SlackNotifier::post_once`]); the caller decides about retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// In the channel, with Slack's message timestamp.
    Posted { ts: String },
    /// Slack refused the request itself (auth, channel, scopes, payload): repeating it cannot help.
    Rejected { error: String },
    /// Not posted (Slack answered with an error, or the connection was never made): retry, not before
    /// `retry_after` when Slack sent one (429 Retry-After).
    NotPosted {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The request may have reached Slack but no answer came (timeout, connection lost after sending, a
    /// gateway timeout): the message may be in the channel. Look it up before posting again.
    Unknown { error: String },
}

/// Why [`SlackNotifier::find_posted`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupFailure {
    pub error: String,
    /// The look-up cannot work with this configuration (missing `channels:history` scope, a channel name
    /// instead of an id, ...): asking again will not help.
    pub permanent: bool,
    pub retry_after: Option<Duration>,
}

/// One page of `conversations.history`, only the fields the look-up needs (a lenient shape, like [`PostAck`]).
#[derive(Debug, Deserialize)]
struct HistoryPage {
    #[serde(default)]
    messages: Vec<HistoryMessage>,
    #[serde(default)]
    has_more: bool,
    response_metadata: Option<HistoryCursor>,
}

#[derive(Debug, Deserialize)]
struct HistoryMessage {
    ts: Option<String>,
    metadata: Option<HistoryMetadata>,
}

#[derive(Debug, Deserialize)]
struct HistoryMetadata {
    event_type: Option<String>,
    #[serde(default)]
    event_payload: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct HistoryCursor {
    next_cursor: Option<String>,
}

/// Slack's `ts` form of a time: seconds and microseconds since the epoch.
fn slack_ts(t: DateTime<Utc>) -> String {
    format!("{}.{:06}", t.timestamp(), t.timestamp_subsec_micros())
}

/// Only `ts` is read from Slack's answer. slack-morphism's typed response also requires the full
/// echoed message; if Slack ever changed that shape, a delivered message would look failed and
/// be sent again. `ts` is what proves delivery.
#[derive(Debug, Deserialize)]
struct PostAck {
    ts: Option<String>,
}

enum Failure {
    Permanent(String),
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Sent, perhaps received, never answered.
    Unknown(String),
}

impl Failure {
    fn into_post_outcome(self) -> PostOutcome {
        match self {
            Failure::Permanent(error) => PostOutcome::Rejected { error },
            Failure::Retryable {
                message,
                retry_after,
            } => PostOutcome::NotPosted {
                error: message,
                retry_after,
            },
            Failure::Unknown(error) => PostOutcome::Unknown { error },
        }
    }
}

/// True when the error chain says the TCP/TLS connection was never made (refused, no route, DNS): then the
/// request cannot have reached Slack. Any other transport error may have happened after the request was sent.
fn never_connected(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        // hyper-util's client error for a failed connect ("client error (Connect)", DNS included).
        if e.to_string().contains("(Connect)") {
            return true;
        }
        current = e.source();
    }
    false
}

/// Slack `error` codes that describe a transient condition on Slack's side
/// (<https://api.slack.com/methods/chat.postMessage#errors>); every other code means the request
/// itself is wrong (auth, channel, scopes, payload) and repeating it cannot help.
const TRANSIENT_CODES: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

fn hint(code: &str) -> &'static str {
    match code {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
            " (check the Slack bot token)"
        }
        "channel_not_found" => " (check the channel id and that the bot can see the channel)",
        "not_in_channel" => " (invite the bot to the channel)",
        "missing_scope" => " (the bot token needs the chat:write scope)",
        "is_archived" => " (the channel is archived)",
        "invalid_blocks" | "msg_too_long" => " (the message was rejected as malformed)",
        _ => "",
    }
}

/// The error chain as one line; hyper's top-level error ("client error (Connect)") hides the
/// cause people need ("Connection refused").
fn chain(err: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn classify(err: &SlackClientError) -> Failure {
    match err {
        SlackClientError::ApiError(api) => api_failure(api.code.as_str()),
        SlackClientError::RateLimitError(rl) => Failure::Retryable {
            message: format!(
                "Slack rate limited the request (HTTP 429{})",
                rl.retry_after
                    .map(|d| format!(", Retry-After {} s", d.as_secs()))
                    .unwrap_or_default()
            ),
            retry_after: rl.retry_after,
        },
        SlackClientError::HttpError(http) => http_failure(http),
        // A 200 whose body is not Slack's JSON: something answered after the request arrived.
        SlackClientError::ProtocolError(p) => Failure::Unknown(format!(
            "Slack's answer was not the expected JSON: {}",
            p.json_error
        )),
        // slack-morphism formats these causes with `{:?}`; walk the chain for readable text.
        SlackClientError::HttpProtocolError(p) => match p.cause.as_deref() {
            Some(cause) => transport(format!("cannot reach Slack: {}", chain(cause)), cause),
            None => Failure::Unknown("cannot reach Slack: HTTP protocol error".to_string()),
        },
        SlackClientError::SystemError(e) => match (e.message.as_deref(), e.cause.as_deref()) {
            (_, Some(cause)) => transport(format!("cannot reach Slack: {}", chain(cause)), cause),
            (Some(m), None) => Failure::Unknown(format!("cannot reach Slack: {m}")),
            (None, None) => Failure::Unknown("cannot reach Slack: system error".to_string()),
        },
        other => transport(format!("cannot reach Slack: {}", chain(other)), other),
    }
}

/// Slack answered with an `error` code: retryable for [`TRANSIENT_CODES`], permanent otherwise.
fn api_failure(code: &str) -> Failure {
    let message = format!("Slack rejected the message: {code}{}", hint(code));
    if TRANSIENT_CODES.contains(&code) {
        Failure::Retryable {
            message,
            retry_after: None,
        }
    } else {
        Failure::Permanent(message)
    }
}

/// Slack (or something in front of it) answered with an HTTP error status.
fn http_failure(http: &SlackClientHttpError) -> Failure {
    let status = http.status_code;
    let body = http
        .http_response_body
        .as_deref()
        .map(|b| format!(": {}", truncate(b.trim(), 200)))
        .unwrap_or_default();
    let message = format!("Slack answered HTTP {status}{body}");
    if status.as_u16() == 504 {
        // A gateway gave up waiting for Slack, which may still have posted.
        Failure::Unknown(message)
    } else if status.is_server_error() || status.as_u16() == 408 {
        Failure::Retryable {
            message,
            retry_after: None,
        }
    } else {
        Failure::Permanent(message)
    }
}

/// A transport error: retryable when the connection was never made, unknown otherwise.
fn transport(message: String, cause: &(dyn std::error::Error + Send + Sync + 'static)) -> Failure {
    if never_connected(cause) {
        Failure::Retryable {
            message,
            retry_after: None,
        }
    } else {
        Failure::Unknown(message)
    }
}

/// A failure before the file is shared: the unshared upload is never shown, so even an unanswered call
/// means not posted (a retry starts over with a new file id).
fn not_posted_before_sharing(f: Failure) -> PostOutcome {
    match f {
        Failure::Unknown(error) => PostOutcome::NotPosted {
            error,
            retry_after: None,
        },
        other => other.into_post_outcome(),
    }
}

/// A failed `conversations.history` call as the look-up's failure.
fn history_failure(f: Failure) -> LookupFailure {
    match f {
        Failure::Permanent(error) => LookupFailure {
            error: format!("conversations.history: {error}"),
            permanent: true,
            retry_after: None,
        },
        Failure::Retryable {
            message,
            retry_after,
        } => LookupFailure {
            error: format!("conversations.history: {message}"),
            permanent: false,
            retry_after,
        },
        Failure::Unknown(error) => LookupFailure {
            error: format!("conversations.history: {error}"),
            permanent: false,
            retry_after: None,
        },
    }
}

/// Adds to `found` (dedupe key -> message `ts`) each message on `page` that Snowpatrol posted with one of
/// `keys` in its metadata; the first `ts` seen for a key is kept.
fn collect_posted(
    page: &HistoryPage,
    keys: &BTreeSet<String>,
    found: &mut BTreeMap<String, String>,
) {
    for m in &page.messages {
        let (Some(ts), Some(meta)) = (&m.ts, &m.metadata) else {
            continue;
        };
        if meta.event_type.as_deref() != Some(METADATA_EVENT_TYPE) {
            continue;
        }
        if let Some(key) = meta
            .event_payload
            .get("dedupe_key")
            .and_then(|k| k.as_str())
            && keys.contains(key)
        {
            found.entry(key.to_string()).or_insert_with(|| ts.clone());
        }
    }
}

/// Posts messages to one channel.
///
/// [`post_once`](Self::post_once) is one bounded `chat.postMessage` call with an outcome the pipeline's outbox
/// records (and retries across attempts with backoff); [`send`](Self::send) retries inside the call for callers
/// without an outbox. Slack has no idempotency key, so a post that timed out after Slack accepted it would be a
/// repeat if simply sent again: the outbox sends [`AlertMetadata`] and asks
/// [`find_posted`](Self::find_posted) first.
pub struct SlackNotifier {
    client: SlackClient<SlackClientHyperHttpsConnector>,
    channel: SlackChannelId,
    token: SecretString,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("channel", &self.channel.0)
            .field("token", &"[REDACTED]")
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl SlackNotifier {
    /// Builds the HTTPS client (system root certificates). A plain `http://` `api_url` is allowed
    /// for local test peers only; it is logged as a warning because the token would travel in
    /// clear text.
    pub fn new(cfg: SlackConfig) -> Result<Self, AlertError> {
        // snowflake-connector-rs and slack-morphism compile in two rustls providers; rustls
        // panics at the first TLS config unless the process picks one. Ignoring the result is
        // right: an Err means a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();

        if cfg.channel.trim().is_empty() {
            return Err(AlertError::InvalidSlackConfig(
                "the Slack channel is empty".into(),
            ));
        }
        if cfg.token.expose_secret().trim().is_empty() {
            return Err(AlertError::TokenEmpty {
                origin: "the Slack configuration".into(),
            });
        }
        if cfg.max_attempts == 0 {
            return Err(AlertError::InvalidSlackConfig(
                "max_attempts must be at least 1".into(),
            ));
        }
        if cfg.request_timeout.is_zero() {
            return Err(AlertError::InvalidSlackConfig(
                "request_timeout must be more than 0 s".into(),
            ));
        }

        let api_url = cfg
            .api_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_string());
        let connector: SlackClientHyperHttpsConnector = match api_url.as_deref() {
            None => build_https_connector(true)?,
            Some(url) if url.starts_with("https://") => {
                build_https_connector(true)?.with_slack_api_url(url)
            }
            Some(url) if url.starts_with("http://") => {
                tracing::warn!(
                    api_url = url,
                    "Slack API URL is plain HTTP; use only for tests"
                );
                build_https_connector(false)?.with_slack_api_url(url)
            }
            Some(url) => {
                return Err(AlertError::InvalidSlackConfig(format!(
                    "api_url must start with https:// (or http:// for a local test peer), got {url:?}"
                )));
            }
        };

        Ok(Self {
            client: SlackClient::new(connector),
            channel: SlackChannelId(cfg.channel.trim().to_string()),
            token: cfg.token,
            max_attempts: cfg.max_attempts,
            initial_backoff: cfg.initial_backoff,
            max_backoff: cfg.max_backoff.max(cfg.initial_backoff),
            request_timeout: cfg.request_timeout,
        })
    }

    /// Attempts per alert (or per `send`), including the first.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The bound of one HTTP call.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn api_token(&self) -> SlackApiToken {
        SlackApiToken::new(SlackApiTokenValue(self.token.expose_secret().to_string()))
    }

    /// The same client, token and limits, posting to another channel (a route's).
    pub fn for_channel(&self, channel: &str) -> SlackNotifier {
        SlackNotifier {
            client: self.client.clone(),
            channel: SlackChannelId::new(channel.to_string()),
            token: self.token.clone(),
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            request_timeout: self.request_timeout,
        }
    }

    /// The channel this notifier posts to.
    pub fn channel(&self) -> &str {
        &self.channel.0
    }

    /// ONE `chat.postMessage` call, bounded by `request_timeout`, with `metadata` when given.
    ///
    /// A timeout is [`PostOutcome::Unknown`], not a failure: the request may have been processed.
    pub async fn post_once(
        &self,
        msg: &SlackMessage,
        metadata: Option<&AlertMetadata>,
    ) -> PostOutcome {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let mut content = SlackMessageContent::new()
            .with_text(msg.text.clone())
            .with_blocks(msg.blocks.clone());
        if let Some(m) = metadata {
            content = content.with_metadata(m.to_slack());
        }
        let request = SlackApiChatPostMessageRequest::new(self.channel.clone(), content);
        let result = tokio::time::timeout(
            self.request_timeout,
            session
                .http_session_api
                .http_post::<_, PostAck>("chat.postMessage", &request, None),
        )
        .await;
        match result {
            Ok(Ok(PostAck { ts: Some(ts) })) => {
                tracing::info!(channel = %self.channel.0, ts = %ts, "Slack message delivered");
                PostOutcome::Posted { ts }
            }
            // Not Slack (a proxy page?): Slack always returns `ts` for a posted message.
            Ok(Ok(PostAck { ts: None })) => PostOutcome::Unknown {
                error: "Slack's answer carried no message timestamp".into(),
            },
            Ok(Err(err)) => classify(&err).into_post_outcome(),
            Err(_) => PostOutcome::Unknown {
                error: format!(
                    "Slack did not answer within {} s",
                    self.request_timeout.as_secs_f64()
                ),
            },
        }
    }

    /// Uploads one file into the channel with Slack's external upload flow: `files.getUploadURLExternal`, the
    /// bytes to the URL it returns, then `files.completeUploadExternal` sharing the file (in `thread_ts`'s
    /// thread when given, with `comment` as its message). Each call is bounded by `request_timeout`.
    ///
    /// Only the last call shares the file: a failure before it is [`PostOutcome::NotPosted`] (a retry starts
    /// over with a new file id; the unshared upload is never shown). An unanswered last call is
    /// [`PostOutcome::Unknown`]; files have no metadata to look up, so the caller should not repeat it.
    /// `Posted { ts }` carries the Slack file id.
    pub async fn upload_once(
        &self,
        file_name: &str,
        bytes: &[u8],
        title: &str,
        comment: &str,
        thread_ts: Option<&str>,
    ) -> PostOutcome {
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let url = match self
            .request_upload_url(&session, file_name, bytes.len())
            .await
        {
            Ok(url) => url,
            Err(outcome) => return outcome,
        };
        if let Err(outcome) = self.upload_bytes(&session, &url, bytes).await {
            return outcome;
        }
        self.share_upload(&session, &url, title, comment, thread_ts)
            .await
    }

    /// The error of a call that timed out: Slack did not answer `what` within `request_timeout`.
    fn unanswered(&self, what: &str) -> String {
        format!(
            "Slack did not answer {what} within {} s",
            self.request_timeout.as_secs_f64()
        )
    }

    /// The upload's first step, `files.getUploadURLExternal`: where to send the bytes, and the new file's id.
    async fn request_upload_url(
        &self,
        session: &SlackClientSession<'_, SlackClientHyperHttpsConnector>,
        file_name: &str,
        length: usize,
    ) -> Result<SlackApiFilesGetUploadUrlExternalResponse, PostOutcome> {
        self.before_sharing(
            "files.getUploadURLExternal",
            session.get_upload_url_external(&SlackApiFilesGetUploadUrlExternalRequest::new(
                file_name.to_string(),
                length,
            )),
        )
        .await
    }

    /// The upload's second step: the PNG bytes to the URL Slack gave.
    async fn upload_bytes(
        &self,
        session: &SlackClientSession<'_, SlackClientHyperHttpsConnector>,
        url: &SlackApiFilesGetUploadUrlExternalResponse,
        bytes: &[u8],
    ) -> Result<(), PostOutcome> {
        let upload = SlackApiFilesUploadViaUrlRequest::new(
            url.upload_url.clone(),
            bytes.to_vec(),
            "image/png".to_string(),
        );
        self.before_sharing("the file upload", session.files_upload_via_url(&upload))
            .await
            .map(|_| ())
    }

    /// Runs one of the upload's steps before the share (`what`, for a timeout's error) within
    /// `request_timeout`. Nothing shows in the channel until the share, so every failure here, an unanswered
    /// call included, is not posted.
    async fn before_sharing<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, PostOutcome> {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(not_posted_before_sharing(classify(&e))),
            Err(_) => Err(PostOutcome::NotPosted {
                error: self.unanswered(what),
                retry_after: None,
            }),
        }
    }

    /// The upload's last step, `files.completeUploadExternal`: shares the file in the channel (in
    /// `thread_ts`'s thread when given) with `comment` as its message.
    async fn share_upload(
        &self,
        session: &SlackClientSession<'_, SlackClientHyperHttpsConnector>,
        url: &SlackApiFilesGetUploadUrlExternalResponse,
        title: &str,
        comment: &str,
        thread_ts: Option<&str>,
    ) -> PostOutcome {
        let mut complete = SlackApiFilesCompleteUploadExternalRequest::new(vec![
            SlackApiFilesComplete::new(url.file_id.clone()).with_title(title.to_string()),
        ])
        .with_channel_id(self.channel.clone())
        .with_initial_comment(comment.to_string());
        if let Some(ts) = thread_ts {
            complete = complete.with_thread_ts(SlackTs::new(ts.to_string()));
        }
        match tokio::time::timeout(
            self.request_timeout,
            session.files_complete_upload_external(&complete),
        )
        .await
        {
            Ok(Ok(_)) => {
                tracing::info!(channel = %self.channel.0, file = %url.file_id.0, "Slack file shared");
                PostOutcome::Posted {
                    ts: url.file_id.0.clone(),
                }
            }
            Ok(Err(e)) => classify(&e).into_post_outcome(),
            Err(_) => PostOutcome::Unknown {
                error: self.unanswered("files.completeUploadExternal"),
            },
        }
    }

    /// Replaces the message a feedback click came from, through the click's `response_url` (bounded by
    /// `request_timeout`). `blocks` is the updated message (see [`crate::acknowledged_blocks`]).
    pub async fn respond(
        &self,
        response_url: &str,
        text: &str,
        blocks: serde_json::Value,
    ) -> Result<(), String> {
        let url = url::Url::parse(response_url)
            .map_err(|e| format!("the click's response_url is not a URL: {e}"))?;
        let blocks: Vec<SlackBlock> = serde_json::from_value(blocks)
            .map_err(|e| format!("the updated message is not Block Kit: {e}"))?;
        let request = SlackApiPostWebhookMessageRequest::new(
            SlackMessageContent::new()
                .with_text(text.to_string())
                .with_blocks(blocks),
        )
        .with_replace_original(true);
        match tokio::time::timeout(
            self.request_timeout,
            self.client
                .respond_to_event(&SlackResponseUrl::new(url), &request),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(match classify(&e) {
                Failure::Permanent(m) | Failure::Unknown(m) => m,
                Failure::Retryable { message, .. } => message,
            }),
            Err(_) => Err(format!(
                "Slack did not answer within {} s",
                self.request_timeout.as_secs_f64()
            )),
        }
    }

    /// Looks in the channel's history, from `since` (minus a margin for clock skew), for messages Snowpatrol
    /// posted with [`AlertMetadata`] whose dedupe key is in `keys`; returns dedupe key -> message `ts`.
    ///
    /// Reads at most `max_pages` pages (each bounded by `request_timeout`); a history longer than that since
    /// `since` is a retryable failure rather than a "not found" that would cause a repeat. Needs the
    /// `channels:history` scope (`groups:history` for a private channel) and a channel id.
    pub async fn find_posted(
        &self,
        since: DateTime<Utc>,
        keys: &BTreeSet<String>,
        max_pages: u32,
    ) -> Result<BTreeMap<String, String>, LookupFailure> {
        let mut found = BTreeMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        let token = self.api_token();
        let session = self.client.open_session(&token);
        let oldest = slack_ts(since - HISTORY_MARGIN);
        let mut cursor: Option<String> = None;
        for _ in 0..max_pages.max(1) {
            let page = self
                .history_page(&session, &oldest, cursor.as_deref())
                .await?;
            collect_posted(&page, keys, &mut found);
            if found.len() == keys.len() {
                return Ok(found);
            }
            cursor = page
                .response_metadata
                .and_then(|r| r.next_cursor)
                .filter(|c| !c.is_empty());
            if !page.has_more || cursor.is_none() {
                return Ok(found);
            }
        }
        Err(LookupFailure {
            error: format!(
                "conversations.history has more than {max_pages} pages since {}; will look again",
                since.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            permanent: false,
            retry_after: None,
        })
    }

    /// One page of `conversations.history` from `oldest` (Slack's `ts` form), after `cursor` when given.
    async fn history_page(
        &self,
        session: &SlackClientSession<'_, SlackClientHyperHttpsConnector>,
        oldest: &str,
        cursor: Option<&str>,
    ) -> Result<HistoryPage, LookupFailure> {
        let mut params: Vec<(&str, Option<String>)> = vec![
            ("channel", Some(self.channel.0.clone())),
            ("oldest", Some(oldest.to_string())),
            ("inclusive", Some("true".into())),
            ("include_all_metadata", Some("true".into())),
            ("limit", Some("200".into())),
        ];
        if let Some(c) = cursor {
            params.push(("cursor", Some(c.to_string())));
        }
        let result = tokio::time::timeout(
            self.request_timeout,
            session.http_session_api.http_get::<HistoryPage, _, String>(
                "conversations.history",
                &params,
                None,
            ),
        )
        .await;
        match result {
            Ok(Ok(page)) => Ok(page),
            Ok(Err(err)) => Err(history_failure(classify(&err))),
            Err(_) => Err(LookupFailure {
                error: format!(
                    "conversations.history did not answer within {} s",
                    self.request_timeout.as_secs_f64()
                ),
                permanent: false,
                retry_after: None,
            }),
        }
    }

    /// Posts `msg` to the configured channel, retrying inside the call (no outbox, no metadata).
    ///
    /// Retries 429 (waiting at least Retry-After), 5xx, transient Slack errors, network errors and
    /// timeouts with exponential backoff and jitter, up to `max_attempts` in total, so a timeout can
    /// become a repeat: the pipeline uses [`post_once`](Self::post_once) with metadata instead. Slack's
    /// `invalid_auth`, `channel_not_found` and other request errors fail at once as permanent.
    pub async fn send(&self, msg: &SlackMessage) -> DeliveryOutcome {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let (message, retry_after) = match self.post_once(msg, None).await {
                PostOutcome::Posted { ts } => {
                    return DeliveryOutcome::Delivered {
                        ts,
                        attempts: attempt,
                    };
                }
                PostOutcome::Rejected { error } => {
                    tracing::error!(channel = %self.channel.0, attempts = attempt, %error,
                        "Slack delivery failed permanently");
                    return DeliveryOutcome::Failed {
                        error,
                        permanent: true,
                        attempts: attempt,
                    };
                }
                PostOutcome::NotPosted { error, retry_after } => (error, retry_after),
                PostOutcome::Unknown { error } => (error, None),
            };
            if attempt >= self.max_attempts {
                tracing::warn!(channel = %self.channel.0, attempts = attempt,
                    error = %message, "Slack delivery failed; giving up for now");
                return DeliveryOutcome::Failed {
                    error: message,
                    permanent: false,
                    attempts: attempt,
                };
            }
            let wait = self.retry_delay(attempt, retry_after);
            tracing::warn!(channel = %self.channel.0, attempt, error = %message,
                wait_ms = wait.as_millis() as u64,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Slack delivery failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// How long to wait after `attempts` failed attempts: the backoff, but never less than Slack's
    /// Retry-After (Slack's instruction, not a hint).
    pub fn retry_delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff(attempts);
        retry_after.map_or(backoff, |ra| ra.max(backoff))
    }

    /// "Equal jitter" exponential backoff: half the doubled delay fixed, half random, so
    /// replicas retrying after the same outage do not hit Slack in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
        let capped = exp.min(self.max_backoff);
        let half = capped / 2;
        let jitter_ns =
            rand::rng().random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_nanos(jitter_ns)
    }
}

fn build_https_connector(https_only: bool) -> Result<SlackClientHyperHttpsConnector, AlertError> {
    let builder = if https_only {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(AlertError::TlsRoots)?
            .https_only()
    } else {
        // A plain-HTTP test peer needs no roots; not loading them keeps tests independent of
        // the machine's CA bundle.
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
    };
    Ok(SlackClientHyperConnector::with_connector(
        builder.enable_http1().enable_http2().build(),
    ))
}
