-- Anomalies and incidents are facts about (account, warehouse, day), not about a model version.
--
-- Upgrades a 0002 database in place, keeping every anomalous day and every acknowledgement:
--   1. days scored by several model versions are merged into one row: the newest version's scores (model_id,
--      model_version, run_id = the model and run that scored the day last), detected_at = the first detection,
--      scored_at = the last re-score, and the earliest acknowledgement of any merged row (time and reason);
--   2. incidents (runs of consecutive anomalous days of a warehouse) become rows of their own, backfilled from
--      the merged days; an incident is acknowledged when any of its days was, with the earliest
--      acknowledgement's time and reason, and the days of an acknowledged incident carry that acknowledgement;
--   3. alerts sent under the old dedupe key `incident:ACCOUNT.WAREHOUSE:START` are re-keyed to
--      `incident:<incident_id>` (the earliest one per incident), so nothing is alerted twice after the upgrade;
--   4. open_incidents reads the incidents table, with the same leading columns as before.

DROP VIEW open_incidents;

-- 1. One row per warehouse-day.
ALTER TABLE anomalies ADD COLUMN scored_at timestamptz;
ALTER TABLE anomalies ADD COLUMN incident_id bigint;

WITH day AS (
    SELECT account_name, warehouse_name, usage_date,
           (array_agg(anomaly_id ORDER BY model_version DESC, anomaly_id DESC))[1] AS keeper,
           min(detected_at) AS first_detected_at,
           min(acknowledged_at) AS first_acknowledged_at,
           (array_agg(ack_reason ORDER BY acknowledged_at, anomaly_id) FILTER (WHERE acknowledged_at IS NOT NULL))[1]
               AS first_ack_reason
    FROM anomalies
    GROUP BY account_name, warehouse_name, usage_date
)
UPDATE anomalies a
SET scored_at = a.detected_at,
    detected_at = d.first_detected_at,
    acknowledged_at = d.first_acknowledged_at,
    ack_reason = d.first_ack_reason
FROM day d
WHERE a.anomaly_id = d.keeper;

DELETE FROM anomalies a
WHERE EXISTS (
    SELECT 1 FROM anomalies b
    WHERE b.account_name = a.account_name AND b.warehouse_name = a.warehouse_name AND b.usage_date = a.usage_date
      AND (b.model_version, b.anomaly_id) > (a.model_version, a.anomaly_id)
);

ALTER TABLE anomalies DROP CONSTRAINT anomalies_unique_day_model;
ALTER TABLE anomalies ADD CONSTRAINT anomalies_unique_day UNIQUE (account_name, warehouse_name, usage_date);

-- 2. Incidents.
CREATE TABLE incidents (
    incident_id      bigserial PRIMARY KEY,
    account_name     text             NOT NULL,
    warehouse_name   text             NOT NULL,
    start_day        date             NOT NULL,
    end_day          date             NOT NULL,
    days             integer          NOT NULL,
    excess_credits   double precision NOT NULL,
    excess_cost      double precision,
    peak_score       double precision NOT NULL,
    status           text             NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    ack_reason       text CHECK (ack_reason IN ('false_positive', 'planned', 'expected')),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    created_at       timestamptz      NOT NULL,
    updated_at       timestamptz      NOT NULL,
    CONSTRAINT incidents_unique_start UNIQUE (account_name, warehouse_name, start_day),
    CONSTRAINT incidents_days_in_order CHECK (start_day <= end_day),
    CONSTRAINT incidents_acknowledged_has_time CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL)
);
COMMENT ON TABLE incidents IS 'One row per incident: a run of consecutive anomalous days of one warehouse (its days are the anomalies rows with this incident_id). Predict creates, extends (a new adjacent day), merges (a day bridging two) and resolves incidents; operators acknowledge them (`snowpatrol anomalies ack ID`). One alert per incident, ever.';
COMMENT ON COLUMN incidents.start_day IS 'First anomalous day (UTC). Moves earlier when a re-read day just before it is flagged.';
COMMENT ON COLUMN incidents.end_day IS 'Last anomalous day (UTC) so far.';
COMMENT ON COLUMN incidents.days IS 'Number of anomalous days, end_day - start_day + 1.';
COMMENT ON COLUMN incidents.excess_credits IS 'Sum of the days'' excess credits (actual - expected), recomputed whenever a day is added or re-scored.';
COMMENT ON COLUMN incidents.excess_cost IS 'excess_credits x [pipeline] price_per_credit when a price is configured, else NULL (NULL for incidents backfilled by this migration until predict touches them again).';
COMMENT ON COLUMN incidents.peak_score IS 'Highest anomaly score of its days.';
COMMENT ON COLUMN incidents.status IS 'open (alerted, still going on or not yet known to have ended); resolved (set by predict: a day after end_day was scored and not anomalous; reopened if that day is flagged later); acknowledged (set by an operator; never alerted again, also when it grows).';
COMMENT ON COLUMN incidents.ack_reason IS 'false_positive (the model was wrong), planned (announced extra spend), expected (extra spend that is fine).';
COMMENT ON COLUMN incidents.acknowledged_by IS 'Who acknowledged it (the CLI records the OS user); NULL for acknowledgements backfilled from anomalies.';
COMMENT ON COLUMN incidents.resolved_at IS 'When predict saw it end (kept when it is acknowledged later).';

