//! SQLite's instance of the pipeline's operations.

use super::*;
use sqlx::SqlitePool;

pub(super) type Db = sqlx::Sqlite;
/// Takes the single write lock when the transaction starts.
const BEGIN: &str = "BEGIN IMMEDIATE";
/// One writer at a time: no row locks to take, and incident maintenance is serialized anyway.
const SKIP_LOCKED: &str = "";
const WAREHOUSE_LOCK: Option<&str> = None;

#[path = "ops.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend on purpose (see the parent module)"
)]
mod ops;
pub(super) use ops::*;

/// The last statement before a task's commit (see [`TaskFence`]; the write lock of `BEGIN IMMEDIATE` stands in
/// for PostgreSQL's row lock). `None`: an operator command or a test, not a task try.
pub(super) async fn check_fence(
    tx: &mut sqlx::Transaction<'_, Db>,
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    match fence {
        Some(f) => f.check_sqlite(tx).await,
        None => Ok(()),
    }
}

/// [`PipelineStore::load_metering`] in one transaction: SQLite serializes writers, so two would not overlap.
pub(super) async fn load_metering(
    pool: &SqlitePool,
    load: &MeteringLoad<'_>,
    fence: Option<&TaskFence>,
) -> Result<u64, StoreError> {
    let (from, to) = (day_start(load.from), day_start(load.to));
    let mut tx = pool.begin_with(BEGIN).await?;
    let deleted = delete_hourly_window(&mut tx, from, to).await?;
    insert_hourly_batched(&mut tx, load.hourly, load.run_id).await?;
    snowpatrol_store::failpoint("prep.load.before_commit")?;
    delete_daily_window(&mut tx, load.from, load.to).await?;
    upsert_features_in(&mut tx, load.daily).await?;
    snowpatrol_store::failpoint("prep.load.before_ledger")?;
    record_loaded_days(&mut tx, load).await?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// [`PipelineStore::replace_daily`] in one transaction.
pub(super) async fn replace_daily(
    pool: &SqlitePool,
    rows: &[FeatureRow],
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    sqlx::query("DELETE FROM warehouse_daily_usage")
        .execute(&mut *tx)
        .await?;
    upsert_features_in(&mut tx, rows).await?;
    snowpatrol_store::failpoint("prep.features.before_commit")?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

/// [`PipelineStore::hourly_credits_of`]: one query with the wanted warehouses as row values.
pub(super) async fn hourly_credits_of(
    pool: &SqlitePool,
    keys: &[WarehouseKey],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(WarehouseKey, DateTime<Utc>, f64)>, StoreError> {
    let mut out = Vec::new();
    // SQLite's bind limit (32,766) is far above 2 x 500, the chunk size.
    for chunk in keys.chunks(500) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "SELECT account_name, warehouse_name, start_time, sum(credits_used) FROM warehouse_metering_hourly \
             WHERE warehouse_id > 0 AND start_time >= ",
        );
        qb.push_bind(from)
            .push(" AND start_time < ")
            .push_bind(to)
            .push(" AND (account_name, warehouse_name) IN (VALUES ");
        let mut values = qb.separated(", ");
        for k in chunk {
            values
                .push("(")
                .push_bind_unseparated(&k.account_name)
                .push_unseparated(", ")
                .push_bind_unseparated(&k.warehouse_name)
                .push_unseparated(")");
        }
        qb.push(") GROUP BY account_name, warehouse_name, start_time");
        let rows: Vec<(String, String, DateTime<Utc>, f64)> =
            qb.build_query_as().fetch_all(pool).await?;
        out.extend(
            rows.into_iter()
                .map(|(a, w, t, c)| (WarehouseKey::new(a, w), t, c)),
        );
    }
    Ok(out)
}
