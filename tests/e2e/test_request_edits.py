"""Header edits and rewrites: what the upstream receives and what the client gets back."""

import pytest

from conftest import V1, V2, plugin_config, request, to, virtual_service

CONFIG = plugin_config(
    virtual_service("headers", ["headers.test"], [{
        "headers": {
            "request": {"set": {"x-set": "s", "x-replaced": "new"}, "add": {"x-added": "a"},
                        "remove": ["x-remove-me"]},
            "response": {"set": {"x-resp-set": "r"}, "add": {"x-resp-add": "ra"},
                         "remove": ["x-upstream-secret"]},
        },
        "route": [to(subset="v1")],
    }]),
    virtual_service("per-dest", ["per-dest.test"], [{
        "headers": {"request": {"set": {"x-route": "yes"}}},
        "route": [
            to(subset="v1", weight=50, headers={"request": {"set": {"x-dest": "one"}},
                                                 "response": {"set": {"x-dest-resp": "one"}}}),
            to(subset="v2", weight=50, headers={"request": {"set": {"x-dest": "two"}},
                                                 "response": {"set": {"x-dest-resp": "two"}}}),
        ],
    }]),
    virtual_service("rewrite", ["rewrite.test"], [
        {"match": [{"uri": {"prefix": "/old"}}], "rewrite": {"uri": "/new"}, "route": [to(subset="v1")]},
        {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/"}, "route": [to(subset="v1")]},
        {"match": [{"uri": {"exact": "/exact-old"}}], "rewrite": {"uri": "/replaced"}, "route": [to(subset="v1")]},
        {"match": [{"uri": {"prefix": "/re/"}}],
         "rewrite": {"uriRegexRewrite": {"match": "^/re/(.*)$", "rewrite": "/new/\\1"}},
         "route": [to(subset="v1")]},
        {"match": [{"uri": {"prefix": "/host"}}], "rewrite": {"authority": "rewritten.example"},
         "route": [to(subset="v1")]},
    ]),
    virtual_service("rewrite-all", ["rewrite-all.test"], [
        {"rewrite": {"uri": "/v2/"}, "route": [to(subset="v1")]},
    ]),
)


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def test_request_headers_set_add_and_remove_reach_the_upstream_edited(env):
    r = request(env, "GET", "/", host="headers.test", headers={
        "x-replaced": "old", "x-remove-me": "1", "x-added": "client", "x-kept": "k"})
    assert r.status == 200, r
    seen = r.upstream_headers()
    assert seen["x-set"] == "s"
    assert seen["x-replaced"] == "new"
    assert "x-remove-me" not in seen
    assert [v.strip() for v in seen["x-added"].split(",")] == ["client", "a"]
    assert seen["x-kept"] == "k"


def test_response_headers_set_add_and_remove_reach_the_client_edited(env):
    r = request(env, "GET", "/", host="headers.test", headers={
        "x-upstream-response-header": "x-upstream-secret=hidden"})
    assert r.status == 200, r
    assert r.headers["x-resp-set"] == "r"
    assert r.headers["x-resp-add"] == "ra"
    assert "x-upstream-secret" not in r.headers

    r = request(env, "GET", "/", host="headers.test", headers={"x-upstream-response-header": "x-resp-set=upstream"})
    assert r.headers["x-resp-set"] == "r", r


def test_destination_headers_apply_to_the_chosen_destination_only(env):
    seen = {}
    for _ in range(40):
        r = request(env, "GET", "/", host="per-dest.test")
        up = r.upstream_headers()
        assert up["x-route"] == "yes"
        expected = {V1: "one", V2: "two"}[r.served_by]
        assert up["x-dest"] == expected, (r.served_by, up)
        assert r.headers["x-dest-resp"] == expected, r
        seen[r.served_by] = True
        if len(seen) == 2:
            break
    assert set(seen) == {V1, V2}


def test_rewrite_uri_replaces_the_matched_prefix_and_keeps_the_query(env):
    assert request(env, "GET", "/old/path?x=1&y=2", host="rewrite.test").json()["path"] == "/new/path?x=1&y=2"
    assert request(env, "GET", "/api/users?q=a", host="rewrite.test").json()["path"] == "/users?q=a"


def test_rewrite_uri_on_an_exact_match_replaces_the_whole_path(env):
    assert request(env, "GET", "/exact-old?k=v", host="rewrite.test").json()["path"] == "/replaced?k=v"


def test_uri_regex_rewrite_substitutes_groups(env):
    r = request(env, "GET", "/re/a/b?k=v", host="rewrite.test")
    assert r.json()["path"] == "/new/a/b?k=v", r


def test_rewrite_authority_changes_the_host_the_upstream_sees(env):
    r = request(env, "GET", "/host", host="rewrite.test")
    assert r.status == 200 and r.served_by == V1, r
    assert r.upstream_headers()["host"] == "rewritten.example"


def test_rewrite_uri_without_uri_match_replaces_the_leading_slash(env):
    assert request(env, "GET", "/items/7?x=1", host="rewrite-all.test").json()["path"] == "/v2/items/7?x=1"
