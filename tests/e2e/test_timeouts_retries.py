"""Route timeouts and retry policies, enforced by Envoy's router from the filter's decision.

The upstream counts every attempt per test id and fails the first N on request
(``x-upstream-fail``), so the number of attempts Envoy made is observed, not inferred.
"""

import pytest

from conftest import V1, new_test_id, plugin_config, request, to, virtual_service


def routed(host, **policy):
    return virtual_service(host.split(".")[0], [host], [{"route": [to(subset="v1")], **policy}])


CONFIG = plugin_config(
    routed("timeout.test", timeout="0.5s"),
    routed("retry-5xx.test", retries={"attempts": 3, "retryOn": "5xx"}),
    routed("retry-503.test", retries={"attempts": 3, "retryOn": "503"}),
    routed("no-retry.test", retries={"attempts": 0}),
    routed("attempts-only.test", retries={"attempts": 3}),
    routed("default.test"),
    routed("per-try.test", retries={"attempts": 2, "perTryTimeout": "0.3s", "retryOn": "5xx"}),
)


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def test_route_timeout_answers_504_when_the_upstream_is_slower(env):
    r = request(env, "GET", "/", host="timeout.test", headers={"x-upstream-delay-ms": "3000"})
    assert r.status == 504, r
    assert r.served_by is None
    assert 0.4 <= r.elapsed < 2.9, r.elapsed


def test_route_timeout_leaves_fast_answers_alone(env):
    r = request(env, "GET", "/", host="timeout.test", headers={"x-upstream-delay-ms": "50"})
    assert r.status == 200 and r.served_by == V1, r


def test_retry_on_5xx_retries_until_success(env, upstreams):
    tid = new_test_id("r5xx")
    r = request(env, "GET", "/", host="retry-5xx.test", headers={"x-test-id": tid, "x-upstream-fail": "2"})
    assert r.status == 200 and r.served_by == V1, r
    assert upstreams.attempts(tid) == 3


def test_retry_on_5xx_gives_up_after_the_attempts(env, upstreams):
    tid = new_test_id("r5xx-give-up")
    r = request(env, "GET", "/", host="retry-5xx.test", headers={"x-test-id": tid, "x-upstream-fail": "10"})
    assert r.status == 503, r
    assert upstreams.attempts(tid) == 4  # first try + 3 retries


def test_numeric_retry_on_retries_that_status_code(env, upstreams):
    tid = new_test_id("r503")
    r = request(env, "GET", "/", host="retry-503.test", headers={"x-test-id": tid, "x-upstream-fail": "2"})
    assert r.status == 200, r
    assert upstreams.attempts(tid) == 3


def test_numeric_retry_on_does_not_retry_other_status_codes(env, upstreams):
    tid = new_test_id("r503-500")
    r = request(env, "GET", "/", host="retry-503.test", headers={"x-test-id": tid, "x-upstream-status": "500"})
    assert r.status == 500, r
    assert upstreams.attempts(tid) == 1


def test_zero_attempts_disables_retries(env, upstreams):
    tid = new_test_id("r0")
    r = request(env, "GET", "/", host="no-retry.test", headers={"x-test-id": tid, "x-upstream-fail": "2"})
    assert r.status == 503, r
    assert upstreams.attempts(tid) == 1


def test_attempts_without_retry_on_use_istio_default_conditions(env, upstreams):
    tid = new_test_id("rattempts")
    r = request(env, "GET", "/", host="attempts-only.test", headers={"x-test-id": tid, "x-upstream-fail": "3"})
    assert r.status == 200, r
    assert upstreams.attempts(tid) == 4

    tid = new_test_id("rattempts-500")
    r = request(env, "GET", "/", host="attempts-only.test", headers={"x-test-id": tid, "x-upstream-status": "500"})
    assert r.status == 500, r
    assert upstreams.attempts(tid) == 1


def test_route_without_retries_gets_istio_default_of_two_retries_on_503(env, upstreams):
    tid = new_test_id("rdefault")
    r = request(env, "GET", "/", host="default.test", headers={"x-test-id": tid, "x-upstream-fail": "2"})
    assert r.status == 200, r
    assert upstreams.attempts(tid) == 3

    tid = new_test_id("rdefault-give-up")
    r = request(env, "GET", "/", host="default.test", headers={"x-test-id": tid, "x-upstream-fail": "10"})
    assert r.status == 503, r
    assert upstreams.attempts(tid) == 3


