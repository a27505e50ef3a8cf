//! Engine behaviour against real databases: every scenario runs on PostgreSQL and on SQLite.

use serde_json::json;
use snowpatrol_engine::*;
use snowpatrol_store::testing::{fresh_postgres, fresh_sqlite};
use snowpatrol_store::{TaskState, TriggerKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[macro_use]
mod common;
use common::*;

const A: &str = "test://a";
const B: &str = "test://b";
const C: &str = "test://c";

fn registry() -> JobRegistry {
    let mut r = JobRegistry::new();
    r.external_dataset(A)
        .external_dataset(B)
        .external_dataset(C);
    r.register(JobDefinition::new("all_of", "").task(TaskDefinition::new("t", noop())));
    r.register(JobDefinition::new("any_of", "").task(TaskDefinition::new("t", noop())));
    r.register(JobDefinition::new("nested", "").task(TaskDefinition::new("t", noop())));
    r
}

both_backends!(
    all_of_any_of_and_nested_conditions,
    five_events_collapse_into_one_run,
    max_active_runs_keeps_events_for_the_next_run,
    retries_with_backoff_then_success,
    an_unreachable_database_postpones_a_try_without_using_it_up,
    timeout_fails_the_try,
    mapped_fan_out_failed_key_does_not_stop_siblings,
    outlets_chain_jobs_and_record_lineage,
    cron_catchup_on_and_off_after_downtime,
    typed_params_refused_before_a_run_exists,
    graceful_shutdown_gives_back_leases,
    history_retention_deletes_finished_history_and_keeps_what_is_still_needed,
    run_on_start_runs_a_never_run_cron_job_once_for_its_latest_tick,
    cancelling_a_run_stops_its_running_try_and_frees_its_slot,
    backfill_queues_each_past_tick_once_and_runs_them_within_max_active_runs,
    a_finished_try_keeps_the_replica_it_ran_on,
);

async fn tick(e: &Engine) {
    e.scheduler_tick(&mut Default::default())
        .await
        .expect("tick");
}

async fn all_of_any_of_and_nested_conditions(db: Database) {
    let e = engine_with(
        db.clone(),
        &registry(),
        &format!(
            r#"
            [all_of]
            datasets = ["{A}", "{B}"]
            [any_of]
            datasets = "{A} | {B}"
            [nested]
            datasets = "{A} & ({B} | {C})"
            "#
        ),
        fast_settings(),
    )
    .await;
    e.emit(A, &json!({}), "test").await.unwrap();
    tick(&e).await;
    assert_eq!(runs_of(&db, "all_of").await.len(), 0, "all-of waits for B");
    assert_eq!(runs_of(&db, "any_of").await.len(), 1, "any-of fires on A");
    assert_eq!(runs_of(&db, "nested").await.len(), 0);
    e.emit(C, &json!({}), "test").await.unwrap();
    tick(&e).await;
    assert_eq!(
        runs_of(&db, "nested").await.len(),
        1,
        "A & (B | C) holds with A and C"
    );
    assert_eq!(runs_of(&db, "all_of").await.len(), 0);
    e.emit(B, &json!({}), "test").await.unwrap();
    tick(&e).await;
    let all = runs_of(&db, "all_of").await;
    assert_eq!(all.len(), 1);
    let consumed = db.consumed_events(all[0].run_id).await.unwrap();
    assert_eq!(
        consumed
            .iter()
            .map(|e| e.dataset_uri.as_str())
            .collect::<Vec<_>>(),
        vec![A, B]
    );
}

async fn five_events_collapse_into_one_run(db: Database) {
    let e = Arc::new(
        engine_with(
            db.clone(),
            &registry(),
            &format!("[any_of]\ndatasets = [\"{A}\"]\n"),
            fast_settings(),
        )
        .await,
    );
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(e.emit(A, &json!({ "i": i }), "test").await.unwrap().0);
    }
    let (stop, h) = spawn_daemon(e.clone());
    wait_for("the run to succeed", Duration::from_secs(20), || async {
        runs_of(&db, "any_of")
            .await
            .first()
            .is_some_and(|r| r.state == RunState::Success)
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    let runs = runs_of(&db, "any_of").await;
    assert_eq!(runs.len(), 1, "five events, one run");
    let consumed: Vec<_> = db
        .consumed_events(runs[0].run_id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(consumed, ids);
    assert!(db.pending_events("any_of").await.unwrap().is_empty());
}

async fn max_active_runs_keeps_events_for_the_next_run(db: Database) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let mut reg = registry();
    reg.register(JobDefinition::new("slow", "").task(TaskDefinition::new(
        "t",
        task_fn(move |_| {
            let g = g.clone();
            async move {
                let _permit = g
                    .acquire()
                    .await
                    .map_err(|e| TaskError::permanent(e.to_string()))?;
                Ok(TaskOutput::empty())
            }
        }),
    )));
    let e = Arc::new(
        engine_with(
            db.clone(),
            &reg,
            &format!("[slow]\ndatasets = [\"{A}\"]\nmax_active_runs = 1\n"),
            fast_settings(),
        )
        .await,
    );
    let (stop, h) = spawn_daemon(e.clone());
    let first = e.emit(A, &json!({}), "test").await.unwrap().0;
    wait_for("first run running", Duration::from_secs(10), || async {
        runs_of(&db, "slow")
            .await
            .first()
            .is_some_and(|r| r.state == RunState::Running)
    })
    .await;
    let later: Vec<i64> = {
        let mut v = vec![];
        for _ in 0..3 {
            v.push(e.emit(A, &json!({}), "test").await.unwrap().0);
        }
        v
    };
    // Two scheduler passes after the events (not a sleep, which proves nothing if the leader has not ticked):
    // the first queues nothing new because a run is active, the second confirms it.
    for _ in 0..2 {
        e.scheduler_tick(&mut Default::default()).await.unwrap();
    }
    assert_eq!(
        runs_of(&db, "slow").await.len(),
        1,
        "held back by max_active_runs"
    );
    let ex = e.explain("slow").await.unwrap();
    assert!(ex.verdict.contains("max_active_runs"), "{}", ex.verdict);
    assert_eq!(ex.leaves[0].pending_event_ids, later);
    gate.add_permits(10);
    wait_for("second run to succeed", Duration::from_secs(20), || async {
        let r = runs_of(&db, "slow").await;
        r.len() == 2 && r.iter().all(|r| r.state == RunState::Success)
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    let runs = runs_of(&db, "slow").await;
    let second: Vec<_> = db
        .consumed_events(runs[0].run_id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    let first_run: Vec<_> = db
        .consumed_events(runs[1].run_id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(first_run, vec![first]);
    assert_eq!(second, later, "no event lost, all in the next run");
}

/// A try that fails because the database was unreachable is retried and not counted: four such failures
/// of a task without retries still end in success, with every try's number kept distinct (fencing tokens).
async fn an_unreachable_database_postpones_a_try_without_using_it_up(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("outage", "").task(TaskDefinition::new(
        "t",
        task_fn(move |ctx| async move {
            if ctx.try_number <= 4 {
                Err(TaskError::unavailable(format!(
                    "database unavailable {}",
                    ctx.try_number
                )))
            } else {
                Ok(TaskOutput::empty())
            }
        }),
    )));
    let e = engine_with(
        db.clone(),
        &reg,
        "[outage.tasks.t]\nretries = 0\nretry_delay = \"10ms\"\nmax_retry_delay = \"20ms\"\n",
        fast_settings(),
    )
    .await;
    let run = e
        .run_now("outage", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Success);
    let tis = db.list_task_instances(run.run_id).await.unwrap();
    assert_eq!((tis[0].try_number, tis[0].max_tries), (5, 5), "{tis:?}");
    // A genuine failure still uses the (only) try up.
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("broken", "").task(TaskDefinition::new(
        "t",
        task_fn(move |_| async move { Err(TaskError::retryable("bad input")) }),
    )));
    let e = engine_with(
        db.clone(),
        &reg,
        "[broken.tasks.t]\nretries = 0\n",
        fast_settings(),
    )
    .await;
    let run = e
        .run_now("broken", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Failed);
}

async fn retries_with_backoff_then_success(db: Database) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("flaky", "").task(TaskDefinition::new(
        "t",
        task_fn(move |ctx| {
            let a = a.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                if ctx.try_number < 3 {
                    Err(TaskError::retryable(format!("boom {}", ctx.try_number)))
                } else {
                    Ok(TaskOutput::empty())
                }
            }
        }),
    )));
    let e = engine_with(
        db.clone(),
        &reg,
        "[flaky.tasks.t]\nretries = 3\nretry_delay = \"200ms\"\nmax_retry_delay = \"1s\"\n",
        fast_settings(),
    )
    .await;
    let started = std::time::Instant::now();
    let run = e
        .run_now("flaky", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(run.state, RunState::Success);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    // Backoff: try 2 waits in [100, 200] ms, try 3 in [200, 400] ms.
    assert!(
        elapsed >= Duration::from_millis(300),
        "retries waited {elapsed:?}"
    );
    let tis = db.list_task_instances(run.run_id).await.unwrap();
    assert_eq!(tis[0].try_number, 3);
    assert_eq!(tis[0].state, TaskState::Success);

    // Out of retries: the run fails with the last error recorded.
    let e2 = engine_with(
        db.clone(),
        &reg,
        "[flaky.tasks.t]\nretries = 1\nretry_delay = \"10ms\"\n",
        fast_settings(),
    )
    .await;
    let run = e2
        .run_now("flaky", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Failed);
    let ti = &db.list_task_instances(run.run_id).await.unwrap()[0];
    assert_eq!((ti.state, ti.try_number), (TaskState::Failed, 2));
    assert_eq!(ti.error.as_deref(), Some("boom 2"));
}

async fn timeout_fails_the_try(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("sleepy", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(TaskOutput::empty())
        }),
    )));
    let e = engine_with(
        db.clone(),
        &reg,
        "[sleepy.tasks.t]\ntimeout = \"200ms\"\nretries = 0\n",
        fast_settings(),
    )
    .await;
    let started = std::time::Instant::now();
    let run = e
        .run_now("sleepy", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.state, RunState::Failed);
    let ti = &db.list_task_instances(run.run_id).await.unwrap()[0];
    assert!(
        ti.error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 200ms"),
        "{:?}",
        ti.error
    );
}

