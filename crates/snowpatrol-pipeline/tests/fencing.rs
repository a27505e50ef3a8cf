//! Every write a task makes is fenced by its lease, on PostgreSQL and SQLite: a try whose lease passed to
//! another try cannot load metering, register a model, record anomalies or save a report; the live try can.
//! Model registration is idempotent per (training run, warehouse). And the 0005 upgrade of a database written
//! by the previous release: the load ledger is seeded from the hourly rows that exist (so a lost hourly load
//! is reloaded), and duplicate versions a stale try registered in one run are marked, not deleted.

#[macro_use]
mod backends;
mod previous_release;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use snowpatrol_detect::daily::DailyUsage;
use snowpatrol_detect::model::AnomalyDay;
use snowpatrol_detect::{MeteringRow, WarehouseKey};
use snowpatrol_pipeline::PipelineStore;
use snowpatrol_pipeline::store::{FeatureRow, MeteringLoad, NewAnomaly, NewModel};
use snowpatrol_store::{
    Database, JobRegistration, JobShape, NewRun, Pool, StoreError, TaskFence, TaskShape,
    TriggerKind, TriggerRule,
};
use std::collections::HashMap;
use std::time::Duration;

both_backends!(
    a_stale_try_cannot_write_and_the_live_one_can,
    upgrade_to_0005_seeds_the_ledger_and_marks_duplicate_models,
    upgrade_to_0008_seeds_freshness_and_loads_only_move_it_forward,
);

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, m, d).unwrap()
}

fn at(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, m, d, h, 0, 0).unwrap()
}

fn hourly(wh: &str, d: u32, h: u32) -> MeteringRow {
    MeteringRow {
        account_name: "ACME".into(),
        warehouse_id: 7,
        warehouse_name: wh.into(),
        service_type: "WAREHOUSE_METERING".into(),
        start_time: at(6, d, h),
        end_time: at(6, d, h) + chrono::Duration::hours(1),
        credits_used: 1.0,
        credits_used_compute: 0.9,
        credits_used_cloud_services: 0.1,
    }
}

fn daily(wh: &str, d: u32) -> FeatureRow {
    FeatureRow {
        usage: DailyUsage {
            key: WarehouseKey::new("ACME", wh),
            date: day(6, d),
            credits: 1.0,
            credits_compute: 0.9,
            credits_cloud_services: 0.1,
            hours_active: 1.0,
            peak_hourly_credits: 0.9,
        },
        trend: None,
        seasonal: None,
        residual: None,
    }
}

fn new_model(wh: &str, run_id: Option<i64>) -> NewModel {
    NewModel {
        key: WarehouseKey::new("ACME", wh),
        model_kind: "default".into(),
        params: serde_json::json!({}),
        threshold: 3.0,
        training_start: day(1, 1),
        training_end: day(5, 31),
        metrics: serde_json::json!({}),
        drift: serde_json::json!({}),
        model: serde_json::json!({}),
        training_run_id: run_id,
    }
}

async fn count(db: &Database, sql: &'static str) -> i64 {
    match db.pool() {
        Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    }
}

fn assert_fenced<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(e) if e.is_fenced() => {}
        other => panic!("{what}: expected a fenced refusal, got {other:?}"),
    }
}

/// A one-task job, a run of it, and its instance claimed by `worker` with a lease of `lease`.
async fn claim(db: &Database, shape: &JobShape, worker: &str, lease: Duration) -> TaskFence {
    let until = snowpatrol_store::now() + chrono::Duration::from_std(lease).unwrap();
    let claimed = db.claim_tasks(worker, 1, until, None).await.unwrap();
    assert_eq!(claimed.len(), 1, "{worker} claims the instance");
    assert_eq!(claimed[0].job_name, shape.job_name);
    TaskFence {
        task_instance_id: claimed[0].task_instance_id,
        try_number: claimed[0].try_number,
        worker_id: worker.into(),
    }
}

