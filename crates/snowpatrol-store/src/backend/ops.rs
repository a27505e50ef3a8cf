//! The scheduler's transactional operations, compiled once per backend (see the `backend` module).
//!
//! The SQL is kept to what both backends understand (numbered parameters, `ON CONFLICT`, `RETURNING`, partial
//! indexes). What differs comes from the including module: `BEGIN` (SQLite starts `IMMEDIATE` to take the single
//! write lock up front), `FOR_UPDATE` / `SKIP_LOCKED` (row locks exist only on PostgreSQL), `NOTIFY`
//! (PostgreSQL announces commits) and `update_results`.

use super::*;

type PoolT = sqlx::Pool<Db>;
type Tx<'a> = sqlx::Transaction<'a, Db>;

async fn begin(pool: &PoolT) -> Result<Tx<'static>, StoreError> {
    Ok(pool.begin_with(BEGIN).await?)
}

/// Announces the commit of `tx` to every replica listening on [`crate::NOTIFY_CHANNEL`] (PostgreSQL delivers the
/// notification only if the transaction commits).
async fn notify(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    if NOTIFY {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(crate::NOTIFY_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn sync_jobs(pool: &PoolT, jobs: &[JobRegistration]) -> Result<(), StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    for job in jobs {
        sqlx::query(
            "INSERT INTO jobs (job_name, paused, schedule, registered_at, updated_at) \
             VALUES ($1, false, $2, $3, $3) \
             ON CONFLICT (job_name) DO UPDATE SET schedule = excluded.schedule, updated_at = excluded.updated_at",
        )
        .bind(&job.job_name)
        .bind(&job.schedule)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM job_dataset_subscriptions WHERE job_name = $1")
            .bind(&job.job_name)
            .execute(&mut *tx)
            .await?;
        for uri in job.datasets.iter().collect::<BTreeSet<_>>() {
            sqlx::query(
                "INSERT INTO job_dataset_subscriptions (job_name, dataset_uri) VALUES ($1, $2)",
            )
            .bind(&job.job_name)
            .bind(uri)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub async fn list_jobs(pool: &PoolT) -> Result<Vec<JobRow>, StoreError> {
    let rows =
        sqlx::query("SELECT job_name, paused, schedule, cron_cursor FROM jobs ORDER BY job_name")
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(JobRow {
                job_name: r.try_get("job_name")?,
                paused: r.try_get("paused")?,
                schedule: r.try_get("schedule")?,
                cron_cursor: r.try_get("cron_cursor")?,
            })
        })
        .collect()
}

pub async fn set_paused(pool: &PoolT, job: &str, paused: bool) -> Result<bool, StoreError> {
    let n = sqlx::query("UPDATE jobs SET paused = $1, updated_at = $2 WHERE job_name = $3")
        .bind(paused)
        .bind(crate::now())
        .bind(job)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

async fn insert_run(
    tx: &mut Tx<'_>,
    run: &NewRun,
    now: DateTime<Utc>,
) -> Result<Option<RunId>, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO job_runs (job_name, run_key, trigger_kind, logical_time, state, params, triggered_by, queued_at) \
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7) ON CONFLICT (job_name, run_key) DO NOTHING RETURNING run_id",
    )
    .bind(&run.job_name)
    .bind(&run.run_key)
    .bind(run.trigger_kind.as_str())
    .bind(run.logical_time)
    .bind(Json(&run.params))
    .bind(&run.triggered_by)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(id)
}

pub async fn create_run(pool: &PoolT, run: &NewRun) -> Result<Option<RunId>, StoreError> {
    let mut tx = begin(pool).await?;
    let id = insert_run(&mut tx, run, crate::now()).await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn get_cron_cursor(pool: &PoolT, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let c: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT cron_cursor FROM jobs WHERE job_name = $1")
            .bind(job)
            .fetch_optional(pool)
            .await?;
    Ok(c.flatten())
}

/// Creates one run per tick (duplicates ignored: another replica may have made them) and moves the
/// cursor, atomically, so a crash in between neither loses nor repeats a tick.
pub async fn create_cron_runs(
    pool: &PoolT,
    job: &str,
    ticks: &[DateTime<Utc>],
    cursor: Option<DateTime<Utc>>,
    params: &serde_json::Value,
    triggered_by: &str,
) -> Result<Vec<RunId>, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let mut ids = Vec::new();
    for tick in ticks {
        let run = NewRun {
            job_name: job.to_string(),
            run_key: format!(
                "cron:{}",
                tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            trigger_kind: TriggerKind::Cron,
            logical_time: *tick,
            params: params.clone(),
            triggered_by: triggered_by.to_string(),
        };
        if let Some(id) = insert_run(&mut tx, &run, now).await? {
            ids.push(id);
        }
    }
    if let Some(cursor) = cursor {
        sqlx::query(
            "UPDATE jobs SET cron_cursor = $1 WHERE job_name = $2 AND (cron_cursor IS NULL OR cron_cursor < $1)",
        )
        .bind(cursor)
        .bind(job)
        .execute(&mut *tx)
        .await?;
    }
    if !ids.is_empty() {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(ids)
}

pub async fn trigger_dataset_run(
    pool: &PoolT,
    job: &str,
    max_active_runs: i64,
    params: &serde_json::Value,
    triggered_by: &str,
    condition: ConditionFn<'_>,
) -> Result<Option<TriggeredRun>, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    if !has_room_for_a_run(&mut tx, job, max_active_runs).await? {
        return Ok(None);
    }
    let Some(pending) = queued_events(&mut tx, job, now).await? else {
        return Ok(None);
    };
    if !condition(&pending.uris) {
        return Ok(None);
    }
    let run = NewRun {
        job_name: job.to_string(),
        run_key: format!("dataset:{}", pending.events[0]),
        trigger_kind: TriggerKind::Dataset,
        logical_time: now,
        params: params.clone(),
        triggered_by: triggered_by.to_string(),
    };
    let Some(run_id) = insert_run(&mut tx, &run, now).await? else {
        return Ok(None);
    };
    consume_events(&mut tx, run_id, job, &pending.events).await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(TriggeredRun {
        run_id,
        events: pending.events,
        oldest_event_at: pending.oldest,
        newest_event_at: pending.newest,
    }))
}

/// The job is registered, not paused, and has fewer than `max_active_runs` queued or running runs. Locks the
/// job's row (PostgreSQL) so two leaders' ticks cannot both create a run.
async fn has_room_for_a_run(
    tx: &mut Tx<'_>,
    job: &str,
    max_active_runs: i64,
) -> Result<bool, StoreError> {
    let paused: Option<bool> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT paused FROM jobs WHERE job_name = $1 {FOR_UPDATE}"
    )))
    .bind(job)
    .fetch_optional(&mut **tx)
    .await?;
    match paused {
        None => Err(StoreError::NotFound(format!(
            "job {job:?} is not registered"
        ))),
        Some(true) => Ok(false),
        Some(false) => {
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM job_runs WHERE job_name = $1 AND state IN ('queued', 'running')",
            )
            .bind(job)
            .fetch_one(&mut **tx)
            .await?;
            Ok(active < max_active_runs)
        }
    }
}

