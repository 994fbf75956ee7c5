"""AuthorizationPolicy end to end: ALLOW / DENY / AUDIT / dry-run decisions made by the filter in
a real Envoy, and the request path as authorization sees it.

The Envoys here have no Istio node metadata, so every policy applies, whatever its namespace.
Requests without a VirtualService go to the ``passthrough`` echo upstream: 200 with the echo
JSON means allowed; a denial is 403 with body ``RBAC: access denied`` (Envoy's RBAC filter).

What plain Envoy 1.40 does with this bootstrap before any filter runs (found by running it
without the filter; HCM defaults: no ``normalize_path``, no ``merge_slashes``, escaped slashes
kept unchanged):

- a ``#`` in the request target is answered 400 by Envoy itself
  (``envoy.reloadable_features.http_reject_path_with_fragment``), and so are raw non-ASCII bytes
  and control characters, and a request target that is not a path (``*`` on GET);
- every other spelling in ``PATH_ATTACKS`` reaches the upstream byte for byte (``/a/../admin``,
  ``/%61dmin``, ``/admin;x=1``, ``/admin\\x``, ``/admin%2Fx``, ``%00``, ``%zz``, ...), so
  without the filter's normalization each would side-step a DENY on ``/admin``;
- the peer is loopback, so Envoy (``use_remote_address: true``) appends its *own* address to
  ``X-Forwarded-For`` (``ConnectionManagerUtility::mutateRequestHeaders``): the filter sees the
  client's XFF plus one entry. ``remote.ip`` is the address Envoy with ``xff_num_trusted_hops:
  N`` computes from the XFF the client sent (its N-th address from the right), read from
  Envoy's ``source.address``; the listener of ``deny_envoy`` sets N = 1, as istiod does for a
  gateway's ``numTrustedProxies``, and the filter's ``xffNumTrustedHops`` says the same.

The echo upstream is Python's ``http.server``, which collapses leading ``//`` of a request path
itself; the checks of the path the upstream receives therefore use inner slashes.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable

import pytest

from conftest import NAMESPACE, PASSTHROUGH

DENY_BODY = b"RBAC: access denied"
STAT_PREFIX = "wasmcustom."
STAT_ALLOWED = "meshrules_authz_allowed"
STAT_DENIED = "meshrules_authz_denied"
STAT_AUDIT = "meshrules_authz_audit"
STAT_DRY_RUN_WOULD_DENY = "meshrules_authz_dry_run_would_deny"

DRY_RUN = "istio.io/dry-run"
SECURITY_V1 = "security.istio.io/v1"
SECURITY_V1BETA1 = "security.istio.io/v1beta1"


# --------------------------------------------------------------------------------------------
# Configuration builders
# --------------------------------------------------------------------------------------------


def policy(name: str, *rules: dict, action: str | None = None, namespace: str = NAMESPACE,
           annotations: dict[str, str] | None = None, api_version: str = SECURITY_V1) -> dict:
    """An AuthorizationPolicy as users write it. No ``rules`` given: the field is left out."""
    spec: dict[str, Any] = {}
    if action is not None:
        spec["action"] = action
    if rules:
        spec["rules"] = list(rules)
    return {
        "apiVersion": api_version,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
    }


def rule(op: dict | None = None, src: dict | None = None, when: list[dict] | None = None,
         ops: list[dict] | None = None, srcs: list[dict] | None = None) -> dict:
    """One rule: ``op``/``ops`` become ``to``, ``src``/``srcs`` become ``from``."""
    r: dict[str, Any] = {}
    sources = ([src] if src else []) + (srcs or [])
    operations = ([op] if op else []) + (ops or [])
    if sources:
        r["from"] = [{"source": s} for s in sources]
    if operations:
        r["to"] = [{"operation": o} for o in operations]
    if when:
        r["when"] = when
    return r


def on_host(host: str, **operation: Any) -> dict:
    """An operation limited to one Host, so many policies can share one Envoy."""
    return {"hosts": [host], **operation}


def deny_on(name: str, host: str, *, op: dict | None = None, src: dict | None = None,
            when: list[dict] | None = None, **meta: Any) -> dict:
    """A DENY policy that only ever matches requests to ``host``."""
    return policy(name, rule(op=on_host(host, **(op or {})), src=src, when=when), action="DENY", **meta)


def cond(key: str, values: Iterable[str] = (), not_values: Iterable[str] = ()) -> dict:
    c: dict[str, Any] = {"key": key}
    if values:
        c["values"] = list(values)
    if not_values:
        c["notValues"] = list(not_values)
    return c


def authz_config(*resources: dict, **security: Any) -> dict:
    config: dict[str, Any] = {"resources": list(resources)}
    if security:
        config["security"] = security
    return config


DENY_ADMIN = policy("deny-admin", rule(op={"paths": ["/admin", "/admin/*"]}), action="DENY")


# --------------------------------------------------------------------------------------------
# Requests: hand-written, so the request target is sent byte for byte and headers can repeat
# --------------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def served_by(self) -> str | None:
        return self.headers.get("x-served-by")

    def upstream(self) -> dict:
        """What the echo upstream received."""
        assert self.served_by, f"not an upstream answer: {self}"
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status} headers={self.headers} body={self.body[:300]!r}"


def send(env, path: str, host: str = "demoapp", method: str = "GET",
         header_lines: Iterable[str] = ()) -> RawResponse:
    """One HTTP/1.1 request on its own connection (the ``raw_served_by`` way). The answer is
    read as far as its framing says: Envoy holds a connection open for a second
    (``delayed_close_timeout``) after some local replies, so waiting for EOF would be slow."""
    lines = [f"Host: {host}", *header_lines, "Connection: close"]
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
    data = b""
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(head.encode("latin-1"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _complete(data, method):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_block = head_block.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    assert len(parts) >= 2 and parts[1].isdigit(), f"no HTTP answer: {data[:300]!r}"
    headers = _headers(header_block)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawResponse(int(parts[1]), headers, body)


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _complete(data: bytes, method: str) -> bool:
    """Whether ``data`` holds a whole response (Content-Length or chunked framing)."""
    head_block, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    headers = _headers(head_block.decode("latin-1").split("\r\n")[1:])
    if method == "HEAD":
        return True
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return body.endswith(b"0\r\n\r\n")
    length = headers.get("content-length")
    return length is not None and len(body) >= int(length)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


DENIED, REJECTED, SERVED = "denied (403)", "rejected (400)", "served"


def assert_outcome(r: RawResponse, outcome: str, upstream_path: str | None = None) -> None:
    if outcome == DENIED:
        assert r.status == 403 and not r.served_by, r
        assert r.body == DENY_BODY, r
    elif outcome == REJECTED:
        assert r.status == 400 and not r.served_by, r
    else:
        assert r.status == 200 and r.served_by == PASSTHROUGH, r
        if upstream_path is not None:
            assert r.upstream()["path"] == upstream_path, r


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


def counter(env, name: str) -> int:
    """A filter counter, summed over any tags the name carries (``name`` or ``name.<tags>``)."""
    stats = env.stats(f"^{re.escape(STAT_PREFIX + name)}($|\\.)")
    return sum(stats.values())


def wait_counter(env, name: str, value: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    seen = counter(env, name)
    while seen != value and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = counter(env, name)
    return seen


# --------------------------------------------------------------------------------------------
# Envoys
# --------------------------------------------------------------------------------------------


# Envoy's xff_num_trusted_hops on deny_envoy's listener, and the filter's xffNumTrustedHops.
XFF_TRUSTED_HOPS = 1


def trusted_hops(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["xff_num_trusted_hops"] = XFF_TRUSTED_HOPS
    return cfg


def deny_config(port: int) -> dict:
    """Default settings but one trusted XFF hop; only DENY (and AUDIT, dry-run) policies, each
    limited to one test Host, so everything a policy does not deny is served."""
    p = str(port)
    return authz_config(
        DENY_ADMIN,
        # v1beta1 is accepted as well as v1.
        policy("deny-secret-host", rule(op={"hosts": ["Secret.Example.com"]}), action="DENY",
               api_version=SECURITY_V1BETA1),
        # --- operation fields
        policy("deny-host-forms", rule(op={"hosts": ["*.suffix.test", "prefix.*"]}), action="DENY"),
        policy("deny-not-hosts", rule(op={"hosts": ["*.nothosts.test"], "notHosts": ["ok.nothosts.test"]}),
               action="DENY"),
        deny_on("deny-methods", "methods.test", op={"methods": ["DELETE", "PATCH"]}),
        deny_on("deny-paths", "paths.test", op={"paths": [
            "/exact", "/api/*", "*.php", "/files/{*}/meta", "/static/{**}"]}),
        deny_on("deny-not-paths", "notpaths.test", op={"paths": ["/api/*"], "notPaths": ["/api/public"]}),
        deny_on("deny-any-path", "anypath.test", op={"paths": ["*"]}),
        deny_on("deny-this-port", "port.test", op={"ports": [p]}),
        deny_on("deny-other-port", "otherport.test", op={"ports": ["1"]}),
        deny_on("deny-not-this-port", "notport.test", op={"notPorts": [p]}),
        # --- source fields
        deny_on("deny-peer-ip", "ip.test", src={"ipBlocks": ["127.0.0.1"]}),
        deny_on("deny-peer-cidr", "cidr.test", src={"ipBlocks": ["127.0.0.0/8"]}),
        deny_on("deny-other-cidr", "othercidr.test", src={"ipBlocks": ["10.0.0.0/8"]}),
        deny_on("deny-not-other-cidr", "notothercidr.test", src={"notIpBlocks": ["10.0.0.0/8"]}),
        deny_on("deny-not-peer", "notpeer.test", src={"notIpBlocks": ["127.0.0.1"]}),
        deny_on("deny-remote-ip", "remoteip.test", src={"remoteIpBlocks": ["10.1.2.3"]}),
        deny_on("deny-remote-peer", "remotepeer.test", src={"remoteIpBlocks": ["127.0.0.1/32"]}),
        deny_on("deny-not-remote", "notremote.test", src={"notRemoteIpBlocks": ["10.0.0.0/8"]}),
        deny_on("deny-any-jwt", "jwt.test", src={"requestPrincipals": ["*"]}),
        deny_on("deny-no-jwt", "nojwt.test", src={"notRequestPrincipals": ["*"]}),
        # --- when conditions
        deny_on("deny-header", "header.test", when=[cond("request.headers[x-role]", ["admin"])]),
        deny_on("deny-joined-header", "joined.test", when=[cond("request.headers[x-role]", ["user,admin"])]),
        deny_on("deny-header-present", "present.test", when=[cond("request.headers[x-debug]", ["*"])]),
        deny_on("deny-header-not", "notheader.test", when=[cond("request.headers[x-role]", not_values=["admin"])]),
        deny_on("deny-when-source-ip", "w-source.test", when=[cond("source.ip", ["127.0.0.1"])]),
        deny_on("deny-when-remote-ip", "w-remote.test", when=[cond("remote.ip", ["10.1.2.0/24"])]),
        deny_on("deny-when-dest-ip", "w-destip.test", when=[cond("destination.ip", ["127.0.0.1"])]),
        deny_on("deny-when-other-dest-ip", "w-otherdestip.test", when=[cond("destination.ip", ["10.0.0.1"])]),
        deny_on("deny-when-dest-port", "w-destport.test", when=[cond("destination.port", [p])]),
        deny_on("deny-when-other-dest-port", "w-otherdestport.test", when=[cond("destination.port", ["1"])]),
        deny_on("deny-when-ns", "w-ns.test", when=[cond("source.namespace", ["app"])]),
        deny_on("deny-when-not-ns", "w-notns.test", when=[cond("source.namespace", not_values=["app"])]),
        deny_on("deny-when-principal", "w-principal.test", when=[cond("source.principal", ["*"])]),
        deny_on("deny-when-not-principal", "w-notprincipal.test",
                when=[cond("source.principal", not_values=["cluster.local/ns/app/sa/client"])]),
        # --- how a rule's parts combine: any `to`, any `from`, every `when`
        policy("deny-combined", rule(
            ops=[on_host("combine.test", methods=["DELETE"]), on_host("combine.test", paths=["/gone"])],
            srcs=[{"ipBlocks": ["10.0.0.0/8"]}, {"ipBlocks": ["127.0.0.1"]}],
            when=[cond("request.headers[x-a]", ["1"]), cond("request.headers[x-b]", ["1"])],
        ), action="DENY"),
        # --- scope, AUDIT, dry run
        deny_on("deny-from-root", "rootns.test", namespace="istio-system"),
        deny_on("deny-from-other-ns", "otherns.test", namespace="other"),
        policy("audit-it", rule(op=on_host("audit.test")), action="AUDIT"),
        deny_on("deny-dry-run", "dryrun.test", annotations={DRY_RUN: "true"}),
        xffNumTrustedHops=XFF_TRUSTED_HOPS,
        useRemoteAddress=True,
    )


@pytest.fixture(scope="module")
def deny_envoy(module_envoy_launcher):
    # The policies name the destination port: the listener's port is chosen first.
    return module_envoy_launcher.start_on_port(
        lambda port: {"plugin": deny_config(port), "transform": trusted_hops})


@pytest.fixture(scope="module")
def keep_envoy(module_envoy_launcher):
    """``escapedSlashes: KEEP``, an ALLOW-everything policy (``rules: [{}]``) and the admin
    DENY; X-Forwarded-For is not trusted (``xffNumTrustedHops`` 0, the default)."""
    return module_envoy_launcher.start(authz_config(
        policy("allow-all", {}),
        DENY_ADMIN,
        deny_on("deny-remote-ip", "remoteip.test", src={"remoteIpBlocks": ["10.1.2.3"]}),
        deny_on("deny-remote-peer", "remotepeer.test", src={"remoteIpBlocks": ["127.0.0.1"]}),
        escapedSlashes="KEEP",
    ))


@pytest.fixture(scope="module")
def unescape_envoy(module_envoy_launcher):
    return module_envoy_launcher.start(authz_config(DENY_ADMIN, escapedSlashes="UNESCAPE"))


@pytest.fixture(scope="module")
def allow_envoy(module_envoy_launcher):
    """ALLOW policies, each for one Host: a request no ALLOW policy matches is denied."""
    return module_envoy_launcher.start(authz_config(
        policy("allow-public-get", rule(op=on_host("allow.test", methods=["GET"], paths=["/public/*"]))),
        policy("deny-secret", rule(op=on_host("allow.test", paths=["/public/secret"])), action="DENY"),
        policy("allow-local", rule(op=on_host("local.test"), src={"ipBlocks": ["127.0.0.1"]}),
               action="ALLOW"),
        policy("allow-blocked", rule(op=on_host("blocked.test"), src={"ipBlocks": ["10.0.0.0/8"]})),
        policy("audit-only", rule(op=on_host("audit.test")), action="AUDIT"),
        policy("allow-dry-run", rule(op=on_host("dryrun.test")), annotations={DRY_RUN: "true"}),
    ))


@pytest.fixture(scope="module")
def allow_nothing_envoy(module_envoy_launcher):
    """One ALLOW policy without rules (``spec: {}``: the action defaults to ALLOW)."""
    return module_envoy_launcher.start(authz_config(policy("allow-nothing")))


ENVOYS = {"REJECT": "deny_envoy", "KEEP": "keep_envoy", "UNESCAPE": "unescape_envoy"}


# --------------------------------------------------------------------------------------------
# The path attack table
# --------------------------------------------------------------------------------------------

# A DENY on `/admin` and `/admin/*` (Istio: exact `/admin`, prefix `/admin/`) against every
# spelling of it. (escapedSlashes mode, Host, request target, outcome, path the upstream gets).
PATH_ATTACKS = [
    ("REJECT", "demoapp", "/admin", DENIED, None),
    ("REJECT", "demoapp", "/admin/", DENIED, None),
    ("REJECT", "demoapp", "/admin/x", DENIED, None),
    ("REJECT", "demoapp", "/a/../admin", DENIED, None),
    ("REJECT", "demoapp", "/./admin", DENIED, None),
    ("REJECT", "demoapp", "//admin", DENIED, None),
    ("REJECT", "demoapp", "/%61dmin", DENIED, None),
    ("REJECT", "demoapp", "/%2e%2e/admin", DENIED, None),
    ("REJECT", "demoapp", "/x/%2E%2E/admin", DENIED, None),
    ("REJECT", "demoapp", "/x/.%2e/admin", DENIED, None),
    ("REJECT", "demoapp", "/public/../admin/x", DENIED, None),
    # Escaped slashes: one segment to some servers, two to others; REJECT is the default.
    ("REJECT", "demoapp", "/admin%2Fx", REJECTED, None),
    ("REJECT", "demoapp", "/admin%2fx", REJECTED, None),
    ("REJECT", "demoapp", "/admin%5Cx", REJECTED, None),
    ("REJECT", "demoapp", "/public/..%2Fadmin", REJECTED, None),
    # A raw backslash is a separator, as Envoy's canonicalPath (Chromium's URL code) reads it.
    ("REJECT", "demoapp", "/admin\\x", DENIED, None),
    # Tomcat/Spring strip `;...` from a segment: `/admin;x=1` is `/admin` to them.
    ("REJECT", "demoapp", "/admin;x=1", REJECTED, None),
    ("REJECT", "demoapp", "/admin/..;/x", REJECTED, None),
    ("REJECT", "demoapp", "/admin%00", REJECTED, None),
    ("REJECT", "demoapp", "/%zz/admin", REJECTED, None),
    # Refused by Envoy's codec before the filter runs.
    ("REJECT", "demoapp", "/admin#x", REJECTED, None),
    # The query is not part of the path.
    ("REJECT", "demoapp", "/admin?x=1", DENIED, None),
    ("REJECT", "demoapp", "/public?next=/admin", SERVED, "/public?next=/admin"),
    ("REJECT", "demoapp", "/public?next=%2Fadmin", SERVED, "/public?next=%2Fadmin"),
    # Paths are case-sensitive (Istio's paths are exact string matches).
    ("REJECT", "demoapp", "/ADMIN", SERVED, "/ADMIN"),
    ("REJECT", "demoapp", "/public", SERVED, "/public"),
    # Hosts are not: a DENY on `Secret.Example.com` catches every case spelling of it.
    ("REJECT", "secret.example.COM", "/", DENIED, None),
    # KEEP: `%2F` stays inside the segment, so `/admin%2Fx` is not under `/admin/`.
    ("KEEP", "demoapp", "/admin%2Fx", SERVED, "/admin%2Fx"),
    ("KEEP", "demoapp", "/admin/x", DENIED, None),
    # UNESCAPE: `%2F` and `%5C` are decoded to `/` before matching, and forwarded decoded.
    ("UNESCAPE", "demoapp", "/admin%2Fx", DENIED, None),
    ("UNESCAPE", "demoapp", "/admin%5cx", DENIED, None),
    ("UNESCAPE", "demoapp", "/public%2Fx", SERVED, "/public/x"),
]


@pytest.mark.parametrize(
    "mode,host,target,outcome,upstream_path", PATH_ATTACKS,
    ids=[f"{m}-{h}-{t}" if h != "demoapp" else f"{m}-{t}" for m, h, t, _, _ in PATH_ATTACKS],
)
def test_deny_on_admin_catches_every_spelling_of_the_path(request, mode, host, target, outcome,
                                                          upstream_path):
    env = request.getfixturevalue(ENVOYS[mode])
    assert_outcome(send(env, target, host=host), outcome, upstream_path)


# (request target, path the upstream receives)
NORMALIZED_FORWARDING = [
    ("/x/../public?q=/../a", "/public?q=/../a"),
    ("/x//y/./%70ublic", "/x/y/public"),
    ("/x/%7Ey/%41", "/x/~y/A"),
    ("/x\\y", "/x/y"),
    ("/x/%c3%a9", "/x/%C3%A9"),
    ("/untouched/%C3%A9?a=%2F&b=//", "/untouched/%C3%A9?a=%2F&b=//"),
]


@pytest.mark.parametrize("target,upstream_path", NORMALIZED_FORWARDING, ids=[t for t, _ in NORMALIZED_FORWARDING])
def test_upstream_receives_the_path_that_was_authorized(deny_envoy, target, upstream_path):
    assert_outcome(send(deny_envoy, target), SERVED, upstream_path)


# --------------------------------------------------------------------------------------------
# Operation, source and condition matching (DENY policies in `deny_envoy`: matched = 403)
# --------------------------------------------------------------------------------------------

# (id, Host, method, request target, extra header lines, matched)
OPERATION_CASES = [
    ("host-exact-case-insensitive", "SECRET.example.com", "GET", "/", (), True),
    ("host-port-not-stripped", "secret.example.com:8080", "GET", "/", (), False),
    ("host-other", "public.example.com", "GET", "/", (), False),
    ("host-suffix", "a.b.suffix.test", "GET", "/", (), True),
    ("host-suffix-not-bare", "suffix.test", "GET", "/", (), False),
    ("host-prefix", "prefix.anything", "GET", "/", (), True),
    ("host-prefix-case", "PREFIX.anything", "GET", "/", (), True),
    ("not-hosts-vetoes", "ok.nothosts.test", "GET", "/", (), False),
    ("not-hosts-others-match", "a.nothosts.test", "GET", "/", (), True),
    ("method-listed", "methods.test", "DELETE", "/", (), True),
    ("method-any-of-values", "methods.test", "PATCH", "/", (), True),
    ("method-unlisted", "methods.test", "GET", "/", (), False),
    ("path-exact", "paths.test", "GET", "/exact", (), True),
    ("path-exact-ignores-query", "paths.test", "GET", "/exact?q=1", (), True),
    ("path-exact-not-longer", "paths.test", "GET", "/exact/", (), False),
    ("path-exact-case-sensitive", "paths.test", "GET", "/EXACT", (), False),
    ("path-prefix", "paths.test", "GET", "/api/v1/x", (), True),
    ("path-prefix-with-slash", "paths.test", "GET", "/api/", (), True),
    ("path-prefix-not-parent", "paths.test", "GET", "/api", (), False),
    ("path-suffix", "paths.test", "GET", "/x/index.php", (), True),
    ("path-suffix-not-inner", "paths.test", "GET", "/index.php/x", (), False),
    ("path-template-one-segment", "paths.test", "GET", "/files/a/meta", (), True),
    ("path-template-one-not-two", "paths.test", "GET", "/files/a/b/meta", (), False),
    ("path-template-one-not-empty", "paths.test", "GET", "/files//meta", (), False),
    ("path-template-any-segments", "paths.test", "GET", "/static/a/b/c.js", (), True),
    # Envoy's uri_template `**` is `[...]*`: zero or more characters after `/static/`.
    ("path-template-any-zero", "paths.test", "GET", "/static/", (), True),
    ("path-template-any-needs-slash", "paths.test", "GET", "/static", (), False),
    ("not-paths-vetoes", "notpaths.test", "GET", "/api/public", (), False),
    ("not-paths-others-match", "notpaths.test", "GET", "/api/private", (), True),
    ("path-star-is-any", "anypath.test", "GET", "/anything/at/all", (), True),
    ("port-listener", "port.test", "GET", "/", (), True),
    ("port-other", "otherport.test", "GET", "/", (), False),
    ("not-port-listener", "notport.test", "GET", "/", (), False),
]

XFF = "X-Forwarded-For: "
SOURCE_CASES = [
    ("ip-block-single-address", "ip.test", "GET", "/", (), True),
    ("ip-block-cidr", "cidr.test", "GET", "/", (), True),
    ("ip-block-other-cidr", "othercidr.test", "GET", "/", (), False),
    ("ip-block-ignores-xff", "othercidr.test", "GET", "/", (XFF + "10.1.2.3",), False),
    ("not-ip-block-other", "notothercidr.test", "GET", "/", (), True),
    ("not-ip-block-peer", "notpeer.test", "GET", "/", (), False),
    # xffNumTrustedHops 1: remote.ip is the first address from the right of the client's XFF.
    ("remote-ip-from-xff", "remoteip.test", "GET", "/", (XFF + "10.1.2.3",), True),
    ("remote-ip-rightmost-of-xff", "remoteip.test", "GET", "/", (XFF + "1.1.1.1, 10.1.2.3",), True),
    ("remote-ip-not-leftmost", "remoteip.test", "GET", "/", (XFF + "10.1.2.3, 1.1.1.1",), False),
    # Envoy merges repeated XFF headers into one before any filter runs.
    ("remote-ip-repeated-xff", "remoteip.test", "GET", "/", (XFF + "1.1.1.1", XFF + "10.1.2.3"), True),
    ("remote-ip-without-xff-is-peer", "remotepeer.test", "GET", "/", (), True),
    ("remote-ip-without-xff-not-other", "remoteip.test", "GET", "/", (), False),
    ("not-remote-ip-vetoes", "notremote.test", "GET", "/", (XFF + "10.9.9.9",), False),
    ("not-remote-ip-others-match", "notremote.test", "GET", "/", (XFF + "192.168.1.1",), True),
    ("request-principal-needs-token", "jwt.test", "GET", "/", (), False),
    ("not-request-principal-without-token", "nojwt.test", "GET", "/", (), True),
]

CONDITION_CASES = [
    ("header-value", "header.test", "GET", "/", ("X-Role: admin",), True),
    ("header-other-value", "header.test", "GET", "/", ("X-Role: user",), False),
    ("header-absent", "header.test", "GET", "/", (), False),
    # Envoy 1.40's RBAC tries each value of a repeated header on its own (checked against its
    # RBAC filter; test_authz_parity.py compares them request by request), and never splits a
    # value at commas: the DENY bypass was a denied value sent twice or beside another one.
    ("header-repeated-each", "header.test", "GET", "/", ("X-Role: user", "X-Role: admin"), True),
    ("header-repeated-twice", "header.test", "GET", "/", ("X-Role: admin", "X-Role: admin"), True),
    ("header-repeated-not-joined", "joined.test", "GET", "/", ("X-Role: user", "X-Role: admin"), False),
    ("header-comma-value-whole", "joined.test", "GET", "/", ("X-Role: user,admin",), True),
    ("header-star-present", "present.test", "GET", "/", ("X-Debug: 1",), True),
    ("header-star-absent", "present.test", "GET", "/", (), False),
    ("header-not-value-vetoes", "notheader.test", "GET", "/", ("X-Role: admin",), False),
    ("header-not-value-other", "notheader.test", "GET", "/", ("X-Role: user",), True),
    ("header-not-value-absent", "notheader.test", "GET", "/", (), True),
    ("source-ip", "w-source.test", "GET", "/", (), True),
    ("remote-ip-cidr-from-xff", "w-remote.test", "GET", "/", (XFF + "10.1.2.99",), True),
    ("remote-ip-cidr-without-xff", "w-remote.test", "GET", "/", (), False),
    ("destination-ip", "w-destip.test", "GET", "/", (), True),
    ("destination-ip-other", "w-otherdestip.test", "GET", "/", (), False),
    ("destination-port", "w-destport.test", "GET", "/", (), True),
    ("destination-port-other", "w-otherdestport.test", "GET", "/", (), False),
    # No TLS, so no peer identity: values never match, notValues always do.
    ("source-namespace-without-tls", "w-ns.test", "GET", "/", (), False),
    ("not-source-namespace-without-tls", "w-notns.test", "GET", "/", (), True),
    ("source-principal-without-tls", "w-principal.test", "GET", "/", (), False),
    ("not-source-principal-without-tls", "w-notprincipal.test", "GET", "/", (), True),
]

COMBINE_CASES = [
    ("any-to-first", "combine.test", "DELETE", "/x", ("X-A: 1", "X-B: 1"), True),
    ("any-to-second", "combine.test", "GET", "/gone", ("X-A: 1", "X-B: 1"), True),
    ("no-to-matches", "combine.test", "GET", "/x", ("X-A: 1", "X-B: 1"), False),
    ("every-when-needed", "combine.test", "DELETE", "/x", ("X-A: 1",), False),
    ("no-when-matches", "combine.test", "DELETE", "/x", (), False),
]


def _ids(cases):
    return [c[0] for c in cases]


def _check_match(env, host, method, target, header_lines, matched):
    r = send(env, target, host=host, method=method, header_lines=header_lines)
    assert_outcome(r, DENIED if matched else SERVED)


@pytest.mark.parametrize("case", OPERATION_CASES, ids=_ids(OPERATION_CASES))
def test_operation_fields_match_as_istio_defines_them(deny_envoy, case):
    _check_match(deny_envoy, *case[1:])


@pytest.mark.parametrize("case", SOURCE_CASES, ids=_ids(SOURCE_CASES))
def test_source_fields_match_the_peer_and_the_trusted_forwarded_address(deny_envoy, case):
    _check_match(deny_envoy, *case[1:])


@pytest.mark.parametrize("case", CONDITION_CASES, ids=_ids(CONDITION_CASES))
def test_when_conditions_match_request_and_connection_attributes(deny_envoy, case):
    _check_match(deny_envoy, *case[1:])


@pytest.mark.parametrize("case", COMBINE_CASES, ids=_ids(COMBINE_CASES))
def test_rule_needs_any_operation_any_source_and_every_condition(deny_envoy, case):
    _check_match(deny_envoy, *case[1:])


@pytest.mark.parametrize("host", ["rootns.test", "otherns.test"])
def test_policies_of_every_namespace_apply_without_node_metadata(deny_envoy, host):
    assert_outcome(send(deny_envoy, "/", host=host), DENIED)


def test_untrusted_forwarded_for_leaves_remote_ip_the_peer(keep_envoy):
    """``xffNumTrustedHops: 0`` (the default): a client cannot choose its ``remote.ip``."""
    for header_lines in [(), (XFF + "10.1.2.3",)]:
        _check_match(keep_envoy, "remoteip.test", "GET", "/", header_lines, False)
        _check_match(keep_envoy, "remotepeer.test", "GET", "/", header_lines, True)


# --------------------------------------------------------------------------------------------
# Actions and their order
# --------------------------------------------------------------------------------------------

ALLOW_CASES = [
    ("allow-policy-matches", "allow.test", "GET", "/public/x", SERVED),
    ("allow-needs-every-field", "allow.test", "POST", "/public/x", DENIED),
    ("no-allow-matches", "allow.test", "GET", "/private", DENIED),
    ("deny-beats-allow", "allow.test", "GET", "/public/secret", DENIED),
    ("allow-on-source", "local.test", "GET", "/", SERVED),
    ("allow-source-not-matching", "blocked.test", "GET", "/", DENIED),
    ("host-without-allow-policy", "other.test", "GET", "/", DENIED),
    ("audit-never-allows", "audit.test", "GET", "/", DENIED),
    ("dry-run-allow-never-allows", "dryrun.test", "GET", "/", DENIED),
]


@pytest.mark.parametrize("case", ALLOW_CASES, ids=_ids(ALLOW_CASES))
def test_with_allow_policies_only_matching_requests_pass(allow_envoy, case):
    _, host, method, target, outcome = case
    assert_outcome(send(allow_envoy, target, host=host, method=method), outcome)


@pytest.mark.parametrize("target,host", [("/", "demoapp"), ("/public", "any.test")])
def test_allow_policy_without_rules_denies_everything(allow_nothing_envoy, target, host):
    assert_outcome(send(allow_nothing_envoy, target, host=host), DENIED)


def test_allow_policy_with_one_empty_rule_allows_everything_deny_excepted(keep_envoy):
    assert_outcome(send(keep_envoy, "/public", host="any.test"), SERVED, "/public")
    assert_outcome(send(keep_envoy, "/admin", host="any.test"), DENIED)


def test_no_policy_matching_means_allowed_and_counted(deny_envoy):
    allowed = counter(deny_envoy, STAT_ALLOWED)
    denied = counter(deny_envoy, STAT_DENIED)
    assert_outcome(send(deny_envoy, "/public"), SERVED)
    assert wait_counter(deny_envoy, STAT_ALLOWED, allowed + 1) == allowed + 1
    assert counter(deny_envoy, STAT_DENIED) == denied


def test_denied_request_is_counted_as_denied(deny_envoy):
    allowed = counter(deny_envoy, STAT_ALLOWED)
    denied = counter(deny_envoy, STAT_DENIED)
    assert_outcome(send(deny_envoy, "/admin"), DENIED)
    assert wait_counter(deny_envoy, STAT_DENIED, denied + 1) == denied + 1
    assert counter(deny_envoy, STAT_ALLOWED) == allowed


def test_upstream_never_sees_a_denied_request(deny_envoy, upstreams):
    tid = f"authz-denied-{time.monotonic_ns()}"
    assert_outcome(send(deny_envoy, "/admin/x", header_lines=[f"x-test-id: {tid}"]), DENIED)
    assert_outcome(send(deny_envoy, "/admin;x", header_lines=[f"x-test-id: {tid}"]), REJECTED)
    assert upstreams.attempts(tid) == 0


def test_audit_policy_is_counted_and_decides_nothing(deny_envoy):
    before = counter(deny_envoy, STAT_AUDIT)
    assert_outcome(send(deny_envoy, "/", host="audit.test"), SERVED)
    assert wait_counter(deny_envoy, STAT_AUDIT, before + 1) == before + 1
    # A request the AUDIT policy does not match is not counted.
    assert_outcome(send(deny_envoy, "/", host="not-audited.test"), SERVED)
    assert counter(deny_envoy, STAT_AUDIT) == before + 1


def test_dry_run_deny_is_counted_but_not_enforced(deny_envoy):
    before = counter(deny_envoy, STAT_DRY_RUN_WOULD_DENY)
    assert_outcome(send(deny_envoy, "/", host="dryrun.test"), SERVED)
    assert wait_counter(deny_envoy, STAT_DRY_RUN_WOULD_DENY, before + 1) == before + 1
    assert_outcome(send(deny_envoy, "/", host="not-dryrun.test"), SERVED)
    assert counter(deny_envoy, STAT_DRY_RUN_WOULD_DENY) == before + 1


# --------------------------------------------------------------------------------------------
# Configurations refused at load
# --------------------------------------------------------------------------------------------

REFUSED = {
    "custom-action": (
        authz_config(policy("ext", rule(op={"paths": ["/x"]}), action="CUSTOM")),
        "resources[0].spec.action", ["CUSTOM"]),
    "unknown-when-key": (
        authz_config(policy("bad-key", rule(when=[cond("request.foo", ["x"])]))),
        "resources[0].spec.rules[0].when[0].key", ["request.foo"]),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_unsupported_policy_is_refused_at_load_naming_its_path(rejected_envoy, case):
    config, path, reason = REFUSED[case]
    rejection = rejected_envoy(config)
    log = rejection.log_text()
    assert rejection.exited and rejection.exit_code != 0, (
        "Envoy kept running with a configuration the filter should refuse:\n" + log[-3000:])
    assert "Unable to create Wasm plugin meshrules" in log, log[-3000:]
    hits = [line for line in log.splitlines() if "config rejected" in line and f"{path}: " in line]
    assert hits, f"no refusal names {path!r}:\n" + log[-3000:]
    for part in reason:
        assert part in hits[0], hits[0]


def test_deny_and_audit_log_lines_name_the_policy_and_rule_that_decided(deny_envoy):
    assert_outcome(send(deny_envoy, "/", host="combine.test", method="DELETE",
                        header_lines=["X-A: 1", "X-B: 1"]), DENIED)
    assert_outcome(send(deny_envoy, "/", host="audit.test"), SERVED)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = deny_envoy.log_text()
        if "DELETE /: authz: denied by DENY policy app/deny-combined rules[0]" in log and \
                "GET /: authz: AUDIT policy app/audit-it rules[0] matches" in log:
            return
        time.sleep(0.1)
    pytest.fail("no log line names the deciding policies:\n" + log[-3000:])
