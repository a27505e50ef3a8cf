#!/usr/bin/env bash
# Idle daemon footprint: RSS and CPU of `snowpatrol daemon` (release) over one minute with no work,
# against a fresh PostgreSQL database. Usage: scripts/bench_idle.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
cargo build --release -p snowpatrol >/dev/null
db="snowpatrol_bench_idle_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" postgres
trap 'kill "$pid" 2>/dev/null || true; sleep 1; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db" postgres' EXIT
cfg=$(mktemp --suffix .toml)
printf '[server]\nhealth_addr = "127.0.0.1:19187"\n[examples]\nenabled = true\n' > "$cfg"
SNOWPATROL_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" ./target/release/snowpatrol --config "$cfg" daemon >/dev/null 2>&1 &
pid=$!
sleep 5
tick=$(getconf CLK_TCK)
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
sleep "$secs"
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
cpu=$(awk -v a="$u0" -v b="$s0" -v c="$u1" -v d="$s1" -v t="$tick" -v s="$secs" 'BEGIN { printf "%.3f", ((c+d)-(a+b))/t/s*100 }')
echo "idle daemon over ${secs}s: RSS ${rss} kB, CPU ${cpu}% of one core"
