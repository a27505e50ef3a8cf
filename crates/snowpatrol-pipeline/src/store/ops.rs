//! The pipeline's operations, compiled once per backend (see the `store` module): `Db`, `BEGIN`, `SKIP_LOCKED`,
//! `WAREHOUSE_LOCK` and `check_fence` come from the including module.

use super::*;

type PoolT = sqlx::Pool<Db>;
type RowT = <Db as sqlx::Database>::Row;
type QueryT<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

pub async fn delete_hourly_window(
    tx: &mut sqlx::Transaction<'_, Db>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM warehouse_metering_hourly WHERE start_time >= $1 AND start_time < $2",
    )
    .bind(from)
    .bind(to)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Deletes the daily rows of the days [from, to), which a load then writes again.
pub async fn delete_daily_window(
    tx: &mut sqlx::Transaction<'_, Db>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM warehouse_daily_usage WHERE usage_date >= $1 AND usage_date < $2")
        .bind(from)
        .bind(to)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Removes the load ledger's marks for the load's window: its days are not loaded completely until
/// `record_loaded_days` marks them again.
pub async fn unmark_loaded_days(
    tx: &mut sqlx::Transaction<'_, Db>,
    load: &MeteringLoad<'_>,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM metering_loads WHERE usage_date >= $1 AND usage_date < $2")
        .bind(load.from)
        .bind(load.to)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Marks every day of the load's window loaded (with its hourly row count), replacing earlier marks.
pub async fn record_loaded_days(
    tx: &mut sqlx::Transaction<'_, Db>,
    load: &MeteringLoad<'_>,
) -> Result<(), StoreError> {
    unmark_loaded_days(tx, load).await?;
    let mut per_day: BTreeMap<NaiveDate, i64> = BTreeMap::new();
    let mut d = load.from;
    while d < load.to {
        per_day.insert(d, 0);
        d = d + chrono::Days::new(1);
    }
    for r in load.hourly {
        if let Some(n) = per_day.get_mut(&r.start_time.date_naive()) {
            *n += 1;
        }
    }
    let now = snowpatrol_store::now();
    let days: Vec<(NaiveDate, i64)> = per_day.into_iter().collect();
    for chunk in days.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO metering_loads (usage_date, hourly_rows, loaded_by_run_id, loaded_at) ",
        );
        qb.push_values(chunk, |mut b, (day, n)| {
            b.push_bind(*day)
                .push_bind(*n)
                .push_bind(load.run_id)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    // Freshness per account moves forward only: reloading an older window (a healed gap) must not
    // make the data look staler than it is.
    let mut newest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for r in load.hourly {
        let at = newest
            .entry(r.account_name.as_str())
            .or_insert(r.start_time);
        *at = (*at).max(r.start_time);
    }
    for (account, hour) in newest {
        sqlx::query(
            "INSERT INTO metering_freshness (account_name, newest_hour, loaded_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_name) DO UPDATE SET loaded_at = excluded.loaded_at, \
               newest_hour = CASE WHEN excluded.newest_hour > metering_freshness.newest_hour \
                                  THEN excluded.newest_hour ELSE metering_freshness.newest_hour END",
        )
        .bind(account)
        .bind(hour)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn last_loaded_day(pool: &PoolT) -> Result<Option<NaiveDate>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT max(usage_date) FROM metering_loads")
            .fetch_one(pool)
            .await?,
    )
}

pub async fn loaded_days(
    pool: &PoolT,
    since: NaiveDate,
) -> Result<BTreeSet<NaiveDate>, StoreError> {
    let days: Vec<NaiveDate> =
        sqlx::query_scalar("SELECT usage_date FROM metering_loads WHERE usage_date >= $1")
            .bind(since)
            .fetch_all(pool)
            .await?;
    Ok(days.into_iter().collect())
}

/// SQLite's hourly load (PostgreSQL uses COPY).
#[allow(dead_code)]
pub async fn insert_hourly_batched(
    tx: &mut sqlx::Transaction<'_, Db>,
    rows: &[MeteringRow],
    run_id: Option<i64>,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(2000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, \
             start_time, end_time, \
             credits_used, credits_used_compute, credits_used_cloud_services, loaded_by_run_id) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(r.account_name.as_str())
                .push_bind(r.warehouse_id)
                .push_bind(r.warehouse_name.as_str())
                .push_bind(r.service_type.as_str())
                .push_bind(r.start_time)
                .push_bind(r.end_time)
                .push_bind(r.credits_used)
                .push_bind(r.credits_used_compute)
                .push_bind(r.credits_used_cloud_services)
                .push_bind(run_id);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn upsert_features(
    pool: &PoolT,
    rows: &[FeatureRow],
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    upsert_features_in(&mut tx, rows).await?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn upsert_features_in(
    tx: &mut sqlx::Transaction<'_, Db>,
    rows: &[FeatureRow],
) -> Result<(), StoreError> {
    let now = snowpatrol_store::now();
    for chunk in rows.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO warehouse_daily_usage (account_name, warehouse_name, usage_date, credits_used, \
             credits_used_compute, \
             credits_used_cloud_services, hours_active, peak_hourly_credits, trend, seasonal, residual, updated_at) ",
        );
        qb.push_values(chunk, |mut b, f| {
            let u = &f.usage;
            b.push_bind(u.key.account_name.as_str())
                .push_bind(u.key.warehouse_name.as_str())
                .push_bind(u.date)
                .push_bind(u.credits)
                .push_bind(u.credits_compute)
                .push_bind(u.credits_cloud_services)
                .push_bind(u.hours_active)
                .push_bind(u.peak_hourly_credits)
                .push_bind(f.trend)
                .push_bind(f.seasonal)
                .push_bind(f.residual)
                .push_bind(now);
        });
        qb.push(
            " ON CONFLICT (account_name, warehouse_name, usage_date) DO UPDATE SET \
             credits_used = excluded.credits_used, \
             credits_used_compute = excluded.credits_used_compute, \
             credits_used_cloud_services = excluded.credits_used_cloud_services, \
             hours_active = excluded.hours_active, \
             peak_hourly_credits = excluded.peak_hourly_credits, \
             trend = excluded.trend, seasonal = excluded.seasonal, residual = excluded.residual, \
             updated_at = excluded.updated_at",
        );
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn usage_from_row(r: &RowT) -> Result<DailyUsage, StoreError> {
    Ok(DailyUsage {
        key: WarehouseKey::new(
            r.try_get::<String, _>("account_name")?,
            r.try_get::<String, _>("warehouse_name")?,
        ),
        date: r.try_get("usage_date")?,
        credits: r.try_get("credits_used")?,
        credits_compute: r.try_get("credits_used_compute")?,
        credits_cloud_services: r.try_get("credits_used_cloud_services")?,
        hours_active: r.try_get("hours_active")?,
        peak_hourly_credits: r.try_get("peak_hourly_credits")?,
    })
}

pub async fn load_daily(
    pool: &PoolT,
    key: Option<&WarehouseKey>,
) -> Result<Vec<DailyUsage>, StoreError> {
    let mut qb = sqlx::QueryBuilder::<Db>::new(
        "SELECT account_name, warehouse_name, usage_date, credits_used, credits_used_compute, \
         credits_used_cloud_services, \
         hours_active, peak_hourly_credits FROM warehouse_daily_usage WHERE 1 = 1",
    );
    if let Some(k) = key {
        qb.push(" AND account_name = ")
            .push_bind(k.account_name.clone());
        qb.push(" AND warehouse_name = ")
            .push_bind(k.warehouse_name.clone());
    }
    qb.push(" ORDER BY account_name, warehouse_name, usage_date");
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(usage_from_row).collect()
}

pub async fn daily_range(pool: &PoolT) -> Result<Option<(NaiveDate, NaiveDate)>, StoreError> {
    let row = sqlx::query(
        "SELECT min(usage_date) AS lo, max(usage_date) AS hi FROM warehouse_daily_usage",
    )
    .fetch_one(pool)
    .await?;
    let lo: Option<NaiveDate> = row.try_get("lo")?;
    let hi: Option<NaiveDate> = row.try_get("hi")?;
    Ok(lo.zip(hi))
}

pub async fn warehouses(pool: &PoolT, with_model: bool) -> Result<Vec<WarehouseKey>, StoreError> {
    let sql = if with_model {
        "SELECT DISTINCT account_name, warehouse_name FROM model_aliases WHERE alias = 'latest' ORDER BY \
         account_name, warehouse_name"
    } else {
        "SELECT DISTINCT account_name, warehouse_name FROM warehouse_daily_usage ORDER BY account_name, warehouse_name"
    };
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(WarehouseKey::new(
                r.try_get::<String, _>(0)?,
                r.try_get::<String, _>(1)?,
            ))
        })
        .collect()
}

pub async fn model_by_alias(
    pool: &PoolT,
    key: &WarehouseKey,
    alias: &str,
) -> Result<Option<ModelRow>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MODEL_COLUMNS}, a.alias AS aliases FROM model_aliases a JOIN models m ON m.model_id = a.model_id \
         WHERE a.account_name = $1 AND a.warehouse_name = $2 AND a.alias = $3"
    )))
    .bind(&key.account_name)
    .bind(&key.warehouse_name)
    .bind(alias)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

