//! The whole request decision, step after step, as the filter and `explain` run it: each test
//! is one interplay between steps that the steps' own tests cannot see.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::*;
use crate::compile::{load, Anonymous};
use crate::http::testing::get;
use crate::jwt::Jwks;
use crate::ratelimit::LocalBuckets;

const ISSUER: &str = "https://issuer.example";
const SECRET: &[u8] = b"meshrules-pipeline-test-secret-32-bytes";
const NOW: u64 = 1_700_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn inline_jwks() -> String {
    json!({"keys": [{"kty": "oct", "alg": "HS256", "k": b64(SECRET)}]}).to_string()
}

/// An HS256 token for `claims`, signed with the test secret.
fn token(claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn alice(group: &str) -> String {
    token(&json!({"iss": ISSUER, "sub": "alice", "group": group, "exp": NOW + 600}))
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    let api = match kind {
        "VirtualService" => "networking.istio.io/v1",
        _ => "security.istio.io/v1",
    };
    json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "app"}, "spec": spec})
}

fn rules(resources: Vec<Value>) -> RuleSet {
    let config = json!({"resources": resources});
    load(config.to_string().as_bytes(), &Anonymous)
        .unwrap()
        .rules
}

fn jwt_rule(extra: Value) -> Value {
    let mut rule = json!({"issuer": ISSUER, "jwks": inline_jwks()});
    if let (Some(r), Some(e)) = (rule.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    resource("RequestAuthentication", "jwt", json!({"jwtRules": [rule]}))
}

fn deny_admin() -> Value {
    resource(
        "AuthorizationPolicy",
        "deny-admin",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]}),
    )
}

/// `demoapp`: `/public` prefix to v-public, header `x-group: admins` to v-admins, else v1.
fn demoapp() -> Value {
    let dest = |subset: &str| json!([{"destination": {"host": "demoapp", "subset": subset}}]);
    resource(
        "VirtualService",
        "demoapp",
        json!({"hosts": ["demoapp"], "http": [
            {"name": "admins", "match": [{"headers": {"x-group": {"exact": "admins"}}}], "route": dest("admins")},
            {"name": "public", "match": [{"uri": {"prefix": "/public"}}], "route": dest("public")},
            {"name": "default", "route": dest("v1")},
        ]}),
    )
}

/// Runs the pipeline with a fresh token cache; remote keys come from `keys`.
fn plan_with<'r, 'k>(
    rules: &'r RuleSet,
    headers: Vec<(String, String)>,
    keys: &'k dyn Fn(usize) -> KeyState<'k>,
) -> Plan<'r> {
    run(
        rules,
        headers,
        Env {
            connection: &NoConnection,
            now_ms: NOW * 1000,
            keys,
            token_cache: &mut rules.authn.new_cache(),
            signatures: &crate::jwt::InModule,
            rng: &mut fastrand::Rng::with_seed(1),
            buckets: &mut LocalBuckets::default(),
        },
    )
}

fn plan<'r>(rules: &'r RuleSet, headers: Vec<(String, String)>) -> Plan<'r> {
    plan_with(rules, headers, &|_| KeyState::Failed)
}

fn edits(p: &Plan<'_>) -> Vec<String> {
    let mut all = Vec::new();
    p.request_edits(|e| {
        all.push(e.to_string());
        Ok::<(), ()>(())
    })
    .unwrap();
    all
}

