-- One Slack digest per predict run instead of one message per incident: the incident records which alert
-- told people about it, so a rerun, a retrain or a grown incident is never announced again.
-- incidents.alert_id: the alert (a run's digest; before 0006 one message per incident) that announced this
-- incident; NULL until announced. Set in the transaction that queues the digest.

ALTER TABLE incidents ADD COLUMN alert_id INTEGER REFERENCES alerts (alert_id);

-- Databases from before the digest: an incident whose own alert row (dedupe key incident:<id>) exists was
-- announced already.
UPDATE incidents SET alert_id = (
    SELECT a.alert_id FROM alerts a WHERE a.dedupe_key = 'incident:' || incidents.incident_id AND a.state <> 'failed'
);

CREATE INDEX incidents_not_announced ON incidents (end_day) WHERE alert_id IS NULL;
