"""`make run`'s demo works as the README shows: the demo script starts Envoy with the rules in
envoy/envoy.yaml and the demo upstreams, and every curl line it prints does what it says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import ENVOY_BIN, REPO, require_binaries


@pytest.fixture(scope="module")
def demo():
    require_binaries()
    env = dict(os.environ, ENVOY=str(ENVOY_BIN))
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "run-demo.sh")], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    banner = []
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(banner)
        assert "meshrules demo is up" in text, text
        yield text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def curl_lines(banner: str) -> dict[str, str]:
    """The printed commands, keyed by the comment line above each."""
    lines = {}
    comment = None
    for line in banner.splitlines():
        line = line.strip()
        if line.startswith("#"):
            comment = line.lstrip("# ").split(":")[0]
        elif line and comment and ("curl" in line):
            lines[comment] = line
            comment = None
    return lines


def run(cmd: str) -> str:
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_demo_prints_curl_lines_that_show_canary_split_delay_abort_and_timeout(demo):
    cmds = curl_lines(demo)
    assert set(cmds) >= {"canary", "90/10 split between v1 and v2", "fault delay", "fault abort",
                         "timeout", "authorization", "ambiguous paths are refused",
                         "the filter's metrics"}, cmds

    assert run(cmds["canary"]).strip() == "v2"

    # 50 requests at 90/10: v2 expects 5 (sigma 2.1); the tolerance is "both sides, v1 the
    # larger", which fails only for a broken split (probability of v2 > 25 is below 1e-9).
    counts = {name: int(n) for n, name in re.findall(r"(\d+) (\S+)", run(cmds["90/10 split between v1 and v2"]))}
    assert sum(counts.values()) == 50, counts
    assert counts.get("v1", 0) > counts.get("v2", 0), counts

    code, seconds = re.match(r"(\d+) after ([\d.]+)s", run(cmds["fault delay"])).groups()
    assert code == "200" and 1.9 <= float(seconds) < 6, (code, seconds)

    abort = run(cmds["fault abort"])
    assert abort.startswith("HTTP/1.1 503") and abort.endswith("fault filter abort"), abort

    code, seconds = re.match(r"(\d+) after ([\d.]+)s", run(cmds["timeout"])).groups()
    assert code == "504" and 0.9 <= float(seconds) < 2.9, (code, seconds)

    assert run(cmds["authorization"]).split() == ["403"] * 4
    assert run(cmds["ambiguous paths are refused"]).strip() == "400"

    metrics = run(cmds["the filter's metrics"])
    assert 'meshrules_route_requests{namespace="app",virtual_service="demoapp",route="canary"} 1' in metrics
    assert 'meshrules_route_requests{namespace="app",virtual_service="demoapp",route="split"} 50' in metrics
    assert "meshrules_fault_delays_injected{} 1" in metrics
    assert "meshrules_fault_aborts_injected{} 1" in metrics
    assert "meshrules_authz_denied{} 4" in metrics
    assert "meshrules_path_rejected{} 1" in metrics
