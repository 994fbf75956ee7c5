"""AuthorizationPolicy on the peer's mTLS identity: a client presents a certificate whose URI
SAN is its SPIFFE id (``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``), Envoy
terminates TLS, and the filter allows or denies by ``principals``, ``namespaces``,
``serviceAccounts``, ``trustDomains``, their ``not`` forms, and ``when`` conditions on
``source.*`` and ``connection.sni``, as Istio's RBAC generator (pilot/pkg/security/authz/model
generator.go) turns them into Envoy matchers:

- ``principals``: the value with ``spiffe://`` put in front, ``*`` alone = any authenticated
  peer, ``x*`` prefix, ``*x`` suffix, else exact;
- ``namespaces``: the regex ``.*/ns/<ns>/.*`` on the SAN (``*`` in the value becomes ``.*``);
- ``serviceAccounts``: ``ns/sa`` or a bare ``sa`` in the policy's namespace, the regex
  ``spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?``;
- a request without a peer certificate (plaintext) has no principal: it matches no positive
  source field, and every ``not`` field.

One Envoy serves both TLS (client certificate required) and plaintext on one port, the way an
Istio sidecar in PERMISSIVE mode does; every case is a path of one ALLOW policy.
"""

from __future__ import annotations

import pytest

from conftest import PASSTHROUGH, plugin_config, request
from security import (RBAC_DENIED, TLS_REFUSED, TestCA, as_workload, authorization_policy,
                      compose, echo_connection_facts, https_request, on_path, security_config,
                      spiffe, tls_listener, wait_until, when, with_envoy_rbac,
                      without_filter)

TD = "cluster.local"

# The workloads calling in, by their SPIFFE ids.
IDS = {
    "web": spiffe(TD, "app", "web"),
    "web-admin": spiffe(TD, "app", "web-admin"),
    "payer": spiffe(TD, "billing", "payer"),
    "partner": spiffe("partner.example", "app", "web"),
    "staging": spiffe(TD, "app-staging", "web"),
    "nested": f"spiffe://{TD}/ns/app/pool/blue/sa/web",
}
PLAIN = "plaintext"  # no TLS at all, so no peer certificate


POLICY = authorization_policy("mtls-identities", [
    on_path("/open/*"),
    on_path("/principals/exact", {"principals": ["cluster.local/ns/app/sa/web"]}),
    on_path("/principals/prefix", {"principals": ["cluster.local/ns/app/*"]}),
    on_path("/principals/suffix", {"principals": ["*/sa/web"]}),
    on_path("/principals/any", {"principals": ["*"]}),
    on_path("/principals/not", {"notPrincipals": ["cluster.local/ns/app/sa/web"]}),
    on_path("/namespaces/in", {"namespaces": ["app"]}),
    on_path("/namespaces/not", {"notNamespaces": ["app"]}),
    on_path("/namespaces/wildcard", {"namespaces": ["app-*"]}),
    on_path("/service-accounts/qualified", {"serviceAccounts": ["billing/payer"]}),
    on_path("/service-accounts/bare", {"serviceAccounts": ["web"]}),
    on_path("/service-accounts/not", {"notServiceAccounts": ["app/web"]}),
    on_path("/trust-domains/in", {"trustDomains": ["cluster.local"]}),
    on_path("/trust-domains/not", {"notTrustDomains": ["cluster.local"]}),
    on_path("/when/source.principal", when=when("source.principal", ["cluster.local/ns/billing/sa/payer"])),
    on_path("/when/source.principal-not", when=when("source.principal", not_values=["cluster.local/ns/app/sa/web"])),
    on_path("/when/source.namespace", when=when("source.namespace", ["billing"])),
    on_path("/when/source.serviceAccount", when=when("source.serviceAccount", ["app/web"])),
    on_path("/when/source.trustDomain", when=when("source.trustDomain", ["partner.example"])),
    on_path("/when/connection.sni", when=when("connection.sni", ["api.mesh.test"])),
    on_path("/when/connection.sni-not", when=when("connection.sni", not_values=["api.mesh.test"])),
    on_path("/when/connection.sni-suffix", when=when("connection.sni", ["*.mesh.test"])),
])


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The mesh CA, Envoy's server certificate, one client certificate per workload, and a
    certificate carrying web's SPIFFE id from a CA Envoy does not trust."""
    root = tmp_path_factory.mktemp("pki")
    ca = TestCA(root / "mesh")
    rogue = TestCA(root / "rogue", name="not the mesh CA")
    return {
        "ca": ca,
        "server": ca.server(),
        "clients": {name: ca.client(uri, filename=name) for name, uri in IDS.items()},
        "rogue": rogue.client(IDS["web"], filename="rogue-web"),
    }


