"""The OCI images `make image` writes and `make push` pushes are what Istio's agent can pull.

A real registry (Debian's docker-registry) runs on 127.0.0.1; every variant is pushed with the
project's push path (scripts/image.py, which `make push` runs), pulled back with skopeo as
stored, unpacked the way Istio's agent unpacks it (pkg/wasm/imagefetcher.go), compared with
wasm/meshrules.wasm, and the pulled module then routes requests in a real Envoy.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import MESHRULES_WASM, REPO, V1, V2, _die_with_parent, _stop_process, destination_rule, \
    plugin_config, request, to, virtual_service

IMAGE_SCRIPT = REPO / "scripts" / "image.py"
REGISTRY_CONFIG = REPO / "scripts" / "registry.yml"
REPOSITORY = "meshrules/filter"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"

# What each variant's manifest must look like as the registry serves it:
# (manifest media type, config media type, layer media types, manifest annotations to expect).
EXPECTED_LAYOUT = {
    "compat": (OCI_MANIFEST, OCI_CONFIG, [OCI_LAYER], {"module.wasm.image/variant": "compat"}),
    "docker": (DOCKER_MANIFEST, DOCKER_CONFIG, [DOCKER_LAYER], {}),
    "oci": (OCI_MANIFEST, WASM_CONFIG, [WASM_CONFIG, WASM_CONTENT], {}),
}
VARIANTS = list(EXPECTED_LAYOUT)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def require_tool(name: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} not found: run `make image-tools` (apt packages skopeo, docker-registry)",
                    pytrace=False)


def build_image(out: Path, registry: str | None = None) -> tuple[dict, str]:
    """What `make image` runs; returns (images.json, printed summary)."""
    args = [sys.executable, str(IMAGE_SCRIPT), "build", "--wasm", str(MESHRULES_WASM), "--out", str(out)]
    printed = run(*args, *(["--registry", registry] if registry else []))
    return json.loads((out / "images.json").read_text()), printed


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


class Registry:
    """docker-registry serving scripts/registry.yml, with its storage in ``root`` and a port
    the kernel picks (the registry logs the address it bound)."""

    def __init__(self, root: Path):
        require_tool("docker-registry")
        self.log_path = root / "registry.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(root / "storage"),
                   REGISTRY_HTTP_ADDR="127.0.0.1:0")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(REGISTRY_CONFIG)], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        self.address = self._wait_until_serving(timeout=20.0)

    def _wait_until_serving(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on (127\.0\.0\.1:\d+)", self.log_path.read_text(errors="replace"))
            if m and self._api_status(m.group(1)) == 200:
                return m.group(1)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"registry did not serve within {timeout}s:\n{self.log_path.read_text()}")

    @staticmethod
    def _api_status(address: str) -> int | None:
        host, port = address.rsplit(":", 1)
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
            try:
                conn.request("GET", "/v2/")
                return conn.getresponse().status
            finally:
                conn.close()
        except OSError:
            return None

    def stop(self) -> None:
        _stop_process(self.proc)
        self._log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    require_tool("skopeo")
    out = tmp_path_factory.mktemp("image") / "image"
    record, _ = build_image(out)
    return out, record


@pytest.fixture(scope="module")
def pushed(built, registry) -> str:
    """The repository every variant was pushed to with `make push`'s command."""
    out, _ = built
    repo = f"{registry.address}/{REPOSITORY}"
    run(sys.executable, str(IMAGE_SCRIPT), "push", "--out", str(out), "--registry", repo, "--tls-verify", "false")
    return repo


def pull(repo: str, tag: str, dest: Path) -> Path:
    """skopeo pull into its dir: format: the manifest exactly as served, and the blobs."""
    run("skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
        f"docker://{repo}:{tag}", f"dir:{dest}")
    return dest


def image_by_variant(record: dict, variant: str) -> dict:
    return next(i for i in record["images"] if i["variant"] == variant)


# --------------------------------------------------------------------------------------------
# Istio's agent: how it turns a pulled image into a module file
# --------------------------------------------------------------------------------------------


