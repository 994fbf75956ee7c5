"""DestinationRule traffic policies in a plain Envoy: `meshrules bundle --output envoy` writes
them into the clusters as istiod's cluster builder does, and real Envoy 1.40 enforces them on
real upstreams. Each cluster here has several endpoints, each a tests/upstream.py process of its
own on a port the kernel picked; an answer's ``x-served-by`` names the endpoint.

Statistical checks state their sample size and tolerance; timings are checked only as wide
bounds around deliberate delays; every loop is bounded in requests and time."""

from __future__ import annotations

import http.client
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    MESHRULES_WASM, REPO, EnvoyLauncher, Upstreams, binomial_tolerance, envoy_validate, meshrules,
    request,
)

HOST = "shop"
# The cluster of destination shop:80 in namespace app.
CLUSTER = "outbound|80||shop.app.svc.cluster.local"
HASHED_BY_COOKIE = "outbound|80|cookie|shop.app.svc.cluster.local"


def rules(traffic_policy: dict, retries: bool = True, subsets: list | None = None) -> str:
    """A VirtualService for `shop` (to subset `cookie` when ``x-hash: cookie``, else to the
    service) and its DestinationRule with ``traffic_policy``. ``retries=False`` turns off
    Istio's default retries, which would hide an endpoint's 503 behind another's 200."""
    route: dict = {"route": [{"destination": {"host": HOST, "port": {"number": 80}}}]}
    if not retries:
        route["retries"] = {"attempts": 0}
    http = [route]
    if subsets:
        http.insert(0, {"match": [{"headers": {"x-hash": {"exact": "cookie"}}}],
                        "route": [{"destination": {"host": HOST, "subset": "cookie", "port": {"number": 80}}}]})
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": HOST, "namespace": "app"}, "spec": {"hosts": [HOST], "http": http}}
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "metadata": {"name": HOST, "namespace": "app"},
          "spec": {"host": HOST, "trafficPolicy": traffic_policy, **({"subsets": subsets} if subsets else {})}}
    return yaml.safe_dump_all([vs, dr])


class Endpoints:
    """``n`` upstream processes (``ep-0`` ...), one listener each, on kernel-chosen ports."""

    def __init__(self, n: int, workdir: Path):
        self.names = [f"ep-{i}" for i in range(n)]
        self.processes = [Upstreams([name], workdir / f"{name}.log") for name in self.names]

    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{p.port(name)}" for p, name in zip(self.processes, self.names)]

    def name_of(self, address: str) -> str:
        return self.names[self.addresses().index(address)]

    def stop(self) -> None:
        for p in self.processes:
            p.stop()


