//! `POST /slack/interactivity`: Slack's interactivity requests (a pick in a digest's feedback menu), served by
//! the daemon next to its probes when `[pipeline.slack] signing_secret` is set.
//!
//! Every request is verified before anything is read from it (`snowpatrol_alert::verify_request`: the HMAC
//! signature with the signing secret, a timestamp within five minutes); a request that fails is answered 401
//! and records nothing. A correctly signed request seen before (the same signature within the window) is a
//! replay and refused too; replicas do not share that memory, which is harmless because acknowledging is
//! idempotent. Slack wants an answer within three seconds, so the acknowledgement and the message update run
//! after the 200.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use snowpatrol_alert::{FeedbackError, parse_click, verify_request};
use snowpatrol_pipeline::Pipeline;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Signatures are remembered a little longer than Slack's five-minute window, after which the timestamp check
/// refuses a replay anyway.
const REPLAY_MEMORY_SECS: i64 = 600;

#[derive(Clone)]
struct FeedbackState {
    pipeline: Arc<Pipeline>,
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

/// The interactivity route; merge it into the daemon's router when a signing secret is configured.
pub fn router(pipeline: Arc<Pipeline>) -> Router {
    Router::new()
        .route("/slack/interactivity", post(interactivity))
        .with_state(FeedbackState {
            pipeline,
            seen: Arc::new(Mutex::new(HashMap::new())),
        })
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

async fn interactivity(
    State(s): State<FeedbackState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = s.pipeline.slack_signing_secret() else {
        return refuse(StatusCode::NOT_FOUND, "Slack feedback is not configured");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (ts, sig) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    );
    // A body that is not UTF-8 cannot carry a valid signature over Slack's form encoding.
    let text = std::str::from_utf8(&body).unwrap_or("\u{fffd}");
    if let Err(e) = verify_request(secret, ts, sig, text) {
        warn!(error = %e, "refused a Slack interactivity request");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid Slack signature or timestamp",
        );
    }
    if let Some(sig) = sig {
        let now = chrono::Utc::now().timestamp();
        let mut seen = s.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now - *at < REPLAY_MEMORY_SECS);
        if seen.insert(sig.to_string(), now).is_some() {
            warn!("refused a replayed Slack interactivity request (same signature seen before)");
            return refuse(StatusCode::UNAUTHORIZED, "replayed request");
        }
    }
    let click = match parse_click(text) {
        Ok(c) => c,
        Err(e @ FeedbackError::Malformed(_)) | Err(e @ FeedbackError::Unauthorized(_)) => {
            warn!(error = %e, "a signed Slack interactivity request that is no feedback click");
            return refuse(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let pipeline = s.pipeline.clone();
    tokio::spawn(async move {
        match pipeline.record_feedback(&click).await {
            Ok(outcome) => info!(
                incident_id = click.incident_id,
                ?outcome,
                "Slack feedback handled"
            ),
            Err(e) => {
                warn!(incident_id = click.incident_id, error = %e, "recording Slack feedback failed")
            }
        }
    });
    StatusCode::OK.into_response()
}