/// A job's events waiting in `dataset_trigger_queue`.
struct QueuedEvents {
    /// The datasets they updated (what the condition is evaluated on).
    uris: BTreeSet<String>,
    /// Their ids, oldest first.
    events: Vec<EventId>,
    oldest: DateTime<Utc>,
    newest: DateTime<Utc>,
}

/// The job's queued events; None when there are none.
async fn queued_events(
    tx: &mut Tx<'_>,
    job: &str,
    now: DateTime<Utc>,
) -> Result<Option<QueuedEvents>, StoreError> {
    let rows = sqlx::query(
        "SELECT q.event_id, q.dataset_uri, e.created_at FROM dataset_trigger_queue q \
         JOIN dataset_events e ON e.event_id = q.event_id WHERE q.job_name = $1 ORDER BY q.event_id",
    )
    .bind(job)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut q = QueuedEvents {
        uris: BTreeSet::new(),
        events: Vec::with_capacity(rows.len()),
        oldest: now,
        newest: DateTime::<Utc>::MIN_UTC,
    };
    for r in &rows {
        q.uris.insert(r.try_get::<String, _>("dataset_uri")?);
        q.events.push(r.try_get::<i64, _>("event_id")?);
        let at = r.try_get::<DateTime<Utc>, _>("created_at")?;
        q.oldest = q.oldest.min(at);
        q.newest = q.newest.max(at);
    }
    Ok(Some(q))
}

/// Links the events to the run that consumed them (once per job, by a unique key) and takes them off the
/// job's queue.
async fn consume_events(
    tx: &mut Tx<'_>,
    run_id: RunId,
    job: &str,
    events: &[EventId],
) -> Result<(), StoreError> {
    for chunk in events.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO run_consumed_events (run_id, event_id, job_name) ",
        );
        qb.push_values(chunk, |mut b, id| {
            b.push_bind(run_id).push_bind(*id).push_bind(job);
        });
        qb.build().execute(&mut **tx).await?;
        let mut qb =
            sqlx::QueryBuilder::<Db>::new("DELETE FROM dataset_trigger_queue WHERE job_name = ");
        qb.push_bind(job).push(" AND event_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Starts queued runs of one job, oldest first, while fewer than `max_active_runs` are running.
pub async fn start_queued_runs(
    pool: &PoolT,
    shape: &JobShape,
    max_active_runs: i64,
) -> Result<(Vec<RunId>, FinishReport), StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let paused: Option<bool> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT paused FROM jobs WHERE job_name = $1 {}",
        FOR_UPDATE
    )))
    .bind(&shape.job_name)
    .fetch_optional(&mut *tx)
    .await?;
    if paused != Some(false) {
        return Ok((vec![], FinishReport::default()));
    }
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_runs WHERE job_name = $1 AND state = 'running'",
    )
    .bind(&shape.job_name)
    .fetch_one(&mut *tx)
    .await?;
    let room = max_active_runs - running;
    if room <= 0 {
        return Ok((vec![], FinishReport::default()));
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT run_id FROM job_runs WHERE job_name = $1 AND state = 'queued' \
         ORDER BY logical_time, run_id LIMIT $2",
    )
    .bind(&shape.job_name)
    .bind(room)
    .fetch_all(&mut *tx)
    .await?;
    let mut report = FinishReport::default();
    for id in &ids {
        sqlx::query("UPDATE job_runs SET state = 'running', started_at = $1 WHERE run_id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        advance_run(&mut tx, *id, shape, &BTreeSet::new(), now, &mut report).await?;
    }
    if !ids.is_empty() {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok((ids, report))
}

/// Starts one queued run now, regardless of `max_active_runs` (an operator's `snowpatrol run`).
pub async fn start_run(
    pool: &PoolT,
    run_id: RunId,
    shape: &JobShape,
) -> Result<FinishReport, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let mut report = FinishReport::default();
    let n = sqlx::query("UPDATE job_runs SET state = 'running', started_at = $1 WHERE run_id = $2 AND state = 'queued'")
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n > 0 {
        advance_run(&mut tx, run_id, shape, &BTreeSet::new(), now, &mut report).await?;
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// Creates, skips and finishes according to [`plan_run`] until nothing changes; emits the outlets of
/// `touched` tasks whose instances all succeeded. Runs inside the caller's transaction.
async fn advance_run(
    tx: &mut Tx<'_>,
    run_id: RunId,
    shape: &JobShape,
    touched: &BTreeSet<String>,
    now: DateTime<Utc>,
    report: &mut FinishReport,
) -> Result<(), StoreError> {
    let state: Option<RunState> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT state FROM job_runs WHERE run_id = $1 {FOR_UPDATE}"
    )))
    .bind(run_id)
    .fetch_optional(&mut **tx)
    .await?;
    if state != Some(RunState::Running) {
        return Ok(());
    }
    let mut emitted_for: BTreeSet<String> = BTreeSet::new();
    // Each pass creates what the last one made possible (a skipped task can unblock its downstream at once);
    // a run has at most as many passes as tasks.
    for _ in 0..=shape.tasks.len() + 1 {
        let groups = group_stats(tx, run_id).await?;
        for task in shape
            .tasks
            .iter()
            .filter(|t| touched.contains(&t.name) && !t.outlets.is_empty())
        {
            if !emitted_for.contains(&task.name)
                && groups.get(&task.name).is_some_and(|g| g.has_success_only())
            {
                emitted_for.insert(task.name.clone());
                emit_outlet_events(tx, run_id, shape, task, now, report).await?;
            }
        }
        let steps = plan_run(shape, &groups);
        if steps.is_empty() {
            return Ok(());
        }
        for step in steps {
            if let PlanStep::Finish(state) = step {
                return finish_run(tx, run_id, shape, state, now, report).await;
            }
            create_instances(tx, run_id, shape, step, now, report).await?;
        }
    }
    Ok(())
}

