"""Bad configurations are refused, each problem named by its JSON path and reason in Envoy's log.

What Envoy 1.40 does with a Wasm plugin whose configuration is refused (found by running it):
the plugin fails to load, the wasm filter cannot be created, and Envoy, which builds the static
listener at start-up, logs ``Unable to create Wasm plugin meshrules`` and exits with code 1.
Nothing ever serves traffic with a refused configuration.
"""

import json
import re

import pytest

from conftest import (
    MESHRULES_WASM, bootstrap, destination_rule, envoy_validate, plugin_config, request, require_binaries,
    to, virtual_service,
)


def demo_vs(*http, **spec):
    return virtual_service("demoapp", ["demoapp"], list(http), **spec)


def route_v1(**extra):
    return {"route": [to(subset="v1")], **extra}


def refusal_lines(rejection) -> list[str]:
    """The filter's refusal lines from Envoy's log, after asserting Envoy refused to start."""
    assert rejection.exited, (
        "Envoy kept running with a configuration the filter should refuse:\n" + rejection.log_text()[-3000:])
    assert rejection.exit_code != 0
    log = rejection.log_text()
    assert "Unable to create Wasm plugin meshrules" in log, log[-3000:]
    return [line for line in log.splitlines() if "config rejected" in line]


def assert_refused_with(rejection, path: str, *reason_parts: str) -> str:
    """Exactly one refusal line names ``path`` (followed by ': '), and it says every reason part."""
    lines = refusal_lines(rejection)
    hits = [line for line in lines if f"{path}: " in line]
    assert hits, f"no refusal names {path!r}; refusal lines:\n" + "\n".join(lines)
    line = hits[0]
    for part in reason_parts:
        assert part in line, f"{part!r} missing from: {line}"
    return line


