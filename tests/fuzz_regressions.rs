//! Fuzzing findings (fuzz/regressions/, see its README) replayed as plain tests, so `make unit`
//! keeps them fixed without the fuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshrules::authz::Pattern;
use meshrules::compile::{self, Anonymous};

/// `config_compile`: a duration whose fraction pushes the nanosecond total past `u128::MAX`
/// panics on the overflow in debug builds and wraps in release ones, where `timeout:
/// 340282366920938463463374607431.9s` becomes 131 ms instead of being refused as out of range.
#[test]
fn duration_with_a_fraction_past_the_range_is_refused() {
    let config = include_bytes!("../fuzz/regressions/config_compile/duration-overflow.json");
    let errors = compile::load(config, &Anonymous).expect_err("accepted");
    assert!(
        errors.iter().any(|e| e.message.contains("out of range")),
        "{errors:?}"
    );
}

/// Found while writing the fuzz invariants, not by the fuzzer: a `regex` is compiled inside
/// `^(?:…)$`, so a pattern that closes the group itself (`/x)|(.*`) is accepted and matches
/// every path, where Envoy's RE2 refuses it (unbalanced parentheses) and istiod with it.
#[test]
fn a_regex_that_closes_the_anchoring_group_is_refused() {
    let config = serde_json::json!({"resources": [{
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "app"},
        "spec": {"hosts": ["d"], "http": [{
            "match": [{"uri": {"regex": "/x)|(.*"}}],
            "route": [{"destination": {"host": "d"}}]}]}}]});
    let result = compile::load(config.to_string().as_bytes(), &Anonymous);
    assert!(
        result.is_err(),
        "accepted: {:?}",
        result.map(|l| l.rules.routes.len())
    );
}

/// The same in AuthorizationPolicy `namespaces` (istiod's `.*/ns/<ns>/.*`): `a)|(.*` allowed
/// every mTLS peer, in any namespace. istiod quotes the namespace (`regexp.QuoteMeta`, `*`
/// excepted), so it is a literal namespace name that no peer has.
#[test]
fn a_namespace_that_closes_the_anchoring_group_is_literal() {
    let config = serde_json::json!({"resources": [{
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow", "namespace": "app"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["a)|(.*"]}}]}]}}]});
    let loaded = compile::load(config.to_string().as_bytes(), &Anonymous).unwrap();
    let check = &loaded.rules.authz.allow[0].rules[0].from[0][0];
    let Pattern::Regex(re) = &check.values[0] else {
        panic!("a regex: {check:?}");
    };
    assert!(!re.is_match("spiffe://cluster.local/ns/other/sa/default"));
    assert!(re.is_match("spiffe://cluster.local/ns/a)|(.x/sa/default"));
}

/// And in `serviceAccounts` (istiod's `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`): the namespace
/// and name are literal, so `x)|(.*` cannot widen the match to every peer.
#[test]
fn a_service_account_that_closes_the_anchoring_group_is_literal() {
    let config = serde_json::json!({"resources": [{
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow", "namespace": "app"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {
            "serviceAccounts": ["x)|(.*", "o)|(.*/sa"]}}]}]}}]});
    let loaded = compile::load(config.to_string().as_bytes(), &Anonymous).unwrap();
    let check = &loaded.rules.authz.allow[0].rules[0].from[0][0];
    for value in &check.values {
        let Pattern::Regex(re) = value else {
            panic!("a regex: {value:?}");
        };
        assert!(
            !re.is_match("spiffe://cluster.local/ns/other/sa/default"),
            "{re:?}"
        );
    }
}
