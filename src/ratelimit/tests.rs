//! Envoy's local rate limit as the pipeline applies it: each expectation was read off Envoy
//! 1.40's own `envoy.filters.http.local_ratelimit` with the same LocalRateLimit (the e2e suite
//! compares the two request by request).

use serde_json::{json, Value};

use super::*;
use crate::authn::KeyState;
use crate::compile::{load, Anonymous};
use crate::http::testing::{get, pairs};
use crate::pipeline::{self, Env, Event, NoConnection, Outcome, Plan};
use crate::rules::ratelimit::Bucket;
use crate::rules::RuleSet;

const ALL: Value = Value::Null;

fn on() -> Value {
    json!({"defaultValue": {"numerator": 100}})
}

fn config(local: Value, routes: Value) -> Value {
    let vs = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "demoapp", "namespace": "app"},
        "spec": {"hosts": ["demoapp"], "http": [
            {"name": "api", "match": [{"uri": {"prefix": "/api"}}],
             "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}},
             "route": [{"destination": {"host": "demoapp"}}]},
            {"name": "moved", "match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new"}},
            {"name": "web", "route": [{"destination": {"host": "demoapp"}}],
             "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET"]}},
        ]}
    });
    let mut limit =
        json!({"name": "web-limit", "virtualService": "app/demoapp", "localRateLimit": local});
    if !routes.is_null() {
        limit["routes"] = routes;
    }
    json!({"resources": [vs], "rateLimits": [limit]})
}

fn rules(config: &Value) -> RuleSet {
    load(config.to_string().as_bytes(), &Anonymous)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .rules
}

fn errors(config: &Value) -> Vec<String> {
    load(config.to_string().as_bytes(), &Anonymous)
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

struct Client<'r> {
    rules: &'r RuleSet,
    buckets: LocalBuckets,
    rng: fastrand::Rng,
    now_ms: u64,
}

impl<'r> Client<'r> {
    fn new(rules: &'r RuleSet) -> Self {
        Client {
            rules,
            buckets: LocalBuckets::default(),
            rng: fastrand::Rng::with_seed(3),
            now_ms: 1_000_000,
        }
    }

