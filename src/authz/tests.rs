//! AuthorizationPolicy semantics as istiod translates them, decided on request facts.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::*;
use crate::compile::{load, Anonymous};

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": "app"}, "spec": spec})
}

fn authz(resources: Vec<Value>) -> Authz {
    match load(
        json!({"resources": resources}).to_string().as_bytes(),
        &Anonymous,
    ) {
        Ok(l) => l.rules.authz,
        Err(e) => panic!("config refused: {e:?}"),
    }
}

fn errors(resources: Vec<Value>) -> Vec<String> {
    match load(
        json!({"resources": resources}).to_string().as_bytes(),
        &Anonymous,
    ) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

struct Probe {
    headers: Vec<(String, String)>,
    source: Option<IpAddr>,
    peer: Vec<String>,
    claims: serde_json::Map<String, Value>,
    jwt: Option<(&'static str, Option<&'static str>)>,
}

impl Probe {
    fn get(path: &str) -> Probe {
        Probe {
            headers: vec![
                (":method".into(), "GET".into()),
                (":authority".into(), "demo.example.com".into()),
                (":path".into(), path.into()),
            ],
            source: "10.0.0.1".parse().ok(),
            peer: Vec::new(),
            claims: serde_json::Map::new(),
            jwt: None,
        }
    }

    fn header(mut self, k: &str, v: &str) -> Probe {
        self.headers.push((k.into(), v.into()));
        self
    }

    fn verdict(&self, a: &Authz) -> bool {
        let req = Request::from_headers(&self.headers);
        let facts = Facts {
            req: &req,
            path: req.path_only(),
            source_ip: self.source.map_or(Peer::None, Peer::Known),
            remote_ip: a.remote_ip(&req, self.source),
            destination_ip: "10.0.0.9".parse().ok(),
            destination_port: Some(8080),
            sni: None,
            peer_names: &self.peer,
            jwt: self.jwt.map(|(issuer, subject)| JwtFacts {
                issuer,
                subject,
                claims: &self.claims,
            }),
        };
        a.evaluate(&facts).verdict == Verdict::Allow
    }
}

#[test]
fn deny_wins_over_allow_and_no_allow_policy_allows() {
    let deny = policy(
        "deny-admin",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
    );
    let allow_all = policy("allow-all", json!({"rules": [{}]}));
    let a = authz(vec![deny.clone()]);
    assert!(!Probe::get("/admin/x").verdict(&a));
    assert!(
        Probe::get("/public").verdict(&a),
        "no ALLOW policy: allowed"
    );
    let a = authz(vec![deny, allow_all]);
    assert!(!Probe::get("/admin").verdict(&a), "DENY is evaluated first");
    assert!(Probe::get("/public").verdict(&a));
}

#[test]
fn allow_without_rules_denies_everything_and_empty_rule_allows_everything() {
    let a = authz(vec![policy("nothing", json!({"action": "ALLOW"}))]);
    assert!(!Probe::get("/").verdict(&a));
    let a = authz(vec![policy("everything", json!({"rules": [{}]}))]);
    assert!(Probe::get("/").verdict(&a));
}

#[test]
fn a_rule_needs_a_source_an_operation_and_every_condition() {
    let a = authz(vec![policy(
        "p",
        json!({"rules": [{
            "from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}, {"source": {"ipBlocks": ["192.168.0.1"]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
            "when": [{"key": "request.headers[x-team]", "values": ["blue"]},
                     {"key": "destination.port", "values": ["8080"]}]}]}),
    )]);
    let ok = Probe::get("/api/items").header("x-team", "blue");
    assert!(ok.verdict(&a));
    assert!(!Probe::get("/api/items").verdict(&a), "condition missing");
    assert!(
        !Probe::get("/web").header("x-team", "blue").verdict(&a),
        "operation"
    );
    let mut elsewhere = Probe::get("/api/items").header("x-team", "blue");
    elsewhere.source = "172.16.0.1".parse().ok();
    assert!(!elsewhere.verdict(&a), "source");
}

#[test]
fn not_values_exclude_and_absent_attributes_only_match_not_values() {
    let a = authz(vec![policy(
        "p",
        json!({"rules": [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/app/sa/bad"]}}]}]}),
    )]);
    assert!(
        Probe::get("/").verdict(&a),
        "plaintext: no principal, notPrincipals match"
    );
    let mut bad = Probe::get("/");
    bad.peer = vec!["spiffe://cluster.local/ns/app/sa/bad".to_string()];
    assert!(!bad.verdict(&a));
    let a = authz(vec![policy(
        "p",
        json!({"rules": [{"from": [{"source": {"principals": ["*"]}}]}]}),
    )]);
    assert!(!Probe::get("/").verdict(&a), "principals: [*] needs mTLS");
}

#[test]
fn principals_namespaces_and_service_accounts_use_istiods_spiffe_matchers() {
    let mut p = Probe::get("/");
    p.peer = vec!["spiffe://cluster.local/ns/shop/sa/web".to_string()];
    for (source, allowed) in [
        (
            json!({"principals": ["cluster.local/ns/shop/sa/web"]}),
            true,
        ),
        (json!({"principals": ["*/sa/web"]}), true),
        (json!({"principals": ["cluster.local/ns/shop/*"]}), true),
        (
            json!({"principals": ["cluster.local/ns/other/sa/web"]}),
            false,
        ),
        (json!({"namespaces": ["shop"]}), true),
        (json!({"namespaces": ["sh*"]}), true),
        (json!({"namespaces": ["other"]}), false),
        (json!({"serviceAccounts": ["shop/web"]}), true),
        (json!({"serviceAccounts": ["web"]}), false), // bare name: the policy's namespace (app)
        (json!({"serviceAccounts": ["shop/we"]}), false),
        (json!({"trustDomains": ["cluster.local"]}), true),
        (json!({"notTrustDomains": ["cluster.local"]}), false),
    ] {
        let a = authz(vec![policy(
            "p",
            json!({"rules": [{"from": [{"source": source}]}]}),
        )]);
        assert_eq!(p.verdict(&a), allowed, "{source}");
    }
}

#[test]
fn hosts_ignore_case_and_methods_and_paths_do_not() {
    for (op, allowed) in [
        (json!({"hosts": ["DEMO.example.com"]}), true),
        (json!({"hosts": ["*.EXAMPLE.com"]}), true),
        (json!({"hosts": ["demo.example.com:8080"]}), false),
        (json!({"methods": ["get"]}), false),
        (json!({"paths": ["/Items"]}), false),
        (json!({"paths": ["/items"]}), true),
        (json!({"paths": ["*s"]}), true),
    ] {
        let a = authz(vec![policy(
            "p",
            json!({"rules": [{"to": [{"operation": op}]}]}),
        )]);
        assert_eq!(Probe::get("/items?x=1").verdict(&a), allowed, "{op}");
    }
}

#[test]
fn path_templates_match_one_or_many_segments() {
    let a = authz(vec![policy(
        "p",
        json!({"rules": [{"to": [{"operation": {"paths": ["/users/{*}/profile", "/files/{**}"]}}]}]}),
    )]);
    assert!(Probe::get("/users/alice/profile").verdict(&a));
    assert!(!Probe::get("/users/a/b/profile").verdict(&a));
    assert!(Probe::get("/files/a/b/c.txt").verdict(&a));
    assert!(Probe::get("/files/").verdict(&a));
}

#[test]
fn remote_ip_honours_trusted_hops() {
    let config = json!({"resources": [policy("p", json!({"rules": [{"from": [{"source":
        {"remoteIpBlocks": ["203.0.113.0/24"]}}]}]}))], "security": {"xffNumTrustedHops": 1}});
    let a = match load(config.to_string().as_bytes(), &Anonymous) {
        Ok(l) => l.rules.authz,
        Err(e) => panic!("{e:?}"),
    };
    let xff = |v: &str| Probe::get("/").header("x-forwarded-for", v);
    // Envoy has appended the peer (10.0.0.1); one trusted hop: the client's last entry.
    assert!(xff("198.51.100.7, 203.0.113.9, 10.0.0.1").verdict(&a));
    assert!(!xff("203.0.113.9, 198.51.100.7, 10.0.0.1").verdict(&a));
    assert!(
        !Probe::get("/").verdict(&a),
        "no header: the peer (10.0.0.1)"
    );
}

#[test]
fn request_principals_and_claims_read_the_verified_token() {
    let mut p = Probe::get("/");
    p.jwt = Some(("https://idp.test", Some("alice")));
    p.claims = json!({"groups": ["dev", "ops"], "org": {"team": "core"}, "azp": "web"})
        .as_object()
        .cloned()
        .unwrap();
    for (when, allowed) in [
        (
            json!({"key": "request.auth.principal", "values": ["https://idp.test/alice"]}),
            true,
        ),
        (
            json!({"key": "request.auth.principal", "values": ["*/alice"]}),
            true,
        ),
        (
            json!({"key": "request.auth.principal", "values": ["https://idp.test/*"]}),
            true,
        ),
        (
            json!({"key": "request.auth.principal", "values": ["https://idp.test/bob"]}),
            false,
        ),
        (
            json!({"key": "request.auth.claims[groups]", "values": ["ops"]}),
            true,
        ),
        (
            json!({"key": "request.auth.claims[org][team]", "values": ["core"]}),
            true,
        ),
        (
            json!({"key": "request.auth.claims[org][team]", "values": ["edge"]}),
            false,
        ),
        (
            json!({"key": "request.auth.presenter", "values": ["web"]}),
            true,
        ),
    ] {
        let a = authz(vec![policy(
            "p",
            json!({"rules": [{"when": [when.clone()]}]}),
        )]);
        assert_eq!(p.verdict(&a), allowed, "{when}");
    }
    let a = authz(vec![policy(
        "p",
        json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
    )]);
    assert!(
        !Probe::get("/").verdict(&a),
        "no token: no request principal"
    );
}

#[test]
fn dry_run_and_audit_policies_never_decide() {
    let mut dry = policy(
        "dry",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}),
    );
    dry["metadata"]["annotations"] = json!({"istio.io/dry-run": "true"});
    let audit = policy("audit", json!({"action": "AUDIT", "rules": [{}]}));
    let a = authz(vec![dry, audit]);
    let req_headers = Probe::get("/x").headers;
    let req = Request::from_headers(&req_headers);
    let facts = Facts {
        req: &req,
        path: "/x",
        source_ip: Peer::None,
        remote_ip: None,
        destination_ip: None,
        destination_port: None,
        sni: None,
        peer_names: &[],
        jwt: None,
    };
    let e = a.evaluate(&facts);
    assert_eq!(e.verdict, Verdict::Allow);
    assert!(e.dry_run_would_deny);
    assert_eq!(e.audited, Some(("app/audit", 0)));
}

#[test]
fn bad_policies_are_refused_with_their_paths() {
    let cases = [
        (
            json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
            "resources[0].spec.action: CUSTOM needs",
        ),
        (
            json!({"rules": [{"when": [{"key": "request.foo", "values": ["x"]}]}]}),
            "resources[0].spec.rules[0].when[0].key: unknown attribute",
        ),
        (
            json!({"rules": [{"when": [{"key": "source.ip"}]}]}),
            "resources[0].spec.rules[0].when[0]: at least one of values or notValues",
        ),
        (
            json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300"]}}]}]}),
            "resources[0].spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.300\" is not an IP",
        ),
        (
            json!({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}),
            "resources[0].spec.rules[0].to[0].operation.ports[0]",
        ),
        (
            json!({"rules": [{"to": [{"operation": {"paths": ["/a/{**}/b/{*}"]}}]}]}),
            "resources[0].spec.rules[0].to[0].operation.paths[0]",
        ),
        (
            json!({"rules": [{"from": [{"source": {}}]}]}),
            "resources[0].spec.rules[0].from[0].source: source must set",
        ),
        (
            json!({"rules": [{"from": [{"source": {"serviceAccounts": ["a"], "namespaces": ["b"]}}]}]}),
            "resources[0].spec.rules[0].from[0].source: cannot set serviceAccounts",
        ),
        (json!({"action": "MAYBE"}), "resources[0].spec.action"),
    ];
    for (spec, expected) in cases {
        let errs = errors(vec![policy("p", spec.clone())]);
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{spec}: expected {expected:?} in {errs:?}"
        );
    }
}

fn deny_guests() -> Authz {
    authz(vec![policy(
        "deny-guests",
        json!({"action": "DENY", "rules": [{"when": [
            {"key": "request.headers[x-role]", "values": ["guest"]}]}]}),
    )])
}

#[test]
fn deny_on_a_header_catches_the_value_among_repeated_headers_as_envoy_rbac() {
    // Envoy 1.40 RBAC, checked in real Envoy: each value of a repeated header is matched on its
    // own; the DENY bypass was `x-role: guest` sent twice, or next to `x-role: admin`.
    let a = deny_guests();
    let roles = |values: &[&str]| {
        values
            .iter()
            .fold(Probe::get("/"), |p, v| p.header("x-role", v))
            .verdict(&a)
    };
    assert!(!roles(&["guest"]));
    assert!(!roles(&["guest", "guest"]));
    assert!(!roles(&["guest", "admin"]));
    assert!(!roles(&["admin", "guest"]));
    // One value is never split at commas.
    assert!(roles(&["guest,admin"]));
    assert!(roles(&["admin"]));
}

#[test]
fn allow_on_a_header_accepts_any_one_of_repeated_values_as_envoy_rbac() {
    let a = authz(vec![policy(
        "allow-abc1",
        json!({"rules": [{"when": [{"key": "request.headers[x-id]", "values": ["abc1"]}]}]}),
    )]);
    let ids = |values: &[&str]| {
        values
            .iter()
            .fold(Probe::get("/"), |p, v| p.header("x-id", v))
            .verdict(&a)
    };
    assert!(ids(&["abc1", "other"]));
    assert!(ids(&["other", "abc1"]));
    assert!(!ids(&["other"]));
    assert!(!ids(&[]));
}

#[test]
fn request_principal_without_subject_needs_a_sub_claim_as_envoy_metadata_matchers() {
    // istiod: `requestPrincipals: ["iss1"]` is issuer exact "iss1" AND sub exact ""; Envoy's
    // metadata matcher does not match an absent claim.
    let a = authz(vec![policy(
        "allow-iss1",
        json!({"rules": [{"from": [{"source": {"requestPrincipals": ["iss1"]}}]}]}),
    )]);
    let with = |subject: Option<&'static str>| {
        let mut p = Probe::get("/");
        p.jwt = Some(("iss1", subject));
        p.verdict(&a)
    };
    assert!(!with(None), "no sub claim: no match");
    assert!(with(Some("")), "sub claim \"\": matches exact \"\"");
    assert!(!with(Some("alice")));
}