@pytest.fixture
def endpoints(tmp_path):
    started: list[Endpoints] = []

    def start(n: int) -> Endpoints:
        started.append(Endpoints(n, tmp_path))
        return started[-1]

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def bundled(tmp_path, upstreams):
    """Factory: ``bundled(yaml_text, {cluster: Endpoints})`` runs ``meshrules bundle --output
    envoy`` on the YAML, every cluster on its endpoints, and starts real Envoy on the result."""
    launcher = EnvoyLauncher(tmp_path, upstreams)

    def start(text: str, clusters: dict[str, Endpoints]):
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        args = ["bundle", "--output", "envoy", str(path), "--wasm", str(MESHRULES_WASM),
                # Port 0: Envoy binds free ports, which the launcher reads back.
                "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        for name, eps in clusters.items():
            for address in eps.addresses():
                args += ["--endpoint", f"{name}={address}"]
        out = meshrules(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        generated = yaml.safe_load(out.stdout)
        return launcher.start("{}", transform=lambda _ours: generated), generated

    yield start
    launcher.stop_all()


def active_requests(env, cluster: str) -> dict[str, int]:
    """Envoy's ``rq_active`` of each endpoint of ``cluster``, by address (admin /clusters)."""
    out = {}
    for line in env.admin("/clusters")[1].splitlines():
        m = re.fullmatch(re.escape(cluster) + r"::(127\.0\.0\.1:\d+)::rq_active::(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


class Background:
    """One request in a thread of its own; ``result()`` waits for its answer."""

    def __init__(self, env, headers: dict[str, str]):
        self.response = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(env, headers), daemon=True)
        self.thread.start()

    def _run(self, env, headers):
        try:
            self.response = request(env, host=HOST, headers=headers, timeout=30)
        except Exception as e:  # noqa: BLE001 - reported by result()
            self.error = e

    def result(self, timeout: float = 30.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request did not finish"
        assert self.error is None, self.error
        return self.response


# --------------------------------------------------------------------------------------------
# connectionPool → circuit_breakers
# --------------------------------------------------------------------------------------------


def test_circuit_breaker_on_pending_requests_overflows_with_503_and_x_envoy_overloaded(endpoints, bundled):
    """tcp.maxConnections 1 and http.http1MaxPendingRequests 1 are cluster-wide limits
    (istiod's applyConnectionPool → circuit_breakers.thresholds). Envoy still opens one
    connection to an endpoint that has none (conn_pool_base.cc: "always create one, to prevent
    pending streams being queued to this upstream with no way to be processed"), so with
    ROUND_ROBIN over two endpoints two slow requests take one connection each, a third waits
    (the one pending request allowed), and a fourth is refused at once: 503 with
    ``x-envoy-overloaded: true``."""
    eps = endpoints(2)
    env, _ = bundled(rules({"loadBalancer": {"simple": "ROUND_ROBIN"},
                            "connectionPool": {"tcp": {"maxConnections": 1},
                                               "http": {"http1MaxPendingRequests": 1}}},
                           retries=False), {CLUSTER: eps})
    slow = {"x-upstream-delay-ms": "4000"}
    # One at a time: a request waiting for its connection to open counts as pending too.
    busy = []
    for n in (1, 2):
        busy.append(Background(env, slow))
        wait_until(lambda: sum(active_requests(env, CLUSTER).values()) == n, what=f"{n} request(s) in flight")
    assert sorted(active_requests(env, CLUSTER).values()) == [1, 1], "one on each endpoint"
    pending = Background(env, {})
    wait_until(lambda: env.stat(f"cluster.{CLUSTER}.upstream_rq_pending_active") == 1, what="one pending request")

    refused = request(env, host=HOST)
    assert refused.status == 503, refused
    assert refused.headers.get("x-envoy-overloaded") == "true", refused
    assert refused.served_by is None
    assert refused.elapsed < 1.5, "refused at once, not queued behind the 4 s requests"
    assert env.stat(f"cluster.{CLUSTER}.upstream_rq_pending_overflow") == 1

    for b in busy:
        assert b.result().status == 200
    waited = pending.result()
    assert waited.status == 200 and waited.served_by in eps.names, waited


def test_circuit_breaker_on_requests_refuses_the_second_concurrent_request(endpoints, bundled):
    """http.http2MaxRequests 1 → circuit_breakers max_requests 1, which Envoy 1.40 applies to
    HTTP/1.1 upstreams too (istiod's comment says HTTP/2 only): with two endpoints idle, a
    second request while one is in flight is refused with 503 and ``x-envoy-overloaded``."""
    eps = endpoints(2)
    env, _ = bundled(rules({"connectionPool": {"http": {"http2MaxRequests": 1}}}, retries=False),
                     {CLUSTER: eps})
    slow = Background(env, {"x-upstream-delay-ms": "2000"})
    wait_until(lambda: sum(active_requests(env, CLUSTER).values()) == 1, what="one request in flight")
    refused = request(env, host=HOST)
    assert (refused.status, refused.headers.get("x-envoy-overloaded")) == (503, "true"), refused
    assert slow.result().status == 200
    assert request(env, host=HOST).status == 200, "the limit frees with the request"


# --------------------------------------------------------------------------------------------
# outlierDetection → outlier_detection
# --------------------------------------------------------------------------------------------


def test_an_endpoint_is_ejected_after_consecutive_5xx_and_returns_after_base_ejection_time(endpoints, bundled):
    """consecutive5xxErrors 3, interval 1s, baseEjectionTime 2s, maxEjectionPercent 100
    (Envoy's default 10% would forbid ejecting one of two endpoints), ROUND_ROBIN so both
    endpoints get requests. ep-1 answers 503 to requests that say so: after its third 503 it
    is ejected and ep-0 serves everything; it is back at the first interval tick 2 s after
    its ejection (checked between 1.8 s and 8 s, for a loaded machine)."""
    eps = endpoints(2)
    env, generated = bundled(rules({"loadBalancer": {"simple": "ROUND_ROBIN"},
                                    "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s",
                                                         "baseEjectionTime": "2s", "maxEjectionPercent": 100}},
                                   retries=False), {CLUSTER: eps})
    cluster = next(c for c in generated["static_resources"]["clusters"] if c["name"] == CLUSTER)
    assert cluster["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}, \
        "istiod's minHealthPercent default: no panic routing to the ejected endpoint"
    failing = {"x-upstream-fail-on": "ep-1"}

    failures = 0
    for _ in range(20):
        r = request(env, host=HOST, headers=failing)
        if r.served_by == "ep-1":
            assert r.status == 503, r
            failures += 1
            if failures == 3:
                break
        else:
            assert (r.status, r.served_by) == (200, "ep-0"), r
    ejected_at = time.monotonic()
    assert failures == 3, "ep-1 answered three times within 20 round-robin requests"
    assert env.stat(f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_consecutive_5xx") == 1
    assert env.stat(f"cluster.{CLUSTER}.outlier_detection.ejections_active") == 1

    # Ejected: every request goes to ep-0, the failure header notwithstanding.
    for _ in range(6):
        r = request(env, host=HOST, headers=failing)
        assert (r.status, r.served_by) == (200, "ep-0"), r

    def back():
        return request(env, host=HOST).served_by == "ep-1"

    wait_until(back, timeout=10.0, what="ep-1 serving again")
    returned_after = time.monotonic() - ejected_at
    assert 1.8 <= returned_after <= 8.0, f"back after {returned_after:.2f}s"
    assert env.stat(f"cluster.{CLUSTER}.outlier_detection.ejections_active") == 0


# --------------------------------------------------------------------------------------------
# loadBalancer.simple → lb_policy
# --------------------------------------------------------------------------------------------


SAMPLE = 400


@pytest.mark.parametrize("simple", ["LEAST_REQUEST", "ROUND_ROBIN"])
def test_least_request_prefers_the_idle_endpoint_and_round_robin_does_not(endpoints, bundled, simple):
    """One endpoint holds a slow request; then 400 quick requests, one at a time. Envoy's
    LEAST_REQUEST draws two endpoints at random (with replacement) and takes the one with
    fewer active requests, so the busy one is chosen only when drawn twice: the idle one gets
    p = 3/4, 300 of 400 expected, accepted within 5 sigma (±43, so 257..343; a load blind
    balancer would give 200 ± 50 at 5 sigma). ROUND_ROBIN ignores load: exactly every other
    request (200 ± 1)."""
    eps = endpoints(2)
    env, _ = bundled(rules({"loadBalancer": {"simple": simple}}), {CLUSTER: eps})
    # The slow request, on a connection of its own that is closed when the count is done.
    held = http.client.HTTPConnection("127.0.0.1", env.port, timeout=60)
    held.putrequest("GET", "/", skip_host=True)
    held.putheader("Host", HOST)
    held.putheader("x-upstream-delay-ms", "60000")
    held.endheaders()
    try:
        active = wait_until(lambda: {a: n for a, n in active_requests(env, CLUSTER).items() if n},
                            what="the slow request in flight")
        busy = eps.name_of(next(iter(active)))
        idle = next(n for n in eps.names if n != busy)
        counts = {n: 0 for n in eps.names}
        client = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
        deadline = time.monotonic() + 120
        for _ in range(SAMPLE):
            assert time.monotonic() < deadline, f"{SAMPLE} requests took over 120 s"
            r = request(env, host=HOST, conn=client)
            assert r.status == 200, r
            counts[r.served_by] += 1
        client.close()
        assert active_requests(env, CLUSTER)[next(iter(active))] == 1, "still busy throughout"
    finally:
        held.close()
    if simple == "LEAST_REQUEST":
        tolerance = binomial_tolerance(SAMPLE, 0.75)
        assert abs(counts[idle] - 0.75 * SAMPLE) <= tolerance, (counts, idle, tolerance)
    else:
        assert abs(counts[idle] - SAMPLE / 2) <= 1, counts


# --------------------------------------------------------------------------------------------
# loadBalancer.consistentHash → RING_HASH + the route's hash_policy
# --------------------------------------------------------------------------------------------


def test_consistent_hash_keeps_each_user_on_one_endpoint(endpoints, bundled):
    """consistentHash.httpHeaderName x-user → RING_HASH and a header hash policy on the
    cluster's route. 30 users × 5 requests over 3 endpoints: each user stays on one endpoint
    (exact), and the users spread over more than one (all 30 on one endpoint of a 1024-entry
    ring: about 3 × (1/3)^30, never)."""
    eps = endpoints(3)
    env, _ = bundled(rules({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}), {CLUSTER: eps})
    seen: dict[str, set[str]] = {}
    for round_ in range(5):
        for user in range(30):
            r = request(env, host=HOST, headers={"x-user": f"user-{user}"})
            assert r.status == 200, r
            seen.setdefault(f"user-{user}", set()).add(r.served_by)
    assert all(len(s) == 1 for s in seen.values()), seen
    assert len(set().union(*seen.values())) > 1, seen


def test_consistent_hash_on_a_cookie_with_ttl_sets_the_cookie_and_sticks_to_it(endpoints, bundled):
    """httpCookie {name: session, ttl: 60s} on subset `cookie`: Envoy sets the cookie on a
    request without it, and a client sending it back stays on one endpoint (10 requests).
    The service's own cluster hashes on a header instead: its route carries no cookie policy,
    so its answers set no cookie."""
    eps, eps_cookie = endpoints(3), endpoints(3)
    subset = {"name": "cookie", "trafficPolicy": {"loadBalancer": {"consistentHash": {
        "httpCookie": {"name": "session", "ttl": "60s"}}}}}
    env, _ = bundled(rules({"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}, subsets=[subset]),
                     {CLUSTER: eps, HASHED_BY_COOKIE: eps_cookie})
    first = request(env, host=HOST, headers={"x-hash": "cookie"})
    assert first.status == 200 and first.served_by in eps_cookie.names, first
    cookie = first.headers.get("set-cookie", "")
    assert re.match(r'session="?[0-9a-f]+"?; Max-Age=60; HttpOnly', cookie), cookie
    value = cookie.split(";", 1)[0]
    served = {request(env, host=HOST, headers={"x-hash": "cookie", "cookie": value}).served_by for _ in range(10)}
    assert served == {first.served_by}, served
    plain = request(env, host=HOST, headers={"x-user": "u"})
    assert plain.status == 200 and plain.served_by in eps.names and "set-cookie" not in plain.headers, plain


# --------------------------------------------------------------------------------------------
# Everything translated, as Envoy reads it
# --------------------------------------------------------------------------------------------

TESTDATA = REPO / "src" / "jwt" / "testdata"


def test_a_bootstrap_with_every_translated_setting_passes_envoys_validation(tmp_path):
    """Every setting `bundle --output envoy` translates, TLS with real certificate files (an
    RSA certificate and its key from src/jwt/testdata), in one bootstrap that
    ``envoy --mode validate`` accepts."""
    cert, key = str(TESTDATA / "rsa2048.crt"), str(TESTDATA / "rsa2048.pem")
    top = {
        "loadBalancer": {"simple": "LEAST_REQUEST", "warmup": {"duration": "30s", "minimumPercent": 5, "aggression": 2}},
        "connectionPool": {
            "tcp": {"maxConnections": 10, "connectTimeout": "250ms", "maxConnectionDuration": "1h",
                    "idleTimeout": "5m", "tcpKeepalive": {"probes": 3, "time": "600s", "interval": "30s"}},
            "http": {"http1MaxPendingRequests": 5, "http2MaxRequests": 50, "maxRequestsPerConnection": 100,
                     "maxRetries": 2, "idleTimeout": "60s"}},
        "outlierDetection": {"consecutive5xxErrors": 5, "consecutiveGatewayErrors": 3, "interval": "10s",
                             "baseEjectionTime": "30s", "maxEjectionPercent": 50, "minHealthPercent": 20,
                             "splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 2},
        "tls": {"mode": "MUTUAL", "clientCertificate": cert, "privateKey": key, "caCertificates": cert,
                "subjectAltNames": ["shop.example.com"], "sni": "shop.example.com"},
        "proxyProtocol": {"version": "V2"},
        "retryBudget": {"percent": 20, "minRetryConcurrency": 4},
    }
    subsets = [
        {"name": "cookie", "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "s", "ttl": "0s", "path": "/",
                                                               "attributes": [{"name": "SameSite", "value": "Lax"}]},
                                                "maglev": {"tableSize": 65537}}},
            "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "maxConcurrentStreams": 50,
                                        "http2KeepAlive": {"interval": "15s", "timeout": "5s"}}},
            "tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}},
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(rules(top, subsets=subsets))
    out = meshrules("bundle", "--output", "envoy", str(path), "--wasm", str(MESHRULES_WASM),
                    "--endpoint", f"{CLUSTER}=127.0.0.1:1", "--endpoint", f"{HASHED_BY_COOKIE}=127.0.0.1:2")
    assert out.returncode == 0, out.stdout + out.stderr
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(out.stdout)
    result = envoy_validate(bootstrap)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
    clusters = {c["name"]: c for c in yaml.safe_load(out.stdout)["static_resources"]["clusters"]}
    assert clusters[CLUSTER]["transport_socket"]["name"] == "envoy.transport_sockets.upstream_proxy_protocol"
    assert clusters[HASHED_BY_COOKIE]["lb_policy"] == "MAGLEV"


# --------------------------------------------------------------------------------------------
# The README says what the CLI does
# --------------------------------------------------------------------------------------------


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("### DestinationRule traffic policies")
    return text[start:text.index("\n### ", start + 1)]


def _blocks(section: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", section, re.S)


def _crd_traffic_policy_fields() -> set[str]:
    from crd_schema import CRD_FILE

    crds = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d and d["spec"]["names"]["kind"] == "DestinationRule"]
    schema = crds[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    fields: set[str] = set()

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "array" and "properties" in node.get("items", {}):
            node = node["items"]
        props = node.get("properties")
        if not props:
            fields.add(path)
            return
        for name, child in props.items():
            # A port entry's four settings are the top level's.
            if path == "portLevelSettings" and name != "port":
                continue
            walk(child, f"{path}.{name}" if path else name)

    walk(schema["trafficPolicy"], "")
    return fields


def test_the_readme_table_lists_every_traffic_policy_field_of_istios_crd():
    """Each row names its fields in the first column; `.x` continues the first field's parent."""
    listed: set[str] = set()
    for row in re.findall(r"^\| (`[^|]*) \|", _readme_section(), re.M):
        names = re.findall(r"`([^`]+)`", row)
        parent = names[0].rsplit(".", 1)[0]
        for name in names:
            listed.add((parent + name if name.startswith(".") else name).replace("[]", ""))
    assert listed == _crd_traffic_policy_fields()


def test_the_readme_tutorial_outputs_are_the_clis(tmp_path):
    """The tutorial's `check` output, the corrected policy (examples/reviews-circuit-breaker.yaml)
    and the cluster `bundle --output envoy` writes for it, as the README shows them."""
    blocks = _blocks(_readme_section())
    tutorial, shown_check, corrected, cluster = blocks[0][1], blocks[1][1], blocks[2][1], blocks[3][1]
    (tmp_path / "tutorial.yaml").write_text(tutorial)
    out = meshrules("check", str(tmp_path / "tutorial.yaml"))
    assert out.returncode == 1
    lines = shown_check.strip().splitlines()
    assert lines[0] == "$ meshrules check tutorial.yaml"
    assert (out.stdout + out.stderr).replace(str(tmp_path) + "/", "").splitlines() == lines[1:]

    example = REPO / "examples" / "reviews-circuit-breaker.yaml"
    dr = yaml.safe_load_all(example.read_text())
    policy = [d for d in dr if d["kind"] == "DestinationRule"][0]["spec"]["trafficPolicy"]
    assert yaml.safe_load(corrected)["trafficPolicy"] == policy
    out = meshrules("bundle", "--output", "envoy", str(example))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["static_resources"]["clusters"] == yaml.safe_load(cluster)
