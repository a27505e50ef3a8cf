//! Feedback from Slack through the real daemon: `run predict` posts a digest with a feedback menu on each
//! incident (to a local Slack peer), then `snowpatrol daemon` serves `POST /slack/interactivity`. Requests
//! signed with the signing secret, as Slack signs them, acknowledge the incident exactly like `anomalies ack`
//! and update the message through its `response_url`; a wrong signature, a missing header, a stale timestamp
//! or a replay is refused with 401 and records nothing.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_snowpatrol");
const SECRET: &str = "feedback-test-signing-secret";

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// The local Slack peer: chat.postMessage answers with a ts; response URLs accept the update.
async fn slack_peer() -> (String, Seen) {
    let seen: Seen = Arc::default();
    async fn record(
        State(s): State<Seen>,
        uri: axum::http::Uri,
        body: String,
    ) -> ([(axum::http::HeaderName, &'static str); 1], String) {
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        s.lock().unwrap().push((uri.path().to_string(), v));
        let answer = json!({ "ok": true, "channel": "C0123", "ts": "1700000000.000100" });
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            answer.to_string(),
        )
    }
    let app = Router::new()
        .route("/api/chat.postMessage", post(record))
        .route("/response/{id}", post(record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn snowpatrol(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SNOWPATROL") {
            c.env_remove(&k);
        }
    }
    c.env_remove("RUST_LOG")
        .env("SNOWPATROL_CONFIG", dir.join("snowpatrol.toml"))
        .env("SNOWPATROL_DATA_DIR", dir.join("data"))
        .env("SNOWPATROL_FEEDBACK_TEST_TOKEN", "xoxb-feedback-test")
        .env("SNOWPATROL__PIPELINE__SLACK__SIGNING_SECRET", SECRET);
    c
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = snowpatrol(dir, args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn sign(ts: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn form(payload: &Value) -> String {
    let mut out = String::from("payload=");
    for b in payload.to_string().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn incident(dir: &Path, id: i64) -> Value {
    let all: Value =
        serde_json::from_str(&ok(dir, &["anomalies", "--since", "2025-01-01", "--json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|i| i["incident_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_clicks_acknowledge_incidents_and_forged_or_replayed_ones_record_nothing() {
    let (peer, seen) = slack_peer().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::write(
        d.join("snowpatrol.toml"),
        format!(
            r#"
[server]
health_addr = "127.0.0.1:{port}"

[pipeline.source]
kind = "synthetic"
seed = 7
warehouses = 6
days = 120
end = "2025-06-30"

[pipeline.predict]
score_days = 45

[pipeline.slack]
channel = "C0123"
token_env = "SNOWPATROL_FEEDBACK_TEST_TOKEN"
api_url = "{peer}/api/"
request_timeout = "5s"

[logging]
level = "warn"
"#
        ),
    )
    .unwrap();
    let digest = {
        let d = d.clone();
        tokio::task::spawn_blocking(move || {
            for job in ["prep", "train", "predict"] {
                ok(&d, &["run", job]);
            }
        })
        .await
        .unwrap();
        let posts: Vec<Value> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/api/chat.postMessage")
            .map(|(_, b)| b.clone())
            .collect();
        assert_eq!(posts.len(), 1, "one digest: {posts:?}");
        posts[0].clone()
    };
    // Each listed incident carries the menu; take the first one.
    let section = digest["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["accessory"]["type"] == "overflow")
        .expect("a feedback menu in the digest")
        .clone();
    let id: i64 = section["block_id"].as_str().unwrap()["incident:".len()..]
        .parse()
        .unwrap();
    let before = incident(&d, id);
    assert_ne!(before["status"], "acknowledged", "{before}");

    let _daemon = Daemon(snowpatrol(&d, &["daemon"]).spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Ready, not just alive: the interactivity route is served once the daemon runs (404 while it starts).
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = form(&json!({
        "type": "block_actions",
        "user": { "id": "U42", "username": "ana" },
        "response_url": format!("{peer}/response/1"),
        "actions": [{ "action_id": "snowpatrol_feedback", "type": "overflow",
                      "selected_option": { "value": format!("ack:{id}:planned") } }],
        "message": { "text": digest["text"], "blocks": digest["blocks"] },
    }));
    let send = |ts: Option<String>, sig: Option<String>, body: String| {
        let client = client.clone();
        let url = format!("{base}/slack/interactivity");
        async move {
            let mut r = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded");
            if let Some(ts) = ts {
                r = r.header("x-slack-request-timestamp", ts);
            }
            if let Some(sig) = sig {
                r = r.header("x-slack-signature", sig);
            }
            r.body(body).send().await.unwrap().status().as_u16()
        }
    };
    let now = || chrono::Utc::now().timestamp().to_string();

    // Forged, unsigned, stale: 401 and nothing recorded.
    let ts = now();
    assert_eq!(
        send(Some(ts.clone()), Some("v0=00ff".into()), body.clone()).await,
        401
    );
    let forged = body.replace("planned", "false_positive");
    assert_eq!(
        send(Some(ts.clone()), Some(sign(&ts, &body)), forged).await,
        401
    );
    assert_eq!(send(None, None, body.clone()).await, 401);
    let stale = (chrono::Utc::now().timestamp() - 600).to_string();
    assert_eq!(
        send(Some(stale.clone()), Some(sign(&stale, &body)), body.clone()).await,
        401
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let i = incident(&d, id);
    // (The daemon may re-score on start, which touches `updated_at`; the acknowledgement is what must not move.)
    for k in ["status", "ack_reason", "acknowledged_at", "acknowledged_by"] {
        assert_eq!(i[k], before[k], "nothing recorded: {i}");
    }
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p.starts_with("/response"))
    );

    // The real click: acknowledged like `anomalies ack`, and the message updated in place.
    let ts = now();
    let sig = sign(&ts, &body);
    assert_eq!(
        send(Some(ts.clone()), Some(sig.clone()), body.clone()).await,
        200
    );
    let started = Instant::now();
    let acked = loop {
        let i = incident(&d, id);
        if i["status"] == "acknowledged" {
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never acknowledged: {i}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(acked["ack_reason"], "planned", "{acked}");
    assert_eq!(acked["acknowledged_by"], "slack:ana", "{acked}");
    let started = Instant::now();
    let update = loop {
        if let Some((_, b)) = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == "/response/1")
        {
            break b.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the message was never updated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(update["replace_original"], true, "{update}");
    let blocks = update["blocks"].as_array().unwrap();
    let mine = blocks
        .iter()
        .find(|b| b["block_id"] == section["block_id"])
        .unwrap();
    assert!(mine.get("accessory").is_none(), "{mine}");
    assert!(
        mine["text"]["text"]
            .as_str()
            .unwrap()
            .contains("acknowledged as *Planned* by <@U42>"),
        "{mine}"
    );
    assert_eq!(blocks.len(), digest["blocks"].as_array().unwrap().len());

    // The same signed request again is a replay.
    assert_eq!(send(Some(ts), Some(sig), body).await, 401);
}
