//! The API served on a real port over a real PostgreSQL database with a running engine: reads, operations,
//! scopes, problems, and the OpenAPI document checked by the reference validator.

use chrono::NaiveDate;
use serde_json::{Value, json};
use snowpatrol_api::{ApiState, ApiTokens};
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::model::AnomalyDay;
use snowpatrol_engine::*;
use snowpatrol_pipeline::PipelineStore;
use snowpatrol_pipeline::store::{NewAnomaly, NewModel};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const READ: &str = "read-token-for-tests";
const OPERATE: &str = "operate-token-for-tests";
const READY: &str = "ext://ready";

/// `chain`: `prep` (fails while `failing` holds) -> `train` (outlet `test://api/trained`); `consumer` on the
/// external dataset `ext://ready`.
fn registry(failing: Arc<AtomicBool>) -> JobRegistry {
    let mut reg = JobRegistry::new();
    reg.external_dataset(READY);
    reg.register(
        JobDefinition::new("chain", "prep then train")
            .param(ParamSpec::new(
                "fail_on_purpose",
                ParamType::Bool,
                json!(false),
                "unused",
            ))
            .task(TaskDefinition::new(
                "prep",
                task_fn(move |_| {
                    let failing = failing.clone();
                    async move {
                        tracing::info!(rows = 3, "prepping");
                        if failing.load(Ordering::SeqCst) {
                            return Err(TaskError::permanent("source down"));
                        }
                        Ok(TaskOutput::empty())
                    }
                }),
            ))
            .task(
                TaskDefinition::new("train", task_fn(|_| async { Ok(TaskOutput::empty()) }))
                    .depends_on(&["prep"])
                    .outlet("test://api/trained"),
            ),
    );
    reg.register(
        JobDefinition::new("consumer", "runs on ext://ready").task(TaskDefinition::new(
            "t",
            task_fn(|_| async { Ok(TaskOutput::empty()) }),
        )),
    );
    reg
}

struct Server {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Server {
    async fn start(engine: Arc<Engine>, store: PipelineStore, tokens: ApiTokens) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = snowpatrol_api::router(Arc::new(ApiState {
            currency: None,
            engine,
            store,
            tokens,
        }));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .unwrap();
        });
        Server {
            base,
            http: reqwest::Client::new(),
            stop,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let problem = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default() == "application/problem+json");
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert!(
                problem,
                "{method} {path}: an error is a problem+json: {value}"
            );
            assert_eq!(value["status"], status, "{value}");
        }
        (status, value)
    }
    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, Some(READ), None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(OPERATE), Some(body)).await
    }
}

async fn wait_for_state(server: &Server, run_id: i64, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = server.get(&format!("/api/v1/runs/{run_id}")).await;
        if v["run"]["state"] == state {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "run {run_id} never became {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(tokens: ApiTokens) -> (Server, Arc<AtomicBool>, PipelineStore, CancellationToken) {
    capture_task_logs();
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let failing = Arc::new(AtomicBool::new(true));
    let cfg: BTreeMap<String, JobConfig> =
        toml::from_str("[consumer]\ndatasets = [\"ext://ready\"]\n").unwrap();
    let settings = SchedulerSettings {
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        default_retries: 0,
        ..Default::default()
    };
    let jobs = resolve_jobs(&registry(failing.clone()), &cfg, &settings).unwrap();
    let engine = Arc::new(Engine::new(db.clone(), jobs, settings).unwrap());
    engine.register_jobs().await.unwrap();
    let daemon_stop = CancellationToken::new();
    engine.spawn_daemon(daemon_stop.clone());
    let store = PipelineStore::new(db);
    (
        Server::start(engine, store.clone(), tokens).await,
        failing,
        store,
        daemon_stop,
    )
}

fn capture_task_logs() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(TaskLogLayer::new(tracing::Level::INFO, 100));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

fn tokens() -> ApiTokens {
    ApiTokens::new(
        Some(&READ.to_string().into()),
        Some(&OPERATE.to_string().into()),
    )
}

/// Scopes: the document is public; reads need a token once tokens exist; changes need the operate token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_guard_reads_and_changes() {
    let (server, _, _, stop) = setup(tokens()).await;
    let (status, doc) = server.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    let (status, p) = server.call("GET", "/api/v1/jobs", None, None).await;
    assert_eq!(status, 401, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{p}"
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/jobs", Some("wrong"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/jobs", Some(OPERATE), None)
            .await
            .0,
        200,
        "operate also reads"
    );
    let (status, p) = server
        .call(
            "POST",
            "/api/v1/jobs/chain/trigger",
            Some(READ),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("read token cannot"),
        "{p}"
    );
    let (status, p) = server.call("GET", "/api/v1/nope", Some(READ), None).await;
    assert_eq!(status, 404, "{p}");
    server.stop.cancel();
    stop.cancel();

    // Without tokens: reads are open, changes refused with the key to set.
    let (open, _, _, stop) = setup(ApiTokens::default()).await;
    assert_eq!(open.call("GET", "/api/v1/runs", None, None).await.0, 200);
    let (status, p) = open
        .call("POST", "/api/v1/jobs/chain/trigger", None, Some(json!({})))
        .await;
    assert_eq!(status, 403, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("[api] operate_token"),
        "{p}"
    );
    stop.cancel();
}