fn ip_policies(use_remote_address: bool) -> Authz {
    let config = json!({"resources": [
        policy("deny-ip", json!({"action": "DENY", "rules": [{"from": [{"source":
            {"ipBlocks": ["1.2.3.4"]}}]}]})),
        policy("allow-net", json!({"rules": [{"from": [{"source":
            {"ipBlocks": ["10.0.0.0/8"]}}]}]})),
    ], "security": {"useRemoteAddress": use_remote_address}});
    match load(config.to_string().as_bytes(), &Anonymous) {
        Ok(l) => l.rules.authz,
        Err(e) => panic!("{e:?}"),
    }
}

fn decide_ip(a: &Authz, source_address: &str, xff: Option<&str>) -> (Peer, Verdict<'static>) {
    let mut p = Probe::get("/");
    if let Some(x) = xff {
        p = p.header("x-forwarded-for", x);
    }
    let req = Request::from_headers(&p.headers);
    let (source_ip, remote_ip) = a.peers(Some(source_address), &req);
    let facts = Facts {
        req: &req,
        path: "/",
        source_ip,
        remote_ip,
        destination_ip: None,
        destination_port: None,
        sni: None,
        peer_names: &[],
        jwt: None,
    };
    let verdict = match a.evaluate(&facts).verdict {
        Verdict::Allow => Verdict::Allow,
        Verdict::DeniedBy(..) => Verdict::DeniedBy("", 0),
        Verdict::NoAllowMatched => Verdict::NoAllowMatched,
    };
    (source_ip, verdict)
}