async fn a_stale_try_cannot_write_and_the_live_one_can(db: Database) {
    snowpatrol_pipeline::migrate(&db).await.unwrap();
    let store = PipelineStore::new(db.clone());
    let shape = JobShape {
        job_name: "work".into(),
        tasks: vec![TaskShape {
            name: "t".into(),
            depends_on: vec![],
            map_over: None,
            trigger_rule: TriggerRule::AllSuccess,
            outlets: vec![],
            max_tries: 3,
        }],
    };
    db.sync_jobs(&[JobRegistration {
        job_name: "work".into(),
        schedule: String::new(),
        datasets: vec![],
    }])
    .await
    .unwrap();
    let run_id = db
        .create_run(&NewRun {
            job_name: "work".into(),
            run_key: "manual:1".into(),
            trigger_kind: TriggerKind::Manual,
            logical_time: snowpatrol_store::now(),
            params: serde_json::json!({}),
            triggered_by: "test".into(),
        })
        .await
        .unwrap()
        .unwrap();
    db.start_run(run_id, &shape).await.unwrap();

    // Try 1 on worker A, whose lease runs out (A froze); the reaper hands the instance to try 2 on worker B.
    let stale = claim(&db, &shape, "worker-a", Duration::from_millis(300)).await;
    let rows = vec![hourly("WH", 1, 0), hourly("WH", 1, 1)];
    let days = vec![daily("WH", 1)];
    let load = |run| MeteringLoad {
        from: day(6, 1),
        to: day(6, 2),
        hourly: &rows,
        daily: &days,
        run_id: Some(run),
    };
    // While the lease is A's, A's writes commit.
    store
        .load_metering(&load(run_id), Some(&stale))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expired but not yet reaped: still refused, the lease is not A's any more.
    assert_fenced(
        store.load_metering(&load(run_id), Some(&stale)).await,
        "load after the lease expired",
    );
    let shapes: HashMap<String, std::sync::Arc<JobShape>> =
        [("work".to_string(), std::sync::Arc::new(shape.clone()))].into();
    let (reaped, _) = db.reap_expired_leases(&shapes).await.unwrap();
    assert_eq!(reaped, 1);
    // Retry backoff of the reaper is "now": B claims try 2 at once.
    let live = claim(&db, &shape, "worker-b", Duration::from_secs(60)).await;
    assert_eq!(live.try_number, stale.try_number + 1);

    // Every write of the stale try is refused and leaves nothing behind.
    let more = vec![hourly("WH", 1, 0), hourly("WH", 1, 1), hourly("WH", 1, 2)];
    let bigger = MeteringLoad {
        hourly: &more,
        ..load(run_id)
    };
    assert_fenced(store.load_metering(&bigger, Some(&stale)).await, "load");
    assert_eq!(
        count(&db, "SELECT count(*) FROM warehouse_metering_hourly").await,
        2
    );
    assert_fenced(
        store
            .replace_daily(&[daily("WH", 1), daily("WH", 2)], Some(&stale))
            .await,
        "features",
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM warehouse_daily_usage").await,
        1
    );
    assert_fenced(
        store
            .register_model(&new_model("WH", Some(run_id)), Some(&stale))
            .await,
        "model registration",
    );
    assert_eq!(count(&db, "SELECT count(*) FROM models").await, 0);
    assert_fenced(
        store
            .save_report(run_id, "# stale", "/dev/null", 0, Some(&stale))
            .await,
        "report",
    );
    assert_eq!(count(&db, "SELECT count(*) FROM reports").await, 0);
    assert_fenced(
        store
            .insert_alert(
                "incident:1",
                snowpatrol_pipeline::store::AlertKind::Anomaly,
                Some(run_id),
                "file",
                &serde_json::json!({}),
                Some(&stale),
            )
            .await,
        "alert",
    );
    assert_eq!(count(&db, "SELECT count(*) FROM alerts").await, 0);

    // The live try writes, and registering twice in one run keeps one version.
    store.load_metering(&bigger, Some(&live)).await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM warehouse_metering_hourly").await,
        3
    );
    let first = store
        .register_model(&new_model("WH", Some(run_id)), Some(&live))
        .await
        .unwrap();
    assert!(first.created);
    let again = store
        .register_model(&new_model("WH", Some(run_id)), Some(&live))
        .await
        .unwrap();
    assert_eq!(
        (again.model_id, again.version, again.created),
        (first.model_id, 1, false)
    );
    assert_eq!(count(&db, "SELECT count(*) FROM models").await, 1);
    let anomaly = NewAnomaly {
        key: WarehouseKey::new("ACME", "WH"),
        model_id: first.model_id,
        model_version: first.version,
        run_id,
        day: AnomalyDay {
            date: day(6, 1),
            actual_credits: 9.0,
            expected_credits: 1.0,
            excess_credits: 8.0,
            score: 9.0,
            threshold: 3.0,
            explanation: "test".into(),
        },
    };
    assert_fenced(
        store
            .upsert_anomalies(std::slice::from_ref(&anomaly), None, Some(&stale))
            .await,
        "anomalies",
    );
    assert_eq!(count(&db, "SELECT count(*) FROM anomalies").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM incidents").await, 0);
    let up = store
        .upsert_anomalies(&[anomaly], None, Some(&live))
        .await
        .unwrap();
    assert_eq!((up.new_days, up.new_incidents), (1, 1));
    assert_fenced(
        store
            .resolve_incidents(&WarehouseKey::new("ACME", "WH"), day(6, 5), Some(&stale))
            .await,
        "resolve",
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM incidents WHERE status = 'open'").await,
        1
    );

    // Once the live try finished, its own fence is spent too: nothing can write under it any more.
    db.finish_tasks(
        "worker-b",
        &[snowpatrol_store::TaskResult {
            task_instance_id: live.task_instance_id,
            try_number: live.try_number,
            outcome: snowpatrol_store::TaskOutcome::Success {
                output: snowpatrol_store::TaskOutput::empty(),
            },
        }],
        &shapes,
    )
    .await
    .unwrap();
    assert_fenced(
        store
            .save_report(run_id, "# late", "/dev/null", 0, Some(&live))
            .await,
        "report after the try finished",
    );
}

