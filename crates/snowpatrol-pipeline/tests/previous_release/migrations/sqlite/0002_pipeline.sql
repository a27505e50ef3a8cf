-- Snowpatrol pipeline data: metering, features, model registry, anomalies, reports and the alert outbox.

CREATE TABLE warehouse_metering_hourly (
    account_name                 TEXT             NOT NULL,
    warehouse_id                 INTEGER           NOT NULL,
    warehouse_name               TEXT             NOT NULL,
    service_type                 TEXT             NOT NULL,
    start_time                   TEXT      NOT NULL,
    end_time                     TEXT      NOT NULL,
    credits_used                 REAL NOT NULL,
    credits_used_compute         REAL NOT NULL,
    credits_used_cloud_services  REAL NOT NULL,
    loaded_by_run_id             INTEGER
);
CREATE INDEX warehouse_metering_hourly_by_time ON warehouse_metering_hourly (start_time);

CREATE TABLE warehouse_daily_usage (
    account_name                 TEXT             NOT NULL,
    warehouse_name               TEXT             NOT NULL,
    usage_date                   TEXT             NOT NULL,
    credits_used                 REAL NOT NULL,
    credits_used_compute         REAL NOT NULL,
    credits_used_cloud_services  REAL NOT NULL,
    hours_active                 REAL NOT NULL,
    peak_hourly_credits          REAL NOT NULL,
    trend                        REAL,
    seasonal                     REAL,
    residual                     REAL,
    updated_at                   TEXT      NOT NULL,
    PRIMARY KEY (account_name, warehouse_name, usage_date)
);

CREATE TABLE models (
    model_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_name     TEXT             NOT NULL,
    warehouse_name   TEXT             NOT NULL,
    version          INTEGER          NOT NULL,
    model_kind       TEXT             NOT NULL,
    params           TEXT            NOT NULL,
    threshold        REAL NOT NULL,
    training_start   TEXT             NOT NULL,
    training_end     TEXT             NOT NULL,
    metrics          TEXT            NOT NULL,
    drift            TEXT            NOT NULL DEFAULT '{}',
    model            TEXT            NOT NULL,
    training_run_id  INTEGER,
    created_at       TEXT      NOT NULL,
    CONSTRAINT models_unique_version UNIQUE (account_name, warehouse_name, version)
);

CREATE TABLE model_aliases (
    account_name    TEXT        NOT NULL,
    warehouse_name  TEXT        NOT NULL,
    alias           TEXT        NOT NULL,
    model_id        INTEGER      NOT NULL REFERENCES models (model_id),
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (account_name, warehouse_name, alias)
);

CREATE TABLE anomalies (
    anomaly_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    account_name      TEXT             NOT NULL,
    warehouse_name    TEXT             NOT NULL,
    usage_date        TEXT             NOT NULL,
    model_id          INTEGER           NOT NULL REFERENCES models (model_id),
    model_version     INTEGER          NOT NULL,
    run_id            INTEGER           NOT NULL,
    actual_credits    REAL NOT NULL,
    expected_credits  REAL NOT NULL,
    excess_credits    REAL NOT NULL,
    score             REAL NOT NULL,
    threshold         REAL NOT NULL,
    explanation       TEXT             NOT NULL,
    incident_start    TEXT             NOT NULL,
    detected_at       TEXT      NOT NULL,
    acknowledged_at   TEXT,
    ack_reason        TEXT CHECK (ack_reason IN ('false_positive', 'planned', 'expected')),
    CONSTRAINT anomalies_unique_day_model UNIQUE (account_name, warehouse_name, usage_date, model_version)
);

CREATE TABLE reports (
    run_id       INTEGER PRIMARY KEY,
    markdown     TEXT        NOT NULL,
    path         TEXT        NOT NULL,
    anomalies    INTEGER     NOT NULL,
    created_at   TEXT NOT NULL
);

CREATE TABLE alerts (
    alert_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key    TEXT        NOT NULL UNIQUE,
    kind          TEXT        NOT NULL CHECK (kind IN ('anomaly', 'task_failure')),
    run_id        INTEGER,
    channel       TEXT        NOT NULL,
    message       TEXT       NOT NULL,
    state         TEXT        NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'written')),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    last_error    text,
    slack_ts      text,
    claimed_at    TEXT,
    created_at    TEXT NOT NULL,
    sent_at       TEXT
);

CREATE VIEW open_incidents AS
SELECT account_name, warehouse_name, incident_start, max(usage_date) AS last_day, count(*) AS days,
       sum(excess_credits) AS excess_credits
FROM anomalies WHERE acknowledged_at IS NULL
GROUP BY account_name, warehouse_name, incident_start;
