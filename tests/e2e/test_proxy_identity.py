"""Conditions on the proxy itself (`sourceLabels`, `sourceNamespace`, `gateways`) and the short
host alias, read from the Istio node metadata a real Envoy bootstrap carries, as istiod settles
them when it generates a proxy's config.

The proxies are shaped as istiod shapes them: the listener is the service port the application
calls, and every cluster is named ``outbound|<port>|<subset>|<fqdn>`` (none with an empty port);
the VirtualServices give no destination port, as nearly all in the wild."""

import pytest

from conftest import (V1, V2, V3, fqdn, plugin_config, request, sidecar_clusters, to,
                      virtual_service)

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


def start_proxy(launcher, upstreams, node, plugin=RULES):
    """An Istio-shaped proxy (see above) with ``node``'s metadata, listening on a service port."""
    return launcher.start_on_port(lambda port: {
        "plugin": plugin(port) if callable(plugin) else plugin,
        "clusters": sidecar_clusters(upstreams, port), "transform": node})


@pytest.fixture(scope="module")
def frontend_sidecar(module_envoy_launcher, upstreams):
    return start_proxy(module_envoy_launcher, upstreams,
                       as_node("sidecar~10.0.0.1~frontend-1.shop~shop.svc.cluster.local", "shop",
                               {"app": "frontend", "version": "v1"}))


def test_source_labels_and_namespace_match_the_sidecars_own_metadata(frontend_sidecar):
    r = request(frontend_sidecar, "GET", "/", host="demoapp.app")
    assert r.status == 200 and r.served_by == V2, r


def test_short_name_only_resolves_from_the_services_own_namespace(frontend_sidecar):
    """The proxy runs in namespace shop; istiod gives it `demoapp.app` but not `demoapp`."""
    r = request(frontend_sidecar, "GET", "/", host="demoapp")
    assert r.served_by != V2 and r.served_by != V1, r


def test_other_proxies_skip_routes_meant_for_someone_else(module_envoy_launcher, upstreams):
    env = start_proxy(module_envoy_launcher, upstreams,
                      as_node("sidecar~10.0.0.2~demoapp-1.app~app.svc.cluster.local", "app",
                              {"app": "demoapp"}))
    r = request(env, "GET", "/", host="demoapp")
    assert r.status == 200 and r.served_by == V1, r


def with_service_port(port: int) -> dict:
    """A gateway's listener port is its own, not the service's: the cluster takes the
    service's only port (istiod's GetDestinationCluster), here from routing.servicePorts."""
    return {**RULES, "routing": {**RULES["routing"], "servicePorts": {fqdn("demoapp"): [port]}}}


def test_gateway_routes_apply_on_a_gateway_proxy(module_envoy_launcher, upstreams):
    env = start_proxy(module_envoy_launcher, upstreams,
                      as_node("router~10.0.0.3~ingress-1.istio-system~istio-system.svc.cluster.local",
                              "istio-system", {"app": "istio-ingressgateway"}),
                      plugin=with_service_port)
    # Gateways see VirtualService hosts as written: the FQDN, no aliases.
    r = request(env, "GET", "/", host="demoapp.app.svc.cluster.local")
    assert r.status == 200 and r.served_by == V3, r
