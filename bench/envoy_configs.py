"""Envoy bootstraps for the benchmark: a fast upstream, and one Envoy whose listeners carry the
same demo rule set: (a) no rules, (b) Envoy native config as istiod would write it, (c) the
meshrules filter; plus (d) meshrules without its verified-token cache (every JWT checked
again), (e) meshrules with the routing rules only, to isolate what the JWT check costs, and
(f) as b with jwt_authn's own verified-token cache on (istiod leaves it off), and (g) as e
with a rate limit on every route whose bucket never runs dry, to isolate what a limit check
costs; (k) as b without jwt_authn and RBAC, the native routing rules alone."""

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

# (j): only a 90/10 split, the smallest thing the filter decides (issue 13's "plain split").
SPLIT_ONLY = {
    "resources": [
        {**RULES["resources"][0], "spec": {"hosts": ["demoapp"], "http": [
            {"name": "split", "route": RULES["resources"][0]["spec"]["http"][1]["route"]}]}},
        RULES["resources"][1],
    ],
    "routing": RULES["routing"],
}

# (g): a LocalRateLimit on every route of the demo VirtualService, far above any load, with a
# per-user descriptor (no request sends x-user: the route's bucket is taken each time).
RATE_LIMITED = {**RULES, "rateLimits": [{
    "name": "bench", "virtualService": "app/demoapp",
    "localRateLimit": {
        "token_bucket": {"max_tokens": 4_000_000_000, "tokens_per_fill": 4_000_000_000, "fill_interval": "1s"},
        "filter_enabled": {"default_value": {"numerator": 100}},
        "filter_enforced": {"default_value": {"numerator": 100}},
        "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]}],
        "descriptors": [{"entries": [{"key": "user"}],
                         "token_bucket": {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1s"}}]}}]}

ISSUER = "https://idp.bench"


def security_resources(jwks: str) -> list:
    """The demo's security: a JWT check (RequestAuthentication, inline keys) and an ALLOW
    policy on the token's principal and the method."""
    return [
        {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
         "metadata": {"name": "jwt", "namespace": "app"},
         "spec": {"jwtRules": [{"issuer": ISSUER, "jwks": jwks}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "allow-users", "namespace": "app"},
         "spec": {"action": "ALLOW", "rules": [{
             "from": [{"source": {"requestPrincipals": [f"{ISSUER}/*"]}}],
             "to": [{"operation": {"methods": ["GET"]}}]}]}},
    ]


def rules_with_security(jwks: str, token_cache: bool = True) -> dict:
    rules = {**RULES, "resources": RULES["resources"] + security_resources(jwks)}
    if not token_cache:
        rules["security"] = {"tokenCacheSize": 0}
    return rules


def native_security_filters(jwks: str, jwt_cache: bool) -> list:
    """What the same security is in Envoy's own filters: jwt_authn (requires_any provider or
    allow_missing, as istiod writes it) and an RBAC ALLOW policy on the token's issuer.
    `jwt_cache` turns on jwt_authn's verified-token cache, the like of meshrules' own."""
    provider = {"issuer": ISSUER, "local_jwks": {"inline_string": jwks},
                "payload_in_metadata": "payload", "forward": False}
    if jwt_cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    jwt = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "bench"}, {"allow_missing": {}}]}}}]}}
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"ns[app]-policy[allow-users]-rule[0]": {
            "permissions": [{"and_rules": {"rules": [
                {"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}}],
            "principals": [{"and_ids": {"ids": [
                {"metadata": {"filter": "envoy.filters.http.jwt_authn",
                              "path": [{"key": "payload"}, {"key": "iss"}],
                              "value": {"string_match": {"exact": ISSUER}}}},
                {"metadata": {"filter": "envoy.filters.http.jwt_authn",
                              "path": [{"key": "payload"}, {"key": "sub"}],
                              "value": {"string_match": {"safe_regex": {"regex": ".+"}}}}}]}}]}}}}}
    return [jwt, rbac]


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


def native_listener(port: int, jwks: str, jwt_cache: bool = False, name: str = "b_native",
                    security: bool = True) -> dict:
    """b: the demo rules as istiod writes them; `security=False` drops jwt_authn and RBAC, the
    routing rules alone (k), the like-for-like of meshrules with the VirtualService only (e)."""
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
    security_filters = native_security_filters(jwks, jwt_cache) if security else []
    return _listener(name, port, [vhost, _catch_all(PLAIN)], security_filters + [fault])


def meshrules_filter(wasm: str, rules: dict, vm_id: str = "meshrules", vm_env: dict | None = None) -> dict:
    vm_config = {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}}}
    if vm_env:
        vm_config["environment_variables"] = {"key_values": vm_env}
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "meshrules", "root_id": "meshrules",
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(rules)},
                   "vm_config": vm_config}}}


# The filter without its per-destination response and duration metrics (README, Metrics).
NO_DESTINATION_METRICS = {"MESHRULES_DESTINATION_METRICS": "off"}


def meshrules_listener(port: int, wasm: str, rules: dict, name: str = "c_meshrules",
                       vm_id: str | None = None, vm_env: dict | None = None) -> dict:
    vhost = {"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "x-meshrules-cluster", "present_match": True}]},
         "route": {"cluster_header": "x-meshrules-cluster", "timeout": "0s", "retry_policy": ISTIO_RETRY}},
        {"match": {"prefix": "/"}, "route": {"cluster": PLAIN, "timeout": "0s"}},
    ]}
    # One VM per listener unless told: each carries its own configuration.
    return _listener(name, port, [vhost], [meshrules_filter(wasm, rules, vm_id=vm_id or name, vm_env=vm_env)])


def ecds_listener(port: int, path: str, timeout: str | None = None) -> dict:
    """A listener whose meshrules filter comes through ECDS from a watched file, as in
    envoy/envoy-ecds.yaml (the bootstrap needs a node: see `with_node`)."""
    route = {"cluster": PLAIN, **({"timeout": timeout} if timeout else {})}
    vhost = {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}
    source = {"path_config_source": {"path": path, "watched_directory": {"path": path.rsplit("/", 1)[0]}}}
    return _listener("ecds", port, [vhost], [{"name": "meshrules", "config_discovery": {
        "config_source": source,
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}}])


def with_node(bootstrap_: dict) -> dict:
    """Any xDS subscription, a file one included, needs a node id and cluster."""
    return {**bootstrap_, "node": {"id": "bench", "cluster": "bench"}}


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
