"""Answers the filter gives itself: redirects, direct responses and CORS preflights.

None of these may reach the upstream; each test checks that through the attempt counter.
"""

import base64

import pytest

from conftest import V1, new_test_id, plugin_config, request, to, virtual_service


def on(prefix, **action):
    return {"match": [{"uri": {"prefix": prefix}}], **action}


BINARY = b"binary\x00\x01\xfe\xff body"

CORS = {
    "allowOrigins": [{"exact": "https://good.example"}, {"regex": "https://[a-z]+\\.trusted\\.example"}],
    "allowMethods": ["GET", "POST"],
    "allowHeaders": ["x-custom", "content-type"],
    "exposeHeaders": ["x-exposed"],
    "maxAge": "24h",
    "allowCredentials": True,
}

CONFIG = plugin_config(
    virtual_service("redirect", ["redirect.test"], [
        on("/old", redirect={"uri": "/new"}),
        on("/moved", redirect={"authority": "new.example", "uri": "/landing", "redirectCode": 302}),
        on("/secure", redirect={"scheme": "https"}),
        on("/port", redirect={"port": 8443}),
        on("/derive-default", redirect={"scheme": "https", "derivePort": "FROM_PROTOCOL_DEFAULT"}),
        on("/derive-request", redirect={"authority": "other.example", "derivePort": "FROM_REQUEST_PORT"}),
    ]),
    virtual_service("direct", ["direct.test"], [
        on("/string", directResponse={"status": 418, "body": {"string": "I am a teapot"}},
           headers={"response": {"set": {"x-direct": "yes"}}}),
        on("/bytes", directResponse={"status": 200, "body": {"bytes": base64.b64encode(BINARY).decode()}}),
        on("/empty", directResponse={"status": 503}),
    ]),
    virtual_service("cors", ["cors.test"], [{"corsPolicy": CORS, "route": [to(subset="v1")]}]),
)


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def local(env, upstreams, method, path, host, headers=None):
    """A request that must be answered by the filter itself."""
    tid = new_test_id("local")
    r = request(env, method, path, host=host, headers={"x-test-id": tid, **(headers or {})})
    assert r.served_by is None, r
    assert upstreams.attempts(tid) == 0
    return r


# --- redirect ---------------------------------------------------------------------------------


def test_redirect_uri_defaults_to_301_and_keeps_the_query(env, upstreams):
    r = local(env, upstreams, "GET", "/old/page?x=1", "redirect.test")
    assert r.status == 301, r
    assert r.headers["location"] == "http://redirect.test/new?x=1"


def test_redirect_authority_and_redirect_code_302(env, upstreams):
    r = local(env, upstreams, "GET", "/moved", "redirect.test:8080")
    assert r.status == 302, r
    assert r.headers["location"] == "http://new.example/landing"


def test_redirect_scheme_keeps_host_and_path(env, upstreams):
    r = local(env, upstreams, "GET", "/secure?a=b", "redirect.test")
    assert r.status == 301, r
    assert r.headers["location"] == "https://redirect.test/secure?a=b"


def test_redirect_to_https_drops_the_http_default_port_of_the_request(env, upstreams):
    """`Host: redirect.test:80` names http's default port; an http->https redirect must not
    send the client to https on port 80 (Envoy's own redirect drops it the same way)."""
    r = local(env, upstreams, "GET", "/secure", "redirect.test:80")
    assert r.headers["location"] == "https://redirect.test/secure", r


def test_redirect_keeps_a_non_default_request_port(env, upstreams):
    r = local(env, upstreams, "GET", "/old", "redirect.test:8080")
    assert r.headers["location"] == "http://redirect.test:8080/new", r


def test_redirect_port(env, upstreams):
    r = local(env, upstreams, "GET", "/port", "redirect.test")
    assert r.headers["location"] == "http://redirect.test:8443/port", r


