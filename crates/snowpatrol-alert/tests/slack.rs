//! Delivery against a real local HTTP peer (axum on 127.0.0.1:0) standing in for slack.com. The peer makes the
//! checks Slack makes before anything else (bearer token, a channel, text or blocks), then answers from a
//! script (which may hang, like a Slack that accepted a post and never answered).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use common::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use snowpatrol_alert::{
    AlertMetadata, DeliveryOutcome, PostOutcome, Report, SlackConfig, SlackMessage, SlackNotifier,
    failure_message, report_message,
};

const TOKEN: &str = "xoxb-1111-2222-TOPSECRETtoken";
const CHANNEL: &str = "C0123ALERTS";

struct Scripted {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Answer only after this long (a hanging Slack).
    delay: Duration,
}

/// A prompt HTTP 200 answer with `body` as its JSON: how Slack answers every API call, success or error.
fn slack_json(body: Value) -> Scripted {
    Scripted {
        status: 200,
        headers: vec![],
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn slack_ok(ts: &str) -> Scripted {
    slack_json(json!({
        "ok": true, "channel": CHANNEL, "ts": ts,
        "message": {"type": "message", "ts": ts, "text": "…", "bot_id": "B1"}
    }))
}

fn hang() -> Scripted {
    Scripted {
        delay: Duration::from_secs(600),
        ..slack_ok("never")
    }
}

fn slack_error(code: &str) -> Scripted {
    slack_json(json!({"ok": false, "error": code}))
}

fn http_status(status: u16, body: &str) -> Scripted {
    Scripted {
        status,
        headers: vec![],
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

struct Captured {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
    at: Instant,
}

#[derive(Clone, Default)]
struct Peer {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    seen: Arc<Mutex<Vec<Captured>>>,
}

async fn answer(State(peer): State<Peer>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 10 * 1024 * 1024).await.unwrap();
    peer.seen.lock().unwrap().push(Captured {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers.clone(),
        body: body.to_vec(),
        at: Instant::now(),
    });
    // What Slack checks before anything else, whatever the script says.
    let refuse = |code: &str| {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json; charset=utf-8")
            .body(Body::from(json!({"ok": false, "error": code}).to_string()))
            .unwrap()
    };
    match parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => return refuse("not_authed"),
        Some(a) if a != format!("Bearer {TOKEN}") => return refuse("invalid_auth"),
        Some(_) => {}
    }
    if parts.uri.path().ends_with("/chat.postMessage") {
        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if msg["channel"].as_str().is_none_or(str::is_empty) {
            return refuse("channel_not_found");
        }
        let text = msg["text"].as_str().is_some_and(|t| !t.is_empty());
        let blocks = msg["blocks"].as_array().is_some_and(|b| !b.is_empty());
        if !text && !blocks {
            return refuse("no_text");
        }
    }
    let next = peer
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| http_status(599, "test peer: script exhausted"));
    if !next.delay.is_zero() {
        tokio::time::sleep(next.delay).await;
    }
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(next.status).unwrap())
        .header("content-type", "application/json; charset=utf-8");
    for (k, v) in next.headers {
        builder = builder.header(k, v);
    }
    builder.body(Body::from(next.body)).unwrap()
}

/// Starts the peer and returns it with the `api_url` to configure.
async fn start_peer(script: Vec<Scripted>) -> (Peer, String) {
    let peer = Peer::default();
    peer.script.lock().unwrap().extend(script);
    let app = Router::new().fallback(answer).with_state(peer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (peer, format!("http://{addr}/api"))
}

/// Starts a peer answering from `script` and a notifier configured for it with `max_attempts`.
async fn notifier_for(script: Vec<Scripted>, max_attempts: u32) -> (Peer, SlackNotifier) {
    let (peer, url) = start_peer(script).await;
    (
        peer,
        SlackNotifier::new(config(&url, max_attempts)).unwrap(),
    )
}

/// An `api_url` on a port nothing listens on any more: connections to it are refused.
fn refusing_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/api", listener.local_addr().unwrap())
    // Dropped here: the port now refuses connections.
}

fn delivered(ts: &str, attempts: u32) -> DeliveryOutcome {
    DeliveryOutcome::Delivered {
        ts: ts.into(),
        attempts,
    }
}

