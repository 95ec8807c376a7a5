#!/usr/bin/env bash
# Peak memory of a capturing gateway under sustained load of 16 KiB JSON requests: wrk,
# 1 thread, 32 connections, capture on in async durability, upstream nginx returning a fixed
# JSON body. Each variant runs in a fresh gateway; peak RSS is the kernel's VmHWM at the end
# of the run, "after" the RSS once the log is committed. The gateway limits glibc to two malloc
# arenas unless MALLOC_ARENA_MAX says otherwise; the last variant shows glibc's own default.
#
#   bench/memory.sh [seconds-per-variant]      (default 30)
#
# Writes bench/MEMORY.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30}"
connections=32

source bench/wrk-load.sh
source bench/inferlog-binary.sh

UP_PORT=$(free_port)
start_nginx "
  client_max_body_size 1m; client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{\"predictions\": [0]}'; }
  }"

body_script big 16384

row_count() {
  "$INFERLOG" query --data-dir "$1" --format csv "SELECT count(*) AS n FROM bench_payload" 2>/dev/null | tail -1
}

echo "variant | req/s | responses | non-2xx | rows committed | peak RSS MiB | RSS after MiB" > "$work/table"
record() { echo "$*" >> "$work/table"; echo "$*"; }

run_variant() { # run_variant LABEL ENV CONFIG-LINES
  local label=$1 env=$2 extra=$3 dir="$work/data-$(echo "$1" | tr -c 'a-z0-9' '-')"
  printf 'listen = "127.0.0.1:0"\ndata_dir = "%s"\ndurability = "async"\n%b\n[[endpoints]]\nname = "bench"\nupstream = "http://127.0.0.1:%s"\n' \
    "$dir" "$extra" "$UP_PORT" > "$dir.toml"
  env $env INFERLOG_LOG=warn "$INFERLOG" serve --config "$dir.toml" > "$dir.out" 2> "$dir.err" &
  local pid=$! addr
  pids+=("$pid")
  addr=$(await_line "$dir.out" 'inferlog listening on http://' "$dir.err")
  wrk -t1 -c"$connections" -d"${duration}s" -s "$work/big.lua" "http://$addr/endpoints/bench/invocations" > "$work/wrk.txt" 2>&1
  local rps total bad n=""
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.txt")
  total=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
  bad=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt"); bad=${bad:-0}
  for _ in $(seq 120); do
    n=$(row_count "$dir")
    [ -n "$n" ] && [ "$n" -ge "$total" ] && break
    sleep 1
  done
  sleep 2
  local peak after
  peak=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status")
  after=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  record "$label | $rps | $total | $bad | $n | $peak | $after"
}

run_variant "commits of 200,000 records / 256 MiB" "" 'commit_max_records = 200000\ncommit_max_bytes = 268435456'
run_variant "defaults (commits of 50,000 records / 32 MiB, 2 malloc arenas)" "" ''
run_variant "defaults, glibc's own arena count (MALLOC_ARENA_MAX=16)" "MALLOC_ARENA_MAX=16" ''

{
  echo "# Memory under load"
  echo
  echo "bench/memory.sh on $(nproc) cores, $(date -u +%Y-%m-%d), $build_label, wrk 1 thread, $connections connections,"
  echo "${duration}s per variant, 16 KiB JSON POST, capture on in async durability, upstream nginx with a fixed body."
  echo
  echo "| $(head -1 "$work/table") |"
  echo "|---|---|---|---|---|---|---|"
  tail -n +2 "$work/table" | sed 's/^/| /; s/$/ |/'
} > bench/MEMORY.md
cat bench/MEMORY.md
