"""What Envoy 1.40 does when the Wasm filter fails, for each ``PluginConfig.failure_policy``
(Envoy's ``envoy.extensions.wasm.v3``; Istio's WasmPlugin ``failStrategy`` FAIL_CLOSE /
FAIL_OPEN / FAIL_RELOAD maps to FAIL_CLOSED / FAIL_OPEN / FAIL_RELOAD).

Two kinds of failure, found by running Envoy:

- A runtime failure: the module traps while handling a request. The Wasm VM is then marked
  failed and the policy decides what later requests get. The broken module is
  ``wasm/trap_on_header.wat`` (assembled here with binaryen's ``wasm-as``): it marks each
  request it handles (``x-trap-module: ran``, echoed by the upstream) and traps on requests
  with ``x-trap``. The request that traps is answered 503 by Envoy under every policy.
- A configuration the filter refuses (``on_configure`` returns false): Envoy configures a
  canary copy of the plugin on the main thread before any worker uses it, so the plugin is
  never created. That is not a runtime failure; no policy lets such a filter serve (Envoy
  logs "Plugin configured to fail closed failed to load" even under FAIL_OPEN, a message
  keyed to the legacy ``fail_open`` field). A static bootstrap then fails to start; over ECDS
  the update is rejected and the old rules keep serving (test_live_updates.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ExtensionConfigFile, new_test_id, plugin_config, request, to, virtual_service

TRAP_MODULE_SOURCE = Path(__file__).parent / "wasm" / "trap_on_header.wat"
TRAP = {"x-trap": "1"}
# Envoy's FAIL_RELOAD waits at least reload_config.backoff.base_interval (default 1 s, jittered
# up to twice that) after the last load before loading a new VM; this bounds the wait.
RELOAD_BOUND_S = 10.0

# The plugin names its stats scope: wasm.<PluginConfig.name>.vm_reload_*.
STAT_RELOAD_SUCCESS = "wasm.meshrules.vm_reload_success"
STAT_RELOAD_BACKOFF = "wasm.meshrules.vm_reload_backoff"


@pytest.fixture(scope="module")
def trap_module(tmp_path_factory) -> Path:
    wasm_as = shutil.which("wasm-as")
    if wasm_as is None:
        pytest.fail("wasm-as not found: run `make toolchain` (Debian's binaryen)", pytrace=False)
    out = tmp_path_factory.mktemp("modules") / "trap_on_header.wasm"
    subprocess.run([wasm_as, str(TRAP_MODULE_SOURCE), "-o", str(out)], check=True, timeout=60)
    return out


def filter_ran(r) -> bool:
    """The request reached an upstream after passing through the trap module."""
    return r.served_by is not None and r.upstream_headers().get("x-trap-module") == "ran"


def passed_without_filter(r) -> bool:
    return r.served_by is not None and "x-trap-module" not in r.upstream_headers()


def refused_by_envoy(r, upstreams, test_id: str) -> bool:
    """Envoy answered 503 itself, with no body, and nothing reached an upstream."""
    return r.status == 503 and r.body == b"" and r.served_by is None and upstreams.attempts(test_id) == 0


def trap_once(env, upstreams):
    """A request the module handles, then one that makes it trap (503 under every policy)."""
    assert filter_ran(request(env))
    test_id = new_test_id("trap")
    r = request(env, headers={**TRAP, "x-test-id": test_id})
    assert refused_by_envoy(r, upstreams, test_id), r
    assert "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable" in env.log_text()


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", None], ids=["FAIL_CLOSED", "unset"])
def test_fail_closed_answers_503_to_every_request_after_a_trap(envoy, upstreams, trap_module, policy):
    """FAIL_CLOSED (and an unset policy, Envoy's default): once the VM failed, every request
    is answered 503 by Envoy without reaching an upstream, for as long as Envoy runs (also
    after FAIL_RELOAD's reload backoff would have passed: nothing reloads the VM)."""
    env = envoy("{}", wasm_path=trap_module, failure_policy=policy)
    trap_once(env, upstreams)
    for wait in (0, 2.5):
        time.sleep(wait)
        test_id = new_test_id("closed")
        r = request(env, headers={"x-test-id": test_id})
        assert refused_by_envoy(r, upstreams, test_id), r
    assert env.stat(STAT_RELOAD_SUCCESS) == 0


def test_fail_closed_over_ecds_serves_again_once_a_new_filter_config_arrives(
        envoy, upstreams, trap_module, tmp_path):
    """The way back from FAIL_CLOSED without a restart: with the filter delivered over ECDS,
    a new filter configuration (here the same module with another pluginConfig) makes Envoy
    create the plugin anew, and requests are handled by the filter again."""
    ecds = ExtensionConfigFile(tmp_path / "ecds")
    env = envoy('{"generation": 1}', wasm_path=trap_module, failure_policy="FAIL_CLOSED", ecds=ecds)
    trap_once(env, upstreams)
    test_id = new_test_id("closed")
    assert refused_by_envoy(request(env, headers={"x-test-id": test_id}), upstreams, test_id)

    ecds.write('{"generation": 2}', trap_module, "FAIL_CLOSED")
    deadline = time.monotonic() + RELOAD_BOUND_S
    while not filter_ran(request(env)):
        assert time.monotonic() < deadline, f"not served within {RELOAD_BOUND_S}s of the new config"
        time.sleep(0.05)


def test_fail_open_passes_requests_without_the_filter_after_a_trap(envoy, upstreams, trap_module):
    """FAIL_OPEN: once the VM failed, Envoy leaves the filter out of every later request's
    chain: requests reach the upstream as if the filter were not configured. For meshrules
    that means no routing rules and no AuthorizationPolicy (see README, "Failure policy")."""
    env = envoy("{}", wasm_path=trap_module, failure_policy="FAIL_OPEN")
    trap_once(env, upstreams)
    for _ in range(5):
        r = request(env)
        assert passed_without_filter(r), r


def test_fail_reload_serves_again_with_a_new_vm_after_the_backoff(envoy, upstreams, trap_module):
    """FAIL_RELOAD: after the trap, requests get 503 (as FAIL_CLOSED) while the reload backoff
    runs, each counted in ``vm_reload_backoff``; the first request after it makes Envoy load
    a new VM (``vm_reload_success``) and is handled by the filter again, as are later ones.
    The backoff counts from the VM's last load, not from the failure."""
    env = envoy("{}", wasm_path=trap_module, failure_policy="FAIL_RELOAD")
    trap_once(env, upstreams)
    refused = 0
    deadline = time.monotonic() + RELOAD_BOUND_S
    while True:
        assert time.monotonic() < deadline, f"no reload within {RELOAD_BOUND_S}s"
        test_id = new_test_id("reload")
        r = request(env, headers={"x-test-id": test_id})
        if filter_ran(r):
            break
        assert refused_by_envoy(r, upstreams, test_id), r
        refused += 1
        time.sleep(0.1)
    assert env.stat(STAT_RELOAD_BACKOFF) == refused
    assert env.stat(STAT_RELOAD_SUCCESS) == 1
    assert all(filter_ran(request(env)) for _ in range(5))


REFUSED_CONFIG = plugin_config(virtual_service("demoapp", ["demoapp"], [{
    "route": [to(subset="v1")], "fault": {"abort": {"httpStatus": 700, "percentage": {"value": 100}}}}]))


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"])
def test_a_refused_config_stops_envoy_whatever_the_failure_policy(rejected_envoy, policy):
    """A configuration meshrules refuses at start is never run, under any policy: Envoy's
    canary configure fails, the plugin is not created, and a static bootstrap exits 1."""
    rejection = rejected_envoy(REFUSED_CONFIG, failure_policy=policy)
    assert rejection.exited and rejection.exit_code == 1, rejection.log_text()[-3000:]
    log = rejection.log_text()
    assert "config rejected: resources[0].spec.http[0].fault.abort.httpStatus" in log, log[-3000:]
    assert "Failed to configure base Wasm plugin" in log, log[-3000:]
    assert "Unable to create Wasm plugin meshrules" in log, log[-3000:]