struct RecordingHook(tokio::sync::Mutex<Vec<TaskFailure>>);
#[async_trait::async_trait]
impl FailureHook for RecordingHook {
    async fn on_task_failed(&self, f: TaskFailure) {
        self.0.lock().await.push(f);
    }
}

fn fan_out_registry(keys: usize, fail_key: Option<usize>) -> JobRegistry {
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("fan", "")
            .task(TaskDefinition::new(
                "list",
                task_fn(move |_| async move {
                    Ok(TaskOutput::with_map_keys(
                        (0..keys).map(|i| format!("k{i:05}")).collect(),
                    ))
                }),
            ))
            .task(
                TaskDefinition::new(
                    "work",
                    task_fn(move |ctx| async move {
                        let key = ctx.map_key.clone().unwrap_or_default();
                        let n: usize = key[1..].parse().unwrap_or(0);
                        // CPU work goes through the rayon bridge.
                        let sq = ctx.run_cpu(move || n * n).await?;
                        if Some(n) == fail_key {
                            return Err(TaskError::permanent(format!("key {key} is bad")));
                        }
                        Ok(TaskOutput::empty().with_data(json!({ "square": sq })))
                    }),
                )
                .map_over("list"),
            )
            .task(
                TaskDefinition::new(
                    "report",
                    task_fn(|ctx| async move {
                        let work = ctx.upstream("work").await?;
                        let ok = work
                            .iter()
                            .filter(|t| t.state == TaskState::Success)
                            .count();
                        Ok(TaskOutput::with_extra(
                            json!({ "ok": ok, "total": work.len() }),
                        ))
                    }),
                )
                .depends_on(&["work"])
                .trigger_rule(TriggerRule::AllDone)
                .outlet("test://fan/done"),
            )
            .task(TaskDefinition::new("after", noop()).depends_on(&["work"])),
    );
    reg
}

