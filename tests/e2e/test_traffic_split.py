"""Weighted destinations share traffic by weight; a sticky key keeps a user on one side.

Shares are checked against a binomial band of 5 sigma around the expected count: a correct
filter fails such a check about once in 1.7 million runs, while a wrong split (say 80/20 instead
of 90/10) falls far outside it.
"""

import pytest

from conftest import (
    V1, V2, binomial_tolerance, count_clusters, plugin_config, to, virtual_service, Client,
)

CONFIG = plugin_config(
    virtual_service("split", ["split.test"], [{"route": [to(subset="v1", weight=90), to(subset="v2", weight=10)]}]),
    virtual_service("ratio", ["ratio.test"], [{"route": [to(subset="v1", weight=1), to(subset="v2", weight=3)]}]),
    virtual_service("floats", ["floats.test"], [{"route": [to(subset="v1", weight=90.0), to(subset="v2", weight=10.0)]}]),
    virtual_service("zero", ["zero.test"], [{"route": [to(subset="v1", weight=100), to(subset="v2", weight=0)]}]),
    virtual_service("single", ["single.test"], [{"route": [to(subset="v2")]}]),
    virtual_service("sticky", ["sticky.test"], [{"route": [to(subset="v1", weight=50), to(subset="v2", weight=50)]}]),
    sticky_header="x-user",
)


@pytest.fixture(scope="module")
def env(module_envoy_launcher):
    return module_envoy_launcher.start(CONFIG)


def assert_share(counts, cluster, n, p):
    got = counts.get(cluster, 0)
    tol = binomial_tolerance(n, p)
    assert abs(got - n * p) <= tol, (
        f"{cluster} got {got}/{n}, expected {n * p:.0f} ± {tol:.0f} (5 sigma); all: {counts}")


def test_ninety_ten_split_sends_about_ten_percent_to_v2(env):
    """2000 requests, weights 90/10: v2 must get 200 ± 67 (5 sigma, sigma = 13.4)."""
    n = 2000
    counts = count_clusters(env, n, "split.test")
    assert set(counts) == {V1, V2}, counts
    assert_share(counts, V2, n, 0.10)


def test_weights_not_summing_to_100_are_proportions(env):
    """1000 requests, weights 1 and 3 (= 25/75): v1 must get 250 ± 68 (5 sigma, sigma = 13.7)."""
    n = 1000
    counts = count_clusters(env, n, "ratio.test")
    assert set(counts) == {V1, V2}, counts
    assert_share(counts, V1, n, 0.25)


def test_float_weights_are_accepted(env):
    """Weights written as 90.0/10.0 (protobuf Struct numbers): 1000 requests, v2 must get
    100 ± 47 (5 sigma, sigma = 9.5)."""
    n = 1000
    counts = count_clusters(env, n, "floats.test")
    assert_share(counts, V2, n, 0.10)


def test_zero_weight_destination_gets_no_traffic(env):
    counts = count_clusters(env, 200, "zero.test")
    assert counts == {V1: 200}


def test_single_destination_without_weight_takes_all_traffic(env):
    counts = count_clusters(env, 50, "single.test")
    assert counts == {V2: 50}


def test_same_sticky_user_always_lands_on_the_same_side(env):
    for user in ["alice", "bob", "carol"]:
        counts = count_clusters(env, 50, "sticky.test", headers_for=lambda i: {"x-user": user})
        assert len(counts) == 1 and sum(counts.values()) == 50, (user, counts)


def test_distinct_sticky_users_spread_over_both_sides(env):
    """200 users on a 50/50 split, each sent twice: both sides get users (a correct filter
    misses one side with probability 2^-199) and each user's two requests agree."""
    sides = {}
    with Client(env) as c:
        for i in range(200):
            user = f"user-{i}"
            a = c.request("GET", "/", host="sticky.test", headers={"x-user": user}).served_by
            b = c.request("GET", "/", host="sticky.test", headers={"x-user": user}).served_by
            assert a == b, (user, a, b)
            sides[user] = a
    per_side = {s: list(sides.values()).count(s) for s in set(sides.values())}
    assert set(per_side) == {V1, V2}, per_side
    # 5 sigma band for 200 users at p = 0.5: 100 ± 35.
    assert abs(per_side[V1] - 100) <= binomial_tolerance(200, 0.5), per_side


def test_requests_without_sticky_key_are_split_randomly(env):
    """Without x-user the sticky split falls back to random: 400 requests at 50/50 must reach
    both sides, v1 within 200 ± 50 (5 sigma)."""
    n = 400
    counts = count_clusters(env, n, "sticky.test")
    assert_share(counts, V1, n, 0.5)