#[test]
fn ip_blocks_read_the_direct_peer_never_a_forwarded_address() {
    // Envoy keeps the peer's port in source.address; an address it took from
    // X-Forwarded-For has port 0 (checked in real Envoy 1.40).
    let ip = |s: &str| Peer::Known(s.parse().unwrap());
    for use_remote_address in [true, false] {
        let a = ip_policies(use_remote_address);
        assert_eq!(
            decide_ip(&a, "10.1.1.1:5000", Some("1.2.3.4")),
            (ip("10.1.1.1"), Verdict::Allow)
        );
        assert_eq!(
            decide_ip(&a, "1.2.3.4:5000", None),
            (ip("1.2.3.4"), Verdict::DeniedBy("", 0))
        );
    }
    // use_remote_address: Envoy appended the peer, the rightmost entry, whatever came before.
    let a = ip_policies(true);
    assert_eq!(
        decide_ip(&a, "1.2.3.4:0", Some("1.2.3.4, 10.1.1.1")),
        (ip("10.1.1.1"), Verdict::Allow)
    );
    assert_eq!(
        decide_ip(&a, "10.2.2.2:0", Some("10.2.2.2")).0,
        ip("10.2.2.2")
    );
}

#[test]
fn hidden_peer_fails_closed_for_deny_and_allow_policies() {
    // Without use_remote_address Envoy does not append the peer: it is unknown.
    let a = ip_policies(false);
    let (peer, verdict) = decide_ip(&a, "10.1.1.1:0", Some("10.1.1.1"));
    assert_eq!(peer, Peer::Hidden);
    assert_eq!(
        verdict,
        Verdict::DeniedBy("", 0),
        "the DENY on ipBlocks may match"
    );
    let allow_only = authz(vec![policy(
        "allow-net",
        json!({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]}]}),
    )]);
    assert_eq!(
        decide_ip(&allow_only, "10.1.1.1:0", Some("10.1.1.1")).1,
        Verdict::NoAllowMatched,
        "an ALLOW on ipBlocks cannot be relied on"
    );
    // remote.ip is Envoy's own derivation and stays usable.
    let remote = authz(vec![policy(
        "deny-remote",
        json!({"action": "DENY", "rules": [{"from": [{"source": {"remoteIpBlocks": ["10.1.1.1"]}}]}]}),
    )]);
    assert_eq!(
        decide_ip(&remote, "10.9.9.9:0", Some("10.9.9.9")).1,
        Verdict::Allow
    );
    assert_eq!(
        decide_ip(&remote, "10.1.1.1:0", Some("10.1.1.1")).1,
        Verdict::DeniedBy("", 0)
    );
}

