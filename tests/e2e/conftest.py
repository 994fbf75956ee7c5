"""Fixtures for meshrules' end-to-end tests: a real upstream process, real Envoy processes
running the meshrules Wasm filter, and a plain HTTP client.

Paths come from the environment:

- ``ENVOY_BIN``: the Envoy binary (default ``<repo>/.venv/bin/envoy``, from ``make venv``).
- ``MESHRULES_WASM``: the filter (default ``<repo>/wasm/meshrules.wasm``, from ``make build``).
- ``MESHRULES_CLI``: the CLI (default ``<repo>/target/release/meshrules``, from ``make build``).

Everything listens on 127.0.0.1 only; every wait is bounded in time.
"""

from __future__ import annotations

import ctypes
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_SCRIPT = REPO / "tests" / "upstream.py"

ENVOY_BIN = Path(os.environ.get("ENVOY_BIN", str(REPO / ".venv" / "bin" / "envoy")))
MESHRULES_WASM = Path(os.environ.get("MESHRULES_WASM", str(REPO / "wasm" / "meshrules.wasm")))
MESHRULES_CLI = Path(os.environ.get("MESHRULES_CLI", str(REPO / "target" / "release" / "meshrules")))

# How long Envoy gets to come up (V8 compiles the module at start).
ENVOY_START_TIMEOUT = 30.0
# How long a rejected configuration gets to show itself (exit, or errors in the log).
REJECT_TIMEOUT = 20.0

NAMESPACE = "app"
DOMAIN = "svc.cluster.local"
CLUSTER_HEADER = "x-meshrules-cluster"
PASSTHROUGH = "passthrough"


# --------------------------------------------------------------------------------------------
# Cluster names
# --------------------------------------------------------------------------------------------


def fqdn(host: str, namespace: str = NAMESPACE) -> str:
    """The FQDN meshrules derives for a destination host written in ``namespace``."""
    return host if "." in host else f"{host}.{namespace}.{DOMAIN}"


def cluster(host: str = "demoapp", subset: str = "", port: int | str = "", namespace: str = NAMESPACE) -> str:
    """The Envoy cluster name rendered from the default template ``outbound|{port}|{subset}|{host}``."""
    return f"outbound|{port}|{subset}|{fqdn(host, namespace)}"


# Every cluster the tests route to. Each gets its own upstream listener named after it, so a
# response's ``cluster`` field and ``x-served-by`` header prove which Envoy cluster served it.
CLUSTERS: list[str] = [
    cluster(subset="v1"),
    cluster(subset="v2"),
    cluster(subset="v3"),
    cluster(),
    cluster(subset="v1", port=8080),
    cluster(port=8080),
    cluster("reviews"),
    cluster("reviews", subset="v1"),
    cluster("reviews", subset="v2"),
    cluster("ratings"),
    cluster("ratings", namespace="other"),
    cluster("shop.example.com"),
]

V1, V2, V3 = cluster(subset="v1"), cluster(subset="v2"), cluster(subset="v3")

# The filter's metrics as Envoy names them in /stats (proxy-wasm metrics get ``wasmcustom.``);
# see src/host/metrics.rs. In /stats/prometheus the ``wasmcustom.`` prefix is dropped.
STAT_CONFIG_ACCEPTED = "wasmcustom.meshrules_config_loads_accepted"
STAT_CONFIG_REJECTED = "wasmcustom.meshrules_config_loads_rejected"
STAT_DELAYS = "wasmcustom.meshrules_fault_delays_injected"
STAT_ABORTS = "wasmcustom.meshrules_fault_aborts_injected"
STAT_DELAYED_NOW = "wasmcustom.meshrules_requests_delayed"


def stat_route_requests(namespace: str, vs: str, route: str) -> str:
    return f"wasmcustom.meshrules_route_requests.namespace.{namespace}.virtual_service.{vs}.route.{route}"


def stat_unrouted_requests(namespace: str, vs: str) -> str:
    return f"wasmcustom.meshrules_unrouted_requests.namespace.{namespace}.virtual_service.{vs}"