def plugin_wasm_from_tar_gz(blob: bytes) -> bytes:
    """extractWasmPluginBinary: the first ``plugin.wasm`` (by base name) in a tar.gz."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                f = tar.extractfile(member)
                assert f is not None
                return f.read()
    raise AssertionError("plugin.wasm not found in the layer")


def istio_extract(pulled: Path) -> bytes:
    """imagefetcher.go's order: a Docker schema 2 manifest is the compat variant with a Docker
    last layer; otherwise compat with an OCI tar+gzip last layer; otherwise the oci variant:
    exactly two layers, the module being the raw blob of the layer with the wasm media type."""
    manifest = json.loads((pulled / "manifest.json").read_text())
    layers = manifest["layers"]
    assert layers, "an image needs at least one layer"

    def blob(desc: dict) -> bytes:
        return (pulled / desc["digest"].removeprefix("sha256:")).read_bytes()

    if manifest.get("mediaType") == DOCKER_MANIFEST:
        assert layers[-1]["mediaType"] == DOCKER_LAYER, layers[-1]
        return plugin_wasm_from_tar_gz(blob(layers[-1]))
    if layers[-1]["mediaType"] == OCI_LAYER:
        return plugin_wasm_from_tar_gz(blob(layers[-1]))
    assert len(layers) == 2, f"number of layers must be 2 but got {len(layers)}"
    wasm_layers = [layer for layer in layers if layer["mediaType"] == WASM_CONTENT]
    assert wasm_layers, f"could not find the layer of type {WASM_CONTENT}"
    return blob(wasm_layers[0])


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_make_image_prints_each_tag_with_its_manifest_digest_and_the_module_sha256(tmp_path):
    require_tool("skopeo")
    record, printed = build_image(tmp_path / "image", registry="registry.example:5000/meshrules")
    module_sha = sha256(MESHRULES_WASM.read_bytes())
    assert record["wasm_sha256"] == module_sha
    assert f"{MESHRULES_WASM} sha256: {module_sha}" in printed, printed
    version = record["version"]
    for variant, suffix in [("compat", ""), ("docker", "-docker"), ("oci", "-oci")]:
        image = image_by_variant(record, variant)
        assert image["tag"] == version + suffix
        assert re.search(rf"registry\.example:5000/meshrules:{re.escape(image['tag'])}\s+manifest "
                         rf"{image['manifest_digest']}", printed), printed
    # The WasmPlugin lines: for an oci:// URL Istio compares sha256 with the manifest digest.
    compat = image_by_variant(record, "compat")
    assert f"url: oci://registry.example:5000/meshrules:{version}" in printed, printed
    assert f"sha256: {compat['manifest_digest'].removeprefix('sha256:')}" in printed, printed


def test_image_build_is_reproducible_byte_for_byte(built, tmp_path):
    out, record = built
    again, _ = build_image(tmp_path / "again")
    assert [i["manifest_digest"] for i in again["images"]] == [i["manifest_digest"] for i in record["images"]]

    def files(root: Path) -> dict[Path, bytes]:
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    first, second = files(out), files(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_registry_serves_the_variant_in_istios_layout_with_the_printed_digest(variant, built, pushed, tmp_path):
    _, record = built
    image = image_by_variant(record, variant)
    pulled = pull(pushed, image["tag"], tmp_path / "pulled")
    raw = (pulled / "manifest.json").read_bytes()
    assert "sha256:" + sha256(raw) == image["manifest_digest"]

    manifest = json.loads(raw)
    manifest_type, config_type, layer_types, annotations = EXPECTED_LAYOUT[variant]
    assert manifest["mediaType"] == manifest_type
    assert manifest["config"]["mediaType"] == config_type
    assert [layer["mediaType"] for layer in manifest["layers"]] == layer_types
    assert manifest.get("annotations", {}).items() >= annotations.items()
    # Every blob arrived intact (skopeo names them by digest).
    for desc in [manifest["config"], *manifest["layers"]]:
        data = (pulled / desc["digest"].removeprefix("sha256:")).read_bytes()
        assert ("sha256:" + sha256(data), len(data)) == (desc["digest"], desc["size"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_module_unpacked_as_istio_does_is_wasm_meshrules_wasm(variant, built, pushed, tmp_path):
    _, record = built
    image = image_by_variant(record, variant)
    module = istio_extract(pull(pushed, image["tag"], tmp_path / "pulled"))
    assert module == MESHRULES_WASM.read_bytes()
    assert sha256(module) == record["wasm_sha256"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_envoy_routes_a_canary_with_the_module_pulled_from_the_registry(variant, built, pushed, envoy, tmp_path):
    _, record = built
    module_file = tmp_path / "pulled.wasm"
    module_file.write_bytes(istio_extract(pull(pushed, image_by_variant(record, variant)["tag"],
                                               tmp_path / "pulled")))
    rules = plugin_config(
        virtual_service("demoapp", ["demoapp"], [
            {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}],
             "route": [to(subset="v2")]},
            {"name": "stable", "route": [to(subset="v1")]},
        ]),
        destination_rule("demoapp", "demoapp", ["v1", "v2"]),
    )
    env = envoy(rules, wasm_path=module_file)
    assert str(module_file) in env.config_path.read_text()  # this Envoy runs the pulled file
    assert request(env, headers={"x-canary": "true"}).served_by == V2
    assert request(env).served_by == V1
