//! Leader election: exactly one replica evaluates cron and dataset triggers at a time.
//!
//! On PostgreSQL the leader holds a session advisory lock on a dedicated connection: if the process dies or
//! its connection drops, the server releases the lock at once and another replica takes over on its next
//! attempt (every few seconds). SQLite is single-host, so a time-bound lease row is enough.

use crate::{Database, Pool, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

/// Arbitrary constant key of the advisory lock ("snow" in ASCII).
const ADVISORY_KEY: i64 = 0x736e_6f77;
const LEASE_NAME: &str = "scheduler-leader";

pub enum Leadership {
    Advisory(Box<PgConnection>),
    Lease,
}

impl Database {
    /// Tries to become leader; `None` when another replica leads.
    pub async fn try_acquire_leadership(
        &self,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Leadership>, StoreError> {
        match self.pool() {
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await?.detach();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(ADVISORY_KEY)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    let _ = self.try_lease(LEASE_NAME, holder, until).await;
                    Ok(Some(Leadership::Advisory(Box::new(conn))))
                } else {
                    let _ = conn.close().await;
                    Ok(None)
                }
            }
            Pool::Sqlite(_) => {
                if self.try_lease(LEASE_NAME, holder, until).await? {
                    Ok(Some(Leadership::Lease))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Confirms leadership is still held (the lock's connection is alive, or the lease renewed).
    pub async fn renew_leadership(
        &self,
        leadership: &mut Leadership,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        match leadership {
            Leadership::Advisory(conn) => {
                let alive = sqlx::query_scalar::<_, i32>("SELECT 1")
                    .fetch_one(&mut **conn)
                    .await
                    .is_ok();
                if alive {
                    let _ = self.try_lease(LEASE_NAME, holder, until).await;
                }
                Ok(alive)
            }
            Leadership::Lease => self.try_lease(LEASE_NAME, holder, until).await,
        }
    }

    pub async fn release_leadership(&self, leadership: Leadership, holder: &str) {
        if let Leadership::Advisory(mut conn) = leadership {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(ADVISORY_KEY)
                .execute(&mut *conn)
                .await;
            let _ = conn.close().await;
        }
        let _ = self.drop_lease(LEASE_NAME, holder).await;
    }

    /// Forwards NOTIFYs from other replicas to this process's wake-up channel; reconnects after errors.
    /// A no-op on SQLite.
    pub async fn run_notification_listener(&self, shutdown: tokio_util::sync::CancellationToken) {
        let Pool::Postgres(pool) = self.pool() else {
            return;
        };
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            let listener = async {
                let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
                l.listen(crate::NOTIFY_CHANNEL).await?;
                // Anything may have happened while we were not listening.
                self.notify_local();
                loop {
                    l.recv().await?;
                    self.notify_local();
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "LISTEN connection lost; reconnecting");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(10));
        }
    }
}