/// The route the plan forwards through, by name.
fn route<'r>(p: &Plan<'r>, rules: &'r RuleSet) -> &'r str {
    match &p.outcome {
        Outcome::Forward { forward, .. } => &rules.routes[forward.route].name,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn status(p: &Plan<'_>) -> u32 {
    match &p.outcome {
        Outcome::Reply { reply, .. } => reply.status,
        other => panic!("not answered: {other:?}"),
    }
}

#[test]
fn the_token_leaves_the_query_before_authorization_and_the_upstream_gets_the_normalized_path() {
    let rules = rules(vec![
        jwt_rule(json!({"fromParams": ["access_token"]})),
        deny_admin(),
        demoapp(),
    ]);
    let t = alice("users");
    let p = plan(
        &rules,
        get(&format!("/x/../public/a?access_token={t}&page=2"), &[]),
    );
    assert_eq!(route(&p, &rules), "public");
    assert_eq!(p.request().path, "/public/a?page=2");
    let e = edits(&p);
    // jwt_authn drops the token first, then the connection manager's normalization (as
    // Envoy runs them), then the route's cluster header last.
    assert_eq!(e[0], "set :path: /x/../public/a?page=2", "{e:?}");
    assert_eq!(e[1], "set :path: /public/a?page=2", "{e:?}");
    assert!(
        e.last().unwrap().starts_with("set x-meshrules-cluster: "),
        "{e:?}"
    );
    assert!(!e.iter().any(|e| e.contains(&t)), "{e:?}");
}

#[test]
fn authorization_reads_the_normalized_path_so_dot_segments_do_not_reach_admin() {
    let rules = rules(vec![deny_admin(), demoapp()]);
    for path in ["/admin", "/a/../admin", "//admin/x", "/public/../admin"] {
        let p = plan(&rules, get(path, &[]));
        assert_eq!(status(&p), 403, "{path}");
        assert!(
            p.events
                .iter()
                .any(|e| matches!(e, Event::DeniedBy("app/deny-admin", 0))),
            "{path}: {:?}",
            p.events
        );
        assert!(
            !p.events.iter().any(|e| matches!(e, Event::Routed { .. })),
            "a denied request is not routed"
        );
    }
}

#[test]
fn claim_headers_are_set_before_routing_reads_headers_and_a_client_cannot_send_them() {
    let rules = rules(vec![
        jwt_rule(json!({"outputClaimToHeaders": [{"header": "x-group", "claim": "group"}]})),
        demoapp(),
    ]);
    let bearer = format!("Bearer {}", alice("admins"));
    let p = plan(&rules, get("/", &[("authorization", &bearer)]));
    assert_eq!(route(&p, &rules), "admins");
    assert!(edits(&p).contains(&"set x-group: admins".to_string()));
    assert!(edits(&p).contains(&"remove authorization".to_string()));

    // Without a token, the client's own x-group is gone before routing looks.
    let p = plan(&rules, get("/", &[("x-group", "admins")]));
    assert_eq!(route(&p, &rules), "default");
    assert_eq!(edits(&p)[0], "remove x-group");
    assert!(p.events.iter().any(|e| matches!(e, Event::JwtMissing)));
}

#[test]
fn a_client_sent_cluster_header_is_removed_and_replaced_by_the_filters_choice() {
    let rules = rules(vec![demoapp()]);
    let p = plan(&rules, get("/", &[("x-meshrules-cluster", "evil")]));
    let e = edits(&p);
    assert_eq!(e[0], "remove x-meshrules-cluster");
    assert_eq!(
        e.last().unwrap(),
        "set x-meshrules-cluster: outbound||v1|demoapp.app.svc.cluster.local"
    );
    assert!(matches!(p.events[0], Event::ClientClusterHeaderRemoved));
}

#[test]
fn a_delayed_abort_is_held_then_answered_as_envoys_fault_filter() {
    let vs = resource(
        "VirtualService",
        "faulty",
        json!({"hosts": ["demoapp"], "http": [{
            "fault": {"delay": {"fixedDelay": "2s", "percentage": {"value": 100}},
                      "abort": {"httpStatus": 503, "percentage": {"value": 100}}},
            "route": [{"destination": {"host": "demoapp"}}]}]}),
    );
    let rules = rules(vec![vs]);
    let p = plan(&rules, get("/", &[]));
    match &p.outcome {
        Outcome::Reply { reply, delay } => {
            assert_eq!(reply.status, 503);
            assert_eq!(*delay, Some(Duration::from_secs(2)));
        }
        other => panic!("{other:?}"),
    }
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::FaultDelay(d) if *d == Duration::from_secs(2))));
    assert!(p.events.iter().any(|e| matches!(e, Event::FaultAbort)));
}

#[test]
fn a_token_whose_keys_are_not_fetched_yet_waits_then_verifies_once_they_are() {
    let ra = resource(
        "RequestAuthentication",
        "remote",
        json!({"jwtRules": [{"issuer": ISSUER, "jwksUri": "https://keys.example/jwks.json"}]}),
    );
    let rules = rules(vec![ra, demoapp()]);
    let bearer = format!("Bearer {}", alice("users"));
    let headers = get("/", &[("authorization", &bearer)]);

    let p = plan_with(&rules, headers.clone(), &|_| KeyState::Pending);
    assert!(
        matches!(p.outcome, Outcome::WaitForKeys(0)),
        "{:?}",
        p.outcome
    );
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::JwtKeysPending(0))));
    assert!(p
        .describe(&p.events[0])
        .contains("https://keys.example/jwks.json"));

    let jwks = Jwks::parse(&inline_jwks(), true).unwrap();
    let p = plan_with(&rules, headers.clone(), &|_| KeyState::Ready(&jwks));
    assert_eq!(route(&p, &rules), "default");
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::JwtVerified { .. })));

    // A fetch that failed refuses the token, as Envoy's jwt_authn does.
    let p = plan_with(&rules, headers, &|_| KeyState::Failed);
    assert_eq!(status(&p), 401);
}

