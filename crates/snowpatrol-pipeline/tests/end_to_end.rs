//! The product end to end: synthetic metering → prep → (event) → train → (event) → predict → report → Slack,
//! chained only by dataset events through the real daemon and its alert outbox sender, on PostgreSQL and on
//! SQLite, with a real HTTP peer standing in for Slack (tests/common).

mod common;

use common::{Mode, SlackPeer};
use serde_json::json;
use snowpatrol_detect::model::AnomalyDay;
use snowpatrol_engine::{CancellationToken, JobConfig, RunState, SchedulerSettings, resolve_jobs};
use snowpatrol_pipeline::store::{
    AckReason, AlertState, FeatureRow, IncidentFilter, IncidentStatus, NewAnomaly,
};
use snowpatrol_pipeline::{FEATURES_DATASET, MODELS_DATASET, Pipeline, PipelineConfig};
use snowpatrol_store::{Database, RunRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Waits until the outbox has nothing undelivered (the sender runs beside the daemon).
async fn wait_alerts_delivered(pipeline: &Pipeline) -> Vec<snowpatrol_pipeline::store::AlertRow> {
    let start = std::time::Instant::now();
    loop {
        let alerts = pipeline.store.list_alerts(false, 1000).await.unwrap();
        if alerts
            .iter()
            .all(|a| !matches!(a.state, AlertState::Pending | AlertState::Sending))
        {
            return alerts;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "alerts not delivered: {alerts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runs(db: &Database, job: &str) -> Vec<RunRecord> {
    snowpatrol_pipeline::testing::runs(db, Some(job), 100).await
}

async fn wait_runs(db: &Database, job: &str, n: usize) -> Vec<RunRecord> {
    let start = std::time::Instant::now();
    loop {
        let r = runs(db, job).await;
        if r.len() >= n && r.iter().all(|r| r.state.is_terminal()) {
            return r;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let mut all = snowpatrol_pipeline::testing::runs(db, None, 100).await;
            all.reverse();
            let mut detail = String::new();
            for run in &all {
                detail.push_str(&format!(
                    "\n{} {} {:?} {:?}",
                    run.job_name, run.run_id, run.state, run.error
                ));
                for t in db
                    .list_task_instances(run.run_id)
                    .await
                    .unwrap()
                    .iter()
                    .filter(|t| {
                        t.error.is_some() || t.state != snowpatrol_store::TaskState::Success
                    })
                    .take(5)
                {
                    detail.push_str(&format!(
                        "\n   {} [{}] {:?} {:?}",
                        t.task_name, t.map_key, t.state, t.error
                    ));
                }
            }
            panic!("timed out waiting for {n} finished {job} run(s): {detail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The errors of a run's failed task instances, for assertion messages.
async fn task_errors(db: &Database, run_id: i64) -> String {
    db.list_task_instances(run_id)
        .await
        .unwrap()
        .iter()
        .filter_map(|t| {
            t.error
                .as_ref()
                .map(|e| format!("{} [{}]: {e}", t.task_name, t.map_key))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn end_to_end(db: Database) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let peer = SlackPeer::start().await;
    let api_url = peer.api_url.clone();
    let token_file = dir.path().join("slack-token");
    std::fs::write(&token_file, "xoxb-test-token\n").unwrap();
    let pipeline_cfg: PipelineConfig = toml::from_str(&format!(
        r#"
        [source]
        kind = "synthetic"
        seed = 11
        warehouses = 8
        days = 150
        end = "2025-06-30"
        [predict]
        score_days = 45
        [slack]
        channel = "C123"
        token_env = "SNOWPATROL_E2E_TOKEN_THAT_IS_NOT_SET"
        token_file = "{}"
        api_url = "{api_url}"
        max_attempts = 3
        "#,
        token_file.display()
    ))
    .unwrap();
    let pipeline = Pipeline::new(db.clone(), pipeline_cfg, dir.path().to_path_buf()).unwrap();
    let settings = SchedulerSettings {
        poll_interval: Duration::from_millis(500),
        default_retries: 0,
        ..Default::default()
    };
    let engine = snowpatrol_pipeline::testing::chained_engine(&db, &pipeline, settings, true).await;
    let stop = CancellationToken::new();
    let daemon = engine.spawn_daemon(stop.clone());
    let sender = tokio::spawn(pipeline.clone().outbox_sender_loop(stop.clone()));

    let prep_id = engine.trigger("prep", &[], "test").await.unwrap();
    let predict = wait_runs(&db, "predict", 1).await;
    let prep = db.get_run(prep_id).await.unwrap().unwrap();
    assert_eq!(prep.state, RunState::Success, "{prep:?}");
    let train = runs(&db, "train").await;
    assert_eq!(
        (train.len(), train[0].state),
        (1, RunState::Success),
        "{train:?}"
    );
    assert_eq!(
        predict[0].state,
        RunState::Success,
        "{predict:?}: {}",
        task_errors(&db, predict[0].run_id).await
    );

    // Lineage: train consumed prep's one features event, predict consumed train's one models event.
    let consumed = db.consumed_events(train[0].run_id).await.unwrap();
    assert_eq!(consumed.len(), 1);
    assert_eq!(
        (consumed[0].dataset_uri.as_str(), consumed[0].source_run_id),
        (FEATURES_DATASET, Some(prep_id))
    );
    assert_eq!(consumed[0].extra["warehouses"], json!(8));
    let consumed = db.consumed_events(predict[0].run_id).await.unwrap();
    assert_eq!(
        consumed.len(),
        1,
        "one models event per training run, not one per warehouse"
    );
    assert_eq!(consumed[0].source_run_id, Some(train[0].run_id));
    assert_eq!(consumed[0].extra["trained"], json!(8));
    assert_eq!(consumed[0].extra["failed"], json!(0));

    // Registry: one model per (account, warehouse); COMPUTE_WH in two accounts is two models.
    let models = pipeline.store.list_models(None).await.unwrap();
    assert_eq!(models.len(), 8);
    let compute: BTreeSet<_> = models
        .iter()
        .filter(|m| m.warehouse_name == "COMPUTE_WH")
        .map(|m| m.account_name.clone())
        .collect();
    assert_eq!(compute.len(), 2, "{models:?}");
    assert!(models.iter().all(|m| m.version == 1
        && m.aliases == "latest"
        && m.training_run_id == Some(train[0].run_id)));

    // Anomalies: linked to model and run, and mostly real (against the generator's labels).
    let since = chrono::NaiveDate::from_ymd_opt(2025, 5, 17).unwrap();
    let anomalies = pipeline.store.anomalies_since(since, None).await.unwrap();
    assert!(
        !anomalies.is_empty(),
        "the synthetic window holds labelled incidents"
    );
    assert!(
        anomalies
            .iter()
            .all(|a| a.run_id == predict[0].run_id && a.model_version == 1)
    );
    let labels = pipeline.labels().unwrap();
    let labelled: BTreeSet<_> = labels
        .iter()
        .filter(|l| l.kind.is_cost_increase())
        .map(|l| (l.key.to_string(), l.date))
        .collect();
    let hits = anomalies
        .iter()
        .filter(|a| {
            let k = format!("{}.{}", a.account_name, a.warehouse_name);
            (0..7).any(|back| {
                labelled.contains(&(k.clone(), a.incident_start - chrono::Days::new(back)))
            })
        })
        .count();
    assert!(
        hits * 2 >= anomalies.len(),
        "most flagged days belong to labelled incidents: {hits}/{}",
        anomalies.len()
    );

    // Report saved to disk and database.
    let (markdown, path) = pipeline
        .store
        .report_markdown(predict[0].run_id)
        .await
        .unwrap()
        .unwrap();
    assert!(markdown.contains("Anomalous activity in Snowflake usage"));
    assert!(std::fs::read_to_string(&path).unwrap() == markdown);
    let first = &anomalies[0];
    assert!(
        markdown.contains(&first.warehouse_name)
            || markdown.contains(&first.warehouse_name.replace('_', "\\_")),
        "report names the warehouse: {markdown}"
    );
    assert!(
        std::fs::read_dir(std::path::Path::new(&path).parent().unwrap())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".png"))
    );

    // Slack: one digest for the run, naming every incident, with the exact request shape.
    let incidents: BTreeSet<_> = anomalies
        .iter()
        .map(|a| {
            (
                a.account_name.clone(),
                a.warehouse_name.clone(),
                a.incident_start,
            )
        })
        .collect();
    let alerts = wait_alerts_delivered(&pipeline).await;
    let sent = peer.channel();
    assert!(!incidents.is_empty(), "the test data has incidents");
    assert_eq!(
        sent.len(),
        1,
        "one digest per run, not one post per incident"
    );
    assert_eq!(
        peer.count("", "refused"),
        0,
        "the peer checks token, channel and text"
    );
    for posted in &sent {
        let body = &posted.body;
        assert_eq!(body["channel"], json!("C123"));
        assert!(posted.dedupe_key().unwrap().starts_with("digest:"));
        let text = body["text"].as_str().unwrap();
        let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(body["blocks"][0]["type"], json!("header"));
        let n = incidents.len();
        let counted = if n == 1 {
            "1 new cost incident ".to_string()
        } else {
            format!("{n} new cost incidents ")
        };
        assert!(header.contains(&counted), "{header}");
        assert!(text.starts_with(header), "{text}");
        let blocks = body["blocks"].to_string();
        for (account, warehouse, _) in &incidents {
            assert!(
                blocks.contains(&format!("*{account}.{warehouse}*")),
                "{account}.{warehouse} named in the digest: {blocks}"
            );
        }
        // The default model's comparison is never rendered backwards ("score 6.4 ≤ threshold 1.5").
        assert!(!blocks.contains('≤'), "{blocks}");
    }
    assert!(
        alerts
            .iter()
            .all(|a| a.state == AlertState::Sent && a.slack_ts.is_some())
    );

    // Rerunning predict records nothing twice and sends nothing new.
    let rerun = engine.trigger("predict", &[], "test").await.unwrap();
    wait_runs(&db, "predict", 2).await;
    // The rerun itself succeeded, re-scored the same days, and queued no alert (every incident had one).
    let rerun_record = db.get_run(rerun).await.unwrap().unwrap();
    assert_eq!(rerun_record.state, RunState::Success, "{rerun_record:?}");
    let report_task = db.task_instances_of(rerun, "report").await.unwrap();
    let report_data = &report_task[0].output.as_ref().unwrap()["data"];
    assert_eq!(report_data["new_alerts"], json!(0), "{report_data}");
    assert_eq!(
        report_data["already_alerted"],
        json!(incidents.len()),
        "{report_data}"
    );
    let rescored: i64 = db
        .task_instances_of(rerun, "score_warehouse")
        .await
        .unwrap()
        .iter()
        .map(|t| {
            t.output.as_ref().unwrap()["data"]["rescored"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        rescored as usize,
        anomalies.len(),
        "the rerun re-scored every flagged day"
    );
    assert_eq!(
        pipeline
            .store
            .anomalies_since(since, None)
            .await
            .unwrap()
            .len(),
        anomalies.len()
    );
    assert_eq!(peer.channel().len(), sent.len(), "no repeat alerts");

    // Incidents are rows of their own; each was announced once, by the run's digest.
    let incident_rows = pipeline
        .store
        .list_incidents(&IncidentFilter {
            since: Some(since),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(incident_rows.len(), incidents.len(), "{incident_rows:?}");
    // The digest, and one chart reply per incident (at most DIGEST_CHART_REPLIES) in its thread.
    let digest = alerts
        .iter()
        .find(|a| a.thread_of.is_none())
        .expect("the digest");
    assert_eq!(
        digest.dedupe_key,
        format!("digest:{}", digest.run_id.unwrap())
    );
    let replies: Vec<_> = alerts.iter().filter(|a| a.thread_of.is_some()).collect();
    let charts = incidents.len().min(snowpatrol_alert::DIGEST_CHART_REPLIES);
    assert_eq!(alerts.len(), 1 + charts, "{alerts:?}");
    let shared = peer.shared_files();
    assert_eq!(
        shared.len(),
        charts,
        "one upload per chart reply: {shared:?}"
    );
    for f in &shared {
        assert_eq!(f.thread_ts, digest.slack_ts, "in the digest's thread");
        assert!(f.bytes.starts_with(&[0x89, b'P', b'N', b'G']), "a PNG");
        assert!(
            f.file_name.starts_with("chart-") && f.file_name.ends_with(".png"),
            "{}",
            f.file_name
        );
        assert_eq!(f.title.as_deref(), Some(f.file_name.as_str()));
        let comment = f.initial_comment.as_deref().unwrap();
        assert!(
            incidents
                .iter()
                .any(|(a, w, _)| comment.contains(&format!("*{a}.{w}*"))),
            "names its incident: {comment}"
        );
        assert!(
            replies
                .iter()
                .any(|r| r.slack_ts.as_deref() == Some(f.file_id.as_str()))
        );
    }
    let alerts = [digest.clone()];
    assert!(
        incident_rows
            .iter()
            .all(|i| i.alert_id == Some(alerts[0].alert_id)),
        "every incident points at the digest that announced it: {incident_rows:?}"
    );

    // An operator acknowledges one incident before the retrains below.
    let acked = incident_rows[0].incident_id;
    assert!(
        pipeline
            .store
            .ack_incident(acked, AckReason::Planned, Some("test"))
            .await
            .unwrap()
    );
    let snapshot = || async {
        let days: Vec<(i64, String, String, chrono::NaiveDate, i64)> = pipeline
            .store
            .anomalies_since(since, None)
            .await
            .unwrap()
            .into_iter()
            .map(|a| {
                (
                    a.anomaly_id,
                    a.account_name,
                    a.warehouse_name,
                    a.usage_date,
                    a.incident_id,
                )
            })
            .collect();
        let incidents: Vec<_> = pipeline
            .store
            .list_incidents(&IncidentFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|i| {
                (
                    i.incident_id,
                    i.key(),
                    i.start_day,
                    i.end_day,
                    i.days,
                    i.status,
                    i.ack_reason,
                )
            })
            .collect();
        (days, incidents)
    };
    let (days_before, incidents_before) = snapshot().await;
    let unacked_in_window = incident_rows.len() - 1;

    // A new warehouse with too little history is skipped with a reason, not failed.
    let short: Vec<FeatureRow> = (0..5)
        .map(|i| FeatureRow {
            usage: snowpatrol_detect::daily::DailyUsage {
                key: snowpatrol_detect::WarehouseKey::new("ACME_NEW", "TINY_WH"),
                date: chrono::NaiveDate::from_ymd_opt(2025, 6, 26).unwrap() + chrono::Days::new(i),
                credits: 1.0,
                credits_compute: 1.0,
                credits_cloud_services: 0.0,
                hours_active: 1.0,
                peak_hourly_credits: 1.0,
            },
            trend: None,
            seasonal: None,
            residual: None,
        })
        .collect();
    pipeline.store.upsert_features(&short, None).await.unwrap();
    // No drift on unchanged data: a plain retrain run keeps most models; force_retrain retrains all.
    engine.trigger("train", &[], "test").await.unwrap();
    let train = wait_runs(&db, "train", 2).await;
    let tis = db
        .task_instances_of(train[0].run_id, "train_warehouse")
        .await
        .unwrap();
    let tiny = tis
        .iter()
        .find(|t| t.map_key == "ACME_NEW.TINY_WH")
        .unwrap();
    assert_eq!(tiny.state, snowpatrol_store::TaskState::Success);
    assert!(
        tiny.output.as_ref().unwrap()["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("fewer than min_days")
    );
    let statuses: Vec<&str> = tis
        .iter()
        .map(|t| {
            t.output.as_ref().unwrap()["data"]["status"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        statuses.iter().filter(|s| **s == "skipped").count() >= 2,
        "{statuses:?}"
    );
    engine
        .trigger("train", &["force_retrain=true".into()], "test")
        .await
        .unwrap();
    let train = wait_runs(&db, "train", 3).await;
    let tis = db
        .task_instances_of(train[0].run_id, "train_warehouse")
        .await
        .unwrap();
    let trained = tis
        .iter()
        .filter(|t| t.output.as_ref().unwrap()["data"]["status"] == json!("trained"))
        .count();
    assert_eq!(
        trained, 8,
        "force_retrain trains every warehouse with enough history"
    );
    wait_runs(&db, "predict", 4).await;

    // Retrained twice (new model versions each time), predict re-scoring after each: the same warehouse-days
    // are the same rows (now scored by the newest version), the incidents are the same, nothing is alerted
    // again, and the acknowledgement made before the retrains stands.
    for (round, predicts) in [(1, 4), (2, 5)] {
        if round == 2 {
            engine
                .trigger("train", &["force_retrain=true".into()], "test")
                .await
                .unwrap();
            wait_runs(&db, "train", 4).await;
        }
        let predict = wait_runs(&db, "predict", predicts).await;
        assert_eq!(predict[0].state, RunState::Success, "{predict:?}");
        let (days_now, incidents_now) = snapshot().await;
        assert_eq!(
            days_now, days_before,
            "retrain {round}: one row per warehouse-day, none lost or added"
        );
        assert_eq!(
            incidents_now, incidents_before,
            "retrain {round}: incidents unchanged"
        );
        let latest: BTreeMap<(String, String), i32> = pipeline
            .store
            .list_models(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.aliases == "latest")
            .map(|m| ((m.account_name, m.warehouse_name), m.version))
            .collect();
        for a in pipeline.store.anomalies_since(since, None).await.unwrap() {
            assert_eq!(
                (Some(&a.model_version), a.run_id),
                (
                    latest.get(&(a.account_name.clone(), a.warehouse_name.clone())),
                    predict[0].run_id
                ),
                "re-scored in place by the newest model: {a:?}"
            );
        }
        assert_eq!(
            peer.channel().len(),
            sent.len(),
            "retrain {round}: no new alert"
        );
        assert_eq!(
            pipeline.store.list_alerts(false, 100).await.unwrap().len(),
            1 + charts,
            "retrain {round}: no new alert row"
        );
        assert_eq!(
            peer.shared_files().len(),
            charts,
            "retrain {round}: no new chart"
        );
        let report = &db
            .task_instances_of(predict[0].run_id, "report")
            .await
            .unwrap()[0];
        let data = &report.output.as_ref().unwrap()["data"];
        assert_eq!(data["new_alerts"], json!(0), "{data}");
        assert_eq!(
            data["already_alerted"],
            json!(unacked_in_window),
            "the acknowledged incident is left out of the report: {data}"
        );
        let ack = pipeline.store.incident(acked).await.unwrap().unwrap();
        assert_eq!(
            (ack.status, ack.ack_reason),
            (IncidentStatus::Acknowledged, Some(AckReason::Planned))
        );
    }

    // An incident that grows (here: a late-flagged day just before its start) keeps its id and its alert.
    let grow = incident_rows
        .iter()
        .find(|i| i.incident_id != acked)
        .expect("a second incident");
    let key = grow.key();
    let model = pipeline
        .store
        .model_by_alias(&key, "latest")
        .await
        .unwrap()
        .unwrap();
    let before = grow.start_day - chrono::Days::new(1);
    let r = pipeline
        .store
        .upsert_anomalies(
            &[NewAnomaly {
                key: key.clone(),
                model_id: model.model_id,
                model_version: model.version,
                run_id: 0,
                day: AnomalyDay {
                    date: before,
                    actual_credits: 10.0,
                    expected_credits: 1.0,
                    excess_credits: 9.0,
                    score: 9.0,
                    threshold: model.threshold,
                    explanation: "flagged late".into(),
                },
            }],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!((r.new_days, r.extended_incidents), (1, 1), "{r:?}");
    engine.trigger("predict", &[], "test").await.unwrap();
    let predict = wait_runs(&db, "predict", 6).await;
    assert_eq!(predict[0].state, RunState::Success);
    let alerts_now = pipeline.store.list_alerts(false, 100).await.unwrap();
    assert_eq!(
        peer.channel().len(),
        sent.len(),
        "a grown incident is not alerted twice"
    );
    assert_eq!(alerts_now.len(), 1 + charts);
    assert_eq!(peer.shared_files().len(), charts);

    stop.cancel();
    daemon.await.unwrap().unwrap();
    sender.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_postgres() {
    end_to_end(snowpatrol_pipeline::testing::fresh_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_on_sqlite() {
    let (db, _dir) = snowpatrol_pipeline::testing::fresh_sqlite().await;
    end_to_end(db).await;
}

#[test]
fn validation_names_what_and_where() {
    use chrono::TimeZone;
    let row = |wh: &str, h: u32, c: f64| snowpatrol_detect::MeteringRow {
        account_name: "ACME".into(),
        warehouse_id: 1,
        warehouse_name: wh.into(),
        service_type: "WAREHOUSE_METERING".into(),
        start_time: chrono::Utc.with_ymd_and_hms(2025, 6, 1, h, 0, 0).unwrap(),
        end_time: chrono::Utc
            .with_ymd_and_hms(2025, 6, 1, h + 1, 0, 0)
            .unwrap(),
        credits_used: c,
        credits_used_compute: c,
        credits_used_cloud_services: 0.0,
    };
    let d = |day| chrono::NaiveDate::from_ymd_opt(2025, 6, day).unwrap();
    assert!(snowpatrol_pipeline::jobs::validate_rows(&[row("WH", 1, 1.0)], d(1), d(2)).is_ok());
    let e = snowpatrol_pipeline::jobs::validate_rows(
        &[row("WH", 1, -2.0), row("WH", 1, 1.0), row("", 3, 1.0)],
        d(1),
        d(3),
    )
    .unwrap_err();
    assert!(
        e.contains("CREDITS_USED = -2 for ACME.WH at 2025-06-01 01:00:00 UTC"),
        "{e}"
    );
    assert!(
        e.contains("duplicate hour 2025-06-01 01:00:00 UTC for ACME.WH"),
        "{e}"
    );
    assert!(e.contains("empty account or warehouse name"), "{e}");
    assert!(
        e.contains("no metering rows at all on 1 day(s) of the window: 2025-06-02"),
        "{e}"
    );
}

#[tokio::test]
async fn hourly_rows_round_trip_exactly_and_reloads_are_idempotent() {
    use chrono::TimeZone;
    for db in [
        snowpatrol_pipeline::testing::fresh_postgres().await,
        snowpatrol_pipeline::testing::fresh_sqlite().await.0,
    ] {
        let store = snowpatrol_pipeline::PipelineStore::new(db.clone());
        let at = |d, h| chrono::Utc.with_ymd_and_hms(2025, 6, d, h, 0, 0).unwrap();
        let row = |name: &str, d, h, c: f64| snowpatrol_detect::MeteringRow {
            account_name: "ACME".into(),
            warehouse_id: 7,
            warehouse_name: name.into(),
            service_type: "WAREHOUSE_METERING".into(),
            start_time: at(d, h),
            end_time: at(d, h) + chrono::Duration::hours(1),
            credits_used: c,
            credits_used_compute: c * 0.9,
            credits_used_cloud_services: c * 0.1,
        };
        let rows = vec![
            row("ODD\tNAME\\WH", 1, 0, 0.123456789012),
            row("WH", 1, 5, 1e-9),
            row("WH", 2, 23, 12345.5),
        ];
        let load = |run_id| snowpatrol_pipeline::store::MeteringLoad {
            from: at(1, 0).date_naive(),
            to: at(3, 0).date_naive(),
            hourly: &rows,
            daily: &[],
            run_id: Some(run_id),
        };
        store.load_metering(&load(42), None).await.unwrap();
        // A rerun over the same window replaces instead of appending.
        store.load_metering(&load(43), None).await.unwrap();
        let ledger = store.loaded_days(at(1, 0).date_naive()).await.unwrap();
        assert_eq!(
            ledger.into_iter().collect::<Vec<_>>(),
            vec![at(1, 0).date_naive(), at(2, 0).date_naive()],
            "both days of the window are in the load ledger"
        );
        let read: Vec<(String, f64, chrono::DateTime<chrono::Utc>, Option<i64>)> = match db.pool() {
            snowpatrol_store::Pool::Postgres(p) => sqlx::query_as(
                "SELECT warehouse_name, credits_used, start_time, loaded_by_run_id FROM warehouse_metering_hourly ORDER BY start_time",
            )
            .fetch_all(p)
            .await
            .unwrap(),
            snowpatrol_store::Pool::Sqlite(p) => sqlx::query_as(
                "SELECT warehouse_name, credits_used, start_time, loaded_by_run_id FROM warehouse_metering_hourly ORDER BY start_time",
            )
            .fetch_all(p)
            .await
            .unwrap(),
        };
        assert_eq!(read.len(), 3, "{}", db.backend_name());
        for (r, orig) in read.iter().zip(&rows) {
            assert_eq!(
                (r.0.as_str(), r.1, r.2, r.3),
                (
                    orig.warehouse_name.as_str(),
                    orig.credits_used,
                    orig.start_time,
                    Some(43)
                )
            );
        }
    }
}

/// prep reads from Snowflake (the fakesnow peer, through the real connector) and the chain runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prep_extracts_from_snowflake_and_the_chain_flags_a_spike() {
    use snowpatrol_sources::SnowflakeAuth;
    use snowpatrol_sources::testing::{FakeSnowflake, PASSWORD};
    let peer = FakeSnowflake::start(&[]);
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let first = yesterday - chrono::Days::new(27);
    let mut rows = vec![];
    for (account, id, wh, base) in [
        ("ACME_PROD", 1, "COMPUTE_WH", 1.0),
        ("ACME_DEV", 2, "COMPUTE_WH", 0.5),
        ("ACME_PROD", 3, "ETL_WH", 2.0),
    ] {
        let mut d = first;
        while d <= yesterday {
            let weekend = d.format("%u").to_string().parse::<u32>().unwrap_or(1) >= 6;
            let spike = wh == "ETL_WH" && d == yesterday;
            for h in 0..24u32 {
                let working = (8..18).contains(&h);
                let credits = if spike {
                    base * 8.0
                } else if working && !weekend {
                    base
                } else if working {
                    base * 0.3
                } else {
                    0.0
                };
                if credits == 0.0 {
                    continue;
                }
                let start = d.and_hms_opt(h, 0, 0).unwrap().and_utc();
                rows.push(snowpatrol_detect::MeteringRow {
                    account_name: account.into(),
                    warehouse_id: id,
                    warehouse_name: wh.into(),
                    service_type: "WAREHOUSE_METERING".into(),
                    start_time: start,
                    end_time: start + chrono::Duration::hours(1),
                    credits_used: credits,
                    credits_used_compute: credits * 0.95,
                    credits_used_cloud_services: credits * 0.05,
                });
            }
            d = d + chrono::Days::new(1);
        }
    }
    peer.load(&rows).await;
    // What Snowflake's own views say about the spike: a dbt backfill on ETL_WH, resized at 02:14; its tags;
    // and the contract's price of a credit (EUR 2.80 on the last days).
    let at = |h: u32, m: u32| format!("{} {h:02}:{m:02}:00+00:00", yesterday);
    let context_rows = [
        format!(
            "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY (QUERY_ID, WAREHOUSE_NAME, \
             QUERY_PARAMETERIZED_HASH, QUERY_TAG, USER_NAME, START_TIME, END_TIME, CREDITS_ATTRIBUTED_COMPUTE) VALUES \
             ('q1', 'ETL_WH', 'h-orders', 'dbt:orders_backfill', 'DBT_PROD', '{}', '{}', 300.0), \
             ('q2', 'ETL_WH', 'h-small', NULL, 'ALICE', '{}', '{}', 2.0)",
            at(2, 30),
            at(20, 0),
            at(12, 0),
            at(12, 5)
        ),
        format!(
            "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_EVENTS_HISTORY (TIMESTAMP, WAREHOUSE_ID, WAREHOUSE_NAME, \
             EVENT_NAME, EVENT_REASON, EVENT_STATE, USER_NAME, ROLE_NAME, SIZE, CLUSTER_COUNT) VALUES \
             ('{}', 3, 'ETL_WH', 'WAREHOUSE_CONSISTENT', 'WAREHOUSE_RESIZE', 'COMPLETED', 'BOB', 'SYSADMIN', 'X-Large', 1)",
            at(2, 14)
        ),
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.TAG_REFERENCES (TAG_DATABASE, TAG_SCHEMA, TAG_NAME, TAG_VALUE, \
         OBJECT_NAME, DOMAIN) VALUES ('GOV', 'TAGS', 'COST_CENTER', 'data-eng', 'ETL_WH', 'WAREHOUSE')"
            .to_string(),
        format!(
            "INSERT INTO SNOWFLAKE.ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY (ORGANIZATION_NAME, ACCOUNT_NAME, \
             USAGE_DATE, USAGE_TYPE, CURRENCY, USAGE, USAGE_IN_CURRENCY) VALUES \
             ('ACME', 'ACME_PROD', '{yesterday}', 'compute', 'EUR', 100, 280), \
             ('ACME', 'ACME_DEV', '{yesterday}', 'compute', 'EUR', 10, 30)"
        ),
    ];
    let context_rows: Vec<&str> = context_rows.iter().map(String::as_str).collect();
    peer.execute(snowpatrol_sources::testing::CONTEXT_VIEWS)
        .await;
    peer.execute(&context_rows).await;
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let mut snowflake = peer.config(SnowflakeAuth::Password {
        password: PASSWORD.to_string().into(),
    });
    snowflake.account_name = Some("ACME_PROD".into());
    let mut cfg = PipelineConfig {
        source: snowpatrol_pipeline::SourceConfig::Snowflake {
            snowflake: Box::new(snowflake),
        },
        credit_prices: snowpatrol_pipeline::CreditPrices::Snowflake,
        ..Default::default()
    };
    cfg.alerts = toml::from_str(
        "[[routes]]\nname = \"data-eng\"\nchannel = \"CDATAENG\"\ntags = { COST_CENTER = \"data-eng\" }\n",
    )
    .unwrap();
    let pipeline = Pipeline::new(db.clone(), cfg, dir.path().to_path_buf()).unwrap();
    let settings = SchedulerSettings {
        poll_interval: Duration::from_millis(500),
        default_retries: 0,
        ..Default::default()
    };
    let engine =
        snowpatrol_pipeline::testing::chained_engine(&db, &pipeline, settings, false).await;
    let stop = CancellationToken::new();
    let daemon = engine.spawn_daemon(stop.clone());
    let prep = engine
        .trigger("prep", &["backfill_days=28".into()], "test")
        .await
        .unwrap();
    let predict = wait_runs(&db, "predict", 1).await;
    stop.cancel();
    daemon.await.unwrap().unwrap();
    assert_eq!(
        db.get_run(prep).await.unwrap().unwrap().state,
        RunState::Success
    );
    assert_eq!(predict[0].state, RunState::Success);
    let extract = &db.task_instances_of(prep, "extract").await.unwrap()[0];
    assert_eq!(
        extract.output.as_ref().unwrap()["data"]["hourly_rows"],
        json!(rows.len()),
        "every Snowflake row loaded"
    );
    let models = pipeline.store.list_models(None).await.unwrap();
    assert_eq!(models.len(), 3, "COMPUTE_WH of two accounts and ETL_WH");
    let anomalies = pipeline
        .store
        .anomalies_since(yesterday - chrono::Days::new(7), None)
        .await
        .unwrap();
    assert!(
        anomalies
            .iter()
            .any(|a| a.warehouse_name == "ETL_WH" && a.usage_date == yesterday),
        "the 24-hour, 8x spike is flagged: {anomalies:?}"
    );
    assert!(
        anomalies.iter().all(|a| a.warehouse_name == "ETL_WH"),
        "nothing else: {anomalies:?}"
    );

    // The spike's root cause, from the views and the hourly metering, stored with the day and shown in the
    // report and the digest; its money at the account's own price; its digest routed by the warehouse's tag.
    let spike = anomalies
        .iter()
        .find(|a| a.usage_date == yesterday)
        .unwrap();
    let causes = pipeline
        .store
        .root_causes(None, yesterday, yesterday)
        .await
        .unwrap();
    assert_eq!(causes.len(), 1, "{causes:?}");
    let summary = &causes[0].summary;
    assert!(
        summary.contains("1 statement run 1 time by DBT_PROD (query tag `dbt:orders_backfill`)")
            && summary.contains("resized to X-Large at 02:14 UTC by BOB (SYSADMIN)")
            && summary.contains("of the excess over the usual hourly curve fell between"),
        "{summary}"
    );
    let prep_out = &extract.output.as_ref().unwrap()["data"]["credit_rates"];
    assert_eq!(
        prep_out,
        &json!({ "loaded": 2 }),
        "prep loaded the day's rates"
    );
    let incident = pipeline
        .store
        .incident(spike.incident_id)
        .await
        .unwrap()
        .unwrap();
    let cost = incident.excess_cost.expect("money at the account's price");
    assert!(
        (cost - incident.excess_credits * 2.8).abs() < 1e-6,
        "{cost} = {} x 2.80",
        incident.excess_credits
    );
    let (markdown, _) = pipeline
        .store
        .report_markdown(predict[0].run_id)
        .await
        .unwrap()
        .unwrap();
    assert!(markdown.contains("Root cause: "), "{markdown}");
    assert!(markdown.contains("EUR "), "{markdown}");
    let alerts = pipeline.store.list_alerts(false, 100).await.unwrap();
    let digest = alerts
        .iter()
        .find(|a| a.dedupe_key.starts_with("digest:") && !a.dedupe_key.contains(":chart:"))
        .expect("a digest");
    let reply = alerts
        .iter()
        .find(|a| a.dedupe_key.contains(":chart:"))
        .expect("a chart reply");
    assert!(
        reply
            .message
            .to_string()
            .contains("*Root cause:* 82 % of the excess (300.0 of 364.0 credits)"),
        "{}",
        reply.message
    );
    assert_eq!(digest.channel, "CDATAENG", "routed by the COST_CENTER tag");
    let text = digest.message.to_string();
    assert!(
        text.contains("Root cause: ") && text.contains("cost EUR "),
        "{text}"
    );
}

/// At least once, never twice: an alert Slack refused with a 500 goes back to `pending` with a backoff and
/// goes out when Slack is back; a delivered alert's key is never queued again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_alerts_are_retried_and_never_repeated() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let peer = SlackPeer::start().await;
    peer.set_mode(Mode::ServerError);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, common::TOKEN).unwrap();
    let cfg: PipelineConfig = toml::from_str(&format!(
        "[slack]\nchannel = \"{}\"\ntoken_env = \"SNOWPATROL_UNSET_TOKEN_VAR\"\ntoken_file = \"{}\"\napi_url = \"{}\"\nmax_attempts = 3\ninitial_backoff = \"300ms\"\n",
        common::CHANNEL,
        token.display(),
        peer.api_url
    ))
    .unwrap();
    let db = snowpatrol_pipeline::testing::fresh_postgres().await;
    let pipeline = Pipeline::new(db.clone(), cfg, dir.path().to_path_buf()).unwrap();
    let msg =
        snowpatrol_alert::failure_message("predict", "score_warehouse", Some("A.W"), "7", "boom");
    let key = "failure:7:score_warehouse:A.W";
    // Queues the failure alert; the second time, to show it is queued once per key.
    let enqueue = async || {
        pipeline
            .enqueue_alert(
                key,
                snowpatrol_pipeline::store::AlertKind::TaskFailure,
                Some(7),
                &msg,
                None,
            )
            .await
            .unwrap()
    };

    let queued = enqueue().await;
    assert!(
        matches!(queued, snowpatrol_pipeline::alerts::Enqueued::Queued(_)),
        "{queued:?}"
    );
    let pass = pipeline.deliver_due_alerts().await.unwrap();
    assert_eq!((pass.claimed, pass.retrying), (1, 1), "{pass:?}");
    let alerts = pipeline.store.list_alerts(false, 10).await.unwrap();
    assert_eq!(
        (alerts[0].state, alerts[0].attempts),
        (AlertState::Pending, 1)
    );
    assert!(
        alerts[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("500"),
        "{:?}",
        alerts[0].last_error
    );
    let due = alerts[0].next_attempt_at.expect("a backoff");
    assert!(due > snowpatrol_store::now(), "not due at once: {due}");
    assert_eq!(
        pipeline.deliver_due_alerts().await.unwrap().claimed,
        0,
        "nothing before the backoff"
    );

    peer.set_mode(Mode::Normal);
    tokio::time::sleep((due - snowpatrol_store::now()).to_std().unwrap_or_default()).await;
    assert_eq!(pipeline.deliver_due_alerts().await.unwrap().sent, 1);
    let alerts = pipeline.store.list_alerts(false, 10).await.unwrap();
    assert_eq!(alerts[0].state, AlertState::Sent);
    assert_eq!(
        alerts[0].slack_ts.as_deref(),
        Some(peer.channel()[0].ts.as_str())
    );
    assert_eq!(
        pipeline.deliver_due_alerts().await.unwrap().claimed,
        0,
        "nothing left to send"
    );
    let again = enqueue().await;
    assert_eq!(again, snowpatrol_pipeline::alerts::Enqueued::Duplicate);
    assert_eq!(peer.posts_for(key), 1);
}

/// Without any `[jobs.*]` table the product chain is wired: prep on a daily cron, train on the features
/// dataset, predict on the models dataset; a table in the TOML replaces the default whole.
#[tokio::test]
async fn built_in_schedules_chain_the_jobs_unless_the_toml_says_otherwise() {
    let (db, _dir) = snowpatrol_pipeline::testing::fresh_sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::new(db, PipelineConfig::default(), dir.path().to_path_buf()).unwrap();
    let settings = SchedulerSettings::default();
    let jobs = resolve_jobs(&pipeline.registry(), &BTreeMap::new(), &settings).unwrap();
    assert_eq!(
        jobs.get("prep").unwrap().schedule_text(),
        "cron `0 6 * * *` (UTC)"
    );
    assert_eq!(
        jobs.get("train").unwrap().schedule_text(),
        format!("datasets {FEATURES_DATASET}")
    );
    assert_eq!(
        jobs.get("predict").unwrap().schedule_text(),
        format!("datasets {MODELS_DATASET}")
    );
    let manual: BTreeMap<String, JobConfig> =
        toml::from_str("[train]\nmax_active_runs = 1\n").unwrap();
    let jobs = resolve_jobs(&pipeline.registry(), &manual, &settings).unwrap();
    assert_eq!(jobs.get("train").unwrap().schedule_text(), "manual");
}
