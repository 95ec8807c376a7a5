"""Streaming through the gateway vs straight to the server.

A fake OpenAI-compatible server (standard library only) streams chat completion chunks, one
every DELAY ms. For each of RUNS requests, direct and through the gateway alternately, the
client reads the raw response with http.client and notes when the first byte and the first
content chunk arrive, and when the stream ends.

  stream_bench.py serve PORT                  # the fake server
  stream_bench.py measure DIRECT_URL GATEWAY_URL RUNS   # prints JSON
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNKS = 20
DELAY = 0.05


class FakeOpenAI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def send(data):
            event = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()

        for i in range(CHUNKS):
            time.sleep(DELAY)
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "fake",
                     "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
            send(json.dumps(chunk))
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def one(url):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    body = json.dumps({"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    started = time.perf_counter()
    conn.request("POST", u.path, body=body, headers={"content-type": "application/json"})
    response = conn.getresponse()
    first_byte = first_content = None
    while True:
        data = response.read1(65536)
        if not data:
            break
        now = time.perf_counter() - started
        first_byte = first_byte if first_byte is not None else now
        if first_content is None and b'"content"' in data:
            first_content = now
    done = time.perf_counter() - started
    conn.close()
    return first_byte, first_content, done


def main():
    if sys.argv[1] == "serve":
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), FakeOpenAI).serve_forever()
        return
    direct, gateway, runs = sys.argv[2], sys.argv[3], int(sys.argv[4])
    results = {"direct": [], "gateway": []}
    for _ in range(runs):
        results["direct"].append(one(direct))
        results["gateway"].append(one(gateway))
    ms = lambda xs: round(statistics.median(xs) * 1000, 2)
    summary = {}
    for name, rows in results.items():
        summary[name] = {
            "first_byte_ms": ms([r[0] for r in rows]),
            "first_content_ms": ms([r[1] for r in rows]),
            "complete_ms": ms([r[2] for r in rows]),
            "worst_first_content_ms": round(max(r[1] for r in rows) * 1000, 2),
        }
    summary["runs"] = runs
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