async fn mapped_fan_out_failed_key_does_not_stop_siblings(db: Database) {
    let hook = Arc::new(RecordingHook(Default::default()));
    let reg = fan_out_registry(50, Some(7));
    let jobs = resolve_jobs(&reg, &BTreeMap::new(), &fast_settings()).unwrap();
    let e = Engine::new(db.clone(), jobs, fast_settings())
        .unwrap()
        .with_failure_hook(hook.clone());
    e.register_jobs().await.unwrap();
    let run = e
        .run_now("fan", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Failed, "one key failed");
    let tis = db.list_task_instances(run.run_id).await.unwrap();
    let work: Vec<_> = tis.iter().filter(|t| t.task_name == "work").collect();
    assert_eq!(work.len(), 50);
    assert_eq!(
        work.iter()
            .filter(|t| t.state == TaskState::Success)
            .count(),
        49
    );
    let bad = work.iter().find(|t| t.state == TaskState::Failed).unwrap();
    assert_eq!(bad.map_key, "k00007");
    assert_eq!(
        work[9].output.as_ref().unwrap()["data"]["square"],
        json!(81)
    );
    let report = tis.iter().find(|t| t.task_name == "report").unwrap();
    assert_eq!(
        report.state,
        TaskState::Success,
        "all_done runs despite the failure"
    );
    assert_eq!(
        report.output.as_ref().unwrap()["extra"],
        json!({"ok": 49, "total": 50})
    );
    let after = tis.iter().find(|t| t.task_name == "after").unwrap();
    assert_eq!(after.state, TaskState::Skipped, "all_success is skipped");
    let events = db.list_events(Some("test://fan/done"), 10).await.unwrap();
    assert_eq!(events.len(), 1, "one event per task, not per key");
    assert_eq!(events[0].extra, json!({"ok": 49, "total": 50}));
    // The hook runs off the worker's path once the run has finished: wait for it, then check it ran once.
    wait_for("the failure hook", Duration::from_secs(10), || async {
        !hook.0.lock().await.is_empty()
    })
    .await;
    e.scheduler_tick(&mut Default::default()).await.unwrap();
    let failures = hook.0.lock().await;
    assert_eq!(
        failures.len(),
        1,
        "one failure per (run, task), not per key"
    );
    assert_eq!(failures[0].failed_keys, vec!["k00007".to_string()]);
    assert_eq!(
        (failures[0].failed_count, failures[0].instance_count),
        (1, 50)
    );
    assert!(failures[0].error.contains("key k00007 is bad"));
}

async fn outlets_chain_jobs_and_record_lineage(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("producer", "")
            .param(ParamSpec::new("useless", ParamType::Bool, json!(false), ""))
            .task(
                TaskDefinition::new(
                    "make",
                    task_fn(|ctx| async move {
                        let out = TaskOutput::with_extra(json!({ "by_run": ctx.run_id }));
                        // A producer that did nothing new succeeds without waking its consumers.
                        Ok(if ctx.params.bool("useless") == Some(true) {
                            out.without_outlet_events()
                        } else {
                            out
                        })
                    }),
                )
                .outlet("test://made"),
            ),
    );
    let seen = Arc::new(tokio::sync::Mutex::new(vec![]));
    let s = seen.clone();
    reg.register(JobDefinition::new("consumer", "").task(TaskDefinition::new(
        "use",
        task_fn(move |ctx| {
            let s = s.clone();
            async move {
                s.lock().await.push(ctx.run_id);
                Ok(TaskOutput::empty())
            }
        }),
    )));
    let e = Arc::new(
        engine_with(
            db.clone(),
            &reg,
            "[consumer]\ndatasets = [\"test://made\"]\n",
            fast_settings(),
        )
        .await,
    );
    let (stop, h) = spawn_daemon(e.clone());
    let useless = e
        .trigger("producer", &["useless=true".into()], "test")
        .await
        .unwrap();
    wait_for(
        "the useless producer run",
        Duration::from_secs(20),
        || async {
            db.get_run(useless)
                .await
                .unwrap()
                .is_some_and(|r| r.state == RunState::Success)
        },
    )
    .await;
    assert!(
        db.list_events(Some("test://made"), 10)
            .await
            .unwrap()
            .is_empty(),
        "a producer that did nothing new emits no event"
    );
    let produced = e.trigger("producer", &[], "test").await.unwrap();
    wait_for(
        "consumer run to succeed",
        Duration::from_secs(20),
        || async {
            runs_of(&db, "consumer")
                .await
                .first()
                .is_some_and(|r| r.state == RunState::Success)
        },
    )
    .await;
    stop.cancel();
    h.await.unwrap();
    let consumers = runs_of(&db, "consumer").await;
    assert_eq!(
        consumers.len(),
        1,
        "only the useful producer run started a consumer"
    );
    let consumer = &consumers[0];
    let consumed = db.consumed_events(consumer.run_id).await.unwrap();
    assert_eq!(consumed.len(), 1);
    assert_eq!(consumed[0].source_run_id, Some(produced));
    assert_eq!(consumed[0].source_task.as_deref(), Some("make"));
    assert_eq!(consumed[0].extra, json!({ "by_run": produced }));
    assert_eq!(
        consumer.trigger_kind,
        snowpatrol_store::TriggerKind::Dataset
    );
}