fn authz_with(security: Value, resources: Vec<Value>) -> Authz {
    match load(
        json!({"resources": resources, "security": security})
            .to_string()
            .as_bytes(),
        &Anonymous,
    ) {
        Ok(l) => l.rules.authz,
        Err(e) => panic!("config refused: {e:?}"),
    }
}

fn from_peer(names: &[&str]) -> Probe {
    let mut p = Probe::get("/");
    p.peer = names.iter().map(|n| n.to_string()).collect();
    p
}

fn allows_source(source: Value, p: &Probe) -> bool {
    let a = authz(vec![policy(
        "p",
        json!({"rules": [{"from": [{"source": source}]}]}),
    )]);
    p.verdict(&a)
}

#[test]
fn a_path_less_spiffe_san_has_no_trust_domain_as_istiods_prefix_matcher() {
    // istiod: trustDomains ["td"] is the prefix `spiffe://td/` (golden trust-domains-out.yaml).
    let p = from_peer(&["spiffe://td"]);
    assert!(!allows_source(json!({"trustDomains": ["td"]}), &p));
    assert!(allows_source(json!({"notTrustDomains": ["td"]}), &p));
    assert!(!allows_source(json!({"trustDomains": ["t*"]}), &p));
    let with_path = from_peer(&["spiffe://td/ns/a/sa/b"]);
    assert!(allows_source(json!({"trustDomains": ["td"]}), &with_path));
    assert!(allows_source(json!({"trustDomains": ["t*"]}), &with_path));
    assert!(allows_source(json!({"trustDomains": ["*d"]}), &with_path));
    assert!(allows_source(json!({"trustDomains": ["*"]}), &with_path));
    assert!(!allows_source(
        json!({"trustDomains": ["bad*"]}),
        &with_path
    ));
}

