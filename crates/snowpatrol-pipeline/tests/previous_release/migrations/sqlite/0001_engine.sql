-- Snowpatrol scheduler state (SQLite mirror of migrations/postgres; times are RFC 3339 UTC text). These tables are an operator interface: see docs/operations.md.

CREATE TABLE jobs (
    job_name        TEXT PRIMARY KEY,
    paused          INTEGER     NOT NULL DEFAULT 0,
    schedule        TEXT        NOT NULL DEFAULT '',
    cron_cursor     TEXT,
    registered_at   TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE job_dataset_subscriptions (
    job_name     TEXT NOT NULL REFERENCES jobs (job_name) ON DELETE CASCADE,
    dataset_uri  TEXT NOT NULL,
    PRIMARY KEY (dataset_uri, job_name)
);

CREATE TABLE job_runs (
    run_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_name      TEXT        NOT NULL REFERENCES jobs (job_name),
    run_key       TEXT        NOT NULL,
    trigger_kind  TEXT        NOT NULL CHECK (trigger_kind IN ('cron', 'dataset', 'manual')),
    logical_time  TEXT NOT NULL,
    state         TEXT        NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    params        TEXT       NOT NULL DEFAULT '{}',
    triggered_by  TEXT        NOT NULL,
    queued_at     TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    error         TEXT,
    CONSTRAINT job_runs_unique_key UNIQUE (job_name, run_key)
);
CREATE INDEX job_runs_by_job_state ON job_runs (job_name, state);
CREATE INDEX job_runs_by_state ON job_runs (state) WHERE state IN ('queued', 'running');

CREATE TABLE task_instances (
    task_instance_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            INTEGER      NOT NULL REFERENCES job_runs (run_id) ON DELETE CASCADE,
    job_name          TEXT        NOT NULL,
    task_name         TEXT        NOT NULL,
    map_key           TEXT        NOT NULL DEFAULT '',
    state             TEXT        NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'skipped', 'up_for_retry', 'cancelled')),
    try_number        INTEGER     NOT NULL DEFAULT 0,
    max_tries         INTEGER     NOT NULL,
    worker_id         TEXT,
    lease_expires_at  TEXT,
    next_attempt_at   TEXT,
    queued_at         TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    output            TEXT,
    error             TEXT,
    CONSTRAINT task_instances_unique_key UNIQUE (run_id, task_name, map_key)
);
CREATE INDEX task_instances_ready ON task_instances (task_instance_id) WHERE state IN ('queued', 'up_for_retry');
CREATE INDEX task_instances_running ON task_instances (lease_expires_at) WHERE state = 'running';
CREATE INDEX task_instances_by_run ON task_instances (run_id, task_name, state);

CREATE TABLE dataset_events (
    event_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_uri       TEXT        NOT NULL,
    extra             TEXT       NOT NULL DEFAULT '{}',
    source_job        TEXT,
    source_run_id     INTEGER,
    source_task       TEXT,
    created_by        TEXT        NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX dataset_events_once_per_task ON dataset_events (source_run_id, source_task, dataset_uri) WHERE source_run_id IS NOT NULL;
CREATE INDEX dataset_events_by_uri ON dataset_events (dataset_uri, event_id);

CREATE TABLE dataset_trigger_queue (
    job_name     TEXT        NOT NULL,
    event_id     INTEGER      NOT NULL REFERENCES dataset_events (event_id),
    dataset_uri  TEXT        NOT NULL,
    queued_at    TEXT NOT NULL,
    PRIMARY KEY (job_name, event_id)
);

CREATE TABLE run_consumed_events (
    run_id    INTEGER NOT NULL REFERENCES job_runs (run_id) ON DELETE CASCADE,
    event_id  INTEGER NOT NULL REFERENCES dataset_events (event_id),
    job_name  TEXT   NOT NULL,
    PRIMARY KEY (run_id, event_id),
    CONSTRAINT run_consumed_events_once_per_job UNIQUE (job_name, event_id)
);

CREATE TABLE scheduler_leases (
    lease_name  TEXT PRIMARY KEY,
    holder      TEXT        NOT NULL,
    expires_at  TEXT NOT NULL
);

CREATE VIEW latest_job_runs AS
SELECT r.job_name, r.run_id, r.trigger_kind, r.state, r.logical_time, r.queued_at, r.started_at, r.finished_at, r.error
FROM job_runs r
WHERE r.run_id = (SELECT max(run_id) FROM job_runs r2 WHERE r2.job_name = r.job_name);

CREATE VIEW pending_triggers AS
SELECT q.job_name, q.dataset_uri, count(*) AS pending_events, min(q.event_id) AS first_event_id,
       min(e.created_at) AS oldest_event_at
FROM dataset_trigger_queue q JOIN dataset_events e USING (event_id)
GROUP BY q.job_name, q.dataset_uri;

CREATE VIEW failures_last_24h AS
SELECT r.job_name, t.run_id, t.task_name, t.map_key, t.try_number, t.finished_at, t.error
FROM task_instances t JOIN job_runs r USING (run_id)
WHERE t.state = 'failed' AND t.finished_at > strftime('%Y-%m-%dT%H:%M:%S', 'now', '-1 day')
ORDER BY t.finished_at DESC;
