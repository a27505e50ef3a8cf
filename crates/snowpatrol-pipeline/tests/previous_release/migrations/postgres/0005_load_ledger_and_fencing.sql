-- Prep loads that cannot half-load, and a model registry a stale task try cannot write twice into.

CREATE TABLE metering_loads (
    usage_date        date        PRIMARY KEY,
    hourly_rows       bigint      NOT NULL,
    loaded_by_run_id  bigint,
    loaded_at         timestamptz NOT NULL
);
COMMENT ON TABLE metering_loads IS 'Load ledger: one row per UTC day whose hourly and daily metering were loaded completely, written in the same transaction as the rows. prep reloads every day from the first one missing here, so an interrupted load or downtime heals on the next run.';
COMMENT ON COLUMN metering_loads.hourly_rows IS 'Hourly rows the source returned for the day, all accounts together (one fetch covers every account of the source).';

-- Databases from before the ledger: a day counts as loaded when hourly rows exist for it. A day whose hourly
-- load was lost (the daily table had it, the hourly table did not) is therefore reloaded by the next prep.
INSERT INTO metering_loads (usage_date, hourly_rows, loaded_by_run_id, loaded_at)
SELECT CAST(start_time AT TIME ZONE 'UTC' AS date), count(*), max(loaded_by_run_id), now()
FROM warehouse_metering_hourly
GROUP BY 1;

ALTER TABLE models ADD COLUMN duplicate_of_model_id bigint REFERENCES models (model_id);
COMMENT ON COLUMN models.duplicate_of_model_id IS 'Set (by this migration) on a version that a second, stale try of the same training run registered before task fencing existed: it points at the version kept as that run''s model. NULL otherwise.';
UPDATE models m SET duplicate_of_model_id = k.keep
FROM (SELECT training_run_id, account_name, warehouse_name, max(model_id) AS keep
      FROM models WHERE training_run_id IS NOT NULL
      GROUP BY training_run_id, account_name, warehouse_name HAVING count(*) > 1) k
WHERE m.training_run_id = k.training_run_id AND m.account_name = k.account_name
  AND m.warehouse_name = k.warehouse_name AND m.model_id <> k.keep;
CREATE UNIQUE INDEX models_once_per_run ON models (training_run_id, account_name, warehouse_name)
    WHERE training_run_id IS NOT NULL AND duplicate_of_model_id IS NULL;

COMMENT ON TABLE scheduler_leases IS 'Time-bound leases: `scheduler-leader` is the leader lease on both backends (renewed every tick, judged by the database clock on PostgreSQL, taken over once expired).';