CASES = {
    "unknown-kind": (
        plugin_config({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                       "metadata": {"name": "gw", "namespace": "app"}, "spec": {}}),
        "resources[0].kind", ["unknown kind", "Gateway"]),
    "unknown-field": (
        plugin_config(demo_vs(route_v1(retires={"attempts": 3}))),
        "resources[0].spec.http[0].retires", ["unknown field"]),
    "bad-regex": (
        plugin_config(demo_vs(route_v1(match=[{"uri": {"regex": "/api/(v1"}}]))),
        "resources[0].spec.http[0].match[0].uri.regex", ["regex", "/api/(v1"]),
    "bad-duration": (
        plugin_config(demo_vs(route_v1(timeout="5 seconds"))),
        "resources[0].spec.http[0].timeout", ["5 seconds"]),
    "negative-weight": (
        plugin_config(demo_vs({"route": [to(subset="v1", weight=-10), to(subset="v2", weight=110)]})),
        "resources[0].spec.http[0].route[0].weight", ["-10"]),
    "all-zero-weights": (
        plugin_config(demo_vs({"route": [to(subset="v1", weight=0), to(subset="v2", weight=0)]})),
        "resources[0].spec.http[0].route", ["zero"]),
    "percentage-150": (
        plugin_config(demo_vs(route_v1(fault={"abort": {"httpStatus": 503, "percentage": {"value": 150}}}))),
        "resources[0].spec.http[0].fault.abort.percentage.value", ["150"]),
    "http-status-700": (
        plugin_config(demo_vs(route_v1(fault={"abort": {"httpStatus": 700, "percentage": {"value": 100}}}))),
        "resources[0].spec.http[0].fault.abort.httpStatus", ["700 is not in 200..=599"]),
    "unknown-grpc-status": (
        plugin_config(demo_vs(route_v1(fault={"abort": {"grpcStatus": "NOT_A_STATUS", "percentage": {"value": 100}}}))),
        "resources[0].spec.http[0].fault.abort.grpcStatus", ["NOT_A_STATUS"]),
    "no-action": (
        plugin_config(demo_vs({"match": [{"uri": {"prefix": "/"}}]})),
        "resources[0].spec.http[0]", ["route", "redirect", "directResponse"]),
    "empty-string-match": (
        plugin_config(demo_vs(route_v1(match=[{"headers": {"x-a": {"prefix": ""}}}]))),
        "resources[0].spec.http[0].match[0].headers.x-a.prefix", ["empty"]),
    "duplicate-route-names": (
        plugin_config(demo_vs(route_v1(name="main", match=[{"uri": {"prefix": "/a"}}]), route_v1(name="main"))),
        "resources[0].spec.http[1].name", ["duplicate", "main"]),
    "regex-repetition-over-re2s-1000": (
        plugin_config(*[demo_vs(route_v1(match=[{"uri": {"regex": "a{300000}x"}}])) for _ in range(120)]),
        "resources[119].spec.http[0].match[0].uri.regex", ["repetition count 300000", "limit of 1000"]),
    "regex-compiled-over-1-mib": (
        plugin_config(demo_vs(route_v1(match=[{"uri": {"regex": "(?:[a-z]{1000}){40}"}}]))),
        "resources[0].spec.http[0].match[0].uri.regex", ["compiles to over 1 MiB"]),
    "nul-in-destination-host": (
        plugin_config(demo_vs({"route": [to(host="demo\0app")]})),
        "resources[0].spec.http[0].route[0].destination.host", ["invalid (label"]),
    "wildcard-not-leftmost": (
        plugin_config(virtual_service("demoapp", ["a.*.example.com"], [route_v1()])),
        "resources[0].spec.hosts[0]", ["invalid (label \"*\" invalid)"]),
    "metadata-name-not-dns-1123": (
        plugin_config(virtual_service("Demo_App", ["demoapp"], [route_v1()])),
        "resources[0].metadata.name", ["not a DNS-1123 subdomain"]),
    "labels-not-a-map": (
        plugin_config({**destination_rule("demoapp", "demoapp", ["v1"]),
                       "metadata": {"name": "demoapp", "namespace": "app", "labels": "app=demo"}}),
        "resources[0].metadata.labels", ["invalid type"]),
    "no-resources-member": ({"routing": {"clusterHeader": "x-meshrules-cluster"}},
                            "resources", ['give {"resources": []}']),
    "undefined-subset": (
        plugin_config(destination_rule("demoapp", "demoapp", ["v1", "v2"]),
                      demo_vs({"route": [to(subset="v9")]})),
        "resources[1].spec.http[0].route[0].destination.subset", ["v9", "DestinationRule"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_config_is_refused_naming_path_and_reason(rejected_envoy, case):
    config, path, reason = CASES[case]
    assert_refused_with(rejected_envoy(config), path, *reason)


def test_http_status_out_of_range_is_refused_with_the_exact_message(rejected_envoy):
    config, _, _ = CASES["http-status-700"]
    line = assert_refused_with(rejected_envoy(config), "resources[0].spec.http[0].fault.abort.httpStatus")
    assert line.endswith("resources[0].spec.http[0].fault.abort.httpStatus: 700 is not in 200..=599"), line


def test_mirror_is_refused_with_a_message_naming_the_alternative(rejected_envoy):
    config = plugin_config(demo_vs(route_v1(mirror={"host": "demoapp", "subset": "v2"})))
    line = assert_refused_with(rejected_envoy(config), "resources[0].spec.http[0].mirror", "not supported")
    assert re.search(r"use .*mirror", line), line


def test_undefined_subset_message_lists_the_defined_subsets(rejected_envoy):
    config, path, _ = CASES["undefined-subset"]
    line = assert_refused_with(rejected_envoy(config), path)
    assert "v1" in line and "v2" in line and "demoapp.app.svc.cluster.local" in line, line


def test_every_problem_of_a_config_is_reported_on_its_own_line(rejected_envoy):
    config = plugin_config(
        demo_vs(
            route_v1(match=[{"uri": {"regex": "(unclosed"}}]),
            route_v1(timeout="soon"),
            route_v1(fault={"abort": {"httpStatus": 700, "percentage": {"value": 100}}}),
        ),
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
         "metadata": {"name": "se", "namespace": "app"}, "spec": {}},
    )
    lines = refusal_lines(rejected_envoy(config))
    paths = [
        "resources[0].spec.http[0].match[0].uri.regex",
        "resources[0].spec.http[1].timeout",
        "resources[0].spec.http[2].fault.abort.httpStatus",
        "resources[1].kind",
    ]
    found = {p: [i for i, line in enumerate(lines) if f"{p}: " in line] for p in paths}
    assert all(found.values()), f"missing: {[p for p, v in found.items() if not v]}\n" + "\n".join(lines)
    # One problem a line: no line names two of the paths.
    for line in lines:
        assert sum(f"{p}: " in line for p in paths) <= 1, line


def test_valid_config_is_accepted_and_says_so_in_the_log(envoy):
    ok = envoy(plugin_config(demo_vs(route_v1())))
    assert re.search(r"config accepted: 1 VirtualService", ok.log_text()), ok.log_text()[-2000:]
    assert "config rejected" not in ok.log_text()


def test_envoy_validate_mode_refuses_a_bad_filter_config_with_the_same_message(upstreams, tmp_path):
    """``envoy --mode validate`` runs the filter's configure step too, so a CI check of a
    bootstrap catches bad rules before deployment."""
    require_binaries()
    config, path, reason = CASES["http-status-700"]
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(bootstrap(config, dict(upstreams.ports), 0, 0, MESHRULES_WASM)))
    result = envoy_validate(cfg)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert f"{path}: 700 is not in 200..=599" in out, out


DUPLICATE_ACTION = (
    '{"resources": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",'
    ' "metadata": {"name": "deny-admin", "namespace": "app"},'
    ' "spec": {"action": "DENY", "action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}]}'
)


def test_a_duplicate_key_is_refused_so_a_deny_cannot_become_an_allow(rejected_envoy):
    line = assert_refused_with(rejected_envoy(DUPLICATE_ACTION), "resources[0].spec.action", 'duplicate key "action"')
    assert "at line 1 column" in line, line


def test_an_empty_configuration_is_refused_and_names_the_config_with_no_rules(rejected_envoy):
    lines = refusal_lines(rejected_envoy(""))
    assert any('give {"resources": []} to run the filter with no rules' in line for line in lines), lines


def test_no_resources_loads_with_a_warning_that_every_request_passes(envoy):
    env = envoy(plugin_config())
    assert "config warning: resources: no resources: every request passes untouched" in env.log_text()


def test_a_check_warning_is_logged_once_per_load_and_the_rule_acts_as_in_istio(envoy):
    """`meshrules check`'s warnings come from the filter's compile step: Envoy's log has each once
    per VM load (Envoy configures a VM on the main thread and one per worker), none per request.
    `*Mozilla*` is istiod's suffix `Mozilla*` with a literal `*`, so a browser is not denied."""
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "no-browsers", "namespace": "app"},
              "spec": {"action": "DENY", "rules": [{"when": [
                  {"key": "request.headers[user-agent]", "values": ["*Mozilla*"]}]}]}}
    env = envoy(plugin_config(demo_vs(route_v1()), destination_rule("demoapp", "demoapp", ["v1"]), policy))
    line = ('meshrules: config warning: resources[2].spec.rules[0].when[0].values[0]: Istio reads `*` only '
            'as the whole value or its first or last character: "*Mozilla*" matches values ending in '
            '"Mozilla*", with a literal `*`.')
    loads = len(re.findall(r"config accepted", env.log_text()))
    assert loads >= 1, env.log_text()[-2000:]
    assert env.log_text().count(line) == loads, env.log_text()[-3000:]
    for agent in ("Mozilla/5.0 (X11; Linux x86_64)", "curl/8.0"):
        assert request(env, headers={"User-Agent": agent}).status == 200
    assert request(env, headers={"User-Agent": "bot Mozilla*"}).status == 403
    assert env.log_text().count(line) == loads


