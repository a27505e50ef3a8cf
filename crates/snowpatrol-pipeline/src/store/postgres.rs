//! PostgreSQL's instance of the pipeline's operations, and its bulk loads with binary COPY.

use super::*;
use sqlx::PgPool;

pub(super) type Db = sqlx::Postgres;
const BEGIN: &str = "BEGIN";
const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";
/// Serializes incident maintenance per warehouse (transaction-scoped advisory lock, two-key form).
const WAREHOUSE_LOCK: Option<&str> =
    Some("SELECT pg_advisory_xact_lock(1936682871, hashtext($1 || '.' || $2))");

#[path = "ops.rs"]
#[allow(
    clippy::duplicate_mod,
    reason = "compiled once per backend on purpose (see the parent module)"
)]
mod ops;
pub(super) use ops::*;

/// The last statement before a task's commit: refuses the whole transaction when the try lost its lease (see
/// [`TaskFence`]). `None`: an operator command or a test, not a task try.
pub(super) async fn check_fence(
    tx: &mut sqlx::Transaction<'_, Db>,
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    match fence {
        Some(f) => f.check_postgres(tx).await,
        None => Ok(()),
    }
}

/// [`PipelineStore::load_metering`]: the hourly and daily loads (binary COPY) run at once on two connections,
/// which saves about a fifth of prep's time against one transaction for both (measured in docs/benchmarks.md).
pub(super) async fn load_metering(
    pool: &PgPool,
    load: &MeteringLoad<'_>,
    fence: Option<&TaskFence>,
) -> Result<u64, StoreError> {
    let (from, to) = (day_start(load.from), day_start(load.to));
    let hourly = async {
        let mut tx = pool.begin().await?;
        unmark_loaded_days(&mut tx, load).await?;
        let deleted = delete_hourly_window(&mut tx, from, to).await?;
        copy_hourly(&mut tx, load.hourly, load.run_id).await?;
        snowpatrol_store::failpoint("prep.load.before_commit")?;
        check_fence(&mut tx, fence).await?;
        tx.commit().await?;
        Ok::<u64, StoreError>(deleted)
    };
    let daily = async {
        let mut tx = pool.begin().await?;
        delete_daily_window(&mut tx, load.from, load.to).await?;
        copy_daily(&mut tx, load.daily).await?;
        check_fence(&mut tx, fence).await?;
        tx.commit().await?;
        Ok::<(), StoreError>(())
    };
    let (hourly, daily) = tokio::join!(hourly, daily);
    let deleted = hourly?;
    daily?;
    snowpatrol_store::failpoint("prep.load.before_ledger")?;
    let mut tx = pool.begin().await?;
    record_loaded_days(&mut tx, load).await?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// [`PipelineStore::replace_daily`]: truncates and loads with binary COPY, an order of magnitude faster than
/// `INSERT ... ON CONFLICT` for a year of a thousand warehouses.
pub(super) async fn replace_daily(
    pool: &PgPool,
    rows: &[FeatureRow],
    fence: Option<&TaskFence>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // TRUNCATE leaves no dead tuples (a daily DELETE of every row would bloat the table) at the
    // price of a brief exclusive lock; the readers, train and predict, run after this task.
    sqlx::query("TRUNCATE warehouse_daily_usage")
        .execute(&mut *tx)
        .await?;
    copy_daily(&mut tx, rows).await?;
    snowpatrol_store::failpoint("prep.features.before_commit")?;
    check_fence(&mut tx, fence).await?;
    tx.commit().await?;
    Ok(())
}

async fn copy_hourly(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[MeteringRow],
    run_id: Option<i64>,
) -> Result<(), StoreError> {
    copy_binary(
        tx,
        "COPY warehouse_metering_hourly (account_name, warehouse_id, warehouse_name, service_type, start_time, \
         end_time, \
         credits_used, credits_used_compute, credits_used_cloud_services, loaded_by_run_id) FROM STDIN WITH \
          (FORMAT binary)",
        rows,
        |enc, r| {
            enc.row(10);
            enc.text(&r.account_name);
            enc.i64(r.warehouse_id);
            enc.text(&r.warehouse_name);
            enc.text(&r.service_type);
            enc.timestamp(r.start_time);
            enc.timestamp(r.end_time);
            enc.f64(r.credits_used);
            enc.f64(r.credits_used_compute);
            enc.f64(r.credits_used_cloud_services);
            enc.opt_i64(run_id);
        },
    )
    .await
}

async fn copy_daily(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[FeatureRow],
) -> Result<(), StoreError> {
    let now = snowpatrol_store::now();
    copy_binary(
        tx,
        "COPY warehouse_daily_usage (account_name, warehouse_name, usage_date, credits_used, credits_used_compute, \
         credits_used_cloud_services, hours_active, peak_hourly_credits, trend, seasonal, residual, updated_at) \
         FROM STDIN WITH (FORMAT binary)",
        rows,
        |enc, f| {
            let u = &f.usage;
            enc.row(12);
            enc.text(&u.key.account_name);
            enc.text(&u.key.warehouse_name);
            enc.date(u.date);
            for v in [
                u.credits,
                u.credits_compute,
                u.credits_cloud_services,
                u.hours_active,
                u.peak_hourly_credits,
            ] {
                enc.f64(v);
            }
            for v in [f.trend, f.seasonal, f.residual] {
                enc.opt_f64(v);
            }
            enc.timestamp(now);
        },
    )
    .await
}

/// Streams `rows` through `statement` (a `COPY ... FROM STDIN WITH (FORMAT binary)`), each row written by
/// `encode`, in chunks of bounded size so memory stays flat for big loads.
async fn copy_binary<T>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    statement: &str,
    rows: &[T],
    mut encode: impl FnMut(&mut BinaryCopy, &T),
) -> Result<(), StoreError> {
    let mut copy = tx.copy_in_raw(statement).await?;
    let mut enc = BinaryCopy::new();
    for r in rows {
        encode(&mut enc, r);
        if let Some(chunk) = enc.take_if_full() {
            copy.send(chunk).await?;
        }
    }
    copy.send(enc.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// Encoder for PostgreSQL's binary COPY format. Hand-written (the format is a header, length-prefixed
/// big-endian fields and a trailer) because the server then parses no text per value, which was most of its
/// cost per row with text COPY; sqlx exposes only the raw COPY stream.
struct BinaryCopy {
    buf: Vec<u8>,
}

impl BinaryCopy {
    const CHUNK: usize = 4 << 20;
    /// Microseconds (timestamps) and days (dates) count from 2000-01-01 in PostgreSQL.
    const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
    const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

    fn new() -> Self {
        let mut buf = Vec::with_capacity(Self::CHUNK + 4096);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { buf }
    }
    fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }
    fn field(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }
    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }
    fn text(&mut self, s: &str) {
        self.field(s.as_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.field(&v.to_be_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.field(&v.to_be_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.i64(v),
            None => self.null(),
        }
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.f64(v),
            None => self.null(),
        }
    }
    fn timestamp(&mut self, t: DateTime<Utc>) {
        self.i64(t.timestamp_micros() - Self::PG_EPOCH_UNIX_MICROS);
    }
    fn date(&mut self, d: NaiveDate) {
        let days =
            d.signed_duration_since(NaiveDate::default()).num_days() - Self::PG_EPOCH_UNIX_DAYS;
        self.field(&(days as i32).to_be_bytes());
    }
    /// A chunk to send once the buffer is large, so memory stays bounded for big loads.
    fn take_if_full(&mut self) -> Option<Vec<u8>> {
        (self.buf.len() >= Self::CHUNK)
            .then(|| std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK + 4096)))
    }
    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// [`PipelineStore::hourly_credits_of`]: one scan of the window, joined to the wanted warehouses (a hash join on
/// the unnested key arrays), so 300 warehouses cost one query, not 300 scans of the window.
pub(super) async fn hourly_credits_of(
    pool: &PgPool,
    keys: &[WarehouseKey],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(WarehouseKey, DateTime<Utc>, f64)>, StoreError> {
    let accounts: Vec<&str> = keys.iter().map(|k| k.account_name.as_str()).collect();
    let warehouses: Vec<&str> = keys.iter().map(|k| k.warehouse_name.as_str()).collect();
    let rows: Vec<(String, String, DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT h.account_name, h.warehouse_name, h.start_time, sum(h.credits_used) \
         FROM warehouse_metering_hourly h \
         JOIN unnest($1::text[], $2::text[]) AS k(account_name, warehouse_name) \
           ON h.account_name = k.account_name AND h.warehouse_name = k.warehouse_name \
         WHERE h.warehouse_id > 0 AND h.start_time >= $3 AND h.start_time < $4 \
         GROUP BY h.account_name, h.warehouse_name, h.start_time",
    )
    .bind(&accounts)
    .bind(&warehouses)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(a, w, t, c)| (WarehouseKey::new(a, w), t, c))
        .collect())
}
