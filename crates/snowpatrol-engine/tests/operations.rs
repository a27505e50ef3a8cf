//! Operator actions on runs (clear, mark success or failed) and captured task logs, on PostgreSQL and SQLite.

use serde_json::json;
use snowpatrol_engine::*;
use snowpatrol_store::{ClearSelection, LogLevel, StoreError, TaskState};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

#[macro_use]
mod common;
use common::*;

const DONE: &str = "test://ops/done";

both_backends!(
    clearing_failed_keys_reruns_only_them_and_replans_downstream,
    clearing_a_succeeded_task_reruns_it_and_emits_its_outlet_again,
    clear_refusals_name_what_would_work,
    marking_a_failed_task_success_lets_the_run_continue_without_its_outlet,
    marking_a_running_run_ends_its_try_and_keeps_the_mark,
    task_logs_keep_each_try_with_its_span_fields_bounded_per_try,
);

/// Calls per map key, and which keys fail while `failing` holds them.
#[derive(Default)]
struct FanState {
    calls: Mutex<BTreeMap<String, usize>>,
    failing: Mutex<Vec<String>>,
}

/// `list` (keys a, b, c) -> `each` mapped over them -> `after`, whose success emits `DONE`; `consumer` runs on
/// `DONE`.
fn fan_registry(state: Arc<FanState>) -> JobRegistry {
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("fan", "")
            .task(TaskDefinition::new(
                "list",
                task_fn(|_| async {
                    Ok(TaskOutput::with_map_keys(vec![
                        "a".into(),
                        "b".into(),
                        "c".into(),
                    ]))
                }),
            ))
            .task(
                TaskDefinition::new(
                    "each",
                    task_fn(move |ctx: TaskContext| {
                        let state = state.clone();
                        async move {
                            let key = ctx.map_key.clone().unwrap_or_default();
                            *state.calls.lock().unwrap().entry(key.clone()).or_default() += 1;
                            if state.failing.lock().unwrap().contains(&key) {
                                return Err(TaskError::permanent(format!("key {key} is bad")));
                            }
                            Ok(TaskOutput::empty())
                        }
                    }),
                )
                .map_over("list"),
            )
            .task(
                TaskDefinition::new("after", noop())
                    .depends_on(&["each"])
                    .outlet(DONE),
            ),
    );
    reg.register(JobDefinition::new("consumer", "").task(TaskDefinition::new("t", noop())));
    reg
}

const FAN_CONFIG: &str = "[consumer]\ndatasets = [\"test://ops/done\"]\n";

async fn run_state(db: &Database, run: i64) -> RunState {
    db.get_run(run).await.unwrap().unwrap().state
}

async fn wait_run(db: &Database, run: i64, state: RunState) {
    wait_for(
        &format!("run {run} {state}"),
        Duration::from_secs(20),
        || async { run_state(db, run).await == state },
    )
    .await;
}

async fn instance(
    db: &Database,
    run: i64,
    task: &str,
    key: &str,
) -> snowpatrol_store::TaskInstanceRecord {
    db.task_instances_of(run, task)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.map_key == key)
        .unwrap_or_else(|| panic!("{task}[{key}] of run {run}"))
}

/// A fan-out with one failed key: the run fails and `after` is skipped. Clearing the failed instances reruns
/// key b alone (a new try), plans `after` afresh, and the run succeeds and emits its outlet.
async fn clearing_failed_keys_reruns_only_them_and_replans_downstream(db: Database) {
    let state = Arc::new(FanState::default());
    state.failing.lock().unwrap().push("b".into());
    let e = Arc::new(
        engine_with(
            db.clone(),
            &fan_registry(state.clone()),
            FAN_CONFIG,
            fast_settings(),
        )
        .await,
    );
    let run = e.trigger("fan", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    wait_run(&db, run, RunState::Failed).await;
    assert_eq!(
        instance(&db, run, "after", "").await.state,
        TaskState::Skipped
    );
    assert!(db.produced_events(run).await.unwrap().is_empty());

    state.failing.lock().unwrap().clear();
    let report = e
        .clear(
            run,
            &ClearSelection::Failed,
            "test-operator",
            "bad key fixed upstream",
        )
        .await
        .unwrap();
    assert_eq!(report.reset.len(), 1, "only key b is reset");
    assert_eq!(report.replanned_tasks, vec!["after".to_string()]);
    assert!(report.reopened);
    wait_run(&db, run, RunState::Success).await;
    stop.cancel();
    h.await.unwrap();

    let calls = state.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 1)])
    );
    let b = instance(&db, run, "each", "b").await;
    assert_eq!(
        (b.state, b.try_number),
        (TaskState::Success, 2),
        "the rerun is a new try"
    );
    assert!(
        b.note
            .as_deref()
            .unwrap()
            .starts_with("cleared by test-operator at ")
    );
    let r = db.get_run(run).await.unwrap().unwrap();
    assert_eq!((r.clear_count, r.error), (1, None));
    assert!(r.note.unwrap().ends_with(": bad key fixed upstream"));
    let events = db.produced_events(run).await.unwrap();
    assert_eq!(events.len(), 1, "after's outlet, once the rerun succeeded");
}