async fn cron_catchup_on_and_off_after_downtime(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("hourly_catchup", "").task(TaskDefinition::new("t", noop())));
    reg.register(JobDefinition::new("hourly_latest", "").task(TaskDefinition::new("t", noop())));
    let e = engine_with(
        db.clone(),
        &reg,
        r#"
        [hourly_catchup]
        cron = "0 * * * *"
        timezone = "America/New_York"
        catchup = true
        max_active_runs = 2
        [hourly_latest]
        cron = "@hourly"
        catchup = false
        "#,
        fast_settings(),
    )
    .await;
    // First sight: no backfill of the past.
    tick(&e).await;
    assert!(runs_of(&db, "hourly_catchup").await.is_empty());
    // Simulate five hours of downtime by moving the cursors back.
    let five_hours_ago = snowpatrol_store::now() - chrono::Duration::hours(5);
    for job in ["hourly_catchup", "hourly_latest"] {
        db.sync_jobs(&[]).await.unwrap();
        sqlx_reset_cursor(&db, job, five_hours_ago).await;
    }
    tick(&e).await;
    let caught = runs_of(&db, "hourly_catchup").await;
    assert_eq!(caught.len(), 5, "every missed tick with catchup");
    assert!(
        caught
            .iter()
            .all(|r| r.logical_time.timestamp() % 3600 == 0)
    );
    assert_eq!(
        caught
            .iter()
            .filter(|r| r.state == RunState::Running)
            .count(),
        2,
        "max_active_runs = 2 started"
    );
    let latest = runs_of(&db, "hourly_latest").await;
    assert_eq!(latest.len(), 1, "only the latest tick without catchup");
    // A second tick (or a second replica) creates nothing more.
    tick(&e).await;
    assert_eq!(runs_of(&db, "hourly_catchup").await.len(), 5);
    let explained = e.explain("hourly_latest").await.unwrap();
    assert!(explained.next_cron_tick.is_some());
}

async fn sqlx_reset_cursor(db: &Database, job: &str, at: chrono::DateTime<chrono::Utc>) {
    // The cursor only moves forward through the public API; tests rewind it directly.
    match db.pool() {
        snowpatrol_store::Pool::Postgres(p) => {
            sqlx::query("UPDATE jobs SET cron_cursor = $1 WHERE job_name = $2")
                .bind(at)
                .bind(job)
                .execute(p)
                .await
                .unwrap();
        }
        snowpatrol_store::Pool::Sqlite(p) => {
            sqlx::query("UPDATE jobs SET cron_cursor = $1 WHERE job_name = $2")
                .bind(at)
                .bind(job)
                .execute(p)
                .await
                .unwrap();
        }
    }
}

async fn typed_params_refused_before_a_run_exists(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("train", "")
            .param(ParamSpec::new(
                "force_retrain",
                ParamType::Bool,
                json!(false),
                "retrain every warehouse",
            ))
            .task(TaskDefinition::new(
                "t",
                task_fn(|ctx| async move {
                    Ok(TaskOutput::empty()
                        .with_data(json!({ "force": ctx.params.bool("force_retrain") })))
                }),
            )),
    );
    let e = engine_with(db.clone(), &reg, "", fast_settings()).await;
    let err = e
        .trigger("train", &["force_retrain=sure".into()], "test")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("must be bool, got `sure`"),
        "{err}"
    );
    assert!(runs_of(&db, "train").await.is_empty(), "nothing created");
    let run = e
        .run_now(
            "train",
            &["force_retrain=true".into()],
            "test",
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(run.params, json!({ "force_retrain": true }));
    let ti = &db.list_task_instances(run.run_id).await.unwrap()[0];
    assert_eq!(ti.output.as_ref().unwrap()["data"]["force"], json!(true));
    assert!(
        e.trigger("nope", &[], "test")
            .await
            .unwrap_err()
            .to_string()
            .contains("unknown job `nope`")
    );
}

