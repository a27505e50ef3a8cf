//! Persistence for Snowpatrol.
//!
//! One [`Database`] handle over PostgreSQL (production, several replicas) or SQLite (the embedded default, one
//! process). The scheduler's state machine lives here as transactional operations ([`Database::claim_tasks`],
//! [`Database::finish_tasks`], [`Database::trigger_dataset_run`], ...) because each of them must be atomic: a
//! task's success and the dataset events it produces commit together, and a run and the events it consumed
//! commit together. The SQL is written once (see `backend/ops.rs`) and compiled for both backends, so the
//! conformance tests exercise the same logic twice. The engine's tables are migrated by the [`ENGINE`] line;
//! a product crate keeping tables of its own migrates them with a [`MigrationLine`] of its own.

mod backend;
pub use backend::{ConditionFn, Shapes};
mod error;
mod failpoint;
pub use failpoint::{FAILPOINTS_ENV, failpoint};
mod leader;
mod migrations;
pub use leader::Leadership;
pub use migrations::{COMBINED_LINE_LAST, COMBINED_LINE_TABLE, ENGINE, MigrationLine};
mod plan;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod url_secrets;

pub use error::StoreError;
pub use plan::{GroupStats, PlanStep, downstream_of, plan_run};
pub use types::*;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, PgPool, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The NOTIFY channel daemons LISTEN on; any state change that may let someone make progress is announced here.
pub const NOTIFY_CHANNEL: &str = "snowpatrol_wakeup";

/// Timestamps are kept at microsecond precision: what PostgreSQL stores, so a value read back compares equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[derive(Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A connection pool plus an in-process wake-up signal.
///
/// The in-process wake-up counter is how SQLite (which has no LISTEN/NOTIFY) wakes the scheduler; on PostgreSQL
/// it also short-cuts wake-ups inside one process while NOTIFY reaches the other replicas. A `watch` channel,
/// not a `Notify`, so a loop that is busy when the signal comes still sees it when it next waits.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    wakeup: Arc<watch::Sender<u64>>,
    url_redacted: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url_redacted)
            .finish()
    }
}

pub use url_secrets::{REDACTED, redact_text, redact_url};

impl Database {
    /// Connects once; callers that must survive a database that is not up yet use [`Database::connect_with_retry`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(connect_postgres(url).await?)
        } else if url.starts_with("sqlite:") {
            Pool::Sqlite(connect_sqlite(url).await?)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL {}: use postgres://... or sqlite:///path/to/file.db",
                redact_url(url)
            )));
        };
        Ok(Self {
            pool,
            wakeup: Arc::new(watch::Sender::new(0)),
            url_redacted: redact_url(url),
        })
    }

    /// The embedded default: a SQLite file (created if missing).
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!(
                    "cannot create data directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        Self::connect(&format!("sqlite://{}", path.display())).await
    }

    /// Retries with exponential backoff (capped at 30 s), logging each failure, until `max_wait` has passed.
    pub async fn connect_with_retry(url: &str, max_wait: Duration) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1u32;
        loop {
            match Self::connect(url).await {
                Ok(db) => return Ok(db),
                Err(StoreError::Unavailable(msg)) if started.elapsed() + delay < max_wait => {
                    tracing::warn!(
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        "database unavailable: {msg}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    pub fn url_redacted(&self) -> &str {
        &self.url_redacted
    }

    /// Signalled after every commit that may let a scheduler or worker in this process make progress.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wakeup.subscribe()
    }

    /// Wakes this process's loops (used by the PostgreSQL listener when another replica announces a change).
    pub fn notify_local(&self) {
        self.wakeup.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

/// Decodes a row into a `#[derive(sqlx::FromRow)]` struct; a stored value outside its type (a state the CHECK
/// constraint would refuse, say) is [`StoreError::Corrupt`], not a SQL error.
pub fn decode_row<'r, R: sqlx::Row, T: sqlx::FromRow<'r, R>>(row: &'r R) -> Result<T, StoreError> {
    T::from_row(row).map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } => StoreError::Corrupt(e.to_string()),
        e => StoreError::Sql(e),
    })
}

/// Driver errors may quote the URL or the password; none reaches a log or a caller unredacted.
fn scrubbed(e: &dyn std::fmt::Display, url: &str) -> String {
    redact_text(&e.to_string(), url)
}

async fn connect_postgres(url: &str) -> Result<PgPool, StoreError> {
    let url_redacted = redact_url(url);
    // sqlx is handed the URL without its secrets and the password through its API: it logs unknown query
    // parameters with their values, and its errors may quote what it was given.
    let (bare, password, dropped) = url_secrets::split_password(url);
    for key in dropped {
        tracing::warn!(
            parameter = %key,
            "ignoring the secret connection parameter `{key}` (not supported by the PostgreSQL driver)"
        );
    }
    let mut opts = PgConnectOptions::from_str(&bare)
        .map_err(|e| {
            StoreError::Config(format!(
                "invalid PostgreSQL URL {url_redacted}: {}",
                scrubbed(&e, url)
            ))
        })?
        .application_name("snowpatrol")
        // A process frozen or partitioned inside a transaction must not hold its row locks (a task fence, a
        // claimed alert) for ever: the server ends such sessions, and TCP keepalives let it notice a peer that
        // vanished without closing the connection.
        .options([
            ("idle_in_transaction_session_timeout", "120s"),
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
        ])
        .log_statements(tracing::log::LevelFilter::Trace);
    if let Some(p) = &password {
        opts = opts.password(p);
    }
    // One direct connection first: the pool retries silently until its acquire timeout and then says only
    // "pool timed out", while a single attempt says what is wrong (connection refused, unknown host,
    // authentication failed) within the connect timeout.
    let target = format!("{}:{}", opts.get_host(), opts.get_port());
    let unavailable = |why: String| {
        StoreError::Unavailable(format!(
            "cannot connect to {url_redacted} at {target}: {why}"
        ))
    };
    match tokio::time::timeout(Duration::from_secs(10), opts.connect()).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(e)) => return Err(unavailable(scrubbed(&e, url))),
        Err(_) => return Err(unavailable("no answer within 10 s".into())),
    }
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|e| unavailable(scrubbed(&e, url)))
}

async fn connect_sqlite(url: &str) -> Result<SqlitePool, StoreError> {
    let url_redacted = redact_url(url);
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| {
            StoreError::Config(format!(
                "invalid SQLite URL {url_redacted}: {}",
                scrubbed(&e, url)
            ))
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        .log_statements(tracing::log::LevelFilter::Trace);
    // SQLite allows one writer: a small pool avoids lock contention while WAL keeps readers concurrent.
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open {url_redacted}: {}", scrubbed(&e, url)))
        })
}

pub(crate) fn is_undefined_table(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.code().as_deref() == Some("42P01") || d.message().contains("no such table")
        }
        _ => false,
    }
}
