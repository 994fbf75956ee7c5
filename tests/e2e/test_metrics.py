"""The filter's metrics after real traffic, as Prometheus scrapes them from Envoy.

The Envoy here carries the ``stats_config.stats_tags`` that README.md tells users to copy from
``envoy/envoy.yaml``, so per-route counters come out with namespace, virtual_service and route
labels; the names are the ones README.md lists.
"""

import time

import pytest
import yaml

from conftest import (
    REPO, STAT_ABORTS, cluster, STAT_CONFIG_ACCEPTED, STAT_CONFIG_REJECTED, STAT_DELAYED_NOW, STAT_DELAYS,
    plugin_config, prometheus_value, request, stat_route_requests, stat_unrouted_requests, to,
    virtual_service,
)

# The stats_tags envoy/envoy.yaml ships (tests/cli.rs checks they are the CLI's and the other
# bootstraps').
STATS_TAGS = yaml.safe_load((REPO / "envoy" / "envoy.yaml").read_text())["stats_config"]["stats_tags"]

CONFIG = plugin_config(
    virtual_service("demoapp", ["demoapp"], [
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": [to(subset="v2")]},
        {"name": "faulty.route", "match": [{"uri": {"prefix": "/abort"}}],
         "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}, "route": [to(subset="v1")]},
        {"match": [{"uri": {"prefix": "/delay"}}],
         "fault": {"delay": {"fixedDelay": "0.2s", "percentage": {"value": 100}}}, "route": [to(subset="v1")]},
        {"match": [{"uri": {"prefix": "/ok"}}], "route": [to(subset="v1")]},
    ]),
    virtual_service("reviews.main", ["reviews"], [{"name": "all", "route": [to("ratings")]}], namespace="other"),
)

TRAFFIC = [
    # (path, host, headers, times)
    ("/", "demoapp", {"x-canary": "true"}, 3),
    ("/abort", "demoapp", None, 2),
    ("/delay", "demoapp", None, 1),
    ("/ok", "demoapp", None, 4),
    ("/nowhere", "demoapp", None, 2),  # no route: 404
    ("/", "reviews.other", None, 1),
    ("/", "unknown.test", None, 5),  # no VirtualService: not counted anywhere
]


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    env = module_envoy_launcher.start(CONFIG, extra={"stats_config": {"stats_tags": STATS_TAGS}})
    for path, host, headers, times in TRAFFIC:
        for _ in range(times):
            request(env, "GET", path, host=host, headers=headers)
    return env


@pytest.fixture(scope="module")
def prom(env):
    return env.stats_prometheus()


def route_requests(prom, namespace, vs, route):
    return prometheus_value(prom, "meshrules_route_requests", namespace=namespace, virtual_service=vs, route=route)


def test_route_requests_are_counted_per_virtual_service_and_route(prom):
    assert route_requests(prom, "app", "demoapp", "canary") == 3, prom
    assert route_requests(prom, "app", "demoapp", "faulty_route") == 2, prom  # dots become _
    assert route_requests(prom, "app", "demoapp", "route-2") == 1, prom  # unnamed: route-<index>
    assert route_requests(prom, "app", "demoapp", "route-3") == 4, prom
    assert route_requests(prom, "other", "reviews_main", "all") == 1, prom


def test_requests_no_route_matched_are_counted_per_virtual_service(prom):
    assert prometheus_value(prom, "meshrules_unrouted_requests", namespace="app", virtual_service="demoapp") == 2, prom
    assert prometheus_value(prom, "meshrules_unrouted_requests", namespace="other", virtual_service="reviews_main") == 0, prom


def test_fault_counters_and_delay_gauge(prom):
    assert prometheus_value(prom, "meshrules_fault_aborts_injected") == 2, prom
    assert prometheus_value(prom, "meshrules_fault_delays_injected") == 1, prom
    assert prometheus_value(prom, "meshrules_requests_delayed") == 0, prom


def test_config_loads_are_counted(prom):
    # One load per Wasm VM: the main thread's and one per worker (--concurrency 1).
    assert prometheus_value(prom, "meshrules_config_loads_accepted") >= 2, prom
    assert prometheus_value(prom, "meshrules_config_loads_rejected") == 0, prom


def test_admin_stats_show_the_same_counters_under_wasmcustom(env):
    assert env.stat(stat_route_requests("app", "demoapp", "canary")) == 3
    assert env.stat(stat_unrouted_requests("app", "demoapp")) == 2
    assert env.stat(STAT_ABORTS) == 2
    assert env.stat(STAT_DELAYS) == 1
    assert env.stat(STAT_DELAYED_NOW) == 0
    assert env.stat(STAT_CONFIG_ACCEPTED) >= 2
    assert env.stat(STAT_CONFIG_REJECTED) == 0


def test_metric_names_are_the_ones_readme_lists():
    readme = (REPO / "README.md").read_text()
    for name in ["meshrules_route_requests{namespace,virtual_service,route}",
                 "meshrules_unrouted_requests{namespace,virtual_service}",
                 "meshrules_fault_delays_injected", "meshrules_fault_aborts_injected",
                 "meshrules_requests_delayed", "meshrules_config_loads_accepted",
                 "meshrules_responses{namespace,virtual_service,route,subset,cluster,code,code_class}",
                 "meshrules_request_duration_milliseconds{namespace,virtual_service,route,subset,cluster}",
                 "meshrules_local_replies{reason}"]:
        assert name in readme, name


def test_responses_are_counted_per_destination_and_code(prom):
    # The canary route's 3 requests went to v2 and came back 200; route-3 (/ok) to v1.
    def responses(route, subset, code):
        return prometheus_value(prom, "meshrules_responses", namespace="app", virtual_service="demoapp",
                                route=route, subset=subset, cluster=cluster(subset=subset).replace(".", "_"),
                                code=code, code_class=f"{code[0]}xx")
    assert responses("canary", "v2", "200") == 3, prom
    assert responses("route-3", "v1", "200") == 4, prom
    # The delayed route's request was forwarded after its delay and answered: counted too.
    assert responses("route-2", "v1", "200") == 1, prom
    # Aborted requests never reached a destination: they are the filter's own replies.
    assert responses("faulty_route", "v1", "503") is None, prom


def test_request_durations_are_histograms_per_destination(env):
    # Envoy merges histogram samples into what it exports every stats_flush_interval (5 s).
    def count():
        return prometheus_value(env.stats_prometheus(), "meshrules_request_duration_milliseconds_count",
                                namespace="app", virtual_service="demoapp", route="route-2", subset="v1",
                                cluster=cluster(subset="v1").replace(".", "_"))
    deadline = time.monotonic() + 15
    while count() != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    prom = env.stats_prometheus()
    assert count() == 1, prom
    # The one request on the delay route waited its 0.2 s fault delay: its duration counts it
    # (the 250 ms bucket holds it, the 100 ms one does not).
    labels = dict(namespace="app", virtual_service="demoapp", route="route-2", subset="v1",
                  cluster=cluster(subset="v1").replace(".", "_"))
    assert prometheus_value(prom, "meshrules_request_duration_milliseconds_bucket", le="100", **labels) == 0, prom
    assert prometheus_value(prom, "meshrules_request_duration_milliseconds_bucket", le="250", **labels) == 1, prom


def test_local_replies_are_counted_under_envoys_response_code_details(prom):
    assert prometheus_value(prom, "meshrules_local_replies", reason="fault_filter_abort") == 2, prom
    assert prometheus_value(prom, "meshrules_local_replies", reason="route_not_found") == 2, prom


def test_destination_metrics_can_be_left_out_through_the_vm_environment(envoy):
    """MESHRULES_DESTINATION_METRICS=off in the VM's environment (README, Metrics): no
    per-destination series, the per-route counters as before (bench listener h relies on it)."""
    def without_destination_metrics(cfg):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        vm = hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]
        vm["environment_variables"] = {"key_values": {"MESHRULES_DESTINATION_METRICS": "off"}}
        return cfg

    env = envoy(CONFIG, extra={"stats_config": {"stats_tags": STATS_TAGS}}, transform=without_destination_metrics)
    for _ in range(3):
        assert request(env, "GET", "/", host="demoapp", headers={"x-canary": "true"}).status == 200
    prom = env.stats_prometheus()
    assert route_requests(prom, "app", "demoapp", "canary") == 3, prom
    assert "meshrules_responses" not in prom and "meshrules_request_duration" not in prom, prom
