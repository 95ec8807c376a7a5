#!/usr/bin/env bash
# What HTTPS costs through the gateway, on one machine over loopback: the gateway (capture
# on, async) with a plain listener, with an HTTPS listener, and with an https upstream.
# Upstream: nginx returning a fixed JSON body (over TLS for the https-upstream variant, with a
# private CA given as tls.upstream_ca). Load: wrk, 1 thread, 32 connections, the 350-byte
# JSON POST of bench/run.sh; once with keep-alive connections, once with a new connection
# (and so a new handshake) per request.
#
#   bench/tls.sh [seconds-per-variant]      (default 10)
#
# Writes bench/TLS.md and prints the same table. BENCH_INFERLOG=path measures that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
connections=32

extra_packages=openssl
source bench/wrk-load.sh
source bench/inferlog-binary.sh

# A private CA and one certificate for 127.0.0.1, used by both the gateway and nginx.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 2 \
  -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null

UP_PORT=$(free_port)
UP_TLS_PORT=$(free_port)
start_nginx "
  server {
    listen 127.0.0.1:$UP_PORT;
    listen 127.0.0.1:$UP_TLS_PORT ssl;
    ssl_certificate $work/server.pem;
    ssl_certificate_key $work/server.key;
    keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{\"predictions\": [0]}'; }
  }"

start_gateway() { # start_gateway DATA_DIR UPSTREAM TLS_TOML
  cat > "$1.toml" <<CONF
listen = "127.0.0.1:0"
data_dir = "$1"
$3
[[endpoints]]
name = "bench"
upstream = "$2"
CONF
  INFERLOG_LOG=warn "$INFERLOG" serve --config "$1.toml" > "$1.out" 2> "$1.err" &
  gw_pid=$!
  pids+=("$gw_pid")
  gw_url=$(await_line "$1.out" 'inferlog listening on ' "$1.err")
}

echo "variant | connections | req/s | p50 ms | p99 ms | responses | non-2xx | socket errors | peak RSS MiB" > "$work/table"
record() { echo "$*" >> "$work/table"; echo "$*"; }
# One line each (TOML inline tables): a variant is read with `read`.
listener_tls="tls = { cert = \"$work/server.pem\", key = \"$work/server.key\" }"
upstream_ca="tls = { upstream_ca = \"$work/ca.pem\" }"
for variant in "plain|http://127.0.0.1:$UP_PORT|" "https-listener|http://127.0.0.1:$UP_PORT|$listener_tls" \
  "https-upstream|https://127.0.0.1:$UP_TLS_PORT|$upstream_ca"; do
  IFS='|' read -r label upstream tls <<<"$variant"
  for mode in keepalive close; do
    dir="$work/data-$label-$mode"
    start_gateway "$dir" "$upstream" "$tls"
    # One request first: a variant that does not work is reported, not measured.
    check=$(curl -s --cacert "$work/ca.pem" -o "$work/check.txt" -w '%{http_code}' -X POST -H 'content-type: application/json' \
      -d '{"inputs": [1]}' "$gw_url/endpoints/bench/invocations" || true)
    if [ "$check" != 200 ]; then
      echo "$label: the gateway answered $check: $(cat "$work/check.txt")"
      sleep 2; "$INFERLOG" query --data-dir "$dir" "SELECT error FROM bench_payload" 2>/dev/null || true
      exit 1
    fi
    wrk -t1 -c"$connections" -d1s -s "$work/$mode.lua" "$gw_url/endpoints/bench/invocations" >/dev/null 2>&1
    read -r rps p50 p99 total bad errors < <(run_wrk "$mode" "$gw_url/endpoints/bench/invocations")
    rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$gw_pid/status")
    kill -TERM "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
    record "$label | $mode | $rps | $p50 | $p99 | $total | $bad | $errors | $rss"
  done
done

{
  echo "# HTTPS through the gateway"
  echo
  echo "bench/tls.sh on $(nproc) cores, $(date -u +%Y-%m-%d), $build_label, wrk 1 thread, $connections connections, ${duration}s per variant,"
  echo "350-byte JSON POST, capture on (async). TLS 1.3 with a P-256 certificate from a private CA; \`close\` opens a new"
  echo "connection (a full handshake, no resumption) per request. Upstream: nginx returning a fixed JSON body."
  echo
  echo "| $(head -1 "$work/table") |"
  echo "|---|---|---|---|---|---|---|---|---|"
  tail -n +2 "$work/table" | sed 's/^/| /; s/$/ |/'
} > bench/TLS.md
cat bench/TLS.md