async fn upgrade_to_0005_seeds_the_ledger_and_marks_duplicate_models(db: Database) {
    previous_release::migrate_to(&db, 3).await;
    // The previous release's state after an interrupted prep: June 1-3 in the daily table, hourly rows only for
    // June 3 (the hourly load of June 1-2 was lost); and one training run (id 5) that registered WH twice
    // (a stale try), next to a normal run (id 6).
    let exec = |sql: &'static str| {
        let db = db.clone();
        async move {
            match db.pool() {
                Pool::Postgres(p) => {
                    sqlx::query(sql).execute(p).await.unwrap();
                }
                Pool::Sqlite(p) => {
                    sqlx::query(sql).execute(p).await.unwrap();
                }
            }
        }
    };
    let store = PipelineStore::new(db.clone());
    let rows = vec![hourly("WH", 3, 0), hourly("WH", 3, 1), hourly("WH", 3, 2)];
    // The same statement and binds on whichever backend `db` is (the pools have different types).
    macro_rules! insert_hourly {
        ($pool:expr) => {
            for r in &rows {
                sqlx::query(
                    "INSERT INTO warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, start_time, \
                     end_time, credits_used, credits_used_compute, credits_used_cloud_services, loaded_by_run_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 4)",
                )
                .bind(&r.account_name)
                .bind(r.warehouse_id)
                .bind(&r.warehouse_name)
                .bind(&r.service_type)
                .bind(r.start_time)
                .bind(r.end_time)
                .bind(r.credits_used)
                .bind(r.credits_used_compute)
                .bind(r.credits_used_cloud_services)
                .execute($pool)
                .await
                .unwrap();
            }
        };
    }
    match db.pool() {
        Pool::Postgres(p) => insert_hourly!(p),
        Pool::Sqlite(p) => insert_hourly!(p),
    }
    store
        .upsert_features(&[daily("WH", 1), daily("WH", 2), daily("WH", 3)], None)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, training_end, \
         metrics, drift, model, training_run_id, created_at) VALUES ('ACME', 'WH', 1, 'default', '{}', 3, '2025-01-01', '2025-05-31', \
         '{}', '{}', '{}', 5, '2025-06-01T00:00:00+00:00')",
        "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, training_end, \
         metrics, drift, model, training_run_id, created_at) VALUES ('ACME', 'WH', 2, 'default', '{}', 3, '2025-01-01', '2025-05-31', \
         '{}', '{}', '{}', 5, '2025-06-01T00:00:01+00:00')",
        "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, training_end, \
         metrics, drift, model, training_run_id, created_at) VALUES ('ACME', 'BI', 1, 'default', '{}', 3, '2025-01-01', '2025-05-31', \
         '{}', '{}', '{}', 6, '2025-06-01T00:00:00+00:00')",
    ] {
        exec(sql).await;
    }

    snowpatrol_pipeline::migrate(&db).await.unwrap();

    // Only June 3 had its hourly rows: the ledger says so, and the next prep starts at June 1.
    let ledger = store.loaded_days(day(1, 1)).await.unwrap();
    assert_eq!(ledger.into_iter().collect::<Vec<_>>(), vec![day(6, 3)]);
    // Nothing was deleted; the older duplicate of run 5 points at the kept one.
    assert_eq!(count(&db, "SELECT count(*) FROM models").await, 3);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM models WHERE duplicate_of_model_id IS NOT NULL AND version = 1 AND warehouse_name = 'WH'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM models WHERE duplicate_of_model_id IS NULL"
        )
        .await,
        2
    );
    // Run 5 registering WH again returns the kept version (2), not a third one.
    let again = store
        .register_model(&new_model("WH", Some(5)), None)
        .await
        .unwrap();
    assert_eq!((again.version, again.created), (2, false));
    // The unique index holds for new rows too: a concurrent duplicate insert of one run fails.
    let dup = match db.pool() {
        Pool::Postgres(p) => sqlx::query(
            "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, training_end, \
             metrics, drift, model, training_run_id, created_at) VALUES ('ACME', 'BI', 2, 'default', '{}', 3, '2025-01-01', '2025-05-31', \
             '{}', '{}', '{}', 6, now())",
        )
        .execute(p)
        .await
        .is_err(),
        Pool::Sqlite(p) => sqlx::query(
            "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, training_end, \
             metrics, drift, model, training_run_id, created_at) VALUES ('ACME', 'BI', 2, 'default', '{}', 3, '2025-01-01', '2025-05-31', \
             '{}', '{}', '{}', 6, '2025-06-02T00:00:00+00:00')",
        )
        .execute(p)
        .await
        .is_err(),
    };
    assert!(
        dup,
        "models_once_per_run refuses a second version of one run"
    );
}

