"""Opens an HTML report in headless Chromium over the DevTools protocol and prints, as JSON,
what a reader would see: console errors and warnings, exceptions, every network request
other than the page itself, the title, and how many `svg.chart` elements were laid out with
a size and have drawn shapes.

Usage: check_report.py REPORT.html   (Chromium from $CHROMIUM, or /usr/bin/chromium)
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

MEASURE = """(() => {
  const charts = [...document.querySelectorAll('svg.chart')];
  const drawn = charts.filter(svg => {
    const box = svg.getBoundingClientRect();
    const shapes = svg.querySelectorAll('rect, path, polyline, line, circle');
    return box.width > 50 && box.height > 50 && shapes.length > 0;
  });
  return JSON.stringify({title: document.title, charts: charts.length, drawn_charts: drawn.length});
})()"""


def main():
    page = pathlib.Path(sys.argv[1]).resolve().as_uri()
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="inferlog-chromium-")
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = pathlib.Path(profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or browser.poll() is not None:
                sys.exit(f"Chromium ({chromium}) did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        target = next(t for t in targets if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            print(json.dumps(inspect(ws, page)))
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


def inspect(ws, page):
    next_id = [0]
    problems, requests, results = [], [], {}
    loaded = [False]

    def handle(message):
        method, params = message.get("method"), message.get("params", {})
        if "id" in message:
            results[message["id"]] = message
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
            problems.append({"console": params["type"], "args": [a.get("value") for a in params["args"]]})
        elif method == "Runtime.exceptionThrown":
            problems.append({"exception": params["exceptionDetails"].get("text")})
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            problems.append({"log": params["entry"]["text"]})
        elif method == "Network.requestWillBeSent" and params["request"]["url"] != page:
            requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            loaded[0] = True

    def call(method, **params):
        next_id[0] += 1
        ws.send(json.dumps({"id": next_id[0], "method": method, "params": params}))
        while next_id[0] not in results:
            handle(json.loads(ws.recv(timeout=30)))
        reply = results.pop(next_id[0])
        if "error" in reply:
            sys.exit(f"{method}: {reply['error']}")
        return reply["result"]

    for domain in ("Runtime", "Log", "Network", "Page"):
        call(f"{domain}.enable")
    call("Page.navigate", url=page)
    deadline = time.time() + 30
    while not loaded[0]:
        if time.time() > deadline:
            sys.exit("the page did not finish loading")
        handle(json.loads(ws.recv(timeout=30)))
    # Late console messages and requests (none expected) still get a moment to show.
    time.sleep(0.5)
    measured = json.loads(call("Runtime.evaluate", expression=MEASURE)["result"]["value"])
    return {"problems": problems, "requests": requests, **measured}


if __name__ == "__main__":
    main()
