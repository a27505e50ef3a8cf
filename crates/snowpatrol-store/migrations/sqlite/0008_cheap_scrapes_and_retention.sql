-- Metrics scrapes that stay cheap after a year of history, and history retention.
-- See crates/snowpatrol-store/migrations/postgres/0008_cheap_scrapes_and_retention.sql for the comments.

CREATE INDEX job_runs_finished_by_job ON job_runs (job_name, state, finished_at);
-- The predicate matches the scrape's exactly (0001's partial indexes split these states, so the planner
-- cannot use them for the three together and scanned the whole table).
CREATE INDEX task_instances_active ON task_instances (job_name, state) WHERE state IN ('queued', 'up_for_retry', 'running');
CREATE INDEX run_consumed_events_by_event ON run_consumed_events (event_id);
