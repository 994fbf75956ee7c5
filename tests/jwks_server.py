#!/usr/bin/env python3
"""A tiny real JWKS server for meshrules' end-to-end tests.

    python3 tests/jwks_server.py --file JWKS.json [--port 0] [--path /keys]

Serves ``GET PATH`` with the current content of ``--file``, read again on every request, so a
test rotates keys by rewriting the file. Listens on 127.0.0.1; ``--port 0`` lets the kernel pick
one. Once bound it prints one JSON line ``{"port": N}`` on stdout (flushed).

Knobs, so a test can make the key server misbehave without restarting it:

- ``POST /__control`` with a JSON body ``{"status": 500, "delay_ms": 1000}``: answer ``PATH``
  with that status (``null``: 200) after that delay (0: none). Fields left out keep their value.
- ``GET /__fetches``: ``{"count": n, "last": {"path": ..., "host": ...}}``, the requests for
  ``PATH`` served so far (the key fetches); neither control request is counted.

Every other path answers 404. Stopping the process (SIGTERM) is how a test takes the key server
down; starting it again with the same ``--port`` brings it back.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_DELAY_MS = 30_000


class State:
    def __init__(self, file: Path, path: str):
        self.file = file
        self.path = path
        self.lock = threading.Lock()
        self.status: int | None = None
        self.delay_ms = 0
        self.count = 0
        self.last: dict | None = None


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "meshrules-test-jwks"
        sys_version = ""

        def log_message(self, fmt, *args):  # quiet: one line per fetch on stderr
            sys.stderr.write("jwks: " + (fmt % args) + "\n")

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if self.path == "/__fetches":
                with state.lock:
                    body = json.dumps({"count": state.count, "last": state.last}).encode()
                return self._send(200, body)
            if self.path.split("?", 1)[0] != state.path:
                return self._send(404, b"not found\n", "text/plain")
            with state.lock:
                state.count += 1
                state.last = {"path": self.path, "host": self.headers.get("host")}
                status, delay_ms = state.status, state.delay_ms
            if delay_ms:
                time.sleep(min(delay_ms, MAX_DELAY_MS) / 1000.0)
            try:
                body = state.file.read_bytes()
            except OSError as e:
                return self._send(500, f"cannot read {state.file}: {e}\n".encode(), "text/plain")
            self._send(status or 200, body)

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path != "/__control":
                return self._send(404, b"not found\n", "text/plain")
            try:
                knobs = json.loads(raw or b"{}")
            except ValueError:
                return self._send(400, b"body is not JSON\n", "text/plain")
            with state.lock:
                if "status" in knobs:
                    state.status = knobs["status"]
                if "delay_ms" in knobs:
                    state.delay_ms = int(knobs["delay_ms"] or 0)
                body = json.dumps({"status": state.status, "delay_ms": state.delay_ms}).encode()
            self._send(200, body)

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True, type=Path)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--path", default="/keys")
    args = ap.parse_args()

    state = State(args.file, args.path)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
