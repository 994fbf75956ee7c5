"""meshrules decides as Envoy itself would, configured the way istiod configures it.

Each case is given twice: as a VirtualService to the meshrules filter, and to a *reference*
Envoy (same binary, no filter) as the routes istiod would generate for it:

- matching (istiod's ``TranslateRouteMatch``): ``path``/``prefix``/``safe_regex`` with
  ``case_sensitive: !ignoreUriCase``; header matchers on ``:method``, ``:scheme``,
  ``:authority`` and named headers; ``present_match`` for an empty StringMatch or the regex
  ``*``; ``invert_match`` for ``withoutHeaders``, plus ``treat_missing_header_as_empty`` unless
  it is a presence match; query parameter matchers alike;
- redirects (``ApplyRedirect``), rewrites (``prefix_rewrite``, ``regex_rewrite``,
  ``host_rewrite_literal``), direct responses, and the CORS and fault filters' answers
  (``TranslateCORSPolicy``, ``TranslateFault``), in Istio's filter order CORS, fault, router.

Every probe request goes to both Envoys and both must answer alike. Envoy is the oracle, so
edge cases (repeated headers, encoded query strings, ports in Host) need no assumption here.
"""

import pytest

from conftest import PASSTHROUGH, V1, V2, plugin_config, raw_served_by, request, to, virtual_service

PORTS_IN_PROBES = [80, 8080]


def case(host, blocks, probes):
    """A VirtualService on ``host``: requests matching ``blocks`` go to v2, others to v1.
    ``probes``: (method, path, header lines) sent with ``Host: host`` unless a Host is given."""
    return host, blocks, probes


H = "\n"  # joins raw header lines