# --------------------------------------------------------------------------------------------
# Plugin configuration builders
# --------------------------------------------------------------------------------------------


def virtual_service(name: str, hosts: list[str] | None, http: list[dict], namespace: str = NAMESPACE,
                    **spec: Any) -> dict:
    body: dict[str, Any] = {"http": http, **spec}
    if hosts is not None:
        body = {"hosts": hosts, **body}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def destination_rule(name: str, host: str, subsets: Iterable[str], namespace: str = NAMESPACE) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
    }


def to(host: str = "demoapp", subset: str | None = None, port: int | None = None,
       weight: float | None = None, **extra: Any) -> dict:
    """One ``route`` entry (an HTTPRouteDestination)."""
    dest: dict[str, Any] = {"host": host}
    if subset is not None:
        dest["subset"] = subset
    if port is not None:
        dest["port"] = {"number": port}
    out: dict[str, Any] = {"destination": dest}
    if weight is not None:
        out["weight"] = weight
    out.update(extra)
    return out


def plugin_config(*resources: dict, sticky_header: str | None = None, **routing: Any) -> dict:
    r: dict[str, Any] = {
        "clusterHeader": CLUSTER_HEADER,
        "clusterName": "outbound|{port}|{subset}|{host}",
        **routing,
    }
    if sticky_header:
        r["stickySplit"] = {"header": sticky_header}
    return {"resources": list(resources), "routing": r}


def new_test_id(label: str = "t") -> str:
    """A request id unique to one test, for the upstream's attempt counter."""
    return f"{label}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the test process dies (Linux PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class Upstreams:
    """The upstream process: one HTTP listener per cluster name (see tests/upstream.py)."""

    def __init__(self, names: Iterable[str], log_path: Path):
        self.names = list(names)
        args = [sys.executable, str(UPSTREAM_SCRIPT)]
        for n in self.names:
            args += ["--listen", f"{n}=0"]
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log,
                                     preexec_fn=_die_with_parent)
        line = self._read_ports_line(timeout=15.0)
        self.ports: dict[str, int] = json.loads(line)

    def _read_ports_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
                if b"\n" in buf:
                    return buf.split(b"\n", 1)[0].decode()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"upstream did not report its ports; log:\n{self.log_path.read_text()}")

    def port(self, name: str) -> int:
        return self.ports[name]

    def attempts(self, test_id: str) -> int:
        """How many requests carrying ``x-test-id: test_id`` reached any upstream listener."""
        port = self.ports[PASSTHROUGH]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/__attempts/{test_id}", timeout=5) as r:
            return json.loads(r.read())["count"]

    def stop(self) -> None:
        _stop_process(self.proc)
        self._log.close()


_base_ids = itertools.count((os.getpid() % 1000) * 100 + 1000)


WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def wasm_filter_config(plugin: dict | str, wasm_path: Path, failure_policy: str | None = None) -> dict:
    """The ``envoy.extensions.filters.http.wasm.v3.Wasm`` message running ``wasm_path`` with
    ``plugin`` as its configuration; ``failure_policy`` is Envoy's ``PluginConfig.failure_policy``
    (``FAIL_CLOSED``, ``FAIL_OPEN``, ``FAIL_RELOAD``; unset means FAIL_CLOSED)."""
    config_value = plugin if isinstance(plugin, str) else json.dumps(plugin)
    config: dict[str, Any] = {
        "name": "meshrules",
        "root_id": "meshrules",
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": config_value,
        },
        "vm_config": {
            "vm_id": "meshrules",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm_path)}},
        },
    }
    if failure_policy is not None:
        config["failure_policy"] = failure_policy
    return {"@type": WASM_FILTER_TYPE, "config": config}


