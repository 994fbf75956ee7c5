"""Rate limits (``rateLimits``: Envoy's LocalRateLimit on VirtualService routes) in real Envoy.

Each limit is given twice, as the same LocalRateLimit JSON: to meshrules, and to Envoy 1.40's
own ``envoy.filters.http.local_ratelimit`` as a route's ``typed_per_filter_config`` (what an
Istio EnvoyFilter patches in). The same requests go to both and the answers are compared
request by request: status, body and the ``x-ratelimit-*`` headers. Buckets are hours long,
so nothing refills between requests and the comparison does not depend on timing.

Then what only meshrules has: a JWT claim as the key, one limit across 4 worker VMs under
concurrent load, and its counters.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import cluster, plugin_config, request, to, virtual_service
from load import WRK_SCRIPT
from security import bearer, claims, hmac_key, jwks, jwt_rule, request_authentication, sign

HOST = "demoapp"
SERVED = cluster()  # the route's cluster: outbound|||demoapp.app.svc.cluster.local
LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
LOCAL_RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
STAT = "wasmcustom.meshrules_ratelimit_{}.limit.{}"

ON = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
HOUR = "3600s"


def routes_vs() -> dict:
    return virtual_service("demoapp", [HOST], [{"name": "web", "route": [to()]}])


def with_limit(local: dict, name: str = "web-limit") -> dict:
    cfg = plugin_config(routes_vs())
    cfg["rateLimits"] = [{"name": name, "virtualService": "app/demoapp", "routes": ["web"],
                          "localRateLimit": local}]
    return cfg


def native(local: dict):
    """The reference: no meshrules, Envoy's local_ratelimit filter before the router, the route
    to the same cluster carrying the LocalRateLimit (as an EnvoyFilter on the route would)."""
    def transform(cfg: dict) -> dict:
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"][0] = {"name": LOCAL_RATELIMIT,
                                  "typed_config": {"@type": LOCAL_RATELIMIT_TYPE, "stat_prefix": "rl"}}
        vhost = hcm["route_config"]["virtual_hosts"][0]
        vhost["routes"] = [{
            "match": {"prefix": "/"},
            "route": {"cluster": SERVED, "timeout": "0s"},
            "typed_per_filter_config": {LOCAL_RATELIMIT: {"@type": LOCAL_RATELIMIT_TYPE, "stat_prefix": "rl",
                                                          **local}},
        }]
        return cfg
    return transform


@pytest.fixture
def pair(envoy):
    """``pair(local)``: a meshrules Envoy and the reference Envoy for one LocalRateLimit."""
    def start(local: dict):
        return envoy(with_limit(local)), envoy(plugin_config(), transform=native(local))
    return start


def answer(env, path: str = "/", headers: dict | None = None) -> tuple:
    r = request(env, "GET", path, HOST, headers or {})
    rl = tuple(r.headers.get(h) for h in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"))
    body = r.body if r.status == 429 else None
    return (r.status, body, *rl)


def compare(pair_envs, sequence: list[tuple[str, dict]]) -> list[tuple]:
    ours, reference = pair_envs
    got = [answer(ours, p, h) for p, h in sequence]
    want = [answer(reference, p, h) for p, h in sequence]
    assert got == want, "\n".join(f"{s}: meshrules {g} envoy {w}" for s, g, w in zip(sequence, got, want))
    return got


def test_a_routes_token_bucket_answers_as_envoys_local_ratelimit(pair):
    local = {"token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": ON, "enable_x_ratelimit_headers": "DRAFT_VERSION_03"}
    got = compare(pair(local), [("/", {})] * 5)
    assert [g[0] for g in got] == [200, 200, 200, 429, 429]
    assert got[3] == (429, b"local_rate_limited", "3", "0", "1200")


def test_a_dynamic_descriptor_keys_a_bucket_per_header_value_and_evicts_as_envoy(pair):
    local = {"token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": ON, "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
             "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]}],
             "descriptors": [{"entries": [{"key": "user"}],
                              "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": HOUR}}]}
    users = ["alice", "alice", "bob", "bob", "carol"]
    got = compare(pair(local), [("/", {"x-user": u}) for u in users] + [("/", {})])
    assert [g[0] for g in got] == [200, 429, 200, 429, 200, 200]


def test_a_path_prefix_and_the_remote_address_as_descriptors_answer_as_envoy(pair):
    admin = {"header_value_match": {"descriptor_value": "admin",
                                    "headers": [{"name": ":path", "string_match": {"prefix": "/admin"}}]}}
    local = {"token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": ON, "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
             "rate_limits": [{"actions": [admin]}, {"actions": [{"remote_address": {}}]}],
             "descriptors": [
                 {"entries": [{"key": "header_match", "value": "admin"}],
                  "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": HOUR}},
                 {"entries": [{"key": "remote_address", "value": "127.0.0.1"}],
                  "token_bucket": {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": HOUR}},
             ]}
    got = compare(pair(local), [("/admin/a", {}), ("/admin/b", {}), ("/x", {}), ("/y", {}), ("/z", {})])
    # /admin/a takes from both buckets, /admin/b stops at the empty admin one; the address
    # bucket's 3 tokens go to /admin/a, /x and /y.
    assert [g[0] for g in got] == [200, 429, 200, 200, 429]


def test_shadow_mode_lets_everything_through_as_envoy(pair):
    local = {"token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": {"default_value": {"numerator": 0}},
             "enable_x_ratelimit_headers": "DRAFT_VERSION_03"}
    got = compare(pair(local), [("/", {})] * 3)
    assert [g[0] for g in got] == [200, 200, 200]


def test_a_refusal_says_when_to_retry_and_carries_the_configured_headers(envoy):
    local = {"token_bucket": {"max_tokens": 1, "tokens_per_fill": 2, "fill_interval": "60s"},
             "filter_enabled": ON, "filter_enforced": ON,
             "response_headers_to_add": [{"header": {"key": "x-local-rate-limit", "value": "true"}}]}
    env = envoy(with_limit(local))
    assert request(env, "GET", "/", HOST).status == 200
    r = request(env, "GET", "/", HOST)
    assert (r.status, r.body) == (429, b"local_rate_limited"), r
    assert r.headers.get("x-local-rate-limit") == "true", r
    assert r.headers.get("retry-after") == "30", r  # 2 tokens a minute: the next in 30 s
    assert "x-ratelimit-limit" not in r.headers, r  # enable_x_ratelimit_headers is off


ISSUER = "https://idp.test"


def test_a_jwt_claim_keys_the_limit_per_user(envoy):
    key = hmac_key("hs")
    ra = request_authentication("jwt", jwt_rule(ISSUER, jwks=json.dumps(jwks(key))))
    per_user = {"metadata": {"descriptor_key": "user", "metadata_key": {
        "key": "envoy.filters.http.jwt_authn", "path": [{"key": ISSUER}, {"key": "sub"}]}}}
    local = {"token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": ON,
             "rate_limits": [{"actions": [per_user]}],
             "descriptors": [{"entries": [{"key": "user"}],
                              "token_bucket": {"max_tokens": 2, "tokens_per_fill": 1, "fill_interval": HOUR}}]}
    cfg = with_limit(local)
    cfg["resources"].append(ra)
    env = envoy(cfg)
    token = {who: bearer(sign(key, claims(ISSUER, who))) for who in ("alice", "bob")}
    statuses = [request(env, "GET", "/", HOST, token[w]).status for w in ("alice", "alice", "alice", "bob")]
    assert statuses == [200, 200, 429, 200]
    # Without a token there is no claim: no descriptor, only the route's bucket.
    assert request(env, "GET", "/", HOST).status == 200


def test_one_limit_holds_across_four_worker_vms_under_concurrent_load(envoy):
    """200 tokens and no refill for an hour, 4 Envoy workers (4 Wasm VMs sharing buckets through
    proxy-wasm shared data), wrk with 32 connections for 3 s (thousands of requests). Admitted:
    at most 200 (a lost compare-and-swap never admits), and at least 190 (tolerance 5%: a take
    that loses 16 races in a row refuses)."""
    limit = 200
    local = {"token_bucket": {"max_tokens": limit, "tokens_per_fill": limit, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": ON}
    env = envoy(with_limit(local), concurrency=4)
    out = subprocess.run(
        ["wrk", "-t2", "-c32", "-d3s", "-s", str(WRK_SCRIPT), "-H", f"Host: {HOST}", env.url("/")],
        capture_output=True, text=True, timeout=30, check=True).stdout
    counts: dict[int, int] = {}
    for n, status in re.findall(r"^response (\d+) (\d+) ", out, re.M):
        counts[int(status)] = counts.get(int(status), 0) + int(n)
    total = sum(counts.values())
    assert total >= 2 * limit, out
    assert set(counts) <= {200, 429}, out
    assert 0.95 * limit <= counts.get(200, 0) <= limit, out
    name = "web-limit"
    assert env.wait_for_stat(STAT.format("allowed", name), counts.get(200, 0)) == counts.get(200, 0)
    # Requests still in flight when wrk stops are counted by the filter, not by wrk.
    limited = STAT.format("limited", name)
    env.wait_for_stat(limited, counts[429])
    assert env.stat(limited) >= counts[429]


def test_counters_count_allowed_limited_and_shadow_limited_per_limit(envoy):
    local = {"token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": {"default_value": {"numerator": 0}}}
    env = envoy(with_limit(local, name="shadowed"))
    for _ in range(3):
        assert request(env, "GET", "/", HOST).status == 200
    assert env.wait_for_stat(STAT.format("allowed", "shadowed"), 1) == 1
    assert env.wait_for_stat(STAT.format("shadow_limited", "shadowed"), 2) == 2
    assert env.stat(STAT.format("limited", "shadowed")) == 0



def test_prometheus_shows_each_limits_counters_with_a_limit_label(envoy):
    from test_metrics import STATS_TAGS
    from conftest import prometheus_value
    local = {"token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": HOUR},
             "filter_enabled": ON, "filter_enforced": ON}
    env = envoy(with_limit(local, name="per-route"), extra={"stats_config": {"stats_tags": STATS_TAGS}})
    assert [request(env, "GET", "/", HOST).status for _ in range(3)] == [200, 429, 429]
    text = env.stats_prometheus()
    assert prometheus_value(text, "meshrules_ratelimit_allowed", limit="per-route") == 1, text
    assert prometheus_value(text, "meshrules_ratelimit_limited", limit="per-route") == 2, text