@pytest.fixture(scope="module")
def reference(module_envoy_launcher, pki):
    """Envoy with the same TLS listener and no filter: proves the fixture on its own."""
    return module_envoy_launcher.start(
        plugin_config(),
        transform=compose(tls_listener(pki["ca"], pki["server"], permissive=True), without_filter,
                          echo_connection_facts))


MESHRULES, ENVOY = "meshrules", "envoy-rbac"


@pytest.fixture(scope="module", params=[MESHRULES, ENVOY])
def mesh(request, module_envoy_launcher, pki):
    """The filter with the policy, in a sidecar of namespace ``app`` that takes mTLS and
    plaintext on one port. Every case also runs against the reference: the same listener with
    Envoy's own RBAC filter holding the policy as istiod translates it (security.envoy_rbac;
    trustDomains and source.trustDomain, which istiod has no generator for, as the regex
    ``spiffe://<td>/.*``)."""
    tls = tls_listener(pki["ca"], pki["server"], permissive=True)
    if request.param == MESHRULES:
        return module_envoy_launcher.start(security_config(POLICY), transform=compose(as_workload("app"), tls))
    return module_envoy_launcher.start(plugin_config(), transform=compose(tls, with_envoy_rbac(POLICY)))


def call(env, pki, who: str, path: str, sni: str | None = "localhost"):
    if who == PLAIN:
        return request(env, "GET", path, host="demoapp")
    return https_request(env, pki["ca"], pki["clients"][who], path, host="demoapp", sni=sni)


def assert_decision(r, allowed: bool) -> None:
    if allowed:
        assert r.status == 200 and r.served_by == PASSTHROUGH, r
    else:
        assert r.status == 403 and r.body == RBAC_DENIED, r


# --------------------------------------------------------------------------------------------
# The fixture, without the filter
# --------------------------------------------------------------------------------------------


def test_tls_fixture_envoy_accepts_a_mesh_certificate_and_reads_its_spiffe_id(reference, pki):
    r = https_request(reference, pki["ca"], pki["clients"]["web"], "/hello", sni="api.mesh.test")
    assert r.status == 200 and r.served_by == PASSTHROUGH, r
    seen = r.upstream_headers()
    assert seen["x-envoy-saw-peer"] == IDS["web"], seen
    assert seen["x-envoy-saw-sni"] == "api.mesh.test", seen


def test_tls_fixture_each_client_certificate_carries_its_own_spiffe_id(reference, pki):
    for name, uri in IDS.items():
        r = https_request(reference, pki["ca"], pki["clients"][name], "/")
        assert r.status == 200 and r.upstream_headers()["x-envoy-saw-peer"] == uri, (name, r)


def listener_ssl_stat(env, suffix: str) -> int:
    return sum(v for k, v in env.stats(r"\.ssl\.").items() if k.startswith("listener.") and k.endswith(suffix))


@pytest.mark.parametrize("cert,reason", [("rogue", "fail_verify_error"), (None, "fail_verify_no_cert")],
                         ids=["certificate-from-unknown-ca", "no-certificate"])
def test_tls_fixture_refuses_the_handshake_without_a_mesh_certificate(reference, pki, cert, reason):
    before = listener_ssl_stat(reference, f".ssl.{reason}")
    with pytest.raises(TLS_REFUSED):
        https_request(reference, pki["ca"], pki["rogue"] if cert else None, "/", timeout=5)
    # Envoy's own TLS stats say why: the chain did not verify, or no certificate came.
    assert wait_until(lambda: listener_ssl_stat(reference, f".ssl.{reason}") > before, timeout=5)


def test_tls_fixture_plaintext_is_served_on_the_same_port(reference):
    r = request(reference, "GET", "/", host="demoapp")
    assert r.status == 200 and r.served_by == PASSTHROUGH, r
    assert "x-envoy-saw-peer" not in r.upstream_headers()


# --------------------------------------------------------------------------------------------
# The filter
# --------------------------------------------------------------------------------------------


def test_mesh_serves_mtls_and_plaintext_callers_the_policy_allows(mesh, pki):
    assert_decision(call(mesh, pki, "web", "/open/x"), True)
    assert_decision(call(mesh, pki, PLAIN, "/open/x"), True)
    # An ALLOW policy exists, so a request no rule matches is denied.
    assert_decision(call(mesh, pki, "web", "/elsewhere"), False)


def test_unknown_ca_is_refused_at_tls_before_any_policy(mesh, pki):
    with pytest.raises(TLS_REFUSED):
        https_request(mesh, pki["ca"], pki["rogue"], "/open/x", timeout=5)


def _cases(path: str, *expect: tuple[str, bool]) -> list:
    return [pytest.param(path, who, ok, id=f"{path.strip('/')}:{who}:{'allow' if ok else 'deny'}")
            for who, ok in expect]


