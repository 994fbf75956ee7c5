#!/usr/bin/env python3
"""The filter as OCI images in the formats Istio's agent pulls (pkg/wasm/imagefetcher.go).

    image.py build --wasm wasm/meshrules.wasm --out wasm/image [--registry host:port/repo]
    image.py push --out wasm/image --registry host:port/repo [--tls-verify false]

``build`` writes, without a container engine, an OCI image layout (``oci-layout``,
``index.json``, ``blobs/``) holding two images, then lets skopeo convert one of them:

- ``compat`` (tag ``:<version>``): the "compat" variant, one tar+gzip layer holding
  ``plugin.wasm``, OCI media types and the ``module.wasm.image/variant: compat`` annotation.
- ``docker`` (tag ``:<version>-docker``): the same image converted by ``skopeo --format v2s2``
  to Docker media types, kept in skopeo's ``dir:`` format (an OCI layout cannot hold it).
- ``oci`` (tag ``:<version>-oci``): the "oci" artifact variant, two layers: the runtime
  config (``application/vnd.module.wasm.config.v1+json``, also the manifest's config) and
  the raw module (``application/vnd.module.wasm.content.layer.v1+wasm``).

Every byte is a function of the module: tar entries carry fixed owners, modes and mtimes,
gzip carries no name or timestamp, and JSON is written with sorted keys, so the manifest
digests are the same on every build. ``push`` copies each image with ``skopeo copy
--preserve-digests``, so the registry serves exactly these manifests and the digests
``build`` printed are the ones a WasmPlugin's ``sha256`` is checked against.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"

# The file name Istio's agent looks for in a compat layer.
PLUGIN_FILE = "plugin.wasm"
# The filter's root context id (envoy/envoy.yaml's root_id), advertised in the runtime config.
ROOT_ID = "meshrules"
# Go's names for the WASI target, as OCI's platform fields use Go's GOOS/GOARCH.
PLATFORM = {"architecture": "wasm", "os": "wasip1"}

MANIFEST_FILE = "images.json"  # what build made; push and the tests read it


@dataclass(frozen=True)
class Variant:
    name: str  # the ref name in the OCI layout
    tag_suffix: str
    summary: str


VARIANTS = [
    Variant("compat", "", "compat variant, OCI media types"),
    Variant("docker", "-docker", "compat variant, Docker media types"),
    Variant("oci", "-oci", "oci artifact variant (wasm config + content layers)"),
]


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.refs: list[dict] = []

    def blob(self, media_type: str, data: bytes, annotations: dict | None = None) -> dict:
        """Stores ``data`` and returns its descriptor."""
        digest = sha256_hex(data)
        (self.blobs / digest).write_bytes(data)
        desc = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
        if annotations:
            desc["annotations"] = annotations
        return desc

    def manifest(self, ref: str, config: dict, layers: list[dict], annotations: dict) -> str:
        body = canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers,
            "annotations": annotations,
        })
        desc = self.blob(OCI_MANIFEST, body, {"org.opencontainers.image.ref.name": ref})
        self.refs.append(desc)
        return desc["digest"]

    def finish(self) -> None:
        (self.root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.root / "index.json").write_bytes(canonical_json(index))


def compat_layer(wasm: bytes) -> tuple[bytes, bytes]:
    """(tar, tar.gz) holding only ``plugin.wasm``; both byte-for-byte reproducible."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    tar_bytes = tar_buf.getvalue()
    gz_buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buf, mtime=0, compresslevel=9) as gz:
        gz.write(tar_bytes)
    return tar_bytes, gz_buf.getvalue()


def package_version() -> str:
    with open(REPO / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]["version"]


def skopeo(*args: str) -> None:
    if shutil.which("skopeo") is None:
        sys.exit("image.py: skopeo not found (Debian: apt-get install skopeo; `make image` installs it)")
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"image.py: skopeo {' '.join(args)} failed:\n{proc.stderr.strip()}")


def manifest_digest_of_dir(path: Path) -> str:
    return "sha256:" + sha256_hex((path / "manifest.json").read_bytes())