#[test]
fn principals_are_tried_against_every_san_then_the_subject_as_envoy_rbac() {
    // Envoy's authenticated.principal_name: each URI SAN, each DNS SAN, then the subject.
    let p = from_peer(&[
        "spiffe://td",
        "spiffe://cluster.local/ns/app/sa/web",
        "web.app",
        "CN=web",
    ]);
    assert!(allows_source(
        json!({"principals": ["cluster.local/ns/app/sa/web"]}),
        &p
    ));
    assert!(allows_source(json!({"namespaces": ["app"]}), &p));
    assert!(allows_source(json!({"serviceAccounts": ["app/web"]}), &p));
    assert!(allows_source(
        json!({"trustDomains": ["cluster.local"]}),
        &p
    ));
    // A DENY-style exclusion sees the second SAN too.
    assert!(!allows_source(
        json!({"notPrincipals": ["cluster.local/ns/app/sa/web"]}),
        &p
    ));
    // A certificate with only a DNS SAN or a subject is still an authenticated peer: `*`.
    assert!(allows_source(
        json!({"principals": ["*"]}),
        &from_peer(&["web.app", "CN=web"])
    ));
    assert!(!allows_source(
        json!({"principals": ["*"]}),
        &from_peer(&[])
    ));
}

#[test]
fn trust_domain_aliases_expand_principals_as_istiod_bundles() {
    // Golden td-aliases-source-principal: bundle new-td + [old-td, some-trustdomain].
    let sec =
        json!({"trustDomain": "new-td", "trustDomainAliases": ["old-td", "some-trustdomain"]});
    let a = authz_with(
        sec.clone(),
        vec![policy(
            "p",
            json!({"rules": [{"from": [{"source": {"principals": ["old-td/ns/foo/sa/web", "*-td/ns/foo/sa/x"]}}]}]}),
        )],
    );
    for (name, allowed) in [
        ("spiffe://new-td/ns/foo/sa/web", true),
        ("spiffe://old-td/ns/foo/sa/web", true),
        ("spiffe://some-trustdomain/ns/foo/sa/web", true),
        ("spiffe://other-td/ns/foo/sa/web", false),
        // `*-td` is kept as written (it matches new-td and old-td) and copied for the alias
        // it does not match.
        ("spiffe://other-td/ns/foo/sa/x", true),
        ("spiffe://some-trustdomain/ns/foo/sa/x", true),
        ("spiffe://some-trust/ns/foo/sa/x", false),
    ] {
        assert_eq!(from_peer(&[name]).verdict(&a), allowed, "{name}");
    }
    // `cluster.local` stands for the local trust domain, whatever it is.
    let a = authz_with(
        json!({"trustDomain": "td1"}),
        vec![policy(
            "p",
            json!({"rules": [{"when": [{"key": "source.principal", "values": ["cluster.local/ns/foo/sa/web"]}]}]}),
        )],
    );
    assert!(from_peer(&["spiffe://td1/ns/foo/sa/web"]).verdict(&a));
    assert!(!from_peer(&["spiffe://cluster.local/ns/foo/sa/web"]).verdict(&a));
    // A foreign trust domain is kept as written.
    let a = authz_with(
        sec,
        vec![policy(
            "p",
            json!({"rules": [{"from": [{"source": {"principals": ["partner/ns/foo/sa/web"]}}]}]}),
        )],
    );
    assert!(from_peer(&["spiffe://partner/ns/foo/sa/web"]).verdict(&a));
    assert!(!from_peer(&["spiffe://new-td/ns/foo/sa/web"]).verdict(&a));
}

