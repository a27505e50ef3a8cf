-- Alert delivery off the predict run's critical path (SQLite mirror of migrations/postgres/0004_alert_delivery.sql,
-- which documents the columns and the upgrade: pending rows due at once; sending rows of the previous release
-- taken over 10 minutes after claimed_at and marked outcome_unknown; the states and their CHECK are unchanged).

ALTER TABLE alerts ADD COLUMN claimed_by TEXT;
ALTER TABLE alerts ADD COLUMN claim_expires_at TEXT;
ALTER TABLE alerts ADD COLUMN next_attempt_at TEXT;
ALTER TABLE alerts ADD COLUMN first_attempt_at TEXT;
ALTER TABLE alerts ADD COLUMN outcome_unknown INTEGER NOT NULL DEFAULT 0;

-- Timestamps are RFC 3339 text with an explicit +00:00 offset, as the application writes them.
UPDATE alerts SET claimed_by = 'before-0004',
                  claim_expires_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', COALESCE(claimed_at, created_at), '+10 minutes'),
                  first_attempt_at = COALESCE(claimed_at, created_at),
                  outcome_unknown = 1
WHERE state = 'sending';
UPDATE alerts SET first_attempt_at = COALESCE(claimed_at, created_at) WHERE state = 'pending' AND attempts > 0;

CREATE INDEX alerts_undelivered ON alerts (state, next_attempt_at) WHERE state IN ('pending', 'sending');