/// Clearing a task that succeeded reruns it on purpose; its outlet emits again (a new generation of the run),
/// so the jobs scheduled on it run again on the new data.
async fn clearing_a_succeeded_task_reruns_it_and_emits_its_outlet_again(db: Database) {
    let state = Arc::new(FanState::default());
    let e = Arc::new(
        engine_with(
            db.clone(),
            &fan_registry(state.clone()),
            FAN_CONFIG,
            fast_settings(),
        )
        .await,
    );
    let run = e.trigger("fan", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    wait_run(&db, run, RunState::Success).await;
    wait_for(
        "the consumer's first run",
        Duration::from_secs(20),
        || async {
            runs_of(&db, "consumer")
                .await
                .iter()
                .any(|r| r.state == RunState::Success)
        },
    )
    .await;

    let report = e
        .clear(run, &ClearSelection::Tasks(vec!["each".into()]), "test", "")
        .await
        .unwrap();
    assert_eq!(report.reset.len(), 3, "every key of the named task");
    wait_run(&db, run, RunState::Success).await;
    wait_for(
        "the consumer's second run",
        Duration::from_secs(20),
        || async {
            runs_of(&db, "consumer")
                .await
                .iter()
                .filter(|r| r.state == RunState::Success)
                .count()
                == 2
        },
    )
    .await;
    stop.cancel();
    h.await.unwrap();
    assert!(state.calls.lock().unwrap().values().all(|n| *n == 2));
    assert_eq!(
        db.produced_events(run).await.unwrap().len(),
        2,
        "one outlet event per generation"
    );
    assert_eq!(db.get_run(run).await.unwrap().unwrap().clear_count, 1);
}

fn refused(e: EngineError) -> String {
    match e {
        EngineError::Store(StoreError::Refused(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Nothing is written when a clear cannot apply, and the message says what would.
async fn clear_refusals_name_what_would_work(db: Database) {
    let e = Arc::new(
        engine_with(
            db.clone(),
            &fan_registry(Arc::default()),
            FAN_CONFIG,
            fast_settings(),
        )
        .await,
    );
    let run = e.trigger("fan", &[], "test").await.unwrap();
    let queued = refused(
        e.clear(run, &ClearSelection::Failed, "t", "")
            .await
            .unwrap_err(),
    );
    assert!(queued.contains("still queued"), "{queued}");
    let (stop, h) = spawn_daemon(e.clone());
    wait_run(&db, run, RunState::Success).await;
    stop.cancel();
    h.await.unwrap();
    let nothing = refused(
        e.clear(run, &ClearSelection::Failed, "t", "")
            .await
            .unwrap_err(),
    );
    assert!(
        nothing.contains("no failed or cancelled task instances") && nothing.contains("--task"),
        "{nothing}"
    );
    let unknown = refused(
        e.clear(run, &ClearSelection::Tasks(vec!["nope".into()]), "t", "")
            .await
            .unwrap_err(),
    );
    assert!(
        unknown.contains("no task `nope`") && unknown.contains("list, each, after"),
        "{unknown}"
    );
    let r = db.get_run(run).await.unwrap().unwrap();
    assert_eq!(
        (r.state, r.clear_count, r.note),
        (RunState::Success, 0, None)
    );
    assert!(matches!(
        e.clear(9999, &ClearSelection::Failed, "t", "")
            .await
            .unwrap_err(),
        EngineError::Store(StoreError::NotFound(_))
    ));
}

/// `prep` fails for good and `train` is skipped. Marking `prep` success by hand plans `train`, which runs, and
/// the run succeeds; prep's outlet is not emitted (its work was not done). Marking the run failed afterwards
/// ends it failed with the reason; marking it failed again is refused.
async fn marking_a_failed_task_success_lets_the_run_continue_without_its_outlet(db: Database) {
    let trained = Arc::new(AtomicUsize::new(0));
    let seen = trained.clone();
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("chain", "")
            .task(
                TaskDefinition::new(
                    "prep",
                    task_fn(|_| async { Err(TaskError::permanent("source down")) }),
                )
                .outlet("test://ops/prepped"),
            )
            .task(
                TaskDefinition::new(
                    "train",
                    task_fn(move |_| {
                        let seen = seen.clone();
                        async move {
                            seen.fetch_add(1, Ordering::SeqCst);
                            Ok(TaskOutput::empty())
                        }
                    }),
                )
                .depends_on(&["prep"]),
            ),
    );
    let e = Arc::new(engine_with(db.clone(), &reg, "", fast_settings()).await);
    let run = e.trigger("chain", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    wait_run(&db, run, RunState::Failed).await;
    assert_eq!(
        instance(&db, run, "train", "").await.state,
        TaskState::Skipped
    );

    let report = e
        .mark_task(
            run,
            "prep",
            None,
            TaskState::Success,
            "alice",
            "loaded by hand",
        )
        .await
        .unwrap();
    assert_eq!(
        (report.marked.len(), report.replanned_tasks.clone()),
        (1, vec!["train".to_string()])
    );
    wait_run(&db, run, RunState::Success).await;
    assert_eq!(trained.load(Ordering::SeqCst), 1);
    let prep = instance(&db, run, "prep", "").await;
    assert_eq!(prep.state, TaskState::Success);
    assert_eq!(
        prep.error.as_deref(),
        Some("source down"),
        "the failed try's error stays"
    );
    assert!(prep.note.unwrap().starts_with("marked success by alice"));
    assert!(
        db.produced_events(run).await.unwrap().is_empty(),
        "no outlet for work not done"
    );

    let again = refused(
        e.mark_task(run, "prep", None, TaskState::Success, "alice", "")
            .await
            .unwrap_err(),
    );
    assert!(again.contains("already success"), "{again}");
    let r = e
        .mark_run(run, RunState::Failed, "bob", "wrong input day")
        .await
        .unwrap();
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some(
            r.note
                .as_deref()
                .map(|n| format!("marked failed: {n}"))
                .unwrap()
                .as_str()
        )
    );
    let twice = refused(
        e.mark_run(run, RunState::Failed, "bob", "")
            .await
            .unwrap_err(),
    );
    assert!(twice.contains("already failed"), "{twice}");
    // A task that succeeded, marked failed: its error is the note, and the run stays failed.
    let marked = e
        .mark_task(
            run,
            "train",
            None,
            TaskState::Failed,
            "bob",
            "trained on bad data",
        )
        .await
        .unwrap();
    assert_eq!(marked.marked.len(), 1);
    let train = instance(&db, run, "train", "").await;
    assert_eq!(train.state, TaskState::Failed);
    assert_eq!(train.error, train.note, "no try error: the note says why");
    assert!(train.note.unwrap().ends_with(": trained on bad data"));
    assert_eq!(run_state(&db, run).await, RunState::Failed);
    stop.cancel();
    h.await.unwrap();
}

/// A run marked success while its try runs: the try loses its lease at its next heartbeat and stops; its
/// result never overwrites the mark.
async fn marking_a_running_run_ends_its_try_and_keeps_the_mark(db: Database) {
    let mut reg = JobRegistry::new();
    reg.register(JobDefinition::new("long", "").task(TaskDefinition::new(
        "t",
        task_fn(|ctx: TaskContext| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => Ok(TaskOutput::empty()),
                _ = ctx.cancel.cancelled() => Err(TaskError::permanent("cancelled")),
            }
        }),
    )));
    let e = Arc::new(engine_with(db.clone(), &reg, "", fast_settings()).await);
    let run = e.trigger("long", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    wait_for("the try running", Duration::from_secs(10), || async {
        let t = db.task_instances_of(run, "t").await.unwrap();
        t.first().is_some_and(|t| t.state == TaskState::Running)
    })
    .await;
    e.mark_run(run, RunState::Success, "carol", "done by hand")
        .await
        .unwrap();
    // Past the task's own 3 s: had the try not been stopped, its result would have come back by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t = instance(&db, run, "t", "").await;
    assert_eq!((t.state, t.try_number), (TaskState::Success, 1));
    assert_eq!(run_state(&db, run).await, RunState::Success);
    stop.cancel();
    h.await.unwrap();
}

/// Installs the capturing layer once per test process (a tracing subscriber is process-wide).
fn capture_task_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber =
            tracing_subscriber::registry().with(TaskLogLayer::new(tracing::Level::INFO, 5));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other subscriber in this test");
    });
}

