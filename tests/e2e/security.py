"""Shared helpers for meshrules' security end-to-end tests (RequestAuthentication, mTLS
identities, AuthorizationPolicy): signing keys and tokens made in the test, a real JWKS server
process, a test CA with SPIFFE client certificates, the Envoy bootstrap transforms that put TLS
on the listener, and an HTTPS client.

Nothing here depends on the filter: the fixtures are proven on their own (PyJWT decodes the
tokens, a filterless Envoy does the TLS handshakes) before the filter is tested with them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import jwt as pyjwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import (NAMESPACE, REPO, Envoy, Response, _die_with_parent, _stop_process,
                      plugin_config, request)

JWKS_SCRIPT = REPO / "tests" / "jwks_server.py"

# --------------------------------------------------------------------------------------------
# Metrics (proxy-wasm metrics carry Envoy's ``wasmcustom.`` prefix in /stats)
# --------------------------------------------------------------------------------------------

STAT_JWT_VALID = "wasmcustom.meshrules_jwt_valid"
STAT_JWT_INVALID = "wasmcustom.meshrules_jwt_invalid"
STAT_JWT_MISSING = "wasmcustom.meshrules_jwt_missing"
STAT_JWKS_FETCH_OK = "wasmcustom.meshrules_jwks_fetch_ok"
STAT_JWKS_FETCH_FAILED = "wasmcustom.meshrules_jwks_fetch_failed"
STAT_AUTHZ_ALLOWED = "wasmcustom.meshrules_authz_allowed"
STAT_AUTHZ_DENIED = "wasmcustom.meshrules_authz_denied"


def counter(env: Envoy, name: str) -> int:
    """A counter's value; a counter not (yet) in /stats counts as 0."""
    return env.stat(name) or 0


RBAC_DENIED = b"RBAC: access denied"


# --------------------------------------------------------------------------------------------
# Istio resources
# --------------------------------------------------------------------------------------------


def jwt_rule(issuer: str, **fields: Any) -> dict:
    """One ``jwtRules`` entry; ``fields`` are the Istio field names (``jwksUri``, ``audiences``,
    ``fromHeaders``, ``outputClaimToHeaders``, ...)."""
    return {"issuer": issuer, **fields}


def request_authentication(name: str, *rules: dict, namespace: str = NAMESPACE, **spec: Any) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"jwtRules": list(rules), **spec},
    }


def authorization_policy(name: str, rules: list[dict] | None, action: str = "ALLOW",
                         namespace: str = NAMESPACE, **spec: Any) -> dict:
    body: dict[str, Any] = {"action": action, **spec}
    if rules is not None:
        body["rules"] = rules
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def on_path(path: str, source: dict | None = None, when: list[dict] | None = None) -> dict:
    """An AuthorizationPolicy rule scoped to one exact path, so that one policy can hold a whole
    table of cases side by side: ``to: [{operation: {paths: [path]}}]`` plus ``from``/``when``."""
    rule: dict[str, Any] = {"to": [{"operation": {"paths": [path]}}]}
    if source is not None:
        rule["from"] = [{"source": source}]
    if when is not None:
        rule["when"] = when
    return rule


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> list[dict]:
    """A rule's ``when``: one condition on ``key``."""
    cond: dict[str, Any] = {"key": key}
    if values is not None:
        cond["values"] = values
    if not_values is not None:
        cond["notValues"] = not_values
    return [cond]


def security_config(*resources: dict, **security: Any) -> dict:
    """The pluginConfig: ``resources`` plus the ``security`` settings (camelCase keys)."""
    cfg = plugin_config(*resources)
    if security:
        cfg["security"] = security
    return cfg


# --------------------------------------------------------------------------------------------
# Envoy bootstrap transforms
# --------------------------------------------------------------------------------------------

Transform = Callable[[dict], dict]


def compose(*transforms: Transform | None) -> Transform:
    def apply(cfg: dict) -> dict:
        for t in transforms:
            if t is not None:
                cfg = t(cfg)
        return cfg
    return apply


