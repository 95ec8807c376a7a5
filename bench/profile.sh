#!/usr/bin/env bash
# Where a capturing gateway spends its CPU under the saturating load of bench/run.sh: perf
# samples the gateway process (all its threads) while wrk drives it, then prints the shares by
# shared object and the hottest symbols. Installs Debian's linux-perf when missing.
#
#   bench/profile.sh [seconds] [durability|off] [body-bytes]     (defaults 10, async, 350)
#
# Writes bench/PROFILE.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
capture="${2:-async}"
size="${3:-350}"
connections=32
command -v perf >/dev/null || extra_packages="linux-perf"

source bench/wrk-load.sh
source bench/inferlog-binary.sh

start_upstream
script=$(request_script "$size")

enabled=true durability="$capture"
if [ "$capture" = off ]; then enabled=false durability=async; fi
dir="$work/data"
cat > "$dir.toml" <<CONF
listen = "127.0.0.1:0"
data_dir = "$dir"
durability = "$durability"
[[endpoints]]
name = "bench"
upstream = "http://127.0.0.1:$UP_PORT"
[endpoints.capture]
enabled = $enabled
CONF
INFERLOG_LOG=warn "$INFERLOG" serve --config "$dir.toml" > "$dir.out" 2> "$dir.err" &
gw_pid=$!
pids+=("$gw_pid")
gw_addr=$(await_line "$dir.out" 'inferlog listening on http://' "$dir.err")
url="http://$gw_addr/endpoints/bench/invocations"
wrk -t1 -c"$connections" -d2s -s "$work/$script.lua" "$url" >/dev/null 2>&1
wrk -t1 -c"$connections" -d"$((duration + 2))s" -s "$work/$script.lua" "$url" > "$work/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 1
perf record -F 1999 -p "$gw_pid" -o "$work/perf.data" -- sleep "$duration" 2> "$work/perf.err" >/dev/null || { cat "$work/perf.err" >&2; exit 1; }
perf report -i "$work/perf.data" --stdio > /dev/null 2> "$work/report.err" || { cat "$work/report.err" >&2; exit 1; }
wait "$wrk_pid"
rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk.txt")
threads=$(ls "/proc/$gw_pid/task" | wc -l)

perf report -i "$work/perf.data" --no-children --sort comm,dso,symbol --stdio 2>/dev/null > "$work/report.txt"

python3 - "$work/report.txt" "$duration" "$capture" "$size" "$(nproc)" "$(date -u +%Y-%m-%d)" "$build_label" "$connections" "$rps" "$threads" > bench/PROFILE.md <<'PY'
import collections, re, sys
report, duration, capture, size, cores, day, build, connections, rps, threads = sys.argv[1:]
samples = []
for line in open(report):
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
    if m:
        samples.append((float(m.group(1)), m.group(2), m.group(3), m.group(5).strip()))
# Where each symbol belongs, first match wins: the gap's parts, not single functions.
kinds = [
    ("kernel: scheduling and wake-ups", lambda c, d, s: d.startswith("[kernel") and re.search(r"switch|schedule|futex|wake|spin|try_to_wake|enqueue|dequeue|idle|irq|tick|hrtimer|pick_next|update_|select_task|ttwu|cpu", s)),
    ("kernel: page faults and memory", lambda c, d, s: d.startswith("[kernel") and re.search(r"page|fault|mm|madvise|memcg|lru|folio|clear_|zap|tlb", s)),
    ("kernel: TCP and system calls", lambda c, d, s: d.startswith("[kernel")),
    ("allocator (mimalloc, malloc)", lambda c, d, s: re.match(r"_?mi_|mi\b|malloc|free|cfree|realloc|__libc_(malloc|free|calloc)|_int_", s)),
    ("memcpy/memmove/memcmp", lambda c, d, s: re.search(r"mem(move|cpy|cmp|set|chr)", s)),
    ("serde_json (log frames)", lambda c, d, s: "serde_json" in s),
    ("Parquet, Arrow, Delta (commits)", lambda c, d, s: re.search(r"parquet|arrow|deltalake|delta_kernel|snap|zstd|datafusion|object_store", s)),
    ("hyper, http, h1 parsing", lambda c, d, s: re.search(r"hyper|httparse|http::|http_body", s)),
    ("tokio runtime", lambda c, d, s: "tokio" in s),
    ("tracing, metrics", lambda c, d, s: re.search(r"tracing|metrics", s)),
    ("gateway request path (inferlog_proxy, axum)", lambda c, d, s: re.search(r"inferlog_proxy|axum|tower", s)),
    ("capture log (inferlog_capture, CRC)", lambda c, d, s: re.search(r"inferlog_capture|crc", s)),
    ("other", lambda c, d, s: True),
]
shares = collections.Counter()
threads_share = collections.Counter()
for pct, comm, dso, sym in samples:
    threads_share[comm] += pct
    for name, test in kinds:
        if test(comm, dso, sym):
            shares[name] += pct
            break
print("# Profile of the gateway under load\n")
print(f"bench/profile.sh {duration} {capture} {size} on {cores} cores, {day}, {build}: perf at 1999 Hz on the gateway process "
      f"(all {threads} threads) while wrk (1 thread, {connections} connections) sent {size}-byte JSON POSTs at {rps} req/s; "
      f"capture {capture}. Shares are of the gateway's samples.\n")
print("| where | share |\n|---|---|")
for name, _ in kinds:
    if shares[name] >= 0.05:
        print(f"| {name} | {shares[name]:.1f} % |")
print("\n| thread | share |\n|---|---|")
for comm, pct in threads_share.most_common(6):
    print(f"| {comm} | {pct:.1f} % |")
print("\nHottest symbols:\n\n```")
for pct, comm, dso, sym in sorted(samples, reverse=True)[:40]:
    print(f"{pct:6.2f}%  {comm[:15]:15}  {sym[:110]}")
print("```")
PY
cat bench/PROFILE.md
