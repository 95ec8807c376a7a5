#!/usr/bin/env bash
# Whether a capturing gateway's memory stays flat under a long saturating load: wrk (1 thread,
# 32 connections) sends bench/run.sh's 350-byte JSON POST for the whole run, capture on in
# async durability, nobody scraping /metrics; the gateway's RSS is read every 30 s.
#
#   bench/soak.sh [seconds] [body-bytes]      (defaults 600 and 350)
#   BENCH_GATEWAY_SETTINGS='compaction_interval_s = 0'   top-level settings added to the gateway's
#                                                        configuration, to tell what holds memory
#
# Writes bench/SOAK.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-600}"
size="${2:-350}"
connections=32

source bench/wrk-load.sh
source bench/inferlog-binary.sh

start_upstream
script=$(request_script "$size")

dir="$work/data"
settings="${BENCH_GATEWAY_SETTINGS:-}"
printf 'listen = "127.0.0.1:0"\ndata_dir = "%s"\ndurability = "async"\n%s\n[[endpoints]]\nname = "bench"\nupstream = "http://127.0.0.1:%s"\n' \
  "$dir" "$settings" "$UP_PORT" > "$dir.toml"
INFERLOG_LOG=warn "$INFERLOG" serve --config "$dir.toml" > "$dir.out" 2> "$dir.err" &
gw_pid=$!
pids+=("$gw_pid")
addr=$(await_line "$dir.out" 'inferlog listening on http://' "$dir.err")
wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$work/$script.lua" "http://$addr/endpoints/bench/invocations" > "$work/wrk.txt" 2>&1 &
wrk_pid=$!
: > "$work/rss"
for t in $(seq 30 30 "$duration"); do
  sleep 30
  echo "$t $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$gw_pid/status")" >> "$work/rss"
done
wait "$wrk_pid"
peak=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$gw_pid/status")
rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.txt")
total=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
rows=""
for _ in $(seq 120); do
  rows=$("$INFERLOG" query --data-dir "$dir" --format csv "SELECT count(*) AS n FROM bench_payload" 2>/dev/null | tail -1)
  [ -n "$rows" ] && [ "$rows" -ge "$total" ] && break
  sleep 1
done

{
  echo "# Memory over a long run"
  echo
  echo "bench/soak.sh $duration $size on $(nproc) cores, $(date -u +%Y-%m-%d), $build_label: wrk 1 thread, $connections connections,"
  echo "${duration}s of $size-byte JSON POSTs at $rps req/s ($total responses, $rows rows committed), capture on in async durability${settings:+, with ${settings//$'\n'/, }}."
  echo "Peak RSS (VmHWM) over the run: $peak MiB."
  echo
  echo "| seconds | RSS MiB |"
  echo "|---|---|"
  awk '{print "| " $1 " | " $2 " |"}' "$work/rss"
} > bench/SOAK.md
cat bench/SOAK.md
