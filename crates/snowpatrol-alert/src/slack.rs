//! Slack messages (Block Kit plus plain-text fallback) and their delivery through
//! `slack-morphism`'s `chat.postMessage`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use slack_morphism::api::SlackApiChatPostMessageRequest;
use slack_morphism::blocks::{
    SlackBlock, SlackBlockMarkDownText, SlackBlockPlainTextOnly, SlackBlockText, SlackContextBlock,
    SlackContextBlockElement, SlackHeaderBlock, SlackSectionBlock,
};
use slack_morphism::errors::SlackClientError;
use slack_morphism::hyper_tokio::{SlackClientHyperConnector, SlackClientHyperHttpsConnector};
use slack_morphism::{
    SlackApiToken, SlackApiTokenValue, SlackChannelId, SlackClient, SlackMessageContent,
};

use crate::format::{credits, score, slack as esc, truncate};
use crate::{AlertError, REPORT_TITLE, Report};

/// Slack's documented limits (<https://api.slack.com/reference/block-kit/blocks>). Exceeding any
/// of them makes Slack answer `invalid_blocks`, a permanent failure, so messages stay below.
const MAX_BLOCKS: usize = 50;
const MAX_HEADER_CHARS: usize = 150;
const MAX_SECTION_CHARS: usize = 3000;
const MAX_FIELD_CHARS: usize = 2000;
/// `text` may be 40k characters, but as a notification preview anything past a few lines is
/// noise; the blocks carry the detail.
const MAX_FALLBACK_CHARS: usize = 3000;
/// Per-attempt bound, so a hung connection becomes a retry instead of a stuck worker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

fn header(text: &str) -> SlackBlock {
    SlackHeaderBlock::new(SlackBlockPlainTextOnly::from(truncate(
        text,
        MAX_HEADER_CHARS,
    )))
    .into()
}

fn section(mrkdwn: String) -> SlackBlock {
    SlackSectionBlock::new()
        .with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(
            truncate(&mrkdwn, MAX_SECTION_CHARS),
        )))
        .into()
}

fn context(mrkdwn: String) -> SlackBlock {
    SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
        SlackBlockMarkDownText::new(truncate(&mrkdwn, MAX_SECTION_CHARS)),
    )])
    .into()
}

