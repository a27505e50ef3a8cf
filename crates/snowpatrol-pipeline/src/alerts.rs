//! The alert outbox: every alert is a row first (one per dedupe key, ever), and the only thing the report task
//! and the failure hook do is insert it ([`Pipeline::enqueue_alert`]). Delivery is the outbox sender's job
//! ([`Pipeline::outbox_sender_loop`], run by every daemon; [`Pipeline::drain_outbox`] for one-shot commands), so
//! a slow or hanging Slack never holds up a run: predict takes the time of writing its rows.
//!
//! The sender claims due rows for `claim_ttl` (two senders never hold one row; a dead sender's claim expires),
//! makes ONE bounded attempt per claim and records the outcome on the row: `sent` / `written`, back to `pending`
//! with `next_attempt_at` (exponential backoff, never before Slack's Retry-After), or `failed`. Every post
//! carries Slack message metadata with the dedupe key; a row whose last post may have arrived (timeout,
//! connection lost after sending, claim expired while sending) is first looked up in `conversations.history`
//! and recorded as sent when found, so a timeout does not become a second message.

use crate::Pipeline;
use crate::store::{AlertAttempt, AlertKind, AlertRow, AlertState};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use snowpatrol_alert::{
    AlertMetadata, LookupFailure, PostOutcome, SlackMessage, SlackNotifier, failure_message,
};
use snowpatrol_engine::{FailureHook, TaskFailure};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows claimed per pass. Small, so that a hanging Slack (one `request_timeout` per row) cannot outlast the
/// claims: rows whose claim is about to run out are handed back before they are tried.
const BATCH: i64 = 10;
/// The slow poll: rows enqueued by other replicas, expired claims of dead senders. Enqueues in this process and
/// due retries wake the sender earlier.
const POLL: Duration = Duration::from_secs(30);
/// An attempt starts only when the claim still has one request timeout plus this margin (at most half a request
/// timeout) left, so its outcome is recorded before another sender may take the row over.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// What [`Pipeline::enqueue_alert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A new row, delivered by the outbox sender.
    Queued(i64),
    /// An alert with this key exists already (queued, sent or failed): nothing new.
    Duplicate,
}

/// What one pass of the outbox sender did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxPass {
    pub claimed: usize,
    /// Posted to Slack now.
    pub sent: usize,
    /// A post whose outcome was unknown was found in the channel's history: recorded, not posted again.
    pub found_in_history: usize,
    /// No Slack configured: written to a file.
    pub written: usize,
    /// Back to `pending` for a later attempt.
    pub retrying: usize,
    pub failed: usize,
    /// Handed back untried (shutdown, claim running out, a rate limit met by another row).
    pub released: usize,
}

impl OutboxPass {
    fn delivered(&self) -> usize {
        self.sent + self.found_in_history + self.written
    }
}

/// Delivery state shared by the sender loop and one-shot drains of this process.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// This process's claims: `host:pid:random`.
    pub(crate) sender_id: String,
    /// Bumped on every enqueue so the sender loop starts at once instead of at its next poll.
    pub(crate) wake: tokio::sync::watch::Sender<u64>,
    /// Slack's Retry-After for the channel: no post before then.
    pub(crate) paused_until: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self {
            sender_id: format!("{host}:{}:{suffix}", std::process::id()),
            wake: tokio::sync::watch::channel(0).0,
            paused_until: std::sync::Mutex::new(None),
        }
    }

    fn paused_until(&self) -> Option<DateTime<Utc>> {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|t| *t > snowpatrol_store::now())
    }

    fn pause(&self, until: DateTime<Utc>) {
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }
}

