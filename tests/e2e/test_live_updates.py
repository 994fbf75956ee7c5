"""Rules change while traffic flows. The meshrules filter takes its configuration from a file
through Envoy's extension config discovery (ECDS: an HCM filter with ``config_discovery`` from
a ``path_config_source`` with ``watched_directory``); the tests replace that file the way an
operator should (write a temporary file beside it, rename it over the old one) while wrk keeps
a fixed number of keep-alive connections busy, and count every response.

What Envoy 1.40 does, as these tests observe it: on the rename Envoy builds a new filter config
(a new plugin, ``on_configure`` in fresh root contexts) on the main thread, and only if that
succeeds hands it to the workers; each request is decided by the rules in force when it
arrived. A configuration the filter refuses never replaces the old one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import yaml

from conftest import (
    MESHRULES_WASM, REPO, V1, V2, Client, ExtensionConfigFile, STAT_CONFIG_REJECTED, count_clusters,
    destination_rule, ecds_stat, new_test_id, plugin_config, request, to, virtual_service,
)
from load import LoadResult, WrkLoad

CONNECTIONS = 8
LOAD_SECONDS = 8
# How long new rules may take to reach requests. A wide bound: on the shared 2-vCPU test
# machine the measured time from rename to the first request on the new rules is 1 to 60 ms.
TAKE_EFFECT_BOUND_S = 10.0
# Requests Envoy must complete between steps, so every step happens under load.
REQUESTS_PER_STEP = 500
COMPLETED = "http.ingress.downstream_rq_completed"


def rules(subset: str) -> dict:
    """demoapp: every request to one subset."""
    return plugin_config(
        destination_rule("demoapp", "demoapp", ["v1", "v2"]),
        virtual_service("demoapp", ["demoapp"], [{"name": "all", "route": [to(subset=subset)]}]),
    )


# An invalid VirtualService: the filter refuses it in on_configure.
INVALID_RULES = plugin_config(
    destination_rule("demoapp", "demoapp", ["v1", "v2"]),
    virtual_service("demoapp", ["demoapp"], [{
        "name": "all", "route": [to(subset="v2")],
        "fault": {"abort": {"httpStatus": 700, "percentage": {"value": 100}}}}]),
)
INVALID_REASON = "resources[1].spec.http[0].fault.abort.httpStatus: 700 is not in 200..=599"


def wait_until(condition, timeout: float, what: str) -> float:
    """Polls ``condition()`` (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what} not within {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - start


def load_advanced(env, requests: int = REQUESTS_PER_STEP):
    """Waits until Envoy completed ``requests`` more requests (the load is flowing)."""
    base = env.stat(COMPLETED) or 0
    wait_until(lambda: (env.stat(COMPLETED) or 0) >= base + requests, 30, f"{requests} requests under load")


def swap_rules(env, ecds: ExtensionConfigFile, plugin: dict, serves: str) -> float:
    """Replaces the rules and returns the seconds from the rename until a request is served
    by ``serves``; then checks the next requests all are (no flapping back)."""
    with Client(env) as probe:
        ecds.write(plugin)
        took = wait_until(lambda: probe.request(host="demoapp").served_by == serves,
                          TAKE_EFFECT_BOUND_S, f"new rules ({serves})")
        after = [probe.request(host="demoapp").served_by for _ in range(20)]
    assert set(after) == {serves}, after
    return took


def report(capsys, line: str) -> None:
    """Shows a measurement in the test run's output (not captured)."""
    with capsys.disabled():
        print(f"\n[live updates] {line}")


def assert_no_request_failed(load, capsys) -> LoadResult:
    result = load.result()
    report(capsys, f"wrk, {CONNECTIONS} connections for {LOAD_SECONDS}s: {result}")
    assert all(n == 0 for n in result.errors.values()), result
    assert set(result.statuses()) == {200}, result
    assert sum(result.responses.values()) == result.requests, result
    return result


def test_rules_replaced_under_load_drop_no_request_and_apply_within_the_bound(envoy, tmp_path, capsys):
    """v1 -> v2 -> v1 while wrk runs: every one of the requests is answered 200 by an upstream
    (no 5xx, no connection error), both rule sets served traffic, and each new rule set served
    requests within TAKE_EFFECT_BOUND_S of its rename (the measured times are printed)."""
    ecds = ExtensionConfigFile(tmp_path / "ecds")
    env = envoy(rules("v1"), ecds=ecds)
    assert request(env).served_by == V1

    with WrkLoad(env, host="demoapp", connections=CONNECTIONS, seconds=LOAD_SECONDS) as load:
        load_advanced(env)
        to_v2 = swap_rules(env, ecds, rules("v2"), V2)
        load_advanced(env)
        to_v1 = swap_rules(env, ecds, rules("v1"), V1)
        load_advanced(env)
        assert load.running(), "the load ended before the last swap; raise LOAD_SECONDS"
        result = assert_no_request_failed(load, capsys)
    report(capsys, f"new rules served after the rename: v1->v2 {to_v2 * 1000:.0f} ms, "
                   f"v2->v1 {to_v1 * 1000:.0f} ms")

    served = result.served_by()
    assert set(served) == {V1, V2}, served
    assert env.stat(ecds_stat("update_success")) == 3  # the first rules and two swaps
    assert env.stat(ecds_stat("config_fail")) == 0


def test_invalid_rules_under_load_are_rejected_and_the_old_rules_keep_serving(envoy, tmp_path, capsys):
    """An invalid VirtualService written over good rules while wrk runs: the filter refuses it
    in on_configure (its log line and ``meshrules_config_loads_rejected``), Envoy rejects the
    ECDS update (``config_fail``, ``update_rejected``, "Filesystem config update rejected"),
    the old rules go on serving every request, and a later valid update still applies."""
    ecds = ExtensionConfigFile(tmp_path / "ecds")
    env = envoy(rules("v1"), ecds=ecds)

    with WrkLoad(env, host="demoapp", connections=CONNECTIONS, seconds=LOAD_SECONDS) as load:
        load_advanced(env)
        ecds.write(INVALID_RULES)
        wait_until(lambda: env.stat(ecds_stat("config_fail")) == 1, TAKE_EFFECT_BOUND_S, "ECDS rejection")
        assert env.stat(ecds_stat("update_rejected")) == 1
        assert (env.stat(STAT_CONFIG_REJECTED) or 0) >= 1
        log = env.log_text()
        assert f"config rejected: {INVALID_REASON}" in log, log[-3000:]
        assert "Filesystem config update rejected: Unable to create Wasm plugin meshrules" in log, log[-3000:]

        load_advanced(env)
        with Client(env) as probe:
            assert {probe.request(host="demoapp").served_by for _ in range(50)} == {V1}

        swap_rules(env, ecds, rules("v2"), V2)
        load_advanced(env)
        assert load.running(), "the load ended before the last update; raise LOAD_SECONDS"
        result = assert_no_request_failed(load, capsys)
    assert set(result.served_by()) == {V1, V2}, result


def test_invalid_first_rules_over_ecds_answer_500_until_valid_rules_arrive(envoy, upstreams, tmp_path):
    """With no valid configuration ever received, Envoy 1.40 starts the listener but has no
    filter config: it answers every request 500 itself (the request never reaches an upstream,
    so nothing passes without the rules), until a valid file arrives."""
    ecds = ExtensionConfigFile(tmp_path / "ecds")
    env = envoy(INVALID_RULES, ecds=ecds)
    assert env.stat(ecds_stat("config_fail")) == 1

    test_id = new_test_id("no-config")
    r = request(env, headers={"x-test-id": test_id})
    assert r.status == 500 and r.served_by is None, r
    assert upstreams.attempts(test_id) == 0

    with Client(env) as probe:
        ecds.write(rules("v2"))
        wait_until(lambda: probe.request(host="demoapp").served_by == V2, TAKE_EFFECT_BOUND_S, "first valid rules")


def readme_rule_change_commands() -> list[str]:
    """The README's commands (section "Live rule updates") that write the new rules beside
    envoy/ecds/meshrules.yaml and rename them over it."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Live rule updates", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines()
                if line.startswith(("sed ", "mv ")) and "envoy/ecds/meshrules.yaml" in line]
    assert [c.split()[0] for c in commands] == ["sed", "mv"], commands
    return commands


def shipped_ecds_example(workdir, upstreams) -> dict:
    """envoy/envoy-ecds.yaml and envoy/ecds/ laid out in ``workdir`` as in the repository
    (the filter at wasm/meshrules.wasm), the bootstrap's ports set to 0 and its v1/v2
    clusters pointed at the test upstreams for those subsets."""
    shutil.copytree(REPO / "envoy" / "ecds", workdir / "envoy" / "ecds")
    (workdir / "wasm").mkdir()
    (workdir / "wasm" / "meshrules.wasm").symlink_to(MESHRULES_WASM)
    cfg = yaml.safe_load((REPO / "envoy" / "envoy-ecds.yaml").read_text())
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = 0
    targets = {"v1": V1, "v2": V2, "passthrough": "passthrough"}
    for c in cfg["static_resources"]["clusters"]:
        subset = c["name"].split("|")[2] if "|" in c["name"] else c["name"]
        for group in c["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"]["socket_address"]["port_value"] = upstreams.port(targets[subset])
    return cfg


def test_shipped_ecds_example_takes_the_readme_rule_change_live(envoy, upstreams, tmp_path):
    """The shipped envoy/envoy-ecds.yaml + envoy/ecds/meshrules.yaml serve the 90/10 split and
    the DENY on /admin; the README's two commands (sed to a file beside it, mv over it)
    promote v2 while Envoy runs."""
    cfg = shipped_ecds_example(tmp_path, upstreams)
    env = envoy.launcher.start_bootstrap(cfg, cwd=tmp_path, listener="demo")

    split = count_clusters(env, 200, host="demoapp")
    assert set(split) == {V1, V2} and split[V1] > split[V2], split
    assert request(env, path="/admin").status == 403

    with Client(env) as probe:
        for command in readme_rule_change_commands():
            subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=30)
        # The old split also sends some requests to v2: only a run of them shows the new rules
        # (20 in a row under the old 90/10 split: probability 1e-20).
        wait_until(lambda: all(probe.request(host="demoapp").served_by == V2 for _ in range(20)),
                   TAKE_EFFECT_BOUND_S, "promoted v2")
    assert count_clusters(env, 100, host="demoapp") == {V2: 100}
    assert request(env, path="/admin").status == 403
    assert env.stat(ecds_stat("update_success")) == 2
