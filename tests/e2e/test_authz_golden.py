"""Differential test over Istio's own golden files (tests/fixtures/peer/istio-authz-golden):
for each case of istiod's ``TestGenerator_GenerateHTTP`` table (CUSTOM left out), the
AuthorizationPolicies go into meshrules and the RBAC filters istiod generated for them go,
verbatim, into Envoy's native RBAC filter, with Envoy's jwt_authn in front as istiod places it
(payload in metadata under ``payload``). One Envoy serves every case: two listeners per case
(meshrules, native), each taking mTLS and plaintext (Istio's PERMISSIVE mode). The same
requests go to both and must get the same status, request by request.

Probes are generated from the policies: for each rule, a request that satisfies every field
(one URI SAN per peer field, so a peer presents several, one token carrying every claim), then
that request with each field changed to each of its values and not-values, to a value that
matches none, and without the field. Not varied, with reasons: ``ipBlocks``/``source.ip`` and
``destination.ip`` (every connection is 127.0.0.1), ``ports``/``destination.port`` (listeners
take free ports, so the policies' fixed ports never match on either side).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from conftest import REPO, _http_ok, plugin_config, request
from security import (TestCA, as_workload, compose, ec_key, https_request, jwks,
                      jwt_rule, request_authentication, sign, tls_listener)

GOLDEN = REPO / "tests" / "fixtures" / "peer" / "istio-authz-golden" / "http"


@dataclass(frozen=True)
class Case:
    """One row of TestGenerator_GenerateHTTP (builder_test.go): input, outputs, bundle."""
    name: str
    input: str
    outputs: tuple[str, ...]
    trust_domain: str | None = None
    aliases: tuple[str, ...] = ()


CASES = [
    Case("allow-empty-rule", "allow-empty-rule-in.yaml", ("allow-empty-rule-out.yaml",)),
    Case("allow-nil-rule", "allow-nil-rule-in.yaml", ("allow-nil-rule-out.yaml",)),
    Case("allow-path", "allow-path-in.yaml", ("allow-path-out.yaml",)),
    Case("audit-full-rule", "audit-full-rule-in.yaml", ("audit-full-rule-out.yaml",)),
    Case("deny-and-allow", "deny-and-allow-in.yaml", ("deny-and-allow-out1.yaml", "deny-and-allow-out2.yaml")),
    Case("deny-empty-rule", "deny-empty-rule-in.yaml", ("deny-empty-rule-out.yaml",)),
    Case("dry-run-allow-and-deny", "dry-run-allow-and-deny-in.yaml",
         ("dry-run-allow-and-deny-out1.yaml", "dry-run-allow-and-deny-out2.yaml")),
    Case("dry-run-allow", "dry-run-allow-in.yaml", ("dry-run-allow-out.yaml",)),
    Case("dry-run-mix", "dry-run-mix-in.yaml", ("dry-run-mix-out.yaml",)),
    Case("multiple-policies", "multiple-policies-in.yaml", ("multiple-policies-out.yaml",)),
    Case("single-policy", "single-policy-in.yaml", ("single-policy-out.yaml",)),
    Case("trust-domain-one-alias", "simple-policy-td-aliases-in.yaml", ("simple-policy-td-aliases-out.yaml",),
         "td1", ("cluster.local",)),
    Case("trust-domain-multiple-aliases", "simple-policy-multiple-td-aliases-in.yaml",
         ("simple-policy-multiple-td-aliases-out.yaml",), "td1", ("cluster.local", "some-td")),
    Case("trust-domain-wildcard-in-principal", "simple-policy-principal-with-wildcard-in.yaml",
         ("simple-policy-principal-with-wildcard-out.yaml",), "td1", ("foobar",)),
    Case("trust-domain-aliases-in-source-principal", "td-aliases-source-principal-in.yaml",
         ("td-aliases-source-principal-out.yaml",), "new-td", ("old-td", "some-trustdomain")),
    Case("trust-domains", "trust-domains-in.yaml", ("trust-domains-out.yaml",)),
]
# allow-full-rule carries an `experimental.envoy.filters.*` condition, which meshrules refuses
# (see test_experimental_metadata_keys_are_refused_with_the_reason).
REFUSED = Case("allow-full-rule", "allow-full-rule-in.yaml", ("allow-full-rule-out.yaml",))

ISSUER = "https://issuer.golden.test"
KEY = ec_key("golden")


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    method: str = "GET"
    path: str = "/"
    host: str = "httpbin.foo"
    headers: tuple[tuple[str, str], ...] = ()
    # Peer certificate: URI SANs by policy field (a cert per distinct set), DNS SANs; None: plaintext.
    uris: tuple[tuple[str, str], ...] | None = None
    sni: str | None = None
    claims: tuple[tuple[str, str], ...] | None = None

    def payload(self) -> dict:
        return {k: json.loads(v) for k, v in self.claims or ()}

    def with_uri(self, key: str, uri: str | None) -> "Probe":
        uris = tuple((k, u) for k, u in (self.uris or ()) if k != key)
        if uri is not None:
            uris += ((key, uri),)
        return replace(self, uris=uris or None)

    def with_claim(self, key: str, value: Any) -> "Probe":
        claims = tuple((k, v) for k, v in (self.claims or ()) if k != key)
        if value is not None:
            claims += ((key, json.dumps(value)),)  # JSON text: nested claims stay hashable
        return replace(self, claims=claims or None)

    def with_header(self, name: str, value: str | None) -> "Probe":
        headers = tuple((k, v) for k, v in self.headers if k != name)
        if value is not None:
            headers += ((name, value),)
        return replace(self, headers=headers)

    def describe(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v not in (None, ())}, default=str)


def sample(v: str, any_value: str = "any") -> str:
    """A value an Istio string match `v` matches: `*` anything, `x*` / `*x` with filler."""
    if v == "*":
        return any_value
    if v.startswith("*"):
        return "zz" + v[1:]
    if v.endswith("*"):
        return v[:-1] + "zz"
    return v


def sample_path(v: str) -> str:
    if v == "*":
        return "/anything"
    return sample(v).replace("{**}", "a/b").replace("{*}", "seg")


def sample_ip(v: str) -> str:
    net = ipaddress.ip_network(v, strict=False)
    return str(net.network_address + (1 if net.num_addresses > 1 else 0))


def issuer_subject(v: str) -> list[tuple[str, str]]:
    """Tokens for a request principal value: `iss/sub` split at the last `/` (istiod's
    split); a value without `/` is tried as the issuer and as the subject."""
    if "/" in v:
        iss, _, sub = v.rpartition("/")
        return [(sample(iss, ISSUER), sample(sub, "user"))]
    return [(sample(v, ISSUER), ""), (ISSUER, sample(v, "user"))]


def spiffe_for(key: str, v: str, namespace: str = "foo") -> str:
    if key in ("principals", "source.principal"):
        return "spiffe://" + sample(v, "cluster.local/ns/any/sa/any").replace("*", "zz")
    if key in ("namespaces", "source.namespace"):
        return f"spiffe://cluster.local/ns/{sample(v)}/sa/default"
    if key in ("serviceAccounts", "source.serviceAccount"):
        ns, _, sa = v.rpartition("/")
        return f"spiffe://cluster.local/ns/{ns or namespace}/sa/{sample(sa)}"
    # trustDomains / source.trustDomain
    return f"spiffe://{sample(v, 'any.td')}/ns/foo/sa/default"


PEER_FIELDS = {"principals", "namespaces", "serviceAccounts", "trustDomains", "source.principal",
               "source.namespace", "source.serviceAccount", "source.trustDomain"}
NOT_VARIED = {"ipBlocks", "ports", "source.ip", "destination.ip", "destination.port"}


def setters(key: str, v: str, case: Case) -> list[Any]:
    """Ways to make a probe carry value `v` of field `key` (each a Probe -> Probe)."""
    base = {"notPrincipals": "principals", "notNamespaces": "namespaces",
            "notServiceAccounts": "serviceAccounts", "notTrustDomains": "trustDomains",
            "notRequestPrincipals": "requestPrincipals", "notHosts": "hosts", "notMethods": "methods",
            "notPaths": "paths", "notRemoteIpBlocks": "remoteIpBlocks"}.get(key, key)
    if base in PEER_FIELDS:
        uris = [spiffe_for(base, v)]
        if base in ("trustDomains", "source.trustDomain"):
            uris.append(f"spiffe://{sample(v, 'any.td')}")  # path-less: no trust domain for istiod
        if base in ("principals", "source.principal") and v.count("/") == 4 and case.trust_domain:
            rest = v.split("/", 1)[1]
            uris += [f"spiffe://{td}/{rest}" for td in (case.trust_domain, *case.aliases, "other-td")]
        return [lambda p, u=u: p.with_uri(base, u) for u in uris]
    if base in ("requestPrincipals", "request.auth.principal"):
        return [lambda p, i=i, s=s: p.with_claim("iss", i).with_claim("sub", s) for i, s in issuer_subject(v)]
    if base == "request.auth.audiences":
        return [lambda p: p.with_claim("aud", sample(v))]
    if base == "request.auth.presenter":
        return [lambda p: p.with_claim("azp", sample(v))]
    if base.startswith("request.auth.claims["):
        names = re.findall(r"\[([^\]]*)\]", base)
        value: Any = sample(v)
        for n in reversed(names[1:]):
            value = {n: value}
        return [lambda p: p.with_claim(names[0], value)]
    if base.startswith("request.headers["):
        name = re.findall(r"\[([^\]]*)\]", base)[0]
        return [lambda p: p.with_header(name, sample(v))]
    if base in ("remoteIpBlocks", "remote.ip"):
        return [lambda p: p.with_header("x-forwarded-for", sample_ip(v))]
    if base == "hosts":
        return [lambda p: replace(p, host=sample(v, "any.example"))]
    if base == "methods":
        return [lambda p: replace(p, method=sample(v, "PATCH"))]
    if base == "paths":
        return [lambda p: replace(p, path=sample_path(v))]
    if base == "connection.sni":
        return [lambda p: replace(p, sni=sample(v, "any.example"), uris=p.uris or (("sni", "spiffe://cluster.local/ns/x/sa/y"),))]
    raise AssertionError(f"no probe for {key}")


def unset(key: str) -> Any:
    """A probe without field `key` (no SAN, claim or header for it)."""
    if key in PEER_FIELDS:
        return lambda p: p.with_uri(key, None)
    if key.startswith("request.headers["):
        return lambda p: p.with_header(re.findall(r"\[([^\]]*)\]", key)[0], None)
    return None


def mismatch(key: str, values: list[str]) -> str:
    first = next((v for v in values if "*" not in v), values[0].replace("*", ""))
    return "/nomatch" if key in ("paths", "notPaths") else (
        "203.0.113.9" if "Ip" in key or key.endswith(".ip") else first + "-nomatch")


def fields_of(rule: dict, pick: dict[str, int]) -> list[tuple[str, list[str], list[str]]]:
    """(key, values, notValues) of the rule's picked source and operation, and its conditions."""
    out = []
    for part, key in (("from", "source"), ("to", "operation")):
        items = rule.get(part) or []
        if items:
            body = items[pick[part]][key]
            for k, vs in body.items():
                if not k.startswith("not"):
                    out.append((k, vs, body.get("not" + k[0].upper() + k[1:], [])))
                elif k[3].lower() + k[4:] not in body:
                    out.append((k[3].lower() + k[4:], [], vs))
    for cond in rule.get("when") or []:
        out.append((cond["key"], cond.get("values", []), cond.get("notValues", [])))
    return [f for f in out if f[0] not in NOT_VARIED]


