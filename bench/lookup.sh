#!/usr/bin/env bash
# Lookup of one exchange by request_id and by client_request_id in a large inference table.
#
#   bench/lookup.sh [rows]        (default 10000000)
#   PROFILE=dev bench/lookup.sh   (use the debug build instead of --release)
#   BENCH_INFERLOG=path/to/inferlog bench/lookup.sh   (use that binary, build nothing)
#
# Fills iris_payload with synthetic exchanges spread over 3 days (`inferlog generate`, 1M
# rows per commit, like a compacted table), starts a gateway on it, and times:
#   - POST /api/query on the running gateway (warm: the usual way programs look things up),
#     20 lookups of different ids each way, median and worst;
#   - `inferlog query` from a cold process (opens the tables, then looks up), 3 runs.
# Writes bench/LOOKUP.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-10000000}"
profile="${PROFILE:-release}"

if [ -n "${BENCH_INFERLOG:-}" ]; then
  INFERLOG="$BENCH_INFERLOG"
else
  if [ "$profile" = release ]; then
    cargo build --release --locked -p inferlog
  else
    cargo build --locked -p inferlog
  fi
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  dir_name=$([ "$profile" = release ] && echo release || echo debug)
  INFERLOG="$target_dir/$dir_name/inferlog"
fi

work=$(mktemp -d)
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "generating $rows rows"
gen_start=$(date +%s.%N)
"$INFERLOG" generate iris --data-dir "$work/data" --rows "$rows" --days 3 --rows-per-commit 1000000 2>/dev/null
gen_s=$(python3 -c "import time; print(f'{time.time() - $gen_start:.1f}')")
files=$(find "$work/data/tables/iris_payload" -name '*.parquet' | wc -l)
bytes=$(du -sb "$work/data/tables/iris_payload" | cut -f1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$INFERLOG" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --endpoint iris=http://127.0.0.1:9 \
  >"$work/gateway.out" 2>"$work/gateway.err" &
gateway_pid=$!
for _ in $(seq 100); do grep -q "listening" "$work/gateway.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening" "$work/gateway.out" || { echo "the gateway did not start:"; cat "$work/gateway.err"; exit 1; }

# Ids spread over the table: every (rows/20)-th exchange.
step=$((rows / 20))
ids=$(for k in $(seq 0 19); do echo "client-$((k * step + 7))"; done)

api_ms() { # sql -> milliseconds of one POST /api/query (checks one row came back)
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$1")
  curl -s -o "$work/resp.json" -w '%{time_total}' -H 'content-type: application/json' \
    -d "$body" "http://127.0.0.1:$port/api/query" | python3 -c 'import sys; print(f"{float(sys.stdin.read())*1000:.1f}")'
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["row_count"]==1, r' "$work/resp.json"
}

stats() { python3 -c 'import sys,statistics; v=sorted(float(x) for x in sys.stdin.read().split()); print(f"{statistics.median(v):.1f} | {v[-1]:.1f}")'; }

# Warm-up: the first query loads the Delta logs.
api_ms "SELECT request_id FROM iris_payload WHERE client_request_id = 'client-1'" >/dev/null

by_client=$(for id in $ids; do api_ms "SELECT request_id, status_code FROM iris_payload WHERE client_request_id = '$id'"; done | stats)
request_ids=$(for id in $ids; do
  "$INFERLOG" query --data-dir "$work/data" --format csv "SELECT request_id FROM iris_payload WHERE client_request_id = '$id'" | tail -1
done)
by_request=$(for id in $request_ids; do api_ms "SELECT request_id, status_code FROM iris_payload WHERE request_id = '$id'"; done | stats)

one_request_id=$(echo "$request_ids" | sed -n 10p)
cold=$(for _ in 1 2 3; do
  python3 - "$INFERLOG" "$work/data" "$one_request_id" <<'PY'
import subprocess, sys, time
t = time.time()
out = subprocess.run([sys.argv[1], "query", "--data-dir", sys.argv[2], "--format", "csv",
                      f"SELECT request_id FROM iris_payload WHERE request_id = '{sys.argv[3]}'"],
                     check=True, capture_output=True, text=True).stdout
assert sys.argv[3] in out, out
print(f"{(time.time() - t) * 1000:.1f}")
PY
done | stats)

peak_rss=$(grep VmHWM "/proc/$gateway_pid/status" | awk '{print $2/1024 " MiB"}')

report=$(cat <<EOF
# Lookup benchmark

$(date -u +%Y-%m-%d), $(nproc) cores, profile: $profile. Table: $rows rows over 3 days,
$files Parquet files, $((bytes / 1024 / 1024)) MiB (generated in $gen_s s by \`inferlog generate\`).

| lookup | median ms | worst ms |
|---|---|---|
| \`POST /api/query\` by client_request_id (20 ids) | $by_client |
| \`POST /api/query\` by request_id (20 ids) | $by_request |
| \`inferlog query\` by request_id, cold process (3 runs) | $cold |

Gateway peak RSS after the lookups: $peak_rss.
EOF
)
echo "$report" | tee bench/LOOKUP.md