CASES = [
    case("header-exact.parity", [{"headers": {"x-canary": {"exact": "true"}}}], [
        ("GET", "/", ""), ("GET", "/", "x-canary: true"), ("GET", "/", "x-canary: TRUE"),
        ("GET", "/", "x-canary: true" + H + "x-canary: true"),
        ("GET", "/", "x-canary: false" + H + "x-canary: true"),
        ("GET", "/", "x-canary: true" + H + "x-canary: false"),
        ("GET", "/", "x-canary: false" + H + "x-canary: no"),
        ("GET", "/", "X-Canary: true"),
    ]),
    case("header-prefix.parity", [{"headers": {"x-user": {"prefix": "team-"}}}], [
        ("GET", "/", "x-user: team-a"), ("GET", "/", "x-user: team-"), ("GET", "/", "x-user: Team-a"),
        ("GET", "/", "x-user: xteam-a"), ("GET", "/", ""),
        ("GET", "/", "x-user: bob" + H + "x-user: team-b"),
    ]),
    case("header-regex.parity", [{"headers": {"x-user": {"regex": "alice|bob"}}}], [
        ("GET", "/", "x-user: alice"), ("GET", "/", "x-user: bob"), ("GET", "/", "x-user: alice2"),
        ("GET", "/", "x-user: xalice"), ("GET", "/", "x-user: "), ("GET", "/", ""),
        ("GET", "/", "x-user: carol" + H + "x-user: alice"),
    ]),
    case("header-present.parity", [{"headers": {"x-debug": {}}}], [
        ("GET", "/", "x-debug: 1"), ("GET", "/", "x-debug: "), ("GET", "/", ""),
        ("GET", "/", "x-debug: a" + H + "x-debug: b"),
    ]),
    case("header-any.parity", [{"headers": {"x-a": {"regex": ".*"}}}], [
        ("GET", "/", "x-a: 1"), ("GET", "/", "x-a: "), ("GET", "/", ""),
    ]),
    case("without.parity", [{"withoutHeaders": {"x-debug": {"exact": "1"}}}], [
        ("GET", "/", ""), ("GET", "/", "x-debug: 0"), ("GET", "/", "x-debug: 1"), ("GET", "/", "x-debug: "),
        ("GET", "/", "x-debug: 0" + H + "x-debug: 1"),
        ("GET", "/", "x-debug: 1" + H + "x-debug: 0"),
    ]),
    case("without-present.parity", [{"withoutHeaders": {"x-debug": {}}}], [
        ("GET", "/", ""), ("GET", "/", "x-debug: 1"), ("GET", "/", "x-debug: "),
    ]),
    case("uri-exact.parity", [{"uri": {"exact": "/exact"}}], [
        ("GET", "/exact", ""), ("GET", "/exact?x=1", ""), ("GET", "/exact/", ""), ("GET", "/Exact", ""),
        ("GET", "/exact/more", ""), ("GET", "/ex%61ct", ""),
    ]),
    case("uri-prefix.parity", [{"uri": {"prefix": "/api"}}], [
        ("GET", "/api", ""), ("GET", "/api/x", ""), ("GET", "/apix", ""), ("GET", "/API", ""), ("GET", "/", ""),
        ("GET", "/api?x=1", ""),
    ]),
    case("uri-regex.parity", [{"uri": {"regex": "/re/[0-9]+"}}], [
        ("GET", "/re/1", ""), ("GET", "/re/12?x=y", ""), ("GET", "/re/1/x", ""), ("GET", "/x/re/1", ""),
        ("GET", "/re/", ""),
    ]),
    case("uri-ignore-case.parity", [{"uri": {"prefix": "/Docs"}, "ignoreUriCase": True},
                                     {"uri": {"exact": "/About"}, "ignoreUriCase": True}], [
        ("GET", "/docs", ""), ("GET", "/DOCS/x", ""), ("GET", "/Docsx", ""), ("GET", "/about", ""),
        ("GET", "/ABOUT", ""), ("GET", "/about/", ""), ("GET", "/other", ""),
    ]),
    case("method.parity", [{"method": {"exact": "POST"}}, {"method": {"regex": "PUT|DELETE"}}], [
        ("GET", "/", ""), ("POST", "/", "content-length: 0"), ("PUT", "/", "content-length: 0"),
        ("DELETE", "/", ""), ("PATCH", "/", "content-length: 0"), ("HEAD", "/", ""), ("OPTIONS", "/", ""),
    ]),
    case("scheme.parity", [{"scheme": {"exact": "http"}}], [
        ("GET", "/", ""), ("GET", "/", "x-forwarded-proto: https"),
    ]),
    case("authority.parity", [{"authority": {"exact": "authority.parity"}}], [
        ("GET", "/", ""), ("GET", "/", "Host: authority.parity:8080"), ("GET", "/", "Host: AUTHORITY.parity"),
    ]),
    case("authority-prefix.parity", [{"authority": {"prefix": "authority-prefix.parity:"}}], [
        ("GET", "/", ""), ("GET", "/", "Host: authority-prefix.parity:8080"),
    ]),
    case("query.parity", [{"queryParams": {"env": {"exact": "canary"}}}], [
        ("GET", "/?env=canary", ""), ("GET", "/p?x=1&env=canary", ""), ("GET", "/?env=prod", ""),
        ("GET", "/?env=can%61ry", ""), ("GET", "/?env=prod&env=canary", ""), ("GET", "/?env=canary&env=prod", ""),
        ("GET", "/?env", ""), ("GET", "/?ENV=canary", ""), ("GET", "/", ""), ("GET", "/?env=canary#f", ""),
    ]),
    case("query-present.parity", [{"queryParams": {"debug": {}}}], [
        ("GET", "/?debug", ""), ("GET", "/?debug=", ""), ("GET", "/?debug=1", ""), ("GET", "/", ""),
        ("GET", "/?debugx=1", ""), ("GET", "/?x=debug", ""),
    ]),
    case("query-regex.parity", [{"queryParams": {"d": {"regex": "1|true"}}}], [
        ("GET", "/?d=1", ""), ("GET", "/?d=11", ""), ("GET", "/?d=true", ""), ("GET", "/?d=", ""),
    ]),
    case("and-or.parity", [{"uri": {"prefix": "/and"}, "headers": {"x-a": {"exact": "1"}}},
                           {"headers": {"x-b": {"exact": "1"}}}], [
        ("GET", "/and", "x-a: 1"), ("GET", "/and", ""), ("GET", "/other", "x-a: 1"), ("GET", "/other", "x-b: 1"),
    ]),
]