def rule_probes(case: Case, rule: dict, pick: dict[str, int]) -> set[Probe]:
    """A request satisfying the picked source and operation and the conditions, then that
    request with each field set to each value and not-value, to no value, and unset."""
    fields = fields_of(rule, pick)
    base = Probe()
    for key, values, _ in fields:
        if values:
            base = setters(key, values[0], case)[0](base)
    probes = {base}
    for key, values, not_values in fields:
        for v in [*values, *not_values, mismatch(key, values or not_values)]:
            probes.update(s(base) for s in setters(key, v, case))
        if unset(key):
            probes.add(unset(key)(base))
    return probes


def probes_for(case: Case, policies: list[dict]) -> list[Probe]:
    peer = Probe(uris=(("p", "spiffe://cluster.local/ns/foo/sa/default"),))
    probes = {Probe(), Probe(method="PUT"), peer, peer.with_claim("sub", "user")}
    for pol in policies:
        for rule in (pol.get("spec") or {}).get("rules") or []:
            # Each source with the first operation, each operation with the first source.
            picks = [{"from": i, "to": 0} for i in range(len(rule.get("from") or [0]))]
            picks += [{"from": 0, "to": j} for j in range(1, len(rule.get("to") or [0]))]
            for pick in picks:
                probes |= rule_probes(case, rule, pick)
    return sorted(probes, key=Probe.describe)


