-- Snowpatrol pipeline data: metering, features, model registry, anomalies, reports and the alert outbox.

CREATE TABLE warehouse_metering_hourly (
    account_name                 text             NOT NULL,
    warehouse_id                 bigint           NOT NULL,
    warehouse_name               text             NOT NULL,
    service_type                 text             NOT NULL,
    start_time                   timestamptz      NOT NULL,
    end_time                     timestamptz      NOT NULL,
    credits_used                 double precision NOT NULL,
    credits_used_compute         double precision NOT NULL,
    credits_used_cloud_services  double precision NOT NULL,
    loaded_by_run_id             bigint
);
COMMENT ON TABLE warehouse_metering_hourly IS 'Hourly rows of WAREHOUSE_METERING_HISTORY as extracted; each prep run replaces its window (delete then insert), so reloads are idempotent.';
-- BRIN: rows arrive in time order per load, so block ranges stay narrow; far cheaper to maintain during
-- bulk loads than a btree, and enough for the per-window deletes of reloads.
CREATE INDEX warehouse_metering_hourly_by_time ON warehouse_metering_hourly USING brin (start_time);

CREATE TABLE warehouse_daily_usage (
    account_name                 text             NOT NULL,
    warehouse_name               text             NOT NULL,
    usage_date                   date             NOT NULL,
    credits_used                 double precision NOT NULL,
    credits_used_compute         double precision NOT NULL,
    credits_used_cloud_services  double precision NOT NULL,
    hours_active                 double precision NOT NULL,
    peak_hourly_credits          double precision NOT NULL,
    trend                        double precision,
    seasonal                     double precision,
    residual                     double precision,
    updated_at                   timestamptz      NOT NULL,
    PRIMARY KEY (account_name, warehouse_name, usage_date)
);
COMMENT ON TABLE warehouse_daily_usage IS 'Per (account, warehouse, UTC day): summed credits, hours active, peak hourly burn, and the additive period-7 decomposition (trend + seasonal + residual = credits_used). Zero-filled from the first day.';

CREATE TABLE models (
    model_id         bigserial PRIMARY KEY,
    account_name     text             NOT NULL,
    warehouse_name   text             NOT NULL,
    version          integer          NOT NULL,
    model_kind       text             NOT NULL,
    params           jsonb            NOT NULL,
    threshold        double precision NOT NULL,
    training_start   date             NOT NULL,
    training_end     date             NOT NULL,
    metrics          jsonb            NOT NULL,
    drift            jsonb            NOT NULL DEFAULT '{}',
    model            jsonb            NOT NULL,
    training_run_id  bigint,
    created_at       timestamptz      NOT NULL,
    CONSTRAINT models_unique_version UNIQUE (account_name, warehouse_name, version)
);
COMMENT ON TABLE models IS 'Model registry: every trained version per warehouse, with its parameters, threshold, training window, metrics, drift test and the serialized model.';

CREATE TABLE model_aliases (
    account_name    text        NOT NULL,
    warehouse_name  text        NOT NULL,
    alias           text        NOT NULL,
    model_id        bigint      NOT NULL REFERENCES models (model_id),
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (account_name, warehouse_name, alias)
);
COMMENT ON TABLE model_aliases IS 'Named pointers to model versions per warehouse: `latest` moves on every training, `champion` by hand.';

CREATE TABLE anomalies (
    anomaly_id        bigserial PRIMARY KEY,
    account_name      text             NOT NULL,
    warehouse_name    text             NOT NULL,
    usage_date        date             NOT NULL,
    model_id          bigint           NOT NULL REFERENCES models (model_id),
    model_version     integer          NOT NULL,
    run_id            bigint           NOT NULL,
    actual_credits    double precision NOT NULL,
    expected_credits  double precision NOT NULL,
    excess_credits    double precision NOT NULL,
    score             double precision NOT NULL,
    threshold         double precision NOT NULL,
    explanation       text             NOT NULL,
    incident_start    date             NOT NULL,
    detected_at       timestamptz      NOT NULL,
    acknowledged_at   timestamptz,
    ack_reason        text CHECK (ack_reason IN ('false_positive', 'planned', 'expected')),
    CONSTRAINT anomalies_unique_day_model UNIQUE (account_name, warehouse_name, usage_date, model_version)
);
COMMENT ON TABLE anomalies IS 'Anomalous warehouse-days, one row per (account, warehouse, day, model version) however often predict reruns; linked to the model and the run that found it. incident_start groups consecutive days into one incident.';

CREATE TABLE reports (
    run_id       bigint PRIMARY KEY,
    markdown     text        NOT NULL,
    path         text        NOT NULL,
    anomalies    integer     NOT NULL,
    created_at   timestamptz NOT NULL
);
COMMENT ON TABLE reports IS 'The Markdown report of each predict run (also saved under the data directory with its charts).';

CREATE TABLE alerts (
    alert_id      bigserial PRIMARY KEY,
    dedupe_key    text        NOT NULL UNIQUE,
    kind          text        NOT NULL CHECK (kind IN ('anomaly', 'task_failure')),
    run_id        bigint,
    channel       text        NOT NULL,
    message       jsonb       NOT NULL,
    state         text        NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'written')),
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    slack_ts      text,
    claimed_at    timestamptz,
    created_at    timestamptz NOT NULL,
    sent_at       timestamptz
);
COMMENT ON TABLE alerts IS 'Alert outbox: one row per incident or task failure (dedupe_key), delivered at least once; failed deliveries keep Slack''s error.';
COMMENT ON COLUMN alerts.state IS 'pending (to retry), sending (claimed by a replica at claimed_at; retried if that replica died), sent, failed (permanent Slack error), written (no Slack: written to a file).';

CREATE VIEW open_incidents AS
SELECT account_name, warehouse_name, incident_start, max(usage_date) AS last_day, count(*) AS days,
       sum(excess_credits) AS excess_credits
FROM anomalies WHERE acknowledged_at IS NULL
GROUP BY account_name, warehouse_name, incident_start;
COMMENT ON VIEW open_incidents IS 'Unacknowledged anomaly incidents (runs of consecutive anomalous days) per warehouse.';
