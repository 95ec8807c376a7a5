#!/usr/bin/env bash
# Time to first byte and to first token of a streamed chat completion, straight to the model
# server and through the gateway (which records the stream, assembles it and measures TTFT).
#
#   bench/stream.sh [runs]                 (default 50)
#   BENCH_INFERLOG=path/to/inferlog [BENCH_LABEL=text] bench/stream.sh   (use that binary, build nothing)
#
# The server (bench/stream_bench.py) streams 20 chunks, one every 50 ms. Writes bench/STREAM.md
# and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-50}"
. bench/inferlog-binary.sh
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

server_port=$(free_port)
python3 bench/stream_bench.py serve "$server_port" & pids+=($!)
gateway_port=$(free_port)
"$INFERLOG" serve --listen "127.0.0.1:$gateway_port" --data-dir "$work/data" --endpoint "chat=http://127.0.0.1:$server_port" \
  >"$work/gateway.out" 2>"$work/gateway.err" & pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$gateway_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
result=$(python3 bench/stream_bench.py measure "http://127.0.0.1:$server_port/v1/chat/completions" \
  "http://127.0.0.1:$gateway_port/endpoints/chat/v1/chat/completions" "$runs")
sleep 2
recorded=$("$INFERLOG" query --data-dir "$work/data" --format json \
  "SELECT count(*) AS rows, count(*) FILTER (WHERE stream_status = 'completed' AND stream_chunks = 20) AS complete, approx_percentile_cont(time_to_first_token_ms, 0.5) AS recorded_ttft_ms FROM chat_payload" 2>/dev/null || echo '{}')
table=$(python3 - "$result" "$recorded" <<'PY'
import json, sys
r, rec = json.loads(sys.argv[1]), json.loads(sys.argv[2] or "{}")
d, g = r["direct"], r["gateway"]
rows = [("first byte", "first_byte_ms"), ("first content chunk (TTFT)", "first_content_ms"),
        ("whole stream (20 chunks × 50 ms)", "complete_ms"), ("worst TTFT", "worst_first_content_ms")]
print("| median over %d runs | direct | through the gateway | added |" % r["runs"])
print("|---|---|---|---|")
for label, key in rows:
    print(f"| {label} | {d[key]:.2f} ms | {g[key]:.2f} ms | {g[key] - d[key]:+.2f} ms |")
print()
print(f"Recorded: {rec.get('rows')} rows, {rec.get('complete')} with stream_status = completed and 20 chunks; "
      f"median time_to_first_token_ms in the table {rec.get('recorded_ttft_ms')} ms.")
PY
)
cat > bench/STREAM.md <<MD
# Streaming benchmark

\`bench/stream.sh $runs\` on $(nproc) cores, $(date -u +%F), $build_label, async durability.
A fake OpenAI-compatible server streams a chat completion of 20 chunks, one every 50 ms;
requests alternate between the server itself and the gateway in front of it.

$table
MD
cat bench/STREAM.md
