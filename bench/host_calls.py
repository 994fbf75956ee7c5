"""The routing cost decomposed (issue 13): the floor module (bench/memory.py) plus one kind of
host call, as meshrules makes it on a plain split, so `make bench` measures each step's Envoy
CPU per request over the floor (listener i) through the same route table.

A step's calls are repeated `REPEAT` times per request where repeating costs what one call
costs times the repeat (reads, metrics, the clock): one call is well below the machine's
round-to-round noise. Setting the cluster header is made once: Envoy clears the route cache on
every write but selects the route again only once, at the router, and that selection is part
of the step's cost.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import memory as mem

REPEAT = 10
CLUSTER_HEADER = "x-meshrules-cluster"
# What meshrules writes on the plain split's 90% side (bench/envoy_configs.py V1).
CLUSTER = "outbound|8080|v1|demoapp.app.svc.cluster.local"

# Linear memory: out-pointers at 0 (data), 4 (size), 8 (the clock, u64), metric ids at 16, 20,
# 24; strings from 1024; the host's buffers at 65536 (proxy_on_memory_allocate).
STRINGS = {"cluster_header": CLUSTER_HEADER, "cluster": CLUSTER, "other_header": "x-floor-step", "authority": ":authority", "path": ":path",
           "status": ":status", "route_counter": "floor_route_requests", "response_counter": "floor_responses",
           "histogram": "floor_duration"}

IMPORTS = {
    "proxy_get_header_map_pairs": ("pairs", "(param i32 i32 i32) (result i32)"),
    "proxy_get_header_map_value": ("value", "(param i32 i32 i32 i32 i32) (result i32)"),
    "proxy_replace_header_map_value": ("replace", "(param i32 i32 i32 i32 i32) (result i32)"),
    "proxy_get_current_time_nanoseconds": ("clock", "(param i32) (result i32)"),
    "proxy_define_metric": ("define", "(param i32 i32 i32 i32) (result i32)"),
    "proxy_increment_metric": ("increment", "(param i32 i64) (result i32)"),
    "proxy_record_metric": ("record", "(param i32 i64) (result i32)"),
}


def _layout() -> dict[str, tuple[int, int]]:
    out, at = {}, 1024
    for key, text in STRINGS.items():
        out[key] = (at, len(text))
        at += len(text)
    return out


AT = _layout()


def _s(key: str) -> str:
    at, n = AT[key]
    return f"(i32.const {at}) (i32.const {n})"


# Request headers are map 0, response headers map 2 (proxy-wasm ABI 0.2.1).
PAIRS = "(drop (call $pairs (i32.const 0) (i32.const 0) (i32.const 4)))"
AUTHORITY = f"(drop (call $value (i32.const 0) {_s('authority')} (i32.const 0) (i32.const 4)))"
PATH = f"(drop (call $value (i32.const 0) {_s('path')} (i32.const 0) (i32.const 4)))"
SET_CLUSTER = f"(drop (call $replace (i32.const 0) {_s('cluster_header')} {_s('cluster')}))"
SET_OTHER = f"(drop (call $replace (i32.const 0) {_s('other_header')} {_s('cluster')}))"
STATUS = f"(drop (call $value (i32.const 2) {_s('status')} (i32.const 0) (i32.const 4)))"
CLOCK = "(drop (call $clock (i32.const 8)))"
ROUTE_COUNT = "(drop (call $increment (i32.load (i32.const 16)) (i64.const 1)))"
RESPONSE_COUNT = "(drop (call $increment (i32.load (i32.const 20)) (i64.const 1)))"
DURATION = "(drop (call $record (i32.load (i32.const 24)) (i64.const 1)))"

# Each step: (label, calls in on_http_request_headers, calls in on_http_response_headers,
# repeated, what meshrules makes of it per request on a plain split with per-destination
# metrics on: src/host/http.rs and src/host/metrics.rs).
STEPS = {
    "l": ("read all request headers (proxy_get_header_map_pairs)", [PAIRS], [], True, 1),
    "m": ("read :authority and :path one by one (2 × proxy_get_header_map_value)", [AUTHORITY, PATH], [], True, 0),
    "n": ("set a header no route looks at (proxy_replace_header_map_value): the write, and the route "
          "selected again (the same plain route)", [SET_OTHER], [], False, 0),
    "o": ("set the cluster header (proxy_replace_header_map_value): the route selected again is the "
          "`cluster_header` one, with Istio's retry policy", [SET_CLUSTER], [], False, 1),
    "p": ("read :status in the response (proxy_get_header_map_value)", [], [STATUS], True, 1),
    "q": ("metrics: a route counter, a response counter, a duration sample (2 × proxy_increment_metric, "
          "proxy_record_metric)", [ROUTE_COUNT], [RESPONSE_COUNT, DURATION], True, 1),
    "r": ("read the clock at the request and at the response (2 × proxy_get_current_time_nanoseconds)",
          [CLOCK], [CLOCK], True, 1),
}
# Every host call meshrules makes on the plain split, once each: what is left of j above this
# is meshrules' own code (decision, allocation, the SDK's dispatch).
ALL_CALLS = ("s", "all of meshrules' host calls at once, once each (l + o + p + q + r)",
             [PAIRS, CLOCK, ROUTE_COUNT, SET_CLUSTER], [STATUS, CLOCK, RESPONSE_COUNT, DURATION])


def wat(request: list[str], response: list[str]) -> str:
    def data(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"')

    imports = [f'  (import "env" "{name}" (func ${short} {sig}))' for name, (short, sig) in IMPORTS.items()]
    # Counter 0, histogram 2; defined once, in the root context's on_configure.
    define = " ".join(f"(drop (call $define (i32.const {kind}) {_s(key)} (i32.const {slot})))"
                      for kind, key, slot in ((0, "route_counter", 16), (0, "response_counter", 20),
                                              (2, "histogram", 24)))
    bodies = {"proxy_on_request_headers": request, "proxy_on_response_headers": response,
              "proxy_on_configure": [define]}
    cbs = []
    for name, sig, result in mem.CALLBACKS:
        cbs.append(f'  (func (export "{name}") {sig} {" ".join(bodies.get(name, []))} {result})')
    return "\n".join([
        "(module",
        *imports,
        '  (memory (export "memory") 2)',
        *(f'  (data (i32.const {AT[k][0]}) "{data(t)}")' for k, t in STRINGS.items()),
        '  (func (export "proxy_abi_version_0_2_1"))',
        '  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65536))',
        *cbs,
        ")",
    ])


def build(out: Path, request: list[str], response: list[str]) -> Path:
    src = out.with_suffix(".wat")
    src.write_text(wat(request, response))
    subprocess.run(["wasm-as", str(src), "-o", str(out)], check=True, capture_output=True)
    return out


def modules(work: Path) -> dict[str, Path]:
    """Listener letter -> the floor plus that step."""
    out = {}
    for key, (_, request, response, repeated, _) in STEPS.items():
        times = REPEAT if repeated else 1
        out[key] = build(work / f"step-{key}.wasm", request * times, response * times)
    key, _, request, response = ALL_CALLS
    out[key] = build(work / f"step-{key}.wasm", request, response)
    return out
