//! The alert outbox against a local Slack peer, on PostgreSQL and SQLite: predict finishes while Slack hangs,
//! each alert reaches the channel exactly once (an unanswered post is found by its metadata instead of being
//! posted again, a dead sender's claim is taken over, two senders never send one row), 429 Retry-After and
//! 500s are retried with backoff up to a final `failed`, and the 0004 upgrade of a 0003 outbox.

mod common;
mod previous_release;

use common::{CHANNEL, CHANNEL_2, Mode, SlackPeer, TOKEN};
use serde_json::json;
use snowpatrol_engine::{CancellationToken, RunState, SchedulerSettings};
use snowpatrol_pipeline::alerts::Enqueued;
use snowpatrol_pipeline::store::{AlertKind, AlertRow, AlertState};
use snowpatrol_pipeline::{Pipeline, PipelineConfig};
use snowpatrol_store::{Database, Pool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
            let url = snowpatrol_store::testing::empty_postgres_url().await;
            super::$name(super::Backend::Postgres(url)).await
        } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            super::$name(super::Backend::Sqlite { path: dir.path().join("snowpatrol.db"), _dir: dir }).await
        } )* }
    };
}

both_backends!(
    predict_finishes_while_slack_hangs_and_each_alert_goes_out_once,
    an_unanswered_post_is_found_in_the_history_not_posted_again,
    a_dead_senders_claim_is_taken_over_after_it_expires_and_sent_once,
    rate_limits_are_waited_out_and_server_errors_end_in_failed,
    two_senders_never_send_the_same_alert,
    shutdown_hands_claims_back_instead_of_leaving_them_sending,
    upgrade_from_0003_keeps_every_alert_and_maps_its_state,
    routes_send_each_channel_its_digest_and_hold_back_what_is_below_their_minimums,
);

enum Backend {
    Postgres(String),
    /// The file, and its directory kept alive for the test.
    Sqlite {
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    },
}

impl Backend {
    /// A new connection pool to the test database (each call: another "replica" on PostgreSQL).
    async fn connect(&self) -> Database {
        match self {
            Backend::Postgres(url) => Database::connect(url).await.expect("connect"),
            Backend::Sqlite { path, .. } => Database::open_sqlite_file(path).await.expect("open"),
        }
    }
    async fn migrated(&self) -> Database {
        let db = self.connect().await;
        snowpatrol_pipeline::migrate(&db).await.expect("migrate");
        db
    }
}

/// The pipeline with Slack pointed at `peer`: short timeouts and backoff so the tests take seconds.
fn pipeline(db: &Database, peer: &SlackPeer, dir: &std::path::Path, extra: &str) -> Arc<Pipeline> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token_file = dir.join("slack-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let cfg: PipelineConfig = toml::from_str(&format!(
        r#"
        {extra}
        [slack]
        channel = "{CHANNEL}"
        token_env = "SNOWPATROL_OUTBOX_TEST_TOKEN_NOT_SET"
        token_file = "{}"
        api_url = "{}"
        max_attempts = 4
        request_timeout = "1s"
        initial_backoff = "200ms"
        max_backoff = "1s"
        claim_ttl = "6s"
        "#,
        token_file.display(),
        peer.api_url
    ))
    .unwrap();
    Pipeline::new(db.clone(), cfg, dir.to_path_buf()).unwrap()
}

/// The synthetic source the chain tests run on (its scored window holds incidents on dev and ad-hoc warehouses).
const SYNTHETIC_SOURCE: &str = "[source]\nkind = \"synthetic\"\nseed = 11\nwarehouses = 8\ndays = 150\nend = \"2025-06-30\"\n[predict]\nscore_days = 45\n";

fn message(n: usize) -> snowpatrol_alert::SlackMessage {
    snowpatrol_alert::failure_message(
        "predict",
        "score_warehouse",
        Some(&format!("A.W{n}")),
        "7",
        "boom",
    )
}

async fn enqueue(p: &Pipeline, key: &str, n: usize) -> i64 {
    match p
        .enqueue_alert(key, AlertKind::TaskFailure, Some(7), &message(n), None)
        .await
        .unwrap()
    {
        Enqueued::Queued(id) => id,
        Enqueued::Duplicate => panic!("{key} was queued before"),
    }
}

async fn alert(p: &Pipeline, id: i64) -> AlertRow {
    p.store
        .list_alerts(false, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alert_id == id)
        .unwrap()
}