# --------------------------------------------------------------------------------------------
# The Envoy: two listeners per case
# --------------------------------------------------------------------------------------------


def load_yaml(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((GOLDEN / name).read_text()) if d]


def issuers(probes: list[Probe]) -> list[str]:
    return sorted({p.payload().get("iss", ISSUER) for p in probes if p.claims})


def meshrules_config(case: Case, policies: list[dict], iss: list[str]) -> dict:
    resources = list(policies)
    if iss:
        key_set = json.dumps(jwks(KEY))
        resources.append(request_authentication("golden", *[jwt_rule(i, jwks=key_set) for i in iss],
                                                namespace="foo"))
    cfg = plugin_config(*resources)
    cfg["security"] = {"xffNumTrustedHops": 1}
    if case.trust_domain:
        cfg["security"].update(trustDomain=case.trust_domain, trustDomainAliases=list(case.aliases))
    return cfg


def native_jwt_authn(iss: list[str]) -> dict:
    """Envoy's jwt_authn as istiod writes it (security/authn policy_applier.go): a provider
    per rule, payload in metadata under `payload`, requires_any {provider, allow_missing}."""
    key_set = json.dumps(jwks(KEY))
    providers = {f"origins-{i}": {"issuer": x, "payload_in_metadata": "payload", "forward": False,
                                  "local_jwks": {"inline_string": key_set},
                                  "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]}}
                 for i, x in enumerate(iss)}
    inner = [{"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}} for n in providers]
    requires = inner[0] if len(inner) == 1 else {"requires_any": {"requirements": [
        *[{"provider_name": n} for n in providers], {"requires_all": {"requirements": inner}}]}}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers, "bypass_cors_preflight": True,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}]}}


