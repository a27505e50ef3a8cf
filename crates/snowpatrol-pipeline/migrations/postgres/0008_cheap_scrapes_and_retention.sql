-- Metrics scrapes that stay cheap: the alert outbox's failed rows, open incidents and one row per account for
-- data freshness, each read through a partial index or a table of one row per account.

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