/// Instances of each task of the run, counted by state (what `plan_run` decides on).
async fn group_stats(
    tx: &mut Tx<'_>,
    run_id: RunId,
) -> Result<HashMap<String, GroupStats>, StoreError> {
    let rows = sqlx::query(
        "SELECT task_name, count(*) AS total, \
         sum(CASE WHEN state = 'success' THEN 1 ELSE 0 END) AS success, \
         sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed, \
         sum(CASE WHEN state = 'skipped' THEN 1 ELSE 0 END) AS skipped, \
         sum(CASE WHEN state = 'cancelled' THEN 1 ELSE 0 END) AS cancelled \
         FROM task_instances WHERE run_id = $1 GROUP BY task_name",
    )
    .bind(run_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut groups = HashMap::new();
    for r in &rows {
        groups.insert(
            r.try_get::<String, _>("task_name")?,
            GroupStats {
                total: r.try_get("total")?,
                success: r.try_get::<Option<i64>, _>("success")?.unwrap_or(0),
                failed: r.try_get::<Option<i64>, _>("failed")?.unwrap_or(0),
                skipped: r.try_get::<Option<i64>, _>("skipped")?.unwrap_or(0),
                cancelled: r.try_get::<Option<i64>, _>("cancelled")?.unwrap_or(0),
            },
        );
    }
    Ok(groups)
}

/// The dataset events of a task whose every instance succeeded, with the `extra` its output gave, unless the
/// task said it did no useful work.
async fn emit_outlet_events(
    tx: &mut Tx<'_>,
    run_id: RunId,
    shape: &JobShape,
    task: &TaskShape,
    now: DateTime<Utc>,
    report: &mut FinishReport,
) -> Result<(), StoreError> {
    let output: Option<Option<Json<TaskOutput>>> = sqlx::query_scalar(
        "SELECT output FROM task_instances WHERE run_id = $1 AND task_name = $2 \
         ORDER BY task_instance_id LIMIT 1",
    )
    .bind(run_id)
    .bind(&task.name)
    .fetch_optional(&mut **tx)
    .await?;
    let output = output.flatten().map(|j| j.0).unwrap_or_default();
    // A producer that did no useful work says so (`TaskOutput::without_outlet_events`): its success must not
    // wake the jobs scheduled on its datasets.
    if output.outlets_suppressed {
        return Ok(());
    }
    let extra = output.extra.unwrap_or_else(|| serde_json::json!({}));
    // A rerun after `clear` is a new generation of the run: its outlets emit again.
    let generation: i32 = sqlx::query_scalar("SELECT clear_count FROM job_runs WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(&mut **tx)
        .await?;
    for uri in &task.outlets {
        let source = Some(EventSource {
            job: shape.job_name.as_str(),
            run_id,
            task: task.name.as_str(),
            generation,
        });
        let created_by = format!("job {}", shape.job_name);
        if let Some(id) = insert_event(tx, uri, &extra, source, &created_by, now).await? {
            report.events.push(id);
        }
    }
    Ok(())
}

/// Carries out a `Create` or `Skip` step of the plan: the task's instances (one per upstream key for a
/// mapped task; one skipped instance when there is nothing to map over).
async fn create_instances(
    tx: &mut Tx<'_>,
    run_id: RunId,
    shape: &JobShape,
    step: PlanStep,
    now: DateTime<Utc>,
    report: &mut FinishReport,
) -> Result<(), StoreError> {
    let max_tries = |task: &str| {
        shape
            .tasks
            .iter()
            .find(|t| t.name == task)
            .map_or(1, |t| t.max_tries)
    };
    let one = [String::new()];
    let (task, keys, state, reason) = match step {
        PlanStep::Create { task, map_over } => {
            let keys = match &map_over {
                None => one.to_vec(),
                Some(up) => map_keys(tx, run_id, up).await?,
            };
            if keys.is_empty() {
                let why = "nothing to map over: the upstream task returned no keys".to_string();
                (task, one.to_vec(), TaskState::Skipped, Some(why))
            } else {
                report.created_instances += keys.len();
                (task, keys, TaskState::Queued, None)
            }
        }
        PlanStep::Skip { task, reason } => (task, one.to_vec(), TaskState::Skipped, Some(reason)),
        PlanStep::Finish(_) => return Ok(()),
    };
    let tries = max_tries(&task);
    let job = &shape.job_name;
    insert_instances(
        tx,
        run_id,
        job,
        &task,
        &keys,
        tries,
        state,
        reason.as_deref(),
        now,
    )
    .await
}

/// Marks the run finished; a failed run's error names its failed tasks.
async fn finish_run(
    tx: &mut Tx<'_>,
    run_id: RunId,
    shape: &JobShape,
    state: RunState,
    now: DateTime<Utc>,
    report: &mut FinishReport,
) -> Result<(), StoreError> {
    let error: Option<String> = if state == RunState::Failed {
        let failed: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT task_name FROM task_instances WHERE run_id = $1 \
             AND state IN ('failed', 'cancelled') ORDER BY task_name",
        )
        .bind(run_id)
        .fetch_all(&mut **tx)
        .await?;
        Some(format!("failed task(s): {}", failed.join(", ")))
    } else {
        None
    };
    sqlx::query("UPDATE job_runs SET state = $1, finished_at = $2, error = $3 WHERE run_id = $4")
        .bind(state)
        .bind(now)
        .bind(error)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    report.finished_runs.push(FinishedRun {
        run_id,
        job_name: shape.job_name.clone(),
        state,
    });
    Ok(())
}

async fn map_keys(tx: &mut Tx<'_>, run_id: RunId, task: &str) -> Result<Vec<String>, StoreError> {
    let outputs: Vec<Option<Json<TaskOutput>>> = sqlx::query_scalar(
        "SELECT output FROM task_instances WHERE run_id = $1 AND task_name = $2 AND state = 'success' ORDER BY \
         task_instance_id",
    )
    .bind(run_id)
    .bind(task)
    .fetch_all(&mut **tx)
    .await?;
    let mut seen = BTreeSet::new();
    let mut keys = Vec::new();
    for output in outputs.into_iter().flatten() {
        for k in output.0.map_keys.unwrap_or_default() {
            if seen.insert(k.clone()) {
                keys.push(k);
            }
        }
    }
    Ok(keys)
}

#[allow(clippy::too_many_arguments)]
async fn insert_instances(
    tx: &mut Tx<'_>,
    run_id: RunId,
    job: &str,
    task: &str,
    keys: &[String],
    max_tries: i32,
    state: TaskState,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let finished = if state == TaskState::Skipped {
        Some(now)
    } else {
        None
    };
    for chunk in keys.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO task_instances (run_id, job_name, task_name, map_key, state, try_number, max_tries, \
             queued_at, finished_at, error) ",
        );
        qb.push_values(chunk, |mut b, key| {
            b.push_bind(run_id)
                .push_bind(job)
                .push_bind(task)
                .push_bind(key.as_str())
                .push_bind(state.as_str())
                .push_bind(0i32)
                .push_bind(max_tries)
                .push_bind(now)
                .push_bind(finished)
                .push_bind(error);
        });
        qb.push(" ON CONFLICT (run_id, task_name, map_key) DO NOTHING");
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// The task of a run that produced an event, and the run's generation (its clear count).
#[derive(Clone, Copy)]
struct EventSource<'a> {
    job: &'a str,
    run_id: RunId,
    task: &'a str,
    generation: i32,
}

async fn insert_event(
    tx: &mut Tx<'_>,
    uri: &str,
    extra: &serde_json::Value,
    source: Option<EventSource<'_>>,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<Option<EventId>, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO dataset_events (dataset_uri, extra, source_job, source_run_id, source_task, created_by, \
         created_at, source_generation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (source_run_id, source_task, dataset_uri, source_generation) WHERE source_run_id IS NOT NULL \
         DO NOTHING RETURNING event_id",
    )
    .bind(uri)
    .bind(Json(extra))
    .bind(source.map(|s| s.job))
    .bind(source.map(|s| s.run_id))
    .bind(source.map(|s| s.task))
    .bind(created_by)
    .bind(now)
    .bind(source.map_or(0, |s| s.generation))
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = id {
        sqlx::query(
            "INSERT INTO dataset_trigger_queue (job_name, event_id, dataset_uri, queued_at) \
             SELECT job_name, $1, dataset_uri, $2 FROM job_dataset_subscriptions WHERE dataset_uri = $3",
        )
        .bind(id)
        .bind(now)
        .bind(uri)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

pub async fn emit_event(
    pool: &PoolT,
    uri: &str,
    extra: &serde_json::Value,
    created_by: &str,
) -> Result<(EventId, i64), StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let id = insert_event(&mut tx, uri, extra, None, created_by, now)
        .await?
        .ok_or_else(|| StoreError::Corrupt("event insert returned no id".into()))?;
    let subscribers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dataset_trigger_queue WHERE event_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok((id, subscribers))
}