    fn send(&mut self, headers: Vec<(String, String)>) -> Plan<'r> {
        pipeline::run(
            self.rules,
            headers,
            Env {
                connection: &NoConnection,
                now_ms: self.now_ms,
                keys: &|_| KeyState::Failed,
                token_cache: &mut self.rules.authn.new_cache(),
                signatures: &crate::jwt::InModule,
                rng: &mut self.rng,
                buckets: &mut self.buckets,
            },
        )
    }

    /// Status (200 for a forward) and the `x-ratelimit-*` headers.
    fn get(&mut self, path: &str, extra: &[(&str, &str)]) -> (u32, Vec<(String, String)>) {
        let plan = self.send(get(path, extra));
        let rl = |h: &[(String, String)]| -> Vec<(String, String)> {
            h.iter()
                .filter(|(k, _)| k.starts_with("x-ratelimit") || k == "retry-after")
                .cloned()
                .collect()
        };
        match plan.outcome {
            Outcome::Forward {
                response_headers, ..
            } => (
                200,
                response_headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            Outcome::Reply { reply, .. } => (reply.status, rl(&reply.headers)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_routes_bucket_refuses_with_429_local_rate_limited_and_draft_03_headers() {
    let rules = rules(&config(
        json!({"tokenBucket": {"maxTokens": 2, "tokensPerFill": 2, "fillInterval": "60s"},
               "filterEnabled": on(), "filterEnforced": on(),
               "enableXRatelimitHeaders": "DRAFT_VERSION_03"}),
        json!(["web"]),
    ));
    let mut c = Client::new(&rules);
    let h = |rem: &str, reset: &str| {
        pairs(&[
            ("x-ratelimit-limit", "2"),
            ("x-ratelimit-remaining", rem),
            ("x-ratelimit-reset", reset),
        ])
    };
    assert_eq!(c.get("/", &[]), (200, h("1", "0")));
    assert_eq!(c.get("/", &[]), (200, h("0", "30")));
    let mut refused = h("0", "30");
    refused.push(("retry-after".into(), "30".into()));
    assert_eq!(c.get("/", &[]), (429, refused));
    let plan = c.send(get("/", &[]));
    match &plan.outcome {
        Outcome::Reply { reply, .. } => {
            assert_eq!(reply.body, b"local_rate_limited");
            assert_eq!(reply.details, "local_rate_limited");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        plan.events.last(),
        Some(Event::RateLimited("web-limit"))
    ));
    // Half the fill interval later one token is back (continuous refill, as Envoy 1.40).
    c.now_ms += 30_000;
    assert_eq!(c.get("/", &[]).0, 200);
    assert_eq!(c.get("/", &[]).0, 429);
}

#[test]
fn a_fault_abort_and_a_cors_preflight_take_no_token_but_a_redirect_does() {
    let rules = rules(&config(
        json!({"tokenBucket": {"maxTokens": 1, "fillInterval": "3600s"},
               "filterEnabled": on(), "filterEnforced": on()}),
        ALL,
    ));
    let mut c = Client::new(&rules);
    for _ in 0..3 {
        assert_eq!(c.get("/api/x", &[]).0, 503, "the fault filter runs first");
        let preflight = [
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ];
        let mut options = get("/", &preflight);
        options[0].1 = "OPTIONS".into();
        let plan = c.send(options);
        assert!(
            matches!(&plan.outcome, Outcome::Reply { reply, .. } if reply.status == 200),
            "{:?}",
            plan.outcome
        );
    }
    assert_eq!(c.get("/old", &[]).0, 301);
    assert_eq!(c.get("/old", &[]).0, 429);
    assert_eq!(c.get("/", &[]).0, 429, "one bucket for the limit's routes");
}

#[test]
fn a_dynamic_descriptor_gives_each_header_value_its_own_bucket() {
    let local = json!({
        "tokenBucket": {"maxTokens": 100, "tokensPerFill": 100, "fillInterval": "60s"},
        "filterEnabled": on(), "filterEnforced": on(),
        "rateLimits": [{"actions": [{"requestHeaders": {"headerName": "x-user", "descriptorKey": "user"}}]}],
        "descriptors": [{"entries": [{"key": "user"}],
                         "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": "60s"}}],
        "enableXRatelimitHeaders": "DRAFT_VERSION_03"});
    let rules = rules(&config(local, json!(["web"])));
    let mut c = Client::new(&rules);
    let alice = [("x-user", "alice")];
    let (status, headers) = c.get("/", &alice);
    assert_eq!(status, 200);
    assert_eq!(headers[0], ("x-ratelimit-limit".into(), "1".into()));
    assert_eq!(c.get("/", &alice).0, 429);
    assert_eq!(c.get("/", &[("x-user", "bob")]).0, 200);
    // No x-user: no descriptor, the route's bucket speaks (100, two taken by alice and bob
    // also consumed it, alice's refusal did not).
    let (status, headers) = c.get("/", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        headers[..2],
        pairs(&[
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "97")
        ])
    );
}

#[test]
fn a_path_prefix_descriptor_limits_its_paths_and_remote_address_is_read_only_when_used() {
    let local = json!({
    "tokenBucket": {"maxTokens": 100, "fillInterval": "60s"},
    "filterEnabled": on(), "filterEnforced": on(),
    "rateLimits": [
        {"actions": [{"headerValueMatch": {"descriptorValue": "admin",
            "headers": [{"name": ":path", "stringMatch": {"prefix": "/admin"}}]}}]},
        {"actions": [{"genericKey": {"descriptorValue": "all"}}, {"remoteAddress": {}}]},
    ],
    "descriptors": [
        {"entries": [{"key": "header_match", "value": "admin"}],
         "tokenBucket": {"maxTokens": 1, "fillInterval": "60s"}},
    ]});
    let rules = rules(&config(local, json!(["web"])));
    let limit = &rules.rate_limits.limits[0];
    assert!(limit.needs_remote_address);
    let mut c = Client::new(&rules);
    assert_eq!(c.get("/admin/users", &[]).0, 200);
    assert_eq!(c.get("/admin/x", &[]).0, 429);
    assert_eq!(c.get("/public", &[]).0, 200);
}

#[test]
fn shadow_mode_counts_a_refusal_and_lets_the_request_through() {
    let rules = rules(&config(
        json!({"tokenBucket": {"maxTokens": 1, "fillInterval": "3600s"}, "filterEnabled": on()}),
        json!(["web"]),
    ));
    let mut c = Client::new(&rules);
    assert_eq!(c.get("/", &[]).0, 200);
    let plan = c.send(get("/", &[]));
    assert!(matches!(plan.outcome, Outcome::Forward { .. }));
    assert!(matches!(
        plan.events.last(),
        Some(Event::RateLimitShadowed("web-limit"))
    ));
}

#[test]
fn a_limit_nobody_enabled_is_never_checked_and_check_says_so() {
    let cfg = config(
        json!({"tokenBucket": {"maxTokens": 1, "fillInterval": "3600s"}}),
        json!(["web"]),
    );
    let loaded = load(cfg.to_string().as_bytes(), &Anonymous).unwrap();
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.to_string().contains("Envoy's default is 0%")));
    let mut c = Client::new(&loaded.rules);
    for _ in 0..5 {
        assert_eq!(c.get("/", &[]).0, 200);
    }
}

