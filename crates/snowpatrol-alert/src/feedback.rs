//! Feedback from Slack: the menu on each incident of a digest ("False positive", "Planned", "Expected"), and
//! the interactivity requests Slack sends when someone picks one.
//!
//! A request is trusted only after [`verify_request`]: Slack signs every request with the app's signing secret
//! (HMAC-SHA256 of `v0:<timestamp>:<body>`), and a timestamp more than five minutes away from now is refused
//! so that a captured request cannot be replayed later. The check is slack-morphism's
//! `SlackEventSignatureVerifier` (constant-time comparison), not a hand-written one.

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;
use slack_morphism::blocks::{
    SlackBlockChoiceItem, SlackBlockOverflowElement, SlackBlockPlainTextOnly,
};
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;
use slack_morphism::{SlackActionId, SlackSigningSecret};

use crate::format::{slack as esc, truncate};

/// `action_id` of the feedback menu; requests carrying another action are not Snowpatrol's.
pub const FEEDBACK_ACTION_ID: &str = "snowpatrol_feedback";

/// The reasons offered, as (value stored with the acknowledgement, label shown in Slack). The values are the
/// `ack_reason`s of `snowpatrol anomalies ack`.
pub const FEEDBACK_REASONS: [(&str, &str); 3] = [
    ("false_positive", "False positive"),
    ("planned", "Planned"),
    ("expected", "Expected (normal for it)"),
];

/// Why an interactivity request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedbackError {
    /// Missing headers, a wrong signature or a timestamp outside the five-minute window (HTTP 401).
    #[error("not a valid Slack request: {0}")]
    Unauthorized(String),
    /// Signed by Slack but not a feedback click this version understands (HTTP 400).
    #[error("not a Snowpatrol feedback click: {0}")]
    Malformed(String),
}

/// Checks Slack's signature of `body` (the raw request body) and the freshness of its timestamp.
pub fn verify_request(
    secret: &SecretString,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &str,
) -> Result<(), FeedbackError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(FeedbackError::Unauthorized(
            "the X-Slack-Request-Timestamp and X-Slack-Signature headers are required".into(),
        ));
    };
    if secret.expose_secret().is_empty() {
        return Err(FeedbackError::Unauthorized(
            "no signing secret is configured".into(),
        ));
    }
    let verifier = SlackEventSignatureVerifier::new(&SlackSigningSecret::new(
        secret.expose_secret().to_string(),
    ));
    // The library's errors name the expected hash prefix and the body length only; safe to log.
    verifier
        .verify(sig, body, ts)
        .map_err(|e| FeedbackError::Unauthorized(e.to_string()))
}

/// One pick in the feedback menu.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackClick {
    pub incident_id: i64,
    /// One of the values of [`FEEDBACK_REASONS`].
    pub reason: String,
    /// Slack user id and name of who picked it.
    pub user_id: String,
    pub user_name: String,
    /// Where to send the updated message (Slack's `response_url`, valid for 30 minutes).
    pub response_url: String,
    /// The message the menu was in, to update it in place.
    pub message_blocks: Option<Value>,
    pub message_text: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: Option<User>,
    #[serde(default)]
    actions: Vec<Action>,
    response_url: Option<String>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct User {
    id: Option<String>,
    username: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: Option<String>,
    selected_option: Option<SelectedOption>,
}

#[derive(Deserialize)]
struct SelectedOption {
    value: String,
}

#[derive(Deserialize)]
struct Message {
    blocks: Option<Value>,
    text: Option<String>,
}

/// The option value of an incident's reason: `ack:<incident_id>:<reason>`.
fn option_value(incident_id: i64, reason: &str) -> String {
    format!("ack:{incident_id}:{reason}")
}

