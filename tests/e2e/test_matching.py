"""Istio HTTPMatchRequest conditions decide which route a request takes.

One Envoy serves the whole module; each concern has its own VirtualService on its own host.
Routes send to demoapp's subsets v1, v2 and v3, so the answering upstream shows which route won.
"""

import pytest

from conftest import V1, V2, V3, plugin_config, raw_served_by, request, to, virtual_service


def vs(host, *routes):
    return virtual_service(host.split(".")[0], [host], list(routes))


def when(route_to, *blocks):
    return {"match": list(blocks), "route": [to(subset=route_to)]}


def fallback(subset="v1"):
    return {"route": [to(subset=subset)]}


CONFIG = plugin_config(
    vs("canary.test",
       when("v2", {"headers": {"x-canary": {"exact": "true"}}}),
       fallback()),
    vs("header-kinds.test",
       when("v2", {"headers": {"x-user": {"regex": "alice|bob"}}}),
       when("v3", {"headers": {"x-user": {"prefix": "team-"}}}),
       fallback()),
    vs("uri.test",
       when("v1", {"uri": {"exact": "/exact"}}),
       when("v2", {"uri": {"prefix": "/prefix/"}}),
       when("v3", {"uri": {"regex": "/re/[0-9]+"}})),
    vs("case.test",
       when("v2", {"uri": {"prefix": "/Docs"}, "ignoreUriCase": True}),
       when("v3", {"uri": {"exact": "/About"}}),
       fallback()),
    vs("method.test",
       when("v2", {"method": {"exact": "POST"}}),
       when("v3", {"method": {"regex": "PUT|DELETE"}}),
       fallback()),
    vs("scheme.test",
       when("v2", {"scheme": {"exact": "https"}}),
       when("v3", {"scheme": {"exact": "http"}}),
       fallback()),
    virtual_service("authority", ["authority.test", "alias.authority.test"], [
        when("v2", {"authority": {"exact": "alias.authority.test"}}),
        when("v3", {"authority": {"prefix": "authority.test:"}}),
        fallback(),
    ]),
    vs("query.test",
       when("v2", {"queryParams": {"env": {"exact": "canary"}}}),
       when("v3", {"queryParams": {"debug": {"regex": "1|true"}}}),
       fallback()),
    vs("without.test",
       when("v2", {"withoutHeaders": {"x-debug": {"exact": "1"}}}),
       fallback()),
    vs("presence.test",
       when("v2", {"headers": {"x-debug": {}}}),
       fallback()),
    vs("port.test",
       when("v2", {"port": 9080}),
       when("v3", {"port": 80}),
       fallback()),
    vs("logic.test",
       when("v2",
            {"uri": {"prefix": "/and"}, "headers": {"x-a": {"exact": "1"}}},
            {"headers": {"x-b": {"exact": "1"}}}),
       fallback()),
    vs("order.test",
       when("v2", {"uri": {"prefix": "/api"}}),
       when("v3", {"uri": {"prefix": "/api/v2"}}),
       fallback()),
)


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def served(env, host, path="/", method="GET", headers=None):
    r = request(env, method, path, host=host, headers=headers)
    return r.served_by or f"status {r.status}"


def test_header_canary_sends_flagged_requests_to_v2(env):
    assert served(env, "canary.test", headers={"x-canary": "true"}) == V2
    assert served(env, "canary.test", headers={"x-canary": "false"}) == V1
    assert served(env, "canary.test", headers={"x-canary": "TRUE"}) == V1
    assert served(env, "canary.test") == V1


def test_repeated_header_matches_when_any_of_its_values_matches(env):
    """Envoy 1.40's own route header matcher (what istiod generates) accepts a header sent
    several times when any one of its values matches: checked against a plain Envoy route with
    `x-canary exact "true"`, which takes all three of the first requests below."""
    def canary(*values):
        return raw_served_by(env, "GET", "/", "canary.test", [f"x-canary: {v}" for v in values])

    assert canary("true", "true") == V2
    assert canary("false", "true") == V2
    assert canary("true", "false") == V2
    assert canary("false", "no") == V1