/// Inline code in mrkdwn cannot escape a backquote, so one inside an id would end the span early.
fn code(text: &str) -> String {
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
                if let Some(price) = report.price_per_credit {
                    let _ = write!(body, " (cost {})", credits(a.excess_credits * price));
                }
                let _ = write!(
                    body,
                    "; score {} ≤ threshold {}",
                    score(a.score),
                    score(a.threshold)
                );
                let explanation = a.explanation.trim();
                if !explanation.is_empty() {
                    let _ = write!(body, "\n    _{}_", esc(&truncate(explanation, 300)));
                }
            }
            blocks.push(section(body));
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

    let text = if sections.is_empty() {
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
    };
    SlackMessage {
        text: truncate(&text, MAX_FALLBACK_CHARS),
        blocks,
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
    /// Total attempts per `send`, including the first (at least 1).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl SlackConfig {
    /// Defaults for production: 5 attempts, 1 s doubling to at most 60 s (Retry-After wins).
    pub fn new(channel: impl Into<String>, token: SecretString) -> Self {
        Self {
            channel: channel.into(),
            token,
            api_url: None,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
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
        SlackClientError::ApiError(api) => {
            let code = api.code.as_str();
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
        SlackClientError::RateLimitError(rl) => Failure::Retryable {
            message: format!(
                "Slack rate limited the request (HTTP 429{})",
                rl.retry_after
                    .map(|d| format!(", Retry-After {} s", d.as_secs()))
                    .unwrap_or_default()
            ),
            retry_after: rl.retry_after,
        },
        SlackClientError::HttpError(http) => {
            let status = http.status_code;
            let body = http
                .http_response_body
                .as_deref()
                .map(|b| format!(": {}", truncate(b.trim(), 200)))
                .unwrap_or_default();
            let message = format!("Slack answered HTTP {status}{body}");
            if status.is_server_error() || status.as_u16() == 408 {
                Failure::Retryable {
                    message,
                    retry_after: None,
                }
            } else {
                Failure::Permanent(message)
            }
        }
        SlackClientError::ProtocolError(p) => Failure::Retryable {
            message: format!("Slack's answer was not the expected JSON: {}", p.json_error),
            retry_after: None,
        },
        // slack-morphism formats these causes with `{:?}`; walk the chain for readable text.
        SlackClientError::HttpProtocolError(p) => Failure::Retryable {
            message: match p.cause.as_deref() {
                Some(cause) => format!("cannot reach Slack: {}", chain(cause)),
                None => "cannot reach Slack: HTTP protocol error".to_string(),
            },
            retry_after: None,
        },
        SlackClientError::SystemError(e) => Failure::Retryable {
            message: match (e.message.as_deref(), e.cause.as_deref()) {
                (_, Some(cause)) => format!("cannot reach Slack: {}", chain(cause)),
                (Some(m), None) => format!("cannot reach Slack: {m}"),
                (None, None) => "cannot reach Slack: system error".to_string(),
            },
            retry_after: None,
        },
        other => Failure::Retryable {
            message: format!("cannot reach Slack: {}", chain(other)),
            retry_after: None,
        },
    }
}

/// Posts messages to one channel with retries.
///
/// Retries happen inside `send` (short outages, rate limits); the outbox retries failed
/// non-permanent deliveries across runs. Slack has no idempotency key for `chat.postMessage`, so
/// a request that times out after Slack accepted it can still produce a repeat; the outbox's
/// dedupe key prevents every other kind.
pub struct SlackNotifier {
    client: SlackClient<SlackClientHyperHttpsConnector>,
    channel: SlackChannelId,
    token: SecretString,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("channel", &self.channel.0)
            .field("token", &"[REDACTED]")
            .field("max_attempts", &self.max_attempts)
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
        })
    }

    /// Posts `msg` to the configured channel.
    ///
    /// Retries 429 (waiting at least Retry-After), 5xx, transient Slack errors and network
    /// errors with exponential backoff and jitter, up to `max_attempts` in total. Slack's
    /// `invalid_auth`, `channel_not_found` and other request errors fail at once as permanent.
    pub async fn send(&self, msg: &SlackMessage) -> DeliveryOutcome {
        let token = SlackApiToken::new(SlackApiTokenValue(self.token.expose_secret().to_string()));
        let session = self.client.open_session(&token);
        let request = SlackApiChatPostMessageRequest::new(
            self.channel.clone(),
            SlackMessageContent::new()
                .with_text(msg.text.clone())
                .with_blocks(msg.blocks.clone()),
        );

        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = tokio::time::timeout(
                REQUEST_TIMEOUT,
                session.http_session_api.http_post::<_, PostAck>(
                    "chat.postMessage",
                    &request,
                    None,
                ),
            )
            .await;
            let failure = match result {
                Ok(Ok(PostAck { ts: Some(ts) })) => {
                    tracing::info!(
                        channel = %self.channel.0,
                        ts = %ts,
                        attempts = attempt,
                        "Slack message delivered"
                    );
                    return DeliveryOutcome::Delivered {
                        ts,
                        attempts: attempt,
                    };
                }
                // Not Slack (a proxy page?): Slack always returns `ts` for a posted message.
                Ok(Ok(PostAck { ts: None })) => Failure::Retryable {
                    message: "Slack's answer carried no message timestamp".into(),
                    retry_after: None,
                },
                Ok(Err(err)) => classify(&err),
                Err(_) => Failure::Retryable {
                    message: format!(
                        "Slack did not answer within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                    retry_after: None,
                },
            };

            match failure {
                Failure::Permanent(error) => {
                    tracing::error!(channel = %self.channel.0, attempts = attempt, %error,
                        "Slack delivery failed permanently");
                    return DeliveryOutcome::Failed {
                        error,
                        permanent: true,
                        attempts: attempt,
                    };
                }
                Failure::Retryable {
                    message,
                    retry_after,
                } => {
                    if attempt >= self.max_attempts {
                        tracing::warn!(channel = %self.channel.0, attempts = attempt,
                            error = %message, "Slack delivery failed; giving up for now");
                        return DeliveryOutcome::Failed {
                            error: message,
                            permanent: false,
                            attempts: attempt,
                        };
                    }
                    let backoff = self.backoff(attempt);
                    // Retry-After is Slack's instruction, not a hint: never wait less.
                    let wait = retry_after.map_or(backoff, |ra| ra.max(backoff));
                    tracing::warn!(channel = %self.channel.0, attempt, error = %message,
                        wait_ms = wait.as_millis() as u64,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Slack delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
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