#[test]
fn bad_limits_are_refused_with_the_field_that_is_wrong() {
    let bad = |local: Value, routes: Value| errors(&config(local, routes)).join("\n");
    let e = bad(
        json!({"tokenBucket": {"maxTokens": 0, "fillInterval": "1s"}}),
        ALL,
    );
    assert!(
        e.contains("rateLimits[0].localRateLimit.tokenBucket.maxTokens"),
        "{e}"
    );
    let e = bad(
        json!({"tokenBucket": {"maxTokens": 5, "fillInterval": "10ms"}}),
        ALL,
    );
    assert!(e.contains("under 50ms"), "{e}");
    let e = bad(json!({}), ALL);
    assert!(e.contains("tokenBucket: is required"), "{e}");
    let e = bad(
        json!({"tokenBucket": {"maxTokens": 5, "fillInterval": "1s"}}),
        json!(["nope"]),
    );
    assert!(
        e.contains("rateLimits[0].routes[0]: VirtualService app/demoapp has no route \"nope\""),
        "{e}"
    );
    let e = bad(
        json!({"tokenBucket": {"maxTokens": 5, "fillInterval": "1s"},
               "rateLimits": [{"actions": [{"metadata": {"descriptorKey": "k",
                   "metadataKey": {"key": "envoy.lb", "path": [{"key": "a"}, {"key": "b"}]}}}]}]}),
        ALL,
    );
    assert!(e.contains("metadataKey.key"), "{e}");
    let e = bad(
        json!({"token_bucket": {"max_tokens": 5, "fill_interval": "1s"}, "burst": 3}),
        ALL,
    );
    assert!(e.contains("burst"), "{e}");
}

#[test]
fn snake_case_as_pasted_from_an_envoy_filter_reads_like_camel_case() {
    let rules = rules(&config(
        json!({"token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "3600s"},
               "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
               "filter_enforced": {"runtime_key": "x", "default_value": {"numerator": 100}}}),
        json!(["web"]),
    ));
    let mut c = Client::new(&rules);
    assert_eq!(c.get("/", &[]).0, 200);
    assert_eq!(c.get("/", &[]).0, 429);
}

fn one_per_hour() -> Bucket {
    Bucket {
        max_tokens: 1,
        tokens_per_fill: 1,
        fill_interval_ms: 3_600_000,
    }
}

#[test]
fn up_to_max_dynamic_values_each_get_their_own_bucket_despite_hash_collisions() {
    let mut store = LocalBuckets::default();
    let key = |owner| Key {
        limit: "l",
        descriptor: Some(0),
        owner,
        slots: 20,
    };
    // Twenty values that all hash to slot 0 still get a bucket each (Envoy keeps 20 values).
    for v in 0..20u64 {
        assert!(
            take(&mut store, &key(v * 20), &one_per_hour(), 0).allowed,
            "{v}"
        );
    }
    for v in 0..20u64 {
        assert!(
            !take(&mut store, &key(v * 20), &one_per_hour(), 0).allowed,
            "{v}"
        );
    }
    // A 21st value finds every slot busy and shares: refused, never a fresh bucket.
    assert!(!take(&mut store, &key(400), &one_per_hour(), 0).allowed);
}

/// A store where another worker wins every compare-and-swap.
struct AlwaysRaced(LocalBuckets);

impl Store for AlwaysRaced {
    fn read(&mut self, name: &str) -> Option<Stored> {
        self.0.read(name)
    }
    fn write(&mut self, name: &str, state: &State, version: Option<u32>) -> Result<(), WriteError> {
        match version {
            None => self.0.write(name, state, None),
            Some(_) => Err(WriteError::Conflict),
        }
    }
}

#[test]
fn a_take_that_keeps_losing_the_compare_and_swap_refuses_instead_of_admitting() {
    let mut store = AlwaysRaced(LocalBuckets::default());
    let key = Key {
        limit: "l",
        descriptor: None,
        owner: 0,
        slots: 1,
    };
    let t = take(&mut store, &key, &one_per_hour(), 0);
    assert!(!t.allowed);
}
