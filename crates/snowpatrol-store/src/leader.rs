//! Leader election: exactly one replica evaluates cron and dataset triggers at a time.
//!
//! Leadership is a lease row (`scheduler_leases`, name `scheduler-leader`) on both backends: the leader renews
//! it every tick, any replica takes it over once it has expired, and a leader that cannot renew it within one
//! lease period steps down by itself (the engine's leader loop). An earlier version held a PostgreSQL session
//! advisory lock instead; a frozen (SIGSTOP) or silently partitioned leader kept that lock for as long as its
//! TCP connection looked alive (hours without keepalives), and nobody scheduled anything meanwhile. A lease
//! expires whatever the holder's connection does, so a frozen leader is replaced within
//! `lease + retry interval`.
//!
//! On PostgreSQL the lease is judged by the database's clock (`clock_timestamp()`), so replicas whose clocks
//! disagree still agree on who leads. SQLite is one host, one clock. Two leaders can overlap for at most one
//! tick (a resumed leader renews before it ticks, fails and steps down); every leader action is idempotent
//! through unique keys (`job_runs (job_name, run_key)`, the locked job row of a dataset trigger, conditional
//! updates of leases), so an overlap cannot create a run twice.

use crate::{Database, Pool, StoreError};
use std::time::{Duration, Instant};

const LEASE_NAME: &str = "scheduler-leader";

/// Proof of leadership held by the leader loop: when the lease was last confirmed in the database.
#[derive(Debug)]
pub struct Leadership {
    confirmed_at: Instant,
}

impl Leadership {
    /// Time since the lease was last confirmed; past the lease period another replica may lead.
    pub fn unconfirmed_for(&self) -> Duration {
        self.confirmed_at.elapsed()
    }
}

impl Database {
    /// Takes or renews the leader lease for `lease`; true when `holder` holds it afterwards.
    async fn claim_leader_lease(&self, holder: &str, lease: Duration) -> Result<bool, StoreError> {
        let got: Option<String> = match self.pool() {
            Pool::Postgres(p) => {
                sqlx::query_scalar(
                    "INSERT INTO scheduler_leases (lease_name, holder, expires_at) \
                     VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
                     ON CONFLICT (lease_name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE scheduler_leases.holder = excluded.holder OR scheduler_leases.expires_at < clock_timestamp() \
                     RETURNING holder",
                )
                .bind(LEASE_NAME)
                .bind(holder)
                .bind(lease.as_secs_f64())
                .fetch_optional(p)
                .await?
            }
            Pool::Sqlite(_) => {
                let until = crate::now() + chrono::Duration::from_std(lease).unwrap_or_default();
                return self.try_lease(LEASE_NAME, holder, until).await;
            }
        };
        Ok(got.as_deref() == Some(holder))
    }

    /// Tries to become leader for `lease`; `None` while another replica's lease is unexpired.
    pub async fn try_acquire_leadership(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<Leadership>, StoreError> {
        let started = Instant::now();
        Ok(self
            .claim_leader_lease(holder, lease)
            .await?
            .then_some(Leadership {
                confirmed_at: started,
            }))
    }

    /// Renews the lease for another `lease`. `Ok(false)`: another replica took it over (this one stalled past
    /// its lease); the caller must stop leading at once. An error leaves the lease as it was: the caller keeps
    /// leading only while [`Leadership::unconfirmed_for`] is under the lease.
    pub async fn renew_leadership(
        &self,
        leadership: &mut Leadership,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // The lease runs from before the request was sent: a slow answer must not stretch it.
        let started = Instant::now();
        let held = self.claim_leader_lease(holder, lease).await?;
        if held {
            leadership.confirmed_at = started;
        }
        Ok(held)
    }

    /// Gives the lease up (graceful shutdown), so another replica leads at its next attempt.
    pub async fn release_leadership(&self, _leadership: Leadership, holder: &str) {
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
