-- Anomalies and incidents are facts about (account, warehouse, day), not about a model version (SQLite mirror of
-- migrations/postgres/0003_incidents.sql, which documents the rules: merged days keep the newest model version's
-- scores, the first detection time and the earliest acknowledgement; incidents are backfilled from runs of
-- consecutive days, acknowledged when any of their days was; old incident alerts are re-keyed).
-- SQLite cannot change a table's constraints, so anomalies is rebuilt: create new, copy, drop, rename.

DROP VIEW open_incidents;

-- 1. One row per warehouse-day: the newest model version's row, with the merged detection and acknowledgement.
CREATE TEMP TABLE anomalies_merged AS
SELECT a.anomaly_id, a.account_name, a.warehouse_name, a.usage_date, a.model_id, a.model_version, a.run_id,
       a.actual_credits, a.expected_credits, a.excess_credits, a.score, a.threshold, a.explanation,
       (SELECT min(b.detected_at) FROM anomalies b
        WHERE b.account_name = a.account_name AND b.warehouse_name = a.warehouse_name AND b.usage_date = a.usage_date)
           AS detected_at,
       a.detected_at AS scored_at,
       (SELECT min(b.acknowledged_at) FROM anomalies b
        WHERE b.account_name = a.account_name AND b.warehouse_name = a.warehouse_name AND b.usage_date = a.usage_date)
           AS acknowledged_at,
       (SELECT b.ack_reason FROM anomalies b
        WHERE b.account_name = a.account_name AND b.warehouse_name = a.warehouse_name AND b.usage_date = a.usage_date
          AND b.acknowledged_at IS NOT NULL
        ORDER BY b.acknowledged_at, b.anomaly_id LIMIT 1) AS ack_reason,
       julianday(a.usage_date) - row_number() OVER (PARTITION BY a.account_name, a.warehouse_name ORDER BY a.usage_date)
           AS island
FROM anomalies a
WHERE NOT EXISTS (
    SELECT 1 FROM anomalies b
    WHERE b.account_name = a.account_name AND b.warehouse_name = a.warehouse_name AND b.usage_date = a.usage_date
      AND (b.model_version, b.anomaly_id) > (a.model_version, a.anomaly_id)
);

-- 2. Incidents.
CREATE TABLE incidents (
    incident_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    account_name     TEXT    NOT NULL,
    warehouse_name   TEXT    NOT NULL,
    start_day        TEXT    NOT NULL,
    end_day          TEXT    NOT NULL,
    days             INTEGER NOT NULL,
    excess_credits   REAL    NOT NULL,
    excess_cost      REAL,
    peak_score       REAL    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    ack_reason       TEXT CHECK (ack_reason IN ('false_positive', 'planned', 'expected')),
    acknowledged_at  TEXT,
    acknowledged_by  TEXT,
    resolved_at      TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    CONSTRAINT incidents_unique_start UNIQUE (account_name, warehouse_name, start_day),
    CONSTRAINT incidents_days_in_order CHECK (start_day <= end_day),
    CONSTRAINT incidents_acknowledged_has_time CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL)
);
CREATE INDEX incidents_by_end_day ON incidents (end_day);

INSERT INTO incidents (account_name, warehouse_name, start_day, end_day, days, excess_credits, excess_cost, peak_score,
                       status, created_at, updated_at)
SELECT account_name, warehouse_name, min(usage_date), max(usage_date), count(*), sum(excess_credits), NULL, max(score),
       'open', min(detected_at), max(scored_at)
FROM anomalies_merged
GROUP BY account_name, warehouse_name, island
ORDER BY account_name, warehouse_name, min(usage_date);