def bootstrap(plugin: dict | str, clusters: dict[str, int], admin_port: int, listener_port: int,
              wasm_path: Path, extra: dict | None = None, failure_policy: str | None = None,
              ecds: "ExtensionConfigFile | None" = None) -> dict:
    """The Envoy bootstrap the tests run: [meshrules wasm, router], routes by cluster header.
    ``extra`` adds top-level bootstrap fields (e.g. ``stats_config``). With ``ecds`` the wasm
    filter's configuration is not in the bootstrap: Envoy discovers it from that file (ECDS),
    and ``plugin``, ``wasm_path`` and ``failure_policy`` are unused here."""
    if ecds is None:
        wasm_filter = {"name": "envoy.filters.http.wasm",
                       "typed_config": wasm_filter_config(plugin, wasm_path, failure_policy)}
    else:
        wasm_filter = ecds.http_filter()
        # Envoy's xDS subscriptions, ECDS from a file included, need a node id and cluster.
        extra = {"node": {"id": "meshrules-e2e", "cluster": "meshrules-e2e"}, **(extra or {})}
    route_config = {
        "name": "local",
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "present_match": True}]},
                        "route": {"cluster_header": CLUSTER_HEADER, "timeout": "0s"},
                    },
                    {"match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH, "timeout": "0s"}},
                ],
            }
        ],
    }
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "codec_type": "AUTO",
            # The connection's peer is the request's source (source.ip); X-Forwarded-For is
            # read by the filter only, for remote.ip, as Istio's gateways and sidecars do.
            "use_remote_address": True,
            "route_config": route_config,
            "http_filters": [
                wasm_filter,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }

    def static_cluster(name: str, port: int) -> dict:
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
            },
        }

    return {
        **(extra or {}),
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [{"filters": [hcm]}],
                }
            ],
            "clusters": [static_cluster(n, p) for n, p in clusters.items()],
        },
    }


class ExtensionConfigFile:
    """The file Envoy's ECDS reads the meshrules filter from (a ``path_config_source`` with a
    ``watched_directory``): a DiscoveryResponse holding one TypedExtensionConfig named
    ``meshrules`` whose typed_config is the Wasm filter. :meth:`write` replaces it as an operator
    should, writing a temporary file in the same directory and renaming it over the old one:
    the rename is atomic, so Envoy never reads half a file, and it is the event
    ``watched_directory`` reacts to."""

    NAME = "meshrules"

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "meshrules.json"

    def write(self, plugin: dict | str, wasm_path: Path = MESHRULES_WASM, failure_policy: str | None = None) -> None:
        response = {"resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": self.NAME,
            "typed_config": wasm_filter_config(plugin, wasm_path, failure_policy),
        }]}
        tmp = self.directory / f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(response))
        os.replace(tmp, self.path)

    def http_filter(self) -> dict:
        """The HCM http_filters entry that takes its configuration from this file."""
        return {
            "name": self.NAME,
            "config_discovery": {
                "config_source": {"path_config_source": {
                    "path": str(self.path), "watched_directory": {"path": str(self.directory)}}},
                "type_urls": [WASM_FILTER_TYPE],
            },
        }


def ecds_stat(name: str) -> str:
    """An ECDS statistic of the meshrules filter, e.g. ``config_reload``, ``config_fail``."""
    return f"extension_config_discovery.http_filter.{ExtensionConfigFile.NAME}.{name}"


class EnvoyStartError(RuntimeError):
    pass


