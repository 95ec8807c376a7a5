#!/usr/bin/env bash
# A fleet against one gateway, on the S3-compatible test server against local disk: capture
# throughput, time to queryable (from a response to the row being found by `inferlog query`),
# commit conflicts per second, and the files in the date partition after a long run.
#
#   bench/fleet.sh [seconds-per-variant] [seconds-of-the-long-run]     (default 20 and 600)
#
# Every gateway fronts the same upstream (nginx returning a fixed JSON body) with capture on,
# async durability and the default commit interval (1 s). Load: wrk, 1 thread per gateway,
# 32 connections in all, the 350-byte JSON POST of bench/run.sh; while it runs, a probe request
# every 2 s is timed until the query finds its row. The long run keeps three gateways on the
# store under the same load and counts the files of today's partition of the payload table
# (the lease holder compacts them). Writes bench/FLEET.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"
long_run="${2:-600}"
connections=32

source bench/wrk-load.sh
source bench/inferlog-binary.sh
PYTHON=$(scripts/python-env)
mkdir -p "$work/reader"

UP_PORT=$(free_port)
start_nginx "
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{\"predictions\": [0]}'; }
  }"

# The S3-compatible server of the tests (moto, one request at a time), on an ephemeral port.
"$PYTHON" scripts/s3_server.py > "$work/s3.out" 2> "$work/s3.err" &
pids+=("$!")
s3_url=$(await_line "$work/s3.out" 's3 listening on ' "$work/s3.err")
export AWS_ENDPOINT_URL="$s3_url" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

gw_pids=()
gw_addrs=()
start_gateway() { # start_gateway DATA_DIR TABLES_URI NAME [EXTRA_SETTING]
  cat > "$1.toml" <<CONF
listen = "127.0.0.1:0"
data_dir = "$1"
tables_uri = "$2"
gateway_name = "$3"
${4:-}
[[endpoints]]
name = "bench"
upstream = "http://127.0.0.1:$UP_PORT"
CONF
  INFERLOG_LOG=warn "$INFERLOG" serve --config "$1.toml" > "$1.out" 2> "$1.err" &
  local pid=$! addr
  pids+=("$pid")
  addr=$(await_line "$1.out" 'inferlog listening on http://' "$1.err")
  gw_pids+=("$pid")
  gw_addrs+=("$addr")
}

stop_gateways() {
  for pid in "${gw_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${gw_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  gw_pids=()
  gw_addrs=()
}

query() { # query TABLES_URI SQL: the first column of the first row
  "$INFERLOG" query --data-dir "$work/reader" --tables-uri "$1" --format csv "$2" 2>/dev/null | sed -n 2p
}