/// Records a batch of external events in one transaction (the API's bulk ingestion): every event or none.
/// Returns their ids, in order, and how many job triggers they queued in all. One multi-row insert per 1,000
/// events and one insert of their trigger-queue rows (by id), instead of two statements per event: at 500
/// events a batch this took API ingestion from 4,900 to 28,900 events/s on the benchmark machine.
pub async fn emit_events(
    pool: &PoolT,
    events: &[(String, serde_json::Value)],
    created_by: &str,
) -> Result<(Vec<EventId>, i64), StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let mut ids = Vec::with_capacity(events.len());
    let mut triggers = 0;
    for chunk in events.chunks(1000) {
        let mut insert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO dataset_events (dataset_uri, extra, created_by, created_at) ",
        );
        insert.push_values(chunk, |mut row, (uri, extra)| {
            row.push_bind(uri.as_str())
                .push_bind(Json(extra))
                .push_bind(created_by)
                .push_bind(now);
        });
        insert.push(" RETURNING event_id");
        let mut chunk_ids: Vec<EventId> = insert.build_query_scalar().fetch_all(&mut *tx).await?;
        // Ids are handed out in row order; RETURNING's order is not promised, so sort.
        chunk_ids.sort_unstable();
        let mut queue = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO dataset_trigger_queue (job_name, event_id, dataset_uri, queued_at) \
             SELECT s.job_name, e.event_id, e.dataset_uri, ",
        );
        queue.push_bind(now).push(
            " FROM dataset_events e JOIN job_dataset_subscriptions s ON s.dataset_uri = e.dataset_uri \
             WHERE e.event_id IN (",
        );
        let mut sep = queue.separated(", ");
        for id in &chunk_ids {
            sep.push_bind(*id);
        }
        queue.push(")");
        triggers += queue.build().execute(&mut *tx).await?.rows_affected() as i64;
        ids.extend(chunk_ids);
    }
    if triggers > 0 {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok((ids, triggers))
}

/// (params, logical time, trigger kind) of a run, which every task of the run sees.
type RunContext = (serde_json::Value, DateTime<Utc>, TriggerKind);

async fn run_context(tx: &mut Tx<'_>, run_id: RunId) -> Result<RunContext, StoreError> {
    let row =
        sqlx::query("SELECT params, logical_time, trigger_kind FROM job_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&mut **tx)
            .await?;
    Ok((
        row.try_get::<Json<serde_json::Value>, _>("params")?.0,
        row.try_get("logical_time")?,
        parse(row.try_get("trigger_kind")?)?,
    ))
}

pub async fn claim_tasks(
    pool: &PoolT,
    worker: &str,
    limit: i64,
    lease_until: DateTime<Utc>,
    only_run: Option<RunId>,
) -> Result<Vec<ClaimedTask>, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let sql = format!(
        "UPDATE task_instances SET state = 'running', worker_id = $1, lease_expires_at = $2, \
         try_number = try_number + 1, started_at = $3, next_attempt_at = NULL \
         WHERE task_instance_id IN (SELECT task_instance_id FROM task_instances \
            WHERE state IN ('queued', 'up_for_retry') AND (next_attempt_at IS NULL OR next_attempt_at <= $3) \
            AND (CAST($5 AS BIGINT) IS NULL OR run_id = $5) \
            ORDER BY task_instance_id LIMIT $4 {}) \
         RETURNING task_instance_id, run_id, job_name, task_name, map_key, try_number, max_tries",
        SKIP_LOCKED
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .bind(only_run)
        .fetch_all(&mut *tx)
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    let mut runs: HashMap<i64, RunContext> = HashMap::new();
    for r in &rows {
        let run_id: i64 = r.try_get("run_id")?;
        if let std::collections::hash_map::Entry::Vacant(slot) = runs.entry(run_id) {
            slot.insert(run_context(&mut tx, run_id).await?);
        }
        let (params, logical_time, trigger_kind) = runs[&run_id].clone();
        claimed.push(ClaimedTask {
            task_instance_id: r.try_get("task_instance_id")?,
            run_id,
            job_name: r.try_get("job_name")?,
            task_name: r.try_get("task_name")?,
            map_key: r.try_get("map_key")?,
            try_number: r.try_get("try_number")?,
            max_tries: r.try_get("max_tries")?,
            params,
            logical_time,
            trigger_kind,
        });
    }
    tx.commit().await?;
    claimed.sort_by_key(|c| c.task_instance_id);
    Ok(claimed)
}

pub async fn heartbeat(
    pool: &PoolT,
    worker: &str,
    ids: &[TaskInstanceId],
    lease_until: DateTime<Utc>,
) -> Result<Vec<TaskInstanceId>, StoreError> {
    let mut kept = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new("UPDATE task_instances SET lease_expires_at = ");
        qb.push_bind(lease_until)
            .push(" WHERE state = 'running' AND worker_id = ")
            .push_bind(worker);
        qb.push(" AND task_instance_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(") RETURNING task_instance_id");
        let rows: Vec<i64> = qb.build_query_scalar().fetch_all(pool).await?;
        kept.extend(rows);
    }
    Ok(kept)
}

pub async fn finish_tasks(
    pool: &PoolT,
    worker: &str,
    results: &[TaskResult],
    shapes: &Shapes,
) -> Result<FinishReport, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let mut report = FinishReport::default();
    let mut touched: HashMap<(i64, String), BTreeSet<String>> = HashMap::new();
    let updated = update_results(&mut tx, worker, results, now).await?;
    for (id, run_id, job, task, state) in updated {
        report.accepted += 1;
        if state == TaskState::Failed {
            report.failed_tasks.push(id);
        }
        if state != TaskState::UpForRetry {
            touched.entry((run_id, job)).or_default().insert(task);
        }
    }
    report.discarded = results.len() - report.accepted;
    let mut keys: Vec<_> = touched.into_iter().collect();
    keys.sort_by_key(|((run, _), _)| *run);
    for ((run_id, job), tasks) in keys {
        match shapes.get(&job) {
            Some(shape) => advance_run(&mut tx, run_id, shape, &tasks, now, &mut report).await?,
            None => {
                tracing::warn!(run_id, job = %job, "finished a task of a job this process does not know; its run \
                                                    advances when a replica that knows the job finishes work")
            }
        }
    }
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(report)
}

/// Gives claimed instances back untried (graceful shutdown): the try does not count.
pub async fn release_tasks(
    pool: &PoolT,
    worker: &str,
    ids: &[TaskInstanceId],
) -> Result<u64, StoreError> {
    let mut n = 0;
    let mut tx = begin(pool).await?;
    for chunk in ids.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "UPDATE task_instances SET state = 'queued', worker_id = NULL, lease_expires_at = NULL, \
             started_at = NULL, try_number = try_number - 1 WHERE state = 'running' AND worker_id = ",
        );
        qb.push_bind(worker).push(" AND task_instance_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        n += qb.build().execute(&mut *tx).await?.rows_affected();
    }
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(n)
}