@dataclass
class Envoy:
    """One running Envoy process."""

    config_path: Path
    log_path: Path
    port: int
    admin_port: int
    proc: subprocess.Popen
    _log_file: Any = field(repr=False, default=None)
    admin_address_path: Path | None = None
    listener_name: str = "ingress"

    def discover_ports(self) -> bool:
        """Learns the admin and listener ports Envoy bound (both configured as port 0)."""
        if not self.admin_port and self.admin_address_path and self.admin_address_path.exists():
            text = self.admin_address_path.read_text().strip()
            if text.rpartition(":")[2].isdigit():
                self.admin_port = int(text.rpartition(":")[2])
        if self.admin_port and not self.port:
            body = _http_ok(self.admin_port, "/listeners?format=json")
            if body:
                for status in json.loads(body).get("listener_statuses", []):
                    if status.get("name") == self.listener_name:
                        self.port = status["local_address"]["socket_address"].get("port_value", 0)
        return bool(self.admin_port and self.port)

    # --- addresses ------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    # --- observation ----------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def stats_prometheus(self) -> str:
        return self.admin("/stats/prometheus")[1]

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """``/stats`` as ``{name: value}`` (counters and gauges; histograms are skipped)."""
        q = f"/stats?filter={urllib.request.quote(filter_regex)}" if filter_regex else "/stats"
        out: dict[str, int] = {}
        for line in self.admin(q)[1].splitlines():
            name, sep, value = line.partition(": ")
            if sep and re.fullmatch(r"-?\d+", value.strip()):
                out[name.strip()] = int(value)
        return out

    def stat(self, name: str) -> int | None:
        """One counter or gauge by its full name (e.g. ``wasmcustom.meshrules_requests_delayed``)."""
        return self.stats("^" + re.escape(name) + "$").get(name)

    def wait_for_stat(self, name: str, value: int, timeout: float = 5.0) -> int | None:
        """Polls (bounded) until stat ``name`` equals ``value``; returns the last value seen."""
        deadline = time.monotonic() + timeout
        seen = self.stat(name)
        while seen != value and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = self.stat(name)
        return seen

    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        _stop_process(self.proc)
        if self._log_file and not self._log_file.closed:
            self._log_file.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sidecar_clusters(upstreams: "Upstreams", service_port: int) -> dict[str, int]:
    """Envoy clusters as istiod names them on a sidecar whose application calls the services on
    ``service_port``: ``outbound|<port>|<subset>|<fqdn>``, none with an empty port. Each is
    served by the test upstream of the same subset and host, which keeps its own name (the
    port-less ``cluster(...)``) in ``x-served-by``: a 200 from it proves the filter named the
    cluster with the port."""
    clusters = {}
    for name in CLUSTERS:
        _, port, subset, host = name.split("|")
        if port == "":
            clusters[f"outbound|{service_port}|{subset}|{host}"] = upstreams.port(name)
    return clusters