PRINCIPALS = [
    *_cases("/principals/exact", ("web", True), ("web-admin", False), ("partner", False), (PLAIN, False)),
    *_cases("/principals/prefix", ("web", True), ("web-admin", True), ("staging", False), ("payer", False)),
    *_cases("/principals/suffix", ("web", True), ("partner", True), ("staging", True), ("web-admin", False)),
    *_cases("/principals/any", ("payer", True), ("partner", True), (PLAIN, False)),
    *_cases("/principals/not", ("web", False), ("web-admin", True), ("partner", True), (PLAIN, True)),
]


@pytest.mark.parametrize("path,who,allowed", PRINCIPALS)
def test_principals_match_the_peer_spiffe_id(mesh, pki, path, who, allowed):
    assert_decision(call(mesh, pki, who, path), allowed)


NAMESPACES = [
    *_cases("/namespaces/in", ("web", True), ("nested", True), ("staging", False), ("payer", False),
            (PLAIN, False)),
    *_cases("/namespaces/not", ("payer", True), ("web", False), ("staging", True), (PLAIN, True)),
    *_cases("/namespaces/wildcard", ("staging", True), ("web", False)),
]


@pytest.mark.parametrize("path,who,allowed", NAMESPACES)
def test_namespaces_match_the_ns_segment_of_the_spiffe_id(mesh, pki, path, who, allowed):
    assert_decision(call(mesh, pki, who, path), allowed)


SERVICE_ACCOUNTS = [
    *_cases("/service-accounts/qualified", ("payer", True), ("web", False)),
    # A bare name is in the policy's own namespace (app); any trust domain; extra path segments
    # between ns and sa are allowed; `web-admin` is not `web`.
    *_cases("/service-accounts/bare", ("web", True), ("partner", True), ("nested", True),
            ("web-admin", False), ("staging", False), ("payer", False), (PLAIN, False)),
    *_cases("/service-accounts/not", ("web", False), ("partner", False), ("web-admin", True), (PLAIN, True)),
]


@pytest.mark.parametrize("path,who,allowed", SERVICE_ACCOUNTS)
def test_service_accounts_match_namespace_and_account_of_the_spiffe_id(mesh, pki, path, who, allowed):
    assert_decision(call(mesh, pki, who, path), allowed)


TRUST_DOMAINS = [
    *_cases("/trust-domains/in", ("web", True), ("payer", True), ("partner", False), (PLAIN, False)),
    *_cases("/trust-domains/not", ("partner", True), ("web", False)),
]


@pytest.mark.parametrize("path,who,allowed", TRUST_DOMAINS)
def test_trust_domains_match_the_authority_of_the_spiffe_id(mesh, pki, path, who, allowed):
    assert_decision(call(mesh, pki, who, path), allowed)


SOURCE_CONDITIONS = [
    *_cases("/when/source.principal", ("payer", True), ("web", False), (PLAIN, False)),
    *_cases("/when/source.principal-not", ("payer", True), ("web", False)),
    *_cases("/when/source.namespace", ("payer", True), ("web", False), (PLAIN, False)),
    *_cases("/when/source.serviceAccount", ("web", True), ("partner", True), ("web-admin", False)),
    *_cases("/when/source.trustDomain", ("partner", True), ("web", False)),
]


@pytest.mark.parametrize("path,who,allowed", SOURCE_CONDITIONS)
def test_when_conditions_on_the_source_identity(mesh, pki, path, who, allowed):
    assert_decision(call(mesh, pki, who, path), allowed)


SNI = [
    pytest.param("/when/connection.sni", "web", "api.mesh.test", True, id="sni:exact:allow"),
    pytest.param("/when/connection.sni", "web", "www.mesh.test", False, id="sni:other-name:deny"),
    pytest.param("/when/connection.sni", "web", None, False, id="sni:none-sent:deny"),
    pytest.param("/when/connection.sni", PLAIN, None, False, id="sni:plaintext:deny"),
    pytest.param("/when/connection.sni-not", "web", "www.mesh.test", True, id="sni-not:other-name:allow"),
    pytest.param("/when/connection.sni-not", "web", "api.mesh.test", False, id="sni-not:that-name:deny"),
    pytest.param("/when/connection.sni-suffix", "web", "www.mesh.test", True, id="sni-suffix:allow"),
    pytest.param("/when/connection.sni-suffix", "web", "localhost", False, id="sni-suffix:deny"),
]


@pytest.mark.parametrize("path,who,sni,allowed", SNI)
def test_connection_sni_condition_uses_the_tls_server_name(mesh, pki, path, who, sni, allowed):
    assert_decision(call(mesh, pki, who, path, sni=sni), allowed)


def test_plaintext_request_has_no_principal_so_only_not_principals_match(mesh, pki):
    assert_decision(call(mesh, pki, PLAIN, "/principals/exact"), False)
    assert_decision(call(mesh, pki, PLAIN, "/principals/any"), False)
    assert_decision(call(mesh, pki, PLAIN, "/principals/not"), True)
