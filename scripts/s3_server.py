"""An in-memory S3-compatible server for the end-to-end tests: moto's S3, one request at a time.

The tests start it as a subprocess, `python scripts/s3_server.py [--port N] [--bucket NAME]...`,
read the single line `s3 listening on http://127.0.0.1:PORT` from its stdout, point the gateways
and readers at that URL with path-style addressing (AWS_ENDPOINT_URL, AWS_ALLOW_HTTP=true,
AWS_REGION=us-east-1, AWS_ACCESS_KEY_ID=test, AWS_SECRET_ACCESS_KEY=test; moto accepts any key)
and stop it with SIGTERM. It logs a line per request to stderr, so discard or drain that pipe.
Data lives only as long as the process.

moto checks `If-None-Match: *` and `If-Match: <etag>` on PutObject (412 on failure) but runs that
check and the write without a common lock, so under a threaded server two concurrent creates of
the same key can both succeed. Delta commits and the gateways' leases rely on exactly one winning,
so every request is served under one global lock.
"""

import argparse
import signal
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
from werkzeug.test import Client


def serialized(app):
    """Wraps a WSGI app so that whole requests run one at a time."""
    lock = threading.Lock()

    def serve(environ, start_response):
        # The lock covers reading the request body and producing the whole response body, since
        # moto does its checks and state changes while the app and its response iterator run.
        with lock:
            chunks = app(environ, start_response)
            try:
                return [b"".join(chunks)]
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()

    return serve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free one)")
    parser.add_argument("--bucket", action="append", help="bucket to create, repeatable (default: inferlog)")
    args = parser.parse_args()

    # What `moto_server` serves (it routes path-style requests on an IP host to S3), serialized.
    app = serialized(DomainDispatcherApplication(create_backend_app))
    for bucket in args.bucket or ["inferlog"]:
        status = Client(app).put(f"/{bucket}").status_code
        if status != 200:
            raise SystemExit(f"creating bucket {bucket} failed: HTTP {status}")

    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"s3 listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