INSERT INTO incidents (account_name, warehouse_name, start_day, end_day, days, excess_credits, excess_cost, peak_score,
                       status, created_at, updated_at)
SELECT account_name, warehouse_name, min(usage_date), max(usage_date), count(*), sum(excess_credits), NULL, max(score),
       'open', min(detected_at), max(scored_at)
FROM (
    SELECT account_name, warehouse_name, usage_date, excess_credits, score, detected_at, scored_at,
           usage_date - CAST(row_number() OVER (PARTITION BY account_name, warehouse_name ORDER BY usage_date) AS integer)
               AS island
    FROM anomalies
) days
GROUP BY account_name, warehouse_name, island
ORDER BY account_name, warehouse_name, min(usage_date);

UPDATE anomalies a
SET incident_id = i.incident_id, incident_start = i.start_day
FROM incidents i
WHERE i.account_name = a.account_name AND i.warehouse_name = a.warehouse_name
  AND a.usage_date BETWEEN i.start_day AND i.end_day;

WITH acked AS (
    SELECT incident_id, min(acknowledged_at) AS acknowledged_at,
           (array_agg(ack_reason ORDER BY acknowledged_at, anomaly_id))[1] AS ack_reason
    FROM anomalies WHERE acknowledged_at IS NOT NULL
    GROUP BY incident_id
)
UPDATE incidents i
SET status = 'acknowledged', acknowledged_at = k.acknowledged_at, ack_reason = k.ack_reason
FROM acked k
WHERE k.incident_id = i.incident_id;

UPDATE anomalies a
SET acknowledged_at = i.acknowledged_at, ack_reason = i.ack_reason
FROM incidents i
WHERE i.incident_id = a.incident_id AND i.status = 'acknowledged' AND a.acknowledged_at IS NULL;

ALTER TABLE anomalies ALTER COLUMN scored_at SET NOT NULL;
ALTER TABLE anomalies ALTER COLUMN incident_id SET NOT NULL;
ALTER TABLE anomalies ADD CONSTRAINT anomalies_incident_fk FOREIGN KEY (incident_id) REFERENCES incidents (incident_id);
CREATE INDEX anomalies_by_incident ON anomalies (incident_id);
CREATE INDEX incidents_by_end_day ON incidents (end_day);

COMMENT ON TABLE anomalies IS 'Anomalous warehouse-days, one row per (account, warehouse, day) however often predict reruns or models retrain; a re-score updates the row (model, run, scores, scored_at). Each day belongs to one incident (incident_id).';
COMMENT ON COLUMN anomalies.model_id IS 'The model version that scored the day last (and flagged it).';
COMMENT ON COLUMN anomalies.run_id IS 'The predict run that scored the day last.';
COMMENT ON COLUMN anomalies.detected_at IS 'When the day was first flagged.';
COMMENT ON COLUMN anomalies.scored_at IS 'When the day was last (re-)scored and flagged.';
COMMENT ON COLUMN anomalies.incident_id IS 'The incident (run of consecutive anomalous days) the day belongs to.';
COMMENT ON COLUMN anomalies.incident_start IS 'start_day of its incident (kept for older queries; incident_id is the reference).';
COMMENT ON COLUMN anomalies.acknowledged_at IS 'Mirrors the acknowledgement of its incident (the unit operators acknowledge).';

-- 3. Re-key alerts already sent for an incident.
UPDATE alerts
SET dedupe_key = 'incident:' || (
    SELECT i.incident_id FROM incidents i
    WHERE left(alerts.dedupe_key, length('incident:' || i.account_name || '.' || i.warehouse_name || ':'))
              = 'incident:' || i.account_name || '.' || i.warehouse_name || ':'
      AND length(alerts.dedupe_key) = length('incident:' || i.account_name || '.' || i.warehouse_name || ':') + 10
      AND right(alerts.dedupe_key, 10) BETWEEN to_char(i.start_day, 'YYYY-MM-DD') AND to_char(i.end_day, 'YYYY-MM-DD')
    ORDER BY i.incident_id LIMIT 1)
WHERE alert_id IN (
    SELECT min(al.alert_id) FROM alerts al JOIN incidents i
      ON left(al.dedupe_key, length('incident:' || i.account_name || '.' || i.warehouse_name || ':'))
             = 'incident:' || i.account_name || '.' || i.warehouse_name || ':'
     AND length(al.dedupe_key) = length('incident:' || i.account_name || '.' || i.warehouse_name || ':') + 10
     AND right(al.dedupe_key, 10) BETWEEN to_char(i.start_day, 'YYYY-MM-DD') AND to_char(i.end_day, 'YYYY-MM-DD')
    WHERE al.kind = 'anomaly'
    GROUP BY i.incident_id
);
COMMENT ON COLUMN alerts.dedupe_key IS 'One alert per key, ever: incident:<incident_id> (incident:ACCOUNT.WAREHOUSE:START before 0003), failure:<run>:<task>:<map key>.';

-- 4. The view operators query.
CREATE VIEW open_incidents AS
SELECT account_name, warehouse_name, start_day AS incident_start, end_day AS last_day, CAST(days AS bigint) AS days,
       excess_credits, incident_id, excess_cost, peak_score, created_at, updated_at
FROM incidents WHERE status = 'open';
COMMENT ON VIEW open_incidents IS 'Open incidents (not acknowledged, not resolved) per warehouse, from the incidents table; incident_start, last_day, days and excess_credits as before 0003.';
