-- Details of a digest as replies in its thread: a reply row waits for its parent to be delivered, and may carry
-- a file (a chart) uploaded with Slack's external upload flow.

ALTER TABLE alerts ADD COLUMN thread_of bigint REFERENCES alerts (alert_id);
ALTER TABLE alerts ADD COLUMN attachment bytea;
ALTER TABLE alerts ADD COLUMN attachment_name text;
COMMENT ON COLUMN alerts.thread_of IS 'The alert (a digest) this row replies to in its Slack thread; claimed only once that alert is sent, written or failed. NULL for top-level alerts.';
COMMENT ON COLUMN alerts.attachment IS 'A file to upload with this reply (a PNG chart), files.getUploadURLExternal + files.completeUploadExternal; its slack_ts then holds the Slack file id.';
CREATE INDEX alerts_replies ON alerts (thread_of) WHERE thread_of IS NOT NULL;
