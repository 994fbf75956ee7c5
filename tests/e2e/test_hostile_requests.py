"""Hostile requests: nothing a client sends may take the filter down.

Before src/host/abi.rs, one header value byte in 0x80-0xFF (Envoy's HTTP/1 codec passes it
through as RFC 9110 obs-text) trapped the VM in proxy-wasm's `get_map`, and every later
request on every listener sharing the VM got 503 until Envoy restarted.

Every case here goes to one Envoy whose rules make the filter read everything a request
carries (header, query, cookie and authority matches, a regex, CORS, a sticky split, an
AuthorizationPolicy on headers and X-Forwarded-For, a RequestAuthentication with an inline
JWKS), and after every hostile request a normal one must still reach an upstream: the VM is
alive. HTTP/1.1 requests are written byte by byte on a socket, HTTP/2 ones with the `h2`
library with its own validation off, so the bytes reach Envoy as written. Envoy's own codec
refuses some of them (400, a reset stream); that is Envoy's answer, not the filter's.
"""

from __future__ import annotations

import json
import socket
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import Envoy, destination_rule, plugin_config, raw_head, raw_status, to, virtual_service
from security import (authorization_policy, b64url, b64url_json, bearer, claims, ec_key, jwks,
                      jwt_rule, request_authentication, sign)

ISSUER = "https://issuer.hostile.test"
KEY = ec_key("hostile-1")

# Envoy's defaults: 60 KiB of request headers, 100 headers.
HEADERS_KB = 60
BIG = (HEADERS_KB - 4) * 1024

FILTER_STATUS = {500, 503}


def rules() -> dict:
    vs = virtual_service("demoapp", ["demoapp"], [
        {"name": "grpc", "match": [{"headers": {"content-type": {"prefix": "application/grpc"}}}],
         "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
         "route": [to(subset="v1")]},
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}},
                                     {"headers": {"user-agent": {"regex": ".*Mobile.*"}}},
                                     {"queryParams": {"q": {"exact": "v2"}}},
                                     {"authority": {"prefix": "canary."}}],
         "route": [to(subset="v2")]},
        {"name": "split",
         "route": [to(subset="v1", weight=90), to(subset="v2", weight=10)],
         "corsPolicy": {"allowOrigins": [{"exact": "https://app.example"}], "allowMethods": ["GET"]}},
    ])
    deny = authorization_policy("deny-guests", [
        {"when": [{"key": "request.headers[x-role]", "values": ["guest"]}]},
        {"to": [{"operation": {"paths": ["/admin*"]}}]},
        {"when": [{"key": "remote.ip", "values": ["10.9.9.9"]}]},
    ], action="DENY")
    authn = request_authentication("hostile", jwt_rule(ISSUER, jwks=json.dumps(jwks(KEY))))
    cfg = plugin_config(vs, destination_rule("demoapp", "demoapp", ["v1", "v2"]), deny, authn,
                        stickySplit={"cookie": "user"})
    cfg["security"] = {"xffNumTrustedHops": 1}
    return cfg


@pytest.fixture(scope="module")
def env(module_envoy_launcher) -> Envoy:
    return module_envoy_launcher.start(rules())


# --------------------------------------------------------------------------------------------
# Clients that send the bytes as written
# --------------------------------------------------------------------------------------------


def http1(env: Envoy, path: bytes, headers: list[tuple[bytes, bytes]], host: bytes = b"demoapp") -> int:
    """One HTTP/1.1 request written on a socket; the response status (0: no answer)."""
    head = b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    head += b"Connection: close\r\n\r\n"
    return raw_status(raw_head(env, head))