/// Runs a sender loop until every alert is delivered or failed (or `limit` passes).
async fn wait_settled(p: &Pipeline, limit: Duration) -> Vec<AlertRow> {
    let start = Instant::now();
    loop {
        let rows = p.store.list_alerts(false, 10_000).await.unwrap();
        if rows.iter().all(|a| {
            matches!(
                a.state,
                AlertState::Sent | AlertState::Failed | AlertState::Written
            )
        }) {
            return rows;
        }
        assert!(
            start.elapsed() < limit,
            "alerts not settled after {limit:?}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The product chain through the daemon with Slack hanging: predict (score + report) succeeds without waiting
/// for Slack, its alerts are queued; once Slack answers again, the sender delivers each exactly once.
async fn predict_finishes_while_slack_hangs_and_each_alert_goes_out_once(backend: Backend) {
    let db = backend.migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    peer.set_mode(Mode::Hang);
    let pipeline = pipeline(&db, &peer, dir.path(), SYNTHETIC_SOURCE);
    let Chain {
        predict,
        stop,
        daemon,
        sender,
    } = run_chain(&db, &pipeline).await;
    assert_eq!(predict.state, RunState::Success, "{predict:?}");
    let took = (predict.finished_at.unwrap() - predict.started_at.unwrap())
        .to_std()
        .unwrap();
    // Finished while Slack was (and is) hanging: nothing reached the channel, every alert is still queued.
    let queued = pipeline.store.list_alerts(false, 1000).await.unwrap();
    assert!(!queued.is_empty(), "the synthetic window holds incidents");
    assert_eq!(peer.channel().len(), 0);
    assert!(
        queued
            .iter()
            .all(|a| matches!(a.state, AlertState::Pending | AlertState::Sending)),
        "{queued:#?}"
    );
    // The sender tries Slack on its own schedule (woken by the enqueue, off predict's path): it may not have
    // reached the hanging peer by the moment predict finished, so wait for its first attempt.
    let asked = std::time::Instant::now();
    while peer.count("chat.postMessage", "hang") == 0 {
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(10),
            "the sender never tried Slack"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    println!(
        "predict run took {:.2} s with Slack hanging; {} alerts queued; {} posts hung so far",
        took.as_secs_f64(),
        queued.len(),
        peer.count("chat.postMessage", "hang")
    );

    peer.set_mode(Mode::Normal);
    let rows = wait_settled(&pipeline, Duration::from_secs(60)).await;
    for a in &rows {
        assert_eq!(a.state, AlertState::Sent, "{a:?}");
        if a.thread_of.is_none() {
            assert_eq!(
                peer.posts_for(&a.dedupe_key),
                1,
                "{} posted once",
                a.dedupe_key
            );
        }
        assert!(a.slack_ts.is_some());
    }
    // Chart replies: each shared exactly once (their slack_ts is the file id).
    let files = peer.shared_files();
    let replies: Vec<_> = rows.iter().filter(|a| a.thread_of.is_some()).collect();
    assert_eq!(files.len(), replies.len(), "{files:?}");
    for r in replies {
        assert_eq!(
            files
                .iter()
                .filter(|f| Some(&f.file_id) == r.slack_ts.as_ref())
                .count(),
            1
        );
    }
    assert!(
        rows.iter().any(|a| a.attempts >= 2),
        "the post that hung was an attempt: {rows:#?}"
    );
    assert_eq!(
        peer.channel().len(),
        rows.iter().filter(|a| a.thread_of.is_none()).count(),
        "no repeat, no stray message"
    );
    println!(
        "after Slack recovered: {} alerts, {} messages in the channel, {} history look-ups",
        rows.len(),
        peer.channel().len(),
        peer.count("conversations.history", "history")
    );
    stop.cancel();
    daemon.await.unwrap().unwrap();
    sender.await.unwrap();
}

/// Slack accepts the post and never answers (the timeout case): the row is `pending` with `outcome_unknown`;
/// the next attempt finds the message by its metadata in conversations.history and records its ts.
async fn an_unanswered_post_is_found_in_the_history_not_posted_again(backend: Backend) {
    let db = backend.migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    let p = pipeline(&db, &peer, dir.path(), "");
    peer.set_mode_for(Mode::AcceptThenHang, 1);
    let id = enqueue(&p, "incident:1", 1).await;

    let started = Instant::now();
    let pass = p.deliver_due_alerts().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by request_timeout: {:?}",
        started.elapsed()
    );
    assert_eq!((pass.claimed, pass.retrying), (1, 1), "{pass:?}");
    let row = alert(&p, id).await;
    assert_eq!(
        (row.state, row.attempts, row.outcome_unknown),
        (AlertState::Pending, 1, true),
        "{row:?}"
    );
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("did not answer"),
        "{row:?}"
    );
    assert!(row.next_attempt_at.is_some() && row.first_attempt_at.is_some());
    assert_eq!(peer.posts_for("incident:1"), 1, "the post arrived");
    let ts = peer.channel()[0].ts.clone();
    // The post carried the metadata the look-up matches on.
    let body = &peer.channel()[0].body;
    assert_eq!(body["metadata"]["event_type"], json!("snowpatrol_alert"));
    assert_eq!(
        body["metadata"]["event_payload"]["alert_id"],
        json!(id.to_string())
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pass = p.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.found_in_history, pass.sent), (1, 0), "{pass:?}");
    let row = alert(&p, id).await;
    assert_eq!(
        (row.state, row.slack_ts.as_deref(), row.outcome_unknown),
        (AlertState::Sent, Some(ts.as_str()), false)
    );
    assert_eq!(peer.posts_for("incident:1"), 1, "not posted again");
    let history: Vec<_> = peer
        .requests()
        .into_iter()
        .filter(|r| r.0.ends_with("conversations.history"))
        .collect();
    assert_eq!(history.len(), 1);
    assert!(
        history[0].1.contains("include_all_metadata=true"),
        "{:?}",
        history[0]
    );
    let oldest: f64 = history[0]
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("oldest="))
        .unwrap()
        .parse()
        .unwrap();
    let first = row.first_attempt_at.unwrap();
    assert!(
        oldest <= first.timestamp() as f64,
        "looks back to the first attempt: {oldest} vs {first}"
    );

    // A look-up that finds nothing posts (once) with a fresh attempt.
    let id2 = enqueue(&p, "incident:2", 2).await;
    peer.set_mode_for(Mode::Hang, 1);
    p.deliver_due_alerts().await.unwrap();
    assert!(alert(&p, id2).await.outcome_unknown);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pass = p.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.found_in_history, pass.sent), (0, 1), "{pass:?}");
    assert_eq!(peer.posts_for("incident:2"), 1);
    assert_eq!(alert(&p, id2).await.state, AlertState::Sent);
}

