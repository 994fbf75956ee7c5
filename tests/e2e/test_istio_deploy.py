"""The shipped Istio manifests work in real Envoy: the filter accepts every meshrules
configuration they carry, and a WasmPlugin turned into what istiod and the agent send a sidecar
(tests/e2e/istio_xds.py: an ECDS TypedExtensionConfig, here from a file) routes and authorizes
as its rules say."""

from __future__ import annotations

import json

import pytest

from conftest import (MESHRULES_WASM, PASSTHROUGH, REPO, STAT_CONFIG_ACCEPTED, STAT_CONFIG_REJECTED,
                      EnvoyLauncher, Upstreams, binomial_tolerance, count_clusters, request)
from crd_schema import load_documents
from istio_xds import (agent_rewrite, discovered_http_filter, ecds_file, istiod_extension_config,
                       resource_name)
from security import JwksServer, as_workload, claims, compose, rsa_key, sign
from test_istio_crd_schemas import meshrules_config

DEMO_V1 = "outbound|8080|v1|demoapp.app.svc.cluster.local"
DEMO_V2 = "outbound|8080|v2|demoapp.app.svc.cluster.local"
REVIEWS_V1 = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.bookinfo.svc.cluster.local"
# The default jwksCluster for the example's jwksUri https://auth.bookinfo.example/...
JWKS_CLUSTER = "outbound|443||auth.bookinfo.example"
ISSUER = "https://auth.bookinfo.example"

WASMPLUGIN = REPO / "istio" / "wasmplugin.yaml"
ENVOYFILTER = REPO / "istio" / "envoyfilter.yaml"
EXAMPLE = REPO / "istio" / "example" / "wasmplugin.yaml"


@pytest.fixture(scope="module")
def istio_upstreams(tmp_path_factory):
    up = Upstreams([PASSTHROUGH, DEMO_V1, DEMO_V2, REVIEWS_V1, REVIEWS_V2],
                   tmp_path_factory.mktemp("istio-upstream") / "upstream.log")
    yield up
    up.stop()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory, istio_upstreams):
    launcher = EnvoyLauncher(tmp_path_factory.mktemp("istio-envoy"), istio_upstreams)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def signing_key():
    return rsa_key("bookinfo-1")


@pytest.fixture(scope="module")
def jwks_server(tmp_path_factory, signing_key):
    server = JwksServer(tmp_path_factory.mktemp("jwks"), [signing_key], path="/.well-known/jwks.json").start()
    yield server
    server.stop()


def plugin(path):
    return next(d for d in load_documents(path) if d["kind"] in ("WasmPlugin", "EnvoyFilter")
                and meshrules_config(d))


def assert_config_accepted(env) -> None:
    assert (env.stat(STAT_CONFIG_ACCEPTED) or 0) > 0, env.log_text()[-3000:]
    assert not env.stat(STAT_CONFIG_REJECTED)


# What one rule of each manifest does: (host, headers, the cluster that must answer).
CANARY_PROBES = {
    WASMPLUGIN: ("demoapp", {"x-canary": "true"}, DEMO_V2),
    ENVOYFILTER: ("demoapp", {"x-canary": "true"}, DEMO_V2),
    EXAMPLE: ("reviews", {"end-user": "jason"}, REVIEWS_V2),
}


@pytest.mark.parametrize("path", list(CANARY_PROBES), ids=lambda p: str(p.relative_to(REPO)))
def test_the_filter_accepts_each_manifests_configuration_and_its_canary_rule_routes(launcher, jwks_server, path):
    env = launcher.start(meshrules_config(plugin(path)),
                         clusters={**launcher.upstreams.ports, JWKS_CLUSTER: jwks_server.port})
    assert_config_accepted(env)
    host, headers, cluster = CANARY_PROBES[path]
    assert request(env, host=host, headers=headers).served_by == cluster


# --------------------------------------------------------------------------------------------
# The WasmPlugin as istiod and the agent deliver it
# --------------------------------------------------------------------------------------------


