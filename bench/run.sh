#!/usr/bin/env bash
# Throughput and latency of the capture gateway against a plain nginx reverse proxy, on one
# machine over loopback. Every variant fronts the same upstream: nginx returning a fixed JSON
# body. Load: wrk, 1 thread, 32 connections, a 350-byte JSON POST.
#
#   bench/run.sh [seconds-per-variant]      (default 10)
#
# Writes bench/RESULTS.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
connections=32

source bench/wrk-load.sh
source bench/inferlog-binary.sh

UP_PORT=$(free_port)
PROXY_PORT=$(free_port)

start_nginx "
  upstream model { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{\"predictions\": [0]}'; }
  }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"

start_gateway() { # start_gateway DATA_DIR DURABILITY ENABLED
  cat > "$1.toml" <<CONF
listen = "127.0.0.1:0"
data_dir = "$1"
durability = "$2"
[[endpoints]]
name = "bench"
upstream = "http://127.0.0.1:$UP_PORT"
[endpoints.capture]
enabled = $3
CONF
  INFERLOG_LOG=warn "$INFERLOG" serve --config "$1.toml" > "$1.out" 2> "$1.err" &
  gw_pid=$!
  pids+=("$gw_pid")
  gw_addr=$(await_line "$1.out" 'inferlog listening on http://' "$1.err")
}

row_count() {
  "$INFERLOG" query --data-dir "$1" --format csv "SELECT count(*) AS n FROM bench_payload" 2>/dev/null | tail -1
}

echo "variant | req/s | p50 ms | p99 ms | responses | non-2xx | rows committed | peak RSS MiB" > "$work/table"
record() { echo "$*" >> "$work/table"; echo "$*"; }

read -r rps p50 p99 total bad _ < <(run_wrk keepalive "http://127.0.0.1:$UP_PORT/invocations")
record "upstream direct | $rps | $p50 | $p99 | $total | $bad | - | -"
read -r rps p50 p99 total bad _ < <(run_wrk keepalive "http://127.0.0.1:$PROXY_PORT/invocations")
nginx_rps=$rps
record "nginx reverse proxy | $rps | $p50 | $p99 | $total | $bad | - | -"

off_rps=""
for variant in "off async false" "async async true" "sync sync true" "fsync fsync true"; do
  read -r label durability enabled <<<"$variant"
  dir="$work/data-$label"
  start_gateway "$dir" "$durability" "$enabled"
  # Warm the connection pools, then measure.
  wrk -t1 -c"$connections" -d1s -s "$work/keepalive.lua" "http://$gw_addr/endpoints/bench/invocations" >/dev/null 2>&1
  warm_rows=0
  if [ "$enabled" = true ]; then sleep 2; warm_rows=$(row_count "$dir"); fi
  read -r rps p50 p99 total bad _ < <(run_wrk keepalive "http://$gw_addr/endpoints/bench/invocations")
  rows="-"
  if [ "$enabled" = true ]; then
    for _ in $(seq 60); do
      sleep 1
      n=$(row_count "$dir")
      [ -n "$n" ] && [ "$((n - warm_rows))" -ge "$total" ] && break
    done
    rows=$((n - warm_rows))
  fi
  rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$gw_pid/status")
  kill -TERM "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  [ "$label" = off ] && off_rps=$rps
  record "inferlog capture $label | $rps | $p50 | $p99 | $total | $bad | $rows | $rss"
done

{
  echo "# Benchmark results"
  echo
  echo "bench/run.sh on $(nproc) cores, $(date -u +%Y-%m-%d), $build_label, wrk 1 thread, $connections connections, ${duration}s per variant, 350-byte JSON POST."
  echo "Upstream: nginx returning a fixed JSON body. 'rows committed' counts the rows the measured run added to the table"
  echo "(it can exceed 'responses' by the requests still in flight when wrk stopped counting)."
  echo
  echo "| $(head -1 "$work/table") |"
  echo "|---|---|---|---|---|---|---|---|"
  tail -n +2 "$work/table" | sed 's/^/| /; s/$/ |/'
  echo
  python3 - "$work/table" "$nginx_rps" "$off_rps" <<'PY'
import sys
rows = [l.split(" | ") for l in open(sys.argv[1]).read().splitlines()[1:]]
nginx, off = float(sys.argv[2]), float(sys.argv[3])
for r in rows:
    if r[0].startswith("inferlog"):
        rps = float(r[1])
        print(f"- {r[0]}: {rps/nginx:.2f}x nginx, {rps/off:.2f}x capture-off")
PY
} > bench/RESULTS.md
cat bench/RESULTS.md