def _http_ok(port: int, path: str, timeout: float = 1.0) -> str | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode(errors="replace")
            return body if r.status == 200 else None
        finally:
            conn.close()
    except OSError:
        return None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class EnvoyLauncher:
    """Starts Envoys for one test or one module; stops them all at the end."""

    def __init__(self, workdir: Path, upstreams: Upstreams):
        self.workdir = workdir
        self.upstreams = upstreams
        self.started: list[Envoy] = []
        self._n = 0

    def _spawn(self, plugin: dict | str, clusters: dict[str, int] | None, extra: dict | None = None,
               transform=None, wasm_path: Path = MESHRULES_WASM, failure_policy: str | None = None,
               ecds: ExtensionConfigFile | None = None, concurrency: int = 1) -> Envoy:
        require_binaries()
        clusters = dict(self.upstreams.ports if clusters is None else clusters)
        clusters.setdefault(PASSTHROUGH, self.upstreams.port(PASSTHROUGH))
        if ecds is not None:
            ecds.write(plugin, wasm_path, failure_policy)  # the filter's first configuration
        # Port 0 for admin and listener: the kernel picks free ports, so nothing can take them
        # between choosing and binding; Envoy then tells which ones it got.
        cfg = bootstrap(plugin, clusters, 0, 0, wasm_path, extra, failure_policy, ecds)
        if transform is not None:
            cfg = transform(cfg)
        return self._run(cfg, concurrency=concurrency)

    def _run(self, cfg: dict, cwd: Path | None = None, listener: str = "ingress",
             concurrency: int = 1) -> Envoy:
        self._n += 1
        config_path = self.workdir / f"envoy-{self._n}.json"
        config_path.write_text(json.dumps(cfg, indent=2))
        log_path = self.workdir / f"envoy-{self._n}.log"
        admin_address_path = self.workdir / f"envoy-{self._n}.admin"
        admin_address_path.unlink(missing_ok=True)
        log_file = open(log_path, "wb")
        proc = subprocess.Popen(
            [str(ENVOY_BIN), "-c", str(config_path), "--concurrency", str(concurrency),
             "--base-id", str(next(_base_ids)), "--log-level", "info",
             "--disable-hot-restart", "--admin-address-path", str(admin_address_path)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, cwd=cwd,
        )
        env = Envoy(config_path, log_path, 0, 0, proc, log_file, admin_address_path, listener)
        self.started.append(env)
        return env

    def _ready(self, env: Envoy) -> Envoy:
        deadline = time.monotonic() + ENVOY_START_TIMEOUT
        while time.monotonic() < deadline:
            if not env.alive():
                raise EnvoyStartError(f"Envoy exited with {env.proc.returncode}:\n{tail(env.log_text())}")
            if env.discover_ports() and _http_ok(env.admin_port, "/ready") is not None and _accepts(env.port):
                return env
            time.sleep(0.1)
        env.stop()
        raise EnvoyStartError(f"Envoy was not ready within {ENVOY_START_TIMEOUT}s:\n{tail(env.log_text())}")

    def start(self, plugin: dict | str, clusters: dict[str, int] | None = None,
              extra: dict | None = None, transform=None, **filter_options: Any) -> Envoy:
        """Starts Envoy with ``plugin`` as the filter configuration; waits until it serves.
        ``extra`` adds top-level bootstrap fields; ``transform(bootstrap) -> bootstrap`` may
        rewrite the generated bootstrap (e.g. a reference Envoy without the filter).
        ``filter_options``: ``wasm_path`` (another module), ``failure_policy``, ``ecds`` (an
        :class:`ExtensionConfigFile` the filter's configuration is discovered from),
        ``concurrency`` (Envoy's worker threads, each with its own Wasm VM; default 1)."""
        return self._ready(self._spawn(plugin, clusters, extra, transform, **filter_options))

    def start_on_port(self, options_for_port) -> Envoy:
        """Starts Envoy with its listener on a port chosen first, for configurations that name
        it (policies on ``destination.port``, clusters named with a sidecar's service port).
        ``options_for_port(port)`` returns :meth:`start`'s arguments as a dict. The port is free
        when chosen but may be taken before Envoy binds it; a second or third one is tried then."""
        last: Exception | None = None
        for _ in range(3):
            port = free_port()
            options = dict(options_for_port(port))
            transform = options.pop("transform", None)

            def on_port(cfg, port=port, transform=transform):
                if transform is not None:
                    cfg = transform(cfg)
                cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
                return cfg

            try:
                env = self.start(transform=on_port, **options)
            except EnvoyStartError as e:
                if "ddress already in use" not in str(e):
                    raise
                last = e
                continue
            assert env.port == port
            return env
        raise AssertionError(f"no free listener port after 3 tries: {last}")

    def start_bootstrap(self, cfg: dict, cwd: Path, listener: str) -> Envoy:
        """Starts Envoy with a complete bootstrap (a shipped config with its ports set to 0
        and its clusters pointed at test upstreams) in ``cwd``, for the relative paths it
        names; ``listener`` is the listener whose port the tests use."""
        require_binaries()
        return self._ready(self._run(cfg, cwd, listener))

    def start_rejected(self, plugin: dict | str, clusters: dict[str, int] | None = None,
                       **filter_options: Any) -> "Rejection":
        """Starts Envoy with a configuration the filter must refuse and waits for the refusal.

        Envoy 1.40 answers a Wasm plugin whose ``on_configure`` returns false by failing the
        filter's creation. What the process then does is found out, not assumed: the result
        says whether Envoy exited (and its exit code) or kept running, and gives its log.
        """
        env = self._spawn(plugin, clusters, **filter_options)
        deadline = time.monotonic() + REJECT_TIMEOUT
        while time.monotonic() < deadline:
            if not env.alive():
                return Rejection(env, exited=True, exit_code=env.proc.returncode)
            if env.discover_ports() and _http_ok(env.admin_port, "/ready") is not None:
                return Rejection(env, exited=False, exit_code=None)
            time.sleep(0.1)
        return Rejection(env, exited=not env.alive(), exit_code=env.proc.poll())

    def stop_all(self) -> None:
        for env in self.started:
            env.stop()
        self.started.clear()


@dataclass
class Rejection:
    env: Envoy
    exited: bool
    exit_code: int | None

    def log_text(self) -> str:
        return self.env.log_text()

    def wait_for_log(self, pattern: str, timeout: float = 5.0) -> str:
        """Waits (bounded) until the log matches ``pattern``; returns the log either way."""
        deadline = time.monotonic() + timeout
        text = self.log_text()
        while not re.search(pattern, text) and time.monotonic() < deadline:
            time.sleep(0.1)
            text = self.log_text()
        return text


def tail(text: str, lines: int = 40) -> str:
    """The log's warnings and errors (Envoy's info lines at start-up are long and many)."""
    picked = [line for line in text.splitlines()
              if re.search(r"\]\[(warning|error|critical)\]", line) or not line.startswith("[")]
    return "\n".join(picked[-lines:])


def meshrules(*args: str) -> subprocess.CompletedProcess:
    """Runs the meshrules CLI in the repository (relative paths as in the README)."""
    if not MESHRULES_CLI.exists():
        pytest.fail(f"meshrules CLI not found at {MESHRULES_CLI}: run `make build` or set MESHRULES_CLI",
                    pytrace=False)
    return subprocess.run([str(MESHRULES_CLI), *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def require_binaries() -> None:
    if not ENVOY_BIN.exists():
        pytest.fail(f"Envoy not found at {ENVOY_BIN}: run `make venv` or set ENVOY_BIN", pytrace=False)
    if not MESHRULES_WASM.exists():
        pytest.fail(f"filter not found at {MESHRULES_WASM}: run `make build` or set MESHRULES_WASM",
                    pytrace=False)


def envoy_validate(config_path: Path, timeout: float = 60.0, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Runs ``envoy --mode validate -c FILE`` in ``cwd`` (the repository: shipped configs name
    the filter as ``wasm/meshrules.wasm``); the result has returncode, stdout, stderr."""
    if not ENVOY_BIN.exists():
        pytest.fail(f"Envoy not found at {ENVOY_BIN}: run `make venv` or set ENVOY_BIN", pytrace=False)
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(config_path), "--log-level", "warn",
         "--base-id", str(next(_base_ids)), "--disable-hot-restart"],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd,
    )


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def served_by(self) -> str | None:
        """The upstream listener (= Envoy cluster) that answered, if an upstream did."""
        return self.headers.get("x-served-by")

    def upstream_headers(self) -> dict[str, str]:
        """The request headers as the upstream received them."""
        assert self.served_by, f"not an upstream answer: {self}"
        return self.json()["headers"]

    def __str__(self) -> str:
        body = self.body[:300].decode(errors="replace")
        return f"HTTP {self.status} headers={self.headers} body={body!r}"


def raw_head(env: Envoy, head: bytes) -> bytes:
    """Writes ``head`` (a whole HTTP/1.1 request head, bytes as given) on a new connection and
    returns the response head (status line and headers), or what came before Envoy closed."""
    data = b""
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(head)
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def raw_status(head: bytes) -> int:
    """The status of a response head from :func:`raw_head` (0: no answer)."""
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def raw_served_by(env: Envoy, method: str, path: str, host: str, header_lines: Iterable[str] = ()) -> str:
    """Sends a hand-written HTTP/1.1 request (so headers can repeat, keep their case, or carry
    an explicit Host) and returns the answering upstream, or the status line if none answered."""
    lines = [line for line in header_lines if line]
    if not any(line.lower().startswith("host:") for line in lines):
        lines.insert(0, f"Host: {host}")
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines) + "Connection: close\r\n\r\n"
    status_line, *header_block = raw_head(env, head.encode()).decode(errors="replace").split("\r\n")
    for line in header_block:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-served-by":
            return value.strip()
    return status_line


def _collect(resp: http.client.HTTPResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for k, v in resp.getheaders():
        k = k.lower()
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    return headers


def request(env: Envoy, method: str = "GET", path: str = "/", host: str = "demoapp",
            headers: dict[str, str] | None = None, timeout: float = 10.0,
            body: bytes | None = None, conn: http.client.HTTPConnection | None = None) -> Response:
    """One HTTP/1.1 request to Envoy's listener with an explicit Host header."""
    hdrs = {"Host": host, **(headers or {})}
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.monotonic() - start
        return Response(resp.status, _collect(resp), data, elapsed)
    finally:
        if own:
            conn.close()


class Client:
    """A keep-alive connection for many requests in a row (splits, percentages)."""

    def __init__(self, env: Envoy, timeout: float = 10.0):
        self.env = env
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str = "GET", path: str = "/", host: str = "demoapp",
                headers: dict[str, str] | None = None) -> Response:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.env.port, timeout=self.timeout)
            try:
                r = request(self.env, method, path, host, headers, conn=self.conn)
                if r.headers.get("connection", "").lower() == "close":
                    self.close()
                return r
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # Envoy closed an idle keep-alive connection; one retry on a fresh one.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def count_clusters(env: Envoy, n: int, host: str, path: str = "/", headers_for=None,
                   budget_s: float = 120.0) -> dict[str, int]:
    """Sends ``n`` GETs; returns how many each answering cluster (or status) served."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + budget_s
    with Client(env) as c:
        for i in range(n):
            assert time.monotonic() < deadline, f"{n} requests took longer than {budget_s}s"
            hdrs = headers_for(i) if headers_for else None
            r = c.request("GET", path, host=host, headers=hdrs)
            key = r.served_by or f"status {r.status}"
            counts[key] = counts.get(key, 0) + 1
    return counts


_PROM_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _PROM_LINE.match(line)
        if m:
            labels = dict(_PROM_LABEL.findall(m.group(2) or ""))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def prometheus_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels are exactly ``labels``, if present."""
    for n, l, v in parse_prometheus(text):
        if n == name and l == labels:
            return v
    return None


def binomial_tolerance(n: int, p: float, sigmas: float = 5.0) -> float:
    """Half-width of a ``sigmas``-sigma band around n*p for a binomial(n, p) count."""
    return sigmas * (n * p * (1 - p)) ** 0.5


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory) -> Upstreams:
    up = Upstreams([PASSTHROUGH, *CLUSTERS], tmp_path_factory.mktemp("upstream") / "upstream.log")
    yield up
    up.stop()


