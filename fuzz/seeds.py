#!/usr/bin/env python3
"""Writes seed candidates for every fuzz target into DIR/<target>/ (one file per input,
named by content hash). `make fuzz-seeds` then keeps, per target, the candidates that add
coverage (libFuzzer -merge) in fuzz/corpus/<target>/, which is committed.

Sources: the project's Istio YAML and test data, the request_pipeline fixture, the path rows of
src/authz/path.rs's tests, and ../shared/peer (jwt-vectors.json, path-normalization.json,
istio-authz-golden; see its README) when it is there. Needs PyYAML.
"""
import glob
import hashlib
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(os.path.dirname(ROOT), "shared", "peer")
OUT = sys.argv[1]


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def peer(name):
    path = os.path.join(PEER, name)
    return json.load(open(path)) if os.path.exists(path) else None


# ---- Istio YAML (istio_yaml_check) and pluginConfig JSON (config_compile) ----
yaml_files = [
    "examples/demoapp.yaml",
    "istio/wasmplugin.yaml",
    "istio/envoyfilter.yaml",
    "istio/example/wasmplugin.yaml",
    "istio/example/reviews.yaml",
] + sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/istio/testdata/*.yaml")))
yaml_files += sorted(glob.glob(os.path.join(PEER, "istio-authz-golden/http/*-in.yaml")))
fixture = read("fuzz/fixtures/request_pipeline.json")
put("config_compile", fixture)
put("istio_yaml_check", fixture)
put("istio_yaml_check", yaml.safe_dump_all(json.loads(fixture)["resources"]))
for path in yaml_files:
    text = open(os.path.join(ROOT, path)).read()
    put("istio_yaml_check", text)
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError:
        continue
    resources = [d for d in docs if d.get("kind") not in (None, "WasmPlugin", "EnvoyFilter")]
    for d in docs:
        if d.get("kind") == "WasmPlugin" and isinstance((d.get("spec") or {}).get("pluginConfig"), dict):
            put("config_compile", json.dumps(d["spec"]["pluginConfig"]))
    if resources:
        put("config_compile", json.dumps({"resources": resources}, default=str))
envoy = yaml.safe_load(read("envoy/envoy.yaml"))


def strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


for s in strings(envoy):
    if s.lstrip().startswith("{") and "resources" in s:
        put("config_compile", s)

# ---- paths (path_normalize) ----
paths = set(re.findall(r'\(\s*"((?:[^"\\]|\\.)*)",\s*(?:Reject|Keep|Unescape)', read("src/authz/path.rs")))


def rust_unescape(s):
    def one(m):
        e = m.group(1)
        if e.startswith("u{"):
            return chr(int(e[2:-1], 16))
        if e.startswith("x"):
            return chr(int(e[1:], 16))
        return {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(e, e)

    return re.sub(r"\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)", one, s)


paths = {rust_unescape(p) for p in paths}
norm = peer("path-normalization.json")
if norm:
    for mode in norm["istio"].values():
        paths.update(c[0] for c in mode["cases"])
    for group in norm["envoy"]:
        paths.update(group["paths"])
for p in sorted(paths):
    put("path_normalize", p)

# ---- JWKS + tokens (jwt_verify): flags, clock, jwks, 0xff, token ----
vectors = peer("jwt-vectors.json")
test_jwks = read("src/jwt/testdata/jwks.json")
if vectors:
    for v in vectors["vectors"]:
        token = v.get("token")
        group = vectors["groups"].get(v.get("group"), {})
        jwks = vectors["jwks"].get(group.get("jwks"), {}).get("text")
        if not isinstance(token, str) or not jwks or len(token) > 8192:
            continue
        for flags, clock in ((3, 0), (2, 2)):
            put("jwt_verify", bytes([flags, clock]) + jwks.encode() + b"\xff" + token.encode())
    for j in vectors["jwks"].values():
        put("jwt_verify", b"\x01\x01" + j["text"].encode() + b"\xff")
put("jwt_verify", b"\x01\x01" + test_jwks.encode() + b"\xff")

# ---- requests (request_pipeline): mode, clock, then NUL-separated name/value pairs ----
def request(mode, clock, pairs):
    return bytes([mode, clock]) + b"\0".join(k.encode() + b"\0" + v.encode() for k, v in pairs)


def base(method, authority, path, *extra):
    return [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)] + list(extra)


good = []
if vectors:
    good = [v["token"] for v in vectors["vectors"] if v["group"] == "g117" and v["expected_peer"] == "Ok" and len(v.get("token") or "x" * 5000) < 4096]
reqs = [
    base("GET", "demoapp", "/"),
    base("GET", "demoapp:8080", "/", ("x-canary", "true")),
    base("GET", "demoapp", "/", ("cookie", "a=1; canary=1")),
    base("GET", "demoapp", "/api/v2/items?debug=1"),
    base("GET", "demoapp", "/api/x?page=3", ("x-user", "alice")),
    base("GET", "demoapp", "/rx/a/b/c?q"),
    base("GET", "demoapp", "/fault"),
    base("POST", "demoapp", "/grpc.Service/Method", ("content-type", "application/grpc")),
    base("GET", "demoapp", "/old?x=1"),
    base("GET", "demoapp", "/STATIC/x"),
    base("OPTIONS", "demoapp", "/cors", ("origin", "https://a.example"), ("access-control-request-method", "POST")),
    base("GET", "demoapp", "/cors", ("origin", "https://x.b.example")),
    base("GET", "demoapp", "/tenant", ("x-tenant", "other")),
    base("GET", "a.example.com:8080", "/a/../admin"),
    base("GET", "demoapp", "//admin"),
    base("GET", "demoapp", "/%61dmin"),
    base("GET", "demoapp", "/admin%2Fusers"),
    base("GET", "demoapp", "/a\\b;c"),
    base("GET", "demoapp", "/private/x"),
    base("DELETE", "demoapp", "/x", ("x-evil", "1")),
    base("GET", "demoapp", "/", ("x-forwarded-for", "203.0.113.7, 10.0.0.1"), ("@source", "10.1.2.3:5555")),
    base("GET", "demoapp", "/secret", ("@source", "10.1.2.3"), ("@peer", "spiffe://cluster.local/ns/app/sa/web")),
    base("GET", "demoapp", "/", ("x-meshrules-cluster", "evil"), ("x-user", "bob")),
    base("GET", "demoapp", "/", ("authorization", "Bearer not.a.token")),
    base("GET", "demoapp", "/?access_token=x.y.z"),
]
for t in good:
    reqs.append(base("GET", "demoapp", "/private/x?access_token=" + t + "&a=1"))
    reqs.append(base("GET", "demoapp", "/", ("x-token", t)))
    reqs.append(base("GET", "demoapp", "/", ("cookie", "session=" + t)))
for i, pairs in enumerate(reqs):
    put("request_pipeline", request(i % 3, 2 if good else 1, pairs))