async fn graceful_shutdown_gives_back_leases(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("long", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(TaskOutput::empty())
        }),
    )));
    reg.register(JobDefinition::new("short", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(TaskOutput::empty())
        }),
    )));
    let settings = SchedulerSettings {
        shutdown_grace: Duration::from_secs(1),
        ..fast_settings()
    };
    let e = Arc::new(engine_with(db.clone(), &reg, "", settings).await);
    let long = e.trigger("long", &[], "test").await.unwrap();
    let short = e.trigger("short", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    wait_for("both tasks running", Duration::from_secs(10), || async {
        let a = db.list_task_instances(long).await.unwrap();
        let b = db.list_task_instances(short).await.unwrap();
        a.first().is_some_and(|t| t.state == TaskState::Running)
            && b.first().is_some_and(|t| t.state == TaskState::Running)
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    let s = &db.list_task_instances(short).await.unwrap()[0];
    assert_eq!(
        s.state,
        TaskState::Success,
        "finished within the grace period"
    );
    let l = &db.list_task_instances(long).await.unwrap()[0];
    assert_eq!(
        (l.state, l.try_number, l.worker_id.clone()),
        (TaskState::Queued, 0, None),
        "lease given back, try not counted"
    );
}

/// Adds one to its counter when dropped.
struct StopGuard(Arc<AtomicUsize>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A queued or running run can be cancelled; the try running it learns at its next heartbeat and stops, and
/// the freed slot under `max_active_runs` goes to the next queued run.
async fn cancelling_a_run_stops_its_running_try_and_frees_its_slot(db: Database) {
    let stopped = Arc::new(AtomicUsize::new(0));
    let seen = stopped.clone();
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("long", "").task(TaskDefinition::new(
        "t",
        task_fn(move |_ctx: TaskContext| {
            // Counts the try as stopped when its future ends, however it ends: the engine drops the future of a
            // cancelled try (the task may also watch `ctx.cancel` itself).
            let stopped = StopGuard(seen.clone());
            async move {
                let _stopped = stopped;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(TaskOutput::empty())
            }
        }),
    )));
    let e = Arc::new(engine_with(db.clone(), &reg, "", fast_settings()).await);
    let first = e.trigger("long", &[], "test").await.unwrap();
    let second = e.trigger("long", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    let state = |run| {
        let db = db.clone();
        async move { db.get_run(run).await.unwrap().unwrap().state }
    };
    wait_for("the first run running", Duration::from_secs(10), || async {
        db.list_task_instances(first)
            .await
            .unwrap()
            .first()
            .is_some_and(|t| t.state == TaskState::Running)
    })
    .await;
    assert_eq!(state(second).await, RunState::Queued, "max_active_runs = 1");

    let run = e.cancel(first, "operator: wrong day").await.unwrap();
    assert_eq!(
        (run.state, run.error.as_deref()),
        (RunState::Cancelled, Some("operator: wrong day"))
    );
    let t = &db.list_task_instances(first).await.unwrap()[0];
    assert_eq!(t.state, TaskState::Cancelled);
    wait_for("the try to stop", Duration::from_secs(10), || async {
        stopped.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_for(
        "the next run to take the slot",
        Duration::from_secs(10),
        || async { state(second).await == RunState::Running },
    )
    .await;
    // The stopped try's result was dropped: the instance stays cancelled.
    assert_eq!(
        db.list_task_instances(first).await.unwrap()[0].state,
        TaskState::Cancelled
    );

    let again = e.cancel(first, "twice").await.unwrap_err().to_string();
    assert!(again.contains("already cancelled"), "{again}");
    let missing = e.cancel(999_999, "none").await.unwrap_err().to_string();
    assert!(missing.contains("no run with id 999999"), "{missing}");
    e.cancel(second, "done testing").await.unwrap();
    stop.cancel();
    h.await.unwrap();
}

/// A backfill queues one run per past cron tick in the range (a second backfill of the same range adds none),
/// leaves the cron cursor alone, and the daemon runs them oldest first, one at a time under
/// `max_active_runs = 1`.
async fn backfill_queues_each_past_tick_once_and_runs_them_within_max_active_runs(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("daily", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(TaskOutput::empty())
        }),
    )));
    reg.register(JobDefinition::new("manual", "").task(TaskDefinition::new("t", noop())));
    let e = Arc::new(
        engine_with(
            db.clone(),
            &reg,
            "[daily]\ncron = \"0 6 * * *\"\n",
            fast_settings(),
        )
        .await,
    );
    let now = snowpatrol_store::now();
    let (from, to) = (now - chrono::Days::new(5), now - chrono::Days::new(1));
    let b = e.backfill("daily", from, to, &[], "test").await.unwrap();
    assert!((4..=5).contains(&b.ticks.len()), "{b:?}");
    assert_eq!((b.created.len(), b.existing), (b.ticks.len(), 0));
    assert!(b.ticks.iter().all(|t| *t >= from && *t <= to));
    let again = e.backfill("daily", from, to, &[], "test").await.unwrap();
    assert_eq!((again.created.len(), again.existing), (0, b.ticks.len()));
    let cursor = db.get_cron_cursor("daily").await.unwrap();
    assert_eq!(cursor, None, "a backfill does not move the cron cursor");

    for (from_, to_, why) in [
        (from, now + chrono::Duration::hours(1), "in the future"),
        (to, from, "is after"),
    ] {
        let err = e
            .backfill("daily", from_, to_, &[], "test")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{err}");
    }
    let err = e
        .backfill("manual", from, to, &[], "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("only cron jobs can be backfilled"), "{err}");

    let (stop, h) = spawn_daemon(e.clone());
    wait_for(
        "every backfilled run to succeed",
        Duration::from_secs(30),
        || async {
            let runs = runs_of(&db, "daily").await;
            runs.len() >= b.ticks.len()
                && b.created.iter().all(|id| {
                    runs.iter()
                        .any(|r| r.run_id == *id && r.state == RunState::Success)
                })
        },
    )
    .await;
    stop.cancel();
    h.await.unwrap();
    let mut runs: Vec<_> = runs_of(&db, "daily")
        .await
        .into_iter()
        .filter(|r| b.created.contains(&r.run_id))
        .collect();
    runs.sort_by_key(|r| r.started_at);
    let logical: Vec<_> = runs.iter().map(|r| r.logical_time).collect();
    assert_eq!(logical, b.ticks, "oldest tick first, one run per tick");
    for pair in runs.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at,
            "max_active_runs = 1: run {} started before run {} finished",
            pair[1].run_id,
            pair[0].run_id
        );
    }
}

/// After a try ends, successful or not, its instance still names the replica it ran on (`worker_id`), so
/// `snowpatrol tasks` can say where to look; only the lease is gone.
async fn a_finished_try_keeps_the_replica_it_ran_on(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("ok", "").task(TaskDefinition::new("t", noop())));
    reg.register(JobDefinition::new("bad", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async { Err(TaskError::permanent("no")) }),
    )));
    let e = engine_with(db.clone(), &reg, "", fast_settings())
        .await
        .with_worker_id("replica-7");
    for (job, state) in [("ok", TaskState::Success), ("bad", TaskState::Failed)] {
        let run = e
            .run_now(job, &[], "test", CancellationToken::new())
            .await
            .unwrap();
        let t = &db.list_task_instances(run.run_id).await.unwrap()[0];
        assert_eq!(
            (t.state, t.worker_id.as_deref(), t.lease_expires_at),
            (state, Some("replica-7"), None),
            "{job}"
        );
    }
}