/// A failed run operated on through the API: typed params refused with the declared ones named, logs, a clear
/// that reruns it, a mark; external events in a batch run their subscriber once; datasets and lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_triggered_logged_cleared_marked_and_fed_events() {
    let (server, failing, _, stop) = setup(tokens()).await;
    let jobs = server.get("/api/v1/jobs").await;
    let chain = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "chain")
        .unwrap();
    assert_eq!(chain["params"][0]["name"], "fail_on_purpose");
    assert_eq!(chain["outlets"], json!(["test://api/trained"]));
    let consumer = server.get("/api/v1/jobs/consumer").await;
    assert_eq!(consumer["condition"], json!(READY), "{consumer}");

    for (params, expected) in [
        (json!({"fail_on_purpose": "maybe"}), "bool"),
        (json!({"nope": 1}), "fail_on_purpose"),
    ] {
        let (status, p) = server
            .post("/api/v1/jobs/chain/trigger", json!({ "params": params }))
            .await;
        assert_eq!(status, 422, "{p}");
        assert!(p["detail"].as_str().unwrap().contains(expected), "{p}");
    }
    let (status, t) = server
        .post(
            "/api/v1/jobs/chain/trigger",
            json!({"params": {"fail_on_purpose": true}}),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let run_id = t["run_id"].as_i64().unwrap();
    let detail = wait_for_state(&server, run_id, "failed").await;
    assert_eq!(detail["run"]["params"]["fail_on_purpose"], true);
    assert_eq!(detail["run"]["triggered_by"], "api");

    let logs = server
        .get(&format!("/api/v1/runs/{run_id}/logs?task=prep"))
        .await;
    let lines = logs["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "prepping" && l["fields"]["rows"] == 3),
        "{logs}"
    );
    assert_eq!(logs["run_finished"], true);
    let next = logs["next_after"].as_i64().unwrap();
    let empty = server
        .get(&format!("/api/v1/runs/{run_id}/logs?after={next}"))
        .await;
    assert_eq!(empty["lines"], json!([]));

    failing.store(false, Ordering::SeqCst);
    let (status, cleared) = server
        .post(
            &format!("/api/v1/runs/{run_id}/clear"),
            json!({"reason": "source back"}),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["replanned_tasks"], json!(["train"]));
    let detail = wait_for_state(&server, run_id, "success").await;
    assert_eq!(detail["produced_events"].as_array().unwrap().len(), 1);
    let (status, p) = server
        .post(&format!("/api/v1/runs/{run_id}/clear"), json!({}))
        .await;
    assert_eq!(status, 409, "nothing failed to clear: {p}");
    let (status, marked) = server
        .post(
            &format!("/api/v1/runs/{run_id}/mark"),
            json!({"state": "failed", "reason": "bad day"}),
        )
        .await;
    assert_eq!(
        (status, marked["run"]["state"].as_str()),
        (200, Some("failed")),
        "{marked}"
    );
    let (status, p) = server
        .post(
            &format!("/api/v1/runs/{run_id}/mark"),
            json!({"state": "done"}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("success"), "{p}");
    let (status, p) = server
        .call("GET", "/api/v1/runs?state=bogus", Some(READ), None)
        .await;
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("queued"),
        "names the states: {p}"
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/runs/99999", Some(READ), None)
            .await
            .0,
        404
    );

    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"dataset": READY, "extra": {"part": i}}))
        .collect();
    let (status, rec) = server
        .post("/api/v1/events", json!({ "events": batch }))
        .await;
    assert_eq!(status, 201, "{rec}");
    assert_eq!(
        (
            rec["event_ids"].as_array().unwrap().len(),
            rec["triggers_queued"].as_i64()
        ),
        (3, Some(3))
    );
    let start = Instant::now();
    loop {
        let runs = server.get("/api/v1/runs?job=consumer").await;
        if runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "success")
        {
            assert_eq!(
                runs.as_array().unwrap().len(),
                1,
                "three events, one run: {runs}"
            );
            let detail = server
                .get(&format!("/api/v1/runs/{}", runs[0]["run_id"]))
                .await;
            assert_eq!(detail["consumed_events"].as_array().unwrap().len(), 3);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the consumer never ran: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (body, status_expected) in [
        (json!({"events": [{"dataset": "ext://unknown"}]}), 422),
        (json!({"events": []}), 400),
        (
            json!({"events": [{"dataset": "not a uri", "extra": {}}], "allow_unknown": true}),
            422,
        ),
    ] {
        let (status, p) = server.post("/api/v1/events", body.clone()).await;
        assert_eq!(status, status_expected, "{body}: {p}");
    }
    let events = server.get(&format!("/api/v1/events?dataset={READY}")).await;
    assert_eq!(events.as_array().unwrap().len(), 3);
    let datasets = server.get("/api/v1/datasets").await;
    let ready = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["uri"] == READY)
        .unwrap();
    assert_eq!(
        (ready["external"].as_bool(), ready["consumers"].clone()),
        (Some(true), json!(["consumer"]))
    );
    let trained = datasets
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["uri"] == "test://api/trained")
        .unwrap();
    assert_eq!(trained["producers"], json!(["chain.train"]));
    server.stop.cancel();
    stop.cancel();
}

