"""Conditions on the proxy itself (`sourceLabels`, `sourceNamespace`, `gateways`) and the short
host alias, read from the Istio node metadata a real Envoy bootstrap carries, as istiod settles
them when it generates a proxy's config."""

import pytest

from conftest import V1, V2, V3, plugin_config, request, to, virtual_service

RULES = plugin_config(
    virtual_service("demoapp", ["demoapp"], [
        {"name": "for-backend", "match": [{"sourceLabels": {"app": "backend"}}], "route": [to(subset="v3")]},
        {"name": "gateway-only", "match": [{"gateways": ["public-gw"]}], "route": [to(subset="v3")]},
        {"name": "from-billing", "match": [{"sourceNamespace": "billing"}], "route": [to(subset="v3")]},
        {"name": "for-frontend", "match": [{"sourceLabels": {"app": "frontend", "version": "v1"},
                                            "sourceNamespace": "shop"}], "route": [to(subset="v2")]},
        {"name": "rest", "route": [to(subset="v1")]},
    ]),
)


def as_node(node_id, namespace, labels):
    def transform(cfg):
        cfg["node"] = {"id": node_id, "cluster": "test",
                       "metadata": {"NAMESPACE": namespace, "LABELS": labels}}
        return cfg
    return transform


@pytest.fixture(scope="module")
def frontend_sidecar(module_envoy_launcher):
    return module_envoy_launcher.start(
        RULES, transform=as_node("sidecar~10.0.0.1~frontend-1.shop~shop.svc.cluster.local", "shop",
                                 {"app": "frontend", "version": "v1"}))


def test_source_labels_and_namespace_match_the_sidecars_own_metadata(frontend_sidecar):
    r = request(frontend_sidecar, "GET", "/", host="demoapp.app")
    assert r.status == 200 and r.served_by == V2, r


def test_short_name_only_resolves_from_the_services_own_namespace(frontend_sidecar):
    """The proxy runs in namespace shop; istiod gives it `demoapp.app` but not `demoapp`."""
    r = request(frontend_sidecar, "GET", "/", host="demoapp")
    assert r.served_by != V2 and r.served_by != V1, r


def test_other_proxies_skip_routes_meant_for_someone_else(module_envoy_launcher):
    env = module_envoy_launcher.start(
        RULES, transform=as_node("sidecar~10.0.0.2~demoapp-1.app~app.svc.cluster.local", "app",
                                 {"app": "demoapp"}))
    r = request(env, "GET", "/", host="demoapp")
    assert r.status == 200 and r.served_by == V1, r


def test_gateway_routes_apply_on_a_gateway_proxy(module_envoy_launcher):
    env = module_envoy_launcher.start(
        RULES, transform=as_node("router~10.0.0.3~ingress-1.istio-system~istio-system.svc.cluster.local",
                                 "istio-system", {"app": "istio-ingressgateway"}))
    # Gateways see VirtualService hosts as written: the FQDN, no aliases.
    r = request(env, "GET", "/", host="demoapp.app.svc.cluster.local")
    assert r.status == 200 and r.served_by == V3, r