/// Running instances whose lease expired belong to a dead worker: back to the queue while tries
/// remain, failed otherwise. A row locked by its own try's write transaction (the try is committing,
/// fenced by `TaskFence`) is skipped, not waited for: the leader must never block on a worker, and
/// the next tick reaps it if the lease is still expired then.
pub async fn reap_expired_leases(
    pool: &PoolT,
    shapes: &Shapes,
) -> Result<(u64, FinishReport), StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let sql = format!(
        "UPDATE task_instances SET \
           state = CASE WHEN try_number < max_tries THEN 'up_for_retry' ELSE 'failed' END, \
           error = 'lease expired: worker ' || coalesce(worker_id, '?') \
                   || ' stopped heartbeating (killed or partitioned)', \
           next_attempt_at = CASE WHEN try_number < max_tries THEN $1 ELSE NULL END, \
           finished_at = CASE WHEN try_number < max_tries THEN NULL ELSE $1 END, \
           lease_expires_at = NULL \
         WHERE task_instance_id IN (SELECT task_instance_id FROM task_instances \
            WHERE state = 'running' AND lease_expires_at < $1 {}) \
         RETURNING task_instance_id, run_id, job_name, task_name, state",
        SKIP_LOCKED
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    let mut report = FinishReport::default();
    let mut touched: HashMap<(i64, String), BTreeSet<String>> = HashMap::new();
    for r in &rows {
        let state: TaskState = parse(r.try_get("state")?)?;
        if state == TaskState::Failed {
            report.failed_tasks.push(r.try_get("task_instance_id")?);
            touched
                .entry((r.try_get("run_id")?, r.try_get("job_name")?))
                .or_default()
                .insert(r.try_get("task_name")?);
        }
    }
    for ((run_id, job), tasks) in touched {
        if let Some(shape) = shapes.get(&job) {
            advance_run(&mut tx, run_id, shape, &tasks, now, &mut report).await?;
        }
    }
    if !rows.is_empty() {
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok((rows.len() as u64, report))
}

pub async fn cancel_run(pool: &PoolT, run_id: RunId, reason: &str) -> Result<bool, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let n = sqlx::query(
        "UPDATE job_runs SET state = 'cancelled', finished_at = $1, error = $2 WHERE run_id = $3 AND state IN \
         ('queued', 'running')",
    )
    .bind(now)
    .bind(reason)
    .bind(run_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE task_instances SET state = 'cancelled', finished_at = $1, lease_expires_at = NULL \
         WHERE run_id = $2 AND state IN ('queued', 'up_for_retry', 'running')",
    )
    .bind(now)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    if n > 0 {
        // A slot under max_active_runs is free, and the workers of the cancelled tries learn it at their next
        // heartbeat.
        notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(n > 0)
}

/// Locks a run's row for an operator action; its job and state.
async fn lock_run(tx: &mut Tx<'_>, run_id: RunId) -> Result<(String, RunState), StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT job_name, state FROM job_runs WHERE run_id = $1 {FOR_UPDATE}"
    )))
    .bind(run_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no run with id {run_id}")))?;
    let state: RunState = row.try_get("state")?;
    if state == RunState::Queued {
        return Err(StoreError::Refused(format!(
            "run {run_id} is still queued: it has no task instances yet (cancel it, or wait for it to start)"
        )));
    }
    Ok((row.try_get("job_name")?, state))
}

/// (instance, task, map key, state) of every instance of a run.
type InstanceState = (TaskInstanceId, String, String, TaskState);

async fn instance_states(tx: &mut Tx<'_>, run_id: RunId) -> Result<Vec<InstanceState>, StoreError> {
    let rows = sqlx::query(
        "SELECT task_instance_id, task_name, map_key, state FROM task_instances WHERE run_id = $1 \
         ORDER BY task_instance_id",
    )
    .bind(run_id)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("task_instance_id")?,
                r.try_get("task_name")?,
                r.try_get("map_key")?,
                r.try_get("state")?,
            ))
        })
        .collect()
}

fn unknown_task(shape: &JobShape, run_id: RunId, task: &str) -> StoreError {
    let names: Vec<&str> = shape.tasks.iter().map(|t| t.name.as_str()).collect();
    StoreError::Refused(format!(
        "run {run_id} of {} has no task `{task}`; its tasks: {}",
        shape.job_name,
        names.join(", ")
    ))
}

/// Refuses when any instance about to be reset or removed has not finished: its try still owns it.
fn refuse_unfinished<'a>(
    run_id: RunId,
    affected: impl Iterator<Item = &'a InstanceState>,
) -> Result<(), StoreError> {
    let busy: BTreeSet<String> = affected
        .filter(|i| !i.3.is_terminal())
        .map(|i| format!("{} ({})", i.1, i.3))
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    Err(StoreError::Refused(format!(
        "run {run_id}: {} not finished yet; wait for it, or cancel the run first",
        busy.into_iter().collect::<Vec<_>>().join(", ")
    )))
}

/// A value bound into [`execute_for_ids`]'s statement.
#[derive(Clone, Copy)]
enum Bind<'a> {
    Text(&'a str),
    Time(DateTime<Utc>),
}