/// Each try's events are stored with the fields of the spans they happened in; debug lines are not kept at the
/// `info` level; a try keeps at most 5 lines, and a notice counts the rest.
async fn task_logs_keep_each_try_with_its_span_fields_bounded_per_try(db: Database) {
    capture_task_logs();
    let tries = Arc::new(AtomicUsize::new(0));
    let mut reg = JobRegistry::new();
    reg.register(
        JobDefinition::new("chatty", "").task(
            TaskDefinition::new(
                "t",
                task_fn(move |ctx: TaskContext| {
                    let tries = tries.clone();
                    async move {
                        let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
                        tracing::debug!("not kept at info");
                        let span = tracing::info_span!("scoring", warehouse = "ACME.WH_1");
                        let _g = span.enter();
                        if n == 1 {
                            for i in 0..8 {
                                tracing::info!(row = i, "line {i}");
                            }
                            return Err(TaskError::retryable("first try fails"));
                        }
                        tracing::info!(try_number = ctx.try_number, "second try done");
                        Ok(TaskOutput::empty())
                    }
                }),
            )
            .retries(1),
        ),
    );
    let e = Arc::new(engine_with(db.clone(), &reg, "", fast_settings()).await);
    let run = e.trigger("chatty", &[], "test").await.unwrap();
    let (stop, h) = spawn_daemon(e.clone());
    wait_run(&db, run, RunState::Success).await;
    stop.cancel();
    h.await.unwrap();

    let logs = db.task_logs(run, Some("t"), 0, 1000).await.unwrap();
    let first: Vec<_> = logs.iter().filter(|l| l.try_number == 1).collect();
    let second: Vec<_> = logs.iter().filter(|l| l.try_number == 2).collect();
    assert_eq!(first.len(), 6, "5 kept and one notice: {first:#?}");
    assert_eq!(first[0].message, "line 0");
    assert_eq!(
        first[0].fields["warehouse"],
        json!("ACME.WH_1"),
        "the span's field rides along"
    );
    assert_eq!(first[0].fields["row"], json!(0));
    assert_eq!(first[0].level, LogLevel::Info);
    let notice = first.last().unwrap();
    assert_eq!(notice.level, LogLevel::Warn);
    assert!(
        notice
            .message
            .starts_with("4 more log lines of this try were not kept"),
        "{}",
        notice.message
    );
    assert!(logs.iter().all(|l| !l.message.contains("not kept at info")));
    assert!(
        second
            .iter()
            .any(|l| l.message == "second try done" && l.fields["try_number"] == json!(2))
    );
    let after = db
        .task_logs(run, None, first[2].log_id, 1000)
        .await
        .unwrap();
    assert_eq!(after.len(), logs.len() - 3, "paging after a log id");
}

