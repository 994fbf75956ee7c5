"""Modules and measurements for the memory section of `make bench` (bench/run.py).

The floor: a proxy-wasm module that exports the callbacks Envoy looks up and does nothing, so
Envoy with it pays for V8 and one VM but not for meshrules' code. Padded floors (the same
module plus N KiB of reachable code) give RSS against code size. Modules are written as .wat
and assembled with Debian binaryen's `wasm-as`.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

# The exports proxy-wasm-cpp-host looks up (src/wasm.cc getFunctions, ABI 0.2.1): the ABI
# marker, the allocator the host writes configuration through, and the context callbacks.
# The stream callbacks answer Continue (0); on_vm_start/on_configure answer true (1).
CALLBACKS = [
    ("proxy_on_context_create", "(param i32 i32)", ""),
    ("proxy_on_vm_start", "(param i32 i32) (result i32)", "(i32.const 1)"),
    ("proxy_on_configure", "(param i32 i32) (result i32)", "(i32.const 1)"),
    ("proxy_on_request_headers", "(param i32 i32 i32) (result i32)", "(i32.const 0)"),
    ("proxy_on_request_body", "(param i32 i32 i32) (result i32)", "(i32.const 0)"),
    ("proxy_on_request_trailers", "(param i32 i32) (result i32)", "(i32.const 0)"),
    ("proxy_on_response_headers", "(param i32 i32 i32) (result i32)", "(i32.const 0)"),
    ("proxy_on_response_body", "(param i32 i32 i32) (result i32)", "(i32.const 0)"),
    ("proxy_on_response_trailers", "(param i32 i32) (result i32)", "(i32.const 0)"),
    ("proxy_on_done", "(param i32) (result i32)", "(i32.const 1)"),
    ("proxy_on_log", "(param i32)", ""),
    ("proxy_on_delete", "(param i32)", ""),
    ("proxy_on_tick", "(param i32)", ""),
]


def _padding(kib: int) -> tuple[str, str]:
    """About `kib` KiB of code: functions of integer arithmetic and memory traffic, each
    called from proxy_on_vm_start behind a branch never taken, so they are reachable (V8 and
    wasm-opt cannot drop them), and all exported, as an SDK's callbacks are."""
    # One function is ~1 KiB of code: 43 load/add/mul/store blocks of ~24 bytes each.
    body = "\n".join(
        f"    (local.set 0 (i32.mul (i32.add (i32.load offset={(i * 4) % 4096} (local.get 0)) "
        f"(i32.const {i * 7919 + 1})) (local.get 0)))\n"
        f"    (i32.store offset={(i * 8) % 4096} (local.get 0) (local.get 0))"
        for i in range(43))
    funcs = [f'  (func $pad{n} (export "pad{n}") (param i32) (result i32)\n{body}\n    (local.get 0))'
             for n in range(kib)]
    calls = " ".join(f"(drop (call $pad{n} (local.get 0)))" for n in range(kib))
    return "\n".join(funcs), calls


def floor_wat(pad_kib: int = 0, trivial: int = 0, export_trivial: bool = False) -> str:
    """The floor, plus `pad_kib` KiB of padding, plus `trivial` one-instruction functions
    (exported or not) for what a function costs whatever its size."""
    funcs, calls = _padding(pad_kib)
    funcs += "".join(f'\n  (func $t{n}{f" (export {chr(34)}t{n}{chr(34)})" if export_trivial else ""} '
                     "(result i32) (i32.const 1))" for n in range(trivial))
    cbs = []
    for name, sig, body in CALLBACKS:
        if name == "proxy_on_vm_start" and calls:
            body = f"(if (i32.eq (local.get 0) (i32.const -1)) (then {calls})) {body}"
        cbs.append(f'  (func (export "{name}") {sig} {body})')
    return "\n".join([
        "(module",
        '  (memory (export "memory") 2)',
        '  (func (export "proxy_abi_version_0_2_1"))',
        # The host writes the plugin and VM configuration through this: one 64 KiB buffer,
        # never read (the floor takes no configuration).
        '  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65536))',
        *cbs,
        funcs,
        ")",
    ])


