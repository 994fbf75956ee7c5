"""No path spelling gets past a DENY that Envoy's own filters would enforce.

The paths are Istio's ``TestNormalization`` table and the inputs of Envoy's path tests
(``tests/fixtures/peer/path-normalization.json``, copied from ``../shared/peer`` with its
provenance), each as written and with its last segment turned into ``admin``. Each goes to
meshrules (a DENY on ``/admin*``, default ``escapedSlashes: REJECT``) and to a reference Envoy
normalizing as Istio's ``MERGE_SLASHES`` mode does (``normalize_path``, ``merge_slashes``, and
``path_with_escaped_slashes_action: REJECT_REQUEST`` as meshrules' default) in front of
Envoy's RBAC with the same DENY. A bypass is a request the reference refuses (403 or 400) that
meshrules forwards; meshrules may be stricter (400 where the reference forwards).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import REPO, Envoy, plugin_config, raw_head, raw_status
from security import authorization_policy

TABLE = json.loads((REPO / "tests" / "fixtures" / "peer" / "path-normalization.json").read_text())

DENY_ADMIN = authorization_policy("deny-admin", [{"to": [{"operation": {"paths": ["/admin*"]}}]}],
                                  action="DENY")
RBAC_DENY_ADMIN = {
    "name": "envoy.filters.http.rbac",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": {"ns[app]-policy[deny-admin]-rule[0]": {
            "permissions": [{"andRules": {"rules": [{"orRules": {"rules": [
                {"urlPath": {"path": {"prefix": "/admin"}}}]}}]}}],
            "principals": [{"andIds": {"ids": [{"any": True}]}}]}}},
    },
}


def paths() -> list[str]:
    found = [p for group in TABLE["istio"].values() for p, _ in group["cases"]]
    found += [p for test in TABLE["envoy"] for p in test["paths"]]
    with_admin = []
    for p in found:
        path, _, query = p.partition("?")
        head, _, _ = path.rpartition("/")
        with_admin.append(f"{head}/admin" + (f"?{query}" if query else ""))
    return list(dict.fromkeys(found + with_admin))


PATHS = paths()


def reference(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm.update({"normalize_path": True, "merge_slashes": True,
                "path_with_escaped_slashes_action": "REJECT_REQUEST"})
    hcm["http_filters"] = [RBAC_DENY_ADMIN, hcm["http_filters"][-1]]
    return cfg


@pytest.fixture(scope="module")
def envoys(module_envoy_launcher) -> tuple[Envoy, Envoy]:
    return (module_envoy_launcher.start(plugin_config(DENY_ADMIN)),
            module_envoy_launcher.start(plugin_config(), transform=reference))


def status(env: Envoy, path: str) -> int:
    head = f"GET {path} HTTP/1.1\r\nHost: demoapp\r\nConnection: close\r\n\r\n"
    return raw_status(raw_head(env, head.encode()))


def test_no_path_spelling_bypasses_a_deny_envoy_enforces(envoys):
    meshrules, native = envoys
    outcomes = {p: (status(native, p), status(meshrules, p)) for p in PATHS}
    bypasses = {p: o for p, o in outcomes.items() if o[0] in (400, 403) and o[1] == 200}
    agree = sum(1 for n, m in outcomes.values() if n == m)
    differ = Counter(f"native {n} / meshrules {m}" for n, m in outcomes.values() if n != m)
    print(f"\npath parity: {len(PATHS)} paths, {agree} same status, {len(bypasses)} bypasses, "
          f"differing: {dict(differ)}")
    assert not bypasses, bypasses
    # The reference itself: it denies the table's own /admin spellings.
    assert outcomes["/app/../admin"][0] == 403
    assert sum(1 for n, _ in outcomes.values() if n == 403) > 10
