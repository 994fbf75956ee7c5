"""`meshrules bundle --output envoy` writes a bootstrap that real Envoy 1.40 runs as written:
the demo YAML bundled with the upstreams' addresses, started in Envoy, routes, aborts, denies
and passes through like envoy/envoy.yaml does."""

from __future__ import annotations

import pytest
import yaml

from conftest import MESHRULES_WASM, PASSTHROUGH, V2, EnvoyLauncher, cluster, meshrules, request

DEMO = "examples/demoapp.yaml"
# The demo's clusters; v1 has an upstream listener of the same name, v2 is sent to V2's.
DEMO_V1 = cluster(subset="v1", port=8080)
DEMO_V2 = cluster(subset="v2", port=8080)


@pytest.fixture
def bundled_envoy(tmp_path, upstreams):
    out = meshrules(
        "bundle", "--output", "envoy", DEMO, "--wasm", str(MESHRULES_WASM),
        # Port 0: Envoy picks free ports; the launcher finds them (admin address path, listener "ingress").
        "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--endpoint", f"{DEMO_V1}=127.0.0.1:{upstreams.port(DEMO_V1)}",
        "--endpoint", f"{DEMO_V2}=127.0.0.1:{upstreams.port(V2)}",
        "--passthrough", f"127.0.0.1:{upstreams.port(PASSTHROUGH)}",
    )
    assert out.returncode == 0, out.stderr
    generated = yaml.safe_load(out.stdout)
    launcher = EnvoyLauncher(tmp_path, upstreams)
    # The launcher's own bootstrap is replaced whole by the generated one.
    yield launcher.start("{}", transform=lambda _ours: generated)
    launcher.stop_all()


def test_bundled_envoy_config_routes_the_canary_aborts_denies_and_passes_through(bundled_envoy):
    canary = request(bundled_envoy, path="/", headers={"x-canary": "true"})
    assert canary.status == 200 and canary.served_by == V2, canary
    assert canary.upstream_headers().get("x-meshrules-cluster") is None, "the route removes the cluster header"

    split = request(bundled_envoy, path="/anything")
    assert split.status == 200 and split.served_by in {DEMO_V1, V2}, split

    abort = request(bundled_envoy, path="/abort")
    assert (abort.status, abort.body) == (503, b"fault filter abort"), abort

    denied = request(bundled_envoy, path="/a/../admin")
    assert (denied.status, denied.body) == (403, b"RBAC: access denied"), denied

    other = request(bundled_envoy, path="/", host="not-in-the-rules")
    assert other.status == 200 and other.served_by == PASSTHROUGH, other


def test_bundled_wasmplugin_is_accepted_by_istios_crd_and_carries_istios_translation_inputs():
    from crd_schema import IstioCrds

    out = meshrules("bundle", "--output", "wasmplugin", DEMO, "--image", "oci://registry.example.com/meshrules:0.1.0",
                    "--sha256", "ab" * 32, "--selector", "app=demoapp")
    assert out.returncode == 0, out.stderr
    plugin = yaml.safe_load(out.stdout)
    crds = IstioCrds()
    assert crds.problems(plugin) == []
    for inner in plugin["spec"]["pluginConfig"]["resources"]:
        assert crds.problems(inner) == [], inner["metadata"]
    assert (plugin["spec"]["pluginName"], plugin["spec"]["phase"], plugin["spec"]["failStrategy"]) == \
        ("meshrules", "AUTHN", "FAIL_CLOSE")
