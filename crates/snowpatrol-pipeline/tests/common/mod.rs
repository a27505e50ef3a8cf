//! A local HTTP peer standing in for Slack's Web API (`chat.postMessage`, `conversations.history`), making the
//! checks the real service makes (bearer token, channel, text or blocks) and keeping the channel's history with
//! message metadata, so that a sender's look-up finds what an unanswered post left behind. It can be told to
//! hang, to accept a post and never answer, to answer 429 with Retry-After, or 500. It also implements Slack's
//! external file upload (`files.getUploadURLExternal`, the upload URL, `files.completeUploadExternal`) with the
//! checks Slack makes (announced length, a known and uploaded file id, the channel, a thread that exists).

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "xoxb-test-token";
pub const CHANNEL: &str = "C123";
/// A second channel the bot is in (for routes).
pub const CHANNEL_2: &str = "C999";

fn known_channel(c: &str) -> bool {
    c == CHANNEL || c == CHANNEL_2
}

/// How the peer answers `chat.postMessage` (the history always answers unless `history_hangs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Never answers and posts nothing (a Slack that hangs).
    Hang,
    /// Posts the message, then never answers (the timeout case: the sender cannot know it arrived).
    AcceptThenHang,
    /// HTTP 429 with this Retry-After (seconds); nothing posted.
    RateLimited(u64),
    /// HTTP 500; nothing posted.
    ServerError,
}

#[derive(Clone, Debug)]
pub struct Posted {
    pub ts: String,
    pub body: Value,
    pub at: Instant,
}

impl Posted {
    pub fn dedupe_key(&self) -> Option<&str> {
        self.body["metadata"]["event_payload"]["dedupe_key"].as_str()
    }
}

#[derive(Debug)]
pub struct Request_ {
    pub method: String,
    pub path: String,
    pub query: String,
    pub at: Instant,
    /// What the peer did: "posted", "hang", "429", "500", "refused:<code>", "history".
    pub outcome: String,
}

struct Inner {
    mode: Mode,
    /// Posts left in `mode`; then back to Normal. None = until changed.
    mode_posts: Option<usize>,
    history_hangs: bool,
    post_delay: Duration,
    channel: Vec<Posted>,
    requests: Vec<Request_>,
    last_ts: f64,
    /// Upload URLs handed out: file id -> (file name, announced length, uploaded bytes).
    uploads: Vec<(String, String, usize, Option<Vec<u8>>)>,
    /// Files shared with files.completeUploadExternal.
    shared: Vec<SharedFile>,
}

/// A file shared into the channel.
#[derive(Clone, Debug)]
pub struct SharedFile {
    pub file_id: String,
    pub file_name: String,
    pub title: Option<String>,
    pub thread_ts: Option<String>,
    pub initial_comment: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct SlackPeer {
    inner: Arc<Mutex<Inner>>,
    pub api_url: String,
}

impl SlackPeer {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            mode: Mode::Normal,
            mode_posts: None,
            history_hangs: false,
            post_delay: Duration::ZERO,
            channel: Vec::new(),
            requests: Vec::new(),
            last_ts: 0.0,
            uploads: Vec::new(),
            shared: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = SlackPeer {
            inner,
            api_url: format!("http://{addr}/api/"),
        };
        let app = Router::new().fallback(answer).with_state(peer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        peer
    }

    /// Answers posts in `mode` from now on.
    pub fn set_mode(&self, mode: Mode) {
        let mut i = self.inner.lock().unwrap();
        i.mode = mode;
        i.mode_posts = None;
    }

    /// Answers the next `n` posts in `mode`, then normally.
    pub fn set_mode_for(&self, mode: Mode, n: usize) {
        let mut i = self.inner.lock().unwrap();
        i.mode = mode;
        i.mode_posts = Some(n);
    }

    pub fn set_history_hangs(&self, hangs: bool) {
        self.inner.lock().unwrap().history_hangs = hangs;
    }

    /// Every accepted post waits this long before answering (lets concurrent senders interleave).
    pub fn set_post_delay(&self, d: Duration) {
        self.inner.lock().unwrap().post_delay = d;
    }

    /// The files shared into the channel, oldest first.
    pub fn shared_files(&self) -> Vec<SharedFile> {
        self.inner.lock().unwrap().shared.clone()
    }