pub async fn register_model(
    pool: &PoolT,
    m: &NewModel,
    fence: Option<&TaskFence>,
) -> Result<ModelRegistration, StoreError> {
    let now = snowpatrol_store::now();
    let mut tx = pool.begin_with(BEGIN).await?;
    // One version per (training run, warehouse): a retried or stale try of the same run gets the
    // version the first try registered (the unique index `models_once_per_run` backs this up).
    if let Some(run_id) = m.training_run_id
        && let Some((model_id, version)) = model_of_run(&mut tx, run_id, &m.key).await?
    {
        return Ok(ModelRegistration {
            model_id,
            version,
            created: false,
        });
    }
    let version: i32 = sqlx::query_scalar(
        "SELECT CAST(coalesce(max(version), 0) + 1 AS INTEGER) FROM models WHERE account_name = $1 AND \
         warehouse_name = $2",
    )
    .bind(&m.key.account_name)
    .bind(&m.key.warehouse_name)
    .fetch_one(&mut *tx)
    .await?;
    let id = insert_model(&mut tx, m, version, now).await?;
    sqlx::query(
        "INSERT INTO model_aliases (account_name, warehouse_name, alias, model_id, updated_at) \
         VALUES ($1, $2, 'latest', $3, $4) \
         ON CONFLICT (account_name, warehouse_name, alias) \
         DO UPDATE SET model_id = excluded.model_id, updated_at = excluded.updated_at",
    )
    .bind(&m.key.account_name)
    .bind(&m.key.warehouse_name)
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(ModelRegistration {
        model_id: id,
        version,
        created: true,
    })
}

/// The model (id, version) training run `run_id` registered for the warehouse, if it did.
async fn model_of_run(
    tx: &mut sqlx::Transaction<'_, Db>,
    run_id: i64,
    key: &WarehouseKey,
) -> Result<Option<(i64, i32)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT model_id, version FROM models WHERE training_run_id = $1 AND account_name = $2 AND \
         warehouse_name = $3 \
         AND duplicate_of_model_id IS NULL",
    )
    .bind(run_id)
    .bind(&key.account_name)
    .bind(&key.warehouse_name)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Inserts `m` as `version` of its warehouse's models; returns its id.
