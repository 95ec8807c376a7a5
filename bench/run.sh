#!/usr/bin/env bash
# Throughput and latency of the capture gateway against a plain nginx reverse proxy, on one
# machine over loopback. Every variant fronts the same upstream: an nginx of its own returning
# a fixed JSON body. The reverse proxy is a second nginx process (worker_processes auto, as
# the gateway uses every core), so each proxy pays the same hop to a separate upstream
# process. Load: wrk, 1 thread, 32 connections, JSON POSTs.
#
#   bench/run.sh [seconds-per-variant] [rounds]      (defaults 10 and 3)
#   BENCH_BODIES="350 16384 262144"                  body sizes in bytes (the default)
#
# For each body size and round: the upstream direct, nginx, the gateway with capture off and
# with capture async, sync and fsync, saturated. Then a moderate load, paced at about a
# quarter of nginx's rate: the latency each proxy adds over going direct. Variants alternate
# within a round, so a noisy machine disturbs the ratios of one round alike; the tables
# give medians over rounds. Writes bench/RESULTS.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
rounds="${2:-3}"
bodies="${BENCH_BODIES:-350 16384 262144}"
connections=32

source bench/wrk-load.sh
source bench/inferlog-binary.sh

start_upstream
PROXY_PORT=$(free_port)
start_nginx "
  client_max_body_size 1m; client_body_buffer_size 512k;
  upstream model { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }" proxy auto

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

# measure SIZE ROUND VARIANT SCRIPT: one wrk run of VARIANT (direct, nginx, or a gateway
# "off async false"-style triple), appended to $work/raw as
# size|round|variant|req/s|p50|p99|responses|non-2xx|rows|peak RSS MiB|dropped by reason.
raw="$work/raw"
measure() {
  local size=$1 round=$2 variant=$3 script=$4 url rows="-" rss="-" dropped="-"
  case "$variant" in
    direct) url="http://127.0.0.1:$UP_PORT/invocations" ;;
    nginx) url="http://127.0.0.1:$PROXY_PORT/invocations" ;;
    *)
      read -r label durability enabled <<<"$variant"
      dir="$work/data-$label"
      rm -rf "$dir"
      start_gateway "$dir" "$durability" "$enabled"
      url="http://$gw_addr/endpoints/bench/invocations"
      ;;
  esac
  # Warm the connection pools, then measure.
  wrk -t1 -c"$connections" -d1s -s "$work/$script.lua" "$url" >/dev/null 2>&1
  local warm_rows=0
  if [ "${enabled:-false}" = true ]; then sleep 2; warm_rows=$(row_count "$dir"); fi
  run_wrk "$script" "$url" > "$work/measured"
  read -r rps p50 p99 total bad _ < "$work/measured"
  if [ "${enabled:-false}" = true ]; then
    local n=""
    for _ in $(seq 120); do
      n=$(row_count "$dir")
      [ -n "$n" ] && [ "$((n - warm_rows))" -ge "$total" ] && break
      sleep 1
    done
    rows=$((n - warm_rows))
  fi
  if [ -n "${label:-}" ]; then
    rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$gw_pid/status")
    # Records the gateway gave up on, by reason (inferlog_capture_dropped_total), e.g. "log_full=12".
    dropped=$(curl -s "http://$gw_addr/metrics" | awk '/^inferlog_capture_dropped_total/ && $2 > 0 {
        match($0, /reason="[^"]*"/); r = substr($0, RSTART + 8, RLENGTH - 9); n[r] += $2 }
      END { s = ""; for (r in n) s = s (s ? "," : "") r "=" n[r]; print (s ? s : "0") }')
    kill -TERM "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
    rm -rf "$dir"
    variant="inferlog capture $label"
  fi
  echo "$size|$round|$variant|$rps|$p50|$p99|$total|$bad|$rows|$rss|$dropped" | tee -a "$raw"
  label="" enabled=""
}

