//! PostgreSQL's instance of the scheduler's operations and its dialect.

use super::*;

pub(super) type Db = sqlx::Postgres;
const BEGIN: &str = "BEGIN";
const FOR_UPDATE: &str = "FOR UPDATE";
const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";
/// Commits that may unblock another replica announce themselves (see `notify`).
const NOTIFY: bool = true;
/// Whether the table named by `$1` exists.
const TABLE_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";
/// Serializes the migration handover between replicas starting together (transaction-scoped).
const MIGRATION_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(1936682872)");

#[path = "ops.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend on purpose (see the parent module)"
)]
mod ops;
pub(crate) use ops::*;

/// PostgreSQL: one UPDATE for the whole batch (UNNEST of arrays), guarded by ownership and try number so a
/// result whose lease was lost meanwhile is discarded.
pub(super) async fn update_results(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    worker: &str,
    results: &[TaskResult],
    now: DateTime<Utc>,
) -> Result<Updated, StoreError> {
    let mut ids = Vec::with_capacity(results.len());
    let mut tries = Vec::with_capacity(results.len());
    let mut states = Vec::with_capacity(results.len());
    let mut outputs = Vec::with_capacity(results.len());
    let mut errors = Vec::with_capacity(results.len());
    let mut finished = Vec::with_capacity(results.len());
    let mut next = Vec::with_capacity(results.len());
    let mut granted = Vec::with_capacity(results.len());
    for r in results {
        let (state, output, error, fin, nxt, extra) = outcome_columns(&r.outcome, now);
        granted.push(extra);
        ids.push(r.task_instance_id);
        tries.push(r.try_number);
        states.push(state.as_str());
        outputs.push(output);
        errors.push(error);
        finished.push(fin);
        next.push(nxt);
    }
    let rows = sqlx::query(
        "UPDATE task_instances t SET state = v.state, output = v.output::jsonb, error = v.error, \
         finished_at = v.finished_at, next_attempt_at = v.next_at, lease_expires_at = NULL, \
         max_tries = t.max_tries + v.granted \
         FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
                     $7::timestamptz[], $9::int[]) \
              AS v(id, try_number, state, output, error, finished_at, next_at, granted) \
         WHERE t.task_instance_id = v.id AND t.worker_id = $8 AND t.state = 'running' AND t.try_number = v.try_number \
         RETURNING t.task_instance_id, t.run_id, t.job_name, t.task_name, t.state",
    )
    .bind(&ids)
    .bind(&tries)
    .bind(&states)
    .bind(&outputs)
    .bind(&errors)
    .bind(&finished)
    .bind(&next)
    .bind(worker)
    .bind(&granted)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                parse(r.try_get(4)?)?,
            ))
        })
        .collect()
}