/// An `UPDATE` statement ending in `task_instance_id IN (ids)`, chunked to stay under bind limits.
async fn execute_for_ids(
    tx: &mut Tx<'_>,
    sql: &str,
    binds: &[Bind<'_>],
    ids: &[TaskInstanceId],
) -> Result<u64, StoreError> {
    let mut n = 0;
    for chunk in ids.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new("");
        // `sql` holds `?` placeholders for `binds`, in order; the id list is appended.
        let mut parts = sql.split('?');
        qb.push(parts.next().unwrap_or_default());
        for (part, value) in parts.zip(binds) {
            match *value {
                Bind::Text(t) => qb.push_bind(t),
                Bind::Time(t) => qb.push_bind(t),
            };
            qb.push(part);
        }
        qb.push(" task_instance_id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        n += qb.build().execute(&mut **tx).await?.rows_affected();
    }
    Ok(n)
}

async fn delete_task_instances(
    tx: &mut Tx<'_>,
    run_id: RunId,
    tasks: &BTreeSet<String>,
) -> Result<(), StoreError> {
    for task in tasks {
        sqlx::query("DELETE FROM task_instances WHERE run_id = $1 AND task_name = $2")
            .bind(run_id)
            .bind(task)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Puts a run back to `running` (a finished run reopens) with the operator's note; `cleared` counts a
/// clear, which makes the reruns' outlet events a new generation.
async fn reopen_run(
    tx: &mut Tx<'_>,
    run_id: RunId,
    note: &str,
    cleared: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE job_runs SET state = 'running', finished_at = NULL, error = NULL, note = $1, \
         clear_count = clear_count + $2, started_at = coalesce(started_at, $3) WHERE run_id = $4",
    )
    .bind(note)
    .bind(i32::from(cleared))
    .bind(now)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Clears task instances of a started run so they run again, like Airflow's *clear*:
/// - the selected instances are reset to `queued` in place, with the task's tries granted again (try numbers
///   go on, so each try keeps its own log lines);
/// - every task downstream of a selected one, and a selected task that had been skipped, loses its instances,
///   so the planner decides afresh once its upstream is done (a fan-out's keys follow the new output);
/// - a finished run is `running` again and its clear count grows, so the reruns' outlet events are new events
///   and wake their consumers again.
///
/// Refused, writing nothing, when the run is queued, no instance matches, or an affected instance has not
/// finished (its try still holds the lease).
pub async fn clear_tasks(
    pool: &PoolT,
    run_id: RunId,
    shape: &JobShape,
    selection: &ClearSelection,
    note: &str,
) -> Result<ClearReport, StoreError> {
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let (_, run_state) = lock_run(&mut tx, run_id).await?;
    let instances = instance_states(&mut tx, run_id).await?;
    let is_selected = |i: &InstanceState| match selection {
        ClearSelection::Failed => matches!(i.3, TaskState::Failed | TaskState::Cancelled),
        ClearSelection::Tasks(names) => names.contains(&i.1),
    };
    let selected: BTreeSet<String> = match selection {
        ClearSelection::Failed => instances
            .iter()
            .filter(|i| is_selected(i))
            .map(|i| i.1.clone())
            .collect(),
        ClearSelection::Tasks(names) => {
            if let Some(bad) = names
                .iter()
                .find(|n| !shape.tasks.iter().any(|t| &t.name == *n))
            {
                return Err(unknown_task(shape, run_id, bad));
            }
            names.iter().cloned().collect()
        }
    };
    if selected.is_empty() {
        return Err(StoreError::Refused(format!(
            "run {run_id} of {} has no failed or cancelled task instances to clear; name tasks (--task) to run \
             them again",
            shape.job_name
        )));
    }
    let mut replanned = downstream_of(shape, &selected);
    replanned.extend(
        instances
            .iter()
            .filter(|i| selected.contains(&i.1) && i.3 == TaskState::Skipped)
            .map(|i| i.1.clone()),
    );
    let reset: Vec<&InstanceState> = instances
        .iter()
        .filter(|i| is_selected(i) && !replanned.contains(&i.1))
        .collect();
    refuse_unfinished(
        run_id,
        instances
            .iter()
            .filter(|i| replanned.contains(&i.1))
            .chain(reset.iter().copied()),
    )?;
    for task in &shape.tasks {
        let ids: Vec<TaskInstanceId> = reset
            .iter()
            .filter(|i| i.1 == task.name)
            .map(|i| i.0)
            .collect();
        let sql = format!(
            "UPDATE task_instances SET state = 'queued', max_tries = try_number + {}, worker_id = NULL, \
             lease_expires_at = NULL, next_attempt_at = NULL, started_at = NULL, finished_at = NULL, \
             output = NULL, error = NULL, note = ?, queued_at = ? WHERE",
            task.max_tries
        );
        execute_for_ids(&mut tx, &sql, &[Bind::Text(note), Bind::Time(now)], &ids).await?;
    }
    delete_task_instances(&mut tx, run_id, &replanned).await?;
    reopen_run(&mut tx, run_id, note, true, now).await?;
    let mut report = FinishReport::default();
    advance_run(&mut tx, run_id, shape, &BTreeSet::new(), now, &mut report).await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(ClearReport {
        reset: reset.iter().map(|i| i.0).collect(),
        replanned_tasks: replanned.into_iter().collect(),
        reopened: run_state.is_terminal(),
        report,
    })
}

/// Sets the instances of one task of a started run (or the one with `key`) to `success` or `failed` by hand,
/// like Airflow's *mark success/failed*. A try still running loses its lease (its result will be discarded).
/// Marked success, the task's downstream tasks that had been skipped because of it are planned afresh; no
/// outlet event is emitted (the work was not done by the task). The run is re-planned: a finished run may
/// continue, or finishes again in the state its tasks now give.
pub async fn mark_tasks(
    pool: &PoolT,
    run_id: RunId,
    shape: &JobShape,
    task: &str,
    key: Option<&str>,
    state: TaskState,
    note: &str,
) -> Result<MarkReport, StoreError> {
    if !matches!(state, TaskState::Success | TaskState::Failed) {
        return Err(StoreError::Refused(format!(
            "a task can be marked success or failed, not {state}"
        )));
    }
    let now = crate::now();
    let mut tx = begin(pool).await?;
    lock_run(&mut tx, run_id).await?;
    if !shape.tasks.iter().any(|t| t.name == task) {
        return Err(unknown_task(shape, run_id, task));
    }
    let instances = instance_states(&mut tx, run_id).await?;
    let of_task: Vec<&InstanceState> = instances
        .iter()
        .filter(|i| i.1 == task && key.is_none_or(|k| i.2 == k))
        .collect();
    if of_task.is_empty() {
        let what = key.map_or(String::new(), |k| format!(" with key `{k}`"));
        return Err(StoreError::Refused(format!(
            "task `{task}` of run {run_id} has no instance{what} yet: only created instances can be marked"
        )));
    }
    let ids: Vec<TaskInstanceId> = of_task
        .iter()
        .filter(|i| i.3 != state)
        .map(|i| i.0)
        .collect();
    if ids.is_empty() {
        return Err(StoreError::Refused(format!(
            "task `{task}` of run {run_id} is already {state}"
        )));
    }
    // `error` keeps what a failed try said; a task marked failed that has none gets the note. (The CASE tests
    // the new state, a bind: inside an UPDATE, `state` would be the row's old value.)
    let sql = "UPDATE task_instances SET state = ?, finished_at = ?, lease_expires_at = NULL, \
               next_attempt_at = NULL, note = ?, error = CASE WHEN ? = 'failed' THEN coalesce(error, ?) \
               ELSE error END WHERE";
    let binds = [
        Bind::Text(state.as_str()),
        Bind::Time(now),
        Bind::Text(note),
        Bind::Text(state.as_str()),
        Bind::Text(note),
    ];
    execute_for_ids(&mut tx, sql, &binds, &ids).await?;
    let mut replanned = BTreeSet::new();
    if state == TaskState::Success {
        let below = downstream_of(shape, &BTreeSet::from([task.to_string()]));
        replanned = below
            .into_iter()
            .filter(|d| {
                let of: Vec<_> = instances.iter().filter(|i| &i.1 == d).collect();
                !of.is_empty() && of.iter().all(|i| i.3 == TaskState::Skipped)
            })
            .collect();
        delete_task_instances(&mut tx, run_id, &replanned).await?;
    }
    reopen_run(&mut tx, run_id, note, false, now).await?;
    let mut report = FinishReport::default();
    advance_run(&mut tx, run_id, shape, &BTreeSet::new(), now, &mut report).await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(MarkReport {
        marked: ids,
        replanned_tasks: replanned.into_iter().collect(),
        report,
    })
}

/// Ends a run as `success` (every instance not succeeded or skipped becomes `success`) or `failed` (every
/// unfinished instance becomes `failed`) by hand. Running tries lose their lease. No outlet event is emitted.
/// `None` when the run already was in that state.
pub async fn mark_run(
    pool: &PoolT,
    run_id: RunId,
    state: RunState,
    note: &str,
) -> Result<Option<FinishedRun>, StoreError> {
    let (from, error) = match state {
        RunState::Success => (
            "('queued', 'up_for_retry', 'running', 'failed', 'cancelled')",
            None,
        ),
        RunState::Failed => (
            "('queued', 'up_for_retry', 'running')",
            Some(format!("marked failed: {note}")),
        ),
        other => {
            return Err(StoreError::Refused(format!(
                "a run can be marked success or failed, not {other}"
            )));
        }
    };
    let now = crate::now();
    let mut tx = begin(pool).await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT job_name, state FROM job_runs WHERE run_id = $1 {FOR_UPDATE}"
    )))
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no run with id {run_id}")))?;
    if row.try_get::<RunState, _>("state")? == state {
        return Ok(None);
    }
    let instance_state = if state == RunState::Success {
        TaskState::Success
    } else {
        TaskState::Failed
    };
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE task_instances SET state = $1, finished_at = $2, lease_expires_at = NULL, next_attempt_at = NULL, \
         note = $3 WHERE run_id = $4 AND state IN {from}"
    )))
    .bind(instance_state)
    .bind(now)
    .bind(note)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE job_runs SET state = $1, finished_at = $2, error = $3, note = $4, \
         started_at = coalesce(started_at, $2) WHERE run_id = $5",
    )
    .bind(state)
    .bind(now)
    .bind(error)
    .bind(note)
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(FinishedRun {
        run_id,
        job_name: row.try_get("job_name")?,
        state,
    }))
}

