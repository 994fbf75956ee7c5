"""A real Prometheus (Debian's ``prometheus`` package) for the e2e tests: scrapes Envoy's
``/stats/prometheus`` and answers PromQL through its HTTP API, as a user's would."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import _die_with_parent, _stop_process, free_port

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
START_TIMEOUT_S = 30.0


def require_prometheus() -> None:
    if not Path(PROMETHEUS_BIN).exists():
        pytest.fail("prometheus is missing: apt-get install prometheus (make e2e installs it)")


class Prometheus:
    """Prometheus with ``config`` (a prometheus.yml as a dict), its data in ``workdir``."""

    def __init__(self, workdir: Path, config: dict):
        require_prometheus()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        last = ""
        for _ in range(3):  # a free port may be taken before Prometheus binds it
            self.port = free_port()
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [PROMETHEUS_BIN, f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            if self._ready():
                return
            last = self.log_path.read_text()
            self.stop()
        raise RuntimeError(f"Prometheus did not start:\n{last}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def api(self, path: str, **params: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read())
        assert body["status"] == "success", (params, body)
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def values(self, expr: str, by: str, at: float | None = None) -> dict[str, float]:
        """The query's values keyed by the label ``by``."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in self.query(expr, at)}

    def wait_until(self, what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} not within {timeout}s")
            time.sleep(0.25)

    def wait_for_value(self, expr: str, value: float, timeout: float = 30.0) -> None:
        """Until ``expr``'s single value is ``value``: Prometheus has scraped what Envoy counted."""
        def ok() -> bool:
            r = self.query(expr)
            return len(r) == 1 and float(r[0]["value"][1]) == value
        self.wait_until(f"{expr} == {value}", ok, timeout)

    def stop(self) -> None:
        _stop_process(self.proc)
        self._log.close()


def scrape_config(envoy_admin_port: int, interval: str = "1s") -> dict:
    """Scrapes one Envoy's admin ``/stats/prometheus`` every ``interval``."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": "envoy", "metrics_path": "/stats/prometheus",
            "static_configs": [{"targets": [f"127.0.0.1:{envoy_admin_port}"]}],
        }],
    }