def test_redirect_derive_port_from_protocol_default_keeps_the_request_port_as_istiod_does(env, upstreams):
    """istiod's ApplyRedirect sets no port for FROM_PROTOCOL_DEFAULT, so Envoy's newUri keeps a
    non-default request port (Istio's documentation says otherwise; the code decides)."""
    r = local(env, upstreams, "GET", "/derive-default", "redirect.test:8080")
    assert r.headers["location"] == "https://redirect.test:8080/derive-default", r


def test_redirect_derive_port_from_request_port_keeps_it_on_the_new_authority(env, upstreams):
    r = local(env, upstreams, "GET", "/derive-request", "redirect.test:8080")
    assert r.headers["location"] == "http://other.example:8080/derive-request", r


# --- direct response --------------------------------------------------------------------------


def test_direct_response_with_string_body_and_route_response_headers(env, upstreams):
    r = local(env, upstreams, "GET", "/string", "direct.test")
    assert r.status == 418, r
    assert r.body == b"I am a teapot"
    assert r.headers.get("x-direct") == "yes"


def test_direct_response_with_base64_bytes_body(env, upstreams):
    r = local(env, upstreams, "GET", "/bytes", "direct.test")
    assert r.status == 200, r
    assert r.body == BINARY


def test_direct_response_without_body(env, upstreams):
    r = local(env, upstreams, "GET", "/empty", "direct.test")
    assert r.status == 503, r
    assert r.body == b""


# --- CORS ------------------------------------------------------------------------------------


PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-custom"}


def cors_headers(r):
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


def test_cors_preflight_from_allowed_origin_is_answered_by_the_filter(env, upstreams):
    r = local(env, upstreams, "OPTIONS", "/api", "cors.test",
              headers={"Origin": "https://good.example", **PREFLIGHT})
    assert r.status == 200, r
    h = r.headers
    assert h["access-control-allow-origin"] == "https://good.example"
    assert [m.strip() for m in h["access-control-allow-methods"].split(",")] == ["GET", "POST"]
    assert [m.strip() for m in h["access-control-allow-headers"].split(",")] == ["x-custom", "content-type"]
    assert h["access-control-max-age"] == "86400"
    assert h["access-control-allow-credentials"] == "true"


def test_cors_preflight_from_origin_matching_a_regex_is_answered(env, upstreams):
    r = local(env, upstreams, "OPTIONS", "/api", "cors.test",
              headers={"Origin": "https://app.trusted.example", **PREFLIGHT})
    assert r.headers["access-control-allow-origin"] == "https://app.trusted.example", r


def test_cors_simple_request_from_allowed_origin_gets_allow_origin_and_expose_headers(env):
    r = request(env, "GET", "/api", host="cors.test", headers={"Origin": "https://good.example"})
    assert r.status == 200 and r.served_by == V1, r
    assert r.headers["access-control-allow-origin"] == "https://good.example"
    assert r.headers["access-control-expose-headers"] == "x-exposed"
    assert r.headers["access-control-allow-credentials"] == "true"


def test_cors_request_from_disallowed_origin_gets_no_cors_headers(env):
    r = request(env, "GET", "/api", host="cors.test", headers={"Origin": "https://evil.example"})
    assert r.status == 200 and r.served_by == V1, r
    assert cors_headers(r) == {}


def test_cors_preflight_from_disallowed_origin_is_forwarded_without_cors_headers(env, upstreams):
    tid = new_test_id("cors-fwd")
    r = request(env, "OPTIONS", "/api", host="cors.test",
                headers={"Origin": "https://evil.example", "x-test-id": tid, **PREFLIGHT})
    assert r.served_by == V1, r
    assert upstreams.attempts(tid) == 1
    assert cors_headers(r) == {}


def test_cors_regex_origin_must_match_whole_origin(env):
    r = request(env, "GET", "/api", host="cors.test", headers={"Origin": "https://app.trusted.example.evil"})
    assert cors_headers(r) == {}, r