def as_workload(namespace: str = NAMESPACE, name: str = "demoapp", labels: dict | None = None) -> Transform:
    """Istio node metadata for a sidecar of workload ``name`` in ``namespace``: the policies of
    that namespace (and of the root namespace) are the ones that apply to this proxy."""
    def transform(cfg: dict) -> dict:
        cfg["node"] = {
            "id": f"sidecar~127.0.0.1~{name}-1.{namespace}~{namespace}.svc.cluster.local",
            "cluster": f"{name}.{namespace}",
            "metadata": {"NAMESPACE": namespace, "LABELS": labels or {"app": name}},
        }
        return cfg
    return transform


def _listener(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]


def _hcm(chain: dict) -> dict:
    return next(f for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager")


def without_filter(cfg: dict) -> dict:
    """A reference Envoy: the same bootstrap less the meshrules Wasm filter."""
    for chain in _listener(cfg)["filter_chains"]:
        hcm = _hcm(chain)["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
    return cfg


def echo_connection_facts(cfg: dict) -> dict:
    """Envoy itself writes what it read from the connection into request headers (its own
    formatter, no filter involved), so the echo upstream shows them: ``x-envoy-saw-peer`` (the
    client certificate's URI SAN) and ``x-envoy-saw-sni`` (the requested server name)."""
    for chain in _listener(cfg)["filter_chains"]:
        vhost = _hcm(chain)["typed_config"]["route_config"]["virtual_hosts"][0]
        vhost["request_headers_to_add"] = [
            {"header": {"key": "x-envoy-saw-peer", "value": "%DOWNSTREAM_PEER_URI_SAN%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-envoy-saw-sni", "value": "%REQUESTED_SERVER_NAME%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ]
    return cfg


def envoy_jwt_authn(jwt_rules: list[dict], jwks_cluster: Callable[[str], str],
                    cache_duration: str = "300s", clock_skew_seconds: int = 60) -> dict:
    """Envoy's own jwt_authn filter configured from ``jwtRules`` the way istiod does it (pilot
    security/authn: one provider per rule, ``requires_any`` of them or ``allow_missing``, the
    payload kept in metadata under the issuer). Used as the reference the filter is held to."""
    providers: dict[str, dict] = {}
    for i, rule in enumerate(jwt_rules):
        p: dict[str, Any] = {"issuer": rule["issuer"], "payload_in_metadata": rule["issuer"],
                             "clock_skew_seconds": clock_skew_seconds}
        if rule.get("audiences"):
            p["audiences"] = rule["audiences"]
        if rule.get("jwks"):
            p["local_jwks"] = {"inline_string": rule["jwks"]}
        else:
            uri = rule["jwksUri"]
            p["remote_jwks"] = {
                "http_uri": {"uri": uri, "cluster": jwks_cluster(uri), "timeout": rule.get("timeout", "5s")},
                "cache_duration": cache_duration,
            }
        if rule.get("fromHeaders"):
            p["from_headers"] = [{"name": h["name"], "value_prefix": h.get("prefix", "")} for h in rule["fromHeaders"]]
        if rule.get("fromParams"):
            p["from_params"] = rule["fromParams"]
        if rule.get("fromCookies"):
            p["from_cookies"] = rule["fromCookies"]
        if rule.get("outputPayloadToHeader"):
            p["forward_payload_header"] = rule["outputPayloadToHeader"]
        if rule.get("outputClaimToHeaders"):
            p["claim_to_headers"] = [{"header_name": c["header"], "claim_name": c["claim"]}
                                     for c in rule["outputClaimToHeaders"]]
        p["forward"] = bool(rule.get("forwardOriginalToken", False))
        providers[f"origins-{i}"] = p
    requirements = [{"provider_name": name} for name in providers] + [{"allow_missing": {}}]
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": requirements}}}],
        },
    }


def with_envoy_jwt_authn(jwt_rules: list[dict], jwks_cluster: Callable[[str], str],
                         cache_duration: str = "300s", clock_skew_seconds: int = 60) -> Transform:
    """A reference Envoy: the meshrules filter replaced by Envoy's jwt_authn (see above)."""
    def transform(cfg: dict) -> dict:
        for chain in _listener(cfg)["filter_chains"]:
            hcm = _hcm(chain)["typed_config"]
            hcm["http_filters"] = [envoy_jwt_authn(jwt_rules, jwks_cluster, cache_duration, clock_skew_seconds) if
                                   f["name"] == "envoy.filters.http.wasm" else f for f in hcm["http_filters"]]
        return cfg
    return transform


def _istio_string(v: str, prefix: str = "") -> dict:
    """istio matcher.StringMatcherWithPrefix: ``*`` any (``.+``), ``*x`` suffix (a regex when a
    prefix is prepended), ``x*`` prefix, else exact."""
    if v == "*":
        return {"safe_regex": {"regex": ".+"}}
    if v.startswith("*"):
        return {"suffix": v[1:]} if not prefix else {"safe_regex": {"regex": prefix + ".*" + re.escape(v[1:])}}
    if v.endswith("*"):
        return {"prefix": prefix + v[:-1]}
    return {"exact": prefix + v}


def _peer_matcher(key: str, value: str, policy_namespace: str) -> dict:
    """The string matcher on the peer's URI SAN for one source value (istio authz model
    generator.go); trust domains are meshrules' own: ``spiffe://<td>/...``."""
    if key in ("principals", "source.principal"):
        return _istio_string(value, "spiffe://")
    if key in ("namespaces", "source.namespace"):
        return {"safe_regex": {"regex": f".*/ns/{value.replace('*', '.*')}/.*"}}
    if key in ("serviceAccounts", "source.serviceAccount"):
        ns, _, sa = value.partition("/") if "/" in value else (policy_namespace, "", value)
        return {"safe_regex": {"regex": f"spiffe://.+/ns/{ns}/(.+/|)sa/{sa}(/.+)?"}}
    if key in ("trustDomains", "source.trustDomain"):
        return {"safe_regex": {"regex": f"spiffe://{re.escape(value)}/.*"}}
    raise ValueError(f"the reference RBAC translation has no {key}")


_NOT_FIELDS = {"notPrincipals": "principals", "notNamespaces": "namespaces",
               "notServiceAccounts": "serviceAccounts", "notTrustDomains": "trustDomains"}


def _any_of(items: list[dict], kind: str) -> dict:
    return items[0] if len(items) == 1 else ({"or_rules": {"rules": items}} if kind == "perm"
                                             else {"or_ids": {"ids": items}})


def _istio_path(v: str) -> dict:
    if v == "*":
        return {"safe_regex": {"regex": ".+"}}
    if v.endswith("*"):
        return {"prefix": v[:-1]}
    if v.startswith("*"):
        return {"suffix": v[1:]}
    return {"exact": v}


def envoy_rbac(*policies: dict) -> dict:
    """Envoy's own RBAC filter for ALLOW AuthorizationPolicies on peer identity, translated as
    istiod does (pilot/pkg/security/authz/model): each rule one policy; ``to`` paths and
    ``connection.sni`` become permissions, ``from`` sources and ``source.*`` conditions become
    principals (``authenticated.principal_name`` on the URI SAN, so a plaintext peer matches
    none of them and every ``not`` of them). Only what the mTLS tests use is translated."""
    rbac_policies: dict[str, dict] = {}
    for pol in policies:
        assert pol["spec"].get("action", "ALLOW") == "ALLOW"
        ns = pol["metadata"]["namespace"]
        for i, rule in enumerate(pol["spec"].get("rules", [])):
            perm: list[dict] = []
            for to in rule.get("to", []):
                paths = to["operation"]["paths"]
                perm.append(_any_of([{"url_path": {"path": _istio_path(p)}} for p in paths], "perm"))
            princ: list[dict] = []
            for frm in rule.get("from", []):
                for key, values in frm["source"].items():
                    base = _NOT_FIELDS.get(key, key)
                    ids = _any_of([{"authenticated": {"principal_name": _peer_matcher(base, v, ns)}}
                                   for v in values], "id")
                    princ.append({"not_id": ids} if key in _NOT_FIELDS else ids)
            for cond in rule.get("when", []):
                key = cond["key"]
                for field_name, negate in (("values", False), ("notValues", True)):
                    if not cond.get(field_name):
                        continue
                    if key == "connection.sni":
                        m = _any_of([{"requested_server_name": _istio_string(v)} for v in cond[field_name]], "perm")
                        perm.append({"not_rule": m} if negate else m)
                    else:
                        m = _any_of([{"authenticated": {"principal_name": _peer_matcher(key, v, ns)}}
                                     for v in cond[field_name]], "id")
                        princ.append({"not_id": m} if negate else m)
            rbac_policies[f"ns[{ns}]-policy[{pol['metadata']['name']}]-rule[{i}]"] = {
                "permissions": [{"and_rules": {"rules": perm or [{"any": True}]}}],
                "principals": [{"and_ids": {"ids": princ or [{"any": True}]}}],
            }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": rbac_policies},
        },
    }


def with_envoy_rbac(*policies: dict) -> Transform:
    """A reference Envoy: the meshrules filter replaced by Envoy's RBAC (see above)."""
    def transform(cfg: dict) -> dict:
        for chain in _listener(cfg)["filter_chains"]:
            hcm = _hcm(chain)["typed_config"]
            hcm["http_filters"] = [envoy_rbac(*policies) if f["name"] == "envoy.filters.http.wasm" else f
                                   for f in hcm["http_filters"]]
        return cfg
    return transform


# --------------------------------------------------------------------------------------------
# Signing keys and tokens
# --------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SigningKey:
    """A key made in the test: ``private`` signs (PyJWT), ``jwk`` is its public JWK."""

    kid: str
    alg: str
    private: Any
    jwk: dict

    @property
    def verify_key(self) -> Any:
        return self.private if self.alg.startswith("HS") else self.private.public_key()


def _public_jwk(alg: str, public_key: Any) -> dict:
    family = pyjwt.algorithms.get_default_algorithms()[alg]
    return json.loads(family.to_jwk(public_key))


def rsa_key(kid: str, alg: str = "RS256", bits: int = 2048) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = {**_public_jwk(alg, private.public_key()), "kid": kid, "alg": alg, "use": "sig"}
    return SigningKey(kid, alg, private, jwk)


def ec_key(kid: str, alg: str = "ES256") -> SigningKey:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
    private = ec.generate_private_key(curve)
    jwk = {**_public_jwk(alg, private.public_key()), "kid": kid, "alg": alg, "use": "sig"}
    return SigningKey(kid, alg, private, jwk)


def ed25519_key(kid: str) -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = {**_public_jwk("EdDSA", private.public_key()), "kid": kid, "alg": "EdDSA", "use": "sig"}
    return SigningKey(kid, "EdDSA", private, jwk)


def hmac_key(kid: str, alg: str = "HS256") -> SigningKey:
    secret = os.urandom(32)
    jwk = {"kty": "oct", "k": b64url(secret), "kid": kid, "alg": alg}
    return SigningKey(kid, alg, secret, jwk)


def jwks(*keys: SigningKey) -> dict:
    return {"keys": [k.jwk for k in keys]}


def claims(iss: str, sub: str, aud: str | list[str] | None = None, exp_in: int | None = 3600,
           nbf_in: int | None = None, **extra: Any) -> dict:
    """A payload: ``exp``/``nbf`` relative to now in seconds (None leaves them out)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": iss, "sub": sub, "iat": now}
    if aud is not None:
        body["aud"] = aud
    if exp_in is not None:
        body["exp"] = now + exp_in
    if nbf_in is not None:
        body["nbf"] = now + nbf_in
    body.update(extra)
    return body


def sign(key: SigningKey, payload: dict, kid: str | None = "", **headers: Any) -> str:
    """A JWS compact token. ``kid=""`` uses the key's own kid; ``kid=None`` leaves it out."""
    hdrs = dict(headers)
    if kid is not None:
        hdrs["kid"] = kid or key.kid
    return pyjwt.encode(payload, key.private, algorithm=key.alg, headers=hdrs)


def unsigned(payload: dict, signature: str = "", **header: Any) -> str:
    """``alg: none`` (or any header) with a hand-written signature part."""
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT', **header})}.{b64url_json(payload)}.{signature}"


def with_payload(token: str, payload: dict) -> str:
    """The token with its payload swapped and the original signature kept (tampering)."""
    head, _, sig = token.split(".")
    return f"{head}.{b64url_json(payload)}.{sig}"


def payload_segment(token: str) -> str:
    return token.split(".")[1]


def decode(key: SigningKey, token: str, **options: Any) -> dict:
    """PyJWT's verification of a token made here (proves the fixture, not the filter)."""
    return pyjwt.decode(token, key.verify_key, algorithms=[key.alg], **options)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def realm(host: str, path: str, scheme: str = "http") -> str:
    """Envoy's ``www-authenticate`` for a rejected token: jwt_authn filter.cc builds the realm
    with Http::Utility::buildOriginalUri(headers, 256): ``:scheme://:authority`` plus the path
    (query included) cut to 256 characters."""
    return f'Bearer realm="{scheme}://{host}{path[:256]}", error="invalid_token"'


# --------------------------------------------------------------------------------------------
# The JWKS server process
# --------------------------------------------------------------------------------------------


class JwksServer:
    """tests/jwks_server.py as a process: serves ``path`` from a JSON file the test rewrites;
    :meth:`stop` and :meth:`start` take it down and bring it back on the same port."""

    def __init__(self, workdir: Path, keys: Iterable[SigningKey] = (), path: str = "/keys"):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.file = workdir / "jwks.json"
        self.log_path = workdir / "jwks.log"
        self.path = path
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.set_keys(*keys)

    # --- content --------------------------------------------------------------------------

    def set_keys(self, *keys: SigningKey) -> None:
        self.write(json.dumps(jwks(*keys)).encode())

    def write(self, body: bytes) -> None:
        """Replaces the served body atomically (a fetch never sees half a file)."""
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(self.file)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "JwksServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(JWKS_SCRIPT), "--file", str(self.file), "--port", str(self.port),
             "--path", self.path],
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline, buf = time.monotonic() + timeout, b""
        while time.monotonic() < deadline:
            buf += self.proc.stdout.read() or b""
            if b"\n" in buf:
                self.port = json.loads(buf.split(b"\n", 1)[0])["port"]
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"JWKS server did not start; log:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc)
            if self.proc.stdout:
                self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- knobs and observation -----------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def control(self, **knobs: Any) -> dict:
        """``status=500`` (None: 200), ``delay_ms=1000``."""
        return self._call("POST", "/__control", knobs)

    def fetches(self) -> int:
        return self._call("GET", "/__fetches")["count"]

    def last_fetch(self) -> dict | None:
        return self._call("GET", "/__fetches")["last"]

    def get_keys(self) -> tuple[int, bytes]:
        """A plain client's ``GET path`` (counted as a fetch)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Calls ``check`` until it returns something truthy or ``timeout`` passes; returns the last
    result (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)
        result = check()
    return result


# --------------------------------------------------------------------------------------------
# A test CA, SPIFFE certificates, TLS on the listener, an HTTPS client
# --------------------------------------------------------------------------------------------


def spiffe(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass
class CertFiles:
    cert: Path
    key: Path
    uri: str | None = None


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    """A self-signed CA that issues a server certificate and SPIFFE client certificates, all
    written as PEM files under ``workdir``."""

    __test__ = False  # not a pytest test class

    def __init__(self, workdir: Path, name: str = "meshrules test CA"):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, filename: str, common_name: str, sans: list[x509.GeneralName]) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = self.workdir / f"{filename}.pem", self.workdir / f"{filename}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        uri = next((s.value for s in sans if isinstance(s, x509.UniformResourceIdentifier)), None)
        return CertFiles(cert_path, key_path, uri)

    def server(self, dns: Iterable[str] = ("localhost", "*.mesh.test"),
               ips: Iterable[str] = ("127.0.0.1",)) -> CertFiles:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        return self._issue("server", "meshrules-test-server", sans)

    def client(self, uri: str, filename: str | None = None) -> CertFiles:
        name = filename or uri.removeprefix("spiffe://").replace("/", "_")
        return self.peer([uri], common_name=uri.rsplit("/", 1)[-1], filename=name)

    def peer(self, uris: Iterable[str], dns: Iterable[str] = (), common_name: str = "peer",
             filename: str | None = None) -> CertFiles:
        """A client certificate with these URI SANs and DNS SANs, in this order (Envoy's RBAC
        tries each; its ``uri_san_peer_certificate`` attribute holds only the first)."""
        uris, dns = list(uris), list(dns)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        name = filename or "peer-" + format(abs(hash((tuple(uris), tuple(dns), common_name))), "x")
        return self._issue(name, common_name, sans)


def tls_listener(ca: TestCA, server: CertFiles, require_client_certificate: bool = True,
                 permissive: bool = False) -> Transform:
    """Puts a DownstreamTlsContext on the listener's filter chain (TLS 1.2+, the client must
    present a certificate of ``ca``), with the TLS inspector in front so the connection's SNI is
    known. ``permissive`` adds a second chain for plaintext on the same port, picked by the
    inspector's transport protocol, as Istio's PERMISSIVE mode does."""
    def transform(cfg: dict) -> dict:
        listener = _listener(cfg)
        plain = listener["filter_chains"][0]
        tls_chain = copy.deepcopy(plain)
        tls_chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": require_client_certificate,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": str(server.cert)},
                        "private_key": {"filename": str(server.key)},
                    }],
                    "validation_context": {"trusted_ca": {"filename": str(ca.cert_path)}},
                },
            },
        }
        tls_chain["filter_chain_match"] = {"transport_protocol": "tls"}
        tls_chain["name"] = "mtls"
        listener["listener_filters"] = [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
        }]
        chains = [tls_chain]
        if permissive:
            plain["filter_chain_match"] = {"transport_protocol": "raw_buffer"}
            plain["name"] = "plaintext"
            chains.append(plain)
        listener["filter_chains"] = chains
        return cfg
    return transform


def client_context(ca: TestCA, cert: CertFiles | None) -> ssl.SSLContext:
    """Trusts the test CA (the chain is verified; host names are not, SNI is free to vary) and
    presents ``cert`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca.cert_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


class SniHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with a chosen SNI (None: none sent)."""

    def __init__(self, port: int, context: ssl.SSLContext, sni: str | None, timeout: float = 10.0):
        super().__init__("127.0.0.1", port, timeout=timeout, context=context)
        self.sni = sni
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.sni)


def https_request(env: Envoy, ca: TestCA, cert: CertFiles | None, path: str = "/",
                  host: str = "demoapp", sni: str | None = "localhost", method: str = "GET",
                  headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    """One HTTPS request through Envoy's listener presenting ``cert`` (None: no certificate)."""
    conn = SniHTTPSConnection(env.port, client_context(ca, cert), sni, timeout)
    try:
        return request(env, method, path, host, headers, timeout=timeout, conn=conn)
    finally:
        conn.close()


# Ways a refused TLS client sees the refusal: a handshake alert, or (TLS 1.3, where the server
# checks the client certificate after the client thinks the handshake is done) a reset or close
# on the first read.
TLS_REFUSED = (ssl.SSLError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
               http.client.RemoteDisconnected)
