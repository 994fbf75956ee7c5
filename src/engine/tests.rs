//! Decisions for requests, one Istio behaviour per test.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::compile::{load, Anonymous, Identity, ProxyKind};
use crate::http::testing::pairs;
use crate::http::{Edit, LocalReply, ReplyKind, Request};
use crate::rules::Route;

fn rules_with(resources: Value, routing: Value, identity: &dyn Identity) -> RuleSet {
    let config = json!({"resources": resources, "routing": routing});
    match load(config.to_string().as_bytes(), identity) {
        Ok(l) => l.rules,
        Err(e) => panic!("config refused: {e:?}"),
    }
}

fn vs_rules(http: Value) -> RuleSet {
    rules_with(
        json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "demoapp", "namespace": "app"},
            "spec": {"hosts": ["demoapp", "*.example.com"], "http": http}}]),
        json!({}),
        &Anonymous,
    )
}

struct Req(Vec<(String, String)>);

impl Req {
    fn get(path: &str) -> Self {
        Self::new("GET", "demoapp:8080", path)
    }
    fn new(method: &str, authority: &str, path: &str) -> Self {
        Req(vec![
            (":method".into(), method.into()),
            (":scheme".into(), "http".into()),
            (":authority".into(), authority.into()),
            (":path".into(), path.into()),
        ])
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.0.push((k.into(), v.into()));
        self
    }
}

fn decide(rules: &RuleSet, req: &Req) -> Decision {
    rules.decide(
        &Request::from_headers(&req.0),
        &mut fastrand::Rng::with_seed(7),
    )
}

fn verdict(rules: &RuleSet, req: &Req) -> Verdict {
    match decide(rules, req) {
        Decision::Act(v) => v,
        Decision::Pass => panic!("request passed untouched"),
    }
}

fn forward(rules: &RuleSet, req: &Req) -> Forward {
    match verdict(rules, req).outcome {
        Outcome::Forward(f) => f,
        Outcome::Reply(r) => panic!("replied {r:?}"),
    }
}

fn reply(rules: &RuleSet, req: &Req) -> LocalReply {
    match verdict(rules, req).outcome {
        Outcome::Reply(r) => r,
        Outcome::Forward(f) => panic!("forwarded {f:?}"),
    }
}

/// The cluster header the filter sets for the request.
fn cluster(rules: &RuleSet, req: &Req) -> String {
    let f = forward(rules, req);
    let mut cluster = None;
    let view = Request::from_headers(&req.0);
    let _ = rules.request_edits(&f, view.path, |e| {
        if let Edit::Set(name, value) = e {
            if name == rules.cluster_header {
                cluster = Some(value.to_string());
            }
        }
        Ok::<(), ()>(())
    });
    cluster.expect("a cluster header")
}

/// The destination index a forward decision picks with this generator.
fn destination_with(rules: &RuleSet, req: &Req, rng: &mut fastrand::Rng) -> usize {
    match rules.decide(&Request::from_headers(&req.0), rng) {
        Decision::Act(Verdict {
            outcome: Outcome::Forward(f),
            ..
        }) => f.destination,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn route_named<'r>(rules: &'r RuleSet, name: &str) -> &'r Route {
    rules.routes.iter().find(|r| r.name == name).unwrap()
}

fn subset_route(subset: &str) -> Value {
    json!([{"destination": {"host": "demoapp", "subset": subset, "port": {"number": 8080}}}])
}

const V1: &str = "outbound|8080|v1|demoapp.app.svc.cluster.local";
const V2: &str = "outbound|8080|v2|demoapp.app.svc.cluster.local";

#[test]
fn header_canary_goes_to_v2_and_the_rest_to_v1() {
    let rules = vs_rules(json!([
        {"match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": subset_route("v2")},
        {"route": subset_route("v1")}]));
    assert_eq!(
        cluster(&rules, &Req::get("/").header("x-canary", "true")),
        V2
    );
    assert_eq!(
        cluster(&rules, &Req::get("/").header("x-canary", "false")),
        V1
    );
    assert_eq!(cluster(&rules, &Req::get("/")), V1);
}

#[test]
fn short_name_fqdn_and_wildcard_hosts_select_the_virtual_service_case_insensitively() {
    let rules = vs_rules(json!([{"route": subset_route("v1")}]));
    for authority in [
        "demoapp",
        "DemoApp:8080",
        "demoapp.app",
        "demoapp.app.svc",
        "demoapp.app.svc.cluster.local:80",
        "shop.example.com",
    ] {
        let req = Req::new("GET", authority, "/");
        assert_eq!(cluster(&rules, &req), V1, "{authority}");
    }
    assert!(matches!(
        decide(&rules, &Req::new("GET", "other", "/")),
        Decision::Pass
    ));
    assert!(matches!(
        decide(&rules, &Req::new("GET", "example.com", "/")),
        Decision::Pass
    ));
}