@pytest.fixture
def envoy(tmp_path, upstreams):
    """Factory: ``envoy(plugin_config, clusters=None, extra=None, **filter_options)`` (see
    :meth:`EnvoyLauncher.start`) starts a dedicated Envoy for this test and returns it once it serves (an :class:`Envoy`: ``url(path)``, ``port``,
    ``admin_port``, ``log_text()``, ``stats_prometheus()``, ``stat(name)``, ``stop()``).

    ``clusters`` maps Envoy cluster names to upstream ports (default: every upstream listener);
    a ``passthrough`` cluster is always added; ``extra`` adds top-level bootstrap fields;
    ``wasm`` is the module file (default ``MESHRULES_WASM``). Every Envoy is stopped at the end
    of the test.
    """
    launcher = EnvoyLauncher(tmp_path, upstreams)

    def start(plugin: dict | str, clusters: dict[str, int] | None = None, extra: dict | None = None,
              **filter_options: Any) -> Envoy:
        return launcher.start(plugin, clusters, extra, **filter_options)

    start.launcher = launcher  # type: ignore[attr-defined]
    yield start
    launcher.stop_all()


@pytest.fixture
def rejected_envoy(tmp_path, upstreams):
    """Factory: ``rejected_envoy(plugin_config)`` starts Envoy with a configuration the filter
    must refuse, and returns a :class:`Rejection` once Envoy exited or finished starting."""
    launcher = EnvoyLauncher(tmp_path, upstreams)
    yield launcher.start_rejected
    launcher.stop_all()


@pytest.fixture(scope="module")
def module_envoy_launcher(tmp_path_factory, upstreams):
    """For a module-wide Envoy: ``launcher.start(config)`` in a module-scoped fixture."""
    launcher = EnvoyLauncher(tmp_path_factory.mktemp("envoy"), upstreams)
    yield launcher
    launcher.stop_all()
