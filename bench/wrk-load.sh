# Sourced by the benchmarks: the load they put on a gateway over loopback.
# Installs nginx, wrk and the Debian packages named in $extra_packages when missing; makes $work (removed on
# exit, with the processes in $pids and every nginx started by start_nginx); writes the 350-byte
# JSON POST as wrk scripts $work/keepalive.lua and $work/close.lua (a new connection per
# request); defines free_port, await_line, start_nginx, run_wrk and paced_script. Expects
# $duration and $connections.

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
for package in ${extra_packages:-}; do command -v "$package" >/dev/null || need+=("$package"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  for pidfile in "$work"/nginx*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; done
  true
  rm -rf "$work"
}
trap cleanup EXIT

# await_line FILE PREFIX ERRFILE: prints what follows PREFIX on the first line of FILE that
# starts with it, waiting up to 20 s for a started process to write it; else shows ERRFILE
# and fails.
await_line() {
  local found=""
  for _ in $(seq 200); do
    found=$(sed -n "s#^$2##p" "$1" | head -1)
    [ -n "$found" ] && { echo "$found"; return 0; }
    sleep 0.1
  done
  cat "$3" >&2
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_nginx HTTP_BLOCK [NAME] [WORKERS]: starts an nginx (WORKERS worker processes, default
# one; no access log, temp files under $work) serving the http-level directives and server
# blocks given. Each NAME is its own nginx process tree, so a proxy and its upstream can be
# measured apart.
start_nginx() {
  local name="${2:-nginx}" workers="${3:-1}"
  mkdir -p "$work/$name"
  cat > "$work/$name.conf" <<CONF
worker_processes $workers;
pid $work/nginx-$name.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name; proxy_temp_path $work/$name; fastcgi_temp_path $work/$name;
  uwsgi_temp_path $work/$name; scgi_temp_path $work/$name;
$1
}
CONF
  "$NGINX" -c "$work/$name.conf" -p "$work"
  sleep 0.5
}

# body_script NAME BYTES: $work/NAME.lua, a kept-alive POST of a JSON body of exactly BYTES
# bytes (at least 350): dataframe_split rows of four features, padded with spaces.
body_script() {
  python3 - "$work/$1.lua" "$2" <<'PY'
import json, random, sys
random.seed(7)
size = int(sys.argv[2])
def body(rows):
    return json.dumps({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": rows}})
rows = [[round(random.uniform(0, 8), 3) for _ in range(4)] for _ in range(size // 20 + 1)]
while len(body(rows)) > size:
    rows = rows[: max(1, len(rows) - max(1, (len(body(rows)) - size) // 30))]
text = body(rows)
text += " " * (size - len(text))
with open(sys.argv[1], "w") as f:
    f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
    f.write("wrk.body = [==[" + text + "]==]\n")
PY
}

# start_upstream: sets UP_PORT and starts on it the model server every benchmark fronts: an
# nginx of its own (one worker) returning a fixed JSON body to any request, bodies up to 1 MiB.
start_upstream() {
  UP_PORT=$(free_port)
  start_nginx "
  client_max_body_size 1m; client_body_buffer_size 512k;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '{\"predictions\": [0]}'; }
  }" upstream 1
}

# request_script BYTES: the name of the wrk script posting a JSON body of BYTES bytes (350:
# bench/run.sh's classic body, with its client_request_id), written when missing.
request_script() {
  if [ "$1" = 350 ]; then echo keepalive; return; fi
  [ -f "$work/body-$1.lua" ] || body_script "body-$1" "$1"
  echo "body-$1"
}

# paced_script SCRIPT MS: a copy of $work/SCRIPT.lua whose connections each wait a random
# 0 to 2 x MS milliseconds (whole ones, wrk's delay hook) after a response before the next
# request: a moderate load of about connections / (MS + latency) requests a second. The
# pauses are random so that the connections do not keep in step and arrive in bursts.
paced_script() {
  { cat "$work/$1.lua"; echo "function delay() return math.random(0, 2 * $2) end"; } > "$work/$1-paced.lua"
  echo "$1-paced"
}

body=$(python3 -c '
import json
rows=[[5.1,3.5,1.4,0.2],[6.2,2.9,4.3,1.3],[7.7,3.0,6.1,2.3],[5.0,3.4,1.5,0.2],[6.4,3.2,4.5,1.5],[6.3,3.3,6.0,2.5]]
b=json.dumps({"client_request_id":"bench","dataframe_split":{"columns":["sepal length (cm)","sepal width (cm)","petal length (cm)","petal width (cm)"],"data":rows}})
b+=" "*(350-len(b)); print(b)')
for mode in keepalive close; do
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    if [ "$mode" = close ]; then echo 'wrk.headers["Connection"] = "close"'; fi
    # A level-2 long string: the body's own `]]` would end a `[[...]]` one.
    echo "wrk.body = [==[$body]==]"
  } > "$work/$mode.lua"
done

# run_wrk MODE URL: prints "req/s p50-ms p99-ms responses non-2xx socket-errors"
run_wrk() {
  wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$work/$1.lua" "$2" > "$work/wrk.txt" 2>&1
  python3 - "$work/wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
# wrk runs plain GETs when its Lua script does not load: measure nothing then.
if re.search(r"\.lua:\d+:", t):
    sys.exit("wrk could not run the request script: " + t[:300])
def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", v)
    if not m:
        sys.exit(f"unexpected latency {v!r} in wrk output: " + t[:1500])
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]
def found(pattern):
    m = re.search(pattern, t)
    if not m:
        sys.exit("unexpected wrk output: " + t[:600])
    return m.group(1)
rps = float(found(r"Requests/sec:\s+([\d.]+)"))
# Anchored: a "+/- Stdev" column such as 67.50% must not pass for the 50th percentile.
p50 = ms(found(r"(?m)^\s+50%\s+(\S+)")); p99 = ms(found(r"(?m)^\s+99%\s+(\S+)"))
total = int(found(r"(\d+) requests in"))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {total} {non2xx.group(1) if non2xx else 0} {sum(map(int, errors.groups())) if errors else 0}")
PY
}