// ---------- PostgreSQL-only: concurrency and several replicas ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_events_from_eight_producers_each_consumed_once() {
    let db = fresh_postgres().await;
    let e = Arc::new(
        engine_with(
            db.clone(),
            &registry(),
            &format!("[any_of]\ndatasets = \"{A} | {B}\"\nmax_active_runs = 3\n"),
            fast_settings(),
        )
        .await,
    );
    let (stop, h) = spawn_daemon(e.clone());
    let mut producers = vec![];
    for p in 0..8 {
        let url_db = db.clone();
        producers.push(tokio::spawn(async move {
            let mut ids = vec![];
            for i in 0..125 {
                let uri = if (p + i) % 2 == 0 { A } else { B };
                ids.push(
                    url_db
                        .emit_event(uri, &json!({ "p": p, "i": i }), "producer")
                        .await
                        .unwrap()
                        .0,
                );
            }
            ids
        }));
    }
    let mut all = vec![];
    for p in producers {
        all.extend(p.await.unwrap());
    }
    assert_eq!(all.len(), 1000);
    wait_for("every event consumed", Duration::from_secs(60), || async {
        db.pending_events("any_of").await.unwrap().is_empty()
    })
    .await;
    wait_for("runs finished", Duration::from_secs(60), || async {
        runs_of(&db, "any_of")
            .await
            .iter()
            .all(|r| r.state.is_terminal())
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    let mut consumed = vec![];
    for r in runs_of(&db, "any_of").await {
        consumed.extend(
            db.consumed_events(r.run_id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id),
        );
    }
    consumed.sort();
    all.sort();
    assert_eq!(consumed, all, "every event consumed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_no_duplicates_and_takeover_after_a_killed_worker() {
    let url = snowpatrol_store::testing::fresh_postgres_url().await;
    let runs_count = Arc::new(AtomicUsize::new(0));
    let make_registry = |counter: Arc<AtomicUsize>| {
        let mut reg = registry();
        reg.register(JobDefinition::new("minutely", "").task(TaskDefinition::new(
            "t",
            task_fn(move |_| {
                let c = counter.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok(TaskOutput::empty())
                }
            }),
        )));
        reg.register(
            JobDefinition::new("slow", "").task(
                TaskDefinition::new(
                    "t",
                    task_fn(|ctx| async move {
                        // Replica 1 hangs in this task until it is killed; the retry elsewhere is quick.
                        if ctx.try_number == 1 {
                            tokio::time::sleep(Duration::from_secs(600)).await;
                        }
                        Ok(TaskOutput::empty().with_data(json!({ "try": ctx.try_number })))
                    }),
                )
                .retries(2),
            ),
        );
        reg
    };
    let conf = format!(
        "[any_of]\ndatasets = [\"{A}\"]\n[minutely]\ncron = \"* * * * *\"\ncatchup = true\nmax_active_runs = 5\n"
    );
    let settings = SchedulerSettings {
        lease: Duration::from_secs(2),
        ..fast_settings()
    };
    let db1 = Database::connect(&url).await.unwrap();
    let db2 = Database::connect(&url).await.unwrap();
    let e1 = Arc::new(
        engine_with(
            db1.clone(),
            &make_registry(runs_count.clone()),
            &conf,
            settings.clone(),
        )
        .await
        .with_worker_id("replica-1"),
    );
    let e2 = Arc::new(
        engine_with(
            db2.clone(),
            &make_registry(runs_count.clone()),
            &conf,
            settings.clone(),
        )
        .await
        .with_worker_id("replica-2"),
    );
    // Rewind the cron cursor: both replicas now see the same 30 missed minutes.
    e1.scheduler_tick(&mut Default::default()).await.unwrap();
    sqlx_reset_cursor(
        &db1,
        "minutely",
        snowpatrol_store::now() - chrono::Duration::minutes(30),
    )
    .await;
    // Replica 1 alone first, so it claims the slow task; then it dies without giving back its lease.
    let slow_run = e1.trigger("slow", &[], "test").await.unwrap();
    let (stop1, h1) = spawn_daemon(e1.clone());
    wait_for(
        "replica 1 running the slow task",
        Duration::from_secs(10),
        || async {
            db2.list_task_instances(slow_run)
                .await
                .unwrap()
                .first()
                .is_some_and(|t| t.worker_id.as_deref() == Some("replica-1"))
        },
    )
    .await;
    let (stop2, h2) = spawn_daemon(e2.clone());
    // Both schedulers race on the same ticks and events.
    for _ in 0..20 {
        e2.emit(A, &json!({}), "test").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill replica 1: abort its tasks and drop its connections (no graceful release).
    h1.abort();
    let _ = h1.await;
    db1.close().await;
    drop(stop1);
    wait_for(
        "the slow task finished by replica 2 after the lease expired",
        Duration::from_secs(30),
        || async {
            db2.get_run(slow_run)
                .await
                .unwrap()
                .is_some_and(|r| r.state == RunState::Success)
        },
    )
    .await;
    let ti = &db2.list_task_instances(slow_run).await.unwrap()[0];
    assert_eq!(ti.try_number, 2);
    assert_eq!(ti.output.as_ref().unwrap()["data"]["try"], json!(2));
    wait_for(
        "all minutely runs finished",
        Duration::from_secs(30),
        || async {
            let r = runs_of(&db2, "minutely").await;
            r.len() >= 30 && r.iter().all(|r| r.state.is_terminal())
        },
    )
    .await;
    wait_for("all events consumed", Duration::from_secs(30), || async {
        db2.pending_events("any_of").await.unwrap().is_empty()
    })
    .await;
    stop2.cancel();
    h2.await.unwrap();
    let minutely = runs_of(&db2, "minutely").await;
    let mut keys: Vec<_> = minutely.iter().map(|r| r.run_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), minutely.len(), "no tick created twice");
    // Delivery is at-least-once (a try cut off by a kill runs again elsewhere; fencing keeps a stale try from
    // recording anything), so executions may exceed runs; what must hold is one successful instance per run.
    assert!(
        runs_count.load(Ordering::SeqCst) >= minutely.len(),
        "every run's task executed"
    );
    // A run whose try died with replica 1 and had no retries left fails with the reaper's reason; every
    // other run succeeded with exactly one instance.
    for r in &minutely {
        let tis = db2.list_task_instances(r.run_id).await.unwrap();
        assert_eq!(tis.len(), 1);
        match r.state {
            RunState::Success => assert_eq!(tis[0].state, TaskState::Success),
            RunState::Failed => assert!(
                tis[0]
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("lease expired: worker replica-1")),
                "run {} failed for another reason: {:?}",
                r.run_id,
                tis[0].error
            ),
            other => panic!("run {} ended {other}", r.run_id),
        }
    }
    let mut consumed = vec![];
    for r in runs_of(&db2, "any_of").await {
        consumed.extend(
            db2.consumed_events(r.run_id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id),
        );
    }
    let n = consumed.len();
    consumed.sort();
    consumed.dedup();
    assert_eq!(
        (n, consumed.len()),
        (20, 20),
        "each event consumed once by one replica"
    );
}

