//! The console in a real browser: headless Chromium driven through chromedriver (Debian's `chromium` and
//! `chromium-driver`, which `scripts/test.sh` installs) against the console served over a real PostgreSQL
//! database with a running engine and pipeline data. Pages render, the chart draws, the browser logs no
//! error, and acknowledging and clearing from the console take effect in the database.
//!
//! With `SNOWPATROL_CONSOLE_SCREENSHOTS=DIR` the test also saves screenshots of the main pages there (how
//! `docs/console/*.png` are made; a relative DIR is taken from the crate's directory, where tests run).

use chrono::{Days, NaiveDate};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};
use snowpatrol_api::{ApiState, ApiTokens};
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::daily::{DailyUsage, build_series};
use snowpatrol_detect::model::{AnomalyDay, TrainConfig, train};
use snowpatrol_engine::*;
use snowpatrol_pipeline::PipelineStore;
use snowpatrol_pipeline::store::{FeatureRow, NewAnomaly, NewModel};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const OPERATE: &str = "console-operate-token";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port; fails (never skips) when it is not installed.
async fn chromedriver() -> (Killed, String) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is required (Debian: chromium-driver; scripts/test.sh installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Killed(child), url)
}

/// The browser's console log (chromedriver's `se/log`), to check no page logged an error.
#[derive(Debug)]
struct BrowserLog;
impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

fn day(i: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 1)
        .unwrap()
        .checked_add_days(Days::new(i))
        .unwrap()
}

/// 90 days of a weekday-shaped warehouse with a runaway on days 80-81, a model trained on the first 70, and
/// the two days recorded as one incident.
async fn pipeline_data(store: &PipelineStore) -> i64 {
    let key = WarehouseKey::new("ACME", "ETL_WH");
    let credits = |i: u64| {
        let base = if day(i).format("%u").to_string().parse::<u32>().unwrap() >= 6 {
            4.0
        } else {
            12.0
        };
        let wobble = ((i * 7919) % 13) as f64 / 13.0;
        if i == 80 || i == 81 {
            42.0
        } else {
            base + wobble
        }
    };
    let usage: Vec<DailyUsage> = (0..90)
        .map(|i| DailyUsage {
            key: key.clone(),
            date: day(i),
            credits: credits(i),
            credits_compute: credits(i),
            credits_cloud_services: 0.0,
            hours_active: if i == 80 || i == 81 { 24.0 } else { 8.0 },
            peak_hourly_credits: 2.0,
        })
        .collect();
    let rows: Vec<FeatureRow> = usage
        .iter()
        .map(|u| FeatureRow {
            usage: u.clone(),
            trend: None,
            seasonal: None,
            residual: None,
        })
        .collect();
    // The hours of days 79-82: 8 busy hours a day, then around the clock on the runaway days 80 and 81.
    let hourly: Vec<snowpatrol_detect::MeteringRow> = (79..83)
        .flat_map(|i| (0..24).map(move |h| (i, h)))
        .filter(|(i, h)| *i == 80 || *i == 81 || (8..16).contains(h))
        .map(|(i, h)| {
            let start = day(i).and_hms_opt(h, 0, 0).unwrap().and_utc();
            snowpatrol_detect::MeteringRow {
                account_name: "ACME".into(),
                warehouse_id: 7,
                warehouse_name: "ETL_WH".into(),
                service_type: "WAREHOUSE_METERING".into(),
                start_time: start,
                end_time: start + chrono::Duration::hours(1),
                credits_used: 1.75,
                credits_used_compute: 1.75,
                credits_used_cloud_services: 0.0,
            }
        })
        .collect();
    store
        .load_metering(
            &snowpatrol_pipeline::store::MeteringLoad {
                from: day(79),
                to: day(83),
                hourly: &hourly,
                daily: &[],
                run_id: None,
            },
            None,
        )
        .await
        .unwrap();
    // After the hourly load, which rewrites its window's daily rows from its own (none here).
    store.replace_daily(&rows, None).await.unwrap();
    let series = build_series(&usage[..70], None).remove(0);
    let model = train(&series, &TrainConfig::default()).unwrap();
    let registered = store
        .register_model(
            &NewModel {
                key: key.clone(),
                model_kind: "default".into(),
                params: json!({}),
                threshold: model.threshold,
                training_start: day(0),
                training_end: day(69),
                metrics: json!({}),
                drift: json!({}),
                model: serde_json::to_value(&model).unwrap(),
                training_run_id: None,
            },
            None,
        )
        .await
        .unwrap();
    let anomaly = |i: u64| NewAnomaly {
        key: key.clone(),
        model_id: registered.model_id,
        model_version: registered.version,
        run_id: 1,
        day: AnomalyDay {
            date: day(i),
            actual_credits: 42.0,
            expected_credits: 12.5,
            excess_credits: 29.5,
            score: 9.0,
            threshold: 3.0,
            explanation: "left running: 24 h active vs usually 8".into(),
        },
    };
    store
        .upsert_anomalies(&[anomaly(80), anomaly(81)], Some(3.0), None)
        .await
        .unwrap();
    // Day 80's root cause as predict's root_causes task stores it (its findings rendered line by line).
    let cause = snowpatrol_detect::root_cause::RootCause {
        events: vec![snowpatrol_detect::root_cause::WarehouseEvent {
            at: day(80).and_hms_opt(2, 14, 0).unwrap().and_utc(),
            name: "WAREHOUSE_CONSISTENT".into(),
            reason: Some("WAREHOUSE_RESIZE".into()),
            user_name: Some("BOB".into()),
            role_name: Some("SYSADMIN".into()),
            size: Some("X-Large".into()),
            cluster_count: Some(1),
            count: 1,
        }],
        ..Default::default()
    };
    store
        .save_root_causes(
            &[snowpatrol_pipeline::store::NewRootCause {
                day: snowpatrol_detect::root_cause::WarehouseDay {
                    key: key.clone(),
                    day: day(80),
                },
                summary: cause.summary(
                    snowpatrol_detect::root_cause::DayFigures {
                        actual_credits: 42.0,
                        excess_credits: 29.5,
                    },
                    day(80),
                ),
                cause,
            }],
            None,
            None,
        )
        .await
        .unwrap();
    store.list_incidents(&Default::default()).await.unwrap()[0].incident_id
}