async fn insert_model(
    tx: &mut sqlx::Transaction<'_, Db>,
    m: &NewModel,
    version: i32,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO models (account_name, warehouse_name, version, model_kind, params, threshold, training_start, \
         training_end, \
         metrics, drift, model, training_run_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
          $12, $13) RETURNING model_id",
    )
    .bind(&m.key.account_name)
    .bind(&m.key.warehouse_name)
    .bind(version)
    .bind(&m.model_kind)
    .bind(Json(&m.params))
    .bind(m.threshold)
    .bind(m.training_start)
    .bind(m.training_end)
    .bind(Json(&m.metrics))
    .bind(Json(&m.drift))
    .bind(Json(&m.model))
    .bind(m.training_run_id)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?)
}

pub async fn list_models(
    pool: &PoolT,
    warehouse: Option<&str>,
) -> Result<Vec<ModelRow>, StoreError> {
    let mut qb = sqlx::QueryBuilder::<Db>::new(format!(
        "SELECT {MODEL_COLUMNS}, coalesce((SELECT min(a.alias) FROM model_aliases a WHERE a.model_id = m.model_id), '') AS aliases \
         FROM models m WHERE 1 = 1"
    ));
    if let Some(w) = warehouse {
        qb.push(" AND (m.warehouse_name = ")
            .push_bind(w.to_string());
        qb.push(" OR m.account_name || '.' || m.warehouse_name = ")
            .push_bind(w.to_string())
            .push(")");
    }
    qb.push(" ORDER BY m.account_name, m.warehouse_name, m.version");
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}

async fn incident_in_tx(
    tx: &mut sqlx::Transaction<'_, Db>,
    id: i64,
) -> Result<IncidentRow, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.incident_id = $1"
    )))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    decode_row(&row)
}

