-- Alert delivery off the predict run's critical path, with claims that expire and no repeat after a timeout.
--
-- The report task and the failure hook only insert `pending` rows; each daemon's outbox sender claims due rows
-- (state `sending`, `claimed_by`, `claim_expires_at`), makes ONE delivery attempt per claim and records the
-- outcome: `sent`, back to `pending` with `next_attempt_at` (exponential backoff, at least Slack's Retry-After),
-- or `failed` (a permanent Slack error, or the last of `max_attempts`). A claim that expires (its sender was
-- killed) is taken over by any sender. `outcome_unknown` marks a row whose last post may have reached Slack
-- (timed out, connection lost after sending, claim expired while sending): before posting it again the sender
-- looks for the message in conversations.history by its metadata (`snowpatrol_alert`, the dedupe key), looking
-- back to `first_attempt_at`.
--
-- Upgrades a 0003 database in place: `pending` rows are due at once; `sending` rows of the previous release
-- keep its rule (taken over 10 minutes after `claimed_at`) and are marked `outcome_unknown`; sent, written and
-- failed rows are unchanged. The states are the same, so the CHECK constraint stays as it is.

ALTER TABLE alerts ADD COLUMN claimed_by text;
ALTER TABLE alerts ADD COLUMN claim_expires_at timestamptz;
ALTER TABLE alerts ADD COLUMN next_attempt_at timestamptz;
ALTER TABLE alerts ADD COLUMN first_attempt_at timestamptz;
ALTER TABLE alerts ADD COLUMN outcome_unknown boolean NOT NULL DEFAULT false;

UPDATE alerts SET claimed_by = 'before-0004',
                  claim_expires_at = COALESCE(claimed_at, created_at) + interval '10 minutes',
                  first_attempt_at = COALESCE(claimed_at, created_at),
                  outcome_unknown = true
WHERE state = 'sending';
UPDATE alerts SET first_attempt_at = COALESCE(claimed_at, created_at) WHERE state = 'pending' AND attempts > 0;

-- The sender's query: due pending rows and expired claims.
CREATE INDEX alerts_undelivered ON alerts (state, next_attempt_at) WHERE state IN ('pending', 'sending');

COMMENT ON TABLE alerts IS 'Alert outbox: one row per incident or task failure (dedupe_key), enqueued by the report task or the failure hook and delivered by the daemons'' outbox senders; at most one Slack message per row (Slack message metadata snowpatrol_alert / dedupe_key, looked up before a re-post).';
COMMENT ON COLUMN alerts.state IS 'pending (waiting for next_attempt_at), sending (claimed by claimed_by until claim_expires_at), sent (slack_ts), written (no Slack: written to a file), failed (permanent Slack error or max_attempts reached; last_error).';
COMMENT ON COLUMN alerts.attempts IS 'Delivery attempts made (posts, history look-ups, and attempts of senders that died).';
COMMENT ON COLUMN alerts.claimed_by IS 'The sender (host:pid:random) holding the claim while state = sending.';
COMMENT ON COLUMN alerts.claim_expires_at IS 'When another sender may take the row over (its sender died mid-attempt).';
COMMENT ON COLUMN alerts.next_attempt_at IS 'Earliest next attempt of a pending row (backoff, Slack''s Retry-After); NULL = now.';
COMMENT ON COLUMN alerts.first_attempt_at IS 'When the first delivery attempt started: the look-back of the conversations.history check.';
COMMENT ON COLUMN alerts.outcome_unknown IS 'The last post may have reached Slack: look for its metadata in conversations.history before posting again.';