/// The error, permanence and attempts of a failed delivery; panics (saying `what`) on any other outcome.
fn failure(outcome: DeliveryOutcome, what: &str) -> (String, bool, u32) {
    match outcome {
        DeliveryOutcome::Failed {
            error,
            permanent,
            attempts,
        } => (error, permanent, attempts),
        other => panic!("{what}, got {other:?}"),
    }
}

fn config(api_url: &str, max_attempts: u32) -> SlackConfig {
    SlackConfig {
        channel: CHANNEL.into(),
        token: SecretString::from(TOKEN),
        api_url: Some(api_url.into()),
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
    }
}

fn message() -> SlackMessage {
    report_message(&one_anomaly_report(Some(3.0)))
}

/// The notifier gave up well within 2 s of `started` (its timeouts and backoffs are milliseconds here).
fn assert_prompt(started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

fn assert_no_token(outcome: &DeliveryOutcome) {
    let text = format!("{outcome:?}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains("TOPSECRET"), "token leaked: {text}");
}

#[tokio::test]
async fn delivers_with_the_exact_request_slack_expects() {
    let (peer, notifier) = notifier_for(vec![slack_ok("1741674600.000100")], 3).await;
    let msg = message();

    let outcome = notifier.send(&msg).await;
    assert_eq!(outcome, delivered("1741674600.000100", 1));

    let seen = peer.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/chat.postMessage");
    assert_eq!(
        req.headers.get("authorization").unwrap().to_str().unwrap(),
        format!("Bearer {TOKEN}")
    );
    let content_type = req.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );

    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body,
        json!({"channel": CHANNEL, "text": msg.text, "blocks": msg.blocks_json()}),
        "the body must be exactly channel, text and blocks"
    );
    // And the blocks are the Block Kit shape we promise: header, section per warehouse, context.
    let types: Vec<&str> = body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["header", "section", "context"]);
    assert_eq!(
        body["blocks"][0]["text"],
        json!({"type": "plain_text", "text": "Anomalous activity in Snowflake usage"})
    );
    let section = body["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(
        section.starts_with("*ACME_PROD.COMPUTE_WH* (model v7)"),
        "{section}"
    );
    assert!(
        section.contains("1,234.57 credits, expected 100.00, excess *1,134.57* (cost 3,403.70)"),
        "{section}"
    );
    let ctx = body["blocks"][2]["elements"][0]["text"].as_str().unwrap();
    assert!(ctx.contains("`run-2025-03-11-predict`"), "{ctx}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Anomalous activity in Snowflake usage: 1 anomalous day in 1 warehouse (ACME_PROD.COMPUTE_WH)"),
        "{text}"
    );
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_delivers() {
    let limited = Scripted {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        ..slack_error("ratelimited")
    };
    let (peer, notifier) = notifier_for(vec![limited, slack_ok("1.2")], 3).await;

    let outcome = notifier.send(&message()).await;
    assert_eq!(outcome, delivered("1.2", 2));
    let seen = peer.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    // The backoff alone would be at most 20 ms; only Retry-After explains a full second.
    assert!(gap >= Duration::from_secs(1), "waited only {gap:?}");
    assert!(gap < Duration::from_secs(3), "waited too long: {gap:?}");
    assert_eq!(
        seen[0].body, seen[1].body,
        "the retry must resend the same message"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let (peer, notifier) = notifier_for(
        vec![
            http_status(500, "oops"),
            http_status(503, "<html>unavailable</html>"),
            slack_ok("3.4"),
        ],
        4,
    )
    .await;
    let outcome = notifier.send(&message()).await;
    assert_eq!(outcome, delivered("3.4", 3));
    let seen = peer.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    // Equal-jitter backoff: at least half of 5 ms, then half of 10 ms.
    assert!(seen[1].at - seen[0].at >= Duration::from_micros(2500));
    assert!(seen[2].at - seen[1].at >= Duration::from_millis(5));
}

#[tokio::test]
async fn transient_slack_error_codes_are_retried() {
    let (peer, notifier) =
        notifier_for(vec![slack_error("internal_error"), slack_ok("5.6")], 3).await;
    let outcome = notifier.send(&message()).await;
    assert_eq!(outcome, delivered("5.6", 2));
    assert_eq!(peer.seen.lock().unwrap().len(), 2);
}

async fn permanent(code: &str) -> DeliveryOutcome {
    // A success is queued behind the error: a retry would consume it and deliver.
    let (peer, notifier) = notifier_for(vec![slack_error(code), slack_ok("9.9")], 5).await;
    let outcome = notifier.send(&message()).await;
    assert_eq!(
        peer.seen.lock().unwrap().len(),
        1,
        "{code} must not be retried"
    );
    assert_no_token(&outcome);
    outcome
}

#[tokio::test]
async fn invalid_auth_fails_permanently_without_retrying() {
    let (error, permanent, attempts) = failure(permanent("invalid_auth").await, "expected failure");
    assert!(permanent);
    assert_eq!(attempts, 1);
    assert!(error.contains("invalid_auth"), "{error}");
    assert!(error.contains("token"), "should tell what to fix: {error}");
}

#[tokio::test]
async fn unknown_channel_fails_permanently_without_retrying() {
    let (error, permanent, attempts) =
        failure(permanent("channel_not_found").await, "expected failure");
    assert!(permanent);
    assert_eq!(attempts, 1);
    assert!(error.contains("channel_not_found"), "{error}");
}

#[tokio::test]
async fn client_http_errors_are_permanent() {
    let (peer, notifier) =
        notifier_for(vec![http_status(404, "no such route"), slack_ok("1.1")], 3).await;
    let (error, permanent, _) = failure(notifier.send(&message()).await, "expected failure");
    assert!(permanent);
    assert!(error.contains("404"), "{error}");
    assert_eq!(peer.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn peer_down_fails_retryable_after_max_attempts() {
    let notifier = SlackNotifier::new(config(&refusing_url(), 3)).unwrap();
    let started = Instant::now();
    let outcome = notifier.send(&message()).await;
    assert_no_token(&outcome);
    let (error, permanent, attempts) = failure(outcome, "expected failure");
    println!("peer down: {error}");
    assert!(!permanent, "an unreachable Slack is worth retrying later");
    assert_eq!(attempts, 3);
    assert!(error.contains("cannot reach Slack"), "{error}");
    assert!(
        error.to_lowercase().contains("connection refused"),
        "the cause should be visible: {error}"
    );
    assert_prompt(started);
}

#[tokio::test]
async fn failure_alert_carries_job_task_key_run_and_error() {
    let (peer, notifier) = notifier_for(vec![slack_ok("7.7")], 2).await;
    let msg = failure_message(
        "predict",
        "score_warehouse",
        Some("ACME_PROD.COMPUTE_WH"),
        "run-42",
        "model version 3 not found for ACME_PROD.COMPUTE_WH <retry later> ```",
    );
    assert!(notifier.send(&msg).await.is_delivered());

    let seen = peer.seen.lock().unwrap();
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["channel"], CHANNEL);
    assert_eq!(
        body["text"],
        "Snowpatrol task failed: predict/score_warehouse[ACME_PROD.COMPUTE_WH] in run run-42: \
         model version 3 not found for ACME_PROD.COMPUTE_WH <retry later> ```"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "Snowpatrol task failed: predict / score_warehouse"
    );
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "*Job*\n`predict`",
            "*Task*\n`score_warehouse`",
            "*Key*\n`ACME_PROD.COMPUTE_WH`",
            "*Run*\n`run-42`"
        ]
    );
    let error = blocks[2]["text"]["text"].as_str().unwrap();
    assert_eq!(
        error,
        "*Error*\n```model version 3 not found for ACME_PROD.COMPUTE_WH &lt;retry later&gt; '''```"
    );
    assert_eq!(blocks[3]["type"], "context");
}