/// Recomputes an incident from its days (range, count, totals, cost, peak), reopens it when it grew at
/// its end after being resolved, and mirrors its start day and acknowledgement onto its days.
async fn refresh_incident(
    tx: &mut sqlx::Transaction<'_, Db>,
    id: i64,
    price: Option<f64>,
    grew: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE incidents SET \
           start_day = (SELECT min(usage_date) FROM anomalies WHERE incident_id = $1), \
           end_day = (SELECT max(usage_date) FROM anomalies WHERE incident_id = $1), \
           days = (SELECT count(*) FROM anomalies WHERE incident_id = $1), \
           excess_credits = (SELECT sum(excess_credits) FROM anomalies WHERE incident_id = $1), \
           excess_cost = (SELECT sum(excess_credits) FROM anomalies WHERE incident_id = $1) * $2, \
           peak_score = (SELECT max(score) FROM anomalies WHERE incident_id = $1), \
           updated_at = $3 \
         WHERE incident_id = $1",
    )
    .bind(id)
    .bind(price)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if grew {
        sqlx::query(
            "UPDATE incidents SET status = 'open', resolved_at = NULL \
             WHERE incident_id = $1 AND status = 'resolved'",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    let inc = incident_in_tx(tx, id).await?;
    sqlx::query(
        "UPDATE anomalies SET incident_start = $1 WHERE incident_id = $2 AND incident_start <> $1",
    )
    .bind(inc.start_day)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if inc.status == IncidentStatus::Acknowledged {
        sqlx::query(
            "UPDATE anomalies SET acknowledged_at = $1, ack_reason = $2 WHERE incident_id = $3 AND \
                     acknowledged_at IS NULL",
        )
        .bind(inc.acknowledged_at)
        .bind(inc.ack_reason.map(|r| r.as_str()))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Moves the days of `other` to `keep` and deletes `other`. The merged incident is acknowledged when
/// either was, with the earlier acknowledgement (time, reason, who).
async fn merge_incidents(
    tx: &mut sqlx::Transaction<'_, Db>,
    keep: i64,
    other: i64,
) -> Result<(), StoreError> {
    let (k, o) = (
        incident_in_tx(tx, keep).await?,
        incident_in_tx(tx, other).await?,
    );
    let take_ack = o.status == IncidentStatus::Acknowledged
        && (k.status != IncidentStatus::Acknowledged || o.acknowledged_at < k.acknowledged_at);
    if take_ack {
        sqlx::query(
            "UPDATE incidents SET status = 'acknowledged', ack_reason = $1, acknowledged_at = $2, \
                     acknowledged_by = $3 WHERE incident_id = $4",
        )
        .bind(o.ack_reason.map(|r| r.as_str()))
        .bind(o.acknowledged_at)
        .bind(o.acknowledged_by.as_deref())
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    }
    if o.status == IncidentStatus::Open && k.status == IncidentStatus::Resolved {
        sqlx::query(
            "UPDATE incidents SET status = 'open', resolved_at = NULL WHERE incident_id = $1",
        )
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    }
    // Announced when either was: the merged incident is not news.
    if k.alert_id.is_none() && o.alert_id.is_some() {
        sqlx::query("UPDATE incidents SET alert_id = $1 WHERE incident_id = $2")
            .bind(o.alert_id)
            .bind(keep)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE anomalies SET incident_id = $1 WHERE incident_id = $2")
        .bind(keep)
        .bind(other)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM incidents WHERE incident_id = $1")
        .bind(other)
        .execute(&mut **tx)
        .await?;
    widen_incident(tx, keep, o.start_day).await?;
    widen_incident(tx, keep, o.end_day).await
}

/// Stretches an incident's range to cover `day`, so later days of the same batch find it as their
/// neighbour; its totals are recomputed once per batch by `refresh_incident`.
async fn widen_incident(
    tx: &mut sqlx::Transaction<'_, Db>,
    id: i64,
    day: NaiveDate,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE incidents SET start_day = CASE WHEN $2 < start_day THEN $2 ELSE start_day END, \
         end_day = CASE WHEN $2 > end_day THEN $2 ELSE end_day END WHERE incident_id = $1",
    )
    .bind(id)
    .bind(day)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records flagged days: a day flagged before is updated in place (model, run, scores, scored_at); a
/// new day joins the incident of an adjacent day (merging two incidents it bridges) or starts one.
/// Incident totals are recomputed once per touched incident at the end of the batch (predict re-scores
/// the same days on every run); everything commits in one transaction. `WAREHOUSE_LOCK` (PostgreSQL)
/// serializes writers per warehouse so two predict runs cannot split one incident.
pub async fn upsert_anomalies(
    pool: &PoolT,
    rows: &[NewAnomaly],
    price: Option<f64>,
    fence: Option<&TaskFence>,
) -> Result<AnomalyUpsert, StoreError> {
    let mut out = AnomalyUpsert::default();
    if rows.is_empty() {
        return Ok(out);
    }
    let now = snowpatrol_store::now();
    let mut sorted: Vec<&NewAnomaly> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.key, a.day.date).cmp(&(&b.key, b.day.date)));
    let mut tx = pool.begin_with(BEGIN).await?;
    let mut locked: BTreeSet<&WarehouseKey> = BTreeSet::new();
    // Incident id -> whether it grew at its end (a resolved one is then reopened).
    let mut touched: BTreeMap<i64, bool> = BTreeMap::new();
    for a in sorted {
        if let Some(lock) = WAREHOUSE_LOCK
            && locked.insert(&a.key)
        {
            sqlx::query(lock)
                .bind(&a.key.account_name)
                .bind(&a.key.warehouse_name)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(incident_id) = incident_of_flagged_day(&mut tx, a).await? {
            rescore_anomaly(&mut tx, a, now).await?;
            touched.entry(incident_id).or_insert(false);
            out.rescored_days += 1;
            continue;
        }
        let (incident_id, grew_at_end) =
            incident_for_new_day(&mut tx, a, price, now, &mut touched, &mut out).await?;
        insert_anomaly(&mut tx, a, incident_id, now).await?;
        *touched.entry(incident_id).or_insert(false) |= grew_at_end;
        out.new_days += 1;
    }
    for (id, grew) in touched {
        refresh_incident(&mut tx, id, price, grew, now).await?;
    }
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(out)
}

/// The incident of the day `a` flags when that day was flagged before.
async fn incident_of_flagged_day(
    tx: &mut sqlx::Transaction<'_, Db>,
    a: &NewAnomaly,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT incident_id FROM anomalies WHERE account_name = $1 AND warehouse_name = $2 AND usage_date = $3",
    )
    .bind(&a.key.account_name)
    .bind(&a.key.warehouse_name)
    .bind(a.day.date)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Updates a day flagged before in place: model, run, scores, scored_at.
async fn rescore_anomaly(
    tx: &mut sqlx::Transaction<'_, Db>,
    a: &NewAnomaly,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    bind_scoring(
        sqlx::query(
            "UPDATE anomalies SET model_id = $1, model_version = $2, run_id = $3, actual_credits = $4, \
             expected_credits = $5, \
             excess_credits = $6, score = $7, threshold = $8, explanation = $9, scored_at = $10 \
             WHERE account_name = $11 AND warehouse_name = $12 AND usage_date = $13",
        ),
        a,
        now,
    )
    .bind(&a.key.account_name)
    .bind(&a.key.warehouse_name)
    .bind(a.day.date)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Binds what a scoring run says about flagged day `a` as `$1`..`$10`: model id and version, run,
/// actual, expected and excess credits, score, threshold, explanation, and `now` (when it was scored).
/// Rescoring a day and inserting a new one write the same columns from the same place.
fn bind_scoring<'q>(query: QueryT<'q>, a: &NewAnomaly, now: DateTime<Utc>) -> QueryT<'q> {
    query
        .bind(a.model_id)
        .bind(a.model_version)
        .bind(a.run_id)
        .bind(a.day.actual_credits)
        .bind(a.day.expected_credits)
        .bind(a.day.excess_credits)
        .bind(a.day.score)
        .bind(a.day.threshold)
        .bind(&a.day.explanation)
        .bind(now)
}

/// The incident a newly flagged day joins: the incident of an adjacent day (merged with the other one when
/// the day bridges two), or a new one. Also returns whether the day extends that incident at its end. A merged
/// incident's entry in `touched` passes to the incident kept; `out` counts what happened.
async fn incident_for_new_day(
    tx: &mut sqlx::Transaction<'_, Db>,
    a: &NewAnomaly,
    price: Option<f64>,
    now: DateTime<Utc>,
    touched: &mut BTreeMap<i64, bool>,
    out: &mut AnomalyUpsert,
) -> Result<(i64, bool), StoreError> {
    // Every day between an incident's start and end is one of its days, so a new day is in no
    // incident; at most two touch it: one ending the day before and one starting the day after.
    let neighbours: Vec<(i64, NaiveDate)> = sqlx::query_as(
        "SELECT incident_id, end_day FROM incidents WHERE account_name = $1 AND warehouse_name = $2 \
         AND end_day >= $3 AND start_day <= $4 ORDER BY start_day",
    )
    .bind(&a.key.account_name)
    .bind(&a.key.warehouse_name)
    .bind(a.day.date - chrono::Days::new(1))
    .bind(a.day.date + chrono::Days::new(1))
    .fetch_all(&mut **tx)
    .await?;
    // A resolved incident that grows at its end is going on after all: it is reopened.
    let grew_at_end = neighbours.last().is_some_and(|(_, end)| a.day.date > *end);
    let incident_id = match neighbours.split_first() {
        None => {
            out.new_incidents += 1;
            open_incident(tx, a, price, now).await?
        }
        Some((&(keep, _), others)) => {
            out.extended_incidents += 1;
            for &(other, _) in others {
                merge_incidents(tx, keep, other).await?;
                out.merged_incidents += 1;
                if touched.remove(&other) == Some(true) {
                    touched.insert(keep, true);
                }
            }
            widen_incident(tx, keep, a.day.date).await?;
            keep
        }
    };
    Ok((incident_id, grew_at_end))
}

/// Starts an open incident of the one day `a` flags; returns its id.
async fn open_incident(
    tx: &mut sqlx::Transaction<'_, Db>,
    a: &NewAnomaly,
    price: Option<f64>,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO incidents (account_name, warehouse_name, start_day, end_day, days, excess_credits, \
         excess_cost, \
         peak_score, status, created_at, updated_at) VALUES ($1, $2, $3, $3, 1, $4, $5, $6, 'open', $7, \
          $7) RETURNING incident_id",
    )
    .bind(&a.key.account_name)
    .bind(&a.key.warehouse_name)
    .bind(a.day.date)
    .bind(a.day.excess_credits)
    .bind(price.map(|p| p * a.day.excess_credits))
    .bind(a.day.score)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?)
}

