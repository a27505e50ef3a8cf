//! Alert delivery through the outbox: every alert is a row first (deduplicated by key), then sent to Slack or,
//! without Slack, written to a file; the outcome is recorded on the row.

use crate::Pipeline;
use async_trait::async_trait;
use snowpatrol_alert::{DeliveryOutcome, SlackMessage, failure_message};
use snowpatrol_engine::{FailureHook, TaskFailure};
use std::sync::Arc;

/// What happened to one alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Another run already alerted on this key.
    Duplicate,
    Sent,
    Written(std::path::PathBuf),
    Failed(String),
}

impl Pipeline {
    /// Queues the alert under `dedupe_key` (once ever) and delivers it.
    pub async fn alert(
        &self,
        dedupe_key: &str,
        kind: &str,
        run_id: Option<i64>,
        message: &SlackMessage,
    ) -> Result<Delivery, crate::PipelineError> {
        let channel = self.slack().map_or("file".to_string(), |(_, c)| c.clone());
        let payload = serde_json::to_value(message).unwrap_or_default();
        let Some(id) = self
            .store
            .insert_alert(dedupe_key, kind, run_id, &channel, &payload)
            .await?
        else {
            return Ok(Delivery::Duplicate);
        };
        self.deliver(id, message).await
    }

    async fn deliver(
        &self,
        id: i64,
        message: &SlackMessage,
    ) -> Result<Delivery, crate::PipelineError> {
        match self.slack() {
            Some((notifier, _)) => match notifier.send(message).await {
                DeliveryOutcome::Delivered { ts, attempts } => {
                    self.store
                        .record_alert_outcome(id, "sent", attempts as i32, None, Some(&ts))
                        .await?;
                    Ok(Delivery::Sent)
                }
                DeliveryOutcome::Failed {
                    error,
                    permanent,
                    attempts,
                } => {
                    let state = if permanent { "failed" } else { "pending" };
                    tracing::warn!(alert_id = id, permanent, attempts, error = %error, "Slack delivery failed");
                    self.store
                        .record_alert_outcome(id, state, attempts as i32, Some(&error), None)
                        .await?;
                    Ok(Delivery::Failed(error))
                }
            },
            None => {
                let dir = self.data_dir.join("alerts");
                std::fs::create_dir_all(&dir).map_err(|e| {
                    crate::PipelineError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let path = dir.join(format!("alert-{id}.txt"));
                std::fs::write(&path, &message.text).map_err(|e| {
                    crate::PipelineError::Config(format!("cannot write {}: {e}", path.display()))
                })?;
                tracing::info!(alert_id = id, path = %path.display(), "no Slack configured: alert written to file\n{}", message.text);
                self.store
                    .record_alert_outcome(id, "written", 1, None, None)
                    .await?;
                Ok(Delivery::Written(path))
            }
        }
    }

    /// Delivers alerts whose last try failed with a retryable error, and alerts a replica claimed but never
    /// finished (it died mid-send; at-least-once means they go out again). Returns how many were delivered.
    pub async fn retry_pending_alerts(&self) -> Result<usize, crate::PipelineError> {
        let stale_before = snowpatrol_store::now() - chrono::Duration::minutes(10);
        let claimed = self.store.claim_alerts(stale_before, 100).await?;
        let mut n = 0;
        for a in claimed {
            match serde_json::from_value::<SlackMessage>(a.message.clone()) {
                Ok(msg) => {
                    if matches!(
                        self.deliver(a.alert_id, &msg).await?,
                        Delivery::Sent | Delivery::Written(_)
                    ) {
                        n += 1;
                    }
                }
                Err(e) => {
                    let error = format!("stored message cannot be read: {e}");
                    self.store
                        .record_alert_outcome(a.alert_id, "failed", 0, Some(&error), None)
                        .await?;
                }
            }
        }
        Ok(n)
    }

    /// Retries undelivered alerts every `every` until `shutdown` (run by the daemon, so a Slack outage does
    /// not wait for the next predict run).
    pub async fn alert_retry_loop(
        self: std::sync::Arc<Self>,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.retry_pending_alerts().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(delivered = n, "delivered alerts that had been pending"),
                Err(e) => {
                    tracing::warn!(error = %e, "retrying pending alerts failed; will try again")
                }
            }
        }
    }
}

/// Sends one short alert per (run, task) that failed after its retries, listing the failed keys of a fan-out.
pub struct FailureAlerts(pub Arc<Pipeline>);

#[async_trait]
impl FailureHook for FailureAlerts {
    async fn on_task_failed(&self, f: TaskFailure) {
        let keys = if f.failed_keys.is_empty() {
            None
        } else {
            let listed = f.failed_keys.join(", ");
            Some(if f.failed_count > f.failed_keys.len() {
                format!(
                    "{} of {}: {listed}, and {} more",
                    f.failed_count,
                    f.instance_count,
                    f.failed_count - f.failed_keys.len()
                )
            } else {
                format!("{} of {}: {listed}", f.failed_count, f.instance_count)
            })
        };
        let error = if f.error_count < f.failed_count {
            format!(
                "{}\n({} of {} failed instances ended with this error; `snowpatrol tasks {}` lists the others)",
                f.error, f.error_count, f.failed_count, f.run_id
            )
        } else {
            f.error.clone()
        };
        let msg = failure_message(
            &f.job_name,
            &f.task_name,
            keys.as_deref(),
            &f.run_id.to_string(),
            &error,
        );
        let key = format!("failure:{}:{}", f.run_id, f.task_name);
        if let Err(e) = self
            .0
            .alert(&key, "task_failure", Some(f.run_id), &msg)
            .await
        {
            tracing::error!(error = %e, run_id = f.run_id, "could not record the failure alert");
        }
    }
}