#[test]
fn token_never_appears_in_debug_output() {
    let cfg = config("http://127.0.0.1:9/api", 3);
    let debug = format!("{cfg:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
    assert!(debug.contains("REDACTED"), "{debug}");
    assert!(debug.contains(CHANNEL), "{debug}");
    let notifier = SlackNotifier::new(cfg).unwrap();
    let debug = format!("{notifier:?}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
    // The production path (https, system roots) builds too.
    let notifier =
        SlackNotifier::new(SlackConfig::new(CHANNEL, SecretString::from(TOKEN))).unwrap();
    let debug = format!("{notifier:?}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
}

#[test]
fn bad_configs_are_refused_with_clear_errors() {
    let mut cfg = config("ftp://example.invalid", 3);
    let err = SlackNotifier::new(cfg.clone()).unwrap_err().to_string();
    assert!(err.contains("api_url must start with https://"), "{err}");
    cfg.api_url = None;
    cfg.max_attempts = 0;
    let err = SlackNotifier::new(cfg.clone()).unwrap_err().to_string();
    assert!(err.contains("max_attempts"), "{err}");
    cfg.max_attempts = 1;
    cfg.channel = " ".into();
    let err = SlackNotifier::new(cfg.clone()).unwrap_err().to_string();
    assert!(err.contains("channel"), "{err}");
    cfg.channel = CHANNEL.into();
    cfg.token = SecretString::from("  ");
    let err = SlackNotifier::new(cfg).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn messages_round_trip_through_json_for_the_outbox() {
    for msg in [
        message(),
        report_message(&report(None, vec![])),
        failure_message("train", "fit", None, "run-1", "boom"),
    ] {
        let stored = serde_json::to_string(&msg).unwrap();
        let back: SlackMessage = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, msg);
    }
}

/// A report on `n` warehouses, each with one anomalous day.
fn report_on_anomalous_warehouses(n: usize) -> Report {
    let sections = (0..n)
        .map(|i| {
            section(
                "ACME",
                &format!("WH_{i:02}"),
                vec![anomaly("2025-03-10", 500.0, 100.0)],
            )
        })
        .collect();
    report(None, sections)
}

#[test]
fn many_warehouses_stay_within_slacks_block_limit() {
    let msg = report_message(&report_on_anomalous_warehouses(80));
    assert_eq!(msg.blocks.len(), 50);
    let json = msg.blocks_json();
    let last_section = json[48]["text"]["text"].as_str().unwrap();
    assert!(
        last_section.contains("…and 33 more warehouses"),
        "{last_section}"
    );
    assert_eq!(json[49]["type"], "context");
    assert!(msg.text.chars().count() <= 3000);

    // 48 sections fit exactly (header + 48 + context = 50): no "more" line then.
    let msg = report_message(&report_on_anomalous_warehouses(48));
    assert_eq!(msg.blocks.len(), 50);
    assert!(
        !serde_json::to_string(&msg.blocks)
            .unwrap()
            .contains("more warehouses")
    );
}

#[tokio::test]
async fn the_peer_refuses_a_wrong_or_missing_token_and_an_empty_message() {
    // Scripted successes behind each check: only a request that passes them would consume one.
    let (peer, url) = start_peer(vec![slack_ok("1.1"), slack_ok("1.2")]).await;
    let mut cfg = config(&url, 3);
    cfg.token = SecretString::from("xoxb-wrong");
    let wrong = SlackNotifier::new(cfg).unwrap();
    let (error, permanent, _) = failure(
        wrong.send(&message()).await,
        "a wrong token must be refused",
    );
    assert!(permanent);
    assert!(error.contains("invalid_auth"), "{error}");
    let notifier = SlackNotifier::new(config(&url, 3)).unwrap();
    let empty = SlackMessage {
        text: String::new(),
        blocks: vec![],
    };
    match notifier.post_once(&empty, None).await {
        PostOutcome::Rejected { error } => assert!(error.contains("no_text"), "{error}"),
        other => panic!("an empty message must be refused: {other:?}"),
    }
    assert_eq!(
        peer.script.lock().unwrap().len(),
        2,
        "nothing got past the checks"
    );
    assert!(notifier.post_once(&message(), None).await == PostOutcome::Posted { ts: "1.1".into() });
}

#[tokio::test]
async fn post_once_sends_the_alert_metadata_and_find_posted_reads_it_back() {
    let history = slack_json(json!({"ok": true, "has_more": false, "messages": [
        {"type": "message", "ts": "1700000002.000200", "text": "other"},
        {"type": "message", "ts": "1700000001.000100", "text": "…",
         "metadata": {"event_type": "snowpatrol_alert", "event_payload": {"dedupe_key": "incident:42", "alert_id": "7"}}},
        {"type": "message", "ts": "1700000000.000100", "text": "…",
         "metadata": {"event_type": "someone_else", "event_payload": {"dedupe_key": "incident:43"}}}
    ]}));
    let (peer, notifier) = notifier_for(vec![slack_ok("1700000001.000100"), history], 3).await;
    let meta = AlertMetadata {
        dedupe_key: "incident:42".into(),
        alert_id: 7,
    };
    assert_eq!(
        notifier.post_once(&message(), Some(&meta)).await,
        PostOutcome::Posted {
            ts: "1700000001.000100".into()
        }
    );
    let since = chrono::DateTime::from_timestamp(1_700_000_100, 0).unwrap();
    let keys = ["incident:42".to_string(), "incident:43".to_string()].into();
    let found = notifier.find_posted(since, &keys, 3).await.unwrap();
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        vec![("incident:42".to_string(), "1700000001.000100".to_string())],
        "only Snowpatrol's own event type counts"
    );

    let seen = peer.seen.lock().unwrap();
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body["metadata"],
        json!({"event_type": "snowpatrol_alert", "event_payload": {"dedupe_key": "incident:42", "alert_id": "7"}})
    );
    assert_eq!(
        body["text"],
        json!(message().text),
        "the message itself is unchanged"
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("GET", "/api/conversations.history")
    );
    let query = &seen[1].query;
    assert!(query.contains(&format!("channel={CHANNEL}")), "{query}");
    assert!(query.contains("include_all_metadata=true"), "{query}");
    // Two minutes before `since`, for clock skew.
    assert!(query.contains("oldest=1699999980.000000"), "{query}");
}

#[tokio::test]
async fn a_post_left_unanswered_is_unknown_after_the_request_timeout() {
    let (_peer, url) = start_peer(vec![hang()]).await;
    let mut cfg = config(&url, 3);
    cfg.request_timeout = Duration::from_millis(300);
    let notifier = SlackNotifier::new(cfg).unwrap();
    let started = Instant::now();
    let outcome = notifier.post_once(&message(), None).await;
    assert!(
        matches!(&outcome, PostOutcome::Unknown { error } if error.contains("did not answer")),
        "{outcome:?}"
    );
    assert_prompt(started);
}

#[tokio::test]
async fn refused_connections_are_not_posted_and_gateway_timeouts_are_unknown() {
    let notifier = SlackNotifier::new(config(&refusing_url(), 1)).unwrap();
    let outcome = notifier.post_once(&message(), None).await;
    assert!(
        matches!(outcome, PostOutcome::NotPosted { .. }),
        "{outcome:?}"
    );

    let (_peer, notifier) = notifier_for(
        vec![
            http_status(504, "gateway timeout"),
            http_status(503, "down"),
        ],
        1,
    )
    .await;
    let outcome = notifier.post_once(&message(), None).await;
    assert!(
        matches!(outcome, PostOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    let outcome = notifier.post_once(&message(), None).await;
    assert!(
        matches!(outcome, PostOutcome::NotPosted { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_connection_closed_after_the_request_was_sent_is_unknown() {
    // Reads the whole request, then closes without answering: Slack may have posted it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::Read as _;
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            drop(stream);
        }
    });
    let notifier = SlackNotifier::new(config(&url, 1)).unwrap();
    let outcome = notifier.post_once(&message(), None).await;
    assert!(
        matches!(&outcome, PostOutcome::Unknown { error } if error.contains("cannot reach Slack")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn find_posted_follows_the_cursor_and_refuses_to_guess_past_its_page_limit() {
    let page = |messages: Value, cursor: &str| {
        slack_json(
            json!({"ok": true, "messages": messages, "has_more": !cursor.is_empty(),
                          "response_metadata": {"next_cursor": cursor}}),
        )
    };
    let ours = json!([{"ts": "5.5", "metadata": {"event_type": "snowpatrol_alert", "event_payload": {"dedupe_key": "k"}}}]);
    let (peer, notifier) = notifier_for(
        vec![
            page(json!([{"ts": "6.6", "text": "chatter"}]), "page2"),
            page(ours, ""),
            page(json!([{"ts": "6.6", "text": "chatter"}]), "page2"),
        ],
        1,
    )
    .await;
    let keys = ["k".to_string()].into();
    let since = chrono::Utc::now();
    let found = notifier.find_posted(since, &keys, 3).await.unwrap();
    assert_eq!(found.get("k").map(String::as_str), Some("5.5"));
    assert!(peer.seen.lock().unwrap()[1].query.contains("cursor=page2"));
    // One page allowed and more to read: not "not found" (which would mean a repeat post), a retryable failure.
    let err = notifier.find_posted(since, &keys, 1).await.unwrap_err();
    assert!(!err.permanent, "{err:?}");
    assert!(err.error.contains("more than 1 pages"), "{err:?}");
}