#[test]
fn namespaces_are_quoted_in_istiods_regex_golden_multiple_td_aliases() {
    // Found by tests/e2e/test_authz_golden.py: istiod writes `.*/ns/rule\[0\]-ns/.*`, so the
    // brackets are literal, not a character class.
    let literal = from_peer(&["spiffe://cluster.local/ns/rule[0]-ns/sa/default"]);
    let class = from_peer(&["spiffe://cluster.local/ns/rule0-ns/sa/default"]);
    let source = json!({"namespaces": ["rule[0]-ns"]});
    assert!(allows_source(source.clone(), &literal));
    assert!(!allows_source(source, &class));
    assert!(allows_source(
        json!({"namespaces": ["rule[0]-*"]}),
        &literal
    ));
    assert!(!allows_source(
        json!({"namespaces": ["a.c"]}),
        &from_peer(&["spiffe://cluster.local/ns/abc/sa/default"])
    ));
}

/// The evaluation of `probe` on `a` as text, with the index and with every policy tried in
/// order (the index taken away).
fn indexed_and_linear(a: &mut Authz, probe: &Probe) -> (String, String) {
    let evaluate = |a: &Authz| {
        let req = Request::from_headers(&probe.headers);
        let facts = Facts {
            req: &req,
            path: req.path_only(),
            source_ip: Peer::None,
            remote_ip: None,
            destination_ip: None,
            destination_port: Some(8080),
            sni: None,
            peer_names: &[],
            jwt: None,
        };
        format!("{:?}", a.evaluate(&facts))
    };
    let indexed = evaluate(a);
    let saved = std::mem::take(&mut a.indexes);
    let linear = evaluate(a);
    a.indexes = saved;
    (indexed, linear)
}