    /// The messages in the channel, oldest first.
    pub fn channel(&self) -> Vec<Posted> {
        self.inner.lock().unwrap().channel.clone()
    }

    /// Messages in the channel carrying this dedupe key in their metadata.
    pub fn posts_for(&self, key: &str) -> usize {
        self.channel()
            .iter()
            .filter(|p| p.dedupe_key() == Some(key))
            .count()
    }

    pub fn requests(&self) -> Vec<(String, String, String, Instant)> {
        self.inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| (r.path.clone(), r.query.clone(), r.outcome.clone(), r.at))
            .collect()
    }

    pub fn count(&self, path_suffix: &str, outcome: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(p, _, o, _)| p.ends_with(path_suffix) && o.starts_with(outcome))
            .count()
    }

    /// Posts a message straight into the channel, as a sender that was killed after Slack accepted its post
    /// would have left it.
    pub fn inject(&self, body: Value) -> String {
        let mut i = self.inner.lock().unwrap();
        let ts = next_ts(&mut i);
        i.channel.push(Posted {
            ts: ts.clone(),
            body,
            at: Instant::now(),
        });
        ts
    }
}

/// Strictly increasing message timestamps from the wall clock (seconds.micros), as Slack's are.
fn next_ts(i: &mut Inner) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let ts = if now > i.last_ts + 0.000_001 {
        now
    } else {
        i.last_ts + 0.000_001
    };
    i.last_ts = ts;
    format!("{ts:.6}")
}