gateways=("off async false" "async async true" "sync sync true" "fsync fsync true")
: > "$raw"
for size in $bodies; do
  script=$(request_script "$size")
  for round in $(seq "$rounds"); do
    measure "$size" "$round" direct "$script"
    measure "$size" "$round" nginx "$script"
    for g in "${gateways[@]}"; do measure "$size" "$round" "$g" "$script"; done
  done
  # The paced load: each connection waits after every response, so that the rate is about a
  # quarter of nginx's saturated rate (wrk's delay is whole milliseconds).
  nginx_rps=$(awk -F'|' -v s="$size" '$1 == s && $3 == "nginx" {print $4}' "$raw" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  pause_ms=$(python3 -c "print(max(1, round($connections * 1000 / ($nginx_rps / 4))))")
  paced=$(paced_script "$script" "$pause_ms")
  for round in $(seq "$rounds"); do
    for v in direct nginx "off async false" "async async true"; do measure "$size" "paced-$round" "$v" "$paced"; done
  done
done

python3 - "$raw" "$(nproc)" "$(date -u +%Y-%m-%d)" "$build_label" "$duration" "$rounds" "$connections" > bench/RESULTS.md <<'PY'
import statistics, sys
raw, cores, day, build, duration, rounds, connections = sys.argv[1:]
rows = [l.split("|") for l in open(raw).read().splitlines() if l]
def median(xs):
    return statistics.median(xs) if xs else float("nan")
sizes = list(dict.fromkeys(r[0] for r in rows))
order = ["direct", "nginx", "inferlog capture off", "inferlog capture async", "inferlog capture sync", "inferlog capture fsync"]
names = {"direct": "upstream direct", "nginx": "nginx reverse proxy"}
def label(size):
    n = int(size)
    return f"{n} B" if n < 1024 else f"{n // 1024} KiB"

print("# Benchmark results\n")
print(f"bench/run.sh {duration} {rounds} on {cores} cores, {day}, {build}. wrk 1 thread, {connections} connections, "
      f"{duration}s per variant, {rounds} rounds; JSON POSTs. The upstream is an nginx returning a fixed JSON body; "
      "the reverse proxy a second nginx (worker_processes auto). Figures are medians over the rounds; a ratio is the "
      "median of the ratios measured within each round. 'rows' is whether every round committed a row per response "
      "(it can exceed the responses by requests still in flight when wrk stopped counting); 'dropped' is what the "
      "gateway counted in inferlog_capture_dropped_total, by reason, over the rounds.\n")
for size in sizes:
    sat = [r for r in rows if r[0] == size and not r[1].startswith("paced")]
    by = {}
    for r in sat:
        by.setdefault(r[2], []).append(r)
    print(f"## {label(size)} bodies, saturated\n")
    print("| variant | req/s | p50 ms | p99 ms | non-2xx | rows = responses | dropped | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for v in order:
        rs = by.get(v, [])
        if not rs:
            continue
        committed = "-" if rs[0][8] == "-" else ("yes" if all(int(r[8]) >= int(r[6]) for r in rs) else "NO")
        rss = "-" if rs[0][9] == "-" else str(max(int(r[9]) for r in rs))
        drops = {}
        for r in rs:
            for item in r[10].split(","):
                if "=" in item:
                    reason, n = item.split("=")
                    drops[reason] = drops.get(reason, 0) + int(float(n))
        dropped = "-" if rs[0][10] == "-" else (", ".join(f"{k} {n}" for k, n in sorted(drops.items())) or "0")
        print(f"| {names.get(v, v)} | {median([float(r[3]) for r in rs]):.0f} | {median([float(r[4]) for r in rs]):.3f} | "
              f"{median([float(r[5]) for r in rs]):.3f} | {sum(int(r[7]) for r in rs)} | {committed} | {dropped} | {rss} |")
    def ratio(a, b, col=3):
        per_round = {}
        for r in sat:
            per_round.setdefault(r[1], {})[r[2]] = float(r[col])
        xs = [x[a] / x[b] for x in per_round.values() if a in x and b in x and x[b] > 0]
        return median(xs), xs
    print()
    for text, a, b, col in [
        ("capture async / nginx, throughput", "inferlog capture async", "nginx", 3),
        ("capture async / capture off, throughput", "inferlog capture async", "inferlog capture off", 3),
        ("capture off / nginx, throughput", "inferlog capture off", "nginx", 3),
        ("capture sync / capture async, throughput", "inferlog capture sync", "inferlog capture async", 3),
        ("capture fsync / capture async, throughput", "inferlog capture fsync", "inferlog capture async", 3),
        ("capture async p99 / nginx p99", "inferlog capture async", "nginx", 5),
    ]:
        m, xs = ratio(a, b, col)
        print(f"- {text}: {m:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in xs)})")
    paced = [r for r in rows if r[0] == size and r[1].startswith("paced")]
    if paced:
        print(f"\n## {label(size)} bodies, paced at about a quarter of nginx's rate\n")
        print("| variant | req/s | p50 ms | p99 ms | p99 added over direct, ms |")
        print("|---|---|---|---|---|")
        per_round = {}
        for r in paced:
            per_round.setdefault(r[1], {})[r[2]] = r
        for v in ["direct", "nginx", "inferlog capture off", "inferlog capture async"]:
            rs = [x[v] for x in per_round.values() if v in x]
            added = [float(x[v][5]) - float(x["direct"][5]) for x in per_round.values() if v in x and "direct" in x]
            print(f"| {names.get(v, v)} | {median([float(r[3]) for r in rs]):.0f} | {median([float(r[4]) for r in rs]):.3f} | "
                  f"{median([float(r[5]) for r in rs]):.3f} | {'-' if v == 'direct' else f'{median(added):.3f}'} |")
    print()
PY
cat bench/RESULTS.md
