//! The fault suite: real `snowpatrol daemon` processes on PostgreSQL, broken the way production breaks them.
//!
//! - **kill -9 at a named step** (`SNOWPATROL_FAILPOINTS`, see `snowpatrol_store::failpoint`): inside prep's
//!   hourly load transaction, after the hourly and daily loads committed but before the ledger did, inside the features rewrite, after the third model registration, after the second warehouse's
//!   anomalies, after the report was saved. A second daemon finishes the chain; every table then holds exactly
//!   what a clean run of the same data writes (row counts and content fingerprints), with 0 duplicate models,
//!   anomalies or alerts.
//! - **a frozen leader** (SIGSTOP): the other replica takes the leader lease within two lease periods and runs
//!   the whole chain while the frozen one stays frozen; resumed, the old leader steps down and nothing runs twice.
//! - **a 20 s database outage mid-run** through a TCP proxy the test cuts: the daemon stops its tries whose leases
//!   it cannot renew, reconnects, and the chain completes with the clean run's rows.
//!
//! Figures (takeover time, rows compared) are printed for `docs/reliability.md`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_snowpatrol");
const LEASE_SECS: u64 = 3;
const WAREHOUSES: i64 = 12;

const CONFIG: &str = r#"
[scheduler]
lease = "3s"
heartbeat = "1s"
poll_interval = "500ms"
shutdown_grace = "5s"
default_retry_delay = "1s"
default_max_retry_delay = "2s"

[pipeline.source]
kind = "synthetic"
seed = 11
warehouses = 12
days = 120
end = "2025-06-30"

[pipeline.predict]
score_days = 60

[logging]
level = "info"
"#;