def build(wasm_path: Path, out: Path, version: str) -> dict:
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        sys.exit(f"image.py: {wasm_path} is not a Wasm module")
    if out.exists():
        shutil.rmtree(out)
    layout_dir = out / "layout"
    layout = Layout(layout_dir)
    common = {"org.opencontainers.image.title": "meshrules",
              "org.opencontainers.image.version": version}

    tar_bytes, tar_gz = compat_layer(wasm)
    image_config = layout.blob(OCI_IMAGE_CONFIG, canonical_json({
        **PLATFORM,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256_hex(tar_bytes)}"]},
    }))
    digests = {"compat": layout.manifest(
        "compat", image_config, [layout.blob(OCI_LAYER_GZIP, tar_gz)],
        {**common, "module.wasm.image/variant": "compat"})}

    # The runtime config of the solo-io Wasm artifact spec Istio follows: the manifest's
    # config and, because Istio's agent wants exactly two layers, the first layer too.
    runtime_config = canonical_json({"type": "envoy_proxy", "abiVersions": ["proxy_abi_version_0_2_1"],
                                     "config": {"root_ids": [ROOT_ID]}})
    config_desc = layout.blob(WASM_CONFIG, runtime_config)
    layers = [
        layout.blob(WASM_CONFIG, runtime_config, {"org.opencontainers.image.title": "runtime-config.json"}),
        layout.blob(WASM_CONTENT, wasm, {"org.opencontainers.image.title": PLUGIN_FILE}),
    ]
    digests["oci"] = layout.manifest("oci", config_desc, layers, common)
    layout.finish()

    # Docker media types: skopeo's own OCI-to-v2s2 conversion (config and manifest rewritten,
    # the gzip layer reused), into skopeo's dir: format.
    docker_dir = out / "docker"
    skopeo("copy", "--quiet", "--format", "v2s2", f"oci:{layout_dir}:compat", f"dir:{docker_dir}")
    digests["docker"] = manifest_digest_of_dir(docker_dir)

    # Sources relative to ``out``, so the directory can be moved before pushing.
    sources = {"compat": "oci:layout:compat", "oci": "oci:layout:oci", "docker": "dir:docker"}
    record = {
        "version": version,
        "wasm": str(wasm_path),
        "wasm_sha256": sha256_hex(wasm),
        "images": [{"variant": v.name, "tag": version + v.tag_suffix, "summary": v.summary,
                    "manifest_digest": digests[v.name], "source": sources[v.name]}
                   for v in VARIANTS],
    }
    (out / MANIFEST_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def print_summary(record: dict, registry: str | None, out: Path) -> None:
    repo = registry or "REGISTRY"
    print(f"meshrules {record['version']} images in {out} (push: make push REGISTRY=host:port/repo)")
    for image in record["images"]:
        print(f"  {repo}:{image['tag']:<14} manifest {image['manifest_digest']}  {image['summary']}")
    print(f"{record['wasm']} sha256: {record['wasm_sha256']}")
    first = record["images"][0]
    print("WasmPlugin (Istio checks sha256 against the image's manifest digest for oci:// URLs,")
    print("against the file's sha256 for http(s):// URLs):")
    print(f"  url: oci://{repo}:{first['tag']}")
    print(f"  sha256: {first['manifest_digest'].removeprefix('sha256:')}")


def source_reference(out: Path, source: str) -> str:
    """A skopeo reference (``oci:DIR:REF`` or ``dir:DIR``) for a source recorded relative to ``out``."""
    transport, _, rest = source.partition(":")
    return f"{transport}:{out / rest}"


def push(out: Path, registry: str, tls_verify: bool) -> None:
    record = json.loads((out / MANIFEST_FILE).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for image in record["images"]:
            dest = f"docker://{registry}:{image['tag']}"
            digest_file = Path(tmp) / image["variant"]
            skopeo("copy", "--quiet", "--preserve-digests", f"--dest-tls-verify={str(tls_verify).lower()}",
                   "--digestfile", str(digest_file), source_reference(out, image["source"]), dest)
            pushed = digest_file.read_text().strip()
            if pushed != image["manifest_digest"]:
                sys.exit(f"image.py: {dest} was stored as {pushed}, expected {image['manifest_digest']}")
            print(f"pushed {registry}:{image['tag']} {pushed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the images from a built module")
    b.add_argument("--wasm", type=Path, default=REPO / "wasm" / "meshrules.wasm")
    b.add_argument("--out", type=Path, default=REPO / "wasm" / "image")
    b.add_argument("--version", default=None, help="image version (default: Cargo.toml's)")
    b.add_argument("--registry", default=None, help="host:port/repo, only for the printed references")
    p = sub.add_parser("push", help="push every image built in --out")
    p.add_argument("--out", type=Path, default=REPO / "wasm" / "image")
    p.add_argument("--registry", required=True, help="host:port/repo")
    p.add_argument("--tls-verify", choices=["true", "false"], default="true",
                   help="false: allow a plain-HTTP (or self-signed) registry")
    args = parser.parse_args()
    if args.command == "build":
        record = build(args.wasm, args.out, args.version or package_version())
        print_summary(record, args.registry, args.out)
    else:
        push(args.out, args.registry, args.tls_verify == "true")


if __name__ == "__main__":
    main()