/// Reads a (verified) interactivity request body: `payload=<json>` with a `block_actions` payload whose action
/// is the feedback menu.
pub fn parse_click(body: &str) -> Result<FeedbackClick, FeedbackError> {
    let bad = |m: &str| FeedbackError::Malformed(m.to_string());
    let payload = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| bad("no payload field"))?;
    let p: Payload = serde_json::from_str(&payload)
        .map_err(|e| FeedbackError::Malformed(format!("payload is not the expected JSON: {e}")))?;
    if p.kind != "block_actions" {
        return Err(bad(&format!("payload type {:?}", truncate(&p.kind, 40))));
    }
    let action = p
        .actions
        .iter()
        .find(|a| a.action_id.as_deref() == Some(FEEDBACK_ACTION_ID))
        .ok_or_else(|| bad("no feedback action"))?;
    let value = action
        .selected_option
        .as_ref()
        .map(|o| o.value.as_str())
        .ok_or_else(|| bad("no option selected"))?;
    let mut parts = value.splitn(3, ':');
    let (Some("ack"), Some(id), Some(reason)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("option value is not ack:<incident>:<reason>"));
    };
    let incident_id: i64 = id.parse().map_err(|_| bad("incident id is not a number"))?;
    if !FEEDBACK_REASONS.iter().any(|(v, _)| *v == reason) {
        return Err(FeedbackError::Malformed(format!(
            "reason {:?} is not one of {}",
            truncate(reason, 40),
            FEEDBACK_REASONS.map(|(v, _)| v).join(", ")
        )));
    }
    let user = p.user.ok_or_else(|| bad("no user"))?;
    Ok(FeedbackClick {
        incident_id,
        reason: reason.to_string(),
        user_id: user.id.unwrap_or_default(),
        user_name: user.username.or(user.name).unwrap_or_default(),
        response_url: p.response_url.ok_or_else(|| bad("no response_url"))?,
        message_blocks: p.message.as_ref().and_then(|m| m.blocks.clone()),
        message_text: p.message.and_then(|m| m.text),
    })
}

/// The feedback menu of one incident (a section accessory).
pub(crate) fn feedback_menu(incident_id: i64) -> SlackBlockOverflowElement {
    SlackBlockOverflowElement::new(
        FEEDBACK_REASONS
            .iter()
            .map(|(value, label)| {
                SlackBlockChoiceItem::new(
                    SlackBlockPlainTextOnly::from(*label),
                    option_value(incident_id, value),
                )
            })
            .collect(),
    )
    .with_action_id(SlackActionId::new(FEEDBACK_ACTION_ID.to_string()))
}

/// `block_id` of an incident's section in a digest.
pub(crate) fn incident_block_id(incident_id: i64) -> String {
    format!("incident:{incident_id}")
}

/// The message after a pick: the incident's section loses its menu and says who acknowledged it and why; every
/// other block is unchanged. None when the message has no section for that incident.
pub fn acknowledged_blocks(blocks: &Value, click: &FeedbackClick) -> Option<Value> {
    let mut blocks = blocks.as_array()?.clone();
    let id = incident_block_id(click.incident_id);
    let label = FEEDBACK_REASONS
        .iter()
        .find(|(v, _)| *v == click.reason)
        .map_or(click.reason.as_str(), |(_, l)| l);
    let who = if click.user_id.is_empty() {
        esc(&click.user_name)
    } else {
        format!("<@{}>", esc(&click.user_id))
    };
    let block = blocks
        .iter_mut()
        .find(|b| b["block_id"].as_str() == Some(id.as_str()))?;
    if let Some(obj) = block.as_object_mut() {
        obj.remove("accessory");
    }
    let note = format!("\n      :white_check_mark: acknowledged as *{label}* by {who}");
    // Only a section with a text object is updated; anything else in a (signed) payload is left alone.
    let text = block.get_mut("text")?.as_object_mut()?;
    let old = text.get("text").and_then(Value::as_str).unwrap_or_default();
    let new = truncate(&format!("{old}{note}"), 3000);
    text.insert("text".into(), Value::String(new));
    Some(Value::Array(blocks))
}