def start_as_istio_delivers(launcher, wasm_plugin: dict, clusters: dict[str, int] | None = None):
    """A sidecar of a client workload in the WasmPlugin's namespace (Istio node metadata), with
    the wasm filter found by ECDS under istiod's resource name, serving the TypedExtensionConfig
    istiod builds, as the agent rewrites it for the pulled module."""
    pushed = agent_rewrite(istiod_extension_config(wasm_plugin), MESHRULES_WASM.resolve())
    source = ecds_file(pushed, launcher.workdir / f"ecds-{wasm_plugin['metadata']['name']}.json")

    def discovered(cfg: dict) -> dict:
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"][0] = discovered_http_filter(resource_name(wasm_plugin), source)
        return cfg

    sidecar = as_workload(wasm_plugin["metadata"]["namespace"], "client")
    env = launcher.start("{}", clusters=clusters, transform=compose(sidecar, discovered))
    return env, pushed


def test_istiods_extension_config_for_the_wasmplugin_is_loaded_by_ecds_and_its_rules_apply(launcher):
    wasm_plugin = load_documents(WASMPLUGIN)[0]
    env, pushed = start_as_istio_delivers(launcher, wasm_plugin)
    assert_config_accepted(env)

    config = pushed["typed_config"]["config"]
    assert pushed["name"] == "extensions.istio.io/wasmplugin/app.meshrules"
    assert (config["name"], config["root_id"], config["failure_policy"]) == ("app.meshrules", "meshrules", "FAIL_CLOSED")
    assert json.loads(config["configuration"]["value"]) == wasm_plugin["spec"]["pluginConfig"]
    assert "environment_variables" not in config["vm_config"]
    # Envoy holds the resource under istiod's name, from the discovery source.
    _, dump = env.admin("/config_dump?resource=ecds_filters")
    assert [f["ecds_filter"]["name"] for f in json.loads(dump)["configs"]] == [pushed["name"]]

    assert request(env, headers={"x-canary": "true"}).served_by == DEMO_V2
    denied = request(env, path="/admin")
    assert (denied.status, denied.body) == (403, b"RBAC: access denied")
    assert request(env, path="/a/../admin/users").status == 403
    counts = count_clusters(env, 400, "demoapp")
    assert set(counts) == {DEMO_V1, DEMO_V2}
    assert abs(counts[DEMO_V2] - 40) <= binomial_tolerance(400, 0.1)


def test_the_reviews_example_as_istio_delivers_it_splits_faults_times_out_and_authorizes(
        launcher, jwks_server, signing_key):
    wasm_plugin = load_documents(EXAMPLE)[0]
    env, _ = start_as_istio_delivers(launcher, wasm_plugin,
                                     clusters={**launcher.upstreams.ports, JWKS_CLUSTER: jwks_server.port})
    assert_config_accepted(env)

    # Canary and split.
    assert request(env, host="reviews", headers={"end-user": "jason"}).served_by == REVIEWS_V2
    counts = count_clusters(env, 400, "reviews")
    assert abs(counts.get(REVIEWS_V2, 0) - 80) <= binomial_tolerance(400, 0.2), counts
    assert counts.get(REVIEWS_V1, 0) + counts.get(REVIEWS_V2, 0) == 400, counts

    # Fault: answered by the filter, reviews never sees it.
    aborted = request(env, host="reviews", headers={"x-chaos": "abort"})
    assert (aborted.status, aborted.served_by, aborted.body) == (503, None, b"fault filter abort")

    # Timeout: reviews taking 3s is cut at the route's 1s (wide bounds on a deliberate delay).
    slow = request(env, host="reviews", headers={"x-upstream-delay-ms": "3000"})
    assert slow.status == 504 and 0.9 <= slow.elapsed < 2.5, slow

    # Authorization: reads are open; writes need a verified token of the issuer for `reviews`.
    assert request(env, host="reviews").status == 200
    assert request(env, "POST", host="reviews", body=b"{}").status == 403
    token = sign(signing_key, claims(ISSUER, "jason", aud="reviews"))
    written = request(env, "POST", host="reviews", body=b"{}", headers={"authorization": f"Bearer {token}"})
    assert written.status == 200 and written.served_by in (REVIEWS_V1, REVIEWS_V2), written
    other_audience = sign(signing_key, claims(ISSUER, "jason", aud="ratings"))
    refused = request(env, "POST", host="reviews", body=b"{}", headers={"authorization": f"Bearer {other_audience}"})
    assert (refused.status, refused.body) == (403, b"Audiences in Jwt are not allowed")
    forged = sign(rsa_key("bookinfo-1"), claims(ISSUER, "jason", aud="reviews"))
    rejected = request(env, "POST", host="reviews", body=b"{}", headers={"authorization": f"Bearer {forged}"})
    assert (rejected.status, rejected.body) == (401, b"Jwt verification fails")
