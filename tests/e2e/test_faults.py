"""Fault injection: delays hold requests, aborts answer without reaching the upstream.

Timing assertions only bound deliberate delays, and widely (a 1 s delay must take at least
0.9 s and less than 5 s).
"""

import socket
import threading
import time

import pytest

from conftest import (
    STAT_ABORTS, STAT_DELAYED_NOW, STAT_DELAYS, V1, Client, binomial_tolerance, new_test_id,
    plugin_config, request, to, virtual_service,
)


def faulty(host, fault):
    return virtual_service(host.split(".")[0], [host], [{"fault": fault, "route": [to(subset="v1")]}])


def pct(value):
    return {"value": value}


CONFIG = plugin_config(
    faulty("delay.test", {"delay": {"fixedDelay": "1s", "percentage": pct(100)}}),
    faulty("delay-zero.test", {"delay": {"fixedDelay": "1s", "percentage": pct(0)}}),
    faulty("delay-unset.test", {"delay": {"fixedDelay": "1s"}}),
    faulty("abort.test", {"abort": {"httpStatus": 503, "percentage": pct(100)}}),
    faulty("grpc.test", {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": pct(100)}}),
    faulty("both.test", {"delay": {"fixedDelay": "1s", "percentage": pct(100)},
                         "abort": {"httpStatus": 503, "percentage": pct(100)}}),
    faulty("half.test", {"abort": {"httpStatus": 503, "percentage": pct(50)}}),
    faulty("hold.test", {"delay": {"fixedDelay": "3s", "percentage": pct(100)}}),
)

BODY = b"x" * 5000


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def test_fixed_delay_at_100_percent_holds_the_request(env):
    before = env.stat(STAT_DELAYS) or 0
    r = request(env, "GET", "/", host="delay.test")
    assert r.status == 200 and r.served_by == V1, r
    assert 0.9 <= r.elapsed < 5.0, r.elapsed
    assert env.stat(STAT_DELAYS) == before + 1


@pytest.mark.parametrize("host", ["delay-zero.test", "delay-unset.test"],
                         ids=["percentage-0", "percentage-absent"])
def test_delay_with_zero_or_no_percentage_is_never_injected(env, host):
    before = env.stat(STAT_DELAYS) or 0
    for _ in range(5):
        r = request(env, "GET", "/", host=host)
        assert r.status == 200 and r.served_by == V1, r
    assert (env.stat(STAT_DELAYS) or 0) == before


def test_http_abort_answers_503_without_reaching_the_upstream(env, upstreams):
    tid = new_test_id("abort")
    before = env.stat(STAT_ABORTS) or 0
    r = request(env, "GET", "/", host="abort.test", headers={"x-test-id": tid})
    assert r.status == 503, r
    assert r.body == b"fault filter abort"
    assert r.served_by is None
    assert upstreams.attempts(tid) == 0
    assert env.stat(STAT_ABORTS) == before + 1


def test_grpc_abort_is_a_trailers_only_grpc_answer(env, upstreams):
    tid = new_test_id("grpc")
    r = request(env, "POST", "/pkg.Service/Method", host="grpc.test", body=b"",
                headers={"content-type": "application/grpc", "te": "trailers", "x-test-id": tid})
    assert r.status == 200, r
    assert r.headers.get("grpc-status") == "14", r
    assert upstreams.attempts(tid) == 0


def test_delay_and_abort_together_delay_then_abort(env, upstreams):
    tid = new_test_id("both")
    r = request(env, "GET", "/", host="both.test", headers={"x-test-id": tid})
    assert r.status == 503 and r.body == b"fault filter abort", r
    assert 0.9 <= r.elapsed < 5.0, r.elapsed
    assert upstreams.attempts(tid) == 0


def test_abort_at_50_percent_aborts_about_half(env):
    """1000 requests, abort 503 at 50%: aborts must be 500 ± 79 (5 sigma, sigma = 15.8), every
    other request served by the upstream, and the abort counter must count each abort."""
    n = 1000
    before = env.stat(STAT_ABORTS) or 0
    aborted = served = 0
    with Client(env) as c:
        for _ in range(n):
            r = c.request("GET", "/", host="half.test")
            if r.status == 503 and r.body == b"fault filter abort":
                aborted += 1
            elif r.status == 200 and r.served_by == V1:
                served += 1
    assert aborted + served == n
    assert abs(aborted - n * 0.5) <= binomial_tolerance(n, 0.5), aborted
    assert env.stat(STAT_ABORTS) == before + aborted


def test_delay_holds_a_request_that_has_a_body(env):
    """A POST whose body arrives with its headers is held as long as a GET."""
    r = request(env, "POST", "/upload", host="delay.test", body=BODY)
    assert r.status == 200 and r.served_by == V1, r
    assert r.json()["body_bytes"] == len(BODY)
    assert 0.9 <= r.elapsed < 5.0, r.elapsed


def test_delay_then_abort_of_a_request_with_a_body_never_reaches_the_upstream(env, upstreams):
    tid = new_test_id("both-body")
    r = request(env, "POST", "/upload", host="both.test", body=BODY, headers={"x-test-id": tid})
    assert r.status == 503 and r.body == b"fault filter abort", r
    assert 0.9 <= r.elapsed < 5.0, r.elapsed
    assert upstreams.attempts(tid) == 0


def test_concurrent_delays_each_end_on_their_own_deadline(env):
    """A 3 s delay is held first, then a 1 s one: the 1 s request must not wait for the 3 s
    deadline (it ends before 2.5 s), and the 3 s one still lasts its 3 s."""
    results = {}

    def run(name, host):
        results[name] = request(env, "GET", "/", host=host, timeout=15)

    long = threading.Thread(target=run, args=("long", "hold.test"))
    long.start()
    assert env.wait_for_stat(STAT_DELAYED_NOW, 1, timeout=2.0) == 1
    run("short", "delay.test")
    long.join(timeout=15)
    assert not long.is_alive()
    short, long_r = results["short"], results["long"]
    assert short.status == 200 and 0.9 <= short.elapsed < 2.5, (short, short.elapsed)
    assert long_r.status == 200 and 2.9 <= long_r.elapsed < 8.0, (long_r, long_r.elapsed)


def test_client_leaving_during_a_delay_releases_the_held_request(env, upstreams):
    """A client sends a request held 3 s and hangs up after 0.3 s: the held request is
    released (the 'requests delayed' gauge goes back to 0 well before the 3 s), it never
    reaches the upstream, and Envoy keeps serving."""
    tid = new_test_id("gone")
    assert env.wait_for_stat(STAT_DELAYED_NOW, 0) == 0
    sent = time.monotonic()
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: hold.test\r\nx-test-id: {tid}\r\n\r\n".encode())
        assert env.wait_for_stat(STAT_DELAYED_NOW, 1, timeout=2.0) == 1
        time.sleep(max(0.0, 0.3 - (time.monotonic() - sent)))
    # Released on hang-up, not when the 3 s delay ends.
    assert env.wait_for_stat(STAT_DELAYED_NOW, 0, timeout=2.0) == 0
    assert time.monotonic() - sent < 2.7
    # Past the delay's end: the request was not forwarded later either.
    time.sleep(max(0.0, 3.6 - (time.monotonic() - sent)))
    assert upstreams.attempts(tid) == 0
    assert env.stat(STAT_DELAYED_NOW) == 0
    r = request(env, "GET", "/", host="delay-zero.test")
    assert r.status == 200 and r.served_by == V1, r
    assert env.alive()