pub async fn append_task_logs(pool: &PoolT, lines: &[TaskLogLine]) -> Result<(), StoreError> {
    // 11 binds a line: 500 lines stay far under both backends' bind limits.
    for chunk in lines.chunks(500) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO task_logs (run_id, task_instance_id, task_name, map_key, try_number, logged_at, level, \
             target, message, fields) ",
        );
        qb.push_values(chunk, |mut b, l| {
            b.push_bind(l.run_id)
                .push_bind(l.task_instance_id)
                .push_bind(l.task_name.as_str())
                .push_bind(l.map_key.as_str())
                .push_bind(l.try_number)
                .push_bind(l.logged_at)
                .push_bind(l.level)
                .push_bind(l.target.as_str())
                .push_bind(l.message.as_str())
                .push_bind(Json(&l.fields));
        });
        qb.build().execute(pool).await?;
    }
    Ok(())
}

pub async fn task_logs(
    pool: &PoolT,
    run_id: RunId,
    task: Option<&str>,
    after_log_id: i64,
    limit: i64,
) -> Result<Vec<TaskLogRecord>, StoreError> {
    let mut qb = sqlx::QueryBuilder::<Db>::new(
        "SELECT log_id, run_id, task_instance_id, task_name, map_key, try_number, logged_at, level, target, \
         message, fields FROM task_logs WHERE run_id = ",
    );
    qb.push_bind(run_id)
        .push(" AND log_id > ")
        .push_bind(after_log_id);
    if let Some(task) = task {
        qb.push(" AND task_name = ").push_bind(task);
    }
    qb.push(" ORDER BY log_id LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}

pub async fn task_logs_tail(
    pool: &PoolT,
    run_id: RunId,
    limit: i64,
) -> Result<Vec<TaskLogRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT log_id, run_id, task_instance_id, task_name, map_key, try_number, logged_at, level, target, \
         message, fields FROM task_logs WHERE run_id = $1 ORDER BY log_id DESC LIMIT $2",
    )
    .bind(run_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut lines: Vec<TaskLogRecord> = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
    lines.reverse();
    Ok(lines)
}

pub async fn get_run(pool: &PoolT, run_id: RunId) -> Result<Option<RunRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM job_runs WHERE run_id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

pub async fn list_runs(pool: &PoolT, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
    let mut qb =
        sqlx::QueryBuilder::<Db>::new(format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE 1 = 1"));
    if let Some(job) = &filter.job_name {
        qb.push(" AND job_name = ").push_bind(job.clone());
    }
    if let Some(state) = filter.state {
        qb.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(since) = filter.since {
        qb.push(" AND logical_time >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        qb.push(" AND logical_time < ").push_bind(until);
    }
    qb.push(" ORDER BY run_id DESC LIMIT ")
        .push_bind(if filter.limit > 0 { filter.limit } else { 50 });
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}

pub async fn active_run_count(pool: &PoolT, job: &str) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT sum(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS queued, \
         sum(CASE WHEN state = 'running' THEN 1 ELSE 0 END) AS running FROM job_runs WHERE job_name = $1",
    )
    .bind(job)
    .fetch_one(pool)
    .await?;
    Ok((
        row.try_get::<Option<i64>, _>("queued")?.unwrap_or(0),
        row.try_get::<Option<i64>, _>("running")?.unwrap_or(0),
    ))
}

pub async fn list_task_instances(
    pool: &PoolT,
    run_id: RunId,
) -> Result<Vec<TaskInstanceRecord>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = $1 ORDER BY task_instance_id"
    )))
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

pub async fn task_instances_of(
    pool: &PoolT,
    run_id: RunId,
    task: &str,
) -> Result<Vec<TaskInstanceRecord>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = $1 AND task_name = $2 ORDER BY task_instance_id"
    )))
    .bind(run_id)
    .bind(task)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

pub async fn get_task_instance(
    pool: &PoolT,
    id: TaskInstanceId,
) -> Result<Option<TaskInstanceRecord>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {TI_COLUMNS} FROM task_instances WHERE task_instance_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

pub async fn list_events(
    pool: &PoolT,
    dataset: Option<&str>,
    limit: i64,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut qb = sqlx::QueryBuilder::<Db>::new(format!(
        "SELECT {EVENT_COLUMNS} FROM dataset_events WHERE 1 = 1"
    ));
    if let Some(d) = dataset {
        qb.push(" AND dataset_uri = ").push_bind(d.to_string());
    }
    qb.push(" ORDER BY event_id DESC LIMIT ")
        .push_bind(if limit > 0 { limit } else { 50 });
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}

pub async fn consumed_events(pool: &PoolT, run_id: RunId) -> Result<Vec<EventRecord>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM dataset_events e JOIN run_consumed_events c ON c.event_id = e.event_id WHERE c.run_id = $1 \
         ORDER BY e.event_id",
        EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
    )))
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// Events a run's tasks emitted (its outlets), oldest first.
pub async fn produced_events(pool: &PoolT, run_id: RunId) -> Result<Vec<EventRecord>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM dataset_events WHERE source_run_id = $1 ORDER BY event_id"
    )))
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