def test_a_huge_refused_value_is_cut_in_the_log_line(rejected_envoy):
    huge = "9" * (10 << 20)
    lines = refusal_lines(rejected_envoy(plugin_config(demo_vs(route_v1(timeout=huge)))))
    hits = [line for line in lines if "resources[0].spec.http[0].timeout: " in line]
    assert hits, lines
    assert "…(10485760 bytes)" in hits[0], hits[0][:400]
    assert len(hits[0]) < 600, len(hits[0])
    assert all(len(line) < 2000 for line in lines)


# Limits (README, Configuration: Limits). Near the limits loads; just over is refused with the reason.
MAX_VIRTUAL_SERVICES = 10000
MAX_ROUTES = 60000
MAX_CONFIG_BYTES = 32 * 1024 * 1024


def many_virtual_services(n: int, routes: int = 4) -> dict:
    return plugin_config(*[
        virtual_service(f"vs{i}", [f"h{i}.example.com"], [
            {"name": f"r{r}", "match": [{"uri": {"prefix": f"/p{r}/"}}],
             "route": [to(host=f"svc{i}", subset="v1", weight=90), to(host=f"svc{i}", subset="v2", weight=10)],
             "timeout": "5s", "retries": {"attempts": 2, "retryOn": "5xx"}}
            for r in range(routes)])
        for i in range(n)])


def test_the_most_virtual_services_and_routes_load(envoy):
    env = envoy(many_virtual_services(MAX_VIRTUAL_SERVICES, routes=MAX_ROUTES // MAX_VIRTUAL_SERVICES))
    assert "config accepted: 10000 VirtualService(s), 60000 route(s)" in env.log_text()


def test_one_virtual_service_over_the_limit_is_refused(rejected_envoy):
    assert_refused_with(rejected_envoy(many_virtual_services(MAX_VIRTUAL_SERVICES + 1, routes=1)), "resources",
                        "10001 VirtualServices, over the limit of 10000 per filter")


def test_a_configuration_over_32_mib_is_refused_before_it_is_read(rejected_envoy):
    config = json.dumps(plugin_config(demo_vs(route_v1())))
    padded = config[:-1] + ', "pad": "' + "p" * (MAX_CONFIG_BYTES - len(config)) + '"}'
    assert len(padded) > MAX_CONFIG_BYTES
    assert_refused_with(rejected_envoy(padded), "$", f"over the limit of {MAX_CONFIG_BYTES} bytes")