/// Inserts a newly flagged day as one of the days of `incident_id`.
async fn insert_anomaly(
    tx: &mut sqlx::Transaction<'_, Db>,
    a: &NewAnomaly,
    incident_id: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    bind_scoring(
        sqlx::query(
            "INSERT INTO anomalies (model_id, model_version, run_id, actual_credits, expected_credits, \
             excess_credits, score, threshold, explanation, scored_at, detected_at, account_name, \
             warehouse_name, usage_date, incident_start, incident_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $13, $14)",
        ),
        a,
        now,
    )
    .bind(&a.key.account_name)
    .bind(&a.key.warehouse_name)
    .bind(a.day.date)
    .bind(incident_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks `resolved` the open incidents of a warehouse that end before `newest_scored_day`: a later
/// day was scored and the incident did not grow into it.
pub async fn resolve_incidents(
    pool: &PoolT,
    key: &WarehouseKey,
    newest_scored_day: NaiveDate,
    fence: Option<&TaskFence>,
) -> Result<u64, StoreError> {
    let now = snowpatrol_store::now();
    let mut tx = pool.begin_with(BEGIN).await?;
    let n = sqlx::query(
        "UPDATE incidents SET status = 'resolved', resolved_at = $1, updated_at = $1 \
         WHERE account_name = $2 AND warehouse_name = $3 AND status = 'open' AND end_day < $4",
    )
    .bind(now)
    .bind(&key.account_name)
    .bind(&key.warehouse_name)
    .bind(newest_scored_day)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(n)
}

fn push_filter(qb: &mut sqlx::QueryBuilder<Db>, f: &IncidentFilter, day_column: &str) {
    if let Some(since) = f.since {
        qb.push(format_args!(" AND {day_column} >= "))
            .push_bind(since);
    }
    if let Some(w) = &f.warehouse {
        qb.push(" AND (i.warehouse_name = ").push_bind(w.clone());
        qb.push(" OR i.account_name || '.' || i.warehouse_name = ")
            .push_bind(w.clone())
            .push(")");
    }
    if !f.statuses.is_empty() {
        qb.push(" AND i.status IN (");
        let mut list = qb.separated(", ");
        for st in &f.statuses {
            list.push_bind(st.as_str());
        }
        list.push_unseparated(")");
    }
    if !f.incident_ids.is_empty() {
        qb.push(" AND i.incident_id IN (");
        let mut list = qb.separated(", ");
        for id in &f.incident_ids {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
    }
}

pub async fn list_incidents(
    pool: &PoolT,
    f: &IncidentFilter,
) -> Result<Vec<IncidentRow>, StoreError> {
    let select = format!("SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE 1 = 1");
    filtered(
        pool,
        select,
        f,
        "i.end_day",
        "i.account_name, i.warehouse_name, i.start_day",
    )
    .await
}

pub async fn list_anomalies(
    pool: &PoolT,
    f: &IncidentFilter,
) -> Result<Vec<AnomalyRow>, StoreError> {
    let select = format!(
        "SELECT {ANOMALY_COLUMNS} FROM anomalies a JOIN incidents i ON i.incident_id = a.incident_id WHERE 1 = 1"
    );
    filtered(
        pool,
        select,
        f,
        "a.usage_date",
        "a.account_name, a.warehouse_name, a.usage_date",
    )
    .await
}

/// Rows of `select` (which ends in a `WHERE` clause) narrowed by an [`IncidentFilter`] on `day_column`, in
/// `order`.
async fn filtered<T>(
    pool: &PoolT,
    select: String,
    f: &IncidentFilter,
    day_column: &str,
    order: &str,
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> sqlx::FromRow<'r, <Db as sqlx::Database>::Row>,
{
    let mut qb = sqlx::QueryBuilder::<Db>::new(select);
    push_filter(&mut qb, f, day_column);
    qb.push(" ORDER BY ").push(order);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}

pub async fn anomalies_since(
    pool: &PoolT,
    since: NaiveDate,
    key: Option<&WarehouseKey>,
) -> Result<Vec<AnomalyRow>, StoreError> {
    let mut qb = sqlx::QueryBuilder::<Db>::new(format!(
        "SELECT {ANOMALY_COLUMNS} FROM anomalies a WHERE a.usage_date >= "
    ));
    qb.push_bind(since);
    if let Some(k) = key {
        qb.push(" AND a.account_name = ")
            .push_bind(k.account_name.clone());
        qb.push(" AND a.warehouse_name = ")
            .push_bind(k.warehouse_name.clone());
    }
    qb.push(" ORDER BY a.account_name, a.warehouse_name, a.usage_date");
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}

pub async fn incident(pool: &PoolT, id: i64) -> Result<Option<IncidentRow>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE i.incident_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

/// Acknowledges an incident and every one of its days (acking again overwrites the reason).
pub async fn ack_incident(
    pool: &PoolT,
    id: i64,
    reason: AckReason,
    by: Option<&str>,
) -> Result<bool, StoreError> {
    let now = snowpatrol_store::now();
    let mut tx = pool.begin_with(BEGIN).await?;
    let n = sqlx::query(
        "UPDATE incidents SET status = 'acknowledged', ack_reason = $1, acknowledged_at = $2, acknowledged_by = $3, \
         updated_at = $2 \
         WHERE incident_id = $4",
    )
    .bind(reason.as_str())
    .bind(now)
    .bind(by)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE anomalies SET acknowledged_at = $1, ack_reason = $2 WHERE incident_id = $3",
    )
    .bind(now)
    .bind(reason.as_str())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// Acknowledges the incident of an anomalous day; returns that incident's id.
pub async fn ack_anomaly(
    pool: &PoolT,
    anomaly_id: i64,
    reason: AckReason,
    by: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let incident: Option<i64> =
        sqlx::query_scalar("SELECT incident_id FROM anomalies WHERE anomaly_id = $1")
            .bind(anomaly_id)
            .fetch_optional(pool)
            .await?;
    match incident {
        Some(id) if ack_incident(pool, id, reason, by).await? => Ok(Some(id)),
        _ => Ok(None),
    }
}

pub async fn save_report(
    pool: &PoolT,
    run_id: i64,
    markdown: &str,
    path: &str,
    anomalies: i32,
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    sqlx::query(
        "INSERT INTO reports (run_id, markdown, path, anomalies, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (run_id) \
         DO UPDATE SET markdown = excluded.markdown, path = excluded.path, anomalies = excluded.anomalies",
    )
    .bind(run_id)
    .bind(markdown)
    .bind(path)
    .bind(anomalies)
    .bind(snowpatrol_store::now())
    .execute(&mut *tx)
    .await?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn report_markdown(
    pool: &PoolT,
    run_id: i64,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query("SELECT markdown, path FROM reports WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// Enqueues an alert (`pending`, due now). `None` when an alert with this dedupe key exists already (it
/// was sent, or is queued or being sent): one alert per key, ever.
pub async fn insert_alert(
    pool: &PoolT,
    dedupe_key: &str,
    kind: AlertKind,
    run_id: Option<i64>,
    channel: &str,
    message: &serde_json::Value,
    fence: Option<&TaskFence>,
) -> Result<Option<i64>, StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    let id = insert_alert_in(&mut tx, dedupe_key, kind, run_id, channel, message).await?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(id)
}

/// [`insert_alert`] within the caller's transaction (a digest is queued with its replies and marks).
async fn insert_alert_in(
    tx: &mut sqlx::Transaction<'_, Db>,
    dedupe_key: &str,
    kind: AlertKind,
    run_id: Option<i64>,
    channel: &str,
    message: &serde_json::Value,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(INSERT_ALERT)
        .bind(dedupe_key)
        .bind(kind)
        .bind(run_id)
        .bind(channel)
        .bind(Json(message))
        .bind(snowpatrol_store::now())
        .fetch_optional(&mut **tx)
        .await?)
}

/// Queues a run's digests (one per channel) with their replies and marks the incidents they announce, in
/// one fenced transaction: an incident is announced (`incidents.alert_id`) by the first digest naming
/// it. `Ok(vec![])` when the first digest was queued before (a retried try queues nothing);
/// [`StoreError::Conflict`] when another run announced one of the incidents meanwhile (nothing is
/// written; the caller's retry recomputes the list).
pub async fn enqueue_digests(
    pool: &PoolT,
    kind: AlertKind,
    run_id: Option<i64>,
    digests: &[QueuedDigest],
    fence: Option<&TaskFence>,
) -> Result<Vec<i64>, StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    let mut ids = Vec::new();
    let mut wanted = BTreeSet::new();
    let mut marked = 0;
    for d in digests {
        let id =
            insert_alert_in(&mut tx, &d.dedupe_key, kind, run_id, &d.channel, &d.message).await?;
        let Some(id) = id else {
            // Queued by an earlier try of this run: all of its digests were, in one transaction.
            tx.rollback().await?;
            return Ok(Vec::new());
        };
        ids.push(id);
        wanted.extend(d.incident_ids.iter().copied());
        marked += mark_announced(&mut tx, id, &d.incident_ids).await?;
        for r in &d.replies {
            insert_reply(&mut tx, kind, run_id, &d.channel, id, r).await?;
        }
    }
    if marked != wanted.len() as u64 {
        tx.rollback().await?;
        return Err(StoreError::Conflict(format!(
            "{} of the {} incidents of run {run_id:?}'s digests were announced by another alert meanwhile",
            wanted.len() as u64 - marked,
            wanted.len()
        )));
    }
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(ids)
}

/// Marks the incidents no alert announced yet as announced by `alert_id`; returns how many it marked.
async fn mark_announced(
    tx: &mut sqlx::Transaction<'_, Db>,
    alert_id: i64,
    incident_ids: &[i64],
) -> Result<u64, StoreError> {
    let mut marked = 0;
    // Chunked: both backends cap the number of bind parameters of one statement.
    for chunk in incident_ids.chunks(1000) {
        let mut qb = sqlx::QueryBuilder::<Db>::new("UPDATE incidents SET alert_id = ");
        qb.push_bind(alert_id);
        qb.push(" WHERE alert_id IS NULL AND incident_id IN (");
        let mut list = qb.separated(", ");
        for i in chunk {
            list.push_bind(*i);
        }
        qb.push(")");
        marked += qb.build().execute(&mut **tx).await?.rows_affected();
    }
    Ok(marked)
}

/// Queues a reply in the thread of digest `parent_id` (`pending`, due now), with its file when it has one.
async fn insert_reply(
    tx: &mut sqlx::Transaction<'_, Db>,
    kind: AlertKind,
    run_id: Option<i64>,
    channel: &str,
    parent_id: i64,
    r: &DigestReply,
) -> Result<(), StoreError> {
    let (name, bytes) = match &r.attachment {
        Some((n, b)) => (Some(n.as_str()), Some(b.as_slice())),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO alerts (dedupe_key, kind, run_id, channel, message, state, attempts, created_at, \
         thread_of, attachment, attachment_name) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8, $9)",
    )
    .bind(&r.dedupe_key)
    .bind(kind)
    .bind(run_id)
    .bind(channel)
    .bind(Json(&r.message))
    .bind(snowpatrol_store::now())
    .bind(parent_id)
    .bind(bytes)
    .bind(name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The file a reply uploads, by alert id.
pub async fn alert_attachment(
    pool: &PoolT,
    id: i64,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    let row: Option<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT attachment_name, attachment FROM alerts WHERE alert_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(n, b)| Some((n.unwrap_or_else(|| format!("alert-{id}")), b?))))
}

/// Records the end of an attempt on a row `sender` claimed. False when the claim was lost meanwhile (it
/// expired and another sender took the row over): then nothing is written, the other sender decides.
pub async fn finish_alert_attempt(
    pool: &PoolT,
    id: i64,
    sender: &str,
    a: &AlertAttempt,
) -> Result<bool, StoreError> {
    let now = snowpatrol_store::now();
    let sent = matches!(a.state, AlertState::Sent | AlertState::Written).then_some(now);
    let done = sqlx::query(
        "UPDATE alerts SET state = $1, attempts = attempts + $2, last_error = $3, slack_ts = COALESCE($4, slack_ts), \
           attachment = CASE WHEN $1 IN ('sent', 'written') THEN NULL ELSE attachment END, \
           sent_at = $5, next_attempt_at = $6, outcome_unknown = $7, claimed_by = NULL, claim_expires_at = NULL \
         WHERE alert_id = $8 AND state = 'sending' AND claimed_by = $9",
    )
    .bind(a.state.as_str())
    .bind(a.counted)
    .bind(a.error.as_deref())
    .bind(a.slack_ts.as_deref())
    .bind(sent)
    .bind(a.next_attempt_at)
    .bind(a.outcome_unknown)
    .bind(id)
    .bind(sender)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims up to `limit` alerts for `sender` until `expires`: `pending` rows that are due, and `sending`
/// rows whose claim expired (their sender died mid-attempt: that attempt is counted and its outcome is
/// unknown, so the new sender looks in Slack's history before posting). The claim is a state change
/// (rows locked with SKIP LOCKED on PostgreSQL), so two senders never hold the same row. A row a replica of
/// the previous release claimed during a rolling upgrade has no `claim_expires_at`: its old 10-minute
/// rule applies.
pub async fn claim_alerts(
    pool: &PoolT,
    sender: &str,
    expires: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<AlertRow>, StoreError> {
    let now = snowpatrol_store::now();
    let mut tx = pool.begin_with(BEGIN).await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "UPDATE alerts SET state = 'sending', claimed_by = $1, claimed_at = $2, claim_expires_at = $3, \
           first_attempt_at = COALESCE(first_attempt_at, $2), \
           attempts = attempts + CASE WHEN state = 'sending' THEN 1 ELSE 0 END, \
           outcome_unknown = (outcome_unknown OR state = 'sending') \
         WHERE alert_id IN (\
           SELECT alert_id FROM alerts \
           WHERE ((state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)) \
              OR (state = 'sending' AND claim_expires_at < $2) \
              OR (state = 'sending' AND claim_expires_at IS NULL AND claimed_at < $5)) \
             AND {PARENT_DONE} \
           ORDER BY alert_id LIMIT $4 {SKIP_LOCKED}) \
         RETURNING {ALERT_COLUMNS}"
    )))
    .bind(sender)
    .bind(now)
    .bind(expires)
    .bind(limit)
    .bind(now - LEGACY_CLAIM)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut rows = rows
        .iter()
        .map(decode_row)
        .collect::<Result<Vec<AlertRow>, _>>()?;
    rows.sort_by_key(|a| a.alert_id);
    Ok(rows)
}

/// When the next undelivered alert becomes due: the earliest `next_attempt_at` of a pending row (its
/// creation when due now) or claim expiry of a sending row; None when nothing is undelivered.
pub async fn next_alert_due(pool: &PoolT) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT min(CASE WHEN state = 'pending' THEN COALESCE(next_attempt_at, created_at) ELSE claim_expires_at END) \
         FROM alerts WHERE state IN ('pending', 'sending') AND {PARENT_DONE}",
    )))
    .fetch_one(pool)
    .await?)
}