# Redirects: (host, Istio HTTPRedirect, Host headers to probe with). Probes send no port, port
# 8080 (the port of the listener istiod builds the route for, a sidecar's service port, which is
# what FROM_REQUEST_PORT stands for) or the scheme's default port 80. meshrules follows istiod's
# code where Istio's documentation says otherwise: FROM_PROTOCOL_DEFAULT, `port: 80` and
# `scheme: https, port: 443` set no port, so the request's 8080 survives.
NO_PORT, PORT_8080, PORT_80 = "{host}", "{host}:8080", "{host}:80"
ALL = [NO_PORT, PORT_8080, PORT_80]
REDIRECTS = [
    ("redirect-uri.parity", {"uri": "/new"}, ALL),
    ("redirect-query.parity", {"uri": "/new?a=1"}, ALL),
    ("redirect-authority.parity", {"authority": "new.example", "uri": "/landing", "redirectCode": 302}, ALL),
    ("redirect-authority-only.parity", {"authority": "new.example"}, ALL),
    ("redirect-scheme.parity", {"scheme": "https"}, ALL),
    ("redirect-port.parity", {"port": 8443}, ALL),
    ("redirect-port-80.parity", {"port": 80}, ALL),
    ("redirect-https-443.parity", {"scheme": "https", "port": 443}, ALL),
    ("redirect-default-port.parity", {"scheme": "https", "derivePort": "FROM_PROTOCOL_DEFAULT"}, ALL),
    ("redirect-request-port.parity", {"authority": "other.example", "derivePort": "FROM_REQUEST_PORT"},
     [PORT_8080]),
    ("redirect-307.parity", {"uri": "/t", "redirectCode": 307}, ALL),
    ("redirect-308.parity", {"uri": "/p", "redirectCode": 308}, ALL),
]
REQUEST_PORT = 8080
REDIRECT_PROBE_PATHS = ["/page", "/page?x=1"]

# Rewrites: (host, match blocks, Istio HTTPRewrite, probe paths).
REWRITES = [
    ("rewrite-prefix.parity", [{"uri": {"prefix": "/old"}}], {"uri": "/new"},
     ["/old", "/old/x?q=1", "/oldx"]),
    ("rewrite-root.parity", [{"uri": {"prefix": "/api/"}}], {"uri": "/"}, ["/api/users?q=a", "/api/"]),
    ("rewrite-exact.parity", [{"uri": {"exact": "/exact"}}], {"uri": "/replaced"}, ["/exact?k=v"]),
    ("rewrite-no-match.parity", [], {"uri": "/v2/"}, ["/a/b?x=1", "/"]),
    ("rewrite-ignore-case.parity", [{"uri": {"prefix": "/Docs"}, "ignoreUriCase": True}], {"uri": "/d"},
     ["/DOCS/x", "/docs"]),
    ("rewrite-regex.parity", [{"uri": {"prefix": "/"}}],
     {"uriRegexRewrite": {"match": "^/old/(.*)$", "rewrite": "/new/\\1"}}, ["/old/a/b?k=v", "/old", "/other"]),
    ("rewrite-regex-all.parity", [{"uri": {"prefix": "/"}}],
     {"uriRegexRewrite": {"match": "o", "rewrite": "0"}}, ["/foo/boo?o=o"]),
    ("rewrite-authority.parity", [{"uri": {"prefix": "/"}}], {"authority": "rewritten.example"}, ["/x"]),
]


# Answers the filter gives itself, next to the Envoy filters istiod configures for them (CORS
# filter, fault filter, direct_response): (host, Istio HTTPRoute, probes).
CORS_POLICY = {
    "allowOrigins": [{"exact": "https://good.example"}, {"regex": "https://[a-z]+\\.trusted\\.example"}],
    "allowMethods": ["GET", "POST"], "allowHeaders": ["x-custom", "content-type"],
    "exposeHeaders": ["x-exposed"], "maxAge": "24h", "allowCredentials": True,
}
PREFLIGHT = ["Access-Control-Request-Method: POST", "Access-Control-Request-Headers: x-custom"]
CORS_PROBES = [
    ("OPTIONS", "/", ["Origin: https://good.example", *PREFLIGHT]),
    ("OPTIONS", "/", ["Origin: https://app.trusted.example", *PREFLIGHT]),
    ("OPTIONS", "/", ["Origin: https://evil.example", *PREFLIGHT]),
    ("OPTIONS", "/", ["Origin: https://good.example"]),
    ("OPTIONS", "/", []),
    ("GET", "/", ["Origin: https://good.example"]),
    ("GET", "/", ["Origin: https://evil.example"]),
    ("GET", "/", []),
]
LOCAL_REPLIES = [
    ("cors.parity", {"corsPolicy": CORS_POLICY, "route": [to(subset="v1")]}, CORS_PROBES),
    ("cors-ignore.parity", {"corsPolicy": {**CORS_POLICY, "unmatchedPreflights": "IGNORE"},
                            "route": [to(subset="v1")]}, CORS_PROBES),
    ("abort.parity", {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
                      "route": [to(subset="v1")]},
     [("GET", "/", []), ("POST", "/", ["content-length: 0"])]),
    ("grpc-abort.parity", {"fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
                           "route": [to(subset="v1")]},
     [("POST", "/pkg.Svc/Call", ["content-type: application/grpc", "te: trailers", "content-length: 0"])]),
    ("direct-string.parity", {"directResponse": {"status": 418, "body": {"string": "I am a teapot"}}},
     [("GET", "/", []), ("HEAD", "/", [])]),
    ("direct-bytes.parity", {"directResponse": {"status": 200, "body": {"bytes": "AAEC/w=="}}}, [("GET", "/", [])]),
    ("direct-empty.parity", {"directResponse": {"status": 503}}, [("GET", "/", [])]),
]