def build_floor(out: Path, pad_kib: int = 0, trivial: int = 0, export_trivial: bool = False) -> Path:
    wat = out.with_suffix(".wat")
    wat.write_text(floor_wat(pad_kib, trivial, export_trivial))
    subprocess.run(["wasm-as", str(wat), "-o", str(out)], check=True, capture_output=True)
    return out


def function_count(module: Path) -> int:
    return len(_function_results(dict(_sections(module.read_bytes())))[1])


def code_section_bytes(module: Path) -> int:
    """The size of the module's code section (id 10), the bytes V8 compiles."""
    data = module.read_bytes()
    pos = 8
    while pos < len(data):
        sid = data[pos]
        size, shift, pos = 0, 0, pos + 1
        while True:
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        if sid == 10:
            return size
        pos += size
    return 0


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and its split (RssAnon, RssFile) from /proc/PID/status, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmSize"):
            out[key] = int(value.split()[0])
    return out


def all_mappings(pid: int) -> list[dict]:
    """Every mapping of /proc/PID/smaps with its size and resident KiB."""
    maps, current = [], None
    header = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if header.match(line):
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            current = {"range": parts[0], "perms": parts[1], "name": parts[5] if len(parts) > 5 else "[anon]",
                       "size_kib": (hi - lo) // 1024, "rss_kib": 0}
            maps.append(current)
        elif line.startswith("Rss:") and current is not None:
            current["rss_kib"] = int(line.split()[1])
    return maps


def generated_virtual_services(count: int, routes: int = 10) -> dict:
    """`count` VirtualServices of `routes` routes each (a prefix match, a header match, a
    90/10 split and a timeout per route), in the demo's namespace, one host each, with the
    DestinationRule defining the subsets (without it every destination is a warning)."""
    resources = []
    for v in range(count):
        http = []
        for r in range(routes):
            http.append({"name": f"r{r}",
                         "match": [{"uri": {"prefix": f"/api/v{r}/"}, "headers": {"x-tenant": {"exact": f"t{r}"}}}],
                         "route": [{"destination": {"host": f"svc{v}", "subset": "v1", "port": {"number": 8080}}, "weight": 90},
                                   {"destination": {"host": f"svc{v}", "subset": "v2", "port": {"number": 8080}}, "weight": 10}],
                         "timeout": "5s"})
        resources.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                          "metadata": {"name": f"vs{v}", "namespace": "app"},
                          "spec": {"hosts": [f"svc{v}"], "http": http}})
        resources.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                          "metadata": {"name": f"svc{v}", "namespace": "app"},
                          "spec": {"host": f"svc{v}", "subsets": [{"name": "v1"}, {"name": "v2"}]}})
    return {"resources": resources}


STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
# What istiod puts into a WasmPlugin's VM environment (pilot/pkg/model/extensions.go): a new
# resource version is a new VM key, so Envoy builds a new VM.
RESOURCE_VERSION_ENV = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"


def snapshot(envoy) -> dict:
    """Process and allocator memory of a running Envoy (bench/run.py's Envoy)."""
    st = status_kib(envoy.proc.pid)
    heap = {k: int(v) for k, v in json.loads(envoy.admin("/memory")).items()}
    code = sum(m["rss_kib"] for m in all_mappings(envoy.proc.pid) if m["perms"] == "rwxp")
    return {"rss": st["VmRSS"] * 1024, "anon": st["RssAnon"] * 1024, "file": st["RssFile"] * 1024,
            "allocated": heap["allocated"], "heap": heap["heap_size"],
            "physical": heap.get("total_physical_bytes", 0), "code": code * 1024}


def ecds_resource(wasm: str, rules: dict, vm_id: str, env: dict | None = None) -> dict:
    """The meshrules filter as a TypedExtensionConfig, as the ECDS file holds it."""
    vm = {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}}}
    if env:
        vm["environment_variables"] = {"key_values": env}
    return {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "name": "meshrules",
            "typed_config": {"@type": WASM_TYPE, "config": {
                "name": "meshrules", "root_id": "meshrules", "vm_config": vm,
                "configuration": {"@type": STRING_VALUE, "value": json.dumps(rules)}}}}


