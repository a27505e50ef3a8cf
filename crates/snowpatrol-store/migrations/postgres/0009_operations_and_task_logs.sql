-- Operator actions on runs (clear, mark) and task logs. See docs/operations.md.

ALTER TABLE job_runs ADD COLUMN clear_count integer NOT NULL DEFAULT 0;
ALTER TABLE job_runs ADD COLUMN note text;
COMMENT ON COLUMN job_runs.clear_count IS 'How many times an operator cleared tasks of this run (snowpatrol clear); outlet events of a rerun carry it as source_generation.';
COMMENT ON COLUMN job_runs.note IS 'The last operator action on the run: who cleared or marked it, when and why.';

ALTER TABLE task_instances ADD COLUMN note text;
COMMENT ON COLUMN task_instances.note IS 'The last operator action on the instance (cleared, marked success or failed), with who and why.';

-- A task's outlet event is unique per run, task, dataset and generation: a task cleared and run again emits
-- again (its downstream jobs run on the new data), while a finish written twice still emits once.
ALTER TABLE dataset_events ADD COLUMN source_generation integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN dataset_events.source_generation IS 'The producing run''s clear_count when the event was emitted.';
DROP INDEX dataset_events_once_per_task;
CREATE UNIQUE INDEX dataset_events_once_per_task
    ON dataset_events (source_run_id, source_task, dataset_uri, source_generation) WHERE source_run_id IS NOT NULL;

CREATE TABLE task_logs (
    log_id            bigserial PRIMARY KEY,
    run_id            bigint      NOT NULL REFERENCES job_runs (run_id) ON DELETE CASCADE,
    task_instance_id  bigint      NOT NULL,
    task_name         text        NOT NULL,
    map_key           text        NOT NULL DEFAULT '',
    try_number        integer     NOT NULL,
    logged_at         timestamptz NOT NULL,
    level             text        NOT NULL CHECK (level IN ('error', 'warn', 'info', 'debug', 'trace')),
    target            text        NOT NULL,
    message           text        NOT NULL,
    fields            jsonb       NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE task_logs IS 'The tracing events of each task try (with the fields of its spans), at most [scheduler] task_log_max_lines per try; purged with their run.';
COMMENT ON COLUMN task_logs.task_instance_id IS 'No foreign key: the lines of an instance that a clear re-planned (deleted and created again) stay with their run.';
CREATE INDEX task_logs_by_run ON task_logs (run_id, log_id);