#[tokio::test]
async fn unreachable_database_is_an_error_not_a_panic() {
    let err = Database::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("cannot connect to postgres://nobody:***@127.0.0.1:1/none"),
        "{err}"
    );
    let started = std::time::Instant::now();
    let err = Database::connect_with_retry(
        "postgres://nobody@127.0.0.1:1/none",
        Duration::from_millis(800),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it retried"
    );
    assert!(err.to_string().contains("database unavailable"));
}

#[test]
fn config_errors_name_the_key() {
    let reg = fan_out_registry(1, None);
    let bad = cfg(r#"
        [fan]
        cron = "0 25 * * *"
        timezone = "Europe/Nowhere"
        datasets = "test://x & (test://y"
        [fan.tasks.nope]
        retries = 1
        [ghost]
        cron = "@daily"
    "#);
    let err = match resolve_jobs(&reg, &bad, &SchedulerSettings::default()) {
        Err(e) => e,
        Ok(_) => panic!("invalid config accepted"),
    };
    let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"jobs.ghost"), "{err}");
    assert!(paths.contains(&"jobs.fan.tasks.nope"), "{err}");
    assert!(paths.contains(&"jobs.fan.timezone"), "{err}");
    assert!(paths.contains(&"jobs.fan.datasets"), "{err}");
    let unknown = cfg("[fan]\ndatasets = \"test://fan/done | test://unknown\"\n");
    let err = resolve_jobs(&reg, &unknown, &SchedulerSettings::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("unknown dataset `test://unknown`"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("dataset schedules form a cycle: fan -> fan"),
        "{err}"
    );
    let bad_cron = cfg("[fan]\ncron = \"0 25 * * *\"\n");
    let err = resolve_jobs(&reg, &bad_cron, &SchedulerSettings::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .starts_with("jobs.fan.cron: invalid cron expression `0 25 * * *`"),
        "{err}"
    );
    let mut cyclic = JobRegistry::new();
    cyclic.register(
        JobDefinition::new("loop", "")
            .task(TaskDefinition::new("a", noop()).depends_on(&["c"]))
            .task(TaskDefinition::new("b", noop()).depends_on(&["a"]))
            .task(TaskDefinition::new("c", noop()).depends_on(&["b"])),
    );
    let err = resolve_jobs(&cyclic, &BTreeMap::new(), &SchedulerSettings::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("tasks of job `loop` form a cycle: a -> c -> b -> a"),
        "{err}"
    );
    let mut unknown_task = JobRegistry::new();
    unknown_task.register(
        JobDefinition::new("j", "").task(TaskDefinition::new("a", noop()).depends_on(&["zz"])),
    );
    let err = resolve_jobs(
        &unknown_task,
        &BTreeMap::new(),
        &SchedulerSettings::default(),
    )
    .err()
    .expect("refused");
    assert!(
        err.to_string().contains("depends on unknown task `zz`"),
        "{err}"
    );
    let bad_param = cfg("[fan.params]\nforce = { type = \"bool\", default = 3 }\n");
    let err = resolve_jobs(&reg, &bad_param, &SchedulerSettings::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("jobs.fan.params.force: must be bool, got 3"),
        "{err}"
    );
}

#[tokio::test]
async fn ten_thousand_mapped_no_op_instances_complete() {
    // Correctness at scale on the embedded backend (the benchmark measures time on PostgreSQL).
    let (db, _dir) = fresh_sqlite().await;
    let reg = fan_out_registry(2000, None);
    let jobs = resolve_jobs(&reg, &BTreeMap::new(), &fast_settings()).unwrap();
    let e = Engine::new(
        db.clone(),
        jobs,
        SchedulerSettings {
            worker_concurrency: 256,
            ..fast_settings()
        },
    )
    .unwrap();
    e.register_jobs().await.unwrap();
    let run = e
        .run_now("fan", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Success);
    let tis = db.list_task_instances(run.run_id).await.unwrap();
    assert_eq!(
        tis.iter()
            .filter(|t| t.task_name == "work" && t.state == TaskState::Success)
            .count(),
        2000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_survives_losing_every_database_connection() {
    let url = snowpatrol_store::testing::fresh_postgres_url().await;
    let db = Database::connect(&url).await.unwrap();
    let mut reg = registry();
    reg.register(JobDefinition::new("steady", "").task(TaskDefinition::new(
        "t",
        task_fn(|_| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(TaskOutput::empty())
        }),
    )));
    // Slow timers everywhere (the leader renews and ticks every 20 s, the worker polls every 60 s), so the
    // prompt reaction to an event emitted by another process after the outage can only come from the
    // reconnected LISTEN connection.
    let settings = SchedulerSettings {
        lease: Duration::from_secs(60),
        heartbeat: Duration::from_secs(20),
        poll_interval: Duration::from_secs(60),
        ..fast_settings()
    };
    let e = Arc::new(
        engine_with(
            db.clone(),
            &reg,
            &format!("[any_of]\ndatasets = [\"{A}\"]\n"),
            settings,
        )
        .await,
    );
    let (stop, h) = spawn_daemon(e.clone());
    let run = e.trigger("steady", &[], "test").await.unwrap();
    wait_for("task running", Duration::from_secs(10), || async {
        db.list_task_instances(run)
            .await
            .unwrap()
            .first()
            .is_some_and(|t| t.state == TaskState::Running)
    })
    .await;
    // Kill every server connection of this database (the pool's and the LISTEN connection).
    let admin = Database::connect(&snowpatrol_store::testing::admin_url())
        .await
        .unwrap();
    let db_name = url.rsplit('/').next().unwrap().to_string();
    if let snowpatrol_store::Pool::Postgres(p) = admin.pool() {
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&db_name)
        .fetch_one(p)
        .await
        .unwrap();
        assert!(killed >= 2, "killed {killed} connections");
    }
    let killed_at = snowpatrol_store::now();
    // The run still finishes, and an event emitted after the outage still triggers its job.
    wait_for(
        "run to succeed after reconnecting",
        Duration::from_secs(30),
        || async { matches!(db.get_run(run).await, Ok(Some(r)) if r.state == RunState::Success) },
    )
    .await;
    let ti = &db.list_task_instances(run).await.unwrap()[0];
    assert!(
        ti.finished_at.is_some_and(|f| f > killed_at),
        "the task was still running when its connections died: {ti:?}"
    );
    // Another process emits: only the daemon's LISTEN connection, reconnected, can wake it within 8 s.
    let other = Database::connect(&url).await.unwrap();
    other
        .emit_event(A, &json!({}), "other process")
        .await
        .unwrap();
    wait_for(
        "dataset run after the outage",
        Duration::from_secs(8),
        || async {
            runs_of(&db, "any_of")
                .await
                .first()
                .is_some_and(|r| r.state == RunState::Success)
        },
    )
    .await;
    stop.cancel();
    h.await.unwrap();
}