fn json_response(status: u16, body: Value, headers: &[(&str, String)]) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=utf-8");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn answer(State(peer): State<SlackPeer>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 10 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let record = |outcome: &str| {
        peer.inner.lock().unwrap().requests.push(Request_ {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            at: Instant::now(),
            outcome: outcome.to_string(),
        });
    };
    let refuse = |code: &str| {
        record(&format!("refused:{code}"));
        json_response(200, json!({"ok": false, "error": code}), &[])
    };
    // The upload URL is pre-signed (no token needed): the bytes must be exactly the announced length.
    if let Some(id) = path.strip_prefix("/upload/") {
        let mut i = peer.inner.lock().unwrap();
        let Some(u) = i.uploads.iter_mut().find(|u| u.0 == id) else {
            drop(i);
            record("upload-unknown");
            return json_response(404, json!({"ok": false}), &[]);
        };
        if body.len() != u.2 {
            drop(i);
            record("upload-bad-length");
            return json_response(400, json!({"ok": false}), &[]);
        }
        u.3 = Some(body.to_vec());
        drop(i);
        record("uploaded");
        return Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(Body::from(format!("OK - {}", body.len())))
            .unwrap();
    }
    // Slack: no Authorization header is `not_authed`, a wrong token `invalid_auth`.
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match auth {
        None => return refuse("not_authed"),
        Some(a) if a != format!("Bearer {TOKEN}") => return refuse("invalid_auth"),
        Some(_) => {}
    }
    if path.ends_with("/chat.postMessage") {
        let json_body = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        let msg: Value = if json_body {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if msg["channel"].as_str().is_none_or(|c| !known_channel(c)) {
            return refuse("channel_not_found");
        }
        let has_text = msg["text"].as_str().is_some_and(|t| !t.is_empty());
        let has_blocks = msg["blocks"].as_array().is_some_and(|b| !b.is_empty());
        if !has_text && !has_blocks {
            return refuse("no_text");
        }
        let (mode, delay) = {
            let mut i = peer.inner.lock().unwrap();
            let mode = i.mode;
            if let Some(n) = i.mode_posts.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    i.mode = Mode::Normal;
                    i.mode_posts = None;
                }
            }
            (mode, i.post_delay)
        };
        match mode {
            Mode::Hang => {
                record("hang");
                std::future::pending::<()>().await;
                unreachable!()
            }
            Mode::RateLimited(secs) => {
                record("429");
                json_response(
                    429,
                    json!({"ok": false, "error": "ratelimited"}),
                    &[("retry-after", secs.to_string())],
                )
            }
            Mode::ServerError => {
                record("500");
                json_response(500, json!({"ok": false, "error": "internal_error"}), &[])
            }
            Mode::Normal | Mode::AcceptThenHang => {
                let ts = peer.inject(msg.clone());
                if mode == Mode::AcceptThenHang {
                    record("posted-hang");
                    std::future::pending::<()>().await;
                }
                record("posted");
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                json_response(
                    200,
                    json!({"ok": true, "channel": CHANNEL, "ts": ts,
                           "message": {"type": "message", "ts": ts, "text": msg["text"], "bot_id": "B1"}}),
                    &[],
                )
            }
        }
    } else if path.ends_with("/files.getUploadURLExternal") {
        let (Some(name), Some(length)) = (
            query_param(&query, "filename").filter(|n| !n.is_empty()),
            query_param(&query, "length").and_then(|l| l.parse::<usize>().ok()),
        ) else {
            return refuse("invalid_arguments");
        };
        if length == 0 {
            return refuse("invalid_arguments");
        }
        let base = peer
            .api_url
            .trim_end_matches('/')
            .trim_end_matches("/api")
            .to_string();
        let id = {
            let mut i = peer.inner.lock().unwrap();
            let id = format!("F{:04}", i.uploads.len() + 1);
            i.uploads.push((id.clone(), name.to_string(), length, None));
            id
        };
        record("upload-url");
        json_response(
            200,
            json!({"ok": true, "upload_url": format!("{base}/upload/{id}"), "file_id": id}),
            &[],
        )
    } else if path.ends_with("/files.completeUploadExternal") {
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !req["channel_id"].as_str().is_some_and(known_channel) {
            return refuse("channel_not_found");
        }
        let Some(files) = req["files"].as_array().filter(|f| f.len() == 1) else {
            return refuse("invalid_arguments");
        };
        let id = files[0]["id"].as_str().unwrap_or_default().to_string();
        let thread_ts = req["thread_ts"].as_str().map(str::to_string);
        let mut i = peer.inner.lock().unwrap();
        if let Some(t) = &thread_ts
            && !i.channel.iter().any(|p| &p.ts == t)
        {
            drop(i);
            return refuse("thread_not_found");
        }
        let Some((_, name, _, Some(bytes))) = i.uploads.iter().find(|u| u.0 == id).cloned() else {
            drop(i);
            return refuse("file_not_found");
        };
        if i.shared.iter().any(|f| f.file_id == id) {
            drop(i);
            return refuse("file_already_completed");
        }
        i.shared.push(SharedFile {
            file_id: id.clone(),
            file_name: name.clone(),
            title: files[0]["title"].as_str().map(str::to_string),
            thread_ts,
            initial_comment: req["initial_comment"].as_str().map(str::to_string),
            bytes,
        });
        drop(i);
        record("shared");
        json_response(
            200,
            json!({"ok": true, "files": [{"id": id, "name": name}]}),
            &[],
        )
    } else if path.ends_with("/conversations.history") {
        if !query_param(&query, "channel").is_some_and(known_channel) {
            return refuse("channel_not_found");
        }
        if peer.inner.lock().unwrap().history_hangs {
            record("history-hang");
            std::future::pending::<()>().await;
        }
        record("history");
        let oldest: f64 = query_param(&query, "oldest")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let with_metadata = query_param(&query, "include_all_metadata") == Some("true");
        let limit: usize = query_param(&query, "limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
            .clamp(1, 999);
        let offset: usize = query_param(&query, "cursor")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Newest first, like Slack.
        let mut messages: Vec<Value> = peer
            .channel()
            .iter()
            .rev()
            .filter(|p| p.ts.parse::<f64>().unwrap_or(0.0) >= oldest)
            .map(|p| {
                let mut m =
                    json!({"type": "message", "ts": p.ts, "text": p.body["text"], "bot_id": "B1"});
                if with_metadata && !p.body["metadata"].is_null() {
                    m["metadata"] = p.body["metadata"].clone();
                }
                m
            })
            .collect();
        let total = messages.len();
        let page: Vec<Value> = messages.drain(..).skip(offset).take(limit).collect();
        let more = offset + page.len() < total;
        json_response(
            200,
            json!({"ok": true, "messages": page, "has_more": more,
                   "response_metadata": {"next_cursor": if more { (offset + limit).to_string() } else { String::new() }}}),
            &[],
        )
    } else {
        refuse("unknown_method")
    }
}
