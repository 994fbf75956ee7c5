"""The test upstream itself behaves as the other tests rely on (no Envoy, no filter)."""

import http.client
import json
import socket
import time

from conftest import PASSTHROUGH, V1, new_test_id


def get(port, path="/", headers=None, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_upstream_echoes_cluster_method_raw_path_and_headers(upstreams):
    status, headers, body = get(upstreams.port(V1), "/a/b?x=1&y=%20", {"X-Thing": "yes"}, "POST", b"payload")
    doc = json.loads(body)
    assert status == 200
    assert headers["x-served-by"] == V1
    assert doc["cluster"] == V1
    assert doc["method"] == "POST"
    assert doc["path"] == "/a/b?x=1&y=%20"
    assert doc["headers"]["x-thing"] == "yes"


def test_upstream_fails_the_first_n_attempts_of_a_test_id_and_counts_them(upstreams):
    tid = new_test_id("harness")
    knobs = {"x-test-id": tid, "x-upstream-fail": "2"}
    statuses = [get(upstreams.port(V1), "/", knobs)[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    # Counted across listeners, and the count query itself is not counted.
    get(upstreams.port(PASSTHROUGH), "/", {"x-test-id": tid})
    assert upstreams.attempts(tid) == 4
    assert upstreams.attempts(tid) == 4


def test_upstream_status_delay_and_response_header_knobs(upstreams):
    start = time.monotonic()
    status, headers, _ = get(upstreams.port(V1), "/", {
        "x-upstream-status": "418",
        "x-upstream-delay-ms": "300",
        "x-upstream-response-header": "x-extra=1",
    })
    assert status == 418
    assert headers["x-extra"] == "1"
    assert time.monotonic() - start >= 0.25


def test_upstream_survives_a_client_that_disconnects(upstreams):
    port = upstreams.port(V1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nx-upstream-delay-ms: 300\r\n\r\n")
    time.sleep(0.5)
    assert get(port, "/")[0] == 200
    assert get(port, "/", method="HEAD")[0] == 200


def test_upstream_fails_only_on_the_listeners_named_in_x_upstream_fail_on(upstreams):
    knob = {"x-upstream-fail-on": f"elsewhere, {V1}"}
    assert get(upstreams.port(V1), "/", knob)[0] == 503
    assert get(upstreams.port(PASSTHROUGH), "/", knob)[0] == 200
