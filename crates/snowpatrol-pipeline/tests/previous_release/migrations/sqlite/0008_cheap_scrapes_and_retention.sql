-- Metrics scrapes that stay cheap after a year of history, and history retention.
-- See migrations/postgres/0008_cheap_scrapes_and_retention.sql for the comments.

CREATE INDEX job_runs_finished_by_job ON job_runs (job_name, state, finished_at);
-- The predicate matches the scrape's exactly (0001's partial indexes split these states, so the planner
-- cannot use them for the three together and scanned the whole table).
CREATE INDEX task_instances_active ON task_instances (job_name, state) WHERE state IN ('queued', 'up_for_retry', 'running');
CREATE INDEX run_consumed_events_by_event ON run_consumed_events (event_id);
CREATE INDEX alerts_failed ON alerts (created_at) WHERE state = 'failed';
CREATE INDEX incidents_open ON incidents (account_name) WHERE status = 'open';

CREATE TABLE metering_freshness (
    account_name  TEXT PRIMARY KEY,
    newest_hour   TEXT NOT NULL,
    loaded_at     TEXT NOT NULL
);

INSERT INTO metering_freshness (account_name, newest_hour, loaded_at)
SELECT account_name, max(start_time), strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')
FROM warehouse_metering_hourly GROUP BY account_name;
