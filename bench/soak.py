#!/usr/bin/env python3
"""`make soak`: 1M requests through the demo rules (envoy/envoy.yaml's VirtualService,
DestinationRule and DENY policy) plus a JWT check and a rate limit, with fault aborts among
them, into one Envoy with --concurrency 2 (two worker VMs). Every chunk of load, the Wasm VMs'
memory (meshrules_vm_memory_bytes) and Envoy's RSS are sampled; the run fails unless both are
flat and no request failed (socket errors, statuses other than those the rules answer, or more
503s than the filter's aborts, more 429s than its rate-limited replies). The figures go into
BENCHMARKS.md's "Soak" section, which this script owns.

    bench/soak.py [--requests N] [--out BENCHMARKS.md]   (--smoke: 20k requests, no file)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_configs as cfg  # noqa: E402
import size  # noqa: E402
from run import AUTH, HOST, REPO, SOAK_HEADING, WASM, Envoy, free_port, jwt_material, machine, pinned  # noqa: E402

CONNECTIONS = 8
# One request in PATHS_CYCLE is aborted by the demo's fault, one takes the canary route's
# rate limit (100 tokens a second, so it runs dry under load), the others take the split.
CHUNK_S = 10
# Flat: the last sample within this of the first after warm-up.
VM_MEMORY_SLACK = 0
RSS_SLACK = 8 * 2**20


def demo_resources() -> list:
    boot = yaml.safe_load((REPO / "envoy" / "envoy.yaml").read_text())
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    return json.loads(wasm["typed_config"]["config"]["configuration"]["value"])["resources"]


def soak_rules(jwks: str) -> dict:
    jwt = cfg.security_resources(jwks)[0]  # the RequestAuthentication (no ALLOW policy: the
    # demo's DENY on /admin is the policy)
    return {"resources": demo_resources() + [jwt], "rateLimits": [{
        "name": "canary", "virtualService": "app/demoapp", "routes": ["canary"],
        "localRateLimit": {
            "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100}},
            "filter_enforced": {"default_value": {"numerator": 100}}}}]}


LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  statuses = {}
  i = 0
  local h = {["Host"] = "%(host)s", ["Authorization"] = "%(auth)s"}
  local canary = {["Host"] = "%(host)s", ["Authorization"] = "%(auth)s", ["x-canary"] = "true"}
  reqs = {wrk.format("GET", "/abort", h), wrk.format("GET", "/", canary)}
  for k = 1, 8 do table.insert(reqs, wrk.format("GET", "/", h)) end
end
function request()
  i = i + 1
  return reqs[(i %% #reqs) + 1]
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %%d %%d\\n", k, v)) end
  io.write(string.format("errors %%d\\n", summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
"""


def chunk(port: int, seconds: int, script: Path) -> tuple[dict[int, int], int]:
    out = subprocess.run(
        pinned(1, ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script),
                   f"http://127.0.0.1:{port}/"]),
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    statuses = {int(s): int(n) for s, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    errors = int(re.search(r"^errors (\d+)$", out, re.M).group(1))
    return statuses, errors


def vm_memory(envoy: Envoy) -> int:
    # One gauge for every VM of the plugin: the latest sample of any of them.
    return envoy.stat("wasmcustom.meshrules_vm_memory_bytes")


def soak(requests: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="meshrules-soak-"))
    jwks = jwt_material()
    token = AUTH[1].split(": ", 1)[1]
    script = work / "soak.lua"
    script.write_text(LUA % {"host": HOST, "auth": token})
    up_port, port = free_port(), free_port()
    started = []
    try:
        upstream = Envoy("upstream", cfg.upstream(free_port(), up_port), work, cpu=1)
        started.append(upstream)
        listener = cfg.meshrules_listener(port, str(WASM), soak_rules(jwks), name="soak")
        envoy = Envoy("soak", cfg.bootstrap(free_port(), [listener], up_port), work, cpu=0, concurrency=2)
        started.append(envoy)
        statuses: dict[int, int] = {}
        errors = 0
        samples = []
        begin = time.monotonic()
        while sum(statuses.values()) < requests:
            got, err = chunk(port, CHUNK_S, script)
            for s, n in got.items():
                statuses[s] = statuses.get(s, 0) + n
            errors += err
            samples.append({"responses": sum(statuses.values()), "vm": vm_memory(envoy),
                            "rss": envoy.rss_bytes()})
        elapsed = time.monotonic() - begin
        aborts = envoy.stat("wasmcustom.meshrules_local_replies.reason.fault_filter_abort")
        limited = envoy.stat("wasmcustom.meshrules_ratelimit_limited.limit.canary")
        jwt_valid = envoy.stat("wasmcustom.meshrules_jwt_valid")
    finally:
        for e in started:
            e.stop()
    unexpected = sum(n for s, n in statuses.items() if s not in (200, 429, 503))
    failed = errors + unexpected + max(0, statuses.get(503, 0) - aborts) + max(0, statuses.get(429, 0) - limited)
    return {"statuses": statuses, "errors": errors, "failed": failed, "samples": samples,
            "elapsed": elapsed, "aborts": aborts, "limited": limited, "jwt_valid": jwt_valid}