pub async fn pending_events(pool: &PoolT, job: &str) -> Result<Vec<PendingEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT q.event_id, q.dataset_uri, e.created_at FROM dataset_trigger_queue q \
         JOIN dataset_events e ON e.event_id = q.event_id WHERE q.job_name = $1 ORDER BY q.event_id",
    )
    .bind(job)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingEvent {
                event_id: r.try_get("event_id")?,
                dataset_uri: r.try_get("dataset_uri")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

pub async fn state_counts(pool: &PoolT) -> Result<StateCounts, StoreError> {
    // Each query reads a partial index of unfinished rows or one row per job (see StateCounts).
    let mut counts = StateCounts::default();
    let rows = sqlx::query(
        "SELECT job_name, state, count(*) FROM job_runs WHERE state IN ('queued', 'running') GROUP BY job_name, state",
    )
    .fetch_all(pool)
    .await?;
    for r in &rows {
        let state: String = r.try_get(1)?;
        counts.active_runs.push((
            r.try_get(0)?,
            state.parse().map_err(StoreError::Corrupt)?,
            r.try_get(2)?,
        ));
    }
    let rows = sqlx::query(
        "SELECT job_name, state, count(*) FROM task_instances WHERE state IN ('queued', 'up_for_retry', 'running') \
         GROUP BY job_name, state",
    )
    .fetch_all(pool)
    .await?;
    for r in &rows {
        let state: String = r.try_get(1)?;
        counts.active_task_instances.push((
            r.try_get(0)?,
            state.parse().map_err(StoreError::Corrupt)?,
            r.try_get(2)?,
        ));
    }
    counts.pending_triggers =
        sqlx::query("SELECT job_name, count(*) FROM dataset_trigger_queue GROUP BY job_name")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
    // One index probe per job (job_runs_finished_by_job), not a scan of the history.
    let rows = sqlx::query(
        "SELECT j.job_name, \
           (SELECT max(r.finished_at) FROM job_runs r WHERE r.job_name = j.job_name AND r.state = 'success'), \
           (SELECT max(r.finished_at) FROM job_runs r WHERE r.job_name = j.job_name \
              AND r.state IN ('success', 'failed', 'cancelled')) \
         FROM jobs j",
    )
    .fetch_all(pool)
    .await?;
    for r in &rows {
        let job: String = r.try_get(0)?;
        if let Some(at) = r.try_get::<Option<DateTime<Utc>>, _>(1)? {
            counts.last_success.push((job.clone(), at));
        }
        if let Some(at) = r.try_get::<Option<DateTime<Utc>>, _>(2)? {
            counts.last_finished.push((job, at));
        }
    }
    Ok(counts)
}

/// Deletes finished runs (with their task instances and lineage) that finished before `before`, and
/// dataset events created before it that no job still waits on and no kept run consumed. At most
/// `batch` runs and `batch` events per call, so each transaction stays short; callers loop until a
/// pass deletes less than a batch.
pub async fn purge_history(
    pool: &PoolT,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<PurgedHistory, StoreError> {
    let mut tx = begin(pool).await?;
    let runs: Vec<RunId> = sqlx::query_scalar(
        "SELECT run_id FROM job_runs WHERE state IN ('success', 'failed', 'cancelled') AND finished_at < $1 \
         ORDER BY run_id LIMIT $2",
    )
    .bind(before)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let mut purged = PurgedHistory::default();
    if !runs.is_empty() {
        let in_list = |sql: &str| {
            let mut qb = sqlx::QueryBuilder::<Db>::new(sql);
            qb.push(" (");
            let mut sep = qb.separated(", ");
            for id in &runs {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb
        };
        // Explicit deletes rather than ON DELETE CASCADE alone, so the counts are known and SQLite
        // connections without foreign keys enforced behave the same.
        in_list("DELETE FROM run_consumed_events WHERE run_id IN")
            .build()
            .execute(&mut *tx)
            .await?;
        in_list("DELETE FROM task_logs WHERE run_id IN")
            .build()
            .execute(&mut *tx)
            .await?;
        purged.task_instances = in_list("DELETE FROM task_instances WHERE run_id IN")
            .build()
            .execute(&mut *tx)
            .await?
            .rows_affected();
        purged.runs = in_list("DELETE FROM job_runs WHERE run_id IN")
            .build()
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    purged.events = sqlx::query(
        "DELETE FROM dataset_events WHERE event_id IN (SELECT e.event_id FROM dataset_events e \
           WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM dataset_trigger_queue q WHERE q.event_id = e.event_id) \
             AND NOT EXISTS (SELECT 1 FROM run_consumed_events c WHERE c.event_id = e.event_id) \
           ORDER BY e.event_id LIMIT $2)",
    )
    .bind(before)
    .bind(batch)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(purged)
}

/// A time-bound lease row judged by this process's clock (SQLite's leader lease; see `leader.rs`).
pub async fn try_lease(
    pool: &PoolT,
    name: &str,
    holder: &str,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let now = crate::now();
    let got: Option<String> = sqlx::query_scalar(
        "INSERT INTO scheduler_leases (lease_name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (lease_name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE scheduler_leases.holder = excluded.holder OR scheduler_leases.expires_at < $4 \
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(until)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(got.as_deref() == Some(holder))
}

pub async fn drop_lease(pool: &PoolT, name: &str, holder: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM scheduler_leases WHERE lease_name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}
/// True when `table` exists (in the connection's search path on PostgreSQL).
async fn table_exists(tx: &mut Tx<'_>, table: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar::<_, bool>(TABLE_EXISTS)
        .bind(table)
        .fetch_one(&mut **tx)
        .await?)
}

/// Step one of the handover from the combined migration line (see `crate::migrations`): keeps a copy of
/// `_sqlx_migrations`, deletes the rows of versions the engine line does not have and gives the engine's
/// versions their new checksums. False when there is nothing to hand over (a new database, or done before).
pub async fn hand_over_combined_line(
    pool: &PoolT,
    engine: &[(i64, Vec<u8>)],
) -> Result<bool, StoreError> {
    let mut tx = begin(pool).await?;
    if let Some(lock) = MIGRATION_LOCK {
        sqlx::query(lock).execute(&mut *tx).await?;
    }
    if !table_exists(&mut tx, "_sqlx_migrations").await? {
        return Ok(false);
    }
    let applied: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
        .fetch_all(&mut *tx)
        .await?;
    let in_engine = |v: i64| engine.iter().any(|(e, _)| *e == v);
    let combined_only: Vec<i64> = applied
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| *v <= COMBINED_LINE_LAST && !in_engine(*v))
        .collect();
    if combined_only.is_empty() {
        return Ok(false);
    }
    if let Some((v, _)) = applied.iter().find(|(_, ok)| !ok) {
        return Err(StoreError::Corrupt(format!(
            "migration {v} is recorded as failed in _sqlx_migrations; repair the database before upgrading"
        )));
    }
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {COMBINED_LINE_TABLE} AS SELECT * FROM _sqlx_migrations"
    )))
    .execute(&mut *tx)
    .await?;
    for v in combined_only {
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    for (v, checksum) in engine {
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
            .bind(checksum)
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Step two of the handover, for a product line recorded in `table`: when that table is empty and the combined
/// line's copy exists, records as applied each of `versions` the combined line had applied. Returns how many.
pub async fn adopt_combined_line(
    pool: &PoolT,
    table: &str,
    versions: &[(i64, Vec<u8>)],
) -> Result<usize, StoreError> {
    use sqlx::migrate::Migrate;
    let mut tx = begin(pool).await?;
    if let Some(lock) = MIGRATION_LOCK {
        sqlx::query(lock).execute(&mut *tx).await?;
    }
    if !table_exists(&mut tx, COMBINED_LINE_TABLE).await? {
        return Ok(0);
    }
    // sqlx's own schema, so its later CREATE TABLE IF NOT EXISTS finds the table as it would have made it.
    (*tx).ensure_migrations_table(table).await?;
    let recorded: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut *tx)
        .await?;
    if recorded > 0 {
        return Ok(0);
    }
    let mut adopted = 0;
    for (v, checksum) in versions.iter().filter(|(v, _)| *v <= COMBINED_LINE_LAST) {
        adopted += sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (version, description, installed_on, success, checksum, execution_time) \
             SELECT version, description, installed_on, success, $1, execution_time FROM {COMBINED_LINE_TABLE} \
             WHERE version = $2 AND success"
        )))
        .bind(checksum)
        .bind(v)
        .execute(&mut *tx)
        .await?
        .rows_affected() as usize;
    }
    tx.commit().await?;
    Ok(adopted)
}
