"""Large rule sets in Envoy (issue 13): how long each Wasm VM takes to compile N generated
VirtualServices, and what a live ECDS swap of them does to requests in flight.

Each VM compiles on its own thread and that thread serves nothing meanwhile, so the target
(<= 0.5 s per VM) is read from the filter's own log line, one per VM: `config accepted: N
VirtualService(s), M route(s) in T ms`. The swap runs wrk through an ECDS listener while the
rules are replaced by a changed set of the same size, and counts what the clients saw."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import envoy_configs as cfg
import memory as mem

LOAD_TARGET_MS = 500
# The generated routes' own timeout (memory.generated_virtual_services): a request the swap
# holds longer than this is one the rules would have timed out.
ROUTE_TIMEOUT = "5s"
ACCEPTED = re.compile(r"config accepted: (\d+) VirtualService\(s\), (\d+) route\(s\) in (\d+) ms")
WASM_INFO = ["--component-log-level", "wasm:info"]


def load_times(log: Path) -> list[int]:
    """The per-VM load times (ms) the filter logged, in order."""
    return [int(m.group(3)) for m in ACCEPTED.finditer(log.read_text())]


def changed(rules: dict) -> dict:
    """The same rule set with every route's timeout changed: a new configuration of equal size."""
    text = json.dumps(rules).replace(f'"timeout": "{ROUTE_TIMEOUT}"', '"timeout": "4s"')
    return json.loads(text)


def static_load(run, work: Path, up_port: int, count: int, concurrency: int) -> dict:
    """Envoy started with `count` VirtualServices in a static listener: the time to ready and
    each VM's compile (the main thread's and one per worker)."""
    rules = mem.generated_virtual_services(count)
    started = time.monotonic()
    envoy = run.Envoy(f"load-{count}", cfg.bootstrap(run.free_port(), [cfg.meshrules_listener(
        run.free_port(), str(run.WASM), rules, name="load")], up_port), work, cpu="0,1",
        concurrency=concurrency, args=WASM_INFO)
    ready = time.monotonic() - started
    try:
        snap = mem.snapshot(envoy)
        vm = envoy.stat("wasmcustom.meshrules_vm_memory_bytes")
    finally:
        envoy.stop()
    times = load_times(work / f"load-{count}.log")
    # At least the main thread's VM and one per worker (Envoy 1.40 also configures the base VM
    # it clones them from).
    if len(times) < concurrency + 1:
        raise RuntimeError(f"expected {concurrency + 1} or more loads in the log, found {times}")
    return {"count": count, "json": len(json.dumps(rules)), "ready_s": ready, "vm_ms": times, "rss": snap["rss"], "vm": vm}


def wrk_through(run, port: int, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(
        run.pinned(1, ["wrk", "-t1", f"-c{run.CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout",
                       ROUTE_TIMEOUT, "-H", f"Host: {run.HOST}", f"http://127.0.0.1:{port}/"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_counts(run, out: str) -> dict:
    """Requests, responses other than 2xx/3xx, socket errors and the slowest request."""
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "timeouts": int(errors.group(4)) if errors else 0,
            "socket_errors": sum(map(int, errors.groups()[:3])) if errors else 0,
            "max_s": run.seconds(latency.group(1)) if latency else 0.0}


def live_swap(run, work: Path, up_port: int, count: int, seconds: int) -> dict:
    """wrk through an ECDS listener (--concurrency 1, Envoy on CPU 0, wrk on CPU 1) while
    `count` VirtualServices are replaced by a changed set of the same size."""
    ecds = work / "swap" / "meshrules.json"
    ecds.parent.mkdir(exist_ok=True)
    first = mem.generated_virtual_services(count)
    mem.write_ecds(ecds, mem.ecds_resource(str(run.WASM), first, "meshrules"), 0)
    port = run.free_port()
    name = f"swap-{count}"
    envoy = run.Envoy(name, cfg.with_node(cfg.bootstrap(run.free_port(), [cfg.ecds_listener(
        port, str(ecds), timeout=ROUTE_TIMEOUT)], up_port)), work, cpu=0, args=WASM_INFO)
    try:
        initial = settled_loads(work / f"{name}.log")
        reload = "extension_config_discovery.http_filter.meshrules.config_reload"
        before = envoy.stat(reload)
        load = wrk_through(run, port, seconds)
        time.sleep(min(2, seconds / 4))
        mem.write_ecds(ecds, mem.ecds_resource(str(run.WASM), changed(first), "meshrules"), 1)
        out, _ = load.communicate(timeout=seconds + 120)
        applied = envoy.stat(reload) > before
    finally:
        envoy.stop()
    times = load_times(work / f"{name}.log")[initial:]
    if not applied or len(times) < 2:
        raise RuntimeError(f"the swap was not applied during the load (loads logged: {times})")
    return {"count": count, "json": len(json.dumps(first)), "vm_ms": times, **wrk_counts(run, out)}


def settled_loads(log: Path) -> int:
    """Waits until every VM has loaded the first rules (two or more loads, none new for 2 s)."""
    deadline, seen, since = time.monotonic() + 120, 0, time.monotonic()
    while time.monotonic() < deadline:
        n = len(load_times(log))
        if n != seen:
            seen, since = n, time.monotonic()
        elif n >= 2 and time.monotonic() - since > 2:
            return n
        time.sleep(0.2)
    raise RuntimeError(f"the first rules did not settle (loads logged: {seen})")


def section(run, args, work: Path, up_port: int) -> dict:
    return {"static": [static_load(run, work, up_port, n, args.load_concurrency) for n in args.load_counts],
            "swap": live_swap(run, work, up_port, args.load_counts[-1], args.swap_seconds)}


def report(m: dict) -> list[str]:
    lines = ["", "### Large rule sets: compile time per VM and a live swap", "",
             "Generated 10-route VirtualServices with their DestinationRules (bench/memory.py). Each "
             "Wasm VM (the main thread's and one per worker) compiles the rules on its own thread, "
             "which serves nothing meanwhile; per VM = the filter's own log line (`config accepted: "
             "... in T ms`). Static: Envoy on both CPUs, nothing else running.", "",
             "| VirtualServices | JSON MiB | Envoy ready s | compile per VM ms | target | VM memory MiB | RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for x in m["static"]:
        worst = max(x["vm_ms"])
        lines.append(f"| {x['count']} | {x['json'] / 2**20:.1f} | "
                     f"{x['ready_s']:.1f} | {', '.join(map(str, x['vm_ms']))} | <= {LOAD_TARGET_MS} "
                     f"({'met' if worst <= LOAD_TARGET_MS else 'not met'}) | {x['vm'] / 2**20:.1f} | "
                     f"{x['rss'] / 2**20:.1f} |")
    s = m["swap"]
    lines += ["", f"Live swap over ECDS of {s['count']} VirtualServices ({s['json'] / 2**20:.1f} MiB) under wrk "
              f"({ROUTE_TIMEOUT} request timeout, the routes' own): the new rules compiled in "
              f"{', '.join(map(str, s['vm_ms']))} ms per VM; "
              f"{s['requests']} requests, {s['non2xx']} answered other than 2xx/3xx, {s['timeouts']} "
              f"timed out, {s['socket_errors']} socket errors; slowest request {s['max_s']:.2f} s "
              f"(target: no request timed out: {'met' if s['timeouts'] == 0 and s['non2xx'] == 0 else 'not met'})."]
    return lines