fn after(d: Duration) -> DateTime<Utc> {
    snowpatrol_store::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn until(t: DateTime<Utc>) -> Duration {
    (t - snowpatrol_store::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// What the rows of one pass that go to one channel share.
struct SlackBatch<'a> {
    /// The channel's notifier.
    notifier: &'a SlackNotifier,
    /// Rows whose last post was found in the channel's history: dedupe key -> the message's ts.
    found: BTreeMap<String, String>,
    /// Why the history look-up failed, when it did.
    lookup: Option<LookupFailure>,
    /// When the pass's claims run out.
    claim_deadline: tokio::time::Instant,
    /// Cancelled: the rows not yet tried are handed back.
    stop: &'a CancellationToken,
    max_attempts: i32,
}

impl SlackBatch<'_> {
    /// The claim time an attempt on `row` must still have: its bounded calls plus the margin to record it.
    fn claim_needed_for(&self, row: &AlertRow) -> Duration {
        // A reply's upload is three bounded calls, a post one.
        let calls = if row.thread_of.is_some() { 3 } else { 1 };
        self.notifier.request_timeout() * calls
            + CLAIM_MARGIN.min(self.notifier.request_timeout() / 2)
    }
}

impl Pipeline {
    /// Queues the alert under `dedupe_key` (once ever) for the outbox sender and wakes it. The insert is the
    /// only write: nothing here waits for Slack. The one place alerts enter the outbox.
    pub async fn enqueue_alert(
        &self,
        dedupe_key: &str,
        kind: AlertKind,
        run_id: Option<i64>,
        message: &SlackMessage,
        fence: Option<&snowpatrol_store::TaskFence>,
    ) -> Result<Enqueued, crate::PipelineError> {
        let channel = self.slack().map_or("file".to_string(), |(_, c)| c.clone());
        let payload = serde_json::to_value(message).map_err(|e| {
            crate::PipelineError::Config(format!("the alert message cannot be stored: {e}"))
        })?;
        let Some(id) = self
            .store
            .insert_alert(dedupe_key, kind, run_id, &channel, &payload, fence)
            .await?
        else {
            return Ok(Enqueued::Duplicate);
        };
        self.outbox.wake.send_modify(|v| *v = v.wrapping_add(1));
        Ok(Enqueued::Queued(id))
    }

    /// Queues a predict run's digests (one per channel) and marks their incidents as announced, atomically
    /// (see `PipelineStore::enqueue_digests`). Returns how many were queued (0: an earlier try queued them).
    pub async fn enqueue_digests(
        &self,
        run_id: i64,
        digests: &[crate::store::QueuedDigest],
        fence: &snowpatrol_store::TaskFence,
    ) -> Result<usize, crate::PipelineError> {
        let ids = self
            .store
            .enqueue_digests(AlertKind::Anomaly, Some(run_id), digests, Some(fence))
            .await?;
        if !ids.is_empty() {
            self.outbox.wake.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok(ids.len())
    }

    /// The channel alerts go to when no route names one: `[pipeline.slack] channel`, or `file` without Slack.
    pub fn default_channel(&self) -> String {
        self.slack().map_or("file".to_string(), |(_, c)| c.clone())
    }

    /// The signing secret Slack's interactivity requests are verified with; None: no feedback from Slack.
    pub fn slack_signing_secret(&self) -> Option<&secrecy::SecretString> {
        self.config
            .slack
            .as_ref()
            .and_then(|s| s.signing_secret.as_ref())
    }

    /// Records a feedback click from Slack (already verified) exactly like `snowpatrol anomalies ack`, then
    /// updates the message it came from. The acknowledgement is what counts: a failed update is logged.
    pub async fn record_feedback(
        &self,
        click: &snowpatrol_alert::FeedbackClick,
    ) -> Result<FeedbackRecorded, crate::PipelineError> {
        let reason: crate::store::AckReason = click
            .reason
            .parse()
            .map_err(|e: String| crate::PipelineError::Config(e))?;
        let who = if click.user_name.is_empty() {
            format!("slack:{}", click.user_id)
        } else {
            format!("slack:{}", click.user_name)
        };
        if !self
            .store
            .ack_incident(click.incident_id, reason, Some(&who))
            .await?
        {
            return Ok(FeedbackRecorded::UnknownIncident);
        }
        tracing::info!(incident_id = click.incident_id, reason = %click.reason, by = %who, "incident acknowledged from Slack");
        let updated = click
            .message_blocks
            .as_ref()
            .and_then(|b| snowpatrol_alert::acknowledged_blocks(b, click));
        if let (Some((notifier, _)), Some(blocks)) = (self.slack(), updated) {
            let text = click.message_text.clone().unwrap_or_default();
            if let Err(e) = notifier.respond(&click.response_url, &text, blocks).await {
                tracing::warn!(incident_id = click.incident_id, error = %e, "the acknowledgement is recorded, but the Slack message could not be updated");
                return Ok(FeedbackRecorded::AcknowledgedMessageNotUpdated);
            }
        }
        Ok(FeedbackRecorded::Acknowledged)
    }

    /// This process's sender id, as written to `alerts.claimed_by`.
    pub fn outbox_sender_id(&self) -> &str {
        &self.outbox.sender_id
    }

    fn claim_ttl(&self) -> Duration {
        self.config
            .slack
            .as_ref()
            .map_or(Duration::from_secs(60), |s| s.claim_ttl)
    }

    /// One pass: claims due alerts and makes one attempt on each. Returns what happened.
    pub async fn deliver_due_alerts(&self) -> Result<OutboxPass, crate::PipelineError> {
        self.deliver_pass(&CancellationToken::new()).await
    }

    /// One pass; `stop` hands the rows not yet tried back (the attempt in flight, bounded by the request
    /// timeout, is finished and recorded).
    async fn deliver_pass(
        &self,
        stop: &CancellationToken,
    ) -> Result<OutboxPass, crate::PipelineError> {
        let mut pass = OutboxPass::default();
        if self.slack().is_some() && self.outbox.paused_until().is_some() {
            return Ok(pass);
        }
        let ttl = self.claim_ttl();
        let claim_deadline = tokio::time::Instant::now() + ttl;
        let claimed = self
            .store
            .claim_alerts(&self.outbox.sender_id, after(ttl), BATCH)
            .await?;
        pass.claimed = claimed.len();
        if claimed.is_empty() {
            return Ok(pass);
        }
        match self.slack() {
            None => {
                for row in &claimed {
                    self.write_to_file(row, &mut pass).await?;
                }
            }
            Some((notifier, _)) => {
                // Each channel (the default and the routes') has its own history to look up.
                let mut by_channel: BTreeMap<String, Vec<AlertRow>> = BTreeMap::new();
                for row in claimed {
                    by_channel.entry(row.channel.clone()).or_default().push(row);
                }
                for (channel, rows) in by_channel {
                    let routed;
                    let notifier = if channel == notifier.channel() || channel == "file" {
                        notifier
                    } else {
                        routed = notifier.for_channel(&channel);
                        &routed
                    };
                    self.deliver_to_slack(notifier, &rows, claim_deadline, stop, &mut pass)
                        .await?;
                }
            }
        }
        Ok(pass)
    }

    /// Records an attempt; a lost claim (taken over after expiring) is logged, not an error.
    async fn finish(
        &self,
        row: &AlertRow,
        attempt: AlertAttempt,
    ) -> Result<(), crate::PipelineError> {
        let held = self
            .store
            .finish_alert_attempt(row.alert_id, &self.outbox.sender_id, &attempt)
            .await?;
        if !held {
            tracing::warn!(alert_id = row.alert_id, state = %attempt.state,
                "the claim on this alert expired before its outcome was recorded; the sender that took it over decides");
        }
        Ok(())
    }

    async fn write_to_file(
        &self,
        row: &AlertRow,
        pass: &mut OutboxPass,
    ) -> Result<(), crate::PipelineError> {
        let text = match serde_json::from_value::<SlackMessage>(row.message.clone()) {
            Ok(m) => m.text,
            Err(e) => {
                pass.failed += 1;
                return self.finish(row, unreadable(&e)).await;
            }
        };
        let dir = self.data_dir.join("alerts");
        let path = dir.join(format!("alert-{}.txt", row.alert_id));
        let attachment = match row.attachment_name {
            Some(_) => self.store.alert_attachment(row.alert_id).await?,
            None => None,
        };
        // The name comes from the chart renderer (ASCII, no separators); the id keeps runs apart.
        let attachment = attachment
            .map(|(name, bytes)| (dir.join(format!("alert-{}-{name}", row.alert_id)), bytes));
        write_alert_files(dir, path.clone(), text.clone(), attachment).await?;
        tracing::info!(alert_id = row.alert_id, path = %path.display(), "no Slack configured: alert written to file\n{text}");
        pass.written += 1;
        self.finish(
            row,
            AlertAttempt {
                state: AlertState::Written,
                counted: 1,
                error: None,
                slack_ts: None,
                next_attempt_at: None,
                outcome_unknown: false,
            },
        )
        .await
    }

    async fn deliver_to_slack(
        &self,
        notifier: &SlackNotifier,
        claimed: &[AlertRow],
        claim_deadline: tokio::time::Instant,
        stop: &CancellationToken,
        pass: &mut OutboxPass,
    ) -> Result<(), crate::PipelineError> {
        let (found, lookup) = self.look_up_unanswered_posts(notifier, claimed).await;
        let batch = SlackBatch {
            notifier,
            found,
            lookup,
            claim_deadline,
            stop,
            max_attempts: notifier.max_attempts() as i32,
        };
        for row in claimed {
            self.deliver_row_to_slack(&batch, row, pass).await?;
        }
        Ok(())
    }

    /// One history look-up for every row of the batch whose last post may have arrived. Returns the rows found
    /// in the channel (dedupe key -> the message's ts) and why the look-up failed, when it did.
    async fn look_up_unanswered_posts(
        &self,
        notifier: &SlackNotifier,
        claimed: &[AlertRow],
    ) -> (BTreeMap<String, String>, Option<LookupFailure>) {
        let pages = self.config.slack.as_ref().map_or(3, |s| s.history_pages);
        let unknown: BTreeSet<String> = claimed
            .iter()
            .filter(|r| r.outcome_unknown && r.thread_of.is_none())
            .map(|r| r.dedupe_key.clone())
            .collect();
        let mut found = BTreeMap::new();
        let mut lookup: Option<LookupFailure> = None;
        if !unknown.is_empty() {
            let since = claimed
                .iter()
                .filter(|r| r.outcome_unknown)
                .map(|r| r.first_attempt_at.unwrap_or(r.created_at))
                .min()
                .unwrap_or_else(snowpatrol_store::now);
            match notifier.find_posted(since, &unknown, pages).await {
                Ok(f) => found = f,
                Err(e) => {
                    if e.permanent {
                        tracing::warn!(error = %e.error, "cannot check Slack's history for alerts whose post may have arrived; \
                            posting them again, which may repeat them (the bot needs channels:history and a channel id)");
                    }
                    lookup = Some(e);
                }
            }
        }
        (found, lookup)
    }

    /// One row of a Slack batch: recorded as sent when the history look-up found it, tried again later when
    /// the look-up could not tell, handed back when there is no time left for it, else one attempt.
    async fn deliver_row_to_slack(
        &self,
        batch: &SlackBatch<'_>,
        row: &AlertRow,
        pass: &mut OutboxPass,
    ) -> Result<(), crate::PipelineError> {
        let (notifier, max_attempts) = (batch.notifier, batch.max_attempts);
        let attempts = row.attempts + 1;
        if let Some(ts) = batch.found.get(&row.dedupe_key) {
            tracing::info!(alert_id = row.alert_id, ts = %ts,
                "alert found in Slack's history (an earlier post arrived unanswered): recorded, not posted again");
            pass.found_in_history += 1;
            return self.finish(row, sent(ts.clone())).await;
        }
        // The look-up failed for a reason that may pass: do not post blind, try again later.
        if row.outcome_unknown
            && row.thread_of.is_none()
            && let Some(e) = batch.lookup.as_ref().filter(|e| !e.permanent)
        {
            if let Some(ra) = e.retry_after {
                self.outbox.pause(after(ra));
            }
            let attempt = retry_or_fail(
                notifier,
                attempts,
                max_attempts,
                &e.error,
                e.retry_after,
                true,
            );
            self.count(&attempt, pass);
            return self.finish(row, attempt).await;
        }
        let remaining = batch
            .claim_deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let paused = self.outbox.paused_until();
        if batch.stop.is_cancelled() || paused.is_some() || remaining < batch.claim_needed_for(row)
        {
            pass.released += 1;
            return self.hand_back(row, paused).await;
        }
        let attempt = if row.thread_of.is_some() {
            self.reply_attempt(notifier, row, attempts, max_attempts)
                .await?
        } else {
            self.post_attempt(batch, row, attempts).await
        };
        if attempt.state == AlertState::Sent {
            pass.sent += 1;
        } else {
            self.count(&attempt, pass);
        }
        self.finish(row, attempt).await
    }

    /// Hands a row back untried: `pending` again, the attempt not counted, due when Slack's pause ends (or when
    /// it was due).
    async fn hand_back(
        &self,
        row: &AlertRow,
        paused: Option<DateTime<Utc>>,
    ) -> Result<(), crate::PipelineError> {
        self.finish(
            row,
            AlertAttempt {
                state: AlertState::Pending,
                counted: 0,
                error: row.last_error.clone(),
                slack_ts: None,
                next_attempt_at: paused.or(row.next_attempt_at),
                outcome_unknown: row.outcome_unknown,
            },
        )
        .await
    }

    /// One post of a top-level alert (a digest or a failure alert), carrying its dedupe key as message metadata.
    /// A stored message that cannot be read fails without an attempt.
    async fn post_attempt(
        &self,
        batch: &SlackBatch<'_>,
        row: &AlertRow,
        attempts: i32,
    ) -> AlertAttempt {
        let (notifier, max_attempts) = (batch.notifier, batch.max_attempts);
        let msg = match serde_json::from_value::<SlackMessage>(row.message.clone()) {
            Ok(m) => m,
            Err(e) => return unreadable(&e),
        };
        // Still possibly in the channel when the look-up could not run (a permanent look-up failure).
        let still_unknown = row.outcome_unknown && batch.lookup.is_some();
        let meta = AlertMetadata {
            dedupe_key: row.dedupe_key.clone(),
            alert_id: row.alert_id,
        };
        match notifier.post_once(&msg, Some(&meta)).await {
            PostOutcome::Posted { ts } => sent(ts),
            PostOutcome::Rejected { error } => {
                tracing::error!(alert_id = row.alert_id, %error, "Slack refused the alert; fix the configuration, then set the row back to pending");
                failed(error)
            }
            PostOutcome::NotPosted { error, retry_after } => {
                if let Some(ra) = retry_after {
                    tracing::warn!(
                        alert_id = row.alert_id,
                        retry_after_s = ra.as_secs_f64(),
                        "Slack rate limited the alerts; pausing posts to the channel"
                    );
                    self.outbox.pause(after(ra));
                }
                retry_or_fail(
                    notifier,
                    attempts,
                    max_attempts,
                    &error,
                    retry_after,
                    still_unknown,
                )
            }
            PostOutcome::Unknown { error } => {
                tracing::warn!(alert_id = row.alert_id, %error,
                    "Slack did not confirm the alert; it will be looked up in the channel's history before any re-post");
                retry_or_fail(notifier, attempts, max_attempts, &error, None, true)
            }
        }
    }

    /// One attempt on a reply in a digest's thread: its file uploaded (a chart) with its text as the comment.
    /// A reply whose digest failed for good fails too. Replies are at least once: a shared file cannot be
    /// looked up the way a message's metadata can, so an upload whose outcome is unknown (no answer, a sender
    /// that died mid-batch) is tried again. A chart may rarely show twice in the thread; it is never lost
    /// because a batch was interrupted.
    async fn reply_attempt(
        &self,
        notifier: &SlackNotifier,
        row: &AlertRow,
        attempts: i32,
        max_attempts: i32,
    ) -> Result<AlertAttempt, crate::PipelineError> {
        if row.parent_state == Some(AlertState::Failed) {
            return Ok(failed(
                "the digest this reply belongs to was not delivered".into(),
            ));
        }
        let msg = match serde_json::from_value::<SlackMessage>(row.message.clone()) {
            Ok(m) => m,
            Err(e) => return Ok(unreadable(&e)),
        };
        let outcome = match self.store.alert_attachment(row.alert_id).await? {
            Some((name, bytes)) => {
                notifier
                    .upload_once(&name, &bytes, &name, &msg.text, row.parent_ts.as_deref())
                    .await
            }
            None => notifier.post_once(&msg, None).await,
        };
        Ok(match outcome {
            PostOutcome::Posted { ts } => sent(ts),
            PostOutcome::Rejected { error } => failed(error),
            PostOutcome::NotPosted { error, retry_after } => {
                if let Some(ra) = retry_after {
                    self.outbox.pause(after(ra));
                }
                retry_or_fail(notifier, attempts, max_attempts, &error, retry_after, false)
            }
            PostOutcome::Unknown { error } => {
                tracing::warn!(alert_id = row.alert_id, %error, "Slack did not confirm a reply's upload; it will be tried again");
                retry_or_fail(notifier, attempts, max_attempts, &error, None, false)
            }
        })
    }

    fn count(&self, attempt: &AlertAttempt, pass: &mut OutboxPass) {
        match attempt.state {
            AlertState::Failed => pass.failed += 1,
            _ => pass.retrying += 1,
        }
    }

    /// Delivers alerts until `shutdown`: woken by enqueues in this process, by the next due retry or expiring
    /// claim, and at least every 30 s (rows of other replicas). Run by every daemon replica; claims keep them
    /// from sending the same row.
    pub async fn outbox_sender_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut wake = self.outbox.wake.subscribe();
        tracing::info!(sender = %self.outbox.sender_id, "alert outbox sender started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let wait = match self.deliver_pass(&shutdown).await {
                Ok(pass) => {
                    if pass.claimed > 0 {
                        tracing::info!(?pass, "alert outbox pass");
                    }
                    if pass.claimed as i64 == BATCH && pass.released == 0 {
                        Duration::ZERO
                    } else {
                        self.next_wait().await
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "delivering alerts failed; will try again");
                    Duration::from_secs(5)
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("alert outbox sender stopped");
    }

    /// Until the next row is due (or Slack's pause ends), at most the poll interval and at least a little, so a
    /// row another replica holds never makes the loop spin.
    async fn next_wait(&self) -> Duration {
        let due = match self.store.next_alert_due().await {
            Ok(Some(t)) => until(t),
            Ok(None) => POLL,
            Err(e) => {
                tracing::warn!(error = %e, "reading the alert outbox failed; will try again");
                Duration::from_secs(5)
            }
        };
        let due = match self.outbox.paused_until() {
            Some(t) => due.max(until(t)),
            None => due,
        };
        due.clamp(Duration::from_millis(50), POLL)
    }

    /// Delivers what is in the outbox, waiting at most `timeout` (for retries that become due within it): for
    /// `snowpatrol run` and the demo, which have no daemon behind them. Returns how many alerts are left
    /// undelivered (they stay `pending` for the daemon or the next run, and a log line says so).
    pub async fn drain_outbox(&self, timeout: Duration) -> Result<usize, crate::PipelineError> {
        let stop = CancellationToken::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let timer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                stop.cancel();
            })
        };
        let mut delivered = 0;
        let result = loop {
            let pass = match self.deliver_pass(&stop).await {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            delivered += pass.delivered();
            let due = match self.store.next_alert_due().await {
                Ok(d) => d,
                Err(e) => break Err(e.into()),
            };
            let Some(due) = due else {
                break Ok(0);
            };
            if stop.is_cancelled() {
                break self
                    .store
                    .list_alerts(true, 100_000)
                    .await
                    .map(|rows| rows.len())
                    .map_err(Into::into);
            }
            if pass.claimed as i64 == BATCH && pass.released == 0 {
                continue;
            }
            let mut wait = until(due).max(Duration::from_millis(20));
            if let Some(t) = self.outbox.paused_until() {
                wait = wait.max(until(t));
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        };
        timer.abort();
        if let Ok(left) = result {
            if left > 0 {
                tracing::warn!(
                    delivered,
                    left,
                    waited_s = timeout.as_secs_f64(),
                    "alerts not delivered before exiting: they stay pending and the daemon (or the next `snowpatrol run`) \
                     delivers them; see `snowpatrol alerts --pending`"
                );
            } else if delivered > 0 {
                tracing::info!(delivered, "alert outbox drained");
            }
        }
        result
    }
}

fn sent(ts: String) -> AlertAttempt {
    AlertAttempt {
        state: AlertState::Sent,
        counted: 1,
        error: None,
        slack_ts: Some(ts),
        next_attempt_at: None,
        outcome_unknown: false,
    }
}

fn failed(error: String) -> AlertAttempt {
    AlertAttempt {
        state: AlertState::Failed,
        counted: 1,
        error: Some(error),
        slack_ts: None,
        next_attempt_at: None,
        outcome_unknown: false,
    }
}

fn unreadable(e: &serde_json::Error) -> AlertAttempt {
    AlertAttempt {
        counted: 0,
        ..failed(format!("stored message cannot be read: {e}"))
    }
}

/// Back to `pending` after the backoff for `attempts` (at least `retry_after`), or `failed` when this was the
/// last attempt.
fn retry_or_fail(
    notifier: &SlackNotifier,
    attempts: i32,
    max_attempts: i32,
    error: &str,
    retry_after: Option<Duration>,
    outcome_unknown: bool,
) -> AlertAttempt {
    if attempts >= max_attempts {
        tracing::error!(attempts, %error, "alert not delivered after its last attempt: failed");
        return AlertAttempt {
            outcome_unknown,
            ..failed(format!("gave up after {attempts} attempts: {error}"))
        };
    }
    let wait = notifier.retry_delay(attempts.max(1) as u32, retry_after);
    AlertAttempt {
        state: AlertState::Pending,
        counted: 1,
        error: Some(error.to_string()),
        slack_ts: None,
        next_attempt_at: Some(after(wait)),
        outcome_unknown,
    }
}

/// Queues one short alert per (run, task) that failed after its retries, listing the failed keys of a fan-out.
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
            .enqueue_alert(&key, AlertKind::TaskFailure, Some(f.run_id), &msg, None)
            .await
        {
            tracing::error!(error = %e, run_id = f.run_id, "could not queue the failure alert");
        }
    }
}

/// What a feedback click from Slack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackRecorded {
    /// Acknowledged, and the message updated.
    Acknowledged,
    /// Acknowledged; updating the message failed (logged).
    AcknowledgedMessageNotUpdated,
    /// No incident with that id (merged away, or a message from another installation).
    UnknownIncident,
}

/// Writes an alert (and its chart) under the data directory, on a blocking thread: file I/O does not belong
/// on the runtime's threads, which also serve the probes and the scheduler.
async fn write_alert_files(
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    text: String,
    attachment: Option<(std::path::PathBuf, Vec<u8>)>,
) -> Result<(), crate::PipelineError> {
    let cannot = |what: &str, p: &std::path::Path, e: std::io::Error| {
        crate::PipelineError::Config(format!("cannot {what} {}: {e}", p.display()))
    };
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| cannot("create", &dir, e))?;
        std::fs::write(&path, &text).map_err(|e| cannot("write", &path, e))?;
        if let Some((file, bytes)) = attachment {
            std::fs::write(&file, bytes).map_err(|e| cannot("write", &file, e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| crate::PipelineError::Config(format!("writing the alert's files stopped: {e}")))?
}