#[test]
fn the_path_index_decides_exactly_as_trying_every_policy_in_order() {
    // 30 DENY and 30 ALLOW policies: exact paths, prefixes, several operations, a path
    // template, notPaths, a method-only rule and a policy without rules, so every kind of
    // rule is in the index or in its always-tried list.
    let mut resources = Vec::new();
    for i in 0..30 {
        let to = match i % 6 {
            0 => json!([{"operation": {"paths": [format!("/svc{i}")]}}]),
            1 => json!([{"operation": {"paths": [format!("/svc{i}/*"), "/shared"]}}]),
            2 => {
                json!([{"operation": {"paths": [format!("/a{i}")]}}, {"operation": {"paths": [format!("/b{i}*")], "methods": ["POST"]}}])
            }
            3 => json!([{"operation": {"paths": ["/t/{*}/x"]}}]),
            4 => json!([{"operation": {"notPaths": [format!("/svc{i}")]}}]),
            _ => json!([{"operation": {"methods": ["DELETE"]}}]),
        };
        resources.push(policy(
            &format!("deny-{i}"),
            json!({"action": "DENY", "rules": [{"to": to}]}),
        ));
        let allow = if i == 29 {
            json!({"rules": []})
        } else {
            json!({"rules": [{"to": to}]})
        };
        resources.push(policy(&format!("allow-{i}"), allow));
    }
    let mut a = authz(resources);
    assert!(
        a.indexes[0].is_some() && a.indexes[1].is_some(),
        "lists this long are indexed"
    );
    let mut paths: Vec<String> = [
        "/", "/shared", "/t/q/x", "/t/q/y", "/nothing", "/svc", "/svc1x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..30 {
        paths.extend([
            format!("/svc{i}"),
            format!("/svc{i}/deep"),
            format!("/a{i}"),
            format!("/b{i}z"),
        ]);
    }
    for path in &paths {
        for method in ["GET", "POST", "DELETE"] {
            let mut probe = Probe::get(path);
            probe.headers[0].1 = method.into();
            let (indexed, linear) = indexed_and_linear(&mut a, &probe);
            assert_eq!(indexed, linear, "{method} {path}");
        }
    }
}
