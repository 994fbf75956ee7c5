"""AuthorizationPolicy differences found against Envoy's own RBAC (issue 11, items 1 to 3),
compared request by request: the same requests go to meshrules and to Envoy's RBAC and
jwt_authn filters configured as istiod writes them (the shapes of Istio's golden files,
``tests/fixtures`` / ``../shared/peer/istio-authz-golden``), both Envoys with a gateway's
listener settings (``use_remote_address: true``, ``xff_num_trusted_hops: 1``).

1. A header sent several times: Envoy 1.40's RBAC matches each value on its own. meshrules
   joined them with ``,``, so ``x-role: guest`` twice, or beside ``x-role: admin``, passed a
   DENY on ``guest``.
2. ``requestPrincipals: ["iss1"]`` is issuer ``iss1`` AND ``sub`` exact ``""``: a token without
   ``sub`` does not match (Envoy's metadata matcher on an absent claim).
3. ``ipBlocks`` is the direct peer (``direct_remote_ip``), ``remoteIpBlocks`` the address Envoy
   took from X-Forwarded-For (``remote_ip``): a client could satisfy ``ipBlocks`` by sending
   ``x-forwarded-for: 1.2.3.4``.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import Envoy, plugin_config, raw_head, raw_status
from security import (authorization_policy, ec_key, jwks, jwt_rule, request_authentication,
                      security_config, sign)

ISSUER = "iss1"
KEY = ec_key("parity-1")
HOPS = 1

POLICIES = [
    authorization_policy("deny", [
        {"when": [{"key": "request.headers[x-role]", "values": ["guest"]}]},
        {"from": [{"source": {"ipBlocks": ["1.2.3.4"]}}]},
        {"from": [{"source": {"remoteIpBlocks": ["5.6.7.8"]}}]},
    ], action="DENY"),
    authorization_policy("allow", [
        {"to": [{"operation": {"paths": ["/open*"]}}]},
        {"to": [{"operation": {"paths": ["/id"]}}], "when": [{"key": "request.headers[x-id]", "values": ["abc1"]}]},
        {"to": [{"operation": {"paths": ["/jwt"]}}], "from": [{"source": {"requestPrincipals": [ISSUER]}}]},
    ]),
]
AUTHN = request_authentication("jwt", jwt_rule(ISSUER, jwks=json.dumps(jwks(KEY))))

# The RBAC filters istiod generates for POLICIES (one filter per action, DENY first).
ANY = [{"andRules": {"rules": [{"any": True}]}}]


def path(p: str) -> list[dict]:
    matcher = {"prefix": p[:-1]} if p.endswith("*") else {"exact": p}
    return [{"andRules": {"rules": [{"orRules": {"rules": [{"urlPath": {"path": matcher}}]}}]}}]


def ids(*principal: dict) -> list[dict]:
    return [{"andIds": {"ids": list(principal)}}]


def jwt_claim(claim: str, match: dict) -> dict:
    return {"metadata": {"filter": "envoy.filters.http.jwt_authn",
                         "path": [{"key": "payload"}, {"key": claim}],
                         "value": {"stringMatch": match}}}


RBAC_DENY = {"action": "DENY", "policies": {
    "ns[app]-policy[deny]-rule[0]": {"permissions": ANY, "principals": ids(
        {"orIds": {"ids": [{"header": {"name": "x-role", "stringMatch": {"exact": "guest"}}}]}})},
    "ns[app]-policy[deny]-rule[1]": {"permissions": ANY, "principals": ids(
        {"orIds": {"ids": [{"directRemoteIp": {"addressPrefix": "1.2.3.4", "prefixLen": 32}}]}})},
    "ns[app]-policy[deny]-rule[2]": {"permissions": ANY, "principals": ids(
        {"orIds": {"ids": [{"remoteIp": {"addressPrefix": "5.6.7.8", "prefixLen": 32}}]}})},
}}
RBAC_ALLOW = {"policies": {
    "ns[app]-policy[allow]-rule[0]": {"permissions": path("/open*"), "principals": ids({"any": True})},
    "ns[app]-policy[allow]-rule[1]": {"permissions": path("/id"), "principals": ids(
        {"orIds": {"ids": [{"header": {"name": "x-id", "stringMatch": {"exact": "abc1"}}}]}})},
    "ns[app]-policy[allow]-rule[2]": {"permissions": path("/jwt"), "principals": ids(
        {"orIds": {"ids": [{"andIds": {"ids": [jwt_claim("iss", {"exact": ISSUER}),
                                               jwt_claim("sub", {"exact": ""})]}}]}})},
}}


def rbac(rules: dict) -> dict:
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": rules}}


def jwt_authn() -> dict:
    # istiod keeps the verified payload in jwt_authn's metadata under "payload" (the RBAC
    # metadata matchers above read it there).
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"origins-0": {"issuer": ISSUER, "payload_in_metadata": "payload",
                                    "local_jwks": {"inline_string": json.dumps(jwks(KEY))}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}],
    }}


def hcm(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def gateway_listener(cfg: dict) -> dict:
    hcm(cfg)["xff_num_trusted_hops"] = HOPS
    return cfg


def native(cfg: dict) -> dict:
    cfg = gateway_listener(cfg)
    filters = hcm(cfg)["http_filters"]
    hcm(cfg)["http_filters"] = [jwt_authn(), rbac(RBAC_DENY), rbac(RBAC_ALLOW), filters[-1]]
    return cfg


@pytest.fixture(scope="module")
def envoys(module_envoy_launcher) -> tuple[Envoy, Envoy]:
    filter_config = security_config(*POLICIES, AUTHN, xffNumTrustedHops=HOPS, useRemoteAddress=True)
    meshrules = module_envoy_launcher.start(filter_config, transform=gateway_listener)
    reference = module_envoy_launcher.start(plugin_config(), transform=native)
    return meshrules, reference


def status(env: Envoy, target: str, lines: list[str]) -> int:
    """One HTTP/1.1 request written as is (headers may repeat); its status."""
    head = f"GET {target} HTTP/1.1\r\nHost: demoapp\r\n" + "".join(f"{h}\r\n" for h in lines)
    return raw_status(raw_head(env, (head + "Connection: close\r\n\r\n").encode()))


def token(**claims) -> str:
    return "Authorization: Bearer " + sign(KEY, {"iss": ISSUER, "exp": int(time.time()) + 3600, **claims})


CASES = {
    # 1: repeated headers
    "no-role": ("/open", [], 200),
    "guest": ("/open", ["x-role: guest"], 403),
    "guest-twice": ("/open", ["x-role: guest", "x-role: guest"], 403),
    "guest-beside-admin": ("/open", ["x-role: guest", "x-role: admin"], 403),
    "admin-beside-guest": ("/open", ["x-role: admin", "x-role: guest"], 403),
    "one-value-with-a-comma": ("/open", ["x-role: guest,admin"], 200),
    "allow-one-of-two-values": ("/id", ["x-id: other", "x-id: abc1"], 200),
    "allow-none-of-two-values": ("/id", ["x-id: other", "x-id: abc2"], 403),
    # 2: a request principal without a subject
    "token-without-sub": ("/jwt", [token()], 403),
    "token-with-empty-sub": ("/jwt", [token(sub="")], 200),
    "token-with-a-sub": ("/jwt", [token(sub="alice")], 403),
    # 3: the direct peer and the forwarded address
    "xff-spoofing-ip-blocks": ("/open", ["x-forwarded-for: 1.2.3.4"], 200),
    "xff-spoofing-ip-blocks-behind-a-proxy": ("/open", ["x-forwarded-for: 1.2.3.4, 9.9.9.9"], 200),
    "remote-ip-from-trusted-hop": ("/open", ["x-forwarded-for: 5.6.7.8"], 403),
    "remote-ip-not-the-trusted-hop": ("/open", ["x-forwarded-for: 5.6.7.8, 9.9.9.9"], 200),
}


@pytest.mark.parametrize("case", list(CASES))
def test_meshrules_decides_as_envoys_rbac(envoys, case):
    target, lines, expected = CASES[case]
    meshrules, reference = envoys
    assert status(reference, target, lines) == expected, "the reference itself"
    assert status(meshrules, target, lines) == expected
