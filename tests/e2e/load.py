"""Steady HTTP load from wrk (Debian's ``wrk``, installed by ``make e2e``) against a test Envoy:
a fixed number of keep-alive connections for a fixed time, every response counted by status
and answering upstream (``wrk_count.lua``), socket errors counted by wrk."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Envoy

WRK_SCRIPT = Path(__file__).with_name("wrk_count.lua")
# A request wrk has not seen answered after this long counts as a timeout error.
WRK_REQUEST_TIMEOUT = "5s"


@dataclass
class LoadResult:
    requests: int
    # wrk's socket error counters (connect, read, write, timeout) and its count of HTTP
    # statuses above 399 (status).
    errors: dict[str, int]
    # (status, x-served-by or "-") -> responses
    responses: Counter

    def statuses(self) -> Counter:
        out: Counter = Counter()
        for (status, _), n in self.responses.items():
            out[status] += n
        return out

    def served_by(self) -> Counter:
        out: Counter = Counter()
        for (_, upstream), n in self.responses.items():
            out[upstream] += n
        return out

    def __str__(self) -> str:
        answers = ", ".join(f"{n} x {s} {u}" for (s, u), n in sorted(self.responses.items()))
        return f"{self.requests} requests; errors {self.errors}; responses: {answers}"


class WrkLoad:
    """``with WrkLoad(env, ...) as load:`` runs wrk in the background; ``load.result()`` waits
    for it to finish (bounded) and parses its counts."""

    def __init__(self, env: Envoy, host: str, connections: int, seconds: int, path: str = "/"):
        wrk = shutil.which("wrk")
        if wrk is None:
            pytest.fail("wrk not found: run `make e2e` (it installs Debian's wrk)", pytrace=False)
        self.seconds = seconds
        self.args = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_REQUEST_TIMEOUT,
                     "-s", str(WRK_SCRIPT), "-H", f"Host: {host}", env.url(path)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "WrkLoad":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def result(self) -> LoadResult:
        assert self.proc is not None
        out, _ = self.proc.communicate(timeout=self.seconds + 30)
        assert self.proc.returncode == 0, f"wrk exited with {self.proc.returncode}:\n{out}"
        requests = int(re.search(r"^requests (\d+)$", out, re.M).group(1))
        errors = {name: int(n) for name, n in re.findall(r"^error (\w+) (\d+)$", out, re.M)}
        responses = Counter({(int(status), upstream): int(n)
                             for n, status, upstream in re.findall(r"^response (\d+) (\d+) (\S+)$", out, re.M)})
        return LoadResult(requests, errors, responses)