# --- istiod's translation, for the reference Envoy --------------------------------------------


def string_matcher(sm):
    if "exact" in sm:
        return {"exact": sm["exact"]}
    if "prefix" in sm:
        return {"prefix": sm["prefix"]}
    return {"safe_regex": {"regex": sm["regex"]}}


def catch_all(sm):
    """istiod's ``canBeConvertedToPresentMatch``: no match type, or the regex ``*``."""
    return not sm or sm.get("regex") == "*"


def header_matcher(name, sm):
    if catch_all(sm):
        return {"name": name, "present_match": True}
    return {"name": name, "string_match": string_matcher(sm)}


def route_match(block):
    out = {"prefix": "/"}
    uri = block.get("uri")
    if uri:
        out = {"path": uri["exact"]} if "exact" in uri else (
            {"prefix": uri["prefix"]} if "prefix" in uri else {"safe_regex": {"regex": uri["regex"]}})
    out["case_sensitive"] = not block.get("ignoreUriCase", False)
    headers = []
    for field, pseudo in [("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")]:
        if field in block:
            headers.append(header_matcher(pseudo, block[field]))
    for name, sm in block.get("headers", {}).items():
        headers.append(header_matcher(name, sm))
    for name, sm in block.get("withoutHeaders", {}).items():
        m = header_matcher(name, sm)
        m["invert_match"] = True
        if not catch_all(sm):  # istiod: treat_missing_header_as_empty conflicts with present_match
            m["treat_missing_header_as_empty"] = True
        headers.append(m)
    if headers:
        out["headers"] = sorted(headers, key=lambda h: h["name"])
    params = []
    for name, sm in block.get("queryParams", {}).items():
        params.append({"name": name, "present_match": True} if catch_all(sm)
                      else {"name": name, "string_match": string_matcher(sm)})
    if params:
        out["query_parameters"] = params
    return out


def reference_virtual_host(host, blocks):
    routes = [{"match": route_match(b), "route": {"cluster": V2}} for b in blocks]
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": V1}})
    return {"name": host, "domains": domains(host), "routes": routes}


REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT",
                  308: "PERMANENT_REDIRECT"}


def redirect_action(r):
    """istiod's ``ApplyRedirect`` for a sidecar listener on REQUEST_PORT (plaintext)."""
    out = {"response_code": REDIRECT_CODES[r.get("redirectCode", 301)]}
    if r.get("authority"):
        out["host_redirect"] = r["authority"]
    if r.get("uri"):
        out["path_redirect"] = r["uri"]
    if r.get("scheme"):
        out["scheme_redirect"] = r["scheme"]
    port = 0
    if r.get("derivePort") == "FROM_REQUEST_PORT":
        port = REQUEST_PORT
    elif "port" in r:
        port = r["port"]
    scheme = r.get("scheme") or "http"
    if (port == 80 and scheme == "http") or (port == 443 and scheme == "https"):
        port = 0
    if port:
        out["port_redirect"] = port
    return out


def rewrite_action(rw):
    """istiod's ``applyHTTPRouteDestination`` rewrite part (sidecar semantics)."""
    out = {"cluster": V1}
    if "uriRegexRewrite" in rw:
        rr = rw["uriRegexRewrite"]
        out["regex_rewrite"] = {"pattern": {"regex": rr["match"]}, "substitution": rr["rewrite"]}
    elif rw.get("uri"):
        out["prefix_rewrite"] = rw["uri"]
    if rw.get("authority"):
        out["host_rewrite_literal"] = rw["authority"]
    return out