/// A sender killed mid-attempt leaves its row `sending`: nobody touches it while the claim is valid; after it
/// expires (seconds, not 10 minutes) another sender takes it over, looks in the history first, and sends it
/// once, or records the message the dead sender's post left in the channel.
async fn a_dead_senders_claim_is_taken_over_after_it_expires_and_sent_once(backend: Backend) {
    let db = backend.migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    let p = pipeline(&db, &peer, dir.path(), "");
    let never_posted = enqueue(&p, "failure:1:t:", 1).await;
    let posted = enqueue(&p, "failure:2:t:", 2).await;
    let expires = snowpatrol_store::now() + chrono::Duration::milliseconds(1500);
    let claimed = p
        .store
        .claim_alerts("dead-host:1:dead", expires, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // The dead sender's post of the second alert reached Slack before it was killed.
    let dead_ts = peer.inject(json!({
        "channel": CHANNEL, "text": "…",
        "metadata": {"event_type": "snowpatrol_alert", "event_payload": {"dedupe_key": "failure:2:t:", "alert_id": posted.to_string()}}
    }));

    let pass = p.deliver_due_alerts().await.unwrap();
    assert_eq!(pass.claimed, 0, "a valid claim belongs to its sender");
    let row = alert(&p, never_posted).await;
    assert_eq!(
        (row.state, row.claimed_by.as_deref()),
        (AlertState::Sending, Some("dead-host:1:dead"))
    );

    tokio::time::sleep(Duration::from_millis(1700)).await;
    let pass = p.deliver_due_alerts().await.unwrap();
    assert_eq!(
        (pass.claimed, pass.sent, pass.found_in_history),
        (2, 1, 1),
        "{pass:?}"
    );
    let a = alert(&p, never_posted).await;
    let b = alert(&p, posted).await;
    assert_eq!(
        (a.state, a.attempts),
        (AlertState::Sent, 2),
        "the dead attempt counts: {a:?}"
    );
    assert_eq!(
        (b.state, b.slack_ts.as_deref()),
        (AlertState::Sent, Some(dead_ts.as_str()))
    );
    assert_eq!(peer.posts_for("failure:1:t:"), 1);
    assert_eq!(peer.posts_for("failure:2:t:"), 1, "not posted again");
    assert_eq!(
        peer.count("conversations.history", "history"),
        1,
        "one look-up for the batch"
    );

    // A sender whose claim was taken over cannot overwrite the new owner's outcome.
    let c = enqueue(&p, "failure:3:t:", 3).await;
    let expired = snowpatrol_store::now() - chrono::Duration::seconds(1);
    p.store
        .claim_alerts("slow-sender", expired, 10)
        .await
        .unwrap();
    let taken = p
        .store
        .claim_alerts(
            "new-owner",
            snowpatrol_store::now() + chrono::Duration::seconds(60),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        taken.iter().map(|r| r.alert_id).collect::<Vec<_>>(),
        vec![c]
    );
    let stale = snowpatrol_pipeline::store::AlertAttempt {
        state: AlertState::Failed,
        counted: 1,
        error: Some("late".into()),
        slack_ts: None,
        next_attempt_at: None,
        outcome_unknown: false,
    };
    assert!(
        !p.store
            .finish_alert_attempt(c, "slow-sender", &stale)
            .await
            .unwrap()
    );
    assert_eq!(alert(&p, c).await.claimed_by.as_deref(), Some("new-owner"));
}

/// 429: the post waits at least Retry-After and the other alerts wait only as long (handed back untried, not
/// counted as attempts). 500s: backoff between attempts, `failed` after `max_attempts`.
async fn rate_limits_are_waited_out_and_server_errors_end_in_failed(backend: Backend) {
    let db = backend.migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    let p = pipeline(&db, &peer, dir.path(), "");
    let stop = CancellationToken::new();
    peer.set_mode_for(Mode::RateLimited(1), 1);
    let ids = [
        enqueue(&p, "rl:1", 1).await,
        enqueue(&p, "rl:2", 2).await,
        enqueue(&p, "rl:3", 3).await,
    ];
    let sender = tokio::spawn(p.clone().outbox_sender_loop(stop.clone()));
    let rows = wait_settled(&p, Duration::from_secs(20)).await;
    assert!(
        rows.iter().all(|a| a.state == AlertState::Sent),
        "{rows:#?}"
    );
    for k in ["rl:1", "rl:2", "rl:3"] {
        assert_eq!(peer.posts_for(k), 1, "{k}");
    }
    let reqs = peer.requests();
    let limited = reqs.iter().find(|r| r.2 == "429").unwrap().3;
    let next = reqs.iter().find(|r| r.2 == "posted").unwrap().3;
    let gap = next - limited;
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After honoured: {gap:?}"
    );
    assert!(gap < Duration::from_secs(5), "and not much more: {gap:?}");
    assert_eq!(alert(&p, ids[0]).await.attempts, 2);
    assert_eq!(alert(&p, ids[1]).await.attempts, 1, "handed back untried");

    peer.set_mode(Mode::ServerError);
    let id = enqueue(&p, "err:1", 4).await;
    let rows = wait_settled(&p, Duration::from_secs(20)).await;
    let row = rows.iter().find(|a| a.alert_id == id).unwrap();
    assert_eq!(
        (row.state, row.attempts),
        (AlertState::Failed, 4),
        "{row:?}"
    );
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{row:?}"
    );
    assert!(
        row.last_error.as_deref().unwrap().contains("500"),
        "{row:?}"
    );
    let times: Vec<Instant> = peer
        .requests()
        .iter()
        .filter(|r| r.2 == "500")
        .map(|r| r.3)
        .collect();
    assert_eq!(times.len(), 4);
    // Equal-jitter backoff from 200 ms: at least 100, 200, 400 ms between attempts.
    for (i, w) in times.windows(2).enumerate() {
        assert!(
            w[1] - w[0] >= Duration::from_millis(100 << i),
            "attempt {}: {:?}",
            i + 2,
            w[1] - w[0]
        );
    }
    assert_eq!(peer.posts_for("err:1"), 0);
    stop.cancel();
    sender.await.unwrap();
}