def golden_filters(case: Case) -> list[dict]:
    """The out files as Envoy filters, verbatim (the `name` and `typedConfig` istiod wrote)."""
    return [{"name": d["name"], "typed_config": d["typedConfig"]} for name in case.outputs for d in load_yaml(name)]


def case_listeners(template: dict, case: Case, mesh_filter: dict, iss: list[str]) -> list[dict]:
    out = []
    for side, filters in (("meshrules", [mesh_filter]),
                          ("native", ([native_jwt_authn(iss)] if iss else []) + golden_filters(case))):
        listener = copy.deepcopy(template)
        listener["name"] = f"{case.name}:{side}"
        for chain in listener["filter_chains"]:
            hcm = next(f for f in chain["filters"] if f["name"].endswith("http_connection_manager"))["typed_config"]
            hcm["http_filters"] = filters + [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
            # As istiod's inbound listeners: the client is the XFF entry one hop out (remote.ip),
            # paths normalized and merged, escaped slashes refused (meshrules' defaults).
            hcm.update(xff_num_trusted_hops=1, normalize_path=True, merge_slashes=True,
                       path_with_escaped_slashes_action="REJECT_REQUEST")
        out.append(listener)
    return out


@pytest.fixture(scope="module")
def golden(module_envoy_launcher, tmp_path_factory):
    ca = TestCA(tmp_path_factory.mktemp("golden-pki"))
    server = ca.server()
    plan = []
    for case in CASES:
        policies = [d for name in [case.input] for d in load_yaml(name)]
        probes = probes_for(case, policies)
        plan.append((case, policies, probes, issuers(probes)))

    def add_listeners(cfg: dict) -> dict:
        template = cfg["static_resources"]["listeners"][0]
        mesh_filter = next(f for f in template["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
                           if f["name"] == "envoy.filters.http.wasm")
        for case, policies, _, iss in plan:
            m = copy.deepcopy(mesh_filter)
            m["typed_config"]["config"]["configuration"]["value"] = json.dumps(meshrules_config(case, policies, iss))
            cfg["static_resources"]["listeners"] += case_listeners(template, case, m, iss)
        return cfg

    env = module_envoy_launcher.start(
        plugin_config(), transform=compose(as_workload("foo", "httpbin", {"app": "httpbin", "version": "v1"}),
                                           tls_listener(ca, server, require_client_certificate=False, permissive=True),
                                           add_listeners))
    ports = {s["name"]: s["local_address"]["socket_address"]["port_value"]
             for s in json.loads(_http_ok(env.admin_port, "/listeners?format=json"))["listener_statuses"]}
    return SimpleNamespace(env=env, ca=ca, plan=plan, ports=ports, certs={})


def send(g: SimpleNamespace, port: int, p: Probe) -> int:
    target = SimpleNamespace(port=port)
    headers = dict(p.headers)
    if p.claims:
        c = p.payload()
        c.setdefault("iss", ISSUER)
        c.setdefault("exp", 4102444800)
        headers["authorization"] = "Bearer " + sign(KEY, c)
    try:
        if p.uris is None:
            return request(target, p.method, p.path, p.host, headers).status
        uris = tuple(dict.fromkeys(u for _, u in p.uris))
        if uris not in g.certs:
            g.certs[uris] = g.ca.peer(uris, common_name="golden-peer")
        return https_request(target, g.ca, g.certs[uris], p.path, p.host, sni=p.sni or "localhost",
                             method=p.method, headers=headers).status
    except (ConnectionError, OSError) as e:  # a request the codec refuses outright
        return -1 if "reset" in str(e).lower() or "closed" in str(e).lower() else -2


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_meshrules_agrees_with_native_rbac_on_istiods_golden_output(golden, case):
    _, _, probes, _ = next(x for x in golden.plan if x[0] == case)
    disagreements = []
    for p in probes:
        mesh = send(golden, golden.ports[f"{case.name}:meshrules"], p)
        native = send(golden, golden.ports[f"{case.name}:native"], p)
        if mesh != native:
            disagreements.append(f"meshrules {mesh} native {native}: {p.describe()}")
    print(f"golden {case.name}: {len(probes)} probes, {len(probes) - len(disagreements)} agree")
    assert not disagreements, "\n".join(disagreements)


# Cases whose policies give one outcome only, and why.
OUTCOMES = {
    "allow-empty-rule": {200}, "audit-full-rule": {200},  # allow all; AUDIT decides nothing
    "dry-run-allow": {200}, "dry-run-allow-and-deny": {200},  # dry run only
    "allow-nil-rule": {403}, "deny-empty-rule": {403},  # deny all
    "allow-path": {403},  # notPaths has "*": nothing is allowed
    "single-policy": {403},  # every operation needs a port of 9001..9112
    "trust-domain-one-alias": {403},  # its methods are not HTTP tokens (400 otherwise)
}


def test_probes_reach_both_outcomes(golden):
    """The probes are not all denied (or all allowed): per side, every outcome the policies
    can give appears, so an agreement means something."""
    statuses = {}
    for case, _, probes, _ in golden.plan:
        statuses[case.name] = {send(golden, golden.ports[f"{case.name}:native"], p) for p in probes}
    missing = {n: OUTCOMES.get(n, {200, 403}) - s for n, s in statuses.items() if OUTCOMES.get(n, {200, 403}) - s}
    assert not missing, (missing, statuses)


def test_experimental_metadata_keys_are_refused_with_the_reason(rejected_envoy):
    """istiod turns `experimental.envoy.filters.a.b[c]` into a metadata matcher on Envoy's
    dynamic metadata (allow-full-rule-out.yaml); meshrules refuses it and says why."""
    rejection = rejected_envoy(plugin_config(*load_yaml(REFUSED.input)))
    log = rejection.wait_for_log(r"experimental\.envoy\.filters")
    assert re.search(r"experimental\.envoy\.filters\.a\.b\[c\].*dynamic metadata", log), log[-2000:]
