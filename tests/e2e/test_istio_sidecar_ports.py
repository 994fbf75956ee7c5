"""Destinations without a port in a sidecar shaped as istiod shapes it.

Nearly every VirtualService in the wild omits ``destination.port``. On a sidecar, istiod names
the cluster with the port the application called, the outbound listener's port
(``GetDestinationCluster``): ``outbound|9080|v2|reviews.bookinfo.svc.cluster.local``; no Istio
proxy has an ``outbound||v2|...`` cluster. Here the proxy has Istio node metadata, one listener
per service port (both carrying the filter, one VM through ``vm_id``), and only clusters named
``outbound|<port>|<subset>|<fqdn>``. Each port's clusters are served by different upstreams, so
``x-served-by`` tells which port named the cluster.
"""

from __future__ import annotations

import copy
import json

import pytest

from conftest import (V1, V2, Client, EnvoyStartError, binomial_tolerance, cluster, destination_rule,
                      free_port, plugin_config, to, virtual_service)
from security import as_workload

# 200 requests per port over a 90/10 split: every one must be answered by the upstream behind
# a cluster named with that port; the v2 share is checked loosely (5 sigma).
N = 200
RULES = plugin_config(
    virtual_service("demoapp", ["demoapp"], [
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": [to(subset="v2")]},
        {"name": "split", "route": [to(subset="v1", weight=90), to(subset="v2", weight=10)]},
    ]),
    destination_rule("demoapp", "demoapp", ["v1", "v2"]),
)


def two_service_ports(upstreams, first: int, second: int) -> dict[str, int]:
    """Clusters for both ports, named as istiod names them; the first port's are served by the
    port-less upstreams (V1, V2), the second's by the ``:8080`` ones."""
    by_port = {first: {"v1": V1, "v2": V2},
               second: {"v1": cluster(subset="v1", port=8080), "v2": cluster(port=8080)}}
    return {f"outbound|{port}|{subset}|demoapp.app.svc.cluster.local": upstreams.port(name)
            for port, subsets in by_port.items() for subset, name in subsets.items()}


def with_second_listener(first: int, second: int):
    def transform(cfg: dict) -> dict:
        cfg = as_workload()(cfg)
        listeners = cfg["static_resources"]["listeners"]
        listeners[0]["address"]["socket_address"]["port_value"] = first
        other = copy.deepcopy(listeners[0])
        other["name"] = f"0.0.0.0_{second}"
        other["address"]["socket_address"]["port_value"] = second
        listeners.append(other)
        return cfg
    return transform


@pytest.fixture(scope="module")
def sidecar(module_envoy_launcher, upstreams):
    last = None
    for _ in range(3):
        first, second = free_port(), free_port()
        try:
            env = module_envoy_launcher.start(RULES, clusters=two_service_ports(upstreams, first, second),
                                              transform=with_second_listener(first, second))
        except EnvoyStartError as e:
            if "ddress already in use" not in str(e):
                raise
            last = e
            continue
        return env, first, second
    raise AssertionError(f"no free ports after 3 tries: {last}")


def served(env, port: int, n: int, headers=None) -> dict[str, int]:
    """Which upstream answered ``n`` requests sent to the listener on ``port``."""
    on_port = copy.copy(env)
    on_port.port = port
    counts: dict[str, int] = {}
    with Client(on_port) as c:
        for _ in range(n):
            r = c.request("GET", "/", host="demoapp", headers=headers)
            key = r.served_by or f"status {r.status}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_envoy_has_no_cluster_with_an_empty_port(sidecar):
    env, _, _ = sidecar
    clusters = json.loads(env.admin("/clusters?format=json")[1])["cluster_statuses"]
    names = {c["name"] for c in clusters}
    assert not any(n.startswith("outbound||") for n in names), names


def test_portless_split_names_clusters_with_the_port_the_application_called(sidecar):
    env, first, second = sidecar
    for port, v1, v2 in ((first, V1, V2), (second, cluster(subset="v1", port=8080), cluster(port=8080))):
        counts = served(env, port, N)
        assert set(counts) <= {v1, v2}, f"port {port}: {counts}"
        assert sum(counts.values()) == N
        assert abs(counts.get(v2, 0) - N * 0.1) <= binomial_tolerance(N, 0.1), counts


def test_portless_canary_route_follows_the_listener_port(sidecar):
    env, first, second = sidecar
    assert served(env, first, 5, {"x-canary": "true"}) == {V2: 5}
    assert served(env, second, 5, {"x-canary": "true"}) == {cluster(port=8080): 5}