#[test]
fn a_refused_token_is_answered_before_authorization_and_routing() {
    let rules = rules(vec![jwt_rule(json!({})), deny_admin(), demoapp()]);
    let expired = token(&json!({"iss": ISSUER, "sub": "alice", "exp": NOW - 3600}));
    let bearer = format!("Bearer {expired}");
    let p = plan(&rules, get("/admin", &[("authorization", &bearer)]));
    assert_eq!(status(&p), 401);
    assert_eq!(p.events.len(), 1, "{:?}", p.events);
    assert_eq!(
        p.describe(&p.events[0]),
        "jwt: token refused: Jwt is expired"
    );
}

#[test]
fn a_path_read_two_ways_is_refused_before_policies_run() {
    let rules = rules(vec![deny_admin(), demoapp()]);
    let p = plan(&rules, get("/admin%2Fx", &[]));
    assert_eq!(status(&p), 400);
    assert!(matches!(p.events[..], [Event::PathRefused(_)]));
}

#[test]
fn a_host_without_a_virtual_service_passes_with_the_edits_made_before_routing() {
    let rules = rules(vec![jwt_rule(json!({})), demoapp()]);
    let bearer = format!("Bearer {}", alice("users"));
    let mut headers = get("/", &[("authorization", &bearer)]);
    headers[2].1 = "other.example".into();
    let p = plan(&rules, headers);
    assert!(matches!(p.outcome, Outcome::Pass));
    assert_eq!(edits(&p), vec!["remove authorization"]);
    assert_eq!(
        p.describe(p.events.last().unwrap()),
        "virtual service: none for host \"other.example\": the filter leaves the request to \
         Envoy's other routes"
    );
}

/// A connection whose facts count how often they are read.
#[derive(Default)]
struct Counting {
    reads: std::cell::Cell<u32>,
}

impl Connection for Counting {
    fn source_address(&self) -> Option<String> {
        self.reads.set(self.reads.get() + 1);
        Some("10.0.0.7:5555".into())
    }
    fn destination_address(&self) -> Option<Address> {
        self.reads.set(self.reads.get() + 1);
        Some(Address::parse("10.0.0.1:8080"))
    }
    fn requested_server_name(&self) -> Option<String> {
        self.reads.set(self.reads.get() + 1);
        None
    }
    fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.reads.set(self.reads.get() + 1);
        Some(PeerCertificate::Names(vec![
            "spiffe://cluster.local/ns/app/sa/web".into(),
        ]))
    }
}

fn counted(rules: &RuleSet) -> (u32, Plan<'_>) {
    let conn = Counting::default();
    let p = run(
        rules,
        get("/", &[]),
        Env {
            connection: &conn,
            now_ms: NOW * 1000,
            keys: &|_| KeyState::Failed,
            token_cache: &mut rules.authn.new_cache(),
            signatures: &crate::jwt::InModule,
            rng: &mut fastrand::Rng::with_seed(1),
            buckets: &mut LocalBuckets::default(),
        },
    );
    (conn.reads.get(), p)
}

#[test]
fn connection_facts_are_read_only_when_a_policy_needs_them() {
    let (reads, _) = counted(&rules(vec![deny_admin(), demoapp()]));
    assert_eq!(reads, 0);

    let by_principal = resource(
        "AuthorizationPolicy",
        "web-only",
        json!({"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/sa/web"]}}],
               "to": [{"operation": {"ports": ["8080"]}}]}]}),
    );
    let rules = rules(vec![by_principal, demoapp()]);
    let (reads, p) = counted(&rules);
    // The peer certificate and the destination, once each.
    assert_eq!(reads, 2);
    assert!(
        p.events
            .iter()
            .any(|e| matches!(e, Event::Allowed(Some(("app/web-only", 0))))),
        "{:?}",
        p.events
    );
}