/// Incidents and their days are listed with filters and acknowledged through the API, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_are_listed_and_acknowledged() {
    let (server, _, store, stop) = setup(tokens()).await;
    let key = WarehouseKey::new("ACME", "ETL_WH");
    let day = |d| NaiveDate::from_ymd_opt(2025, 6, d).unwrap();
    let model = store
        .register_model(
            &NewModel {
                key: key.clone(),
                model_kind: "default".into(),
                params: json!({}),
                threshold: 3.0,
                training_start: day(1),
                training_end: day(20),
                metrics: json!({}),
                drift: json!({}),
                model: json!({}),
                training_run_id: None,
            },
            None,
        )
        .await
        .unwrap();
    let anomaly = |d| NewAnomaly {
        key: key.clone(),
        model_id: model.model_id,
        model_version: model.version,
        run_id: 1,
        day: AnomalyDay {
            date: day(d),
            actual_credits: 30.0,
            expected_credits: 10.0,
            excess_credits: 20.0,
            score: 7.0,
            threshold: 3.0,
            explanation: "left running".into(),
        },
    };
    store
        .upsert_anomalies(&[anomaly(21), anomaly(22)], Some(3.0), None)
        .await
        .unwrap();

    let incidents = server
        .get("/api/v1/incidents?status=open&warehouse=ACME.ETL_WH")
        .await;
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents}");
    let id = incidents[0]["incident_id"].as_i64().unwrap();
    assert_eq!(
        (
            incidents[0]["days"].as_i64(),
            incidents[0]["excess_cost"].as_f64()
        ),
        (Some(2), Some(120.0))
    );
    assert_eq!(
        server
            .get("/api/v1/anomalies?since=2025-06-22")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        server.get("/api/v1/models?warehouse=ETL_WH").await[0]["version"],
        model.version
    );

    // Root causes as the root_causes task stores them, per day of the incident.
    store
        .save_root_causes(
            &[snowpatrol_pipeline::store::NewRootCause {
                day: snowpatrol_detect::root_cause::WarehouseDay {
                    key: snowpatrol_detect::WarehouseKey::new("ACME", "ETL_WH"),
                    day: day(22),
                },
                summary: "the warehouse was resized to X-Large at 02:14 UTC.".into(),
                cause: snowpatrol_detect::root_cause::RootCause {
                    unavailable: vec!["queries (QUERY_ATTRIBUTION_HISTORY): not granted".into()],
                    ..Default::default()
                },
            }],
            None,
            None,
        )
        .await
        .unwrap();
    let causes = server
        .get(&format!("/api/v1/incidents/{id}/root_causes"))
        .await;
    assert_eq!(causes.as_array().unwrap().len(), 1, "{causes}");
    assert_eq!(causes[0]["usage_date"], "2025-06-22");
    assert!(causes[0]["summary"].as_str().unwrap().contains("X-Large"));
    assert_eq!(
        causes[0]["detail"]["unavailable"][0],
        "queries (QUERY_ATTRIBUTION_HISTORY): not granted"
    );
    let (status, _) = server
        .call("GET", "/api/v1/incidents/999/root_causes", Some(READ), None)
        .await;
    assert_eq!(status, 404);
    // The lineage of a day: its model version (registered outside a run here) and no prep run.
    let days = server.get("/api/v1/anomalies?since=2025-06-21").await;
    let anomaly_id = days[0]["anomaly_id"].as_i64().unwrap();
    let chain = server
        .get(&format!("/api/v1/anomalies/{anomaly_id}/lineage"))
        .await;
    assert_eq!(chain["anomaly"]["anomaly_id"], anomaly_id);
    assert_eq!(chain["model"]["version"], model.version, "{chain}");
    assert!(chain["prep_runs"].as_array().unwrap().is_empty(), "{chain}");
    let (status, p) = server
        .call("GET", "/api/v1/anomalies/999/lineage", Some(READ), None)
        .await;
    assert_eq!(status, 404, "{p}");

    let (status, p) = server
        .post(
            &format!("/api/v1/incidents/{id}/ack"),
            json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("false_positive"),
        "names the reasons: {p}"
    );
    let (status, acked) = server
        .post(
            &format!("/api/v1/incidents/{id}/ack"),
            json!({"reason": "planned"}),
        )
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(
        (acked["status"].as_str(), acked["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("api"))
    );
    assert!(
        server
            .get("/api/v1/incidents?status=open")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        server
            .post("/api/v1/incidents/999/ack", json!({"reason": "planned"}))
            .await
            .0,
        404
    );
    assert!(
        server
            .get("/api/v1/alerts?pending=true")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.stop.cancel();
    stop.cancel();
}

/// The OpenAPI document passes the reference validator (Python's openapi-spec-validator) and describes every
/// route the router serves.
#[test]
fn openapi_document_is_valid_and_complete() {
    let doc = serde_json::to_string(&snowpatrol_api::openapi()).unwrap();
    let python = std::env::var("SNOWPATROL_TEST_PYTHON").expect(
        "SNOWPATROL_TEST_PYTHON must name the test virtualenv's python (scripts/test.sh sets it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &doc).unwrap();
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // The routes as `router` declares them: every path literal of its body (however rustfmt wraps the calls).
    let source = include_str!("../src/lib.rs");
    let body = source
        .split("pub fn router(")
        .nth(1)
        .and_then(|b| b.split("\n}\n").next())
        .expect("router in lib.rs");
    let mut routed: Vec<&str> = body
        .split('"')
        .filter(|p| p.starts_with("/api/v1/") && *p != "/api/v1/openapi.json")
        .collect();
    routed.dedup();
    assert!(routed.len() >= 19, "{routed:?}");
    for r in &routed {
        assert!(
            paths.contains(r),
            "route {r} is not in the OpenAPI document"
        );
    }
    assert_eq!(
        paths.len(),
        routed.len(),
        "documented paths that are not routed: {paths:?}"
    );
}