/// Retention deletes finished runs (with task instances and lineage) and consumed events past the horizon, and
/// keeps unfinished runs, events a job still waits on and everything younger than the horizon.
async fn history_retention_deletes_finished_history_and_keeps_what_is_still_needed(db: Database) {
    let settings = SchedulerSettings {
        history_retention: Duration::from_millis(300),
        ..fast_settings()
    };
    let e = engine_with(
        db.clone(),
        &registry(),
        &format!("[all_of]\ndatasets = [\"{A}\", \"{B}\"]\n"),
        settings,
    )
    .await;
    // Old history: a finished manual run, and a dataset run that consumed two events (run to the end).
    let manual = e
        .run_now("any_of", &[], "test", CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(manual.state, RunState::Success);
    e.emit(A, &json!({}), "test").await.unwrap();
    e.emit(B, &json!({}), "test").await.unwrap();
    tick(&e).await;
    let dataset_run = runs_of(&db, "all_of").await[0].run_id;
    let e = Arc::new(e);
    let (stop, h) = spawn_daemon(e.clone());
    wait_for("the dataset run", Duration::from_secs(20), || {
        let db = db.clone();
        async move {
            db.get_run(dataset_run)
                .await
                .unwrap()
                .is_some_and(|r| r.state == RunState::Success)
        }
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    // Still needed: an event all_of waits on (B is missing), and a queued run.
    e.emit(A, &json!({}), "test").await.unwrap();
    let queued = e.trigger("nested", &[], "test").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Young history: finished just now, kept.
    let young = e
        .run_now("any_of", &[], "test", CancellationToken::new())
        .await
        .unwrap();

    let purged = e.purge_history(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (purged.runs, purged.task_instances, purged.events),
        (2, 2, 2),
        "{purged:?}"
    );
    assert!(db.get_run(manual.run_id).await.unwrap().is_none());
    assert!(db.get_run(dataset_run).await.unwrap().is_none());
    assert!(db.get_run(young.run_id).await.unwrap().is_some());
    assert_eq!(
        db.get_run(queued).await.unwrap().map(|r| r.state),
        Some(RunState::Queued)
    );
    assert_eq!(
        db.pending_events("all_of").await.unwrap().len(),
        1,
        "the waiting event is kept"
    );
    // A second pass finds nothing more.
    let again = e.purge_history(Duration::from_secs(10)).await.unwrap();
    assert_eq!((again.runs, again.events), (0, 0));
    let metrics = e.metrics().encode().unwrap();
    assert!(
        metrics.contains(r#"snowpatrol_history_purged_rows_total{table="job_runs"} 2"#),
        "{metrics}"
    );
}

/// `run_on_start`: a cron job that never ran gets one run for its latest tick when first scheduled; a job that
/// already ran (here: a manual run) and a job without the setting wait for their next tick.
async fn run_on_start_runs_a_never_run_cron_job_once_for_its_latest_tick(db: Database) {
    let mut reg = JobRegistry::new();
    for name in ["fresh", "ran_before", "plain"] {
        reg.register(JobDefinition::new(name, "").task(TaskDefinition::new("t", noop())));
    }
    let e = engine_with(
        db.clone(),
        &reg,
        r#"
        [fresh]
        cron = "@hourly"
        run_on_start = true
        [ran_before]
        cron = "@hourly"
        run_on_start = true
        [plain]
        cron = "@hourly"
        "#,
        fast_settings(),
    )
    .await;
    e.trigger("ran_before", &[], "test").await.unwrap();
    tick(&e).await;
    let fresh = runs_of(&db, "fresh").await;
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0].trigger_kind, TriggerKind::Cron);
    let now = snowpatrol_store::now();
    assert_eq!(fresh[0].logical_time.timestamp() % 3600, 0);
    assert!(
        fresh[0].logical_time <= now && now - fresh[0].logical_time < chrono::Duration::hours(1)
    );
    assert_eq!(
        runs_of(&db, "ran_before").await.len(),
        1,
        "only its manual run"
    );
    assert!(runs_of(&db, "plain").await.is_empty());
    // A second tick (or a restart) does not run it again.
    tick(&e).await;
    assert_eq!(runs_of(&db, "fresh").await.len(), 1);
}