def write_ecds(path: Path, resource: dict, version: int) -> None:
    """Writes beside and renames over, as envoy/envoy-ecds.yaml's watched directory expects."""
    tmp = path.with_name(f".{path.name}.{version}")
    tmp.write_text(json.dumps({"version_info": str(version), "resources": [resource]}))
    tmp.rename(path)


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b, value = value & 0x7F, value >> 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sections(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        sid = data[pos]
        size, start = _leb(data, pos + 1)
        out.append((sid, data[start:start + size]))
        pos = start + size
    return out


def _function_results(sections: dict[int, bytes]) -> tuple[int, list[int]]:
    """The number of imported functions and, per defined function, its result count."""
    types, body = [], sections[1]
    count, pos = _leb(body, 0)
    for _ in range(count):
        params, pos = _leb(body, pos + 1)
        pos += params
        results, pos = _leb(body, pos)
        pos += results
        types.append(results)
    imported, body = 0, sections.get(2, b"")
    count, pos = _leb(body, 0) if body else (0, 0)
    for _ in range(count):
        for _ in range(2):  # module and field names
            n, pos = _leb(body, pos)
            pos += n
        kind = body[pos]
        pos += 1
        if kind == 0:
            imported += 1
            _, pos = _leb(body, pos)
        elif kind == 1:  # table: reftype and limits
            pos += 1
            flags, pos = _leb(body, pos + 0)
            _, pos = _leb(body, pos)
            if flags & 1:
                _, pos = _leb(body, pos)
        elif kind == 2:  # memory: limits
            flags, pos = _leb(body, pos)
            _, pos = _leb(body, pos)
            if flags & 1:
                _, pos = _leb(body, pos)
        else:  # global: valtype and mutability
            pos += 2
    body = sections[3]
    count, pos = _leb(body, 0)
    results = []
    for _ in range(count):
        t, pos = _leb(body, pos)
        results.append(types[t])
    return imported, results


def _exports(body: bytes) -> dict[int, str]:
    count, pos = _leb(body, 0)
    out = {}
    for _ in range(count):
        n, pos = _leb(body, pos)
        name = body[pos:pos + n].decode()
        kind = body[pos + n]
        index, pos = _leb(body, pos + n + 1)
        if kind == 0:
            out[index] = name
    return out


def inert_module(src: Path, out: Path, keep: float = 1.0) -> Path:
    """`src` with every exported function doing nothing (the floor's answers), so none of its
    own code runs, and all but the `keep` share of the other functions' bytes replaced by
    `unreachable`: V8 still compiles everything left, as it would the real module, so RSS
    against code size on real code rather than synthetic padding."""
    data = src.read_bytes()
    secs = _sections(data)
    by_id = {sid: body for sid, body in secs if sid != 0}
    imported, results = _function_results(by_id)
    exports = _exports(by_id[7])
    count, pos = _leb(by_id[10], 0)
    bodies = []
    for _ in range(count):
        size, start = _leb(by_id[10], pos)
        bodies.append(by_id[10][start:start + size])
        pos = start + size
    others = sum(len(b) for i, b in enumerate(bodies) if imported + i not in exports)
    budget, new = keep * others, []
    for i, b in enumerate(bodies):
        name = exports.get(imported + i)
        if name is not None:
            value = 0 if re.match(r"proxy_on_(request|response|downstream|upstream|new_connection)", name) else 1
            b = bytes([0, 0x41, value, 0x0B]) if results[i] else bytes([0, 0x0B])
        elif budget >= len(b):
            budget -= len(b)
        else:
            b = bytes([0, 0x00, 0x0B])  # no locals; unreachable; end: valid for any signature
        new.append(_uleb(len(b)) + b)
    code = _uleb(count) + b"".join(new)
    parts = [data[:8]]
    for sid, body in secs:
        body = code if sid == 10 else body
        parts.append(bytes([sid]) + _uleb(len(body)) + body)
    out.write_bytes(b"".join(parts))
    return out
