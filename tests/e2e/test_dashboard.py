"""The Grafana dashboard (envoy/grafana/dashboards/meshrules.json) asks for what the filter
exports: after real traffic through Envoy, a real Prometheus scraping it answers every panel's
query with data, so the dashboard cannot silently name a metric or label that does not exist."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, Client, plugin_config, to, virtual_service
from prometheus import Prometheus, scrape_config
from security import authorization_policy, bearer, claims, hmac_key, jwks, jwt_rule, on_path, \
    request_authentication, sign
from test_metrics import STATS_TAGS

DASHBOARD = REPO / "envoy" / "grafana" / "dashboards" / "meshrules.json"
ISSUER = "https://issuer.dashboard.test"
KEY = hmac_key("dash")
ON = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def dry_run(policy: dict) -> dict:
    policy["metadata"]["annotations"] = {"istio.io/dry-run": "true"}
    return policy


def config() -> dict:
    cfg = plugin_config(
        virtual_service("demoapp", ["demoapp"], [
            {"name": "limited", "match": [{"uri": {"prefix": "/limited"}}], "route": [to(subset="v1")]},
            {"name": "shadow", "match": [{"uri": {"prefix": "/shadow"}}], "route": [to(subset="v1")]},
            {"name": "abort", "match": [{"uri": {"prefix": "/abort"}}],
             "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}, "route": [to(subset="v1")]},
            {"name": "delay", "match": [{"uri": {"prefix": "/delay"}}],
             "fault": {"delay": {"fixedDelay": "0.01s", "percentage": {"value": 100}}}, "route": [to(subset="v1")]},
            {"name": "split", "route": [{**to(subset="v1"), "weight": 50}, {**to(subset="v2"), "weight": 50}]},
        ]),
        request_authentication("jwt", jwt_rule(ISSUER, jwks=json.dumps(jwks(KEY)))),
        authorization_policy("deny-admin", [on_path("/admin")], action="DENY"),
        # Denies nothing (Istio's dry-run annotation), counts what it would deny.
        dry_run(authorization_policy("would-deny-admin", [on_path("/admin")], action="DENY")),
    )
    # One token an hour; "shadow" only counts what it would refuse (filter_enforced 0%).
    def limit(route: str, enforced: int) -> dict:
        return {"name": route, "virtualService": "app/demoapp", "routes": [route],
                "localRateLimit": {"token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "3600s"},
                                   "filter_enabled": ON,
                                   "filter_enforced": {"default_value": {"numerator": enforced, "denominator": "HUNDRED"}}}}
    cfg["rateLimits"] = [limit("limited", 100), limit("shadow", 0)]
    return cfg


def traffic(client: Client, token: str) -> None:
    """A round that moves every counter the dashboard shows."""
    for i in range(20):
        client.request(host="demoapp", headers={"x-upstream-fail-on": "v2"} if i % 4 == 0 else None)
    client.request(host="demoapp", headers=bearer(token))
    client.request(host="demoapp", headers=bearer(token + "x"))  # refused: 401
    client.request(host="demoapp", path="/admin")  # denied: 403
    client.request(host="demoapp", path="/abort")
    client.request(host="demoapp", path="/delay")
    for _ in range(3):
        client.request(host="demoapp", path="/limited")  # one token an hour: 429 after the first
        client.request(host="demoapp", path="/shadow")  # let through


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    out = [(p["title"], t["expr"]) for p in panels for t in p["targets"]]
    assert len(out) >= 10, out
    return out


def as_prometheus_sees_it(expr: str) -> str:
    """Grafana's variables as a dashboard with every namespace and VirtualService selected."""
    return (expr.replace("$__rate_interval", "1m").replace('"$namespace"', '".*"')
            .replace('"$virtual_service"', '".*"'))


@pytest.fixture(scope="module")
def prom(module_envoy_launcher, tmp_path_factory):
    env = module_envoy_launcher.start(config(), extra={
        "stats_config": {"stats_tags": STATS_TAGS}, "stats_flush_interval": "1s"})
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), scrape_config(env.admin_port))
    token = sign(KEY, claims(ISSUER, "alice"))
    with Client(env) as client:
        traffic(client, token)
        # rate() needs two samples of a counter: a second round after Prometheus has the first
        # (5 filter replies: 401, 403, abort, two 429s; 51 forwarded over both rounds).
        prom.wait_until("the first round scraped",
                        lambda: prom.values("sum(meshrules_local_replies)", by="") == {"": 5.0})
        traffic(client, token)
        prom.wait_until("the second round scraped", lambda: prom.values(
            "sum(meshrules_request_duration_milliseconds_count)", by="") == {"": 51.0})
    yield prom
    prom.stop()


@pytest.mark.parametrize("title,expr", dashboard_queries(), ids=lambda v: v[:40])
def test_every_dashboard_query_returns_data_after_real_traffic(prom, title, expr):
    result = prom.query(as_prometheus_sees_it(expr))
    values = [float(r["value"][1]) for r in result]
    assert values and any(v > 0 for v in values), (title, expr, result)


def test_dashboard_is_provisioned_from_the_compose_demo():
    provider = (REPO / "envoy" / "grafana" / "provisioning" / "dashboards" / "meshrules.yaml").read_text()
    assert "/var/lib/grafana/dashboards" in provider
    datasource = (REPO / "envoy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    uids = {t["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]}
    assert uids == {"prometheus"} and "uid: prometheus" in datasource, uids
