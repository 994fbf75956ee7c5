"""JWT differential suite: every vector of ``tests/fixtures/peer/jwt-vectors.json`` (tokens and
key sets from google/jwt_verify_lib's and Envoy's jwt_authn tests, plus hostile tokens; see the
fixture's README) goes to Envoy's own jwt_authn, configured as istiod writes it for a
RequestAuthentication with the vector's issuer(s), audiences and inline JWKS, and to meshrules
with that RequestAuthentication, request by request, in ONE Envoy. The two must agree on the
outcome (accepted, refused with 401/403, or the key set refused at load) and on what they say
(Envoy's status text as the 401/403 body, or the status of the refused key set).

meshrules answers twice, once per signature verifier (``security.signatureVerifier``): ``envoy``,
the default, where Envoy's ``verify_signature`` foreign function (BoringSSL) checks RS* and ES*,
and ``wasm``, the filter's own RustCrypto verifiers for every algorithm. Both must agree with
jwt_authn on every vector, and the filter's counters, read around each request, show which
verifier checked its signatures: Envoy's for RS*/ES* with the default, never with ``wasm``.

One Envoy carries three listeners per vector group (the JWKS, issuers, audiences and clock skew
a vector is checked under): one with jwt_authn, one per meshrules verifier. Each listener takes its HTTP
filter over ECDS from its own file, so a configuration one side refuses (Envoy: "Provider ... in
jwt_authn config has invalid local jwks: <status>"; meshrules: "config rejected: ...jwks:
<status>") fails that filter only, and the refusal is read from Envoy's log.
"""

from __future__ import annotations

import base64
import collections
import copy
import http.client
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import jwt as pyjwt
import pytest

from conftest import (MESHRULES_WASM, PASSTHROUGH, REPO, WASM_FILTER_TYPE, bootstrap, plugin_config,
                      require_binaries, tail)
from security import envoy_jwt_authn, jwt_rule, request_authentication, security_config

FIXTURE = REPO / "tests" / "fixtures" / "peer" / "jwt-vectors.json"
DATA = json.loads(FIXTURE.read_text())
VECTORS = DATA["vectors"]
GROUPS = DATA["groups"]
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
REFUSED = "refused at load"

# Vectors that need a change outside this branch's files. strict: they fail the suite once
# they pass, so the mark is removed when the change lands.


def clock_skew(group: dict, now: int) -> int:
    """Seconds of skew, the same on both sides: Envoy's default 60, or big enough to reach the
    peer test's "verify at time 1" (``to-epoch``), or as given."""
    skew = group["clock_skew_s"]
    if skew is None:
        return 60
    if skew == "to-epoch":
        return now + 86400
    return int(skew)


def jwt_rules(group: dict) -> list[dict]:
    jwks = group["text"] if "text" in group else DATA["jwks"][group["jwks"]]["text"]
    return [jwt_rule(iss, jwks=jwks, **({"audiences": group["audiences"]} if group["audiences"] else {}))
            for iss in group["issuers"]]


def envoy_filter(gid: str, group: dict, skew: int) -> dict:
    """jwt_authn as istiod writes it (security.envoy_jwt_authn), providers named per group so
    that Envoy's log says whose key set it refused. ``jwks: ""`` stays an empty inline string."""
    rules = jwt_rules(group)
    # security.envoy_jwt_authn reads an empty jwks as none (as Istio does); the vector means
    # Envoy's local_jwks with an empty inline string.
    placeholder = [dict(r, jwks=r["jwks"] or "-") for r in rules]
    f = envoy_jwt_authn(placeholder, lambda uri: "", clock_skew_seconds=skew)["typed_config"]
    for rule, p in zip(rules, f["providers"].values()):
        p["local_jwks"] = {"inline_string": rule["jwks"]}
    renamed = {f"{gid}-{name}": p for name, p in f["providers"].items()}
    f["providers"] = renamed
    reqs = f["rules"][0]["requires"]["requires_any"]["requirements"]
    for r in reqs:
        if "provider_name" in r:
            r["provider_name"] = f"{gid}-{r['provider_name']}"
    return f


def meshrules_filter(gid: str, group: dict, skew: int, verifier: str) -> dict:
    plugin = security_config(request_authentication("jwt", *jwt_rules(group)), clockSkew=f"{skew}s",
                             signatureVerifier=verifier)
    return {
        "name": f"meshrules-{verifier}-{gid}",
        "root_id": "meshrules",
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(plugin)},
        "vm_config": {"vm_id": "meshrules", "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(MESHRULES_WASM)}}},
    }