/// What a metrics scrape reads from the pipeline's tables: the outbox's undelivered and failed rows,
/// open incidents and data freshness, each through a partial index or a table of one row per account.
pub async fn scrape_gauges(pool: &PoolT) -> Result<ScrapeGauges, StoreError> {
    let mut g = ScrapeGauges::default();
    for r in sqlx::query(
        "SELECT state, count(*), min(created_at) FROM alerts WHERE state IN ('pending', 'sending') \
                          GROUP BY state",
    )
    .fetch_all(pool)
    .await?
    {
        g.outbox.push((parse_state(r.try_get(0)?)?, r.try_get(1)?));
        let oldest: Option<DateTime<Utc>> = r.try_get(2)?;
        g.oldest_undelivered = match (g.oldest_undelivered, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts WHERE state = 'failed'")
        .fetch_one(pool)
        .await?;
    g.outbox.push((AlertState::Failed, failed));
    for r in sqlx::query(
        "SELECT account_name, count(*), sum(excess_credits) FROM incidents WHERE status = 'open' GROUP BY account_name",
    )
    .fetch_all(pool)
    .await?
    {
        g.open_incidents.push((r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<f64>, _>(2)?.unwrap_or(0.0)));
    }
    for r in sqlx::query("SELECT account_name, newest_hour, loaded_at FROM metering_freshness")
        .fetch_all(pool)
        .await?
    {
        g.freshness
            .push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
    }
    Ok(g)
}

pub async fn list_alerts(
    pool: &PoolT,
    pending_only: bool,
    limit: i64,
) -> Result<Vec<AlertRow>, StoreError> {
    let filter = if pending_only {
        "WHERE state IN ('pending', 'sending')"
    } else {
        ""
    };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts {filter} ORDER BY alert_id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

pub async fn hourly_credits(
    pool: &PoolT,
    key: &WarehouseKey,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT start_time, sum(credits_used) FROM warehouse_metering_hourly \
         WHERE account_name = $1 AND warehouse_name = $2 AND warehouse_id > 0 AND start_time >= $3 \
         AND start_time < $4 GROUP BY start_time ORDER BY start_time",
    )
    .bind(&key.account_name)
    .bind(&key.warehouse_name)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

/// Writes root causes (one row per warehouse-day; a day looked up again is replaced), fenced.
pub async fn save_root_causes(
    pool: &PoolT,
    rows: &[NewRootCause],
    run_id: Option<i64>,
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    let now = snowpatrol_store::now();
    for r in rows {
        sqlx::query(
            "INSERT INTO root_causes (account_name, warehouse_name, usage_date, summary, detail, looked_up_at, run_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (account_name, warehouse_name, usage_date) DO UPDATE SET summary = excluded.summary, \
             detail = excluded.detail, looked_up_at = excluded.looked_up_at, run_id = excluded.run_id",
        )
        .bind(&r.day.key.account_name)
        .bind(&r.day.key.warehouse_name)
        .bind(r.day.day)
        .bind(&r.summary)
        .bind(Json(&r.cause))
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    }
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

/// Root causes of days in [from, to], of one warehouse or of all.
pub async fn root_causes(
    pool: &PoolT,
    key: Option<&WarehouseKey>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<RootCauseRow>, StoreError> {
    let mut sql = String::from(
        "SELECT account_name, warehouse_name, usage_date, summary, detail, looked_up_at, run_id FROM root_causes \
         WHERE usage_date >= $1 AND usage_date <= $2",
    );
    if key.is_some() {
        sql.push_str(" AND account_name = $3 AND warehouse_name = $4");
    }
    sql.push_str(" ORDER BY account_name, warehouse_name, usage_date");
    let mut q = sqlx::query_as::<_, RootCauseRow>(AssertSqlSafe(sql))
        .bind(from)
        .bind(to);
    if let Some(k) = key {
        q = q.bind(&k.account_name).bind(&k.warehouse_name);
    }
    Ok(q.fetch_all(pool).await?)
}

/// Replaces the tags of each warehouse in `tags` (a warehouse looked up without tags loses its old ones), fenced.
pub async fn replace_warehouse_tags(
    pool: &PoolT,
    looked_up: &[WarehouseKey],
    tags: &BTreeMap<WarehouseKey, BTreeMap<String, String>>,
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    let now = snowpatrol_store::now();
    for key in looked_up {
        sqlx::query("DELETE FROM warehouse_tags WHERE account_name = $1 AND warehouse_name = $2")
            .bind(&key.account_name)
            .bind(&key.warehouse_name)
            .execute(&mut *tx)
            .await?;
        for (name, value) in tags.get(key).into_iter().flatten() {
            sqlx::query(
                "INSERT INTO warehouse_tags (account_name, warehouse_name, tag_name, tag_value, looked_up_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&key.account_name)
            .bind(&key.warehouse_name)
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

/// Every stored warehouse tag, by warehouse.
pub async fn warehouse_tags(
    pool: &PoolT,
) -> Result<BTreeMap<WarehouseKey, BTreeMap<String, String>>, StoreError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT account_name, warehouse_name, tag_name, tag_value FROM warehouse_tags \
         ORDER BY account_name, warehouse_name, tag_name",
    )
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<WarehouseKey, BTreeMap<String, String>> = BTreeMap::new();
    for (account, warehouse, name, value) in rows {
        out.entry(WarehouseKey::new(account, warehouse))
            .or_default()
            .insert(name, value);
    }
    Ok(out)
}

/// Upserts credit rates (a day read again replaces its row), fenced.
pub async fn upsert_credit_rates(
    pool: &PoolT,
    rates: &[CreditRateRow],
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with(BEGIN).await?;
    for r in rates {
        sqlx::query(
            "INSERT INTO credit_rates (account_name, usage_date, currency, credits, amount) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account_name, usage_date) DO UPDATE SET currency = excluded.currency, \
             credits = excluded.credits, amount = excluded.amount",
        )
        .bind(&r.account_name)
        .bind(r.usage_date)
        .bind(&r.currency)
        .bind(r.credits)
        .bind(r.amount)
        .execute(&mut *tx)
        .await?;
    }
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

/// Each account's newest rate on or before `day`.
pub async fn latest_credit_rates(
    pool: &PoolT,
    day: NaiveDate,
) -> Result<Vec<CreditRateRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT r.account_name, r.usage_date, r.currency, r.credits, r.amount FROM credit_rates r \
         WHERE r.usage_date = (SELECT max(x.usage_date) FROM credit_rates x \
                               WHERE x.account_name = r.account_name AND x.usage_date <= $1) \
         ORDER BY r.account_name",
    )
    .bind(day)
    .fetch_all(pool)
    .await?)
}

pub async fn anomaly(pool: &PoolT, id: i64) -> Result<Option<AnomalyRow>, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ANOMALY_COLUMNS} FROM anomalies a WHERE a.anomaly_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_row).transpose()
}

/// Hourly rows of one warehouse in [from, to), by the prep run that loaded them.
pub async fn hourly_loads(
    pool: &PoolT,
    key: &WarehouseKey,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<HourlyLoad>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT loaded_by_run_id AS run_id, count(*) AS hourly_rows, min(start_time) AS first_hour, \
         max(start_time) AS last_hour FROM warehouse_metering_hourly \
         WHERE account_name = $1 AND warehouse_name = $2 AND start_time >= $3 AND start_time < $4 \
         GROUP BY loaded_by_run_id ORDER BY min(start_time)",
    )
    .bind(&key.account_name)
    .bind(&key.warehouse_name)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}