/// Two pipeline instances (on PostgreSQL two connection pools, as two replicas) with a sender each, on one
/// outbox: every alert is posted exactly once, and both senders did part of the work.
async fn two_senders_never_send_the_same_alert(backend: Backend) {
    let db_a = backend.migrated().await;
    let db_b = backend.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    peer.set_post_delay(Duration::from_millis(20));
    let a = pipeline(&db_a, &peer, dir.path(), "");
    let b = pipeline(&db_b, &peer, dir.path(), "");
    assert_ne!(a.outbox_sender_id(), b.outbox_sender_id());
    let n = 40;
    for i in 0..n {
        enqueue(if i % 2 == 0 { &a } else { &b }, &format!("k:{i}"), i).await;
    }
    let run = |p: Arc<Pipeline>| {
        tokio::spawn(async move {
            let mut sent = 0;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                let pass = p.deliver_due_alerts().await.unwrap();
                sent += pass.sent;
                if pass.claimed == 0 && p.store.next_alert_due().await.unwrap().is_none() {
                    break;
                }
            }
            sent
        })
    };
    let (ta, tb) = (run(a.clone()), run(b.clone()));
    let (sa, sb) = (ta.await.unwrap(), tb.await.unwrap());
    println!("two senders: {sa} + {sb} posts for {n} alerts");
    assert_eq!(sa + sb, n);
    assert!(sa > 0 && sb > 0, "both senders worked: {sa} + {sb}");
    for i in 0..n {
        assert_eq!(peer.posts_for(&format!("k:{i}")), 1, "k:{i}");
    }
    assert_eq!(peer.channel().len(), n);
    let rows = a.store.list_alerts(false, 1000).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.state == AlertState::Sent && r.attempts == 1),
        "{rows:#?}"
    );
}

