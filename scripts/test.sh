#!/usr/bin/env bash
# The whole test suite. Starts what the tests need and fails loudly when something is missing:
# PostgreSQL (127.0.0.1:5432, trust auth) and a Python virtualenv with the test peers (fakesnow, statsmodels, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL: start the local cluster if it is installed but stopped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "== PostgreSQL is not answering; starting the local cluster"
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "FATAL: PostgreSQL is required at 127.0.0.1:5432 and could not be started" >&2; exit 1; }
export SNOWPATROL_TEST_DATABASE_URL="${SNOWPATROL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# Each test creates its own database; drop the ones earlier runs left behind (best effort).
for db in $(psql "$SNOWPATROL_TEST_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'snowpatrol\_test\_%'" 2>/dev/null); do
  psql "$SNOWPATROL_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
done

# Python peers (fakesnow for the Snowflake protocol), in a project-local virtualenv.
if ! .venv/bin/python -c 'import fakesnow, snowflake.connector, slack_sdk, prometheus_client, openapi_spec_validator' >/dev/null 2>&1; then
  echo "== creating .venv with the Python test peers"
  python3 -m venv .venv
  .venv/bin/pip install -q -r scripts/requirements-test.txt
fi
export SNOWPATROL_TEST_PYTHON="$PWD/.venv/bin/python"

# promtool (Prometheus's metrics linter) from Debian's prometheus package, unpacked into target/ without
# installing the server.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x target/tools/usr/bin/promtool ]; then
  echo "== fetching promtool from Debian's prometheus package"
  mkdir -p target/tools
  # `apt-get download` needs package lists; refresh them once if they are missing or stale.
  (cd target/tools && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } \
     && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb)
fi
export SNOWPATROL_TEST_PROMTOOL="$(command -v promtool || echo "$PWD/target/tools/usr/bin/promtool")"
"$SNOWPATROL_TEST_PROMTOOL" --version >/dev/null || { echo "FATAL: promtool is required" >&2; exit 1; }

# Headless Chromium and its WebDriver for the console's browser tests (Debian's chromium, chromium-driver).
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver for the console's browser tests"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
command -v chromedriver >/dev/null 2>&1 || { echo "FATAL: chromedriver is required for the console tests" >&2; exit 1; }

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# One build shared by every test binary; nextest runs them in parallel.
cargo nextest run --workspace --no-fail-fast "$@"
