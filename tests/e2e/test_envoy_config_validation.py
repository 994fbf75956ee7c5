"""``envoy --mode validate`` accepts every Envoy config the project ships and every bootstrap
these tests generate (validation also loads the filter and runs its configure step)."""

import json

import pytest

from conftest import (
    CLUSTERS, MESHRULES_WASM, PASSTHROUGH, REPO, bootstrap, destination_rule, envoy_validate,
    plugin_config, require_binaries, to, virtual_service,
)


def shipped_envoy_configs():
    """YAML files under envoy/ that are Envoy bootstraps (docker-compose files are not)."""
    out = []
    for p in sorted((REPO / "envoy").rglob("*.yaml")):
        text = p.read_text()
        if "static_resources" in text or "dynamic_resources" in text:
            out.append(p)
    return out


def test_project_ships_at_least_one_envoy_config():
    assert shipped_envoy_configs(), f"no Envoy bootstrap found in {REPO / 'envoy'}"


@pytest.mark.parametrize("config", shipped_envoy_configs(), ids=lambda p: p.name)
def test_shipped_envoy_config_validates(config):
    require_binaries()
    result = envoy_validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout, result.stdout + result.stderr


def module_configs():
    """The plugin configurations the module-wide Envoys of this suite run."""
    import importlib

    out = {}
    for name in ["test_host_selection", "test_matching", "test_traffic_split", "test_faults",
                 "test_timeouts_retries", "test_request_edits", "test_local_replies"]:
        out[name] = importlib.import_module(name).CONFIG
    return out


FIXTURE_PLUGIN_CONFIGS = {
    "empty": plugin_config(),
    "canary-with-destination-rule": plugin_config(
        destination_rule("demoapp", "demoapp", ["v1", "v2"]),
        virtual_service("demoapp", ["demoapp"], [
            {"match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": [to(subset="v2")]},
            {"route": [to(subset="v1", weight=90), to(subset="v2", weight=10)],
             "timeout": "2s", "retries": {"attempts": 2, "retryOn": "5xx"}},
        ]),
        sticky_header="x-user",
    ),
}


FIXTURE_PLUGIN_CONFIGS.update(module_configs())


@pytest.mark.parametrize("name", list(FIXTURE_PLUGIN_CONFIGS))
def test_generated_test_bootstrap_validates(tmp_path, name):
    require_binaries()
    clusters = {n: 10000 + i for i, n in enumerate([PASSTHROUGH, *CLUSTERS])}
    cfg = tmp_path / "bootstrap.json"
    cfg.write_text(json.dumps(bootstrap(FIXTURE_PLUGIN_CONFIGS[name], clusters, 0, 0, MESHRULES_WASM), indent=2))
    result = envoy_validate(cfg)
    assert result.returncode == 0, result.stdout + result.stderr
