# Sourced by bench/run.sh and bench/tls.sh: the load both put on a gateway over loopback.
# Installs nginx, wrk and the Debian packages named in $extra_packages when missing; makes $work (removed on
# exit, with the processes in $pids and the nginx of $work/nginx.pid); writes the 350-byte
# JSON POST as wrk scripts $work/keepalive.lua and $work/close.lua (a new connection per
# request); defines free_port, await_line, start_nginx and run_wrk. Expects $duration and $connections.

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
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
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

# start_nginx HTTP_BLOCK: starts nginx (one worker, no access log, temp files under $work)
# serving the http-level directives and server blocks given.
start_nginx() {
  mkdir -p "$work/nginx"
  cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
$1
}
CONF
  "$NGINX" -c "$work/nginx.conf" -p "$work"
  sleep 0.5
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
    n, u = float(re.match(r"([\d.]+)", v).group(1)), re.search(r"(us|ms|s)$", v).group(1)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", t).group(1)); p99 = ms(re.search(r"99%\s+(\S+)", t).group(1))
total = int(re.search(r"(\d+) requests in", t).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {total} {non2xx.group(1) if non2xx else 0} {sum(map(int, errors.groups())) if errors else 0}")
PY
}