/// SIGTERM while Slack hangs: the sender loop stops within one request timeout, the attempt in flight is
/// recorded (outcome unknown) and the other claimed rows go back to `pending` at once: nothing stays
/// `sending` for another replica to wait out.
async fn shutdown_hands_claims_back_instead_of_leaving_them_sending(backend: Backend) {
    let db = backend.migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    peer.set_mode(Mode::Hang);
    let p = pipeline(&db, &peer, dir.path(), "");
    for i in 0..3 {
        enqueue(&p, &format!("stop:{i}"), i).await;
    }
    let stop = CancellationToken::new();
    let sender = tokio::spawn(p.clone().outbox_sender_loop(stop.clone()));
    let start = Instant::now();
    while peer.count("chat.postMessage", "hang") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the sender never posted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = Instant::now();
    stop.cancel();
    sender.await.unwrap();
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "stopped within a request timeout: {took:?}"
    );
    let rows = p.store.list_alerts(false, 10).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.state == AlertState::Pending && r.claimed_by.is_none()),
        "{rows:#?}"
    );
    let tried: Vec<_> = rows.iter().filter(|r| r.attempts == 1).collect();
    assert_eq!(tried.len(), 1, "one attempt was in flight: {rows:#?}");
    assert!(
        tried[0].outcome_unknown,
        "its outcome is unknown: {:?}",
        tried[0]
    );
    assert!(
        rows.iter()
            .filter(|r| r.attempts == 0)
            .all(|r| !r.outcome_unknown && r.next_attempt_at.is_none()),
        "handed back untried, due at once: {rows:#?}"
    );
    println!(
        "sender stopped {:.2} s after shutdown with a post hanging",
        took.as_secs_f64()
    );
}

/// (key, state, attempts, claimed_at, slack_ts, last_error) of a row as the release before 0004 wrote it.
type Old<'a> = (
    &'a str,
    &'a str,
    i32,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<&'a str>,
    Option<&'a str>,
);

