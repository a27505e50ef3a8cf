#!/usr/bin/env bash
# The metrics scrape's queries on a year of history (docs/benchmarks.md, "Metrics scrape"). Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth) and a built `snowpatrol` (target/debug or target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${SNOWPATROL_BIN:-target/release/snowpatrol}"
[ -x "$BIN" ] || BIN=target/debug/snowpatrol
BASE=postgres://postgres@127.0.0.1:5432
psql "$BASE/postgres" -qc "DROP DATABASE IF EXISTS snowpatrol_scrape_bench" -c "CREATE DATABASE snowpatrol_scrape_bench"
DB="$BASE/snowpatrol_scrape_bench"
SNOWPATROL_DATABASE_URL="$DB" "$BIN" migrate >/dev/null
psql "$DB" -q <<'SQL'
INSERT INTO jobs (job_name, registered_at, updated_at) VALUES ('prep', now(), now()), ('train', now(), now()), ('predict', now(), now());
INSERT INTO job_runs (job_name, run_key, trigger_kind, logical_time, state, triggered_by, queued_at, started_at, finished_at)
SELECT j, 'k' || d, 'cron', now() - d * interval '1 day', 'success', 'bench', now() - d * interval '1 day',
       now() - d * interval '1 day', now() - d * interval '1 day' + interval '1 minute'
FROM generate_series(1, 365) d, unnest(ARRAY['prep', 'train', 'predict']) j;
INSERT INTO task_instances (run_id, job_name, task_name, map_key, state, try_number, max_tries, queued_at, finished_at)
SELECT r.run_id, r.job_name, 'score', 'WH' || k, 'success', 1, 3, r.queued_at, r.finished_at
FROM job_runs r, generate_series(1, 3000) k WHERE r.job_name <> 'prep';
INSERT INTO task_instances (run_id, job_name, task_name, map_key, state, try_number, max_tries, queued_at)
SELECT (SELECT max(run_id) FROM job_runs), 'predict', 'score2', 'WH' || k, 'queued', 0, 3, now() FROM generate_series(1, 50) k;
ANALYZE;
SQL
before="SELECT job_name, state, count(*) FROM job_runs GROUP BY job_name, state;
SELECT job_name, state, count(*) FROM task_instances GROUP BY job_name, state;
SELECT job_name, count(*) FROM dataset_trigger_queue GROUP BY job_name;"
now="SELECT job_name, state, count(*) FROM job_runs WHERE state IN ('queued', 'running') GROUP BY job_name, state;
SELECT job_name, state, count(*) FROM task_instances WHERE state IN ('queued', 'up_for_retry', 'running') GROUP BY job_name, state;
SELECT job_name, count(*) FROM dataset_trigger_queue GROUP BY job_name;
SELECT j.job_name, (SELECT max(r.finished_at) FROM job_runs r WHERE r.job_name = j.job_name AND r.state = 'success'),
       (SELECT max(r.finished_at) FROM job_runs r WHERE r.job_name = j.job_name AND r.state IN ('success', 'failed', 'cancelled')) FROM jobs j;"
for variant in before now; do
  sql="${!variant}"
  n=$(grep -c ';' <<<"$sql")
  { echo '\timing on'; for _ in 1 2 3 4 5; do echo "$sql"; done; } | psql "$DB" -q | awk '/^Time/ {print $2}' |
    python3 -c "
import sys
t = [float(x) for x in sys.stdin.read().split()]
per = sorted(sum(t[i*$n:(i+1)*$n]) for i in range(len(t)//$n))
print('$variant: per scrape ms, median %.1f (min %.1f, max %.1f)' % (per[len(per)//2], per[0], per[-1]))"
done