def http2(env: Envoy, path: bytes, headers: list[tuple[bytes, bytes]], host: bytes = b"demoapp",
          method: bytes = b"GET", body: bytes | None = None) -> dict[bytes, bytes]:
    """One HTTP/2 (prior knowledge) request; the response headers and trailers, or
    ``{b":reset": ...}`` when Envoy reset the stream or closed the connection."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                       validate_outbound_headers=False, normalize_outbound_headers=False,
                                       validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    answer: dict[bytes, bytes] = {}
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        conn.initiate_connection()
        request_headers = [(b":method", method), (b":scheme", b"http"), (b":authority", host),
                           (b":path", path), *headers]
        conn.send_headers(1, request_headers, end_stream=body is None)
        if body is not None:
            conn.send_data(1, body, end_stream=True)
        s.sendall(conn.data_to_send())
        deadline = time.monotonic() + 10
        done = False
        while not done and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                answer.setdefault(b":reset", b"connection closed")
                break
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    answer.update(dict(event.headers))
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
                elif isinstance(event, h2.events.StreamReset):
                    answer[b":reset"] = str(event.error_code).encode()
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    answer[b":reset"] = b"goaway"
                    done = True
            s.sendall(conn.data_to_send())
    return answer


def assert_alive(env: Envoy, after: str) -> None:
    """A normal request still reaches an upstream: the filter's VM survived ``after``."""
    status = http1(env, b"/", [(b"x-canary", b"true")])
    assert status == 200, f"after {after}: a normal request got {status}\n{env.log_text()[-3000:]}"


# --------------------------------------------------------------------------------------------
# Every byte Envoy lets through, one request per byte
# --------------------------------------------------------------------------------------------

BYTES = range(0x01, 0x100)


@pytest.mark.parametrize("byte", BYTES, ids=lambda b: f"0x{b:02x}")
def test_http1_header_value_byte_leaves_the_vm_alive(env, byte):
    value = b"caf" + bytes([byte]) + b"e"
    for name in (b"user-agent", b"x-role", b"cookie", b"x-canary", b"origin"):
        status = http1(env, b"/", [(name, value)])
        assert status not in FILTER_STATUS, f"{name!r}: {value!r}: {status}"
    assert_alive(env, f"header values with byte 0x{byte:02x}")


@pytest.mark.parametrize("byte", BYTES, ids=lambda b: f"0x{b:02x}")
def test_http1_header_name_and_path_byte_leave_the_vm_alive(env, byte):
    b = bytes([byte])
    for path, headers in ((b"/", [(b"x-" + b + b"h", b"1")]), (b"/a" + b + b"z", []),
                          (b"/?q=" + b, [])):
        status = http1(env, path, headers)
        assert status not in FILTER_STATUS, f"{path!r} {headers!r}: {status}"
    assert_alive(env, f"header name and path with byte 0x{byte:02x}")


@pytest.mark.parametrize("byte", BYTES, ids=lambda b: f"0x{b:02x}")
def test_http2_header_value_byte_leaves_the_vm_alive(env, byte):
    value = b"caf" + bytes([byte]) + b"e"
    answer = http2(env, b"/", [(b"user-agent", value), (b"x-role", value), (b"cookie", b"user=" + value)])
    assert int(answer.get(b":status", b"0")) not in FILTER_STATUS, answer
    assert_alive(env, f"HTTP/2 header values with byte 0x{byte:02x}")


def test_obs_text_value_is_matched_as_envoy_compares_bytes(env):
    """`x-role: guest\\xff` is not `guest` (no DENY), while `x-canary: true` next to an
    obs-text user agent still routes to v2: the other headers are read as before."""
    assert http1(env, b"/", [(b"x-role", b"guest\xff")]) == 200
    assert http1(env, b"/", [(b"x-role", b"guest")]) == 403
    status = http1(env, b"/", [(b"user-agent", b"caf\xe9 Mobile"), (b"x-canary", b"true")])
    assert status == 200


# --------------------------------------------------------------------------------------------
# Huge and repeated content, up to Envoy's limits
# --------------------------------------------------------------------------------------------

def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def joined(sep: bytes, item, budget: int = BIG) -> bytes:
    """``item(i)`` joined by ``sep`` for as many ``i`` as fit in ``budget`` bytes."""
    out, i = [], 0
    size = 0
    while size + len(item(i)) + len(sep) <= budget:
        out.append(item(i))
        size += len(out[-1]) + len(sep)
        i += 1
    return sep.join(out)


