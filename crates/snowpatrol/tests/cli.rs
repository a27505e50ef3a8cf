//! The real `snowpatrol` binary as a child process, against a fresh PostgreSQL database and a SQLite file.
//!
//! PostgreSQL comes from `snowpatrol_store::testing` (`SNOWPATROL_TEST_DATABASE_URL`); when it is not
//! reachable these tests fail with the reason rather than skip.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_snowpatrol");

const EXAMPLES_CONFIG: &str = r#"
[examples]
enabled = true

[scheduler]
poll_interval = "200ms"
shutdown_grace = "5s"
default_retry_delay = "100ms"

[logging]
level = "info"
"#;

struct Env {
    dir: tempfile::TempDir,
    db_url: Option<String>,
}

impl Env {
    fn new(config: &str, db_url: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snowpatrol.toml"), config).unwrap();
        Self { dir, db_url }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("snowpatrol.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("SNOWPATROL_CONFIG", self.config_path())
            .env("SNOWPATROL_DATA_DIR", self.dir.path().join("data"))
            .env_remove("SNOWPATROL_DATABASE_URL")
            .env_remove("RUST_LOG");
        if let Some(url) = &self.db_url {
            c.env("SNOWPATROL_DATABASE_URL", url);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "snowpatrol {args:?} failed: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let s = self.ok(&all);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {s}"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config_check(config: &str) -> (Output, PathBuf) {
    let env = Env::new(config, None);
    let out = env.run(&["config", "check"]);
    let path = env.config_path();
    // Keep the directory alive until the command ran; the path is only used in messages afterwards.
    drop(env);
    (out, path)
}

fn assert_config_error(config: &str, expected: &[&str]) -> String {
    let (out, path) = config_check(config);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected config error exit 2, got {:?}: {err}",
        out.status
    );
    assert!(
        err.contains(&path.display().to_string()),
        "message must name the file: {err}"
    );
    for e in expected {
        assert!(err.contains(e), "expected `{e}` in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn config_check_accepts_a_good_file_and_locates_errors() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    let out = env.ok(&["config", "check"]);
    assert!(out.contains("configuration OK"), "{out}");
    assert!(
        out.contains("example_report: datasets snowpatrol://examples/extracted"),
        "{out}"
    );

    // Environment overrides go through the `config` crate.
    let mut c = env.command(&["config", "check", "--json"]);
    c.env("SNOWPATROL__SERVER__HEALTH_ADDR", "127.0.0.1:9999");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["health_addr"], "127.0.0.1:9999");
    let mut c = env.command(&["config", "check"]);
    c.env("SNOWPATROL__SCHEDULER__LEASE", "soon");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("soon"), "{}", text(&out.stderr));

    // Malformed TOML: file and line 4.
    assert_config_error(
        "[examples]\nenabled = true\n\n[jobs.example_fanout\ncron = \"@daily\"\n",
        &[":4:"],
    );
    // Wrong type: line and key.
    assert_config_error(
        "[examples]\nenabled = true\n[scheduler]\nworker_concurrency = \"many\"\n",
        &[":4:", "scheduler.worker_concurrency"],
    );
    // Bad cron: key path and its line.
    assert_config_error(
        "[examples]\nenabled = true\n\n[jobs.example_fanout]\ntimezone = \"UTC\"\ncron = \"61 * * * *\"\n",
        &[":6: jobs.example_fanout.cron:", "61 * * * *"],
    );
    // Unknown dataset.
    assert_config_error(
        "[examples]\nenabled = true\n[jobs.example_report]\ndatasets = [\"snowpatrol://nope\"]\n",
        &[
            ":4: jobs.example_report.datasets:",
            "unknown dataset `snowpatrol://nope`",
        ],
    );
    // A job scheduled on its own output would trigger itself forever.
    assert_config_error(
        "[examples]\nenabled = true\n[jobs.example_extract]\ndatasets = [\"snowpatrol://examples/extracted\"]\n",
        &["cycle", "example_extract -> example_extract"],
    );
    // Unknown job and unknown section.
    assert_config_error(
        "[jobs.nosuchjob]\ncron = \"@daily\"\n",
        &[":1: jobs.nosuchjob:", "unknown job"],
    );
    assert_config_error("[sheduler]\nlease = \"1s\"\n", &[":1:", "sheduler"]);
}

#[test]
fn unreachable_database_is_a_clear_error_with_the_password_redacted() {
    let env = Env::new(
        EXAMPLES_CONFIG,
        Some("postgres://nobody:hunter2@127.0.0.1:1/x".into()),
    );
    let started = Instant::now();
    let out = env.run(&["runs"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot connect")
            && err.contains("at 127.0.0.1:1:")
            && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    assert!(err.contains("nobody:***@"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A refused connection is said at once, not after the pool's 10 s acquire timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The one-shot commands, identical on both backends.
fn cli_flow(env: &Env) {
    let m = env.ok(&["migrate"]);
    assert!(m.contains("migrated"), "{m}");

    let out = env.run(&["run", "example_fanout", "--param", "keys=3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = env.json(&["runs", "--job", "example_fanout"]);
    let run = &runs.as_array().unwrap()[0];
    assert_eq!(run["state"], "success", "{runs}");
    assert_eq!(run["trigger_kind"], "manual");
    assert_eq!(run["params"]["keys"], 3);
    let run_id = run["run_id"].as_i64().unwrap();
    let tasks = env.json(&["tasks", &run_id.to_string()]);
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 4, "1 list task + 3 mapped: {tasks:?}");
    assert_eq!(
        tasks.iter().filter(|t| t["task_name"] == "process").count(),
        3
    );
    let mut keys: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t["map_key"].as_str())
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    assert_eq!(keys, ["key-0", "key-1", "key-2"]);
    assert!(tasks.iter().all(|t| t["state"] == "success"), "{tasks:?}");

    // A failed run gives a non-zero exit.
    let out = env.run(&["run", "example_fanout", "-p", "keys=2", "-p", "fail=true"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("failed"),
        "{}",
        text(&out.stdout)
    );

    // A wrongly typed parameter is refused before any run row exists.
    let before = env.json(&["runs"]).as_array().unwrap().len();
    let out = env.run(&["trigger", "example_fanout", "--param", "keys=lots"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("parameter `keys` of job `example_fanout` must be int, got `lots`"),
        "{err}"
    );
    let out = env.run(&["trigger", "example_fanout", "--param", "nope=1"]);
    assert!(
        text(&out.stderr).contains("unknown parameter `nope`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        env.json(&["runs"]).as_array().unwrap().len(),
        before,
        "a refused trigger created a run"
    );

    // Unknown job.
    let out = env.run(&["explain", "no_such_job"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown job `no_such_job`"),
        "{}",
        text(&out.stderr)
    );

    // emit + explain: the pending event shows on the condition's leaf.
    let x = env.json(&["explain", "example_report"]);
    assert_eq!(x["condition_met"], false, "{x}");
    let e = env.json(&[
        "emit",
        "snowpatrol://examples/extracted",
        "--extra",
        r#"{"rows": 7}"#,
    ]);
    let event_id = e["event_id"].as_i64().unwrap();
    assert_eq!(e["queued_triggers"], 1, "{e}");
    let x = env.json(&["explain", "example_report"]);
    assert_eq!(x["condition_met"], true, "{x}");
    assert_eq!(
        x["leaves"][0]["dataset_uri"],
        "snowpatrol://examples/extracted"
    );
    assert_eq!(
        x["leaves"][0]["pending_event_ids"],
        serde_json::json!([event_id]),
        "{x}"
    );
    let human = env.ok(&["explain", "example_report"]);
    assert!(
        human.contains(&format!("1 pending event: #{event_id}")),
        "{human}"
    );
    let events = env.json(&["events", "--dataset", "snowpatrol://examples/extracted"]);
    assert_eq!(events[0]["extra"]["rows"], 7, "{events}");
    let out = env.run(&["emit", "snowpatrol://x", "--extra", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--extra is not valid JSON"),
        "{}",
        text(&out.stderr)
    );

    // pause / unpause show up in `jobs` and in explain.
    env.ok(&["pause", "example_report"]);
    let jobs = env.json(&["jobs"]);
    let report = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "example_report")
        .unwrap();
    assert_eq!(report["paused"], true, "{jobs}");
    assert!(
        env.json(&["explain", "example_report"])["verdict"]
            .as_str()
            .unwrap()
            .contains("paused")
    );
    env.ok(&["unpause", "example_report"]);
    let jobs = env.json(&["jobs"]);
    let report = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "example_report")
        .unwrap();
    assert_eq!(report["paused"], false, "{jobs}");
    let table = env.ok(&["jobs"]);
    assert!(
        table.contains("example_fanout") && table.contains("keys: int = 5"),
        "{table}"
    );
}

#[test]
fn cli_on_sqlite() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    cli_flow(&env);
    assert!(
        env.dir.path().join("data/snowpatrol.db").is_file(),
        "embedded database in the data directory"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_http(url: &str, deadline: Duration) -> reqwest::Response {
    let started = Instant::now();
    loop {
        match reqwest::get(url).await {
            Ok(r) => return r,
            Err(e) if started.elapsed() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{url} not answering after {deadline:?}: {e}"),
        }
    }
}

/// Parses a /metrics page with the official Prometheus client's strict OpenMetrics parser and lints it with
/// `promtool check metrics` (scripts/validate_metrics.py); returns the families as JSON.
fn parse_metrics(body: &str) -> Value {
    use std::io::Write;
    let python = std::env::var("SNOWPATROL_TEST_PYTHON").expect(
        "SNOWPATROL_TEST_PYTHON must name the test virtualenv's python (scripts/test.sh sets it)",
    );
    let promtool = std::env::var("SNOWPATROL_TEST_PROMTOOL")
        .expect("SNOWPATROL_TEST_PROMTOOL must name promtool (scripts/test.sh installs it)");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/validate_metrics.py"
    );
    let mut child = std::process::Command::new(python)
        .arg(script)
        .env("PROMTOOL", promtool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the metrics page does not validate: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_run_state(env: &Env, run_id: i64, state: &str, deadline: Duration) -> Value {
    let started = Instant::now();
    loop {
        let runs = env.json(&["runs", "--limit", "100"]);
        let found = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run_id"] == run_id);
        if let Some(r) = found.filter(|r| r["state"] == state) {
            return r.clone();
        }
        assert!(
            started.elapsed() < deadline,
            "run {run_id} not {state} after {deadline:?}: {runs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The daemon serves the HTTP API next to its probes: the task logs it captured, and changes with the operate
/// token from the environment only.
async fn daemon_serves_the_api(base: &str) {
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth("op-secret");
    let runs: Value = get("/api/v1/runs?job=example_report")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = runs[0]["run_id"].as_i64().unwrap();
    let logs: Value = get(&format!("/api/v1/runs/{run_id}/logs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"] == "example report written"),
        "the daemon captured the task's log line: {logs}"
    );
    let url = format!("{base}/api/v1/jobs/example_extract/trigger");
    let r = http
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a change needs the token");
    let r = http
        .post(&url)
        .bearer_auth("op-secret")
        .json(&serde_json::json!({"params": {"rows": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_daemon_on_postgres() {
    let url = snowpatrol_pipeline::testing::fresh_postgres_url().await;
    let env = Env::new(EXAMPLES_CONFIG, Some(url));
    cli_flow(&env);

    // A queued manual run and a pending dataset event (from cli_flow) wait for the daemon.
    let t = env.json(&["trigger", "example_fanout", "-p", "keys=4"]);
    let run_id = t["run_id"].as_i64().unwrap();
    let port = free_port();
    let daemon = Daemon(
        env.command(&["daemon", "--log-format", "json"])
            .env(
                "SNOWPATROL__SERVER__HEALTH_ADDR",
                format!("127.0.0.1:{port}"),
            )
            .env("SNOWPATROL__API__OPERATE_TOKEN", "op-secret")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let r = wait_http(&format!("{base}/healthz"), Duration::from_secs(20)).await;
    assert_eq!(r.status(), 200);
    // Alive at once, ready once connected and running.
    let started = Instant::now();
    loop {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        let body = r.text().await.unwrap();
        assert!(body.starts_with("not ready: starting"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(20), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let run = wait_run_state(&env, run_id, "success", Duration::from_secs(20));
    assert_eq!(run["params"]["keys"], 4);
    assert_eq!(
        env.json(&["tasks", &run_id.to_string()])
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // The event emitted in cli_flow triggered example_report.
    let started = Instant::now();
    loop {
        let runs = env.json(&["runs", "--job", "example_report"]);
        if runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "success" && r["trigger_kind"] == "dataset")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "example_report never ran: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    daemon_serves_the_api(&base).await;

    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let body = r.text().await.unwrap();
    let families = parse_metrics(&body);
    let sample = |family: &str, name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        families[family]["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("no family {family}: {body}"))
            .iter()
            .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)))
            .and_then(|s| s[2].as_f64())
    };
    // This daemon finished the manual run and the dataset-triggered one; the failure series exist at 0 from
    // the start, so `increase()` sees a first failure.
    let finished = |job: &str, state: &str| {
        sample(
            "snowpatrol_job_runs_finished",
            "snowpatrol_job_runs_finished_total",
            &[("job_name", job), ("state", state)],
        )
    };
    assert_eq!(finished("example_fanout", "success"), Some(1.0), "{body}");
    assert_eq!(finished("example_fanout", "failed"), Some(0.0), "{body}");
    assert_eq!(finished("example_report", "failed"), Some(0.0), "{body}");
    assert_eq!(families["snowpatrol_job_runs_finished"]["type"], "counter");
    assert_eq!(
        sample(
            "snowpatrol_job_runs_active",
            "snowpatrol_job_runs_active",
            &[("job_name", "example_fanout"), ("state", "running")]
        ),
        Some(0.0),
        "{body}"
    );
    let last = sample(
        "snowpatrol_job_last_success_timestamp_seconds",
        "snowpatrol_job_last_success_timestamp_seconds",
        &[("job_name", "example_fanout")],
    )
    .expect("last success of example_fanout");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - last).abs() < 120.0,
        "last success {last} vs now {now}"
    );
    assert_eq!(
        sample("snowpatrol_database_up", "snowpatrol_database_up", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            "snowpatrol_alert_outbox",
            "snowpatrol_alert_outbox",
            &[("state", "failed")]
        ),
        Some(0.0),
        "{body}"
    );
    assert!(
        sample("snowpatrol_build", "snowpatrol_build_info", &[]).is_some(),
        "{body}"
    );
    assert!(
        sample(
            "process_resident_memory_bytes",
            "process_resident_memory_bytes",
            &[]
        )
        .is_some_and(|b| b > 1e6),
        "{body}"
    );
    assert!(
        !body.contains("warehouse"),
        "no series is labelled by warehouse: {body}"
    );
    // The shipped alert rules are valid and name only metrics this page has.
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/snowpatrol-rules.yml"
    );
    let promtool = std::env::var("SNOWPATROL_TEST_PROMTOOL").unwrap();
    let check = std::process::Command::new(&promtool)
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stdout));
    let rules_text = std::fs::read_to_string(rules).unwrap();
    // Sample names, and family names for the families without series yet (freshness and incidents need a
    // pipeline run; their descriptors are on the page from the start).
    let mut samples: std::collections::BTreeSet<String> = families
        .as_object()
        .unwrap()
        .values()
        .flat_map(|f| f["samples"].as_array().unwrap().iter())
        .map(|s| s[0].as_str().unwrap().to_string())
        .collect();
    samples.extend(families.as_object().unwrap().keys().cloned());
    for word in rules_text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("snowpatrol_") {
            // Per-account families have series once prep loaded an account (server::tests checks them).
            let per_account =
                word.starts_with("snowpatrol_metering_") || word.starts_with("snowpatrol_open_");
            assert!(
                samples.contains(word) || per_account,
                "the rules name {word}, which the daemon does not export"
            );
        }
    }

    // SIGTERM: a clean exit well within the 5 s grace period.
    let mut daemon = daemon;
    sigterm(&daemon.0);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "daemon did not exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    use std::io::Read;
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "daemon exit {status}: {stderr}");
    assert!(stderr.contains("received SIGTERM"), "{stderr}");
    // JSON logs: every line is a JSON object.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refuses_an_unmigrated_database_without_migrate_on_start() {
    // An empty SQLite file is unmigrated, and `migrate_on_start = false` keeps the daemon from migrating it:
    // it must refuse to start, saying what to do.
    let env = Env::new("[database]\nmigrate_on_start = false\n", None);
    let port = free_port();
    let out = env
        .command(&["daemon"])
        .env(
            "SNOWPATROL__SERVER__HEALTH_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not migrated") && err.contains("snowpatrol migrate"),
        "{err}"
    );
}

#[test]
fn config_check_lists_every_detection_problem_with_file_line_and_key() {
    let config = format!(
        "{EXAMPLES_CONFIG}\n[pipeline.train]\ndrift_alpha = 2\n\n[pipeline.detection]\nexpected_false_alarms_per_year = -1\nreference_days = 100\nmin_threshold = 5\nmax_threshold = 4\n"
    );
    let err = assert_config_error(
        &config,
        &[
            ":14: pipeline.train.drift_alpha: must be between 0 and 1",
            ":17: pipeline.detection.expected_false_alarms_per_year: must be a number > 0",
            ":18: pipeline.detection.reference_days: must be at most 64",
            ":20: pipeline.detection.max_threshold: must be >= min_threshold",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
    // An unknown knob is refused with its line, not ignored.
    assert_config_error(
        &format!("{EXAMPLES_CONFIG}\n[pipeline.detection]\nz_threshold = 3.5\n"),
        &[":14:", "z_threshold"],
    );
    // Good values pass, the holiday calendar included.
    let env = Env::new(
        &format!(
            "{EXAMPLES_CONFIG}\n[pipeline]\nprice_per_credit = 3.0\n\n[pipeline.detection]\nexpected_false_alarms_per_year = 0.5\nmin_excess_cost = 50.0\n\n[pipeline.detection.calendar]\nrules = \"us_federal\"\nextra_holidays = [\"2025-12-24\"]\n"
        ),
        None,
    );
    let out = env.ok(&["config", "check"]);
    assert!(out.contains("configuration OK"), "{out}");
}

#[test]
fn config_check_refuses_bad_money_and_root_cause_settings_at_their_lines() {
    let err = assert_config_error(
        &format!(
            "{EXAMPLES_CONFIG}\n[pipeline]\ncurrency = \"euro\"\ncredit_prices = \"snowflake\"\n\n[pipeline.root_cause]\nmax_days = 0\nusual_days = 0\n"
        ),
        &[
            ":14: pipeline.currency: must be an ISO 4217 code",
            ":15: pipeline.credit_prices: \"snowflake\" needs [pipeline.source] kind = \"snowflake\"",
            ":18: pipeline.root_cause.max_days: must be at least 1",
            ":19: pipeline.root_cause.usual_days: must be at least 1",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn config_check_lists_every_alert_route_problem_at_its_own_line() {
    // EXAMPLES_CONFIG ends at line 11; the routes start at line 13.
    let routes = "[[pipeline.alerts.routes]]\nname = \"a\"\nchannel = \"\"\nwarehouses = [\"ETL_[\"]\nmin_excess_cost = 5\n\n\
                  [[pipeline.alerts.routes]]\nname = \"a\"\nchannel = \"C1\"\nmute = [{ from = \"2025-12-24\", to = \"2025-12-01\" }]\n";
    let err = assert_config_error(
        &format!("{EXAMPLES_CONFIG}\n{routes}"),
        &[
            ":15: pipeline.alerts.routes[0].channel: must be a Slack channel id",
            ":16: pipeline.alerts.routes[0].warehouses: \"ETL_[\" is not a glob pattern",
            ":17: pipeline.alerts.routes[0].min_excess_cost: needs [pipeline] price_per_credit",
            ":20: pipeline.alerts.routes[1].name: \"a\" names two routes",
            ":22: pipeline.alerts.routes[1].mute[0].to: 2025-12-01 is before from = 2025-12-24",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
    // A good route passes.
    let env = Env::new(
        &format!(
            "{EXAMPLES_CONFIG}\n[[pipeline.alerts.routes]]\nname = \"platform\"\nchannel = \"C0PLATFORM\"\nwarehouses = [\"ETL_*\"]\nmin_excess_credits = 10\n"
        ),
        None,
    );
    let out = env.ok(&["config", "check"]);
    assert!(out.contains("configuration OK"), "{out}");
}

/// A Snowflake source with password login and no password in the file: the secret must come from elsewhere.
const PASSWORD_SOURCE: &str = r#"
[pipeline.source]
kind = "snowflake"
account = "org-acct"
user = "SNOWPATROL"

[pipeline.source.auth]
method = "password"
"#;

#[test]
fn secrets_come_from_the_environment_or_files_and_are_never_printed() {
    let secret = "pw-from-env-7f3a";
    let env = Env::new(PASSWORD_SOURCE, None);
    // (b) The environment override alone: `config check` passes and shows the secret redacted, with its origin.
    for json in [false, true] {
        let mut args = vec!["config", "check"];
        if json {
            args.push("--json");
        }
        let out = env
            .command(&args)
            .env("SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD", secret)
            // Set, but without `[pipeline.slack]` no secret in effect: not listed.
            .env("SNOWPATROL_SLACK_TOKEN", "xoxb-unused")
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
        if json {
            let v: Value = serde_json::from_str(&stdout).unwrap();
            let s = &v["secrets"][0];
            assert_eq!(s["key"], "pipeline.source.auth.password", "{v}");
            assert_eq!(s["value"], "***", "{v}");
            assert_eq!(
                s["from"], "SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD",
                "{v}"
            );
            assert_eq!(v["secrets"].as_array().map(Vec::len), Some(1), "{v}");
            // The grants the role needs, named since they cannot be checked without queries.
            let grants = v["snowflake_grants"].to_string();
            assert!(
                grants.contains("SNOWFLAKE.ORGANIZATION_USAGE_VIEWER")
                    && grants.contains("SNOWFLAKE.USAGE_VIEWER")
                    && grants.contains("SNOWFLAKE.GOVERNANCE_VIEWER")
                    && grants.contains("set [pipeline.source] account_name"),
                "{v}"
            );
        } else {
            assert!(
                stdout.contains(
                    "snowflake grants this configuration needs:\n  metering (ORGANIZATION_USAGE"
                ),
                "{stdout}"
            );
            assert!(
                stdout.contains("pipeline.source.auth.password: *** (from SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD)"),
                "{stdout}"
            );
        }
    }

    // (c) A file named by the environment, and one named in the TOML; one trailing newline is trimmed.
    let file = env.dir.path().join("password");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let out = env
        .command(&["config", "check"])
        .env("SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD_FILE", &file)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("pipeline.source.auth.password: *** (from SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD_FILE"),
        "{stdout}"
    );
    assert!(!stdout.contains(secret), "{stdout}");
    let in_toml = Env::new(
        &format!("{PASSWORD_SOURCE}password_file = \"{}\"\n", file.display()),
        None,
    );
    let stdout = in_toml.ok(&["config", "check"]);
    assert!(
        stdout.contains("pipeline.source.auth.password: *** (from `password_file`"),
        "{stdout}"
    );
    assert!(!stdout.contains(secret), "{stdout}");

    // The same mechanism for the database URL: `url_file` is read, not refused as an unknown key.
    let url_file = env.dir.path().join("db_url");
    let db_path = env.dir.path().join("from-file.db");
    std::fs::write(&url_file, format!("sqlite://{}\n", db_path.display())).unwrap();
    let stdout = Env::new(
        &format!("[database]\nurl_file = \"{}\"\n", url_file.display()),
        None,
    )
    .ok(&["config", "check"]);
    assert!(stdout.contains("from-file.db"), "{stdout}");
    assert!(
        stdout.contains("database.url: *** (from `url_file`"),
        "{stdout}"
    );

    // Missing from every source: a clear error at the auth table, naming every source.
    assert_config_error(
        PASSWORD_SOURCE,
        &[
            ":7: pipeline.source.auth.password: missing secret",
            "SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD",
            "password_file",
        ],
    );
    // A file that is not there is named as such, at its line.
    assert_config_error(
        &format!("{PASSWORD_SOURCE}password_file = \"/nonexistent/pw\"\n"),
        &[":9: pipeline.source.auth.password_file: the secret file /nonexistent/pw does not exist"],
    );
    // Both in the same layer is ambiguous.
    assert_config_error(
        &format!(
            "{PASSWORD_SOURCE}password = \"x\"\npassword_file = \"{}\"\n",
            file.display()
        ),
        &["pipeline.source.auth.password_file: set either `password` or `password_file`"],
    );

    // The Slack token: missing stops `config check` (located), but not a command that sends no alerts.
    let slack = Env::new("[pipeline.slack]\nchannel = \"C0123\"\n", None);
    let out = slack
        .command(&["config", "check"])
        .env_remove("SNOWPATROL_SLACK_TOKEN")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":1: pipeline.slack.token: missing secret")
            && err.contains("SNOWPATROL__PIPELINE__SLACK__TOKEN"),
        "{err}"
    );
    let out = slack
        .command(&["jobs"])
        .env_remove("SNOWPATROL_SLACK_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = slack
        .command(&["config", "check"])
        .env_remove("SNOWPATROL_SLACK_TOKEN")
        .env("SNOWPATROL__PIPELINE__SLACK__TOKEN", "xoxb-secret-token")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("pipeline.slack.token: ***") && !stdout.contains("xoxb-secret-token"),
        "{stdout}"
    );
}

#[test]
fn a_query_string_password_appears_nowhere() {
    let secret = "qs-Secret-91c";
    for url in [
        format!("postgres://nobody@127.0.0.1:1/x?password={secret}"),
        format!(
            "postgres://nobody@127.0.0.1:1/x?sslmode=disable&PASSWORD={secret}&application_name=a"
        ),
        format!("postgres://nobody:{secret}@127.0.0.1:1/x?sslpassword={secret}"),
        format!("postgres://nobody@127.0.0.1:1/x?pass%77ord={secret}"),
    ] {
        let env = Env::new(EXAMPLES_CONFIG, Some(url.clone()));
        let check = env.run(&["config", "check"]);
        let (stdout, stderr) = (text(&check.stdout), text(&check.stderr));
        assert!(check.status.success(), "{stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{url}: {stdout}{stderr}"
        );
        assert!(
            stdout.contains("127.0.0.1:1/x") && stdout.contains("***"),
            "{stdout}"
        );

        let migrate = env.run(&["migrate"]);
        let (stdout, stderr) = (text(&migrate.stdout), text(&migrate.stderr));
        assert_eq!(migrate.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot connect"), "{stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{url}: {stdout}{stderr}"
        );
    }
    // The daemon's connection errors and retries (logged) too.
    let env = Env::new(
        EXAMPLES_CONFIG,
        Some(format!("postgres://nobody@127.0.0.1:1/x?password={secret}")),
    );
    let out = env
        .command(&["daemon"])
        .env("SNOWPATROL__DATABASE__CONNECT_TIMEOUT", "1s")
        .env(
            "SNOWPATROL__SERVER__HEALTH_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("password=***"), "{stderr}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{stdout}{stderr}"
    );
}

#[test]
fn dangerous_scheduler_settings_are_all_refused_with_file_line_and_key() {
    let config = "[examples]\nenabled = true\n\n[scheduler]\nlease = \"10s\"\nheartbeat = \"10s\"\nworker_concurrency = 0\npoll_interval = \"0s\"\n\n[jobs.example_fanout]\ncron = \"0 6 30 2 *\"\n\n[pipeline.train]\ndrift_alpha = 1.5\n";
    let expected = [
        ":6: scheduler.heartbeat: must be shorter than lease (10s)",
        "3 x heartbeat",
        ":7: scheduler.worker_concurrency: must be at least 1",
        ":8: scheduler.poll_interval: must be greater than 0",
        ":11: jobs.example_fanout.cron: cron `0 6 30 2 *` never fires",
        ":14: pipeline.train.drift_alpha: must be between 0 and 1",
    ];
    // Every problem in one go.
    let err = assert_config_error(config, &expected);
    assert_eq!(err.lines().count(), 1 + 5, "{err}");
    // `run` and the daemon refuse the same file, with the same list, before doing anything.
    let env = Env::new(config, None);
    for args in [vec!["run", "example_fanout"], vec!["daemon"]] {
        let out = env
            .command(&args)
            .env(
                "SNOWPATROL__SERVER__HEALTH_ADDR",
                format!("127.0.0.1:{}", free_port()),
            )
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for e in expected {
            assert!(err.contains(e), "{args:?}: expected `{e}` in: {err}");
        }
    }
    // A cron that fires, once every four years, is fine.
    let env = Env::new(
        "[examples]\nenabled = true\n[jobs.example_fanout]\ncron = \"0 6 29 2 *\"\n",
        None,
    );
    env.ok(&["config", "check"]);
}

#[test]
fn an_unwritable_data_directory_is_named_as_such() {
    // A file where the directory should be (permissions cannot be tested as root, which ignores them).
    let env = Env::new(EXAMPLES_CONFIG, None);
    let blocker = env.dir.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let out = env
        .command(&["config", "check"])
        .env("SNOWPATROL_DATA_DIR", blocker.join("data"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("server.data_dir: cannot create the data directory")
            && !err.contains("does not exist"),
        "{err}"
    );
    // A missing directory is created.
    let fresh = env.dir.path().join("new").join("data");
    let out = env
        .command(&["config", "check"])
        .env("SNOWPATROL_DATA_DIR", &fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(fresh.is_dir());
}

#[test]
fn parameters_outside_their_domain_create_no_run() {
    let env = Env::new(
        "[jobs.prep]\ncron = \"0 6 * * *\"\n[jobs.prep.params]\nreread_days = { type = \"int\", default = 3, min = 1, max = 7 }\n",
        None,
    );
    env.ok(&["migrate"]);
    for (args, expected) in [
        (
            vec!["trigger", "train", "-p", "model=quantum"],
            "parameter `model` of job `train` must be one of: default, baseline; got `quantum`",
        ),
        (
            vec!["trigger", "prep", "-p", "backfill_days=-5"],
            "parameter `backfill_days` of job `prep` must be >= 1; got `-5`",
        ),
        // The TOML narrows the code's domain.
        (
            vec!["trigger", "prep", "-p", "reread_days=8"],
            "parameter `reread_days` of job `prep` must be between 1 and 7; got `8`",
        ),
        (
            vec!["run", "train", "-p", "model=quantum"],
            "must be one of: default, baseline",
        ),
    ] {
        let out = env.run(&args);
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let runs = env.json(&["runs"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    // In-domain values are queued.
    env.ok(&["trigger", "train", "-p", "model=baseline"]);
    // `jobs` shows the domains.
    let jobs = env.ok(&["jobs"]);
    assert!(
        jobs.contains("model: string = \"default\" (one of: default, baseline)"),
        "{jobs}"
    );
    assert!(jobs.contains("backfill_days: int = 365 (>= 1)"), "{jobs}");
    assert!(
        jobs.contains("reread_days: int = 3 (between 1 and 7)"),
        "{jobs}"
    );

    // A default outside its own domain is refused at load, located.
    assert_config_error(
        "[jobs.prep]\ncron = \"0 6 * * *\"\n[jobs.prep.params]\nreread_days = { type = \"int\", default = 30, max = 7 }\n",
        &[":4: jobs.prep.params.reread_days: the default is outside the domain"],
    );
    assert_config_error(
        "[pipeline.prep]\nbackfill_days = 0\n",
        &[":2: pipeline.prep.backfill_days: must be at least 1"],
    );
    assert_config_error(
        "[jobs.prep]\n[jobs.prep.params]\nreread_days = { type = \"int\", default = 3, minimum = 1 }\n",
        &[":3: jobs.prep.params.reread_days: a declaration is"],
    );
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    env.ok(&["migrate"]);
    for i in 0..40 {
        env.ok(&[
            "emit",
            "snowpatrol://examples/extracted",
            "--extra",
            &format!("{{\"i\": {i}}}"),
        ]);
    }
    for read_one_line in [false, true] {
        for args in [vec!["events"], vec!["events", "--json"]] {
            let mut child = env
                .command(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            if read_one_line {
                use std::io::BufRead;
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .unwrap();
                assert!(!line.is_empty());
            } else {
                drop(stdout);
            }
            let out = child.wait_with_output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
            assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
        }
    }
    // A full disk is an error message, not a panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = env.command(&["events"]).stdout(full).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing to stdout") && err.contains("No space left"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The secret reaches the Snowflake login, not only `config check`: `run prep` against the fakesnow peer logs
/// in with a password that only a file named by the environment holds, and a wrong one is rejected by the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_logs_in_to_snowflake() {
    use snowpatrol_sources::testing::{FakeSnowflake, PASSWORD, USER};
    let peer = FakeSnowflake::start(&["--user".into(), format!("{USER}:{PASSWORD}")]);
    peer.load(&[]).await;
    let env = Env::new(
        &format!(
            "[pipeline.source]\nkind = \"snowflake\"\naccount = \"acme-org\"\nuser = \"{USER}\"\nrole = \"COST_READER\"\nwarehouse = \"SNOWPATROL_WH\"\nbase_url = \"{}\"\n\n[pipeline.source.auth]\nmethod = \"password\"\n",
            peer.base_url()
        ),
        None,
    );
    let file = env.dir.path().join("snowflake_password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .command(&["run", "prep"])
        .env("SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD_FILE", &file)
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Logged in and queried (the peer's views are empty, so the run then fails validation).
    assert!(
        stderr.contains("fetched metering rows"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("Incorrect username or password"),
        "{stdout}"
    );
    // The environment value wins over the file, and the peer refuses it: the value really is what logs in.
    let out = env
        .command(&["run", "prep"])
        .env("SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD_FILE", &file)
        .env(
            "SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD",
            "wrong-password-5d1",
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Incorrect username or password") || stdout.contains("login"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("wrong-password-5d1") && !stderr.contains("wrong-password-5d1"),
        "{stdout}{stderr}"
    );
}

/// A read command in a directory that holds no database says so and creates nothing (it used to create an
/// empty database and print an empty list, as if nothing had run yet).
#[test]
fn read_commands_without_a_database_say_where_they_looked_and_create_nothing() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    let db_file = env.dir.path().join("data").join("snowpatrol.db");
    for args in [
        vec!["runs"],
        vec!["tasks", "1"],
        vec!["events"],
        vec!["models"],
        vec!["anomalies"],
        vec!["alerts"],
        vec!["explain-alert", "1"],
    ] {
        let out = env.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("no Snowpatrol database at") && err.contains("snowpatrol.db"),
            "{args:?}: {err}"
        );
        assert!(!db_file.exists(), "{args:?} created {}", db_file.display());
    }
    // Once something ran, the same commands read it.
    env.ok(&["migrate"]);
    assert!(env.json(&["runs"]).as_array().unwrap().is_empty());
}

/// Messages that said something untrue or ambiguous: a trigger on a paused job, `--limit 0`, an empty
/// `alerts --pending`.
#[test]
fn cli_messages_say_what_is_true() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    env.ok(&["migrate"]);
    env.ok(&["pause", "example_fanout"]);
    let out = env.ok(&["trigger", "example_fanout"]);
    assert!(
        out.contains("the job is paused") && out.contains("snowpatrol unpause example_fanout"),
        "{out}"
    );
    assert_eq!(env.json(&["trigger", "example_fanout"])["paused"], true);
    env.ok(&["unpause", "example_fanout"]);
    let out = env.ok(&["trigger", "example_fanout"]);
    assert!(out.contains("a running daemon will start it"), "{out}");
    for cmd in ["runs", "events"] {
        let out = env.run(&[cmd, "--limit", "0"]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{cmd} --limit 0 must be refused");
        assert!(
            err.contains("--limit must be at least 1, got 0"),
            "{cmd}: {err}"
        );
    }
    assert!(
        env.ok(&["alerts", "--pending"])
            .contains("no alert is waiting to be delivered")
    );
    assert!(env.ok(&["alerts"]).contains("the alert outbox is empty"));
}

/// `kubectl apply -k deploy/kubernetes` must never apply a Secret: the docs have operators manage it out of
/// band, and applying the example would overwrite it with CHANGE_ME values. Reads the kustomization's
/// `resources` list the way kustomize does (every file it names, every document in it).
#[test]
fn the_kustomization_applies_no_secret() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let mut in_resources = false;
    let mut resources = Vec::new();
    for line in k.lines() {
        if line.starts_with("resources:") {
            in_resources = true;
        } else if in_resources {
            match line.trim().strip_prefix("- ") {
                Some(file) => resources.push(file.trim().to_string()),
                None if line.starts_with(' ') || line.trim().is_empty() => {}
                None => in_resources = false,
            }
        }
    }
    assert!(
        resources.contains(&"deployment.yaml".to_string()),
        "{resources:?}"
    );
    assert!(
        !k.lines()
            .any(|l| l.starts_with("secretGenerator") || l.starts_with("generators")),
        "no generated secrets either"
    );
    for file in &resources {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            !text.lines().any(|l| l.trim() == "kind: Secret"),
            "{file} is a resource of the kustomization and defines a Secret"
        );
    }
    let example = std::fs::read_to_string(dir.join("secret.example.yaml")).unwrap();
    assert!(
        example.contains("kind: Secret"),
        "the example still documents the shape"
    );
}

/// Names on the command line that match nothing configured are errors listing what exists, the same way for
/// jobs and datasets; `--allow-unknown` records an event on a dataset nobody knows on purpose.
#[test]
fn unknown_names_are_errors_that_list_what_exists() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    env.ok(&["migrate"]);
    env.ok(&["jobs"]);
    let out = env.run(&["runs", "--job", "nosuch"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no job `nosuch`") && err.contains("example_fanout"),
        "{err}"
    );
    let out = env.run(&["emit", "snowpatrol://nope"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("snowpatrol://examples/extracted") && err.contains("--allow-unknown"),
        "{err}"
    );
    assert_eq!(env.json(&["events"]).as_array().unwrap().len(), 0);
    let e = env.json(&["emit", "snowpatrol://nope", "--allow-unknown"]);
    assert_eq!(e["queued_triggers"], 0, "{e}");
    // An existing job with nothing matching is an empty list, not an error.
    assert_eq!(
        env.json(&["runs", "--job", "example_fanout"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// `demo --json` prints one JSON document (the text story is for humans only).
#[test]
fn demo_json_prints_one_json_document() {
    let env = Env::new("", None);
    let out = env.run(&["--json", "demo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["predict_state"], "success", "{v}");
    assert!(v["runs"].as_array().unwrap().len() >= 3, "{v}");
    assert!(v["report"].as_str().unwrap().ends_with(".md"), "{v}");
}

/// The source's own problems are located at the key that causes them (the shipped config's key file, a CSV
/// export that is not there), and an OK summary says where metering comes from and where alerts go.
#[test]
fn config_check_locates_source_problems_and_summarises_source_and_alerts() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/snowpatrol.toml"
    ))
    .unwrap();
    let key_line = shipped
        .lines()
        .position(|l| l.trim_start().starts_with("private_key_path"))
        .expect("the shipped config sets private_key_path")
        + 1;
    let err = assert_config_error(
        &shipped,
        &[&format!(
            ":{key_line}: pipeline.source.auth.private_key_path: cannot read Snowflake private key file"
        )],
    );
    assert!(!err.contains("snowflake.auth"), "{err}");

    // With a job problem in the same file: both are listed at once.
    let csv = format!(
        "{EXAMPLES_CONFIG}\n[pipeline.source]\nkind = \"csv\"\npath = \"/nonexistent/export.csv\"\n\n[jobs.prep]\ncron = \"not a cron\"\n"
    );
    assert_config_error(
        &csv,
        &[
            ":15: pipeline.source.path: cannot open the CSV export /nonexistent/export.csv",
            ":18: jobs.prep",
        ],
    );

    let env = Env::new(EXAMPLES_CONFIG, None);
    let out = env.ok(&["config", "check"]);
    assert!(out.contains("\nsource: synthetic"), "{out}");
    assert!(out.contains("\nalerts: no Slack token"), "{out}");
}

/// `runs --since/--until` filter on logical time and show params; `lineage` shows what a run produced and
/// consumed; `jobs` shows each job's last and next run; times in tables say UTC and their age.
#[test]
fn runs_filter_by_time_and_lineage_shows_events() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    env.ok(&["run", "example_extract", "-p", "rows=3"]);
    let runs = env.json(&["runs", "--since", "1h"]);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    let run_id = runs[0]["run_id"].as_i64().unwrap();
    assert_eq!(
        env.json(&["runs", "--until", "2000-01-01"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let table = env.ok(&["runs"]);
    assert!(
        table.contains("rows=3") && table.contains(" UTC ("),
        "{table}"
    );
    let out = env.run(&["runs", "--since", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("an age (36h, 7d)"));

    let l = env.json(&["lineage", &run_id.to_string()]);
    assert_eq!(l["consumed"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(
        l["produced"][0]["dataset_uri"], "snowpatrol://examples/extracted",
        "{l}"
    );
    let human = env.ok(&["lineage", &run_id.to_string()]);
    assert!(human.contains("snowpatrol://examples/extracted"), "{human}");
    let out = env.run(&["lineage", "999"]);
    assert_eq!(out.status.code(), Some(1));

    let jobs = env.json(&["jobs"]);
    let extract = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "example_extract")
        .unwrap();
    assert_eq!(extract["last_run"]["run_id"], run_id, "{extract}");
    assert_eq!(extract["last_run"]["state"], "success");
    let prep = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "prep")
        .unwrap();
    assert!(
        prep["next_run"].is_string(),
        "a cron job has a next run: {prep}"
    );
}

/// `migrate` on PostgreSQL, twice: the second finds everything applied. sqlx logs the server's NOTICEs
/// ("relation already exists, skipping") at INFO; they are not news to an operator and stay out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_does_not_log_postgres_notices() {
    let url = snowpatrol_pipeline::testing::fresh_postgres_url().await;
    let env = Env::new("[logging]\nlevel = \"info\"\n", Some(url));
    for _ in 0..2 {
        let out = env.run(&["migrate"]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.to_lowercase().contains("notice"), "{err}");
    }
}

/// A configuration file the service user may not read is reported as such, not as a missing file (the
/// systemd install once made /etc/snowpatrol unreadable to the service user, and the message said "does not
/// exist"). Runs the CLI as an unprivileged user (nobody) with setpriv.
#[test]
fn an_unreadable_config_file_is_permission_denied_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snowpatrol.toml");
    std::fs::write(&file, "[logging]\nlevel = \"info\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Not root: the file belongs to this user, so make it unreadable for this user instead.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_snowpatrol"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_snowpatrol"))
    };
    let out = cmd
        .arg("--config")
        .arg(&file)
        .args(["config", "check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
}

/// `backfill` queues one run per past cron tick of a range, once; `cancel` ends a queued run and says so when
/// there is nothing left to cancel.
#[test]
fn backfill_queues_past_ticks_once_and_cancel_ends_a_queued_run() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    let b = env.json(&["backfill", "prep", "--from", "4d", "--to", "1d"]);
    let created = b["created"].as_array().unwrap().clone();
    assert!((3..=4).contains(&created.len()), "{b}");
    assert_eq!(b["existing"], 0, "{b}");
    assert_eq!(b["ticks"].as_array().unwrap().len(), created.len(), "{b}");
    let human = env.ok(&["backfill", "prep", "--from", "4d", "--to", "1d"]);
    assert!(
        human.starts_with("queued 0 run(s) of prep for ticks ")
            && human.contains("had a run already"),
        "{human}"
    );
    let queued = env.json(&["runs", "--job", "prep", "--state", "queued"]);
    assert_eq!(queued.as_array().unwrap().len(), created.len(), "{queued}");
    assert!(
        queued
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["trigger_kind"] == "cron")
    );

    for (args, expected) in [
        (
            vec!["backfill", "example_extract", "--from", "4d", "--to", "1d"],
            "only cron jobs can be backfilled",
        ),
        (
            vec!["backfill", "prep", "--from", "1d", "--to", "4d"],
            "is after",
        ),
        (
            vec!["backfill", "prep", "--from", "1d", "--to", "2999-01-01"],
            "in the future",
        ),
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let run_id = created[0].as_i64().unwrap().to_string();
    let cancelled = env.json(&["cancel", &run_id, "--reason", "wrong window"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["error"], "wrong window", "{cancelled}");
    let out = env.run(&["cancel", &run_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is already cancelled"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["cancel", "999999"]);
    assert!(
        text(&out.stderr).contains("no run with id 999999"),
        "{}",
        text(&out.stderr)
    );
}

/// A dataset updated outside Snowpatrol is declared under `[datasets] external`; jobs can then be scheduled on it
/// and `emit` queues them. Undeclared, the same schedule is a located configuration error that names the key.
#[test]
fn external_datasets_declared_in_toml_can_schedule_jobs() {
    let scheduled = r#"
[examples]
enabled = true

[jobs.example_report]
datasets = ["s3://acme/exports/ready"]
"#;
    let declared = format!("[datasets]\nexternal = [\"s3://acme/exports/ready\"]\n{scheduled}");
    let env = Env::new(&declared, None);
    env.ok(&["config", "check"]);
    let e = env.json(&["emit", "s3://acme/exports/ready"]);
    assert_eq!(e["queued_triggers"], 1, "{e}");
    let x = env.json(&["explain", "example_report"]);
    assert_eq!(x["condition_met"], true, "{x}");

    let message = assert_config_error(
        scheduled,
        &[
            "jobs.example_report.datasets",
            "not declared external (`[datasets] external`)",
        ],
    );
    assert!(message.contains("s3://acme/exports/ready"), "{message}");
    let message = assert_config_error(
        "[datasets]\nexternal = [\"\"]\n",
        &["datasets.external[0]", "is not a dataset URI"],
    );
    assert!(message.contains(":2:"), "located at its line: {message}");
}

/// A failed fan-out run, operated on from the command line: its task logs, a clear, and marks on the run and on
/// a task, each recorded with who did it and why; refusals name what would work.
#[test]
fn logs_clear_and_mark_operate_a_failed_run() {
    let env = Env::new(EXAMPLES_CONFIG, None);
    let out = env.run(&["run", "example_fanout", "-p", "keys=3", "-p", "fail=true"]);
    assert!(!out.status.success(), "the run fails as asked");
    let runs = env.json(&["runs", "--job", "example_fanout"]);
    let run_id = runs[0]["run_id"].as_i64().unwrap().to_string();
    assert_eq!(runs[0]["state"], "failed");

    let logs = env.ok(&["logs", &run_id, "process"]);
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("failing as asked"))
            .count(),
        3,
        "one failed try per key: {logs}"
    );
    assert!(
        logs.contains("WARN  process[key-0]#1 task try failed"),
        "{logs}"
    );
    let lines: Vec<Value> = env
        .ok(&["logs", &run_id, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["task_name"] == "process"
            && l["map_key"] == "key-2"
            && l["level"] == "warn")
    );
    let out = env.run(&["logs", &run_id, "nope"]);
    assert!(
        text(&out.stderr).contains("its tasks: list_keys, process"),
        "{}",
        text(&out.stderr)
    );

    let cleared = env.json(&["clear", &run_id, "--reason", "flaky source"]);
    assert_eq!(
        cleared["reset_task_instances"].as_array().unwrap().len(),
        3,
        "{cleared}"
    );
    assert_eq!(cleared["reopened"], true);
    let run = &env.json(&["runs", "--job", "example_fanout"])[0];
    assert_eq!(
        (run["state"].as_str(), run["clear_count"].as_i64()),
        (Some("running"), Some(1)),
        "{run}"
    );
    assert!(
        run["note"].as_str().unwrap().contains("cleared by cli:"),
        "{run}"
    );

    let failed = env.json(&["mark", &run_id, "--state", "failed", "--reason", "give up"]);
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .starts_with("marked failed: marked failed by cli:"),
        "{failed}"
    );
    let marked = env.json(&["mark", &run_id, "--task", "process", "--state", "success"]);
    assert_eq!(
        marked["marked_task_instances"].as_array().unwrap().len(),
        3,
        "{marked}"
    );
    let run = &env.json(&["runs", "--job", "example_fanout"])[0];
    assert_eq!(run["state"], "success", "nothing is left to run: {run}");

    for (args, expected) in [
        (
            vec!["mark", &run_id, "--state", "failed", "--key", "key-1"],
            "--key needs --task",
        ),
        (
            vec!["mark", &run_id, "--state", "done"],
            "possible values: success, failed",
        ),
        (
            vec!["mark", &run_id, "--task", "nope", "--state", "failed"],
            "no task `nope`; its tasks: list_keys, process",
        ),
        (
            vec!["clear", &run_id],
            "no failed or cancelled task instances",
        ),
        (vec!["clear", "999999"], "no run with id 999999"),
    ] {
        let out = env.run(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
