#!/usr/bin/env python3
"""`make bench`: what meshrules costs against Envoy's own filters, written to BENCHMARKS.md.

One Envoy (--concurrency 1, pinned to CPU 0) carries listeners with the same demo rule set
(routing, an ALLOW policy and a JWT check): (a) no rules, (b) the rules as Envoy native config,
(c) meshrules, (d) meshrules re-verifying every token (no token cache), (e) meshrules with
the routing rules only, (f) as b with jwt_authn's token cache on, (g) as e with a rate limit,
(h) as e without the per-destination metrics, (i) the floor module, (j) meshrules on a plain
split, (k) as b without jwt_authn and RBAC (the native routing rules, e's like-for-like),
(l..s) the floor plus one kind of host call each (bench/host_calls.py: the routing cost
decomposed) and (t) meshrules' module made inert (its exports answer as the floor's). Every
request carries the same valid ES256 token. A fast upstream (Envoy with a direct_response) and
the load generators share CPU 1. Rounds are interleaved a/b/c/... so drift cancels; medians
and per-round ratios are reported. `--listeners` with `--throughput-only` measures only some
listeners (and reports only their CPU sections).

The memory section (issue 13, bench/memory.py) starts an Envoy per measurement: RSS with no
filter, the floor module (every proxy-wasm callback exported, nothing done), meshrules with
empty and demo rules at --concurrency 1/2/4/8; listeners sharing one vm_id; ECDS updates (new
rules, then new VMs as a WasmPlugin's resource version makes them); generated VirtualServices
against VM memory; RSS against module code; and the memory levers tried.

`--smoke` runs every step for a second or so and checks that each produced numbers: it is part
of `make test`, so the benchmark cannot rot. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_configs as cfg  # noqa: E402
import host_calls  # noqa: E402
import memory as mem  # noqa: E402
import load_time  # noqa: E402
import size  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENVOY = Path(os.environ.get("ENVOY_BIN", REPO / ".venv" / "bin" / "envoy"))
OHA = Path(os.environ.get("OHA_BIN", REPO / ".tools" / "bin" / "oha"))
WASM = Path(os.environ.get("MESHRULES_WASM", REPO / "wasm" / "meshrules.wasm"))
RAW_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "meshrules.wasm"
HOST = "demoapp"
CONNECTIONS = 16
# bench/soak.py's section of BENCHMARKS.md (`make soak`): kept when the rest is regenerated.
SOAK_HEADING = "## Soak"
# Set by jwt_material(): the header every load generator sends.
AUTH: list[str] = []


def jwt_material() -> str:
    """A fresh EC P-256 key: its JWKS (returned) and a day-long ES256 token (into AUTH)."""
    import jwt  # PyJWT, from tests/requirements.txt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench", "alg": "ES256", "use": "sig"})
    now = int(time.time())
    token = jwt.encode({"iss": cfg.ISSUER, "sub": "bench-user", "iat": now, "exp": now + 86_400},
                       key, algorithm="ES256", headers={"kid": "bench"})
    AUTH[:] = ["-H", f"Authorization: Bearer {token}"]
    return json.dumps({"keys": [jwk]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    """Pins to one CPU where the machine has more than one."""
    return ["taskset", "-c", str(cpu), *cmd] if cpus() > 1 and shutil.which("taskset") else cmd


class Envoy:
    _base_ids = iter(range(40_000, 41_000))

    def __init__(self, name: str, bootstrap: dict, workdir: Path, cpu: int | str, concurrency: int = 1,
                 args: list[str] = ()):
        self.admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(bootstrap))
        self.log = open(workdir / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            pinned(cpu, [str(ENVOY), "-c", str(path), "--concurrency", str(concurrency), "--base-id",
                         str(next(self._base_ids)), "--disable-hot-restart", "--log-level", "warn", *args]),
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(workdir / f'{name}.log').read_text()[-2000:]}")
            try:
                if self.admin("/ready").strip() == "LIVE":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not become ready")

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def stat(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{re.escape(name)}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise KeyError(name)

    def cpu_seconds(self) -> float:
        """User + system CPU time Envoy has used (steal and other processes excluded)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        # taskset execs Envoy, so the child pid is Envoy's.
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise KeyError("VmRSS")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(port: int, duration: float) -> dict:
    out = subprocess.run(
        pinned(1, ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency",
                   "-H", f"Host: {HOST}", *AUTH, f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"port {port}: {non2xx.group(1)} non-2xx responses:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99, "requests": requests}


def measured(envoy: "Envoy", port: int, duration: float) -> dict:
    """A wrk run plus the Envoy CPU time it cost per request: on a shared, noisy machine the
    CPU per request moves far less than requests per second."""
    before = envoy.cpu_seconds()
    out = wrk(port, duration)
    out["cpu_us"] = (envoy.cpu_seconds() - before) / out["requests"] * 1e6
    return out


def oha(port: int, rate: float, duration: float) -> dict:
    out = subprocess.run(
        pinned(1, [str(OHA), "-z", f"{duration}s", "-q", f"{rate:.0f}", "-c", str(CONNECTIONS),
                   "--latency-correction", "--no-tui",
                   "--output-format", "json", "-H", f"Host: {HOST}", *AUTH, f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    data = json.loads(out)
    codes = data.get("statusCodeDistribution", {})
    if set(codes) - {"200"}:
        raise RuntimeError(f"port {port}: non-200 answers {codes}")
    pct = data["latencyPercentiles"]
    return {"p50": pct["p50"], "p99": pct["p99"], "rps": data["summary"]["requestsPerSec"]}


def hammer(port: int, requests: int) -> None:
    """Sends exactly `requests` requests as fast as it can (oha -n)."""
    subprocess.run(
        pinned(1, [str(OHA), "-n", str(requests), "-c", str(CONNECTIONS), "--no-tui",
                   "--output-format", "json", "-H", f"Host: {HOST}", *AUTH, f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, timeout=3600, check=True)


def decision_times(smoke: bool) -> dict[str, float]:
    """The core's decision natively, from Criterion's estimates (ns, mean)."""
    args = ["cargo", "bench", "--bench", "decision", "--"]
    if smoke:
        args += ["--warm-up-time", "0.2", "--measurement-time", "0.5", "--sample-size", "10"]
    subprocess.run(args, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    out = {}
    for group in ("last_route", "authz_no_match"):
        for est in sorted((REPO / "target" / "criterion" / "decision" / group).glob("*/new/estimates.json")):
            out[est.parent.parent.name] = json.loads(est.read_text())["mean"]["point_estimate"]
    if not out:
        raise RuntimeError("no Criterion estimates found")
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def us(seconds_: float) -> str:
    return f"{seconds_ * 1e6:.0f}"


def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="meshrules-bench-"))
    up_port, test_admin = free_port(), free_port()
    ports = {k: free_port() for k in args.listeners}
    jwks = jwt_material()
    started = []
    try:
        upstream = Envoy("upstream", cfg.upstream(free_port(), up_port), work, cpu=1)
        started.append(upstream)
        floor = mem.build_floor(work / "floor.wasm")
        steps = host_calls.modules(work)
        inert = mem.inert_module(WASM, work / "inert.wasm")
        every = {
            "a": lambda p: cfg.plain_listener(p), "b": lambda p: cfg.native_listener(p, jwks),
            "c": lambda p: cfg.meshrules_listener(p, str(WASM), cfg.rules_with_security(jwks)),
            "d": lambda p: cfg.meshrules_listener(p, str(WASM), cfg.rules_with_security(jwks, token_cache=False),
                                                  name="d_meshrules_no_token_cache"),
            "e": lambda p: cfg.meshrules_listener(p, str(WASM), cfg.RULES, name="e_meshrules_routing_only"),
            "f": lambda p: cfg.native_listener(p, jwks, jwt_cache=True, name="f_native_jwt_cache"),
            "g": lambda p: cfg.meshrules_listener(p, str(WASM), cfg.RATE_LIMITED, name="g_meshrules_rate_limited"),
            "h": lambda p: cfg.meshrules_listener(p, str(WASM), cfg.RULES, name="h_meshrules_no_destination_metrics",
                                                  vm_env=cfg.NO_DESTINATION_METRICS),
            "i": lambda p: cfg.meshrules_listener(p, str(floor), EMPTY_RULES, name="i_floor_module"),
            "j": lambda p: cfg.meshrules_listener(p, str(WASM), cfg.SPLIT_ONLY, name="j_meshrules_split_only"),
            "k": lambda p: cfg.native_listener(p, jwks, name="k_native_routing_only", security=False),
            **{k: (lambda p, m=m, k=k: cfg.meshrules_listener(p, str(m), EMPTY_RULES, name=f"{k}_floor_step"))
               for k, m in steps.items()},
            "t": lambda p: cfg.meshrules_listener(p, str(inert), EMPTY_RULES, name="t_meshrules_inert"),
        }
        listeners = [every[k](p) for k, p in ports.items()]
        envoy = Envoy("under-test", cfg.bootstrap(test_admin, listeners, up_port), work, cpu=0)
        started.append(envoy)

        # Warm up every listener (V8 tiers up the filter under load).
        for p in ports.values():
            wrk(p, args.warmup)

        rounds = []
        for _ in range(args.rounds):
            rounds.append({k: measured(envoy, p, args.duration) for k, p in ports.items()})
        check_steps(envoy, ports)
        if args.throughput_only:
            return cpu_report(args, rounds)

        sat_b = median([r["b"]["rps"] for r in rounds])
        rate = sat_b / 2
        fixed = []
        for _ in range(args.rounds):
            fixed.append({k: oha(ports[k], rate, args.fixed_duration) for k in ("b", "c")})

        # VM linear memory: sampled by the filter every 1024 requests.
        hammer(ports["c"], args.warm_requests)
        mem_before = envoy.stat("wasmcustom.meshrules_vm_memory_bytes")
        rss_before = envoy.rss_bytes()
        hammer(ports["c"], args.memory_requests)
        mem_after = envoy.stat("wasmcustom.meshrules_vm_memory_bytes")
        long_run = {"rss": (rss_before, envoy.rss_bytes()), "vm": (mem_before, mem_after)}
        envoy.stop()
        started.remove(envoy)

        # Process memory with and without the filter: one listener each, same warm-up.
        memory = {}
        for label, listener in (("without filter", cfg.plain_listener), ("with filter", None)):
            port = free_port()
            lst = listener(port) if listener else cfg.meshrules_listener(port, str(WASM), cfg.rules_with_security(jwks))
            e = Envoy(f"memory-{label.replace(' ', '-')}", cfg.bootstrap(free_port(), [lst], up_port), work, cpu=0)
            started.append(e)
            hammer(port, args.warm_requests)
            memory[label] = {"rss": e.rss_bytes(), "allocated": e.stat("server.memory_allocated")}
            e.stop()
            started.remove(e)

        footprint_data = memory_section(args, work, up_port)
        decisions = decision_times(args.smoke)
    finally:
        for e in started:
            e.stop()

    return report(args, rounds, fixed, rate, decisions, memory, long_run, footprint_data)


# t: meshrules' own module made inert (bench/memory.py inert_module: every export answers as the
# floor's do), so t − i is what carrying its code costs per request and j − t what running it does.
LISTENERS = "abcdefghijk" + "".join(host_calls.STEPS) + host_calls.ALL_CALLS[0] + "t"


def check_steps(envoy: Envoy, ports: dict) -> None:
    """The host-call steps did their calls: their metrics counted, their cluster header routed."""
    if {"q", "s"} & set(ports) and envoy.stat("wasmcustom.floor_responses") == 0:
        raise RuntimeError("the metrics step counted nothing")
    if {"o", "s"} & set(ports) and envoy.stat(f"cluster.{cfg.V1}.upstream_rq_total") == 0:
        raise RuntimeError("the cluster header step routed nothing to its cluster")


def per_round(rounds: list[dict], f) -> list[float]:
    return [f(r) for r in rounds]


def cpu_diff(rounds: list[dict], x: str, y: str) -> list[float]:
    return per_round(rounds, lambda r: r[x]["cpu_us"] - r[y]["cpu_us"])


def listeners_table(rounds: list[dict]) -> list[str]:
    """Every listener measured: medians over the rounds."""
    lines = [f"| listener | req/s | p99 µs | Envoy CPU µs/req | Envoy CPU µs/req per round ({len(rounds)} rounds) |",
             "|---|---|---|---|---|"]
    for k in rounds[0]:
        lines.append(f"| {k} | {median([r[k]['rps'] for r in rounds]):.0f} | {us(median([r[k]['p99'] for r in rounds]))} "
                     f"| {median([r[k]['cpu_us'] for r in rounds]):.1f} | "
                     + " ".join(f"{r[k]['cpu_us']:.0f}" for r in rounds) + " |")
    return lines


def routing_rows(rounds: list[dict]) -> list[str]:
    """The headline rows on the routing rules alone (e against k) and on a plain split (j − i)."""
    have = set(rounds[0])
    lines = []
    if {"e", "k"} <= have:
        ek = per_round(rounds, lambda r: r["e"]["rps"] / r["k"]["rps"])
        cpu_ek = per_round(rounds, lambda r: r["e"]["cpu_us"] / r["k"]["cpu_us"])
        lines += [f"| throughput e/k, the routing rules alone: meshrules against native (median of per-round "
                  f"ratios) | {median(ek):.3f} | >= 0.95 |",
                  f"| Envoy CPU per request e/k (median of per-round ratios) | {median(cpu_ek):.3f} "
                  f"(e costs {median(cpu_diff(rounds, 'e', 'k')):+.1f} µs CPU per request) | |"]
    if {"j", "i"} <= have:
        lines.append(f"| meshrules on a plain 90/10 split over the floor module, Envoy CPU per request (j − i) "
                     f"| {median(cpu_diff(rounds, 'j', 'i')):+.1f} µs | <= 3 µs |")
    return lines


def decomposition(rounds: list[dict]) -> list[str]:
    """Each host-call step over the floor, and what is left of j for meshrules' own code."""
    have = set(rounds[0])
    if "i" not in have or not set(host_calls.STEPS) & have:
        return []
    n = len(rounds)
    lines = ["", "## Where the routing cost goes (host calls over the floor)", "",
             "The floor module (i) plus one kind of host call each (bench/host_calls.py), on the meshrules "
             "listeners' route table; Envoy CPU per request over the floor, median of the per-round "
             f"differences over {n} rounds. Steps marked ×{host_calls.REPEAT} make their calls "
             f"{host_calls.REPEAT} times per request (one call is below the noise) and are divided back. "
             "'in j': the step as many times as meshrules makes it per request on the plain split "
             "(per-destination metrics on).", "",
             "| listener | step | over the floor µs/req (per set of calls) | in j, µs/req |", "|---|---|---|---|"]
    in_j = 0.0
    for k, (label, _, _, repeated, count) in host_calls.STEPS.items():
        if k not in have:
            continue
        times = host_calls.REPEAT if repeated else 1
        one = median(cpu_diff(rounds, k, "i")) / times
        in_j += one * count
        lines.append(f"| {k} | {label}{f' ×{times}' if repeated else ''} | {one:+.2f} | {one * count:+.2f} |")
    lines.append(f"| | sum of the steps as meshrules makes them | | {in_j:+.2f} |")
    if {"n", "o"} <= have:
        lines.append(f"| o − n | of the cluster header's cost, the `cluster_header` route (Istio's retry policy, "
                     f"another cluster) rather than the plain one | {median(cpu_diff(rounds, 'o', 'n')):+.1f} | |")
    key, label, _, _ = host_calls.ALL_CALLS
    if key in have:
        lines.append(f"| {key} | {label} | {median(cpu_diff(rounds, key, 'i')):+.1f} | |")
    if "j" in have:
        lines.append(f"| j | meshrules on the plain split (j − i) | {median(cpu_diff(rounds, 'j', 'i')):+.1f} | |")
        if key in have:
            lines.append(f"| j − {key} | meshrules' own code: j minus the floor making all its host calls "
                         f"| {median(cpu_diff(rounds, 'j', key)):+.1f} | |")
    if {"t", "i"} <= have:
        lines.append(f"| t − i | meshrules' module loaded, nothing of it run (every export answers as the floor's) "
                     f"| {median(cpu_diff(rounds, 't', 'i')):+.1f} | |")
    if {"j", "t"} <= have:
        lines.append(f"| j − t | meshrules' code running on the plain split, host calls included "
                     f"| {median(cpu_diff(rounds, 'j', 't')):+.1f} | |")
    if "a" in have:
        lines.append(f"| i − a | the floor itself: Envoy's per-stream Wasm callbacks, nothing done "
                     f"| {median(cpu_diff(rounds, 'i', 'a')):+.1f} | |")
    return lines


def cpu_report(args: argparse.Namespace, rounds: list[dict]) -> str:
    """`--throughput-only`: the listeners asked for, the routing rows and the decomposition."""
    return "\n".join([
        "# meshrules benchmarks: throughput only", "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Command: `{' '.join(['bench/run.py', *sys.argv[1:]])}`",
        f"- {args.rounds} interleaved rounds of {args.duration:g} s per listener; listeners as in BENCHMARKS.md.",
        "", "| measure | value | target |", "|---|---|---|", *routing_rows(rounds), "",
        *listeners_table(rounds), *decomposition(rounds), ""])


# The memory section (issue 13): Envoy's RSS with no Wasm filter, with the floor module (every
# proxy-wasm callback exported, doing nothing: V8 and one VM without meshrules' code) and with
# meshrules, each in its own Envoy after the same requests.
EMPTY_RULES: dict = {"resources": []}
FOOTPRINT_VARIANTS = ("no filter", "floor module", "meshrules, empty rules", "meshrules, demo rules")
FLOOR_TARGET = 15 * 2**20  # meshrules' RSS <= floor + 15 MiB
RULES_TARGET = 4.0  # compiled rules <= 4x their JSON in VM memory


def memory_listener(variant: str, port: int, floor: Path, wasm: Path = WASM) -> dict:
    if variant == "no filter":
        return cfg.plain_listener(port)
    if variant == "floor module":
        return cfg.meshrules_listener(port, str(floor), EMPTY_RULES, name="floor")
    rules = EMPTY_RULES if "empty" in variant else cfg.RULES
    return cfg.meshrules_listener(port, str(wasm), rules)


def measure_memory(work: Path, up_port: int, name: str, listeners: list, requests: int, concurrency: int = 1,
                   extra: dict | None = None) -> dict:
    """One Envoy with `listeners`, `requests` sent to each, then its memory (bench/memory.py)."""
    envoy = Envoy(name, {**cfg.bootstrap(free_port(), listeners, up_port), **(extra or {})}, work,
                  cpu="0" if concurrency == 1 else "0-1", concurrency=concurrency)
    try:
        for lst in listeners:
            hammer(lst["address"]["socket_address"]["port_value"], requests)
        out = mem.snapshot(envoy)
        try:
            out["vm"] = envoy.stat("wasmcustom.meshrules_vm_memory_bytes")
        except KeyError:
            out["vm"] = None
        return out
    finally:
        envoy.stop()


def footprint(args: argparse.Namespace, work: Path, up_port: int, floor: Path) -> dict:
    """RSS of each variant at each concurrency, rounds interleaved, median per cell."""
    cells: dict = {}
    for _ in range(args.memory_rounds):
        for c in args.concurrencies:
            for v in FOOTPRINT_VARIANTS:
                m = measure_memory(work, up_port, f"footprint-{c}", [memory_listener(v, free_port(), floor)],
                                   args.footprint_requests, concurrency=c)
                cells.setdefault((c, v), []).append(m)
    return {k: {f: median([m[f] for m in ms]) for f in ("rss", "anon", "file", "allocated", "heap", "code")}
            for k, ms in cells.items()}


def listener_scaling(args: argparse.Namespace, work: Path, up_port: int) -> dict:
    """RSS against the number of listeners carrying meshrules with one vm_id (one VM shared,
    one plugin each)."""
    out = {}
    for n in args.listener_counts:
        lst = [cfg.meshrules_listener(free_port(), str(WASM), cfg.RULES, name=f"l{i}", vm_id="shared")
               for i in range(n)]
        out[n] = measure_memory(work, up_port, f"listeners-{n}", lst, args.footprint_requests)
    return out


def vm_updates(args: argparse.Namespace, work: Path, up_port: int) -> list[dict]:
    """RSS across ECDS updates of the filter: first the rules only (same VM key), then a new
    WasmPlugin resource version in the VM environment as istiod writes it (a new VM each)."""
    ecds = work / "ecds" / "meshrules.json"
    ecds.parent.mkdir(exist_ok=True)
    steps = [("start", cfg.RULES, "1")]
    # Each update differs from the one before (Envoy skips an identical one).
    steps += [("rules changed", {**cfg.RULES, "routing": {}}, "1"), ("rules changed back", cfg.RULES, "1")]
    steps += [(f"resource version {v} (new VM)", cfg.RULES, v) for v in map(str, range(2, 2 + args.vm_updates))]
    port = free_port()
    out = []
    mem.write_ecds(ecds, mem.ecds_resource(str(WASM), steps[0][1], "meshrules", {mem.RESOURCE_VERSION_ENV: "1"}), 0)
    envoy = Envoy("ecds", cfg.with_node(cfg.bootstrap(free_port(), [cfg.ecds_listener(port, str(ecds))], up_port)),
                  work, cpu=0)
    try:
        reload = "extension_config_discovery.http_filter.meshrules.config_reload"
        for version, (label, rules, resource_version) in enumerate(steps):
            if version:
                before = envoy.stat(reload)
                mem.write_ecds(ecds, mem.ecds_resource(str(WASM), rules, "meshrules",
                                                       {mem.RESOURCE_VERSION_ENV: resource_version}), version)
                deadline = time.monotonic() + 30
                while envoy.stat(reload) <= before:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"ECDS update {version} not applied")
                    time.sleep(0.05)
            hammer(port, args.footprint_requests)
            out.append({"label": label, **mem.snapshot(envoy)})
    finally:
        envoy.stop()
    return out


def rule_scaling(args: argparse.Namespace, work: Path, up_port: int) -> dict:
    """VM linear memory and RSS against N generated 10-route VirtualServices (--concurrency 1);
    the compiled rules' share is the VM memory above the empty rule set's."""
    out = {}
    for n in (0, *args.vs_counts):
        rules = mem.generated_virtual_services(n) if n else EMPTY_RULES
        m = measure_memory(work, up_port, f"rules-{n}", [cfg.meshrules_listener(free_port(), str(WASM), rules)],
                           args.footprint_requests)
        m["json"] = len(json.dumps(rules))
        out[n] = m
    return out


def code_size_slope(args: argparse.Namespace, work: Path, up_port: int) -> list[dict]:
    """RSS against code: meshrules' own code made inert (exports answer as the floor's do,
    so nothing of it runs) with a share of its function bodies kept; the floor padded with
    synthetic straight-line code; the floor plus as many one-instruction functions as
    meshrules has (what a function costs whatever its size), exported or not."""
    modules = [("meshrules code, inert", f"{keep:.0%} of bodies",
                mem.inert_module(WASM, work / f"inert-{keep}.wasm", keep)) for keep in args.inert_keep]
    modules += [("synthetic padding", f"{kib} KiB", mem.build_floor(work / f"floor-pad{kib}.wasm", kib))
                for kib in args.pad_kib]
    functions = mem.function_count(WASM)
    modules += [("trivial functions", f"{functions}{' exported' if exported else ''}",
                 mem.build_floor(work / f"floor-trivial-{exported}.wasm", trivial=functions, export_trivial=exported))
                for exported in (False, True)]
    out = []
    for series, label, module in modules:
        m = measure_memory(work, up_port, "code-size", [cfg.meshrules_listener(free_port(), str(module), EMPTY_RULES,
                                                                                name="code")],
                           args.footprint_requests)
        out.append({"series": series, "label": label, "module_bytes": module.stat().st_size,
                    "code_bytes": mem.code_section_bytes(module), "functions": mem.function_count(module), **m})
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


# Levers tried on meshrules' RSS: each a variant of the demo-rules Envoy at --concurrency 1.
LEVERS = {
    # tcmalloc keeps the pages V8's compiler freed; Envoy >= 1.30 can hand them back.
    "bootstrap memory_allocator_manager (release 100 MiB every 1 s)": {
        "memory_allocator_manager": {"bytes_to_release": 100 * 2**20, "memory_release_interval": "1s"}},
}


def memory_levers(args: argparse.Namespace, work: Path, up_port: int, floor: Path) -> dict:
    out = {}
    for _ in range(args.memory_rounds):
        for label, extra in {"baseline": {}, **LEVERS}.items():
            m = measure_memory(work, up_port, "lever", [memory_listener("meshrules, demo rules", free_port(), floor)],
                               args.footprint_requests, extra=extra)
            out.setdefault(label, []).append(m)
    return {k: {f: median([m[f] for m in ms]) for f in ("rss", "anon", "allocated", "heap")} for k, ms in out.items()}


def memory_section(args: argparse.Namespace, work: Path, up_port: int) -> dict:
    floor = mem.build_floor(work / "floor.wasm")
    steps = {"footprint": lambda: footprint(args, work, up_port, floor),
             "listeners": lambda: listener_scaling(args, work, up_port),
             "updates": lambda: vm_updates(args, work, up_port),
             "rules": lambda: rule_scaling(args, work, up_port),
             "code_size": lambda: code_size_slope(args, work, up_port),
             "levers": lambda: memory_levers(args, work, up_port, floor),
             "load": lambda: load_time.section(sys.modules[__name__], args, work, up_port)}
    out = {"floor_bytes": floor.stat().st_size}
    for name, step in steps.items():
        started = time.monotonic()
        out[name] = step()
        print(f"memory: {name} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return out


def mib(b: float) -> str:
    return f"{b / 2**20:.1f}"


def footprint_headline(args: argparse.Namespace, m: dict) -> list[str]:
    """Headline rows for issue 13's memory and load targets, from the memory section."""
    fp = m["footprint"]
    above = [fp[(c, "meshrules, demo rules")]["rss"] - fp[(c, "floor module")]["rss"] for c in args.concurrencies]
    rs = m["rules"]
    most = max(rs)
    ratio = ((rs[most]["vm"] or 0) - (rs[0]["vm"] or 0)) / rs[most]["json"]
    big = max(m["load"]["static"], key=lambda x: x["count"])
    swap = m["load"]["swap"]
    return [
        f"| Envoy RSS with meshrules (demo rules) over the floor module at --concurrency "
        f"{'/'.join(map(str, args.concurrencies))} | {', '.join(f'{a / 2**20:+.1f}' for a in above)} MiB "
        f"| <= +{mib(FLOOR_TARGET)} MiB |",
        f"| compiled rules in VM memory / their JSON, {most} VirtualServices of 10 routes | {ratio:.1f}x "
        f"| <= {RULES_TARGET:g}x |",
        f"| {big['count']} VirtualServices: compile per VM (each VM's own log line) | "
        f"{', '.join(map(str, big['vm_ms']))} ms | <= {load_time.LOAD_TARGET_MS} ms |",
        f"| live ECDS swap of {swap['count']} VirtualServices under wrk: requests timed out "
        f"({load_time.ROUTE_TIMEOUT}) or answered other than 2xx/3xx, of all; slowest | {swap['timeouts'] + swap['non2xx']} "
        f"of {swap['requests']}; {swap['max_s']:.2f} s | 0 |",
    ]


def memory_report(args: argparse.Namespace, m: dict) -> list[str]:
    fp = m["footprint"]
    lines = [
        "",
        "## Memory footprint",
        "",
        f"Each cell is its own Envoy (one listener, {args.footprint_requests} requests served, "
        f"median of {args.memory_rounds} rounds); RSS from /proc/PID/status, allocated and heap "
        "from admin `/memory` (tcmalloc), code = resident rwx mappings (V8's Wasm code space). "
        f"The floor module ({m['floor_bytes']} bytes, bench/memory.py) exports every proxy-wasm "
        "callback and does nothing.",
        "",
        "| concurrency | variant | RSS MiB | anon MiB | file MiB | allocated MiB | heap MiB | code MiB "
        "| above floor MiB | anon above floor MiB | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in args.concurrencies:
        floor = fp[(c, "floor module")]
        for v in FOOTPRINT_VARIANTS:
            x = fp[(c, v)]
            above = x["rss"] - floor["rss"]
            target = (f"<= {mib(FLOOR_TARGET)} ({'met' if above <= FLOOR_TARGET else 'not met'})"
                      if v.startswith("meshrules") else "")
            lines.append(f"| {c} | {v} | {mib(x['rss'])} | {mib(x['anon'])} | {mib(x['file'])} | "
                         f"{mib(x['allocated'])} | {mib(x['heap'])} | {mib(x['code'])} | {above / 2**20:+.1f} | "
                         f"{(x['anon'] - floor['anon']) / 2**20:+.1f} | {target} |")
    ls = m["listeners"]
    lines += ["", "### Listeners carrying meshrules with one `vm_id` (demo rules, --concurrency 1)", "",
              "| listeners | RSS MiB | allocated MiB | heap MiB | RSS per extra listener MiB |", "|---|---|---|---|---|"]
    first = min(ls)
    for n, x in ls.items():
        per = (x["rss"] - ls[first]["rss"]) / (n - first) / 2**20 if n > first else 0
        lines.append(f"| {n} | {mib(x['rss'])} | {mib(x['allocated'])} | {mib(x['heap'])} | {per:.2f} |")
    lines += ["", "### Filter updates through ECDS (one Envoy, --concurrency 1)", "",
              "Rules changed: new configuration, same VM key. Resource version: "
              f"`{mem.RESOURCE_VERSION_ENV}` in the VM environment changes, as istiod writes for every "
              "WasmPlugin change (a new VM key, so Envoy builds a new VM and drops the old one).", "",
              "| step | RSS MiB | allocated MiB | heap MiB | code MiB |", "|---|---|---|---|---|"]
    for x in m["updates"]:
        lines.append(f"| {x['label']} | {mib(x['rss'])} | {mib(x['allocated'])} | {mib(x['heap'])} | {mib(x['code'])} |")
    rs = m["rules"]
    base = rs[0]["vm"] or 0
    lines += ["", "### Rules: generated 10-route VirtualServices (--concurrency 1)", "",
              "VM memory = `meshrules_vm_memory_bytes` (linear memory, which never shrinks, so it "
              "includes the peak of parsing); compiled = above the empty rule set's.", "",
              "| VirtualServices | JSON KiB | VM memory MiB | compiled / JSON | target | RSS MiB |",
              "|---|---|---|---|---|---|"]
    for n, x in rs.items():
        ratio = ((x["vm"] or 0) - base) / x["json"] if n else 0
        target = f"<= {RULES_TARGET:g}x ({'met' if ratio <= RULES_TARGET else 'not met'})" if n else ""
        lines.append(f"| {n} | {x['json'] / 1024:.0f} | {mib(x['vm'] or 0)} | {ratio:.2f}x | {target} | {mib(x['rss'])} |"
                     if n else f"| 0 (empty) | {x['json'] / 1024:.0f} | {mib(x['vm'] or 0)} | | | {mib(x['rss'])} |")
    cs = m["code_size"]
    floor = m["footprint"][(1, "floor module")]["rss"]
    lines += ["", "### RSS against module code (--concurrency 1, empty rules)", "",
              "Inert meshrules: the shipped module with every export answering as the floor's do "
              "(nothing of meshrules runs; V8 still compiles every function) and only a share of "
              "the other functions' bodies kept (the rest `unreachable`). Slope: least squares of "
              "RSS on code-section bytes within a series.", ""]
    for series in dict.fromkeys(x["series"] for x in cs):
        pts = [(x["code_bytes"], x["rss"]) for x in cs if x["series"] == series]
        if max(x for x, _ in pts) - min(x for x, _ in pts) > 10 * 1024:
            lines.append(f"- {series}: {slope(pts) * 100 * 1024 / 2**20:.2f} MiB of RSS per 100 KiB of code "
                         f"({len(pts)} modules)")
    lines += ["", "| series | module | module KiB | code section KiB | functions | RSS MiB | above floor MiB "
              "| allocated MiB | heap MiB | code MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in cs:
        lines.append(f"| {x['series']} | {x['label']} | {x['module_bytes'] / 1024:.0f} | {x['code_bytes'] / 1024:.0f} | "
                     f"{x['functions']} | {mib(x['rss'])} | {(x['rss'] - floor) / 2**20:+.1f} | {mib(x['allocated'])} | "
                     f"{mib(x['heap'])} | {mib(x['code'])} |")
    lv = m["levers"]
    lines += ["", "### Memory levers (meshrules, demo rules, --concurrency 1)", "",
              "| lever | RSS MiB | anon MiB | allocated MiB | heap MiB | RSS change MiB |", "|---|---|---|---|---|---|"]
    for label, x in lv.items():
        lines.append(f"| {label} | {mib(x['rss'])} | {mib(x['anon'])} | {mib(x['allocated'])} | {mib(x['heap'])} | "
                     f"{(x['rss'] - lv['baseline']['rss']) / 2**20:+.1f} |")
    return lines + load_time.report(m["load"])


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    envoy = first_line([str(ENVOY), "--version"])
    m = re.search(r"version: \S+/([\d.]+)/", envoy)
    return {"envoy": m.group(1) if m else envoy, "rustc": first_line(["rustc", "--version"]),
            "wrk": first_line(["wrk", "-v"]).split(" [")[0], "oha": first_line([str(OHA), "--version"])}


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({model}), {mem:.0f} GiB, Linux {platform.release()}"


def report(args, rounds, fixed, rate, decisions, memory, long_run, footprint_data) -> str:
    mem_before, mem_after = long_run["vm"]
    rss_before, rss_after = long_run["rss"]
    v = versions()
    raw, opt = RAW_WASM.stat().st_size, WASM.stat().st_size
    try:
        size_section, sizes = size.report(shipped=WASM, raw=RAW_WASM)
        biggest = sizes["largest"][0]
        largest = (f"{biggest['bytes'] / 1024:.1f} KiB, `{size.md(biggest['name'])}` "
                   f"({sizes['functions_over_10KiB']})")
    except (size.StaleNames, OSError) as e:  # MESHRULES_WASM: another module than `make build`'s
        size_section, largest = f"{size.HEADING}\n\nNot measured: {e}\n", "n/a"
    cb = [r["c"]["rps"] / r["b"]["rps"] for r in rounds]
    cf = [r["c"]["rps"] / r["f"]["rps"] for r in rounds]
    cpu_cf = [r["c"]["cpu_us"] / r["f"]["cpu_us"] for r in rounds]
    ca = [r["c"]["rps"] / r["a"]["rps"] for r in rounds]
    cpu_cb = [r["c"]["cpu_us"] / r["b"]["cpu_us"] for r in rounds]
    cpu_extra = [r["c"]["cpu_us"] - r["b"]["cpu_us"] for r in rounds]
    p99_b = median([f["b"]["p99"] for f in fixed])
    p99_c = median([f["c"]["p99"] for f in fixed])
    d100 = decisions.get("100routes_10hosts")
    jwt_hit = [r["c"]["cpu_us"] - r["e"]["cpu_us"] for r in rounds]
    jwt_miss = [r["d"]["cpu_us"] - r["e"]["cpu_us"] for r in rounds]
    rate_limit = [r["g"]["cpu_us"] - r["e"]["cpu_us"] for r in rounds]
    destination_metrics = [r["e"]["cpu_us"] - r["h"]["cpu_us"] for r in rounds]
    floor_cost = [r["i"]["cpu_us"] - r["a"]["cpu_us"] for r in rounds]
    miss_vs_native = [(r["d"]["cpu_us"] - r["e"]["cpu_us"]) / (r["b"]["cpu_us"] - r["f"]["cpu_us"])
                      for r in rounds if r["b"]["cpu_us"] > r["f"]["cpu_us"]]
    lines = [
        "# meshrules benchmarks",
        "",
        "Regenerated by `make bench` (`bench/run.py`); do not edit by hand.",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {machine()}",
        f"- Envoy {v['envoy']} (V8), {v['rustc']}, {v['wrk']}, {v['oha']}",
        f"- Command: `{' '.join(['bench/run.py', *sys.argv[1:]])}`",
        f"- Setup: one Envoy under test, `--concurrency 1`, pinned to CPU 0; upstream (Envoy "
        f"`direct_response`) and load generators on CPU 1; {CONNECTIONS} connections; "
        f"{args.rounds} interleaved rounds of {args.duration:g} s per listener.",
        "- Listeners: (a) no rules, plain route; (b) the demo rules as Envoy native config, as "
        "istiod writes them (`jwt_authn` with an inline ES256 key, RBAC ALLOW on the token's "
        "issuer/subject and the method, header match route, weighted clusters, "
        "`envoy.filters.http.fault` at 0%, timeout, Istio's default retry policy); (c) the same "
        "rules in meshrules (RequestAuthentication, AuthorizationPolicy, VirtualService); "
        "(d) as c with `security.tokenCacheSize: 0`, so every token is verified again; (e) "
        "meshrules with the VirtualService only; (f) as b with jwt_authn's own verified-token "
        "cache on (`jwt_cache_config`, which istiod does not set), the like-for-like of c; "
        "(g) as e with a rate limit (a LocalRateLimit on every route, a bucket that never runs "
        "dry, shared data across VMs); (h) as e without the per-destination metrics "
        "(`MESHRULES_DESTINATION_METRICS=off`); (i) the floor module (bench/memory.py: every "
        "proxy-wasm callback exported, nothing done) on the same route table as the meshrules "
        "listeners; (j) meshrules with a plain 90/10 split only; (k) as b without `jwt_authn` and "
        "RBAC: the native routing rules alone, the like-for-like of e; (l..s) the floor module plus "
        "one kind of host call each, as meshrules makes them (bench/host_calls.py, \"Where the "
        "routing cost goes\" below); (t) meshrules' module with every export answering as the "
        "floor's (bench/memory.py `inert_module`): its code loaded, none of it run. Every request carries the same valid token.",
        "",
        "## Headline",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| throughput c/b (median of per-round ratios) | {median(cb):.3f} | >= 0.95 |",
        f"| throughput c/f, f = b with Envoy's JWT cache on (median of per-round ratios) | {median(cf):.3f} | |",
        f"| throughput c/a (median of per-round ratios) | {median(ca):.3f} | |",
        f"| Envoy CPU per request c/b (median of per-round ratios) | {median(cpu_cb):.3f} "
        f"(c costs {median(cpu_extra):+.1f} µs CPU per request) | <= 1.05 (same budget as throughput) |",
        f"| Envoy CPU per request c/f (median of per-round ratios) | {median(cpu_cf):.3f} | |",
        f"| p99 latency c − b at {rate:.0f} req/s (half of b's saturation) | {us(p99_c - p99_b)} µs | <= 50 µs |",
        f"| core decision, 100 routes on 10 hosts (native, mean) | {d100:.0f} ns | <= 1000 ns |"
        if d100 is not None else "| core decision | n/a | |",
        f"| JWT check + ALLOW policy in meshrules, Envoy CPU per request: verified-token cache hit (c − e) "
        f"| {median(jwt_hit):+.1f} µs | |",
        f"| same, cache miss: ES256 signature verified every request (d − e) | {median(jwt_miss):+.1f} µs | |",
        f"| cache miss against jwt_authn's signature check: (d − e) / (b − f) (median of per-round "
        f"ratios, {len(miss_vs_native)} rounds) | "
        + (f"{median(miss_vs_native):.2f}" if miss_vs_native else "n/a") + " | <= 2 |",
        f"| the floor module (every proxy-wasm callback, nothing done) over no filter, Envoy CPU per "
        f"request (i − a) | {median(floor_cost):+.1f} µs | |",
        *routing_rows(rounds),
        f"| rate limit check (route bucket in shared data), Envoy CPU per request (g − e) "
        f"| {median(rate_limit):+.1f} µs | |",
        f"| per-destination metrics (a response counter by code and a duration histogram sample), "
        f"Envoy CPU per request (e − h) | {median(destination_metrics):+.1f} µs | |",
        f"| wasm module after wasm-opt (raw) | {opt / 1024:.0f} KiB ({raw / 1024:.0f} KiB) | <= 400 KB |",
        f"| largest function in the module (functions above 10 KiB) | {largest} | <= ~10 KB (0) |",
        f"| VM linear memory after {args.warm_requests} → +{args.memory_requests} requests | "
        f"{mem_before / 2**20:.2f} MiB → {mem_after / 2**20:.2f} MiB | flat |",
        f"| Envoy RSS ({len(rounds[0])} listeners) after {args.warm_requests} → +{args.memory_requests} requests to c | "
        f"{mib(rss_before)} MiB → {mib(rss_after)} MiB | flat |",
        *footprint_headline(args, footprint_data),
        "",
        "## Throughput (wrk, saturating)",
        "",
        "| round | a req/s | b req/s | c req/s | d req/s | e req/s | f req/s | c/b | c/f | c/a | a p99 µs | b p99 µs "
        "| c p99 µs | a CPU µs/req | b CPU µs/req | c CPU µs/req | d CPU µs/req | e CPU µs/req | f CPU µs/req "
        "| CPU c/b | CPU c/f |",
        "|" + "---|" * 20,
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | " + " | ".join(f"{r[k]['rps']:.0f}" for k in "abcdef")
                     + f" | {cb[i - 1]:.3f} | {cf[i - 1]:.3f} | {ca[i - 1]:.3f} | "
                     + " | ".join(us(r[k]['p99']) for k in "abc") + " | "
                     + " | ".join(f"{r[k]['cpu_us']:.1f}" for k in "abcdef")
                     + f" | {cpu_cb[i - 1]:.3f} | {cpu_cf[i - 1]:.3f} |")

    def med(k: str, field: str) -> float:
        return median([r[k][field] for r in rounds])

    lines.append(
        "| median | " + " | ".join(f"{med(k, 'rps'):.0f}" for k in "abcdef")
        + f" | {median(cb):.3f} | {median(cf):.3f} | {median(ca):.3f} | "
        + " | ".join(us(med(k, 'p99')) for k in "abc") + " | "
        + " | ".join(f"{med(k, 'cpu_us'):.1f}" for k in "abcdef")
        + f" | {median(cpu_cb):.3f} | {median(cpu_cf):.3f} |")
    lines += ["", "### Every listener", "", *listeners_table(rounds), *decomposition(rounds)]
    lines += [
        "",
        f"## Latency at a fixed rate (oha, {rate:.0f} req/s, latency-corrected)",
        "",
        "| round | b p50 µs | c p50 µs | b p99 µs | c p99 µs | c − b p99 µs |",
        "|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(fixed, 1):
        lines.append(f"| {i} | {us(f['b']['p50'])} | {us(f['c']['p50'])} | {us(f['b']['p99'])} | "
                     f"{us(f['c']['p99'])} | {us(f['c']['p99'] - f['b']['p99'])} |")
    lines.append(f"| median | | | {us(p99_b)} | {us(p99_c)} | {us(p99_c - p99_b)} |")
    lines += [
        "",
        "## Core decision time (Criterion, native, worst case: last route of the last host; "
        "`N policies`: authorization of a request on a path none of N DENY policies of 10 "
        "rules names, flat thanks to the path index)",
        "",
        "| rule set | mean ns |",
        "|---|---|",
    ]
    for name, ns in sorted(decisions.items(), key=lambda kv: [int(x) for x in re.findall(r"\d+", kv[0])]):
        lines.append(f"| {name.replace('_', ', ')} | {ns:.0f} |")
    lines += [
        "",
        "## Memory",
        "",
        f"| Envoy (one listener, {args.warm_requests} requests served) | RSS MiB | server.memory_allocated MiB |",
        "|---|---|---|",
    ]
    for label, m in memory.items():
        lines.append(f"| {label} | {m['rss'] / 2**20:.1f} | {m['allocated'] / 2**20:.1f} |")
    lines += [
        "",
        f"Filter VM linear memory (`meshrules_vm_memory_bytes`): {mem_before} bytes after warm-up, "
        f"{mem_after} bytes after {args.memory_requests} more requests.",
        *memory_report(args, footprint_data),
        "",
        f"Wasm module: {raw} bytes raw (cargo release, wasm32-wasip1), {opt} bytes after wasm-opt.",
        "",
        size_section,
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--duration", type=float, default=8, help="seconds of wrk per listener and round")
    p.add_argument("--fixed-duration", type=float, default=10, help="seconds of fixed-rate load per round")
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--warm-requests", type=int, default=20_000)
    p.add_argument("--memory-requests", type=int, default=1_000_000)
    p.add_argument("--memory-rounds", type=int, default=3)
    p.add_argument("--footprint-requests", type=int, default=300, help="requests before each memory snapshot")
    p.add_argument("--out", type=Path, help="default BENCHMARKS.md; with --throughput-only, stdout only")
    p.add_argument("--smoke", action="store_true", help="seconds-long run that checks every step works")
    p.add_argument("--listeners", default=LISTENERS,
                   help=f"the listeners to measure (letters out of {LISTENERS}); all but with --throughput-only")
    p.add_argument("--throughput-only", action="store_true",
                   help="only the saturating rounds, the routing rows and the decomposition, into --out")
    args = p.parse_args()
    if set(args.listeners) - set(LISTENERS) or (set(args.listeners) != set(LISTENERS) and not args.throughput_only):
        p.error(f"--listeners: letters out of {LISTENERS}, a subset only with --throughput-only")
    args.listeners = "".join(k for k in LISTENERS if k in args.listeners)
    args.concurrencies, args.listener_counts, args.vm_updates = (1, 2, 4, 8), (1, 2, 4, 8), 3
    args.vs_counts, args.pad_kib, args.inert_keep = (100, 1000, 5000), (0, 400, 800), (1.0, 0.75, 0.5, 0.25, 0.0)
    args.load_counts, args.load_concurrency, args.swap_seconds = (1000, 5000), 2, 20
    if args.smoke:
        args.concurrencies, args.listener_counts, args.vm_updates = (1,), (1, 2), 1
        args.vs_counts, args.pad_kib, args.inert_keep, args.memory_rounds = (100,), (0, 50), (1.0, 0.0), 1
        args.load_counts, args.swap_seconds = (100,), 4
        args.rounds, args.duration, args.fixed_duration, args.warmup = 1, 1, 1, 1
        args.warm_requests, args.memory_requests = 2048, 4096
    # --throughput-only loads with wrk alone.
    for tool in (ENVOY, WASM) if args.throughput_only else (ENVOY, OHA, WASM):
        if not Path(tool).exists():
            print(f"missing {tool}: run through `make bench`", file=sys.stderr)
            return 2
    text = run(args)
    if args.throughput_only:
        if args.out:
            args.out.write_text(text)
        print(text)
        return 0
    args.out = args.out or REPO / "BENCHMARKS.md"
    soak = size.section_of(args.out, SOAK_HEADING)
    args.out.write_text(text + ("\n" + soak if soak else ""))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