/// Inserts rows with the columns the release before 0004 wrote.
async fn insert_old(
    db: &Database,
    rows: &[Old<'_>],
    msg: &str,
    now: chrono::DateTime<chrono::Utc>,
) {
    for (key, state, attempts, claimed, ts, err) in rows {
        let sql = "INSERT INTO alerts (dedupe_key, kind, run_id, channel, message, state, attempts, last_error, slack_ts, claimed_at, created_at) \
                   VALUES ($1, 'anomaly', 1, 'C123', $2, $3, $4, $5, $6, $7, $8)";
        // The same statement on either backend's pool (a different type each); only the message's type
        // differs: JSON on PostgreSQL, text on SQLite.
        macro_rules! insert {
            ($pool:expr, $message:expr) => {
                sqlx::query(sql)
                    .bind(key)
                    .bind($message)
                    .bind(state)
                    .bind(attempts)
                    .bind(err)
                    .bind(ts)
                    .bind(claimed)
                    .bind(now - chrono::Duration::hours(1))
                    .execute($pool)
                    .await
                    .unwrap()
            };
        }
        match db.pool() {
            Pool::Postgres(p) => {
                insert!(
                    p,
                    sqlx::types::Json(serde_json::from_str::<serde_json::Value>(msg).unwrap())
                );
            }
            Pool::Sqlite(p) => {
                insert!(p, msg);
            }
        }
    }
}

/// A 0003 outbox (written by the previous release) upgraded in place: every row kept; pending rows due at
/// once; a row the previous release left `sending` keeps its 10-minute rule and is looked up before a re-post;
/// delivered and failed rows untouched; the CHECK constraint accepts exactly the Rust enum's states.
async fn upgrade_from_0003_keeps_every_alert_and_maps_its_state(backend: Backend) {
    let db = backend.connect().await;
    previous_release::migrate_to(&db, 3).await;
    let msg = serde_json::to_string(&message(0)).unwrap();
    let now = snowpatrol_store::now();
    let old_claim = now - chrono::Duration::minutes(11);
    let fresh_claim = now - chrono::Duration::minutes(2);
    let rows: Vec<Old> = vec![
        (
            "old:pending",
            "pending",
            2,
            Some(now - chrono::Duration::minutes(30)),
            None,
            Some("HTTP 503"),
        ),
        (
            "old:sending-stale",
            "sending",
            0,
            Some(old_claim),
            None,
            None,
        ),
        (
            "old:sending-fresh",
            "sending",
            0,
            Some(fresh_claim),
            None,
            None,
        ),
        (
            "old:sent",
            "sent",
            1,
            Some(now),
            Some("1700000000.000100"),
            None,
        ),
        (
            "old:failed",
            "failed",
            1,
            Some(now),
            None,
            Some("invalid_auth"),
        ),
        ("old:written", "written", 1, Some(now), None, None),
    ];
    insert_old(&db, &rows, &msg, now).await;
    snowpatrol_pipeline::migrate(&db).await.unwrap();
    assert!(snowpatrol_pipeline::schema_ready(&db).await.unwrap());
    // Rows a replica of the previous release writes during a rolling upgrade: `sending` without an expiry.
    let rolling: Vec<Old> = vec![
        ("rolling:stale", "sending", 0, Some(old_claim), None, None),
        ("rolling:fresh", "sending", 0, Some(now), None, None),
    ];
    insert_old(&db, &rolling, &msg, now).await;

    let peer = SlackPeer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(&db, &peer, dir.path(), "");
    let by_key = |rows: Vec<AlertRow>| -> BTreeMap<String, AlertRow> {
        rows.into_iter()
            .map(|r| (r.dedupe_key.clone(), r))
            .collect()
    };
    let after = by_key(p.store.list_alerts(false, 100).await.unwrap());
    assert_eq!(after.len(), rows.len() + rolling.len(), "no row lost");
    let pending = &after["old:pending"];
    assert_eq!(
        (
            pending.state,
            pending.attempts,
            pending.next_attempt_at,
            pending.outcome_unknown
        ),
        (AlertState::Pending, 2, None, false)
    );
    assert_eq!(pending.last_error.as_deref(), Some("HTTP 503"));
    for key in ["old:sending-stale", "old:sending-fresh"] {
        let r = &after[key];
        assert_eq!(
            (r.state, r.claimed_by.as_deref(), r.outcome_unknown),
            (AlertState::Sending, Some("before-0004"), true),
            "{r:?}"
        );
        let expiry = r.claim_expires_at.unwrap();
        let claimed = if key.ends_with("stale") {
            old_claim
        } else {
            fresh_claim
        };
        let diff = (expiry - claimed - chrono::Duration::minutes(10))
            .num_milliseconds()
            .abs();
        assert!(diff < 5, "claimed_at + 10 min: {expiry} vs {claimed}");
    }
    assert_eq!(
        (
            after["old:sent"].state,
            after["old:sent"].slack_ts.as_deref()
        ),
        (AlertState::Sent, Some("1700000000.000100"))
    );
    assert_eq!(
        (
            after["old:failed"].state,
            after["old:failed"].last_error.as_deref()
        ),
        (AlertState::Failed, Some("invalid_auth"))
    );
    assert_eq!(after["old:written"].state, AlertState::Written);

    // The sender: the pending row and the stale claim go out (the stale one after a look-up), once each; the
    // fresh claim of the previous release is left alone until its 10 minutes are up.
    let pass = p.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.claimed, pass.sent), (3, 3), "{pass:?}");
    assert_eq!(peer.count("conversations.history", "history"), 1);
    let after = by_key(p.store.list_alerts(false, 100).await.unwrap());
    assert_eq!(after["old:pending"].state, AlertState::Sent);
    assert_eq!(after["old:sending-stale"].state, AlertState::Sent);
    assert_eq!(after["rolling:stale"].state, AlertState::Sent);
    assert_eq!(after["old:sending-fresh"].state, AlertState::Sending);
    assert_eq!(after["rolling:fresh"].state, AlertState::Sending);
    assert_eq!(peer.channel().len(), 3);

    // The CHECK constraint and the enum agree.
    for (i, state) in AlertState::ALL.iter().enumerate() {
        let sql = "INSERT INTO alerts (dedupe_key, kind, channel, message, state, created_at) VALUES ($1, 'anomaly', 'C', $2, $3, $4)";
        let key = format!("check:{i}");
        let ok = match db.pool() {
            Pool::Postgres(pg) => sqlx::query(sql)
                .bind(&key)
                .bind(sqlx::types::Json(json!({})))
                .bind(state.as_str())
                .bind(now)
                .execute(pg)
                .await
                .is_ok(),
            Pool::Sqlite(l) => sqlx::query(sql)
                .bind(&key)
                .bind("{}")
                .bind(state.as_str())
                .bind(now)
                .execute(l)
                .await
                .is_ok(),
        };
        assert!(ok, "{state} accepted");
    }
    let sql = "INSERT INTO alerts (dedupe_key, kind, channel, message, state, created_at) VALUES ('check:x', 'anomaly', 'C', '{}', 'delivered', $1)";
    let refused = match db.pool() {
        Pool::Postgres(pg) => sqlx::query(sql).bind(now).execute(pg).await.is_err(),
        Pool::Sqlite(l) => sqlx::query(sql).bind(now).execute(l).await.is_err(),
    };
    assert!(refused, "a state outside the enum is refused");
}

