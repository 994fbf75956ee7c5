#!/usr/bin/env python3
"""A real HTTP upstream for meshrules' end-to-end tests.

    python3 tests/upstream.py --listen NAME=PORT [--listen NAME=PORT ...]

Starts one HTTP/1.1 server per listener, all on 127.0.0.1 (``--bind ADDR``: on ADDR, e.g.
0.0.0.0 in the compose demo's container) in this one process. PORT may be 0:
the kernel picks a free port. Once every listener is bound, one JSON line mapping each NAME to
its port is printed on stdout (and flushed), e.g. ``{"v1": 41234, "v2": 41235}``.

Every answer is status 200 (unless told otherwise) with the header ``x-served-by: NAME`` and a
JSON body::

    {"cluster": NAME, "method": ..., "path": raw path with query, "headers": {lowercased: value},
     "attempt": n-th request of its x-test-id (0 without one), "body_bytes": request body size}

Knobs, all given as request headers:

- ``x-upstream-delay-ms: N``: sleep N ms before answering.
- ``x-upstream-status: N``: answer with status N.
- ``x-upstream-fail-on: NAME[,NAME...]``: the listeners named answer 503, the others as
  usual (one endpoint of a cluster failing while its others serve, for outlier detection).
- ``x-upstream-fail: N`` with ``x-test-id: K``: the first N requests carrying id K answer 503,
  later ones as usual. With ``x-upstream-fail-grpc: CODE`` the failures are instead gRPC
  trailers-only answers: HTTP 200 with ``grpc-status: CODE``.
- ``x-upstream-response-header: name=value``: add that header to the response (for tests that
  edit response headers).

Every request carrying ``x-test-id: K`` is counted per K, across all listeners; ``GET
/__attempts/K`` on any listener answers ``{"count": n}`` and is not counted itself.

Request bodies are read and discarded. A client that disconnects is not an error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

# Longest delay the upstream agrees to sleep, so a mistaken test cannot hang it.
MAX_DELAY_MS = 60_000
# Statuses that must not carry a body.
NO_BODY_STATUSES = {204, 304}


class Attempts:
    """Thread-safe per-test-id request counter shared by every listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def bump(self, test_id: str) -> int:
        with self._lock:
            n = self._counts.get(test_id, 0) + 1
            self._counts[test_id] = n
            return n

    def get(self, test_id: str) -> int:
        with self._lock:
            return self._counts.get(test_id, 0)


ATTEMPTS = Attempts()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write, and without Nagle: otherwise the body waits for the
    # peer's delayed ACK (40 ms a response on Linux).
    disable_nagle_algorithm = True
    server_version = "meshrules-test-upstream"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version
    # Set per server class (see make_server).
    listener_name = "?"

    # --- plumbing -------------------------------------------------------------------------

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:  # type: ignore[attr-defined]
            sys.stderr.write(f"[{self.listener_name}] {format % args}\n")

    def _discard_body(self) -> int:
        """Reads and drops the request body (Content-Length or chunked); returns its size."""
        total = 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    return total
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            return total
                total += len(self.rfile.read(size + 2)) - 2
        length = int(self.headers.get("content-length") or 0)
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)
            total += len(chunk)
        return total

    def _send(self, status: int, body: bytes, extra: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("x-served-by", self.listener_name)
        for k, v in extra:
            self.send_header(k, v)
        if status in NO_BODY_STATUSES or status < 200:
            body = b""
        else:
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD" and body:
            self._headers_buffer.append(body)
        self.flush_headers()

    # --- the behaviour ----------------------------------------------------------------------

    def _handle(self) -> None:
        try:
            body_bytes = self._discard_body()
            raw_path = self.path
            if raw_path.startswith("/__attempts/"):
                test_id = unquote(raw_path[len("/__attempts/"):].split("?", 1)[0])
                body = json.dumps({"count": ATTEMPTS.get(test_id)}).encode()
                self._send(200, body)
                return

            headers: dict[str, str] = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v

            status = 200
            extra = []
            test_id = headers.get("x-test-id")
            count = ATTEMPTS.bump(test_id) if test_id else 0
            fail = _int(headers.get("x-upstream-fail"))
            grpc_code = _int(headers.get("x-upstream-fail-grpc"))
            if test_id and fail is not None and count <= fail and grpc_code is not None:
                extra += [("grpc-status", str(grpc_code)), ("grpc-message", "upstream says no")]
            elif test_id and fail is not None and count <= fail:
                status = 503
            elif (s := _int(headers.get("x-upstream-status"))) is not None and 100 <= s <= 599:
                status = s
            elif self.listener_name in (n.strip() for n in headers.get("x-upstream-fail-on", "").split(",")):
                status = 503

            delay = _int(headers.get("x-upstream-delay-ms"))
            if delay:
                time.sleep(min(max(delay, 0), MAX_DELAY_MS) / 1000.0)

            if "x-upstream-response-header" in headers:
                name, _, value = headers["x-upstream-response-header"].partition("=")
                if name.strip():
                    extra.append((name.strip(), value.strip()))

            body = json.dumps(
                {
                    "cluster": self.listener_name,
                    "method": self.command,
                    "path": raw_path,
                    "headers": headers,
                    "attempt": count,
                    "body_bytes": body_bytes,
                }
            ).encode()
            self._send(status, body, extra)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    verbose = False

    def handle_error(self, request, client_address) -> None:
        # A client that goes away mid-request is normal in these tests; anything else is shown.
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_server(name: str, port: int, verbose: bool, bind: str = "127.0.0.1") -> Server:
    handler = type(f"Handler_{abs(hash(name))}", (Handler,), {"listener_name": name})
    server = Server((bind, port), handler)
    server.verbose = verbose
    return server


def parse_listen(spec: str) -> tuple[str, int]:
    name, sep, port = spec.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{spec!r} is not NAME=PORT")
    try:
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"{spec!r}: port {p} is out of range")
    return name, p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", action="append", type=parse_listen, required=True,
                    metavar="NAME=PORT", help="a listener; PORT 0 picks a free port")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    ap.add_argument("--bind", default="127.0.0.1", help="the address every listener binds")
    args = ap.parse_args(argv)

    names = [n for n, _ in args.listen]
    if len(set(names)) != len(names):
        ap.error("listener names must be unique")

    # SIGTERM / SIGINT are taken with sigwait, never by a handler: a handler that sets an Event
    # can deadlock on the Event's own lock if the signal lands while the main thread holds it
    # (seen in test_demo's teardown: the upstream outlived its SIGTERM and held the demo ports). Blocked
    # before any thread starts, so every thread inherits the mask.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    servers = [make_server(name, port, args.verbose, args.bind) for name, port in args.listen]
    threads = []
    for s in servers:
        t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        t.start()
        threads.append(t)

    sys.stdout.write(json.dumps({name: s.server_address[1] for (name, _), s in zip(args.listen, servers)}) + "\n")
    sys.stdout.flush()

    signal.sigwait(stop_signals)
    # Shut the listeners down together: each shutdown waits for its poll interval.
    # Daemon threads: a shutdown that never returns must not keep the process alive at exit.
    closers = [threading.Thread(target=s.shutdown, daemon=True) for s in servers]
    for t in closers:
        t.start()
    for t in closers:
        t.join(timeout=5)
    for s in servers:
        s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
