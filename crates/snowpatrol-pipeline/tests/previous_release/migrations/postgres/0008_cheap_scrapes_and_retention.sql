-- Metrics scrapes that stay cheap after a year of history, and history retention.
--
-- A scrape reads only unfinished rows (partial indexes of 0001), one index probe per job for the last success
-- and the last finish, the alert outbox's undelivered and failed rows, open incidents and one row per account
-- for data freshness. History retention deletes finished runs and old events in batches; the index on
-- run_consumed_events(event_id) lets it find events no kept run consumed.

CREATE INDEX job_runs_finished_by_job ON job_runs (job_name, state, finished_at);
-- The predicate matches the scrape's exactly (0001's partial indexes split these states, so the planner
-- cannot use them for the three together and scanned the whole table).
CREATE INDEX task_instances_active ON task_instances (job_name, state) WHERE state IN ('queued', 'up_for_retry', 'running');
CREATE INDEX run_consumed_events_by_event ON run_consumed_events (event_id);
CREATE INDEX alerts_failed ON alerts (created_at) WHERE state = 'failed';
CREATE INDEX incidents_open ON incidents (account_name) WHERE status = 'open';

CREATE TABLE metering_freshness (
    account_name  text        PRIMARY KEY,
    newest_hour   timestamptz NOT NULL,
    loaded_at     timestamptz NOT NULL
);
COMMENT ON TABLE metering_freshness IS 'Per account, the START_TIME of the newest hourly metering row prep has loaded (never moves back when an older window is reloaded), and when prep last loaded that account. `now() - newest_hour` is how stale the anomaly detection is.';

INSERT INTO metering_freshness (account_name, newest_hour, loaded_at)
SELECT account_name, max(start_time), now() FROM warehouse_metering_hourly GROUP BY account_name;
