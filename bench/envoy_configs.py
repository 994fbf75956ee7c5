"""Envoy bootstraps for the benchmark: a fast upstream, and one Envoy with three listeners that
carry the same demo rule set three ways: (a) no rules, (b) Envoy native config as istiod would
write it, (c) the meshrules filter."""

from __future__ import annotations

import json

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

V1 = "outbound|8080|v1|demoapp.app.svc.cluster.local"
V2 = "outbound|8080|v2|demoapp.app.svc.cluster.local"
PLAIN = "plain"

# The demo rule set: a header canary, a 90/10 split, fault delay and abort evaluated at 0%, a
# timeout and Istio's default retry policy on every route.
RULES = {
    "resources": [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "demoapp", "namespace": "app"},
         "spec": {"hosts": ["demoapp"], "http": [
             {"name": "canary",
              "match": [{"headers": {"x-canary": {"exact": "true"}}}],
              "route": [{"destination": {"host": "demoapp", "subset": "v2", "port": {"number": 8080}}}],
              "timeout": "5s",
              "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 0}},
                        "abort": {"httpStatus": 503, "percentage": {"value": 0}}}},
             {"name": "split",
              "route": [
                  {"destination": {"host": "demoapp", "subset": "v1", "port": {"number": 8080}}, "weight": 90},
                  {"destination": {"host": "demoapp", "subset": "v2", "port": {"number": 8080}}, "weight": 10}],
              "timeout": "5s",
              "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 0}},
                        "abort": {"httpStatus": 503, "percentage": {"value": 0}}}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "demoapp", "namespace": "app"},
         "spec": {"host": "demoapp", "subsets": [{"name": "v1"}, {"name": "v2"}]}},
    ],
    # The cluster_header route below carries Istio's defaults, as (b)'s routes do.
    "routing": {"routeHasIstioDefaults": True},
}

# What istiod writes for the same rules (route/retry.go DefaultPolicy, fault per route).
ISTIO_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
    "retry_host_predicate": [{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
    "host_selection_retry_max_attempts": 5,
}
ISTIO_FAULT = {"@type": FAULT_TYPE,
               "delay": {"fixed_delay": "1s", "percentage": {"numerator": 0, "denominator": "MILLION"}},
               "abort": {"http_status": 503, "percentage": {"numerator": 0, "denominator": "MILLION"}}}
DOMAINS = ["demoapp", "demoapp.app", "demoapp.app.svc", "demoapp.app.svc.cluster.local"]


def _cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def _listener(name: str, port: int, virtual_hosts: list, filters: list) -> dict:
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": {"@type": HCM, "stat_prefix": name,
                                                             "route_config": {"name": name, "virtual_hosts": virtual_hosts},
                                                             "http_filters": filters + [ROUTER]}}]}]}


def _catch_all(cluster: str) -> dict:
    return {"name": "rest", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}


def plain_listener(port: int) -> dict:
    return _listener("a_plain", port, [_catch_all(PLAIN)], [])


def native_listener(port: int) -> dict:
    def route(match: dict, action: dict) -> dict:
        action.update({"timeout": "5s", "retry_policy": ISTIO_RETRY})
        return {"match": match, "route": action,
                "typed_per_filter_config": {"envoy.filters.http.fault": ISTIO_FAULT}}

    vhost = {"name": "demoapp", "domains": DOMAINS, "routes": [
        route({"prefix": "/", "headers": [{"name": "x-canary", "string_match": {"exact": "true"}}]},
              {"cluster": V2}),
        route({"prefix": "/"},
              {"weighted_clusters": {"clusters": [{"name": V1, "weight": 90}, {"name": V2, "weight": 10}]}}),
    ]}
    fault = {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT_TYPE}}
    return _listener("b_native", port, [vhost, _catch_all(PLAIN)], [fault])


def meshrules_filter(wasm: str, rules: dict) -> dict:
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "meshrules", "root_id": "meshrules",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(rules)},
                   "vm_config": {"vm_id": "meshrules", "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": wasm}}}}}}


def meshrules_listener(port: int, wasm: str) -> dict:
    vhost = {"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "x-meshrules-cluster", "present_match": True}]},
         "route": {"cluster_header": "x-meshrules-cluster", "timeout": "0s", "retry_policy": ISTIO_RETRY}},
        {"match": {"prefix": "/"}, "route": {"cluster": PLAIN, "timeout": "0s"}},
    ]}
    return _listener("c_meshrules", port, [vhost], [meshrules_filter(wasm, RULES)])


def bootstrap(admin_port: int, listeners: list, upstream_port: int) -> dict:
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {"listeners": listeners,
                                 "clusters": [_cluster(n, upstream_port) for n in (V1, V2, PLAIN)]}}


def upstream(admin_port: int, port: int) -> dict:
    """A fast upstream: Envoy answering 200 from a direct_response."""
    vhost = {"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {"listeners": [_listener("upstream", port, [vhost], [])]}}
