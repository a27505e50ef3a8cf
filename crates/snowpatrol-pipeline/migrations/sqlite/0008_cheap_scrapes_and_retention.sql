-- Metrics scrapes that stay cheap.
-- See crates/snowpatrol-pipeline/migrations/postgres/0008_cheap_scrapes_and_retention.sql for the comments.

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