# Listener name prefix: the meshrules signature verifier (None: jwt_authn).
SIDES = {"envoy": None, "meshrules": "envoy", "meshrules-wasm": "wasm"}
STAT_SIGNATURES = {"envoy": "wasmcustom.meshrules_jwt_signatures_envoy",
                   "wasm": "wasmcustom.meshrules_jwt_signatures_wasm"}


def listener_name(side: str, gid: str) -> str:
    return f"{side}-{gid}"


def build_bootstrap(workdir: Path, passthrough_port: int, now: int, groups: dict | None = None) -> dict:
    """Two listeners per group, delivered by LDS from one file, as istiod delivers listeners:
    Envoy adds each listener on its own and refuses one whose filter does not load
    ("Error adding/updating listener(s) <name>: <why>"), keeping the others."""
    base = bootstrap(plugin_config(), {PASSTHROUGH: passthrough_port}, 0, 0, MESHRULES_WASM)
    template = base["static_resources"]["listeners"][0]
    listeners = []
    for gid, group in (GROUPS if groups is None else groups).items():
        skew = clock_skew(group, now)
        for side, verifier in SIDES.items():
            if verifier is None:
                f = {"name": "envoy.filters.http.jwt_authn",
                     "typed_config": {"@type": JWT_AUTHN_TYPE, **envoy_filter(gid, group, skew)}}
            else:
                f = {"name": "envoy.filters.http.wasm",
                     "typed_config": {"@type": WASM_FILTER_TYPE,
                                      "config": meshrules_filter(gid, group, skew, verifier)}}
            lst = copy.deepcopy(template)
            lst["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
            lst["name"] = listener_name(side, gid)
            hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["stat_prefix"] = lst["name"]
            # Tokens of 64 KB (hostile/oversize-64KB) must reach the filters.
            hcm["max_request_headers_kb"] = 96
            hcm["http_filters"][0] = f
            listeners.append(lst)
    lds = workdir / "lds.json"
    lds.write_text(json.dumps({"resources": listeners}))
    base["static_resources"]["listeners"] = []
    base["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(lds)}}}
    base["node"] = {"id": "jwt-vectors", "cluster": "jwt-vectors"}
    return base


def mint(spec: dict, now: int) -> str:
    """A jwt_time vector's token, signed now with the key the peer test carries."""
    def at(v):
        if isinstance(v, str) and v.startswith("now"):
            return now + int(v[3:])
        return v
    claims = {k: at(v) for k, v in spec["claims"].items()}
    header = dict(spec["header"])
    alg = header.pop("alg")
    return pyjwt.encode(claims, DATA["keys"][spec["key"]]["pem"], algorithm=alg, headers=header)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "accepted", "rejected" or REFUSED
    status: int
    text: str  # the 401/403 body, or the refused key set's status

    def __str__(self) -> str:
        return f"{self.kind} {self.status} {self.text!r}"


def send(port: int, vector: dict, now: int) -> tuple[int, bytes, dict]:
    token = vector.get("token") or (mint(vector["mint"], now) if "mint" in vector else None)
    req = vector.get("request", {})
    path = "/jwt"
    if "query_token" in req:
        path += "?access_token=" + req["query_token"]
    headers: list[tuple[str, str]] = [("Host", "demoapp")]
    if "authorization_list" in req:
        headers += [("Authorization", v) for v in req["authorization_list"]]
    elif "authorization" in req:
        headers.append(("Authorization", req["authorization"]))
    elif token:
        headers.append(("Authorization", f"Bearer {token}"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def refusals(log: str, raw: bool = False) -> dict[str, str]:
    """The listeners Envoy refused at load, each with the key set's status as its side says it:
    "lds: listener 'envoy-<gid>' config rejected: Provider ... has invalid local jwks: S", and for
    meshrules its own "config rejected: ...jwks: S" lines logged just before "lds: listener
    'meshrules-<gid>' config rejected: Unable to create Wasm plugin ..." (Envoy configures the
    listeners one by one on the main thread)."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in log.splitlines():
        m = re.search(r"meshrules: config rejected: \S+\.jwks: (.*)$", line)
        if m:
            # Envoy says only the status; meshrules adds where a syntax error is.
            text = m.group(1).strip()
            pending.append(text if raw else re.sub(r": line \d+ column \d+: .*$", "", text))
            continue
        m = re.search(r"lds: listener '((?:envoy|meshrules)-[\w-]+)' config rejected: (.*)$", line)
        if not m:
            continue
        name, why = m.groups()
        if name.startswith("envoy-"):
            status = re.search(r"has invalid local jwks: (.*)$", why)
            out[name] = status.group(1).strip() if status else why
        else:
            out[name] = "; ".join(pending) or why
        pending = []
    return out


def outcome(status: int, body: bytes, headers: dict) -> Outcome:
    if status == 200 and headers.get("x-served-by") == PASSTHROUGH:
        return Outcome("accepted", 200, "")
    return Outcome("rejected", status, body.decode(errors="replace"))


@dataclass(frozen=True)
class Checked:
    """Signatures one meshrules request had checked, by Envoy and by the filter itself."""
    envoy: int
    wasm: int


def signature_counts(env) -> Checked:
    stats = env.stats("meshrules_jwt_signatures_")
    return Checked(*(stats.get(STAT_SIGNATURES[k], 0) for k in ("envoy", "wasm")))


@pytest.fixture(scope="module")
def run(tmp_path_factory, module_envoy_launcher, upstreams):
    """Every vector through the three listeners of its group: ({vector id: (envoy, meshrules,
    meshrules-wasm)}, {vector id: {meshrules side: Checked}})."""
    require_binaries()
    workdir = tmp_path_factory.mktemp("jwt-vectors")
    now = int(time.time())
    cfg = build_bootstrap(workdir, upstreams.port(PASSTHROUGH), now)
    start = time.monotonic()
    env = module_envoy_launcher.start_bootstrap(cfg, workdir, listener_name("envoy", next(iter(GROUPS))))
    listeners = json.loads(env.admin("/listeners?format=json")[1])["listener_statuses"]
    ports = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in listeners}
    refused = refusals(env.log_text())
    # Every listener is serving or refused, with its reason.
    missing = {listener_name(side, gid) for gid in GROUPS for side in SIDES} - set(ports)
    assert missing == set(refused), (sorted(missing ^ set(refused)), tail(env.log_text()))
    out, checked = {}, {}
    counted = signature_counts(env)
    for v in VECTORS:
        answers, checked[v["id"]] = [], {}
        for side, verifier in SIDES.items():
            name = listener_name(side, v["group"])
            if name in refused:
                answers.append(Outcome(REFUSED, 0, refused[name]))
                continue
            status, body, headers = send(ports[name], v, int(time.time()))
            answers.append(outcome(status, body, headers))
            if verifier is not None:
                before, counted = counted, signature_counts(env)
                checked[v["id"]][side] = Checked(counted.envoy - before.envoy, counted.wasm - before.wasm)
        out[v["id"]] = tuple(answers)
    elapsed = time.monotonic() - start
    counts = collections.Counter()
    for e, *ms in out.values():
        for side, m in zip(list(SIDES)[1:], ms):
            counts[side, "outcome"] += e.kind == m.kind
            counts[side, "body"] += e == m or (e.kind == m.kind == "accepted")
    print(f"\njwt vectors: {len(out)} vectors, {elapsed:.1f}s with Envoy's start; agree on outcome, on body: "
          + ", ".join(f"{side} {counts[side, 'outcome']}, {counts[side, 'body']}" for side in list(SIDES)[1:]))
    return out, checked


@pytest.fixture(scope="module")
def results(run):
    return run[0]


def vector_param(v: dict):
    return pytest.param(v, id=v["id"])


@pytest.mark.parametrize("vector", [vector_param(v) for v in VECTORS])
def test_vector_gets_the_same_answer_from_meshrules_as_from_envoy_jwt_authn(results, vector):
    envoy, meshrules, _ = results[vector["id"]]
    assert meshrules == envoy, f"{vector['id']} ({vector.get('note', vector['how'])}): " \
                               f"envoy {envoy}, meshrules {meshrules}"


@pytest.mark.parametrize("vector", [vector_param(v) for v in VECTORS])
def test_vector_gets_the_same_answer_with_the_filters_own_signature_verifier(results, vector):
    envoy, _, wasm = results[vector["id"]]
    assert wasm == envoy, f"{vector['id']} ({vector.get('note', vector['how'])}): " \
                          f"envoy {envoy}, meshrules with signatureVerifier wasm {wasm}"


def token_alg(vector: dict) -> str | None:
    """The alg of the vector's token header, if it has a readable one."""
    if "mint" in vector:
        return vector["mint"]["header"]["alg"]
    token = vector.get("token") or ""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    except ValueError:
        return None
    alg = header.get("alg") if isinstance(header, dict) else None
    return alg if isinstance(alg, str) else None


def test_envoys_verify_signature_checks_rs_and_es_signatures_and_wasm_checks_none(run):
    results, checked = run
    verified_by_envoy = verified_in_wasm = 0
    for vid, sides in checked.items():
        default, wasm = sides.get("meshrules"), sides.get("meshrules-wasm")
        if wasm is not None:
            assert wasm.envoy == 0, f"{vid}: signatureVerifier wasm asked Envoy: {wasm}"
        if default is None or wasm is None:
            continue
        # The same keys are tried on both sides (a token cache hit tries none on either).
        assert default.envoy + default.wasm == wasm.wasm, f"{vid}: {default} vs {wasm}"
        vector = next(v for v in VECTORS if v["id"] == vid)
        alg = token_alg(vector) or ""
        if results[vid][1].kind == "accepted" and default.envoy + default.wasm > 0:
            if re.fullmatch(r"(RS|ES)(256|384|512)", alg):
                # The signature that let it in was Envoy's answer.
                assert default.envoy >= 1, f"{vid} ({alg}): {default}"
                verified_by_envoy += 1
            elif re.fullmatch(r"(PS|HS)(256|384|512)|EdDSA", alg):
                # Not Envoy's to check (a header this test cannot read is left out).
                assert default.envoy == 0, f"{vid} ({alg}): {default}"
                verified_in_wasm += 1
    print(f"\nsignatures: {verified_by_envoy} accepted RS*/ES* vectors checked by Envoy, "
          f"{verified_in_wasm} accepted PS*/EdDSA/HS* vectors by the filter")
    # RS*/ES* and PS*/EdDSA/HS* tokens among the accepted ones.
    assert verified_by_envoy >= 40 and verified_in_wasm >= 20, (verified_by_envoy, verified_in_wasm)


def test_the_suite_covers_every_vector_and_outcome(results):
    assert len(results) == len(VECTORS) == len({v["id"] for v in VECTORS})
    kinds = collections.Counter(e.kind for e, *_ in results.values())
    # Envoy accepts some, refuses some tokens and refuses some key sets at load: the suite
    # exercises all three, so agreement is not agreement on one answer.
    assert kinds["accepted"] >= 50 and kinds["rejected"] >= 100 and kinds[REFUSED] >= 20, kinds


# --------------------------------------------------------------------------------------------
# Disagreements found by the suite and fixed, kept by name (each with the vectors that showed
# it; the outcome Envoy gives is asserted too, so a change on both sides is noticed)
# --------------------------------------------------------------------------------------------


def both(results, vid: str) -> Outcome:
    envoy, *meshrules = results[vid]
    assert meshrules == [envoy, envoy], f"{vid}: envoy {envoy}, meshrules {meshrules}"
    return envoy


def test_es512_tokens_verify_with_p521_keys_like_envoy(results):
    # Before: 401 "Jwt header [alg] is not supported", and a P-521 JWK refused at load.
    for vid in ("verify_jwk_ec/KidES512OK/as-is", "verify_pem_ec/VerifyPKCSTestES512.OKPem"):
        assert both(results, vid).kind == "accepted", vid
    for vid in ("verify_jwk_ec/KidES512OK/fuzz-bitflip", "verify_jwk_ec/KidES512OK/fuzz-truncate"):
        assert both(results, vid) == Outcome("rejected", 401, "Jwt verification fails"), vid


def test_a_jwks_with_a_p521_key_loads_like_envoy(results):
    assert both(results, "jwks/JwksECMatchAlgES512CrvP521/key0").kind != REFUSED


def test_google_x509_certificate_map_jwks_verifies_like_envoy(results):
    # Before: refused at load ("Jwks does not have [keys] field").
    assert both(results, "verify_x509/RealToken/skew").kind == "accepted"
    assert both(results, "verify_x509/RealToken/skew/fuzz-bitflip") == \
        Outcome("rejected", 401, "Jwt verification fails")


def test_x509_certificate_maps_envoy_refuses_are_refused_alike(results):
    for vid in ("jwks/JwksX509WrongPubkey/probe", "jwks/JwksX509NotSuffix/probe", "jwks/JwksX509EmptyKid/probe"):
        assert both(results, vid).kind == REFUSED, vid


def test_jwks_with_trailing_commas_loads_like_envoy(results):
    # The peers' own test JWKS end their key lists with "},": protobuf's parser takes that.
    # Before: refused at load ("Jwks is an invalid JSON").
    assert "},\n" in DATA["jwks"]["envoy:PublicKey"]["text"].replace(" ", "")
    assert both(results, "verify_jwk_hmac/CorrectKidHS512OK/as-is").kind != REFUSED
    assert any(both(results, v["id"]).kind == "accepted" for v in VECTORS if v["group"] in
               {g for g, grp in GROUPS.items() if grp["jwks"] == "envoy:PublicKey"})


def test_empty_jwks_loads_and_refuses_tokens_like_envoy(results):
    # Before: refused at load ("jwks or jwksUri is required").
    vid = next(v["id"] for v in VECTORS if GROUPS[v["group"]]["jwks"] == "jwks_test:EmptyJwks")
    assert both(results, vid) == Outcome("rejected", 401, "Jwks doesn't have any valid public key")


def test_base64url_with_nonzero_unused_bits_is_read_like_envoy(results):
    # Before: "Jwks EC [x] or [y] field is an invalid Base64." where Envoy (absl) decodes it.
    assert both(results, "jwks/JwksECWrongXY/probe") == \
        Outcome(REFUSED, 0, "Jwks EC [x] and [y] fields have a parse error.")



# --------------------------------------------------------------------------------------------
# JWKS JSON syntax: what protobuf's parser (Envoy 1.40) loads, found by trying it in real Envoy
# --------------------------------------------------------------------------------------------

SYNTAX_ISSUER = "https://syntax.test"
SYNTAX_SECRET = b"meshrules-syntax-test-secret-32b"
SYNTAX_KEY = '{"kty":"oct","alg":"HS256","kid":"s","k":"%s"}' % \
    pyjwt.utils.base64url_encode(SYNTAX_SECRET).decode()
SYNTAX_KEY_COMMA = SYNTAX_KEY[:-1] + ",}"

# name: (JWKS text, what meshrules does compared with Envoy)
SYNTAX = {
    "plain": ('{"keys":[%s]}' % SYNTAX_KEY, "same"),
    "comma-after-last-key": ('{"keys":[%s,]}' % SYNTAX_KEY, "same"),
    "comma-after-last-key-with-spaces": ('{"keys":[%s ,\n ]}' % SYNTAX_KEY, "same"),
    "comma-after-last-member": ('{"keys":[%s],\n}' % SYNTAX_KEY, "same"),
    "comma-after-last-member-of-a-key": ('{"keys":[%s]}' % SYNTAX_KEY_COMMA, "same"),
    "two-commas": ('{"keys":[%s,,]}' % SYNTAX_KEY, "same"),
    "comma-first-in-array": ('{"keys":[,%s]}' % SYNTAX_KEY, "same"),
    "comma-first-in-object": ('{,"keys":[%s]}' % SYNTAX_KEY, "same"),
    "only-a-comma": ('{"keys":[,]}', "same"),
    "missing-comma": ('{"keys":[%s %s]}' % (SYNTAX_KEY, SYNTAX_KEY), "same"),
    "text-after-the-set": ('{"keys":[%s]} x' % SYNTAX_KEY, "same"),
    "comment": ('{"keys":[%s]} // c' % SYNTAX_KEY, "same"),
    "byte-order-mark": ('\ufeff{"keys":[%s]}' % SYNTAX_KEY, "same"),
    "nan": ('{"keys":[%s],"x":NaN}' % SYNTAX_KEY, "same"),
    "number-out-of-range": ('{"keys":[%s],"x":1e999}' % SYNTAX_KEY, "same"),
    "lone-surrogate": ('{"keys":[%s],"x":"\\ud800"}' % SYNTAX_KEY, "same"),
    "only-whitespace": ("  \n", "same"),
    "null": ("null", "same"),
    "top-level-array": ("[%s]" % SYNTAX_KEY, "same"),
    "empty": ("", "same"),
    # protobuf's legacy syntax: Envoy loads these, meshrules refuses them with line and column
    # (README: stricter on purpose).
    "single-quoted-names": ("{'keys':[%s]}" % SYNTAX_KEY, "stricter"),
    "unquoted-names": ("{keys:[%s]}" % SYNTAX_KEY, "stricter"),
    "tab-inside-a-string": ('{"keys":[%s],"x":"a\tb"}' % SYNTAX_KEY, "stricter"),
    # protobuf refuses a member twice ("Jwks is an invalid JSON"); serde_json keeps the last.
    "keys-twice": ('{"keys":[],"keys":[%s]}' % SYNTAX_KEY, "duplicate"),
    "member-twice-in-a-key": (SYNTAX_KEY.replace('"kid":"s"', '"kid":"s","kid":"s"'), "duplicate"),
}


@pytest.fixture(scope="module")
def syntax_results(tmp_path_factory, module_envoy_launcher, upstreams):
    require_binaries()
    workdir = tmp_path_factory.mktemp("jwks-syntax")
    groups = {f"s-{name}": {"text": text, "issuers": [SYNTAX_ISSUER], "audiences": [], "clock_skew_s": None}
              for name, (text, _) in SYNTAX.items()}
    cfg = build_bootstrap(workdir, upstreams.port(PASSTHROUGH), int(time.time()), groups)
    env = module_envoy_launcher.start_bootstrap(cfg, workdir, listener_name("envoy", "s-plain"))
    listeners = json.loads(env.admin("/listeners?format=json")[1])["listener_statuses"]
    ports = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in listeners}
    log = env.log_text()
    refused, raw = refusals(log), refusals(log, raw=True)
    token = pyjwt.encode({"iss": SYNTAX_ISSUER, "sub": "s", "exp": int(time.time()) + 3600}, SYNTAX_SECRET,
                         algorithm="HS256", headers={"kid": "s"})
    out = {}
    for gid in groups:
        pair = []
        for side in ("envoy", "meshrules"):
            name = listener_name(side, gid)
            if name in refused:
                pair.append(Outcome(REFUSED, 0, refused[name]))
            else:
                pair.append(outcome(*send(ports[name], {"token": token}, 0)))
        out[gid.removeprefix("s-")] = (*pair, raw.get(listener_name("meshrules", gid)))
    return out


@pytest.mark.parametrize("name", [n for n in SYNTAX if SYNTAX[n][1] != "stricter"])
def test_jwks_json_syntax_is_read_as_envoys_protobuf_parser_reads_it(syntax_results, name):
    envoy, meshrules, _ = syntax_results[name]
    assert meshrules == envoy, f"{name}: envoy {envoy}, meshrules {meshrules}"


def test_jwks_json_syntax_envoy_reads_loads_with_trailing_commas_and_refuses_the_rest(syntax_results):
    # What real Envoy does, so that the cases above compare against something.
    kinds = {n: syntax_results[n][0].kind for n in SYNTAX}
    assert {n for n, k in kinds.items() if k == "accepted"} == {
        "plain", "comma-after-last-key", "comma-after-last-key-with-spaces", "comma-after-last-member",
        "comma-after-last-member-of-a-key", "single-quoted-names", "unquoted-names", "tab-inside-a-string"}
    assert syntax_results["empty"][0] == Outcome("rejected", 401, "Jwks doesn't have any valid public key")
    assert syntax_results["null"][0] == Outcome(REFUSED, 0, "Jwks does not have [keys] field")
    assert syntax_results["keys-twice"][0] == Outcome(REFUSED, 0, "Jwks is an invalid JSON")


@pytest.mark.parametrize("name", [n for n in SYNTAX if SYNTAX[n][1] == "stricter"])
def test_protobuf_legacy_json_that_envoy_loads_is_refused_with_line_and_column(syntax_results, name):
    envoy, meshrules, raw = syntax_results[name]
    assert envoy.kind == "accepted", envoy
    assert meshrules == Outcome(REFUSED, 0, "Jwks is an invalid JSON"), meshrules
    assert re.fullmatch(r"Jwks is an invalid JSON: line \d+ column \d+: .+", raw or ""), raw
