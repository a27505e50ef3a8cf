-- Details of a digest as replies in its thread: a reply row waits for its parent to be delivered, and may carry
-- a file (a chart) uploaded with Slack's external upload flow.
-- alerts.thread_of: the alert (a digest) this row replies to; claimed only once that alert is sent, written or
-- failed. alerts.attachment: a file to upload with this reply (its slack_ts then holds the Slack file id).

ALTER TABLE alerts ADD COLUMN thread_of INTEGER REFERENCES alerts (alert_id);
ALTER TABLE alerts ADD COLUMN attachment BLOB;
ALTER TABLE alerts ADD COLUMN attachment_name TEXT;
CREATE INDEX alerts_replies ON alerts (thread_of) WHERE thread_of IS NOT NULL;