/// Runs `sql` on either backend.
async fn exec(db: &Database, sql: &str) {
    match db.pool() {
        snowpatrol_store::Pool::Postgres(p) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(p)
                .await
                .unwrap();
        }
        snowpatrol_store::Pool::Sqlite(p) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(p)
                .await
                .unwrap();
        }
    }
}

/// Migration 0009 on a database of the previous schema (the engine line up to 0008) holding a finished run,
/// its task instance and its outlet event: everything is kept, the new columns start empty, the event stays
/// unique per producing task (a finish written twice still emits once) while a cleared rerun's generation may
/// emit again, and task logs can be written.
async fn upgrade_to_0009_keeps_runs_instances_and_events(db: Database) {
    match db.pool() {
        snowpatrol_store::Pool::Postgres(p) => (snowpatrol_store::ENGINE.postgres)()
            .run_to(8, p)
            .await
            .unwrap(),
        snowpatrol_store::Pool::Sqlite(p) => (snowpatrol_store::ENGINE.sqlite)()
            .run_to(8, p)
            .await
            .unwrap(),
    }
    let t = "'2025-06-01T06:00:00+00:00'";
    exec(&db, &format!("INSERT INTO jobs (job_name, schedule, registered_at, updated_at) VALUES ('j', 'manual', {t}, {t})")).await;
    exec(
        &db,
        &format!(
            "INSERT INTO job_runs (run_id, job_name, run_key, trigger_kind, logical_time, state, params, triggered_by, \
             queued_at, started_at, finished_at) VALUES (1, 'j', 'manual:x', 'manual', {t}, 'success', '{{}}', 'alice', \
             {t}, {t}, {t})"
        ),
    )
    .await;
    exec(
        &db,
        &format!(
            "INSERT INTO task_instances (run_id, job_name, task_name, map_key, state, try_number, max_tries, worker_id, \
             queued_at, started_at, finished_at) VALUES (1, 'j', 't', '', 'success', 1, 3, 'replica-a', {t}, {t}, {t})"
        ),
    )
    .await;
    exec(
        &db,
        &format!(
            "INSERT INTO dataset_events (dataset_uri, extra, source_job, source_run_id, source_task, created_by, \
             created_at) VALUES ('x://done', '{{\"rows\": 3}}', 'j', 1, 't', 'job j', {t})"
        ),
    )
    .await;

    db.migrate().await.unwrap();
    let run = db.get_run(1).await.unwrap().unwrap();
    assert_eq!(
        (
            run.state,
            run.triggered_by.as_str(),
            run.clear_count,
            run.note.clone()
        ),
        (RunState::Success, "alice", 0, None)
    );
    let ti = db.list_task_instances(1).await.unwrap();
    assert_eq!(ti.len(), 1);
    assert_eq!(
        (
            ti[0].worker_id.as_deref(),
            ti[0].max_tries,
            ti[0].note.clone()
        ),
        (Some("replica-a"), 3, None)
    );
    let events = db.produced_events(1).await.unwrap();
    assert_eq!(
        (events.len(), events[0].extra["rows"].as_i64()),
        (1, Some(3))
    );

    let again = |generation: i32| {
        format!(
            "INSERT INTO dataset_events (dataset_uri, extra, source_job, source_run_id, source_task, created_by, \
             created_at, source_generation) VALUES ('x://done', '{{}}', 'j', 1, 't', 'job j', {t}, {generation}) \
             ON CONFLICT (source_run_id, source_task, dataset_uri, source_generation) WHERE source_run_id IS NOT NULL \
             DO NOTHING"
        )
    };
    exec(&db, &again(0)).await;
    assert_eq!(
        db.produced_events(1).await.unwrap().len(),
        1,
        "the same finish emits once"
    );
    exec(&db, &again(1)).await;
    assert_eq!(
        db.produced_events(1).await.unwrap().len(),
        2,
        "a cleared rerun emits again"
    );

    db.append_task_logs(&[snowpatrol_store::TaskLogLine {
        run_id: 1,
        task_instance_id: ti[0].task_instance_id,
        task_name: "t".into(),
        map_key: String::new(),
        try_number: 1,
        logged_at: chrono::Utc::now(),
        level: LogLevel::Info,
        target: "test".into(),
        message: "after the upgrade".into(),
        fields: Default::default(),
    }])
    .await
    .unwrap();
    assert_eq!(
        db.task_logs(1, None, 0, 10).await.unwrap()[0].message,
        "after the upgrade"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_0009_on_postgres() {
    let url = snowpatrol_store::testing::empty_postgres_url().await;
    upgrade_to_0009_keeps_runs_instances_and_events(Database::connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_0009_on_sqlite() {
    let (db, _dir) = snowpatrol_store::testing::empty_sqlite().await;
    upgrade_to_0009_keeps_runs_instances_and_events(db).await;
}
