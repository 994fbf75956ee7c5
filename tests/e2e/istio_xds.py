"""What Istio sends a sidecar for a WasmPlugin, reproduced from istiod's and the agent's code
(istio/istio ``pilot/pkg/model/wasm.go`` ``buildPluginConfig``/``buildDataSource``/
``buildVMConfig``, ``pilot/pkg/networking/core/extension/wasmplugin.go`` and the agent's
``pkg/wasm/convert.go``), so that tests can run it in a real Envoy:

1. istiod: an ECDS ``TypedExtensionConfig`` named ``extensions.istio.io/wasmplugin/<ns>.<name>``
   holding an ``envoy.extensions.filters.http.wasm.v3.Wasm`` whose ``config`` has ``name``
   ``<ns>.<name>``, ``root_id`` = ``pluginName``, ``configuration`` = the JSON of
   ``pluginConfig`` as a ``google.protobuf.StringValue`` (a protobuf Struct: every number a
   double), ``vm_config.runtime`` ``envoy.wasm.runtime.v8``, the code as a remote data source
   (``oci://`` URL, cluster ``_``, 30 s, ``sha256``), the ``ISTIO_META_WASM_*`` environment the
   agent reads, and ``failure_policy`` from ``failStrategy`` (proxies 1.25 and later). The HTTP
   filter in the listener names that resource through ``config_discovery`` (ADS, waiting for it:
   ``initial_fetch_timeout: 0s``; type URLs Wasm and RBAC).
2. the agent: pulls the module, rewrites the code to the local file, and strips the
   ``ISTIO_META`` variables before Envoy sees the resource.

Envoy then gets the resource here from a file (``path_config_source``) instead of ADS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESOURCE_PREFIX = "extensions.istio.io/wasmplugin/"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
RESOURCE_VERSION_ENV = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"

# extensions.FailStrategy -> envoy.extensions.wasm.v3.FailurePolicy (unset is FAIL_CLOSE).
FAILURE_POLICY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}


def resource_name(plugin: dict) -> str:
    meta = plugin["metadata"]
    return f"{RESOURCE_PREFIX}{meta['namespace']}.{meta['name']}"


def _as_struct(value: Any) -> Any:
    """A JSON value as it comes back out of a protobuf Struct: numbers are doubles, which Go's
    protojson prints without a fraction when whole (90, not 90.0)."""
    if isinstance(value, dict):
        return {k: _as_struct(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_struct(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 1e21 else number
    return value


def plugin_config_json(plugin: dict) -> str:
    """istiod's ``protomarshal.ToJSON(pluginConfig)`` (map keys sorted, as protojson writes them)."""
    return json.dumps(_as_struct(plugin["spec"]["pluginConfig"]), sort_keys=True)


def istiod_extension_config(plugin: dict, resource_version: str = "1") -> dict:
    """The TypedExtensionConfig istiod pushes over ECDS for a WasmPlugin of type HTTP."""
    spec, meta = plugin["spec"], plugin["metadata"]
    url = spec["url"] if "://" in spec["url"] else "oci://" + spec["url"]
    if url.startswith("file://"):
        code = {"local": {"filename": url[len("file://"):]}}
    else:
        code = {"remote": {"http_uri": {"uri": url, "cluster": "_", "timeout": "30s"},
                           "sha256": spec.get("sha256", "")}}
    env = {RESOURCE_VERSION_ENV: resource_version}
    if spec.get("imagePullPolicy", "UNSPECIFIED_POLICY") != "UNSPECIFIED_POLICY":
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    host_keys = []
    for var in spec.get("vmConfig", {}).get("env", []):
        if var.get("valueFrom", "INLINE") == "INLINE":
            env[var["name"]] = var.get("value", "")
        else:
            host_keys.append(var["name"])
    config: dict[str, Any] = {
        "name": f"{meta['namespace']}.{meta['name']}",
        "root_id": spec.get("pluginName", ""),
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": code,
            "environment_variables": {"key_values": env, **({"host_env_keys": host_keys} if host_keys else {})},
        },
        "failure_policy": FAILURE_POLICY[spec.get("failStrategy", "FAIL_CLOSE")],
    }
    if spec.get("pluginConfig"):
        config["configuration"] = {"@type": STRING_VALUE, "value": plugin_config_json(plugin)}
    return {"name": resource_name(plugin), "typed_config": {"@type": WASM_TYPE, "config": config}}


def agent_rewrite(extension_config: dict, module: Path) -> dict:
    """The agent's conversion: remote code -> the pulled module's local file; ISTIO_META
    variables removed (and the environment dropped when nothing is left)."""
    out = json.loads(json.dumps(extension_config))
    vm = out["typed_config"]["config"]["vm_config"]
    if "remote" in vm["code"]:
        vm["code"] = {"local": {"filename": str(module)}}
    env = vm.get("environment_variables", {})
    env["key_values"] = {k: v for k, v in env.get("key_values", {}).items() if not k.startswith("ISTIO_META")}
    if not env["key_values"]:
        del env["key_values"]
    if not env:
        vm.pop("environment_variables", None)
    return out


def ecds_file(extension_config: dict, path: Path, version: str = "1") -> Path:
    """A DiscoveryResponse file with one TypedExtensionConfig, for Envoy's path_config_source."""
    path.write_text(json.dumps({"version_info": version, "resources": [
        {"@type": TYPED_EXTENSION_CONFIG, **extension_config}]}, indent=2))
    return path


def discovered_http_filter(name: str, source: Path) -> dict:
    """The HCM filter istiod writes for a WasmPlugin, with the ECDS source a file."""
    return {
        "name": name,
        "config_discovery": {
            "config_source": {"path_config_source": {"path": str(source)}, "resource_api_version": "V3",
                              "initial_fetch_timeout": "0s"},
            "type_urls": [WASM_TYPE, RBAC_TYPE],
        },
    }