def string_matchers(sms):
    return [string_matcher(sm) for sm in sms]


def local_reply_route(http):
    """The Envoy route istiod builds for an HTTPRoute that the filter answers itself."""
    route = {"match": {"prefix": "/"}}
    if "directResponse" in http:
        d = http["directResponse"]
        route["direct_response"] = {"status": d["status"]}
        body = d.get("body", {})
        if "string" in body:
            route["direct_response"]["body"] = {"inline_string": body["string"]}
        elif "bytes" in body:
            route["direct_response"]["body"] = {"inline_bytes": body["bytes"]}
        return route
    route["route"] = {"cluster": V1}
    per_filter = {}
    if "fault" in http:
        abort = http["fault"]["abort"]
        fault = {"percentage": {"numerator": int(abort["percentage"]["value"] * 10000), "denominator": "MILLION"}}
        if "httpStatus" in abort:
            fault["http_status"] = abort["httpStatus"]
        else:
            fault["grpc_status"] = {"UNAVAILABLE": 14}[abort["grpcStatus"]]
        per_filter["envoy.filters.http.fault"] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", "abort": fault}
    if "corsPolicy" in http:
        c = http["corsPolicy"]
        per_filter["envoy.filters.http.cors"] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": string_matchers(c["allowOrigins"]),
            "allow_methods": ",".join(c["allowMethods"]), "allow_headers": ",".join(c["allowHeaders"]),
            "expose_headers": ",".join(c["exposeHeaders"]), "max_age": "86400",
            "allow_credentials": c["allowCredentials"],
            "forward_not_matching_preflights": c.get("unmatchedPreflights") != "IGNORE",
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        }
    route["typed_per_filter_config"] = per_filter
    return route


def domains(host):
    return [host] + [f"{host}:{p}" for p in PORTS_IN_PROBES]


def reference_virtual_hosts():
    vhosts = [reference_virtual_host(host, blocks) for host, blocks, _ in CASES]
    for host, r, _ in REDIRECTS:
        vhosts.append({"name": host, "domains": domains(host),
                       "routes": [{"match": {"prefix": "/"}, "redirect": redirect_action(r)}]})
    for host, blocks, rw, _ in REWRITES:
        vhosts.append({"name": host, "domains": domains(host), "routes": [
            {"match": route_match(b), "route": rewrite_action(rw)} for b in (blocks or [{}])]})
    for host, http, _ in LOCAL_REPLIES:
        vhosts.append({"name": host, "domains": domains(host), "routes": [local_reply_route(http)]})
    vhosts.append({"name": "rest", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH}}]})
    return vhosts


# --- fixtures ---------------------------------------------------------------------------------

CONFIG = plugin_config(
    *[virtual_service(host.split(".")[0], [host], [
        {"match": blocks, "route": [to(subset="v2")]},
        {"route": [to(subset="v1")]},
    ]) for host, blocks, _ in CASES],
    *[virtual_service(host.split(".")[0], [host], [{"redirect": r}]) for host, r, _ in REDIRECTS],
    *[virtual_service(host.split(".")[0], [host], [
        {**({"match": blocks} if blocks else {}), "rewrite": rw, "route": [to(subset="v1")]}])
      for host, blocks, rw, _ in REWRITES],
    *[virtual_service(host.split(".")[0], [host], [http]) for host, http, _ in LOCAL_REPLIES],
)