def test_header_regex_is_a_full_match_and_prefix_matches_the_start(env):
    assert served(env, "header-kinds.test", headers={"x-user": "alice"}) == V2
    assert served(env, "header-kinds.test", headers={"x-user": "bob"}) == V2
    assert served(env, "header-kinds.test", headers={"x-user": "alice2"}) == V1
    assert served(env, "header-kinds.test", headers={"x-user": "team-red"}) == V3
    assert served(env, "header-kinds.test", headers={"x-user": "red-team-"}) == V1


def test_uri_exact_matches_the_whole_path_and_ignores_the_query(env):
    assert served(env, "uri.test", "/exact") == V1
    assert served(env, "uri.test", "/exact?x=1") == V1
    assert served(env, "uri.test", "/exact/more") == "status 404"
    assert served(env, "uri.test", "/Exact") == "status 404"


def test_uri_prefix_matches_the_start_of_the_path(env):
    assert served(env, "uri.test", "/prefix/a/b") == V2
    assert served(env, "uri.test", "/prefix/") == V2
    assert served(env, "uri.test", "/prefix") == "status 404"


def test_uri_regex_must_match_the_whole_path(env):
    assert served(env, "uri.test", "/re/123") == V3
    assert served(env, "uri.test", "/re/123?q=x") == V3
    assert served(env, "uri.test", "/re/123x") == "status 404"
    assert served(env, "uri.test", "/x/re/123") == "status 404"


def test_ignore_uri_case_applies_to_that_match_only(env):
    assert served(env, "case.test", "/docs/intro") == V2
    assert served(env, "case.test", "/DOCS") == V2
    assert served(env, "case.test", "/About") == V3
    assert served(env, "case.test", "/about") == V1


def test_method_match(env):
    assert served(env, "method.test", method="POST") == V2
    assert served(env, "method.test", method="PUT") == V3
    assert served(env, "method.test", method="DELETE") == V3
    assert served(env, "method.test", method="GET") == V1
    assert served(env, "method.test", method="HEAD") == V1


def test_scheme_match_sees_plain_http(env):
    # The listener is plaintext, so :scheme is "http": the https route is skipped.
    assert served(env, "scheme.test") == V3


def test_authority_match_compares_the_host_header_as_sent(env):
    assert served(env, "authority.test", headers=None) == V1
    assert served(env, "alias.authority.test") == V2
    assert served(env, "authority.test:8080") == V3


def test_query_parameter_match(env):
    assert served(env, "query.test", "/?env=canary") == V2
    assert served(env, "query.test", "/path?x=1&env=canary") == V2
    assert served(env, "query.test", "/?env=prod") == V1
    assert served(env, "query.test", "/?debug=true") == V3
    assert served(env, "query.test", "/?debug=1") == V3
    assert served(env, "query.test", "/?debug=yes") == V1
    assert served(env, "query.test", "/") == V1


def test_without_headers_matches_when_header_is_missing_or_differs(env):
    assert served(env, "without.test") == V2
    assert served(env, "without.test", headers={"x-debug": "0"}) == V2
    assert served(env, "without.test", headers={"x-debug": "1"}) == V1


def test_header_presence_match(env):
    assert served(env, "presence.test", headers={"x-debug": "anything"}) == V2
    assert served(env, "presence.test", headers={"x-debug": ""}) == V2
    assert served(env, "presence.test") == V1


def test_port_match_uses_the_port_of_the_host_header(env):
    assert served(env, "port.test:9080") == V2
    assert served(env, "port.test") == V3  # no port: http's default 80
    assert served(env, "port.test:80") == V3
    assert served(env, "port.test:7000") == V1


def test_match_blocks_are_ored_and_conditions_within_a_block_are_anded(env):
    assert served(env, "logic.test", "/and", headers={"x-a": "1"}) == V2
    assert served(env, "logic.test", "/and") == V1
    assert served(env, "logic.test", "/other", headers={"x-a": "1"}) == V1
    assert served(env, "logic.test", "/other", headers={"x-b": "1"}) == V2


def test_first_matching_route_wins(env):
    assert served(env, "order.test", "/api/v2/users") == V2
    assert served(env, "order.test", "/web") == V1