metric_sum() { # metric_sum NAME: the metric summed over the running gateways
  local total=0 v
  for addr in "${gw_addrs[@]}"; do
    v=$(curl -s "http://$addr/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%.0f", s}')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# probe TABLES_URI ADDR: seconds from the probe's response until the query finds its row
probe() {
  local id="probe-$RANDOM$RANDOM" start end
  curl -s -o /dev/null -H 'content-type: application/json' \
    -d "{\"client_request_id\": \"$id\", \"inputs\": [1]}" "http://$2/endpoints/bench/invocations"
  start=$(date +%s.%N)
  for _ in $(seq 300); do
    [ "$(query "$1" "SELECT count(*) FROM bench_payload WHERE client_request_id = '$id'")" = 1 ] && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}

# load N: wrk on every running gateway at once, $connections split among them; prints the
# summed req/s, the worst p99 and the responses, then the median and worst time to queryable
load() {
  local tables=$1 n=${#gw_addrs[@]} per=$((connections / ${#gw_addrs[@]})) i
  for i in $(seq 0 $((n - 1))); do
    # Warm the pools.
    wrk -t1 -c"$per" -d1s -s "$work/keepalive.lua" "http://${gw_addrs[$i]}/endpoints/bench/invocations" >/dev/null 2>&1
  done
  local wrk_pids=()
  for i in $(seq 0 $((n - 1))); do
    wrk -t1 -c"$per" -d"${duration}s" --latency -s "$work/keepalive.lua" \
      "http://${gw_addrs[$i]}/endpoints/bench/invocations" > "$work/wrk-$i.txt" 2>&1 &
    wrk_pids+=("$!")
  done
  local probes=() end=$((SECONDS + duration - 2))
  sleep 3
  while [ "$SECONDS" -lt "$end" ]; do
    probes+=("$(probe "$tables" "${gw_addrs[$((${#probes[@]} % n))]}")")
    sleep 2
  done
  wait "${wrk_pids[@]}"
  python3 - "$work" "$n" "${probes[@]}" <<'PY'
import re, statistics, sys
work, n, probes = sys.argv[1], int(sys.argv[2]), [float(p) for p in sys.argv[3:]]
rps = p99 = total = 0
for i in range(n):
    t = open(f"{work}/wrk-{i}.txt").read()
    rps += float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    v = re.search(r"99%\s+(\S+)", t).group(1)
    x, u = float(re.match(r"([\d.]+)", v).group(1)), re.search(r"(us|ms|s)$", v).group(1)
    p99 = max(p99, x / 1000 if u == "us" else x * 1000 if u == "s" else x)
    total += int(re.search(r"(\d+) requests in", t).group(1))
print(f"{rps:.0f} {p99:.2f} {total} {statistics.median(probes):.2f} {max(probes):.2f}")
PY
}

echo "variant | req/s | p99 ms | responses | time to queryable, median s | worst s | commit conflicts/s" > "$work/table"
record() { echo "$*" >> "$work/table"; echo "$*"; }

variant() { # variant LABEL TABLES_URI GATEWAYS
  local label=$1 tables=$2 n=$3 i dir
  for i in $(seq 1 "$n"); do
    dir="$work/$(echo "$label" | tr -c 'a-z0-9\n' '-')-gw$i"
    # Local tables have no leases: one gateway of several on one folder compacts.
    if [ "$i" -gt 1 ] && [[ "$tables" != s3://* ]]; then
      start_gateway "$dir" "$tables" "gw-$i" "compaction_interval_s = 0"
    else
      start_gateway "$dir" "$tables" "gw-$i"
    fi
  done
  local conflicts_before
  conflicts_before=$(metric_sum inferlog_table_commit_conflicts_total)
  read -r rps p99 total median worst < <(load "$tables")
  local conflicts
  conflicts=$(( $(metric_sum inferlog_table_commit_conflicts_total) - conflicts_before ))
  stop_gateways
  record "$label | $rps | $p99 | $total | $median | $worst | $(python3 -c "print(f'{$conflicts / $duration:.2f}')")"
}

variant "1 gateway, local disk" "$work/local-1" 1
variant "3 gateways, local disk" "$work/local-3" 3
variant "1 gateway, S3" "s3://inferlog/fleet-1" 1
variant "3 gateways, S3" "s3://inferlog/fleet-3" 3

# The long run: three gateways on the store; how many files today's partition holds at the end.
for i in 1 2 3; do start_gateway "$work/long-gw$i" "s3://inferlog/long" "gw-$i"; done
per=$((connections / 3))
long_pids=()
for addr in "${gw_addrs[@]}"; do
  wrk -t1 -c"$per" -d"${long_run}s" -s "$work/keepalive.lua" "http://$addr/endpoints/bench/invocations" > /dev/null 2>&1 &
  long_pids+=("$!")
done
wait "${long_pids[@]}"
sleep 5
long_conflicts=$(metric_sum inferlog_table_commit_conflicts_total)
compacted=$(metric_sum inferlog_table_compacted_files_total)
rows=$(query "s3://inferlog/long" "SELECT count(*) FROM bench_payload")
files=$("$PYTHON" -c '
import datetime, os, sys
from deltalake import DeltaTable
opts = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
print(len(DeltaTable("s3://inferlog/long/bench_payload", storage_options=opts).file_uris([("date", "=", today)])))')
stop_gateways

{
  echo "# Fleet benchmark"
  echo
  echo "bench/fleet.sh on $(nproc) cores, $(date -u +%Y-%m-%d), $build_label, ${duration}s per variant, wrk 1 thread per gateway and $connections connections in all, 350-byte JSON POST, capture async, commits every 1 s."
  echo "S3: the tests' S3-compatible server (moto, one request at a time) on loopback. Time to queryable: from a probe's response until \`inferlog query\` (a new process each time) finds its row, one probe every 2 s under the load."
  echo
  echo "| $(head -1 "$work/table") |"
  echo "|---|---|---|---|---|---|---|"
  tail -n +2 "$work/table" | sed 's/^/| /; s/$/ |/'
  echo
  echo "Long run: 3 gateways on S3 for ${long_run}s under the same load: $rows rows; today's partition of bench_payload holds $files files at the end ($compacted small files compacted away by the lease holder); $long_conflicts commit conflicts in all ($(python3 -c "print(f'{$long_conflicts / $long_run:.2f}')")/s)."
} > bench/FLEET.md
cat bench/FLEET.md