/// A page fetched outside the browser with the operate token's session cookie (to read its headers).
async fn signed_in(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("cookie", format!("snowpatrol_session={OPERATE}"))
        .send()
        .await
        .unwrap()
}

/// Holds the `hold` job's task running while set.
static HOLD: AtomicBool = AtomicBool::new(true);

fn registry(failing: Arc<AtomicBool>) -> JobRegistry {
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("hold", "runs until the test releases it").task(TaskDefinition::new(
            "wait",
            task_fn(|_| async {
                while HOLD.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(TaskOutput::empty())
            }),
        )),
    );
    reg.register(
        JobDefinition::new("chain", "prep then train")
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
                    .outlet("test://console/trained"),
            ),
    );
    reg
}

async fn wait_run(db: &Database, run: i64, state: RunState) {
    let start = Instant::now();
    while db.get_run(run).await.unwrap().unwrap().state != state {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "run {run} never became {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_render_and_act_in_a_real_browser() {
    // The WebDriver client speaks plain HTTP to chromedriver, but its TLS stack needs a provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        let capture =
            tracing_subscriber::registry().with(TaskLogLayer::new(tracing::Level::INFO, 100));
        tracing::subscriber::set_global_default(capture)
            .expect("the only subscriber of this test process");
    }
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let store = PipelineStore::new(db.clone());
    let incident_id = pipeline_data(&store).await;
    let failing = Arc::new(AtomicBool::new(true));
    let settings = SchedulerSettings {
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        default_retries: 0,
        ..Default::default()
    };
    let jobs = resolve_jobs(&registry(failing.clone()), &BTreeMap::new(), &settings).unwrap();
    let engine = Arc::new(Engine::new(db.clone(), jobs, settings).unwrap());
    engine.register_jobs().await.unwrap();
    let stop = CancellationToken::new();
    engine.spawn_daemon(stop.clone());
    let run_id = engine.trigger("chain", &[], "test").await.unwrap();
    wait_run(&db, run_id, RunState::Failed).await;

    let tokens = ApiTokens::new(None, Some(&OPERATE.to_string().into()));
    let state = Arc::new(ApiState {
        currency: None,
        engine: engine.clone(),
        store: store.clone(),
        tokens,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = snowpatrol_api::router(state.clone()).merge(snowpatrol_console::router(state));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_driver, driver_url) = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let c = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("a Chromium session");
    let shots = std::env::var_os("SNOWPATROL_CONSOLE_SCREENSHOTS").map(std::path::PathBuf::from);
    let shot = |name: &'static str| {
        let c = c.clone();
        let shots = shots.clone();
        async move {
            if let Some(dir) = shots {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(
                    dir.join(format!("{name}.png")),
                    c.screenshot().await.unwrap(),
                )
                .unwrap();
            }
        }
    };

    // Signed out, a page sends the browser to sign in; a wrong token is refused with a banner.
    c.goto(&format!("{base}/ui/jobs")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("wrong")
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let refused = c
        .wait()
        .for_element(Locator::Css("div.banner.err"))
        .await
        .unwrap();
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("not the read or the operate token")
    );
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(OPERATE)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_url(&url::Url::parse(&format!("{base}/ui/jobs")).unwrap())
        .await
        .unwrap();
    let jobs_page = c.source().await.unwrap();
    assert!(
        jobs_page.contains("chain") && jobs_page.contains("Trigger"),
        "{jobs_page}"
    );
    shot("jobs").await;

    // The runs grid links the failed run; its page shows the failed try with its log line.
    c.goto(&format!("{base}/ui/runs")).await.unwrap();
    let cell = c
        .find(Locator::Css(&format!(
            "div.grid a[href='/ui/runs/{run_id}']"
        )))
        .await
        .unwrap();
    assert_eq!(cell.attr("class").await.unwrap().as_deref(), Some("failed"));
    shot("runs").await;
    cell.click().await.unwrap();
    c.wait().for_element(Locator::Css("pre.log")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(
        page.contains("source down") && page.contains("prepping"),
        "the error and the log line: {page}"
    );
    shot("run").await;

    // Clear from the console: the failed task runs again and the run succeeds.
    failing.store(false, Ordering::SeqCst);
    c.find(Locator::XPath(
        "//button[normalize-space()='Clear failed tasks']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let banner = c
        .wait()
        .for_element(Locator::Css("div.banner.ok"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        banner.contains("queued again") && banner.contains("train"),
        "{banner}"
    );
    wait_run(&db, run_id, RunState::Success).await;
    let note = db.get_run(run_id).await.unwrap().unwrap().note.unwrap();
    assert!(note.starts_with("cleared by console"), "{note}");

    // The incident: its chart draws the usage, the expected band and both anomalous days.
    c.goto(&format!("{base}/ui/incidents/{incident_id}"))
        .await
        .unwrap();
    assert!(c.find(Locator::Css("svg.chart path.actual")).await.is_ok());
    let cause = c
        .find(Locator::Css("section.cause .summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        cause,
        "the warehouse was resized to X-Large at 02:14 UTC by BOB (SYSADMIN)."
    );
    assert_eq!(
        c.find_all(Locator::Css("svg.chart circle.anomaly"))
            .await
            .unwrap()
            .len(),
        2
    );
    let bars = c
        .find_all(Locator::Css("svg.hourly rect.bar"))
        .await
        .unwrap();
    assert_eq!(
        bars.len(),
        8 + 24 + 24 + 8,
        "one bar per metered hour of days 79-82"
    );
    let svg = c
        .find(Locator::Css("svg.chart"))
        .await
        .unwrap()
        .html(false)
        .await
        .unwrap();
    assert!(
        svg.contains("fill-opacity=\"0.12\"") && svg.contains("stroke-dasharray"),
        "band and expected line: {svg}"
    );
    shot("incident").await;
    if let Some(dir) = &shots {
        // The hourly panel sits below the fold: a screenshot of the element itself.
        c.execute(
            "document.querySelector('svg.hourly').scrollIntoView({block: 'center'})",
            vec![],
        )
        .await
        .unwrap();
        let panel = c.find(Locator::Css("svg.hourly")).await.unwrap();
        std::fs::write(
            dir.join("incident-hourly.png"),
            panel.screenshot().await.unwrap(),
        )
        .unwrap();
    }

    // Acknowledge from the list: recorded with who and why, and the buttons go away.
    c.goto(&format!("{base}/ui/incidents")).await.unwrap();
    shot("incidents").await;
    c.find(Locator::Css("button[value=planned]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let banner = c
        .wait()
        .for_element(Locator::Css("div.banner.ok"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(banner.contains("acknowledged (planned)"), "{banner}");
    let incident = store.incident(incident_id).await.unwrap().unwrap();
    assert_eq!(
        (
            incident.status.as_str(),
            incident.acknowledged_by.as_deref()
        ),
        ("acknowledged", Some("console"))
    );
    assert!(c.find(Locator::Css("button[value=planned]")).await.is_err());

    for page in ["datasets", "models", "alerts"] {
        c.goto(&format!("{base}/ui/{page}")).await.unwrap();
        assert_eq!(
            c.find(Locator::Css("h1"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .to_lowercase(),
            page
        );
    }

    // A forged action without the page's CSRF token changes nothing.
    let forged = reqwest_like_post(&base, run_id).await;
    assert!(forged.contains("CSRF"), "{forged}");
    assert_eq!(
        db.get_run(run_id).await.unwrap().unwrap().state,
        RunState::Success
    );

    // Follow mode: an unfinished run's page (the `hold` job runs until released) offers to follow its logs;
    // following reloads every 2 s (the Refresh header) until the run ends, and a finished run's page never does.
    let queued = engine.trigger("hold", &[], "test").await.unwrap();
    c.goto(&format!("{base}/ui/runs/{queued}")).await.unwrap();
    c.find(Locator::Css("a.follow"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("?follow=1#logs")
    );
    let following = signed_in(&format!("{base}/ui/runs/{queued}?follow=1")).await;
    assert_eq!(
        following.headers()["refresh"].to_str().unwrap(),
        format!("2; url=/ui/runs/{queued}?follow=1#logs")
    );
    assert!(
        following
            .text()
            .await
            .unwrap()
            .contains("Following: this page reloads")
    );
    let finished = signed_in(&format!("{base}/ui/runs/{run_id}?follow=1")).await;
    assert!(
        finished.headers().get("refresh").is_none(),
        "a finished run is not reloaded"
    );
    HOLD.store(false, Ordering::SeqCst);
    wait_run(&db, queued, RunState::Success).await;
    let after = signed_in(&format!("{base}/ui/runs/{queued}?follow=1")).await;
    assert!(
        after.headers().get("refresh").is_none(),
        "following stops when the run ends"
    );

    let log: Value = c.issue_cmd(BrowserLog).await.unwrap();
    let errors: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "the browser logged errors: {errors:?}");
    c.close().await.unwrap();
    stop.cancel();
}

/// A POST to mark the run failed, with the session cookie but without the CSRF field (what a forged form on
/// another site could at best send); returns the banner of the page it lands on.
async fn reqwest_like_post(base: &str, run_id: i64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = "task=&reason=forged";
    let req = format!(
        "POST /ui/runs/{run_id}/mark-failed HTTP/1.1\r\nHost: {addr}\r\nCookie: snowpatrol_session={OPERATE}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let location = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or_default()
        .to_string();
    form_urlencoded_decode(&location)
}

fn form_urlencoded_decode(location: &str) -> String {
    let query = location.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}