/// The delivery settings' defaults, and a claim shorter than one attempt refused by key path.
#[test]
fn delivery_settings_default_sensibly_and_a_claim_shorter_than_an_attempt_is_refused() {
    let cfg: PipelineConfig = toml::from_str("[slack]\nchannel = \"C1\"\n").unwrap();
    let s = cfg.slack.as_ref().unwrap();
    assert_eq!(
        (
            s.max_attempts,
            s.request_timeout,
            s.claim_ttl,
            s.history_pages,
            s.drain_timeout
        ),
        (
            5,
            Duration::from_secs(10),
            Duration::from_secs(60),
            3,
            Duration::from_secs(60)
        )
    );
    assert_eq!(
        (s.initial_backoff, s.max_backoff),
        (Duration::from_secs(30), Duration::from_secs(900))
    );
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let cfg: PipelineConfig = toml::from_str(
        "[slack]\nchannel = \"C1\"\nrequest_timeout = \"10s\"\nclaim_ttl = \"30s\"\nmax_attempts = 0\n",
    )
    .unwrap();
    let problems: Vec<String> = cfg
        .problems()
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("pipeline.slack.claim_ttl: must be longer than one attempt")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("pipeline.slack.max_attempts")),
        "{problems:?}"
    );
}

/// Routes (`[pipeline.alerts]`): dev warehouses go to a second channel (the pattern's case differs from the names'); every other warehouse is
/// covered by a route whose minimum nothing reaches, so its incidents are held back (not announced, not sent
/// to the default channel) and considered again next run. One digest per channel, and only there.
async fn routes_send_each_channel_its_digest_and_hold_back_what_is_below_their_minimums(
    b: Backend,
) {
    let db = b.migrated().await;
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    let pipeline = pipeline(
        &db,
        &peer,
        dir.path(),
        &format!(
            "{SYNTHETIC_SOURCE}\
             [[alerts.routes]]\nname = \"analysts\"\nchannel = \"{CHANNEL_2}\"\nwarehouses = [\"dev_*\"]\n\
             [[alerts.routes]]\nname = \"platform\"\nchannel = \"{CHANNEL}\"\nwarehouses = [\"ADHOC_*\", \"ETL_*\", \"BI_*\", \"COMPUTE*\"]\n\
             min_excess_credits = 1000000\n"
        ),
    );
    let Chain {
        predict,
        stop,
        daemon,
        sender,
    } = run_chain(&db, &pipeline).await;
    assert_eq!(predict.state, RunState::Success, "{predict:?}");
    let rows = wait_settled(&pipeline, Duration::from_secs(60)).await;

    let incidents = pipeline
        .store
        .list_incidents(&snowpatrol_pipeline::store::IncidentFilter::default())
        .await
        .unwrap();
    let analysts = |w: &str| w.starts_with("DEV_");
    let (theirs, held): (Vec<_>, Vec<_>) =
        incidents.iter().partition(|i| analysts(&i.warehouse_name));
    assert!(
        !theirs.is_empty() && !held.is_empty(),
        "the data has incidents on both sides: {incidents:?}"
    );
    let digests: Vec<&AlertRow> = rows.iter().filter(|a| a.thread_of.is_none()).collect();
    assert_eq!(
        digests.len(),
        1,
        "one digest, for the one channel with news: {rows:?}"
    );
    assert_eq!(digests[0].channel, CHANNEL_2);
    assert_eq!(
        digests[0].dedupe_key,
        format!("digest:{}:{CHANNEL_2}", predict.run_id)
    );
    for i in &theirs {
        assert_eq!(i.alert_id, Some(digests[0].alert_id), "{i:?}");
    }
    for i in &held {
        assert_eq!(
            i.alert_id, None,
            "held back, considered again next run: {i:?}"
        );
    }
    let posted = peer.channel();
    assert_eq!(posted.len(), 1, "nothing in the default channel");
    assert_eq!(posted[0].body["channel"], json!(CHANNEL_2));
    let blocks = posted[0].body["blocks"].to_string();
    for i in &theirs {
        assert!(
            blocks.contains(&i.warehouse_name),
            "{} listed",
            i.warehouse_name
        );
    }
    for i in &held {
        assert!(!blocks.contains(&format!("*{}.{}*", i.account_name, i.warehouse_name)));
    }
    assert!(
        blocks.contains(&format!("{} incident", held.len()))
            && blocks.contains("held back by a route's minimum"),
        "says what it held back: {blocks}"
    );
    let report = db
        .task_instances_of(predict.run_id, "report")
        .await
        .unwrap();
    let data = &report[0].output.as_ref().unwrap()["data"];
    assert_eq!(data["held_back"], json!(held.len()), "{data}");
    assert_eq!(data["announced_incidents"], json!(theirs.len()), "{data}");
    // The report says what was held back, and why.
    let md = std::fs::read_to_string(
        dir.path()
            .join("reports")
            .join(format!("run-{}", predict.run_id))
            .join("report.md"),
    )
    .unwrap();
    assert!(md.contains("## Not alerted"), "{md}");
    for i in &held {
        assert!(
            md.contains(&format!("{}.{}", i.account_name, i.warehouse_name).replace('_', "\\_")),
            "{md}"
        );
    }
    assert!(
        md.contains("route platform: excess") && md.contains("min\\_excess\\_credits 1000000"),
        "{md}"
    );
    // The chart replies went to the same channel's thread.
    for f in peer.shared_files() {
        assert_eq!(f.thread_ts, digests[0].slack_ts);
    }
    stop.cancel();
    daemon.await.unwrap().unwrap();
    sender.await.unwrap();
}

/// The product chain started through a daemon and its outbox sender (prep triggered; train and predict follow
/// their datasets), with predict's finished run.
struct Chain {
    predict: snowpatrol_store::RunRecord,
    stop: CancellationToken,
    daemon: tokio::task::JoinHandle<Result<(), snowpatrol_engine::EngineError>>,
    sender: tokio::task::JoinHandle<()>,
}

async fn run_chain(db: &Database, pipeline: &Arc<Pipeline>) -> Chain {
    let settings = SchedulerSettings {
        poll_interval: Duration::from_millis(500),
        default_retries: 0,
        ..Default::default()
    };
    let engine = snowpatrol_pipeline::testing::chained_engine(db, pipeline, settings, true).await;
    let stop = CancellationToken::new();
    let daemon = engine.spawn_daemon(stop.clone());
    let sender = tokio::spawn(pipeline.clone().outbox_sender_loop(stop.clone()));
    engine.trigger("prep", &[], "test").await.unwrap();
    let predict = snowpatrol_pipeline::testing::wait_for_finished_run(
        db,
        "predict",
        Duration::from_millis(50),
        Some(Duration::from_secs(120)),
    )
    .await;
    Chain {
        predict,
        stop,
        daemon,
        sender,
    }
}
