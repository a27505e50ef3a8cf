-- Operator actions on runs (clear, mark) and task logs.
-- See crates/snowpatrol-store/migrations/postgres/0009_operations_and_task_logs.sql for the comments.

ALTER TABLE job_runs ADD COLUMN clear_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_runs ADD COLUMN note TEXT;
ALTER TABLE task_instances ADD COLUMN note TEXT;

ALTER TABLE dataset_events ADD COLUMN source_generation INTEGER NOT NULL DEFAULT 0;
DROP INDEX dataset_events_once_per_task;
CREATE UNIQUE INDEX dataset_events_once_per_task
    ON dataset_events (source_run_id, source_task, dataset_uri, source_generation) WHERE source_run_id IS NOT NULL;

CREATE TABLE task_logs (
    log_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            INTEGER     NOT NULL REFERENCES job_runs (run_id) ON DELETE CASCADE,
    task_instance_id  INTEGER     NOT NULL,
    task_name         TEXT        NOT NULL,
    map_key           TEXT        NOT NULL DEFAULT '',
    try_number        INTEGER     NOT NULL,
    logged_at         TEXT        NOT NULL,
    level             TEXT        NOT NULL CHECK (level IN ('error', 'warn', 'info', 'debug', 'trace')),
    target            TEXT        NOT NULL,
    message           TEXT        NOT NULL,
    fields            TEXT        NOT NULL DEFAULT '{}'
);
CREATE INDEX task_logs_by_run ON task_logs (run_id, log_id);
