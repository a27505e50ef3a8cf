-- Prep loads that cannot half-load, and a model registry a stale task try cannot write twice into.
-- See migrations/postgres/0005_load_ledger_and_fencing.sql for the comments.

CREATE TABLE metering_loads (
    usage_date        TEXT    PRIMARY KEY,
    hourly_rows       INTEGER NOT NULL,
    loaded_by_run_id  INTEGER,
    loaded_at         TEXT    NOT NULL
);

INSERT INTO metering_loads (usage_date, hourly_rows, loaded_by_run_id, loaded_at)
SELECT substr(start_time, 1, 10), count(*), max(loaded_by_run_id), strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now')
FROM warehouse_metering_hourly
GROUP BY substr(start_time, 1, 10);

ALTER TABLE models ADD COLUMN duplicate_of_model_id INTEGER REFERENCES models (model_id);
UPDATE models SET duplicate_of_model_id = (
    SELECT max(k.model_id) FROM models k
    WHERE k.training_run_id = models.training_run_id AND k.account_name = models.account_name
      AND k.warehouse_name = models.warehouse_name)
WHERE training_run_id IS NOT NULL
  AND model_id <> (SELECT max(k.model_id) FROM models k
                   WHERE k.training_run_id = models.training_run_id AND k.account_name = models.account_name
                     AND k.warehouse_name = models.warehouse_name);
CREATE UNIQUE INDEX models_once_per_run ON models (training_run_id, account_name, warehouse_name)
    WHERE training_run_id IS NOT NULL AND duplicate_of_model_id IS NULL;