/// One data directory and PostgreSQL database, and the daemons started on it.
struct Env {
    dir: tempfile::TempDir,
    url: String,
    daemons: Vec<Child>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Env {
    async fn new() -> Self {
        let url = snowpatrol_pipeline::testing::fresh_postgres_url().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snowpatrol.toml"), CONFIG).unwrap();
        let env = Self {
            dir,
            url,
            daemons: vec![],
        };
        let out = env.command(&env.url, &["migrate"]).output().unwrap();
        assert!(out.status.success(), "migrate: {}", text(&out.stderr));
        env
    }

    /// A child process that sees only what the test gives it.
    fn command(&self, url: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(self.dir.path());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SNOWPATROL") {
                c.env_remove(&k);
            }
        }
        c.env_remove("RUST_LOG")
            .env("SNOWPATROL_CONFIG", self.dir.path().join("snowpatrol.toml"))
            .env("SNOWPATROL_DATA_DIR", self.dir.path().join("data"))
            .env("SNOWPATROL_DATABASE_URL", url);
        c
    }

    /// Starts a daemon (its log goes to `daemon-N.log`); `failpoints` arms `SNOWPATROL_FAILPOINTS`.
    fn start_daemon(&mut self, url: &str, failpoints: Option<&str>) -> usize {
        let n = self.daemons.len();
        let log = std::fs::File::create(self.log_path(n)).unwrap();
        let mut c = self.command(url, &["daemon", "--log-format", "json"]);
        c.env("SNOWPATROL__SERVER__HEALTH_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = failpoints {
            c.env("SNOWPATROL_FAILPOINTS", f);
        }
        self.daemons.push(c.spawn().unwrap());
        n
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("daemon-{n}.log"))
    }

    fn log(&self, n: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path(n)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn trigger(&self, job: &str) -> i64 {
        let out = self
            .command(&self.url, &["trigger", job, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "trigger: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["run_id"].as_i64().unwrap()
    }

    async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }

    /// Waits until prep, train and predict have each finished once and nothing is queued, running or
    /// waiting on a dataset event.
    async fn wait_chain_done(&self, deadline: Duration, daemons: &[usize]) {
        let pool = self.pool().await;
        let started = Instant::now();
        loop {
            let states: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT job_name, state, count(*) FROM job_runs GROUP BY job_name, state ORDER BY 1, 2",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM dataset_trigger_queue")
                .fetch_one(&pool)
                .await
                .unwrap();
            let finished = |job: &str| {
                states
                    .iter()
                    .any(|(j, s, _)| j == job && (s == "success" || s == "failed"))
            };
            let active = states
                .iter()
                .any(|(_, s, _)| s == "queued" || s == "running");
            if finished("prep")
                && finished("train")
                && finished("predict")
                && !active
                && pending == 0
            {
                pool.close().await;
                return;
            }
            if started.elapsed() > deadline {
                let logs: Vec<String> = daemons.iter().map(|n| self.log(*n)).collect();
                panic!(
                    "chain not done after {deadline:?}: {states:?}, pending {pending}\nlogs:\n{}",
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn stop_daemon(&mut self, n: usize) {
        let pid = self.daemons[n].id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while self.daemons[n].try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                let _ = self.daemons[n].kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for daemon `n` to die, and returns the signal that killed it.
    fn wait_killed(&mut self, n: usize, deadline: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.daemons[n].try_wait().unwrap() {
                return status.signal();
            }
            assert!(
                started.elapsed() < deadline,
                "daemon {n} still alive after {deadline:?}; log:\n{}",
                self.log(n)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What the chain wrote, independent of ids and times: row counts and content fingerprints per table.
async fn snapshot(url: &str) -> BTreeMap<&'static str, String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let queries: [(&str, &str); 11] = [
        (
            "hourly rows",
            "SELECT count(*)::text || ' / ' || coalesce(md5(string_agg(account_name || warehouse_id || service_type || start_time \
             || credits_used, ',' ORDER BY account_name, warehouse_id, service_type, start_time)), '') FROM warehouse_metering_hourly",
        ),
        (
            "daily rows",
            "SELECT count(*)::text || ' / ' || coalesce(md5(string_agg(account_name || warehouse_name || usage_date || credits_used \
             || coalesce(trend, -1), ',' ORDER BY account_name, warehouse_name, usage_date)), '') FROM warehouse_daily_usage",
        ),
        (
            // Days before the data starts may or may not be in the ledger (a retry starts at the first day the
            // daily table holds); the days with data must all be there.
            "ledger days with data",
            "SELECT count(*)::text || ' / ' || sum(hourly_rows) FROM metering_loads WHERE hourly_rows > 0",
        ),
        ("models", "SELECT count(*)::text FROM models"),
        (
            "models per (run, warehouse), max",
            "SELECT coalesce(max(n), 0)::text FROM (SELECT count(*) AS n FROM models GROUP BY training_run_id, account_name, warehouse_name) x",
        ),
        (
            "model fingerprints",
            "SELECT coalesce(md5(string_agg(account_name || warehouse_name || version || threshold || training_end, ',' \
             ORDER BY account_name, warehouse_name, version)), '') FROM models",
        ),
        (
            "anomalies",
            "SELECT count(*)::text || ' / ' || coalesce(md5(string_agg(account_name || warehouse_name || usage_date || score, ',' \
             ORDER BY account_name, warehouse_name, usage_date)), '') FROM anomalies",
        ),
        (
            "incidents",
            "SELECT count(*)::text || ' / ' || coalesce(md5(string_agg(account_name || warehouse_name || start_day || end_day || status, ',' \
             ORDER BY account_name, warehouse_name, start_day)), '') FROM incidents",
        ),
        (
            "alerts (rows, distinct keys)",
            "SELECT count(*)::text || ' / ' || count(DISTINCT dedupe_key) FROM alerts WHERE kind = 'anomaly'",
        ),
        (
            "dataset events per uri",
            "SELECT coalesce(string_agg(dataset_uri || '=' || n, ',' ORDER BY dataset_uri), '') \
             FROM (SELECT dataset_uri, count(*) AS n FROM dataset_events GROUP BY dataset_uri) x",
        ),
        (
            "runs per job and state",
            "SELECT coalesce(string_agg(job_name || ':' || state || '=' || n, ',' ORDER BY job_name, state), '') \
             FROM (SELECT job_name, state, count(*) AS n FROM job_runs GROUP BY job_name, state) x",
        ),
    ];
    let mut out = BTreeMap::new();
    for (name, sql) in queries {
        let v: Option<String> = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        out.insert(name, v.unwrap_or_default());
    }
    pool.close().await;
    out
}

/// A clean run of the chain, for comparison.
async fn clean_snapshot() -> BTreeMap<&'static str, String> {
    let mut env = Env::new().await;
    let url = env.url.clone();
    let d = env.start_daemon(&url, None);
    env.trigger("prep");
    env.wait_chain_done(Duration::from_secs(120), &[d]).await;
    env.stop_daemon(d);
    let snap = snapshot(&env.url).await;
    assert_eq!(snap["models"], WAREHOUSES.to_string(), "{snap:?}");
    assert!(
        !snap["anomalies"].starts_with("0 "),
        "the data must have anomalies for the comparison to mean something: {snap:?}"
    );
    snap
}

fn assert_same(what: &str, clean: &BTreeMap<&str, String>, faulted: &BTreeMap<&str, String>) {
    for (k, v) in clean {
        assert_eq!(
            faulted.get(k),
            Some(v),
            "{what}: `{k}` differs from a clean run\nclean:   {clean:?}\nfaulted: {faulted:?}"
        );
    }
    println!("{what}: every table equals a clean run's: {faulted:?}");
}

/// kill -9 at `point`, then a fresh daemon finishes: the result equals a clean run's.
async fn killed_at(point: &str) {
    let clean = clean_snapshot().await;
    let mut env = Env::new().await;
    let url = env.url.clone();
    // `name@N`: kill on the N-th pass.
    let armed = match point.split_once('@') {
        Some((name, nth)) => format!("{name}=kill@{nth}"),
        None => format!("{point}=kill"),
    };
    let first = env.start_daemon(&url, Some(&armed));
    env.trigger("prep");
    let signal = env.wait_killed(first, Duration::from_secs(120));
    assert_eq!(
        signal,
        Some(libc::SIGKILL),
        "the daemon died at the failpoint; log:\n{}",
        env.log(first)
    );
    assert!(
        env.log(first)
            .contains(&format!("failpoint {}", point.split('@').next().unwrap()))
    );
    let second = env.start_daemon(&url, None);
    env.wait_chain_done(Duration::from_secs(120), &[first, second])
        .await;
    env.stop_daemon(second);
    let faulted = snapshot(&env.url).await;
    assert_same(&format!("kill -9 at {point}"), &clean, &faulted);
    // The interrupted try was retried by the second daemon, not lost.
    let pool = env.pool().await;
    let retried: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_instances WHERE try_number > 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(retried >= 1, "some try was retried after the kill");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_inside_the_hourly_load_transaction() {
    killed_at("prep.load.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_the_prep_loads_and_the_ledger() {
    killed_at("prep.load.before_ledger").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_inside_the_features_rewrite() {
    killed_at("prep.features.before_commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_the_third_model_registration() {
    killed_at("train.after_register@3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_anomalies_were_recorded() {
    killed_at("predict.score.after_upsert@2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_the_report_was_saved() {
    killed_at("predict.report.after_save").await;
}

/// The pid in a worker id (`host:pid:suffix`).
fn pid_of(holder: &str) -> u32 {
    holder
        .split(':')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap()
}

async fn leader(pool: &sqlx::PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT holder FROM scheduler_leases WHERE lease_name = 'scheduler-leader' AND expires_at > clock_timestamp()",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_within_two_lease_periods() {
    let clean = clean_snapshot().await;
    let mut env = Env::new().await;
    let url = env.url.clone();
    let a = env.start_daemon(&url, None);
    let b = env.start_daemon(&url, None);
    let pool = env.pool().await;
    let started = Instant::now();
    let first = loop {
        if let Some(h) = leader(&pool).await {
            break h;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let frozen = pid_of(&first);
    let pids = [env.daemons[a].id(), env.daemons[b].id()];
    assert!(pids.contains(&frozen), "{first} is one of the daemons");
    signal(frozen, "-STOP");
    let stopped_at = Instant::now();
    let second = loop {
        if let Some(h) = leader(&pool).await.filter(|h| *h != first) {
            break h;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(2 * LEASE_SECS),
            "no takeover within two lease periods"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let takeover = stopped_at.elapsed();
    println!(
        "frozen leader replaced after {:.2} s (lease {LEASE_SECS} s)",
        takeover.as_secs_f64()
    );
    assert_ne!(pid_of(&second), frozen);
    // The live replica schedules and runs the whole chain while the leader stays frozen.
    let chain = Instant::now();
    env.trigger("prep");
    env.wait_chain_done(Duration::from_secs(120), &[a, b]).await;
    println!(
        "chain ran in {:.1} s with the old leader frozen",
        chain.elapsed().as_secs_f64()
    );
    // Resumed, the old leader finds the lease taken and steps down; the new one keeps it.
    signal(frozen, "-CONT");
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECS)).await;
    assert_eq!(leader(&pool).await.as_deref(), Some(second.as_str()));
    let frozen_idx = if env.daemons[a].id() == frozen { a } else { b };
    pool.close().await;
    env.stop_daemon(a);
    env.stop_daemon(b);
    let log = env.log(frozen_idx);
    assert!(
        log.contains("lost scheduler leadership") || log.contains("stepping down"),
        "the resumed leader says it stepped down: {log}"
    );
    assert_same("frozen leader", &clean, &snapshot(&env.url).await);
}

/// A TCP proxy to PostgreSQL that the test can cut: every connection is dropped and new ones are refused.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (d, c, target) = (down.clone(), cut.clone(), target.to_string());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (target, c) = (target.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Self { port, down, cut }
    }

    fn outage(&self, on: bool) {
        self.down.store(on, Ordering::SeqCst);
        if on {
            self.cut.notify_waiters();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_second_database_outage_mid_run() {
    let clean = clean_snapshot().await;
    let mut env = Env::new().await;
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let proxied = env
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(
        proxied, env.url,
        "the test database URL names 127.0.0.1:5432"
    );
    let d = env.start_daemon(&proxied, None);
    env.trigger("prep");
    // Cut the database while train's fan-out runs.
    let pool = env.pool().await;
    let started = Instant::now();
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM task_instances WHERE job_name IN ('train', 'predict') AND state IN ('running', 'success')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if running > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "train never started: {}",
            env.log(d)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.outage(true);
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.outage(false);
    let back = Instant::now();
    env.wait_chain_done(Duration::from_secs(180), &[d]).await;
    println!(
        "chain completed {:.1} s after a 20 s outage ended",
        back.elapsed().as_secs_f64()
    );
    pool.close().await;
    env.stop_daemon(d);
    assert_same("20 s outage", &clean, &snapshot(&env.url).await);
}
