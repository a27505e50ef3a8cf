//! SQLite's instance of the scheduler's operations and its dialect.

use super::*;

pub(super) type Db = sqlx::Sqlite;
/// Takes the single write lock when the transaction starts, so two writers never deadlock upgrading a read lock.
const BEGIN: &str = "BEGIN IMMEDIATE";
/// One writer at a time: there are no row locks to take.
const FOR_UPDATE: &str = "";
const SKIP_LOCKED: &str = "";
/// Every process on one SQLite file wakes by polling; there is no channel to announce on.
const NOTIFY: bool = false;
/// Whether the table named by `$1` exists.
const TABLE_EXISTS: &str =
    "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = $1";
/// `BEGIN IMMEDIATE` serializes the migration handover already.
const MIGRATION_LOCK: Option<&str> = None;

#[path = "ops.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend on purpose (see the parent module)"
)]
mod ops;
pub(crate) use ops::*;

/// SQLite: row by row inside the batch transaction (in-process, so there are no round trips to save).
pub(super) async fn update_results(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    worker: &str,
    results: &[TaskResult],
    now: DateTime<Utc>,
) -> Result<Updated, StoreError> {
    let mut out = Vec::with_capacity(results.len());
    for res in results {
        let (state, output, error, finished, next, granted) = outcome_columns(&res.outcome, now);
        let row = sqlx::query(
            "UPDATE task_instances SET state = $1, output = $2, error = $3, finished_at = $4, next_attempt_at = $5, \
             lease_expires_at = NULL, max_tries = max_tries + $9 \
             WHERE task_instance_id = $6 AND worker_id = $7 AND state = 'running' AND try_number = $8 \
             RETURNING run_id, job_name, task_name",
        )
        .bind(state.as_str())
        .bind(output)
        .bind(error)
        .bind(finished)
        .bind(next)
        .bind(res.task_instance_id)
        .bind(worker)
        .bind(res.try_number)
        .bind(granted)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = row {
            out.push((
                res.task_instance_id,
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                state,
            ));
        }
    }
    Ok(out)
}