UPDATE incidents
SET acknowledged_at = (
        SELECT min(m.acknowledged_at) FROM anomalies_merged m
        WHERE m.account_name = incidents.account_name AND m.warehouse_name = incidents.warehouse_name
          AND m.usage_date BETWEEN incidents.start_day AND incidents.end_day),
    ack_reason = (
        SELECT m.ack_reason FROM anomalies_merged m
        WHERE m.account_name = incidents.account_name AND m.warehouse_name = incidents.warehouse_name
          AND m.usage_date BETWEEN incidents.start_day AND incidents.end_day AND m.acknowledged_at IS NOT NULL
        ORDER BY m.acknowledged_at, m.anomaly_id LIMIT 1);
UPDATE incidents SET status = 'acknowledged' WHERE acknowledged_at IS NOT NULL;

CREATE TABLE anomalies_new (
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
    scored_at         TEXT      NOT NULL,
    incident_id       INTEGER NOT NULL REFERENCES incidents (incident_id),
    CONSTRAINT anomalies_unique_day UNIQUE (account_name, warehouse_name, usage_date)
);

INSERT INTO anomalies_new (anomaly_id, account_name, warehouse_name, usage_date, model_id, model_version, run_id,
                           actual_credits, expected_credits, excess_credits, score, threshold, explanation, incident_start,
                           detected_at, acknowledged_at, ack_reason, scored_at, incident_id)
SELECT m.anomaly_id, m.account_name, m.warehouse_name, m.usage_date, m.model_id, m.model_version, m.run_id,
       m.actual_credits, m.expected_credits, m.excess_credits, m.score, m.threshold, m.explanation, i.start_day,
       m.detected_at,
       CASE WHEN m.acknowledged_at IS NOT NULL THEN m.acknowledged_at
            WHEN i.status = 'acknowledged' THEN i.acknowledged_at END,
       CASE WHEN m.acknowledged_at IS NOT NULL THEN m.ack_reason
            WHEN i.status = 'acknowledged' THEN i.ack_reason END,
       m.scored_at, i.incident_id
FROM anomalies_merged m
JOIN incidents i ON i.account_name = m.account_name AND i.warehouse_name = m.warehouse_name
                AND m.usage_date BETWEEN i.start_day AND i.end_day
ORDER BY m.anomaly_id;

DROP TABLE anomalies;
ALTER TABLE anomalies_new RENAME TO anomalies;
CREATE INDEX anomalies_by_incident ON anomalies (incident_id);
DROP TABLE anomalies_merged;

-- 3. Re-key alerts already sent for an incident (the earliest one per incident).
UPDATE alerts
SET dedupe_key = 'incident:' || (
    SELECT i.incident_id FROM incidents i
    WHERE substr(alerts.dedupe_key, 1, length('incident:' || i.account_name || '.' || i.warehouse_name || ':'))
              = 'incident:' || i.account_name || '.' || i.warehouse_name || ':'
      AND length(alerts.dedupe_key) = length('incident:' || i.account_name || '.' || i.warehouse_name || ':') + 10
      AND substr(alerts.dedupe_key, -10) BETWEEN i.start_day AND i.end_day
    ORDER BY i.incident_id LIMIT 1)
WHERE alert_id IN (
    SELECT min(al.alert_id) FROM alerts al JOIN incidents i
      ON substr(al.dedupe_key, 1, length('incident:' || i.account_name || '.' || i.warehouse_name || ':'))
             = 'incident:' || i.account_name || '.' || i.warehouse_name || ':'
     AND length(al.dedupe_key) = length('incident:' || i.account_name || '.' || i.warehouse_name || ':') + 10
     AND substr(al.dedupe_key, -10) BETWEEN i.start_day AND i.end_day
    WHERE al.kind = 'anomaly'
    GROUP BY i.incident_id
);

-- 4. The view operators query.
CREATE VIEW open_incidents AS
SELECT account_name, warehouse_name, start_day AS incident_start, end_day AS last_day, CAST(days AS INTEGER) AS days,
       excess_credits, incident_id, excess_cost, peak_score, created_at, updated_at
FROM incidents WHERE status = 'open';