def test_istio_default_retries_do_not_retry_500(env, upstreams):
    tid = new_test_id("rdefault-500")
    r = request(env, "GET", "/", host="default.test", headers={"x-test-id": tid, "x-upstream-status": "500"})
    assert r.status == 500, r
    assert upstreams.attempts(tid) == 1


def test_per_try_timeout_cuts_each_attempt_and_retries(env, upstreams):
    """Every attempt sleeps 3 s upstream; with perTryTimeout 0.3s and 2 retries Envoy gives up
    after three cut attempts (about 1 s), long before a single 3 s attempt would end."""
    tid = new_test_id("pertry")
    r = request(env, "GET", "/", host="per-try.test", headers={"x-test-id": tid, "x-upstream-delay-ms": "3000"})
    assert r.status == 504, r
    assert r.elapsed < 2.9, r.elapsed
    assert upstreams.attempts(tid) == 3


def with_route_timeout(seconds):
    """A bootstrap whose cluster_header route has its own timeout, as a hand-written Envoy
    route (default 15 s) would."""
    def transform(cfg):
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            route["route"]["timeout"] = seconds
        return cfg
    return transform


def test_no_virtual_service_timeout_disables_the_envoy_route_timeout_as_istiod_does(module_envoy_launcher):
    """istiod writes a 0s (disabled) route timeout when the VirtualService has none; the filter
    sends x-envoy-upstream-rq-timeout-ms: 0, so a 1 s Envoy route timeout does not cut a 1.5 s
    answer, while a VirtualService timeout still applies."""
    env = module_envoy_launcher.start(plugin_config(routed("untimed.test"), routed("timed.test", timeout="0.5s")),
                                      transform=with_route_timeout("1s"))
    r = request(env, "GET", "/", host="untimed.test", headers={"x-upstream-delay-ms": "1500"})
    assert r.status == 200 and r.served_by == V1, r
    r = request(env, "GET", "/", host="timed.test", headers={"x-upstream-delay-ms": "1500"})
    assert r.status == 504, r


def test_istio_default_retries_cover_grpc_unavailable_through_the_grpc_retry_header(env, upstreams):
    """Istio's default retryOn includes `unavailable`; Envoy reads gRPC conditions only from
    x-envoy-retry-grpc-on, so the filter must send it there for gRPC UNAVAILABLE to be retried."""
    tid = new_test_id("grpc")
    r = request(env, "POST", "/pkg.Svc/Call", host="default.test", body=b"",
                headers={"content-type": "application/grpc", "x-test-id": tid,
                         "x-upstream-fail": "2", "x-upstream-fail-grpc": "14"})
    assert r.status == 200 and "grpc-status" not in r.headers, r
    assert upstreams.attempts(tid) == 3


ISTIO_DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2, "retriable_status_codes": [503],
}


def with_istio_route_defaults(cfg):
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route["route"]["retry_policy"] = ISTIO_DEFAULT_RETRY
    return cfg


def test_route_carrying_istio_defaults_keeps_istio_retries_without_per_request_headers(
        module_envoy_launcher, upstreams):
    """With routing.routeHasIstioDefaults the filter sends no retry headers for a route without
    `retries`; the Envoy route's own Istio default policy retries 503 twice, and explicit
    VirtualService settings still arrive as headers."""
    config = plugin_config(routed("lean.test"), routed("lean-off.test", retries={"attempts": 0}),
                           routeHasIstioDefaults=True)
    env = module_envoy_launcher.start(config, transform=with_istio_route_defaults)
    tid = new_test_id("lean")
    r = request(env, "GET", "/", host="lean.test", headers={"x-test-id": tid, "x-upstream-fail": "2"})
    assert r.status == 200 and upstreams.attempts(tid) == 3, r
    tid = new_test_id("lean-off")
    r = request(env, "GET", "/", host="lean-off.test", headers={"x-test-id": tid, "x-upstream-fail": "2"})
    assert r.status == 503 and upstreams.attempts(tid) == 1, r