@pytest.fixture(scope="module")
def filter_envoy(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


@pytest.fixture(scope="module")
def reference_envoy(module_envoy_launcher):
    vhosts = reference_virtual_hosts()

    def without_filter(cfg):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        # Istio's order: CORS, then fault injection, then the router.
        hcm["http_filters"] = [
            {"name": "envoy.filters.http.cors", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
            {"name": "envoy.filters.http.fault", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
            *[f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"],
        ]
        hcm["route_config"]["virtual_hosts"] = vhosts
        return cfg

    return module_envoy_launcher.start(plugin_config(), transform=without_filter)


@pytest.mark.parametrize("host,blocks,probes", CASES, ids=[c[0].split(".")[0] for c in CASES])
def test_filter_picks_the_route_envoy_would_pick(filter_envoy, reference_envoy, host, blocks, probes):
    differences = []
    for method, path, header_lines in probes:
        want = raw_served_by(reference_envoy, method, path, host, header_lines.split(H))
        got = raw_served_by(filter_envoy, method, path, host, header_lines.split(H))
        if want != got:
            differences.append(f"{method} {path} [{header_lines.replace(H, ' | ')}]: "
                               f"Envoy routes -> {want}, meshrules -> {got}")
    assert not differences, f"match {blocks}:\n" + "\n".join(differences)


def test_regex_star_means_present_as_istiod_translates_it(envoy):
    """istiod turns the StringMatch ``regex: "*"`` (not valid RE2) into ``present_match``
    (istio/istio#20629), so Istio users have configs that say it; it must load and mean
    "header present"."""
    env = envoy(plugin_config(virtual_service("star", ["star.parity"], [
        {"match": [{"headers": {"x-debug": {"regex": "*"}}}], "route": [to(subset="v2")]},
        {"route": [to(subset="v1")]},
    ])))
    assert raw_served_by(env, "GET", "/", "star.parity", ["x-debug: anything"]) == V2
    assert raw_served_by(env, "GET", "/", "star.parity", []) == V1


@pytest.mark.parametrize("host,redirect,probe_hosts", REDIRECTS, ids=[r[0].split(".")[0] for r in REDIRECTS])
def test_redirect_is_the_one_envoy_would_send(filter_envoy, reference_envoy, host, redirect, probe_hosts):
    differences = []
    for host_header in probe_hosts:
        for path in REDIRECT_PROBE_PATHS:
            h = host_header.format(host=host)
            want = request(reference_envoy, "GET", path, host=h)
            got = request(filter_envoy, "GET", path, host=h)
            w = (want.status, want.headers.get("location"))
            g = (got.status, got.headers.get("location"))
            if w != g:
                differences.append(f"GET {path} Host: {h}: Envoy -> {w}, meshrules -> {g}")
    assert not differences, f"redirect {redirect}:\n" + "\n".join(differences)


@pytest.mark.parametrize("host,blocks,rewrite,paths", REWRITES, ids=[r[0].split(".")[0] for r in REWRITES])
def test_rewrite_is_the_one_envoy_would_make(filter_envoy, reference_envoy, host, blocks, rewrite, paths):
    differences = []
    for path in paths:
        want = request(reference_envoy, "GET", path, host=host)
        got = request(filter_envoy, "GET", path, host=host)
        assert want.served_by == V1 and got.served_by == V1, (want, got)
        w = (want.json()["path"], want.upstream_headers()["host"])
        g = (got.json()["path"], got.upstream_headers()["host"])
        if w != g:
            differences.append(f"GET {path}: Envoy sends upstream {w}, meshrules sends {g}")
    assert not differences, f"rewrite {rewrite} on match {blocks}:\n" + "\n".join(differences)


def answer(env, method, path, host, header_lines):
    """What a client sees, reduced to what must agree: status, who answered, body when Envoy
    answered itself, and the headers that carry meaning."""
    r = request(env, method, path, host=host,
                headers=dict(line.split(": ", 1) for line in header_lines))
    keep = {k: v for k, v in r.headers.items()
            if k.startswith("access-control-") or k in ("content-type", "grpc-status", "grpc-message", "location")}
    if r.served_by:
        keep.pop("content-type", None)
    elif method == "OPTIONS":
        # A preflight answer is read by browsers only for these: Envoy 1.40 also sends
        # expose-headers (meaningless on a preflight), and without allow-origin the rest of a
        # preflight answer is ignored (Envoy's IGNORE answer carries methods and max-age).
        keep.pop("access-control-expose-headers", None)
        if "access-control-allow-origin" not in keep:
            keep = {k: v for k, v in keep.items() if not k.startswith("access-control-")}
    return r.status, r.served_by, None if r.served_by else r.body, keep


@pytest.mark.parametrize("host,http,probes", LOCAL_REPLIES, ids=[r[0].split(".")[0] for r in LOCAL_REPLIES])
def test_local_reply_is_the_one_envoy_filters_would_give(filter_envoy, reference_envoy, host, http, probes):
    differences = []
    for method, path, header_lines in probes:
        want = answer(reference_envoy, method, path, host, header_lines)
        got = answer(filter_envoy, method, path, host, header_lines)
        if want != got:
            differences.append(f"{method} {path} {header_lines}:\n  Envoy     {want}\n  meshrules {got}")
    assert not differences, f"route {http}:\n" + "\n".join(differences)
