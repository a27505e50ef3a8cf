-- Snowpatrol scheduler state. These tables are an operator interface: see docs/operations.md.

CREATE TABLE jobs (
    job_name        text PRIMARY KEY,
    paused          boolean     NOT NULL DEFAULT false,
    schedule        text        NOT NULL DEFAULT '',
    cron_cursor     timestamptz,
    registered_at   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
COMMENT ON TABLE jobs IS 'Jobs known to the scheduler, synced from the TOML configuration when a daemon starts.';
COMMENT ON COLUMN jobs.schedule IS 'Human-readable schedule: cron expression and time zone, dataset condition, or manual.';
COMMENT ON COLUMN jobs.cron_cursor IS 'Latest cron tick the leader has handled (created a run for, or skipped without catchup).';

CREATE TABLE job_dataset_subscriptions (
    job_name     text NOT NULL REFERENCES jobs (job_name) ON DELETE CASCADE,
    dataset_uri  text NOT NULL,
    PRIMARY KEY (dataset_uri, job_name)
);
COMMENT ON TABLE job_dataset_subscriptions IS 'Which job is scheduled on which dataset; an event on the dataset queues a trigger row for each subscriber.';

CREATE TABLE job_runs (
    run_id        bigserial PRIMARY KEY,
    job_name      text        NOT NULL REFERENCES jobs (job_name),
    run_key       text        NOT NULL,
    trigger_kind  text        NOT NULL CHECK (trigger_kind IN ('cron', 'dataset', 'manual')),
    logical_time  timestamptz NOT NULL,
    state         text        NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'cancelled')),
    params        jsonb       NOT NULL DEFAULT '{}',
    triggered_by  text        NOT NULL,
    queued_at     timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    error         text,
    CONSTRAINT job_runs_unique_key UNIQUE (job_name, run_key)
);
COMMENT ON TABLE job_runs IS 'One row per job run. (job_name, run_key) is unique, so replicas cannot create the same cron tick or dataset trigger twice.';
COMMENT ON COLUMN job_runs.run_key IS 'Deduplication key: cron:<tick UTC>, dataset:<first consumed event id>, manual:<uuid>.';
COMMENT ON COLUMN job_runs.logical_time IS 'The cron tick a run stands for; the creation time for dataset and manual runs.';
CREATE INDEX job_runs_by_job_state ON job_runs (job_name, state);
CREATE INDEX job_runs_by_state ON job_runs (state) WHERE state IN ('queued', 'running');

CREATE TABLE task_instances (
    task_instance_id  bigserial PRIMARY KEY,
    run_id            bigint      NOT NULL REFERENCES job_runs (run_id) ON DELETE CASCADE,
    job_name          text        NOT NULL,
    task_name         text        NOT NULL,
    map_key           text        NOT NULL DEFAULT '',
    state             text        NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed', 'skipped', 'up_for_retry', 'cancelled')),
    try_number        integer     NOT NULL DEFAULT 0,
    max_tries         integer     NOT NULL,
    worker_id         text,
    lease_expires_at  timestamptz,
    next_attempt_at   timestamptz,
    queued_at         timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    output            jsonb,
    error             text,
    CONSTRAINT task_instances_unique_key UNIQUE (run_id, task_name, map_key)
);
COMMENT ON TABLE task_instances IS 'One row per task (per map key for fanned-out tasks) per run, with its current try, lease and result.';
COMMENT ON COLUMN task_instances.map_key IS 'Key of a mapped (fanned-out) task instance, e.g. ACME_PROD.COMPUTE_WH; empty for unmapped tasks.';
COMMENT ON COLUMN task_instances.lease_expires_at IS 'A running instance whose lease expired belongs to a dead worker and is put back in the queue.';
COMMENT ON COLUMN task_instances.next_attempt_at IS 'Earliest time an up_for_retry instance may be claimed again (exponential backoff with jitter).';
CREATE INDEX task_instances_ready ON task_instances (task_instance_id) WHERE state IN ('queued', 'up_for_retry');
CREATE INDEX task_instances_running ON task_instances (lease_expires_at) WHERE state = 'running';
CREATE INDEX task_instances_by_run ON task_instances (run_id, task_name, state);

CREATE TABLE dataset_events (
    event_id          bigserial PRIMARY KEY,
    dataset_uri       text        NOT NULL,
    extra             jsonb       NOT NULL DEFAULT '{}',
    source_job        text,
    source_run_id     bigint,
    source_task       text,
    created_by        text        NOT NULL,
    created_at        timestamptz NOT NULL
);
COMMENT ON TABLE dataset_events IS 'Append-only log of dataset updates: written in the same transaction that marks the producing task successful, or by `snowpatrol emit`.';
CREATE UNIQUE INDEX dataset_events_once_per_task ON dataset_events (source_run_id, source_task, dataset_uri) WHERE source_run_id IS NOT NULL;
CREATE INDEX dataset_events_by_uri ON dataset_events (dataset_uri, event_id);

CREATE TABLE dataset_trigger_queue (
    job_name     text        NOT NULL,
    event_id     bigint      NOT NULL REFERENCES dataset_events (event_id),
    dataset_uri  text        NOT NULL,
    queued_at    timestamptz NOT NULL,
    PRIMARY KEY (job_name, event_id)
);
COMMENT ON TABLE dataset_trigger_queue IS 'Dataset events not yet consumed by a run of the subscribing job. Keyed on event ids (never on time windows), so no event is lost.';

CREATE TABLE run_consumed_events (
    run_id    bigint NOT NULL REFERENCES job_runs (run_id) ON DELETE CASCADE,
    event_id  bigint NOT NULL REFERENCES dataset_events (event_id),
    job_name  text   NOT NULL,
    PRIMARY KEY (run_id, event_id),
    CONSTRAINT run_consumed_events_once_per_job UNIQUE (job_name, event_id)
);
COMMENT ON TABLE run_consumed_events IS 'Lineage: which dataset events each dataset-triggered run consumed. An event is consumed at most once per job.';

CREATE TABLE scheduler_leases (
    lease_name  text PRIMARY KEY,
    holder      text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
COMMENT ON TABLE scheduler_leases IS 'Time-bound leader lease, informational on PostgreSQL (the leader holds an advisory lock) and authoritative on SQLite.';

CREATE VIEW latest_job_runs AS
SELECT DISTINCT ON (job_name) job_name, run_id, trigger_kind, state, logical_time, queued_at, started_at, finished_at,
       finished_at - started_at AS duration, error
FROM job_runs
ORDER BY job_name, run_id DESC;
COMMENT ON VIEW latest_job_runs IS 'The most recent run of every job.';

CREATE VIEW pending_triggers AS
SELECT q.job_name, q.dataset_uri, count(*) AS pending_events, min(q.event_id) AS first_event_id,
       min(e.created_at) AS oldest_event_at
FROM dataset_trigger_queue q JOIN dataset_events e USING (event_id)
GROUP BY q.job_name, q.dataset_uri;
COMMENT ON VIEW pending_triggers IS 'Dataset events waiting to trigger a run, per subscribing job and dataset.';

CREATE VIEW failures_last_24h AS
SELECT r.job_name, t.run_id, t.task_name, t.map_key, t.try_number, t.finished_at, t.error
FROM task_instances t JOIN job_runs r USING (run_id)
WHERE t.state = 'failed' AND t.finished_at > now() - interval '24 hours'
ORDER BY t.finished_at DESC;
COMMENT ON VIEW failures_last_24h IS 'Task instances that failed (after their retries) in the last 24 hours.';