def huge_cases() -> dict[str, tuple[bytes, list[tuple[bytes, bytes]]]]:
    """Each case stays within Envoy's header limits, so it reaches the filter."""
    token = sign(KEY, claims(ISSUER, "user"))
    head, payload, sig = token.split(".")
    return {
        "one huge value": (b"/", [(b"user-agent", b"Mobile" * (BIG // 6))]),
        "huge path": (b"/" + b"a" * BIG, []),
        "path of dot segments": (b"/" + b"a/../" * (BIG // 5), []),
        "path of escaped dot segments": (b"/" + b"%2e%2E/a/" * (BIG // 9), []),
        "huge query": (b"/?" + joined(b"&", lambda i: b"p%d=v" % i) + b"&q=v2", []),
        "huge cookie": (b"/", [(b"cookie", joined(b"; ", lambda i: b"c%d=v" % i) + b"; user=u")]),
        # Envoy's limit is 100 headers, the pseudo-headers and Host among them.
        "90 repeated headers": (b"/", [(b"x-role", b"admin")] * 90),
        "huge x-forwarded-for": (b"/", [(b"x-forwarded-for", b", ".join([b"10.0.0.1"] * (BIG // 10)))]),
        "90 x-forwarded-for headers": (b"/", [(b"x-forwarded-for", b"10.9.9.9, 1.2.3.4")] * 90),
        "huge garbage token": (b"/", [(b"authorization", b"Bearer " + b"a" * BIG)]),
        "huge token segments": (b"/", [(b"authorization", b"Bearer " + ".".join(
            [b64url(b"{" * (BIG // 4))] * 3).encode())]),
        "deeply nested token payload": (b"/", [(b"authorization", b"Bearer " + ".".join(
            [head, b64url(nested(BIG // 3).encode()), sig]).encode())]),
        "deeply nested token header": (b"/", [(b"authorization", b"Bearer " + ".".join(
            [b64url_json({"alg": "ES256", "x": json.loads(nested(200))}), payload, sig]).encode())]),
        "token in 90 authorization headers": (b"/", [(b"authorization", f"Bearer {token}".encode())] * 90),
        "huge origin": (b"/", [(b"origin", b"https://" + b"a" * BIG)]),
    }


def expected_status(case: str) -> int:
    """Tokens that are not a valid JWT get jwt_authn's 401; everything else is routed."""
    return 401 if "token" in case else 200


@pytest.mark.parametrize("case", list(huge_cases()))
def test_http1_huge_request_is_decided_and_leaves_the_vm_alive(env, case):
    path, headers = huge_cases()[case]
    assert http1(env, path, headers) == expected_status(case)
    assert_alive(env, case)


@pytest.mark.parametrize("case", list(huge_cases()))
def test_http2_huge_request_is_decided_and_leaves_the_vm_alive(env, case):
    path, headers = huge_cases()[case]
    answer = http2(env, path, [(k.lower(), v) for k, v in headers])
    assert answer.get(b":status") == str(expected_status(case)).encode(), answer
    assert_alive(env, f"HTTP/2 {case}")


def test_huge_authority_leaves_the_vm_alive(env):
    status = http1(env, b"/", [], host=b"canary." + b"a" * BIG)
    assert status not in FILTER_STATUS
    answer = http2(env, b"/", [], host=b"canary." + b"a" * BIG)
    assert int(answer.get(b":status", b"0")) not in FILTER_STATUS, answer
    assert_alive(env, "a huge authority")


# --------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------

GRPC_FRAME = b"\x00\x00\x00\x00\x05hello"


def test_grpc_request_with_hostile_metadata_gets_the_routes_grpc_abort(env):
    """A gRPC call with obs-text and large metadata still reaches its route: the route's abort
    answers with grpc-status 14 (UNAVAILABLE), as Envoy's fault filter would. (Envoy's HTTP/2
    codec itself closes the connection for a single obs-text value of about 28 KB.)"""
    for metadata in ([(b"x-meta", b"caf\xe9")], [(b"x-meta", b"\xff" * 15000)],
                     [(b"x-meta-bin", b"AAAA")] * 90):
        answer = http2(env, b"/pkg.Service/Method",
                       [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *metadata],
                       method=b"POST", body=GRPC_FRAME)
        assert answer.get(b"grpc-status") == b"14", answer
    assert_alive(env, "gRPC calls with hostile metadata")


def test_filter_log_has_no_trap(env):
    """Whatever came before in this module: the VM never trapped."""
    assert_alive(env, "the whole module")
    log = env.log_text()
    for sign_of_a_trap in ("panicked at", "Uncaught RuntimeError", "proxy_on_request_headers failed"):
        assert sign_of_a_trap not in log, sign_of_a_trap
