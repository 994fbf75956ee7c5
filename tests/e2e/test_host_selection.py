"""Which VirtualService a request's Host selects, and what happens when none or no route does."""

import pytest

from conftest import (
    CLUSTER_HEADER, PASSTHROUGH, V1, V2, V3, cluster, new_test_id, plugin_config, request, to,
    virtual_service,
)

SHOP = cluster("shop.example.com")
REVIEWS = cluster("reviews")

CONFIG = plugin_config(
    virtual_service("demoapp", ["demoapp"], [{"name": "all", "route": [to(subset="v1")]}]),
    virtual_service("shop", ["*.example.com"], [{"route": [to("shop.example.com")]}]),
    virtual_service("api", ["api.example.com"], [{"route": [to("reviews")]}]),
    virtual_service("strict", ["strict.test"], [
        {"match": [{"uri": {"prefix": "/v1"}}], "route": [to(subset="v2")]},
    ]),
    virtual_service("root", ["delegate.test"], [
        {"match": [{"uri": {"prefix": "/shop"}}], "delegate": {"name": "shop-routes", "namespace": "app"}},
        {"route": [to(subset="v1")]},
    ]),
    # A delegate has no hosts: it is reached only through the root's delegating route.
    virtual_service("shop-routes", None, [
        {"match": [{"uri": {"prefix": "/shop/cart"}}], "route": [to(subset="v2")]},
        {"match": [{"uri": {"prefix": "/shop/items"}}], "route": [to(subset="v3")]},
    ]),
)


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def test_short_service_name_selects_its_virtual_service(env):
    r = request(env, "GET", "/hello", host="demoapp")
    assert r.status == 200, r
    assert r.served_by == V1
    assert r.upstream_headers()[CLUSTER_HEADER] == V1


@pytest.mark.parametrize("host", ["demoapp.app", "demoapp.app.svc", "demoapp.app.svc.cluster.local"])
def test_namespace_qualified_names_select_the_same_virtual_service(env, host):
    r = request(env, "GET", "/", host=host)
    assert r.served_by == V1, r


def test_port_in_host_header_is_ignored_when_selecting(env):
    assert request(env, "GET", "/", host="demoapp:8080").served_by == V1


def test_host_is_matched_case_insensitively(env):
    assert request(env, "GET", "/", host="DemoApp.APP.svc.Cluster.Local").served_by == V1


@pytest.mark.parametrize("host", ["unknown.test", "demoapp.other", "example.com"])
def test_host_without_virtual_service_passes_untouched(env, host):
    r = request(env, "GET", "/some/path?q=1", host=host)
    assert r.status == 200, r
    assert r.served_by == PASSTHROUGH
    seen = r.upstream_headers()
    assert CLUSTER_HEADER not in seen
    assert seen["host"] == host
    assert r.json()["path"] == "/some/path?q=1"
    assert not any(k.startswith("x-envoy-retry") or k == "x-envoy-max-retries" for k in seen), seen


@pytest.mark.parametrize("host", ["www.example.com", "a.b.example.com", "www.example.com:9000"])
def test_wildcard_host_selects_virtual_service(env, host):
    assert request(env, "GET", "/", host=host).served_by == SHOP


def test_exact_host_wins_over_wildcard(env):
    assert request(env, "GET", "/", host="api.example.com").served_by == REVIEWS


def test_virtual_service_without_matching_route_answers_404(env, upstreams):
    tid = new_test_id("noroute")
    r = request(env, "GET", "/v2/thing", host="strict.test", headers={"x-test-id": tid})
    assert r.status == 404, r
    assert r.served_by is None
    assert upstreams.attempts(tid) == 0
    # The route that does match still works.
    assert request(env, "GET", "/v1/thing", host="strict.test").served_by == V2


def test_client_supplied_cluster_header_is_replaced_for_virtual_service_hosts(env):
    r = request(env, "GET", "/", host="demoapp", headers={CLUSTER_HEADER: V3})
    assert r.served_by == V1, r
    assert r.upstream_headers()[CLUSTER_HEADER] == V1


def test_client_cannot_pick_a_cluster_for_hosts_without_virtual_service(env):
    r = request(env, "GET", "/", host="unknown.test", headers={CLUSTER_HEADER: V3})
    assert r.served_by == PASSTHROUGH, r
    assert CLUSTER_HEADER not in r.upstream_headers()


def test_catch_all_host_takes_every_request(envoy):
    env = envoy(plugin_config(virtual_service("any", ["*"], [{"route": [to(subset="v3")]}])))
    for host in ["anything.test", "demoapp", "127.0.0.1"]:
        assert request(env, "GET", "/", host=host).served_by == V3, host



def test_delegating_route_applies_the_delegate_virtual_service_routes(env):
    assert request(env, "GET", "/shop/cart", host="delegate.test").served_by == V2
    assert request(env, "GET", "/shop/items/42", host="delegate.test").served_by == V3
    assert request(env, "GET", "/home", host="delegate.test").served_by == V1


def test_request_matching_no_delegate_route_falls_through_to_the_next_root_route(env):
    assert request(env, "GET", "/shop/unknown", host="delegate.test").served_by == V1