/// 0008 on a database of the previous release: `metering_freshness` is seeded per account from the hourly rows
/// already there; afterwards prep's loads move it forward, never back (a reload of an older window).
async fn upgrade_to_0008_seeds_freshness_and_loads_only_move_it_forward(db: Database) {
    previous_release::migrate_to(&db, 7).await;
    let sql = "INSERT INTO warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, \
               start_time, end_time, credits_used, credits_used_compute, credits_used_cloud_services) VALUES \
               ('ACME', 7, 'WH', 'WAREHOUSE_METERING', '2025-06-02T01:00:00+00:00', '2025-06-02T02:00:00+00:00', 1, 0.9, 0.1), \
               ('ACME', 7, 'WH', 'WAREHOUSE_METERING', '2025-06-03T02:00:00+00:00', '2025-06-03T03:00:00+00:00', 1, 0.9, 0.1), \
               ('OTHER', 8, 'WH', 'WAREHOUSE_METERING', '2025-06-02T05:00:00+00:00', '2025-06-02T06:00:00+00:00', 1, 0.9, 0.1)";
    match db.pool() {
        Pool::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        Pool::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
    snowpatrol_pipeline::migrate(&db).await.unwrap();
    let store = PipelineStore::new(db.clone());
    let newest = |store: PipelineStore| async move {
        store
            .scrape_gauges()
            .await
            .unwrap()
            .freshness
            .into_iter()
            .map(|(account, hour, _)| (account, hour))
            .collect::<HashMap<_, _>>()
    };
    let seeded = newest(store.clone()).await;
    assert_eq!(seeded["ACME"], at(6, 3, 2), "{seeded:?}");
    assert_eq!(seeded["OTHER"], at(6, 2, 5), "{seeded:?}");

    // Reloading June 1 (a healed gap) leaves ACME at June 3; loading June 4 moves it there.
    let old_rows = vec![hourly("WH", 1, 0)];
    store
        .load_metering(
            &MeteringLoad {
                from: day(6, 1),
                to: day(6, 2),
                hourly: &old_rows,
                daily: &[],
                run_id: Some(1),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(newest(store.clone()).await["ACME"], at(6, 3, 2));
    let new_rows = vec![hourly("WH", 4, 7)];
    store
        .load_metering(
            &MeteringLoad {
                from: day(6, 4),
                to: day(6, 5),
                hourly: &new_rows,
                daily: &[],
                run_id: Some(2),
            },
            None,
        )
        .await
        .unwrap();
    let after = newest(store).await;
    assert_eq!(after["ACME"], at(6, 4, 7));
    assert_eq!(after["OTHER"], at(6, 2, 5), "another account is untouched");
}