def mib(b: float) -> str:
    return f"{b / 2**20:.2f}"


def flat(r: dict) -> tuple[bool, bool]:
    # The first sample is after a chunk of load: V8 has tiered up and buffers have grown.
    first, last = r["samples"][0], r["samples"][-1]
    return (last["vm"] - first["vm"] <= VM_MEMORY_SLACK, last["rss"] - first["rss"] <= RSS_SLACK)


def section(r: dict) -> str:
    total = sum(r["statuses"].values())
    vm_flat, rss_flat = flat(r)
    lines = [
        SOAK_HEADING, "",
        f"Regenerated by `make soak` (`bench/soak.py`), {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, "
        f"{machine()}. The demo rules of envoy/envoy.yaml (90/10 split, canary route, fault abort, "
        "DENY on /admin) with a RequestAuthentication (inline ES256 key, every request carries "
        "a valid token) and a rate limit on the canary route (100 tokens/s); one Envoy with "
        f"`--concurrency 2` (two worker VMs) on CPU 0, wrk ({CONNECTIONS} connections) and the "
        f"upstream on CPU 1; one request in 10 is aborted, one takes the canary route.", "",
        "| measure | value |", "|---|---|",
        f"| responses | {total:,} in {r['elapsed']:.0f} s ({total / r['elapsed']:,.0f}/s) |",
        f"| by status | {', '.join(f'{s}: {n:,}' for s, n in sorted(r['statuses'].items()))} |",
        f"| filter aborts / rate-limited / valid JWTs (Envoy's counters) | {r['aborts']:,} / {r['limited']:,} / {r['jwt_valid']:,} |",
        f"| failed requests (socket errors, unexpected statuses, 503s beyond aborts, 429s beyond the limit's) | {r['failed']} |",
        f"| VM memory, first → last sample | {mib(r['samples'][0]['vm'])} → {mib(r['samples'][-1]['vm'])} MiB "
        f"({'flat' if vm_flat else 'GREW'}) |",
        f"| Envoy RSS, first → last sample | {mib(r['samples'][0]['rss'])} → {mib(r['samples'][-1]['rss'])} MiB "
        f"({'flat' if rss_flat else 'GREW'}, within {mib(RSS_SLACK)} MiB) |",
        "", "| responses | VM memory MiB | Envoy RSS MiB |", "|---|---|---|",
        *(f"| {s['responses']:,} | {mib(s['vm'])} | {mib(s['rss'])} |" for s in r["samples"]),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--smoke", action="store_true", help="20k requests, nothing written")
    args = p.parse_args()
    global CHUNK_S
    if args.smoke:
        args.requests, CHUNK_S = 20_000, 2
    r = soak(args.requests)
    text = section(r)
    print(text)
    if not args.smoke:
        size.update(args.out, text, SOAK_HEADING)
    vm_flat, rss_flat = flat(r)
    ok = r["failed"] == 0 and (args.smoke or (vm_flat and rss_flat))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