#[test]
fn virtual_service_without_a_matching_route_answers_404() {
    let rules =
        vs_rules(json!([{"match": [{"uri": {"prefix": "/api"}}], "route": subset_route("v1")}]));
    let v = verdict(&rules, &Req::get("/web"));
    assert_eq!(v.route, None);
    match v.outcome {
        Outcome::Reply(r) => assert_eq!((r.kind, r.status), (ReplyKind::NoRoute, 404)),
        Outcome::Forward(_) => panic!("forwarded"),
    }
}

#[test]
fn uri_exact_prefix_and_full_match_regex() {
    let rules = vs_rules(json!([
        {"name": "exact", "match": [{"uri": {"exact": "/a"}}], "route": subset_route("v1")},
        {"name": "prefix", "match": [{"uri": {"prefix": "/b"}}], "route": subset_route("v1")},
        {"name": "regex", "match": [{"uri": {"regex": "/c/[0-9]+"}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    let name = |path: &str| {
        rules.routes[forward(&rules, &Req::get(path)).route]
            .name
            .clone()
    };
    assert_eq!(name("/a"), "exact");
    assert_eq!(name("/a?x=1"), "exact");
    assert_eq!(name("/ab"), "rest");
    assert_eq!(name("/bcd"), "prefix");
    assert_eq!(name("/c/123"), "regex");
    // Envoy's safe_regex must match the whole path.
    assert_eq!(name("/c/123/x"), "rest");
    assert_eq!(name("/x/c/1"), "rest");
}

#[test]
fn ignore_uri_case_applies_to_exact_and_prefix() {
    let rules = vs_rules(json!([
        {"name": "ci", "match": [{"uri": {"prefix": "/API"}, "ignoreUriCase": true}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/api/x")).route].name,
        "ci"
    );
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/Api")).route].name,
        "ci"
    );
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/ap")).route].name,
        "rest"
    );
}

#[test]
fn method_scheme_authority_port_and_query_conditions() {
    let rules = vs_rules(json!([
        {"name": "all", "match": [{"method": {"exact": "POST"}, "scheme": {"exact": "http"},
            "authority": {"prefix": "demoapp"}, "port": 8080,
            "queryParams": {"debug": {"exact": "1"}, "trace": {}}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    let name = |r: Req| rules.routes[forward(&rules, &r).route].name.clone();
    assert_eq!(
        name(Req::new("POST", "demoapp:8080", "/?debug=1&trace")),
        "all"
    );
    assert_eq!(
        name(Req::new("GET", "demoapp:8080", "/?debug=1&trace")),
        "rest"
    );
    assert_eq!(
        name(Req::new("POST", "demoapp:9090", "/?debug=1&trace")),
        "rest"
    );
    assert_eq!(
        name(Req::new("POST", "demoapp:8080", "/?debug=2&trace")),
        "rest"
    );
    assert_eq!(name(Req::new("POST", "demoapp:8080", "/?debug=1")), "rest");
}

#[test]
fn without_headers_treats_a_missing_header_as_empty_then_inverts() {
    let rules = vs_rules(json!([
        {"name": "not-beta", "match": [{"withoutHeaders": {"x-group": {"exact": "beta"}}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    let name = |r: Req| rules.routes[forward(&rules, &r).route].name.clone();
    assert_eq!(name(Req::get("/")), "not-beta");
    assert_eq!(name(Req::get("/").header("x-group", "alpha")), "not-beta");
    assert_eq!(name(Req::get("/").header("x-group", "beta")), "rest");
}

#[test]
fn empty_header_match_means_present() {
    let rules = vs_rules(json!([
        {"name": "has", "match": [{"headers": {"x-debug": {}}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/").header("x-debug", "")).route].name,
        "has"
    );
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/")).route].name,
        "rest"
    );
}

#[test]
fn match_blocks_or_and_conditions_inside_a_block_and() {
    let rules = vs_rules(json!([
        {"name": "hit", "match": [
            {"uri": {"prefix": "/a"}, "headers": {"x-k": {"exact": "1"}}},
            {"uri": {"prefix": "/b"}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    let name = |r: Req| rules.routes[forward(&rules, &r).route].name.clone();
    assert_eq!(name(Req::get("/a").header("x-k", "1")), "hit");
    assert_eq!(name(Req::get("/a")), "rest");
    assert_eq!(name(Req::get("/b")), "hit");
}

#[test]
fn first_matching_route_wins() {
    let rules = vs_rules(json!([
        {"name": "first", "match": [{"uri": {"prefix": "/"}}], "route": subset_route("v1")},
        {"name": "second", "match": [{"uri": {"prefix": "/x"}}], "route": subset_route("v2")}]));
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/x")).route].name,
        "first"
    );
}

fn split_rules(w1: f64, w2: f64, routing: Value) -> RuleSet {
    rules_with(
        json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "demoapp", "namespace": "app"},
            "spec": {"hosts": ["demoapp"], "http": [{"route": [
                {"destination": {"host": "demoapp", "subset": "v1", "port": {"number": 8080}}, "weight": w1},
                {"destination": {"host": "demoapp", "subset": "v2", "port": {"number": 8080}}, "weight": w2}]}]}}]),
        routing,
        &Anonymous,
    )
}

/// 20,000 samples: for p = 0.25 the standard deviation is 61; the tolerance is 5 sigma (306).
#[test]
fn weighted_split_shares_traffic_by_weight_over_the_sum() {
    let rules = split_rules(1.0, 3.0, json!({}));
    let req = Req::get("/");
    let mut rng = fastrand::Rng::with_seed(42);
    let n = 20_000;
    let v1 = (0..n)
        .filter(|_| destination_with(&rules, &req, &mut rng) == 0)
        .count();
    assert!((v1 as i64 - 5_000).abs() <= 306, "v1 got {v1} of {n}");
}

#[test]
fn sticky_split_keeps_a_user_on_one_side() {
    let rules = split_rules(50.0, 50.0, json!({"stickySplit": {"header": "x-user"}}));
    let mut sides = [0usize; 2];
    for user in 0..200 {
        let req = Req::get("/").header("x-user", &format!("user-{user}"));
        let first = forward(&rules, &req).destination;
        for seed in 0..20 {
            let again = destination_with(&rules, &req, &mut fastrand::Rng::with_seed(seed));
            assert_eq!(again, first, "user-{user} flipped");
        }
        sides[first] += 1;
    }
    // 200 users at 50/50: sigma 7; both sides far from empty.
    assert!(sides[0] > 50 && sides[1] > 50, "{sides:?}");
}

#[test]
fn sticky_split_by_cookie() {
    let rules = split_rules(50.0, 50.0, json!({"stickySplit": {"cookie": "session"}}));
    let req = Req::get("/").header("cookie", "a=b; session=abc123");
    let first = forward(&rules, &req).destination;
    for seed in 0..20 {
        let d = destination_with(&rules, &req, &mut fastrand::Rng::with_seed(seed));
        assert_eq!(d, first);
    }
}

#[test]
fn zero_weight_destination_gets_nothing_and_lone_destination_gets_everything() {
    let rules = split_rules(100.0, 0.0, json!({}));
    let mut rng = fastrand::Rng::with_seed(1);
    let req = Req::get("/");
    for _ in 0..1000 {
        assert_eq!(destination_with(&rules, &req, &mut rng), 0)
    }
    let lone = vs_rules(json!([{"route": [{"destination": {"host": "demoapp"}, "weight": 0}]}]));
    assert_eq!(
        cluster(&lone, &req),
        "outbound|||demoapp.app.svc.cluster.local"
    );
}

#[test]
fn fault_delay_and_abort_at_100_percent_both_apply() {
    let rules = vs_rules(json!([{"route": subset_route("v1"), "fault": {
        "delay": {"fixedDelay": "1.5s", "percentage": {"value": 100}},
        "abort": {"httpStatus": 503, "percentage": {"value": 100.0}}}}]));
    let v = verdict(&rules, &Req::get("/"));
    assert_eq!(v.delay, Some(Duration::from_millis(1500)));
    match v.outcome {
        Outcome::Reply(r) => {
            assert_eq!((r.kind, r.status), (ReplyKind::Abort, 503));
            assert_eq!(r.body, b"fault filter abort");
        }
        Outcome::Forward(_) => panic!("forwarded"),
    }
}

#[test]
fn fault_without_percentage_is_never_applied() {
    let rules = vs_rules(json!([{"route": subset_route("v1"), "fault": {
        "delay": {"fixedDelay": "1s"}, "abort": {"httpStatus": 500}}}]));
    let mut rng = fastrand::Rng::with_seed(3);
    let req = Req::get("/");
    for _ in 0..1000 {
        match rules.decide(&Request::from_headers(&req.0), &mut rng) {
            Decision::Act(v) => {
                assert_eq!(v.delay, None);
                assert!(matches!(v.outcome, Outcome::Forward(_)));
            }
            Decision::Pass => panic!("passed"),
        }
    }
}

/// 20,000 samples at p = 0.1: sigma 42, tolerance 5 sigma (212).
#[test]
fn abort_percentage_is_honoured_statistically() {
    let rules = vs_rules(json!([{"route": subset_route("v1"), "fault": {
        "abort": {"httpStatus": 500, "percentage": {"value": 10}}}}]));
    let mut rng = fastrand::Rng::with_seed(11);
    let req = Req::get("/");
    let aborted = (0..20_000)
        .filter(|_| {
            matches!(
                rules.decide(&Request::from_headers(&req.0), &mut rng),
                Decision::Act(Verdict {
                    outcome: Outcome::Reply(_),
                    ..
                })
            )
        })
        .count();
    assert!((aborted as i64 - 2_000).abs() <= 212, "aborted {aborted}");
}

#[test]
fn grpc_abort_answers_http_200_with_grpc_status() {
    let rules = vs_rules(json!([{"route": subset_route("v1"), "fault": {
        "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}}}]));
    let r = reply(&rules, &Req::get("/"));
    // Envoy turns this into trailers-only `grpc-status: 14` for gRPC requests, and HTTP 200
    // with the body for others, as its fault filter does.
    assert_eq!((r.status, r.grpc_status), (200, Some(14)));
    assert_eq!(r.body, b"fault filter abort");
}

fn router_headers(rules: &RuleSet, name: &str) -> Vec<(String, String)> {
    let headers = &route_named(rules, name).router_headers;
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn timeout_and_retries_become_envoy_router_headers_like_istiod() {
    let rules = vs_rules(json!([
        {"name": "default", "match": [{"uri": {"prefix": "/d"}}], "route": subset_route("v1"), "timeout": "0.5s"},
        {"name": "off", "match": [{"uri": {"prefix": "/o"}}], "route": subset_route("v1"), "retries": {"attempts": 0}},
        {"name": "codes", "match": [{"uri": {"prefix": "/c"}}], "route": subset_route("v1"),
            "retries": {"attempts": 3, "retryOn": "5xx,503,429", "perTryTimeout": "200ms"}},
        {"name": "plain", "route": subset_route("v1"), "retries": {"attempts": 4}}]));
    assert_eq!(
        router_headers(&rules, "default"),
        pairs(&[
            ("x-envoy-upstream-rq-timeout-ms", "500"),
            ("x-envoy-max-retries", "2"),
            (
                "x-envoy-retry-on",
                "connect-failure,refused-stream,retriable-status-codes"
            ),
            ("x-envoy-retry-grpc-on", "unavailable,cancelled"),
            ("x-envoy-retriable-status-codes", "503"),
        ])
    );
    assert_eq!(
        router_headers(&rules, "off"),
        pairs(&[
            ("x-envoy-upstream-rq-timeout-ms", "0"),
            ("x-envoy-max-retries", "0")
        ])
    );
    assert_eq!(
        router_headers(&rules, "codes"),
        pairs(&[
            ("x-envoy-upstream-rq-timeout-ms", "0"),
            ("x-envoy-max-retries", "3"),
            ("x-envoy-retry-on", "5xx,retriable-status-codes"),
            ("x-envoy-retriable-status-codes", "503,429"),
            ("x-envoy-upstream-rq-per-try-timeout-ms", "200"),
        ])
    );
    assert_eq!(
        router_headers(&rules, "plain"),
        pairs(&[
            ("x-envoy-upstream-rq-timeout-ms", "0"),
            ("x-envoy-max-retries", "4"),
            (
                "x-envoy-retry-on",
                "connect-failure,refused-stream,retriable-status-codes"
            ),
            ("x-envoy-retry-grpc-on", "unavailable,cancelled"),
            ("x-envoy-retriable-status-codes", "503"),
        ])
    );
}

#[test]
fn rewrite_uri_replaces_the_matched_prefix_and_keeps_the_query() {
    let rules = vs_rules(json!([
        {"match": [{"uri": {"prefix": "/old"}}], "rewrite": {"uri": "/new"}, "route": subset_route("v1")},
        {"match": [{"uri": {"exact": "/exact"}}], "rewrite": {"uri": "/other"}, "route": subset_route("v1")},
        {"match": [{"uri": {"prefix": "/rx"}}], "rewrite": {"uriRegexRewrite": {"match": "^/rx/([^/]+)/(.*)$", "rewrite": "/v2/\\2/\\1"}}, "route": subset_route("v1")},
        {"rewrite": {"uri": "/root/", "authority": "backend.internal"}, "route": subset_route("v1")}]));
    assert_eq!(
        forward(&rules, &Req::get("/old/x?q=1")).path.as_deref(),
        Some("/new/x?q=1")
    );
    assert_eq!(
        forward(&rules, &Req::get("/exact?q=1")).path.as_deref(),
        Some("/other?q=1")
    );
    assert_eq!(
        forward(&rules, &Req::get("/rx/a/b/c?z")).path.as_deref(),
        Some("/v2/b/c/a?z")
    );
    // No URI match is Envoy's prefix "/".
    let f = forward(&rules, &Req::get("/x"));
    assert_eq!(f.path.as_deref(), Some("/root/x"));
    let edits = request_edits(&rules, &f, "/x");
    assert!(
        edits.contains(&"set :authority backend.internal".to_string()),
        "{edits:?}"
    );
    assert!(
        edits.contains(&"set x-envoy-original-path /x".to_string()),
        "{edits:?}"
    );
    assert!(
        edits.contains(&"set :path /root/x".to_string()),
        "{edits:?}"
    );
}

fn show(e: Edit<'_>) -> String {
    match e {
        Edit::Remove(n) => format!("remove {n}"),
        Edit::Set(n, v) => format!("set {n} {v}"),
        Edit::Add(n, v) => format!("add {n} {v}"),
    }
}

fn request_edits(rules: &RuleSet, f: &Forward, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    rules
        .request_edits(f, path, |e| {
            out.push(show(e));
            Ok::<(), ()>(())
        })
        .unwrap();
    out
}

fn response_edits(rules: &RuleSet, f: &Forward) -> Vec<String> {
    let mut out = Vec::new();
    rules
        .response_edits(f, |e| {
            out.push(show(e));
            Ok::<(), ()>(())
        })
        .unwrap();
    out
}

/// Locations as istiod's `ApplyRedirect` and Envoy's `newUri` build them.
#[test]
fn redirect_builds_location_like_istiod_and_envoy() {
    let rules = vs_rules(json!([
        {"match": [{"uri": {"prefix": "/a"}}], "redirect": {"uri": "/b"}},
        {"match": [{"uri": {"prefix": "/c"}}], "redirect": {"authority": "new.example.com", "scheme": "https", "redirectCode": 302}},
        {"match": [{"uri": {"prefix": "/d"}}], "redirect": {"port": 9443, "scheme": "https"}},
        {"match": [{"uri": {"prefix": "/e"}}], "redirect": {"scheme": "https", "derivePort": "FROM_PROTOCOL_DEFAULT"}},
        {"match": [{"uri": {"prefix": "/f"}}], "redirect": {"authority": "other", "derivePort": "FROM_REQUEST_PORT"}},
        {"match": [{"uri": {"prefix": "/g"}}], "redirect": {"port": 443, "scheme": "https"}},
        {"match": [{"uri": {"prefix": "/h"}}], "redirect": {"scheme": "https"}},
        {"match": [{"uri": {"prefix": "/i"}}], "redirect": {"uri": "relative"}}]));
    let location = |authority: &str, path: &str| {
        let r = reply(&rules, &Req::new("GET", authority, path));
        let loc = r.headers.iter().find(|(k, _)| k == "location").unwrap();
        (r.status, loc.1.clone())
    };
    let at = |code: u32, url: &str| (code, url.to_string());
    assert_eq!(
        location("demoapp:8080", "/a?x=1"),
        at(301, "http://demoapp:8080/b?x=1")
    );
    assert_eq!(
        location("demoapp:8080", "/c/1"),
        at(302, "https://new.example.com/c/1")
    );
    assert_eq!(location("demoapp", "/d"), at(301, "https://demoapp:9443/d"));
    // FROM_PROTOCOL_DEFAULT sets no port: Envoy keeps the request's non-default port.
    assert_eq!(
        location("demoapp:8080", "/e"),
        at(301, "https://demoapp:8080/e")
    );
    assert_eq!(
        location("demoapp:8080", "/f"),
        at(301, "http://other:8080/f")
    );
    // istiod drops 443 for https, so again the request's port survives.
    assert_eq!(
        location("demoapp:8080", "/g"),
        at(301, "https://demoapp:8080/g")
    );
    // Leaving http drops its default port 80.
    assert_eq!(location("demoapp:80", "/h"), at(301, "https://demoapp/h"));
    assert_eq!(
        location("demoapp:80", "/i"),
        at(301, "http://demoapp:80/relative")
    );
}

#[test]
fn direct_response_answers_with_status_and_body() {
    let rules = vs_rules(json!([
        {"match": [{"uri": {"exact": "/s"}}], "directResponse": {"status": 418, "body": {"string": "teapot"}}},
        {"match": [{"uri": {"exact": "/b"}}], "directResponse": {"status": 200, "body": {"bytes": "aGVsbG8="}}}]));
    let r = reply(&rules, &Req::get("/s"));
    assert_eq!((r.status, r.body.as_slice()), (418, b"teapot".as_slice()));
    let r = reply(&rules, &Req::get("/b"));
    assert_eq!((r.status, r.body.as_slice()), (200, b"hello".as_slice()));
}

#[test]
fn cors_preflight_is_answered_and_simple_requests_get_the_origin() {
    let rules = vs_rules(json!([{"route": subset_route("v1"), "corsPolicy": {
        "allowOrigins": [{"exact": "https://shop.example.com"}, {"regex": "https://.*\\.dev\\.example\\.com"}],
        "allowMethods": ["GET", "POST"], "allowHeaders": ["x-token"], "exposeHeaders": ["x-trace"],
        "maxAge": "24h", "allowCredentials": true}}]));
    let pre = Req::new("OPTIONS", "demoapp", "/")
        .header("origin", "https://a.dev.example.com")
        .header("access-control-request-method", "POST");
    let r = reply(&rules, &pre);
    assert_eq!((r.kind, r.status), (ReplyKind::Preflight, 200));
    assert_eq!(
        r.headers,
        pairs(&[
            ("access-control-allow-origin", "https://a.dev.example.com"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET,POST"),
            ("access-control-allow-headers", "x-token"),
            ("access-control-max-age", "86400"),
        ])
    );
    let simple = Req::get("/").header("origin", "https://shop.example.com");
    assert_eq!(
        forward(&rules, &simple).cors_origin.as_deref(),
        Some("https://shop.example.com")
    );
    let stranger = Req::get("/").header("origin", "https://evil.example.org");
    assert_eq!(forward(&rules, &stranger).cors_origin, None);
    // Unmatched preflights are forwarded by default.
    let evil_pre = Req::new("OPTIONS", "demoapp", "/")
        .header("origin", "https://evil.example.org")
        .header("access-control-request-method", "POST");
    assert!(matches!(
        verdict(&rules, &evil_pre).outcome,
        Outcome::Forward(_)
    ));
}

#[test]
fn delegate_routes_apply_below_the_root_match_and_fall_through_when_none_match() {
    let rules = rules_with(
        json!([
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "root", "namespace": "app"},
             "spec": {"hosts": ["demoapp"], "http": [
                {"name": "to-reviews", "match": [{"uri": {"prefix": "/reviews"}}], "delegate": {"name": "reviews"},
                 "timeout": "3s"},
                {"name": "fallback", "route": subset_route("v1")}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "reviews", "namespace": "app"},
             "spec": {"http": [
                {"name": "reviews-v2", "match": [{"uri": {"prefix": "/reviews/v2"}}], "route": subset_route("v2")}]}}]),
        json!({}),
        &Anonymous,
    );
    let f = forward(&rules, &Req::get("/reviews/v2/1"));
    assert_eq!(rules.routes[f.route].name, "reviews-v2");
    // The delegate sets no timeout: the root route's applies (istiod's mergeHTTPRoute).
    assert_eq!(
        rules.routes[f.route].router_headers[0],
        ("x-envoy-upstream-rq-timeout-ms", "3000".into())
    );
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/reviews/v1")).route].name,
        "fallback"
    );
    assert_eq!(
        rules.routes[forward(&rules, &Req::get("/other")).route].name,
        "fallback"
    );
}

struct Pod;

impl Identity for Pod {
    fn known(&self) -> bool {
        true
    }
    fn namespace(&self) -> Option<String> {
        Some("shop".into())
    }
    fn label(&self, key: &str) -> Option<String> {
        (key == "app").then(|| "frontend".into())
    }
    fn kind(&self) -> ProxyKind {
        ProxyKind::Sidecar
    }
}

#[test]
fn source_labels_namespace_and_gateways_are_settled_against_the_proxy_itself() {
    let rules = rules_with(
        json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "demoapp", "namespace": "app"},
            "spec": {"hosts": ["demoapp"], "http": [
                {"name": "other-app", "match": [{"sourceLabels": {"app": "backend"}}], "route": subset_route("v2")},
                {"name": "gateway-only", "match": [{"gateways": ["public-gw"]}], "route": subset_route("v2")},
                {"name": "other-ns", "match": [{"sourceNamespace": "billing"}], "route": subset_route("v2")},
                {"name": "frontend", "match": [{"sourceLabels": {"app": "frontend"}, "sourceNamespace": "shop"}], "route": subset_route("v1")}]}}]),
        json!({}),
        &Pod,
    );
    assert_eq!(rules.routes.len(), 1);
    // The proxy runs in namespace shop: istiod gives it `demoapp.app`, not the short name.
    let req = Req::new("GET", "demoapp.app:8080", "/");
    assert_eq!(rules.routes[forward(&rules, &req).route].name, "frontend");
    assert!(matches!(decide(&rules, &Req::get("/")), Decision::Pass));
}

#[test]
fn request_and_response_header_edits_are_compiled_in_envoy_order() {
    let rules = vs_rules(json!([{"route": [{"destination": {"host": "demoapp"},
        "headers": {"request": {"set": {"x-dest": "1"}}}}],
        "headers": {"request": {"set": {"X-A": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]},
                    "response": {"set": {"x-r": "3"}}}}]));
    let route = &rules.routes[0];
    assert_eq!(route.request_headers.set, pairs(&[("x-a", "1")]));
    assert_eq!(route.request_headers.add, pairs(&[("x-b", "2")]));
    assert_eq!(route.request_headers.remove, vec!["x-c".to_string()]);
    assert_eq!(route.response_headers.set, pairs(&[("x-r", "3")]));
    match &route.action {
        Action::Forward(s) => assert_eq!(
            s.destinations[0].request_headers.set,
            pairs(&[("x-dest", "1")])
        ),
        _ => panic!("not forward"),
    }
}

#[test]
fn repeated_header_matches_when_any_value_matches_like_envoy() {
    let rules = vs_rules(json!([
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": subset_route("v2")},
        {"name": "not-debug", "match": [{"withoutHeaders": {"x-debug": {"exact": "1"}}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v1")}]));
    let name = |r: Req| rules.routes[forward(&rules, &r).route].name.clone();
    assert_eq!(
        name(
            Req::get("/")
                .header("x-canary", "false")
                .header("x-canary", "true")
        ),
        "canary"
    );
    assert_eq!(
        name(Req::get("/").header("x-debug", "0").header("x-debug", "1")),
        "rest"
    );
    assert_eq!(name(Req::get("/").header("x-debug", "0")), "not-debug");
}

#[test]
fn header_regex_star_means_present_as_istiod_translates_it() {
    let rules = vs_rules(json!([
        {"name": "any", "match": [{"headers": {"x-debug": {"regex": "*"}}}], "route": subset_route("v1")},
        {"name": "none", "match": [{"withoutHeaders": {"x-trace": {"regex": "*"}}}], "route": subset_route("v1")},
        {"name": "rest", "route": subset_route("v2")}]));
    let name = |r: Req| rules.routes[forward(&rules, &r).route].name.clone();
    assert_eq!(name(Req::get("/").header("x-debug", "")), "any");
    assert_eq!(name(Req::get("/")), "none");
    assert_eq!(name(Req::get("/").header("x-trace", "1")), "rest");
}

#[test]
fn destination_header_edits_win_on_a_lone_destination_and_lose_on_a_split() {
    let dest = |subset: &str, weight: u32| {
        json!({"destination": {"host": "demoapp", "subset": subset}, "weight": weight,
               "headers": {"request": {"set": {"x-who": "dest"}, "remove": ["x-gone"]}}})
    };
    let route_headers = json!({"request": {"set": {"x-who": "route"}}});
    let lone = vs_rules(json!([{"route": [dest("v1", 100)], "headers": route_headers}]));
    let f = forward(&lone, &Req::get("/"));
    let edits = request_edits(&lone, &f, "/");
    assert_eq!(
        &edits[..3],
        ["remove x-gone", "set x-who route", "set x-who dest"],
        "istiod merges a lone destination's edits after the route's"
    );
    let split =
        vs_rules(json!([{"route": [dest("v1", 50), dest("v2", 50)], "headers": route_headers}]));
    let f = forward(&split, &Req::get("/"));
    let edits = request_edits(&split, &f, "/");
    assert_eq!(
        &edits[..3],
        ["remove x-gone", "set x-who dest", "set x-who route"],
        "Envoy finalizes a weighted cluster's headers before the route's"
    );
    assert!(
        edits
            .last()
            .is_some_and(|e| e.starts_with("set x-meshrules-cluster outbound|")),
        "the cluster header is set last: {edits:?}"
    );
}

#[test]
fn host_header_set_rewrites_the_authority_and_host_match_reads_it() {
    let rules = vs_rules(json!([
        {"name": "by-host", "match": [{"headers": {"host": {"prefix": "demoapp"}}}],
         "headers": {"request": {"set": {"Host": "backend.internal"}}}, "route": subset_route("v1")}]));
    let f = forward(&rules, &Req::get("/"));
    assert_eq!(rules.routes[f.route].name, "by-host");
    assert!(request_edits(&rules, &f, "/").contains(&"set :authority backend.internal".to_string()));
}

#[test]
fn cors_star_origin_star_methods_and_ignored_preflights_follow_envoy() {
    let rules = vs_rules(json!([
        {"match": [{"uri": {"prefix": "/any"}}], "route": subset_route("v1"), "corsPolicy": {
            "allowOrigins": [{"exact": "*"}], "allowMethods": ["*"], "allowHeaders": ["*"]}},
        {"route": subset_route("v1"), "corsPolicy": {
            "allowOrigins": [{"exact": "https://ok.example"}], "allowMethods": ["GET"],
            "maxAge": "60s", "unmatchedPreflights": "IGNORE", "exposeHeaders": ["x-e"]}}]));
    let pre = |path: &str, origin: &str| {
        Req::new("OPTIONS", "demoapp", path)
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "x-a,x-b")
    };
    let r = reply(&rules, &pre("/any", "https://whoever.example"));
    assert_eq!(
        r.headers,
        pairs(&[
            ("access-control-allow-origin", "https://whoever.example"),
            ("access-control-allow-methods", "PATCH"),
            ("access-control-allow-headers", "x-a,x-b"),
        ])
    );
    // IGNORE: answered here, without allow-origin, so the browser refuses.
    let r = reply(&rules, &pre("/", "https://evil.example"));
    assert_eq!(
        r.headers,
        pairs(&[
            ("access-control-allow-methods", "GET"),
            ("access-control-max-age", "60"),
        ])
    );
    // An empty Origin is no Origin.
    let f = forward(&rules, &Req::get("/").header("origin", ""));
    assert_eq!(f.cors_origin, None);
    let f = forward(
        &rules,
        &Req::get("/").header("origin", "https://ok.example"),
    );
    assert_eq!(
        response_edits(&rules, &f),
        [
            "set access-control-allow-origin https://ok.example",
            "set access-control-expose-headers x-e"
        ]
    );
}

#[test]
fn local_replies_carry_route_response_headers_and_cors() {
    let rules = vs_rules(json!([
        {"name": "abort", "match": [{"uri": {"prefix": "/abort"}}], "route": subset_route("v1"),
         "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
         "headers": {"response": {"set": {"x-route": "1"}}},
         "corsPolicy": {"allowOrigins": [{"exact": "https://ok.example"}]}},
        {"name": "direct", "directResponse": {"status": 200, "body": {"string": "{}"}},
         "headers": {"response": {"set": {"content-type": "application/json"}}}}]));
    let r = reply(
        &rules,
        &Req::get("/abort").header("origin", "https://ok.example"),
    );
    assert_eq!(r.status, 503);
    assert!(r.headers.contains(&("x-route".into(), "1".into())));
    assert!(r.headers.contains(&(
        "access-control-allow-origin".into(),
        "https://ok.example".into()
    )));
    let r = reply(&rules, &Req::get("/"));
    let types: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "content-type")
        .collect();
    assert_eq!(
        types,
        [&("content-type".to_string(), "application/json".to_string())]
    );
}

#[test]
fn route_with_istio_defaults_only_gets_the_router_headers_that_differ() {
    let rules = rules_with(
        json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "demoapp", "namespace": "app"},
            "spec": {"hosts": ["demoapp"], "http": [
                {"name": "plain", "match": [{"uri": {"prefix": "/p"}}], "route": subset_route("v1")},
                {"name": "timed", "route": subset_route("v1"), "timeout": "5s"}]}}]),
        json!({"routeHasIstioDefaults": true}),
        &Anonymous,
    );
    assert_eq!(router_headers(&rules, "plain"), pairs(&[]));
    assert_eq!(
        router_headers(&rules, "timed"),
        pairs(&[("x-envoy-upstream-rq-timeout-ms", "5000")])
    );
}

struct Router;

impl Identity for Router {
    fn known(&self) -> bool {
        true
    }
    fn namespace(&self) -> Option<String> {
        Some("istio-system".into())
    }
    fn label(&self, _key: &str) -> Option<String> {
        None
    }
    fn kind(&self) -> ProxyKind {
        ProxyKind::Gateway
    }
}

fn portless_split(routing: Value, identity: &dyn Identity) -> Result<RuleSet, Vec<String>> {
    let resources = json!([{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"hosts": ["reviews"], "gateways": ["mesh", "istio-system/public"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}}]);
    let config = json!({"resources": resources, "routing": routing});
    load(config.to_string().as_bytes(), identity)
        .map(|l| l.rules)
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn cluster_on_port(rules: &RuleSet, listener_port: Option<u16>) -> String {
    let headers = Req::new("GET", "reviews.shop.svc.cluster.local", "/").0;
    let mut view = Request::from_headers(&headers);
    view.listener_port = listener_port;
    let decision = rules.decide(&view, &mut fastrand::Rng::with_seed(7));
    let Decision::Act(Verdict {
        outcome: Outcome::Forward(f),
        ..
    }) = decision
    else {
        panic!("not forwarded: {decision:?}");
    };
    let mut cluster = String::new();
    let _ = rules.request_edits(&f, view.path, |e| {
        if let Edit::Set(name, value) = e {
            if name == rules.cluster_header {
                cluster = value.to_string();
            }
        }
        Ok::<(), ()>(())
    });
    cluster
}

#[test]
fn portless_destination_on_a_sidecar_names_the_cluster_with_the_port_the_request_arrived_on() {
    // istiod's GetDestinationCluster on a sidecar: the outbound listener's port, the service
    // port the application called (Envoy's destination.port).
    let rules = portless_split(json!({}), &Pod).unwrap();
    assert!(rules.needs_listener_port);
    assert_eq!(
        cluster_on_port(&rules, Some(9080)),
        "outbound|9080|v2|reviews.shop.svc.cluster.local"
    );
    assert_eq!(
        cluster_on_port(&rules, Some(8080)),
        "outbound|8080|v2|reviews.shop.svc.cluster.local"
    );
    // Without destination.port, the port the :authority or scheme implies.
    assert_eq!(
        cluster_on_port(&rules, None),
        "outbound|80|v2|reviews.shop.svc.cluster.local"
    );
}

#[test]
fn portless_destination_takes_the_services_only_port_as_istiod_does() {
    let routing = json!({"servicePorts": {"reviews.shop.svc.cluster.local": [9080]}});
    for identity in [&Pod as &dyn Identity, &Router, &Anonymous] {
        let rules = portless_split(routing.clone(), identity).unwrap();
        assert!(!rules.needs_listener_port);
        assert_eq!(
            cluster_on_port(&rules, Some(8080)),
            "outbound|9080|v2|reviews.shop.svc.cluster.local"
        );
    }
    // With several ports the service's port is the listener's again.
    let several = json!({"servicePorts": {"reviews.shop.svc.cluster.local": [9080, 9443]}});
    let rules = portless_split(several, &Pod).unwrap();
    assert_eq!(
        cluster_on_port(&rules, Some(9443)),
        "outbound|9443|v2|reviews.shop.svc.cluster.local"
    );
}

#[test]
fn portless_destination_on_a_gateway_is_refused_at_load() {
    let errors = portless_split(json!({}), &Router).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "resources[0].spec.http[0].route[0].destination.port: needed on a gateway"
        ),
        "{errors:?}"
    );
}

#[test]
fn portless_destination_on_a_plain_envoy_keeps_an_empty_port_unless_configured() {
    let rules = portless_split(json!({}), &Anonymous).unwrap();
    assert_eq!(
        cluster_on_port(&rules, Some(9080)),
        "outbound||v2|reviews.shop.svc.cluster.local"
    );
    let rules = portless_split(json!({"portlessDestinations": "LISTENER"}), &Anonymous).unwrap();
    assert_eq!(
        cluster_on_port(&rules, Some(9080)),
        "outbound|9080|v2|reviews.shop.svc.cluster.local"
    );
    let errors =
        portless_split(json!({"portlessDestinations": "sometimes"}), &Anonymous).unwrap_err();
    assert!(
        errors[0].starts_with("routing.portlessDestinations: "),
        "{errors:?}"
    );
}
