//! Configuration checks: every problem is refused with its JSON path.

use serde_json::{json, Value};

use super::*;

fn vs(http: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "demoapp", "namespace": "app"},
           "spec": {"hosts": ["demoapp"], "http": http}})
}

fn errors_of(config: Value) -> Vec<String> {
    match load(config.to_string().as_bytes(), &Anonymous) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn route_to(host: &str) -> Value {
    json!([{"destination": {"host": host}}])
}

fn assert_refused(config: Value, expected: &str) {
    let errors = errors_of(config);
    assert!(
        errors.iter().any(|e| e == expected),
        "expected {expected:?} among {errors:?}"
    );
}

#[test]
fn abort_status_outside_200_599_is_refused_with_its_path() {
    let config = json!({"resources": [vs(json!([{"route": route_to("demoapp"),
        "fault": {"abort": {"httpStatus": 700, "percentage": {"value": 100}}}}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[0].fault.abort.httpStatus: 700 is not in 200..=599",
    );
}

#[test]
fn unknown_kind_is_refused() {
    let config = json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "g"}, "spec": {}}]});
    assert_refused(
        config,
        "resources[0].kind: unknown kind \"Gateway\" (expected VirtualService, DestinationRule, AuthorizationPolicy or RequestAuthentication)",
    );
}

#[test]
fn unsupported_api_version_is_refused() {
    let config = json!({"resources": [{"apiVersion": "networking.istio.io/v2", "kind": "VirtualService",
        "metadata": {"name": "g"}, "spec": {}}]});
    let errors = errors_of(config);
    assert!(
        errors[0].starts_with(
            "resources[0].apiVersion: \"networking.istio.io/v2\" is not a supported apiVersion"
        ),
        "{errors:?}"
    );
}

#[test]
fn unknown_field_is_refused_with_its_path() {
    let config =
        json!({"resources": [vs(json!([{"route": route_to("demoapp"), "timeuot": "1s"}]))]});
    let errors = errors_of(config);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("resources[0].spec.http[0].timeuot: unknown field `timeuot`"),
        "{errors:?}"
    );
}

#[test]
fn unknown_top_level_and_routing_fields_are_refused() {
    let errors = errors_of(json!({"resources": [], "rules": []}));
    assert!(errors[0].contains("unknown field `rules`"), "{errors:?}");
    let errors = errors_of(json!({"routing": {"clusterHeadr": "x"}}));
    assert!(
        errors[0].starts_with("routing.clusterHeadr: unknown field"),
        "{errors:?}"
    );
}

#[test]
fn bad_regex_is_refused() {
    let config = json!({"resources": [vs(json!([{"match": [{"uri": {"regex": "/(unclosed"}}],
        "route": route_to("demoapp")}]))]});
    let errors = errors_of(config);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .starts_with("resources[0].spec.http[0].match[0].uri.regex: bad regex \"/(unclosed\""),
        "{errors:?}"
    );
}

#[test]
fn bad_durations_are_refused() {
    let config = json!({"resources": [vs(json!([{"route": route_to("demoapp"), "timeout": "5 seconds",
        "retries": {"attempts": 2, "perTryTimeout": "-1s"},
        "fault": {"delay": {"fixedDelay": "1x", "percentage": {"value": 5}}}}]))]});
    let errors = errors_of(config);
    let paths: Vec<_> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "resources[0].spec.http[0].fault.delay.fixedDelay",
            "resources[0].spec.http[0].timeout",
            "resources[0].spec.http[0].retries.perTryTimeout",
        ],
        "{errors:?}"
    );
}

#[test]
fn negative_and_all_zero_weights_are_refused() {
    let negative = json!({"resources": [vs(json!([{"route": [
        {"destination": {"host": "a"}, "weight": -10}, {"destination": {"host": "b"}, "weight": 110}]}]))]});
    assert_refused(
        negative,
        "resources[0].spec.http[0].route[0].weight: -10 is not in 0..=2147483647",
    );
    let zero = json!({"resources": [vs(json!([{"route": [
        {"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}, "weight": 0}]}]))]});
    assert_refused(
        zero,
        "resources[0].spec.http[0].route: all destination weights are zero",
    );
}

#[test]
fn percentage_outside_0_100_is_refused() {
    let config = json!({"resources": [vs(json!([{"route": route_to("demoapp"),
        "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 150}}}}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[0].fault.delay.percentage.value: 150 is not in 0..=100",
    );
}

#[test]
fn unknown_grpc_status_name_is_refused() {
    let config = json!({"resources": [vs(json!([{"route": route_to("demoapp"),
        "fault": {"abort": {"grpcStatus": "UNAVAILABEL", "percentage": {"value": 1}}}}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[0].fault.abort.grpcStatus: \"UNAVAILABEL\" is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND)",
    );
}

#[test]
fn route_without_action_is_refused() {
    let config = json!({"resources": [vs(json!([{"name": "nothing", "match": [{"uri": {"prefix": "/"}}]}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[0]: route has none of route, redirect, directResponse or delegate",
    );
}

#[test]
fn empty_prefix_or_regex_is_refused_as_istio_validates_it() {
    let config = json!({"resources": [vs(json!([{"match": [
        {"headers": {"x-a": {"prefix": ""}}, "queryParams": {"q": {"regex": ""}}}],
        "route": route_to("demoapp")}]))]});
    let errors = errors_of(config);
    assert_eq!(
        errors,
        [
            "resources[0].spec.http[0].match[0].headers.x-a.prefix: empty match: the prefix is empty (use {} to match presence)",
            "resources[0].spec.http[0].match[0].queryParams.q.regex: empty match: the regex is empty (Istio refuses it)",
        ]
    );
}

#[test]
fn empty_uri_match_matches_everything_as_in_istio() {
    let config =
        json!({"resources": [vs(json!([{"match": [{"uri": {}}], "route": route_to("demoapp")}]))]});
    assert_eq!(errors_of(config), Vec::<String>::new());
}

#[test]
fn duplicate_route_names_are_refused() {
    let config = json!({"resources": [vs(json!([
        {"name": "r", "route": route_to("a")}, {"name": "r", "route": route_to("b")}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[1].name: duplicate route name \"r\" (also http[0])",
    );
}

#[test]
fn mirror_is_refused_naming_the_alternative() {
    let config =
        json!({"resources": [vs(json!([{"route": route_to("a"), "mirror": {"host": "b"}}]))]});
    let errors = errors_of(config);
    assert!(errors[0].starts_with("resources[0].spec.http[0].mirror: mirroring is not supported"));
    assert!(errors[0].contains("request_mirror_policies"));
}

#[test]
fn route_to_undefined_subset_is_refused_when_a_destination_rule_exists() {
    let dr = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "demoapp", "namespace": "app"},
        "spec": {"host": "demoapp", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}});
    let config = json!({"resources": [dr, vs(json!([{"route": [
        {"destination": {"host": "demoapp", "subset": "v3"}}]}]))]});
    assert_refused(
        config,
        "resources[1].spec.http[0].route[0].destination.subset: subset \"v3\" is not defined by the DestinationRule for demoapp.app.svc.cluster.local (has: v1)",
    );
}

#[test]
fn every_problem_of_a_config_is_reported_at_once() {
    let config = json!({"resources": [
        vs(json!([
            {"route": route_to("a"), "fault": {"abort": {"httpStatus": 99, "percentage": {"value": 1}}}},
            {"route": route_to("a"), "timeout": "soon"},
            {"match": [{"uri": {"regex": "("}}], "route": route_to("a")},
        ])),
        {"apiVersion": "networking.istio.io/v1", "kind": "Nope", "metadata": {}, "spec": {}}
    ]});
    let errors = errors_of(config);
    assert_eq!(errors.len(), 4, "{errors:?}");
}

#[test]
fn protobuf_struct_floats_are_accepted_as_whole_numbers() {
    let config = json!({"resources": [vs(json!([{"route": [
        {"destination": {"host": "a", "port": {"number": 8080.0}}, "weight": 90.0},
        {"destination": {"host": "b"}, "weight": 10.0}],
        "retries": {"attempts": 3.0},
        "fault": {"abort": {"httpStatus": 503.0, "percentage": {"value": 0.5}}}}]))]});
    assert_eq!(errors_of(config), Vec::<String>::new());
    let fractional = json!({"resources": [vs(json!([{"route": [
        {"destination": {"host": "a"}, "weight": 90.5}, {"destination": {"host": "b"}, "weight": 10}]}]))]});
    assert_refused(
        fractional,
        "resources[0].spec.http[0].route[0].weight: 90.5 is not a whole number",
    );
}

#[test]
fn delegate_must_exist_and_have_no_hosts() {
    let config = json!({"resources": [vs(json!([{"delegate": {"name": "missing"}}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[0].delegate: delegate VirtualService app/missing is not in resources",
    );
}

#[test]
fn tcp_routes_only_warn() {
    let config = json!({"resources": [{"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "t", "namespace": "app"},
        "spec": {"hosts": ["t"], "tcp": [{"route": [{"destination": {"host": "t"}}]}]}}]});
    let loaded = load(config.to_string().as_bytes(), &Anonymous).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn invalid_json_is_refused() {
    let errors = errors_of(Value::String("{".into()));
    assert_eq!(errors.len(), 1);
    let Err(e) = load(b"{not json", &Anonymous) else {
        panic!("accepted");
    };
    assert!(e[0]
        .to_string()
        .starts_with("$: not valid JSON: key must be a string at line 1 column 2"));
}

#[test]
fn fault_or_rewrite_with_a_redirect_is_refused_as_in_istio() {
    let config = json!({"resources": [vs(json!([{"redirect": {"uri": "/x"}, "rewrite": {"uri": "/y"},
        "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 1}}}}]))]});
    assert_eq!(
        errors_of(config),
        [
            "resources[0].spec.http[0].fault: fault cannot be combined with redirect or directResponse",
            "resources[0].spec.http[0].rewrite: rewrite cannot be combined with redirect or directResponse",
        ]
    );
}

#[test]
fn retry_settings_without_attempts_are_refused() {
    let config = json!({"resources": [vs(json!([{"route": route_to("a"),
        "retries": {"attempts": 0, "retryOn": "5xx"}}]))]});
    assert_refused(
        config,
        "resources[0].spec.http[0].retries: retryOn and perTryTimeout need attempts > 0 (attempts: 0 disables retries)",
    );
    let negative =
        json!({"resources": [vs(json!([{"route": route_to("a"), "retries": {"attempts": -1}}]))]});
    assert_refused(
        negative,
        "resources[0].spec.http[0].retries.attempts: -1 is not in 0..=2147483647",
    );
}

#[test]
fn cluster_name_renders_what_compiled_routes_pick() {
    let template = "outbound|{port}|{subset}|{host}";
    let config = json!({"resources": [vs(json!([{"route": [
        {"destination": {"host": "demoapp", "subset": "v1", "port": {"number": 8080}}, "weight": 1},
        {"destination": {"host": "other.example"}, "weight": 1}]}]))],
        "routing": {"clusterName": template}});
    let loaded = load(config.to_string().as_bytes(), &Anonymous).unwrap();
    let crate::rules::Action::Forward(split) = &loaded.rules.routes[0].action else {
        panic!("a forward route");
    };
    let picked: Vec<String> = split
        .destinations
        .iter()
        .map(|d| d.cluster.to_string())
        .collect();
    assert_eq!(
        picked,
        [
            cluster_name(template, "demoapp.app.svc.cluster.local", "v1", "8080"),
            cluster_name(template, "other.example", "", ""),
        ]
    );
}

#[test]
fn cluster_name_fills_every_placeholder_and_keeps_other_braces() {
    assert_eq!(
        cluster_name("{host}/{x}/{subset}{port}|{host}{", "h", "s", "80"),
        "h/{x}/s80|h{"
    );
    assert_eq!(
        cluster_name("outbound|{port}||{host}", "h", "", ""),
        "outbound|||h"
    );
}

fn refusals(json: &[u8]) -> Vec<String> {
    match load(json, &Anonymous) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn policy(action_members: &str) -> String {
    format!(
        r#"{{"resources": [{{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {{"name": "p", "namespace": "app"}},
            "spec": {{{action_members}, "rules": [{{"to": [{{"operation": {{"paths": ["/admin"]}}}}]}}]}}}}]}}"#
    )
}

#[test]
fn a_duplicate_key_is_refused_so_a_deny_cannot_become_an_allow() {
    let errors = refusals(policy(r#""action": "DENY", "action": "ALLOW""#).as_bytes());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(r#"resources[0].spec.action: duplicate key "action" at line 3"#),
        "{errors:?}"
    );
    // The same policy with one action loads.
    assert_eq!(
        refusals(policy(r#""action": "DENY""#).as_bytes()),
        Vec::<String>::new()
    );
}

#[test]
fn an_empty_configuration_is_refused_naming_the_empty_one() {
    for empty in [&b""[..], b"  \n"] {
        assert_eq!(
            refusals(empty),
            [
                r#"$: the configuration is empty; give {"resources": []} to run the filter with no rules"#
            ]
        );
    }
}

#[test]
fn a_configuration_without_resources_is_refused() {
    assert_eq!(
        refusals(b"{}"),
        [r#"resources: is missing; give {"resources": []} to run the filter with no rules"#]
    );
    let errors = refusals(br#"{"routing": {"clusterHeader": "x-c"}}"#);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn no_resources_loads_with_a_warning_that_every_request_passes() {
    let loaded = load(br#"{"resources": []}"#, &Anonymous).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["resources: no resources: every request passes untouched"]
    );
}

fn regex_route(regex: &str) -> Value {
    json!([{"match": [{"uri": {"regex": regex}}], "route": route_to("demoapp")}])
}

#[test]
fn a_regex_over_1000_repetitions_is_refused_as_re2_does() {
    let errors = errors_of(json!({"resources": [vs(regex_route("a{300000}x"))]}));
    assert_eq!(
        errors,
        [
            r#"resources[0].spec.http[0].match[0].uri.regex: bad regex "a{300000}x": repetition count 300000 is over the limit of 1000 (RE2's)"#
        ]
    );
    assert!(errors_of(json!({"resources": [vs(regex_route("a{2,1001}"))]}))[0].contains("1001"));
    for fine in [
        "a{1000}",
        r"\{99999\}",
        "[{]99999}",
        r"\x{10FFFF}",
        "a{1000,}",
    ] {
        assert_eq!(
            errors_of(json!({"resources": [vs(regex_route(fine))]})),
            Vec::<String>::new(),
            "{fine}"
        );
    }
}

#[test]
fn a_regex_longer_than_istiods_1024_bytes_is_refused() {
    let long = "a".repeat(1025);
    let errors = errors_of(json!({"resources": [vs(regex_route(&long))]}));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].ends_with(": 1025 bytes, over the limit of 1024 (istiod's)"),
        "{errors:?}"
    );
    assert_eq!(
        errors_of(json!({"resources": [vs(regex_route(&long[1..]))]})),
        Vec::<String>::new()
    );
}

#[test]
fn a_regex_compiling_over_1_mib_is_refused_naming_the_limit() {
    // 32 x 1000 states is about RE2's 32768 program size: in; a few more is over.
    assert_eq!(
        errors_of(json!({"resources": [vs(regex_route("(?:a{1000}){31}"))]})),
        Vec::<String>::new()
    );
    let errors = errors_of(json!({"resources": [vs(regex_route("(?:[a-z]{1000}){40}"))]}));
    assert!(
        errors[0].ends_with(
            "compiles to over 1 MiB (about RE2's program size 32768, istiod's limit in Envoy)"
        ),
        "{errors:?}"
    );
}

#[test]
fn the_routes_regexes_together_are_bounded() {
    // Each about 1 MiB: 64 fit in the 64 MiB, the next ones are refused.
    let routes: Vec<Value> = (0..70)
        .map(|i| json!({"match": [{"uri": {"regex": format!("/{i}(?:a{{1000}}){{31}}")}}], "route": route_to("demoapp")}))
        .collect();
    let errors = errors_of(json!({"resources": [vs(Value::Array(routes))]}));
    assert_eq!(errors.len(), 6, "{errors:?}");
    assert!(
        errors[0].starts_with("resources[0].spec.http[64].match[0].uri.regex: "),
        "{errors:?}"
    );
    assert!(
        errors[0].ends_with("the routes' regexes together compile to over 64 MiB"),
        "{errors:?}"
    );
}

fn many(kind: &str, n: usize) -> Value {
    let item = |i: usize| match kind {
        "vs" => json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": format!("vs{i}"), "namespace": "app"},
            "spec": {"hosts": [format!("h{i}")], "http": [{"route": route_to("demoapp")}]}}),
        _ => json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": format!("p{i}"), "namespace": "app"}, "spec": {"action": "DENY", "rules": [{}]}}),
    };
    json!({"resources": (0..n).map(item).collect::<Vec<_>>()})
}

#[test]
// Natively only: after configurations this large Node 20's V8 segfaults as the wasm test binary
// exits (the tests pass); in Envoy's V8 the same shapes load and are refused as they should
// (the VirtualService and size limits: tests/e2e/test_config_rejection.py).
#[cfg_attr(target_arch = "wasm32", ignore)]
fn virtual_services_routes_and_policies_are_bounded_per_filter() {
    assert_eq!(
        errors_of(many("vs", MAX_VIRTUAL_SERVICES)),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_of(many("vs", MAX_VIRTUAL_SERVICES + 1)),
        [format!(
            "resources: {} VirtualServices, over the limit of {MAX_VIRTUAL_SERVICES} per filter",
            MAX_VIRTUAL_SERVICES + 1
        )]
    );
    assert_eq!(errors_of(many("ap", MAX_POLICIES)), Vec::<String>::new());
    assert_eq!(
        errors_of(many("ap", MAX_POLICIES + 1)),
        [format!("resources: {} AuthorizationPolicies and RequestAuthentications, over the limit of {MAX_POLICIES} per filter", MAX_POLICIES + 1)]
    );
    let routes = vec![json!({"route": route_to("demoapp")}); MAX_ROUTES + 1];
    assert_eq!(
        errors_of(json!({"resources": [vs(Value::Array(routes))]})),
        [format!(
            "resources: {} http routes, over the limit of {MAX_ROUTES} per filter",
            MAX_ROUTES + 1
        )]
    );
}

#[test]
// Natively only: after configurations this large Node 20's V8 segfaults as the wasm test binary
// exits (the tests pass); in Envoy's V8 the same shapes load and are refused as they should
// (the VirtualService and size limits: tests/e2e/test_config_rejection.py).
#[cfg_attr(target_arch = "wasm32", ignore)]
fn routes_merged_from_delegates_count_against_the_route_limit() {
    let leaf_routes = vec![json!({"route": route_to("demoapp")}); MAX_ROUTES / 4];
    let root_routes = vec![json!({"delegate": {"name": "leaf"}}); 5];
    let config = json!({"resources": [
        vs(Value::Array(root_routes)),
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "leaf", "namespace": "app"}, "spec": {"http": leaf_routes}}]});
    let errors = errors_of(config);
    assert_eq!(
        errors,
        [format!("resources[0].spec.http[4].delegate: merging delegates makes over {MAX_ROUTES} http routes, the limit per filter")]
    );
}

#[test]
fn a_huge_refused_value_is_cut_in_its_message() {
    let huge = "x".repeat(10 << 20);
    let errors = errors_of(
        json!({"resources": [vs(json!([{"route": route_to("demoapp"), "timeout": huge}]))]}),
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].len() < 300, "{} bytes", errors[0].len());
    assert!(
        errors[0].contains("…(10485760 bytes)"),
        "{}",
        &errors[0][..200]
    );
}

/// Istio's `ValidateWildcardDomain` / `validateDestination` (pkg/config/validation).
#[test]
fn destination_hosts_are_refused_as_istio_validate_wildcard_domain_does() {
    let refused =
        |host: &str| errors_of(json!({"resources": [vs(json!([{"route": route_to(host)}]))]}));
    let label64 = "l".repeat(64);
    let long = ["a".repeat(63).as_str(); 5].join(".");
    let huge = "h".repeat(10 << 20);
    for (host, reason) in [
        ("demo\0app", "invalid (label"),
        ("*", "is not a destination host"),
        ("a.*.example.com", "invalid (label \"*\" invalid)"),
        ("foo.*", "invalid (label \"*\" invalid)"),
        (label64.as_str(), "invalid (label"),
        (long.as_str(), "too long (max 255)"),
        (huge.as_str(), "too long (max 255)"),
        (
            "bad_name.example.com",
            "invalid (label \"bad_name\" invalid)",
        ),
        ("example.123", "cannot be all-numeric"),
    ] {
        let errors = refused(host);
        assert_eq!(errors.len(), 1, "{host:?}: {errors:?}");
        assert!(
            errors[0].starts_with("resources[0].spec.http[0].route[0].destination.host: "),
            "{errors:?}"
        );
        assert!(errors[0].contains(reason), "{host:?}: {errors:?}");
        assert!(errors[0].len() < 400);
    }
    for host in [
        "demoapp",
        "Reviews.Prod.svc.cluster.local",
        "*.example.com",
        "*-x.example.com",
        "istio.io.",
        "a-b.c1",
    ] {
        assert_eq!(refused(host), Vec::<String>::new(), "{host}");
    }
}

#[test]
fn virtual_service_hosts_are_wildcard_domains_or_ip_addresses_as_in_istio() {
    let with_host = |host: &str| {
        errors_of(
            json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "v", "namespace": "app"},
            "spec": {"hosts": [host], "http": [{"route": route_to("demoapp")}]}}]}),
        )
    };
    for host in ["*", "*.example.com", "demoapp", "10.0.0.1", "::1"] {
        assert_eq!(with_host(host), Vec::<String>::new(), "{host}");
    }
    for host in ["", "a.*.com", "a..b", "x\u{0}y"] {
        let errors = with_host(host);
        assert!(
            errors.len() == 1 && errors[0].starts_with("resources[0].spec.hosts[0]: "),
            "{host:?}: {errors:?}"
        );
    }
}

/// Kubernetes' ObjectMeta validation: names are DNS-1123 subdomains, namespaces labels.
#[test]
fn metadata_names_and_namespaces_are_refused_as_kubernetes_does() {
    let with_meta = |meta: Value| {
        errors_of(
            json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": meta, "spec": {"host": "demoapp"}}]}),
        )
    };
    assert_eq!(
        with_meta(json!({"name": "reviews.v1-a", "namespace": "prod-1"})),
        Vec::<String>::new()
    );
    let errors = with_meta(json!({"name": "Reviews", "namespace": "app"}));
    assert!(
        errors[0]
            .starts_with(r#"resources[0].metadata.name: "Reviews" is not a DNS-1123 subdomain"#),
        "{errors:?}"
    );
    assert_eq!(with_meta(json!({"name": "a".repeat(254)})).len(), 1);
    let errors = with_meta(json!({"name": "r", "namespace": "a.b"}));
    assert!(
        errors[0].starts_with(r#"resources[0].metadata.namespace: "a.b" is not a DNS-1123 label"#),
        "{errors:?}"
    );
    let errors = with_meta(json!({"name": "r", "namespace": "n".repeat(64)}));
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn labels_that_are_not_a_map_of_strings_are_refused() {
    let with_labels = |labels: Value| {
        errors_of(
            json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "r", "labels": labels}, "spec": {"host": "demoapp"}}]}),
        )
    };
    assert_eq!(with_labels(json!({"app": "x"})), Vec::<String>::new());
    for bad in [json!("app=x"), json!(["app"]), json!({"app": 1})] {
        let errors = with_labels(bad.clone());
        assert!(
            errors.len() == 1 && errors[0].starts_with("resources[0].metadata.labels"),
            "{bad}: {errors:?}"
        );
    }
}

// ---- Resources without a namespace, and the warnings of `meshrules check` ----

fn loaded(config: &Value) -> Loaded {
    match load(config.to_string().as_bytes(), &Anonymous) {
        Ok(l) => l,
        Err(e) => panic!("refused: {e:?}"),
    }
}

fn warnings_of(config: &Value) -> Vec<String> {
    loaded(config)
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn clusters(l: &Loaded) -> Vec<String> {
    l.rules
        .routes
        .iter()
        .flat_map(|r| match &r.action {
            crate::rules::Action::Forward(s) => s
                .destinations
                .iter()
                .map(|d| d.cluster.to_string())
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// A VirtualService `reviews` routing to subset v1, and its DestinationRule, both without
/// `metadata.namespace`, as pasted from a tutorial.
fn pasted_reviews() -> Vec<Value> {
    vec![
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "reviews"},
               "spec": {"hosts": ["reviews"], "http": [{"route": [
                   {"destination": {"host": "reviews", "subset": "v1"}}]}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "reviews"},
               "spec": {"host": "reviews", "subsets": [{"name": "v1"}]}}),
    ]
}

#[test]
fn a_resource_without_namespace_is_in_default_as_kubectl_apply_puts_it_and_says_so() {
    let l = loaded(&json!({"resources": pasted_reviews()}));
    assert_eq!(
        clusters(&l),
        ["outbound||v1|reviews.default.svc.cluster.local"]
    );
    assert_eq!(l.rules.virtual_services[0].id, "default/reviews");
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        ["resources[0]", "resources[1]"].map(|r| format!(
            "{r}.metadata.namespace: not set: the resource is in namespace \"default\", where \
             kubectl apply puts it (a short host such as reviews is \
             reviews.default.svc.cluster.local); set it, or defaultNamespace for every resource \
             without one"
        ))
    );
}

#[test]
fn default_namespace_places_subsets_delegates_and_policies_without_a_warning() {
    let mut resources = pasted_reviews();
    // The subset check finds the DestinationRule in the same default namespace.
    resources[0]["spec"]["http"][0]["route"][0]["destination"]["subset"] = json!("v9");
    let config = json!({"defaultNamespace": "bookinfo", "resources": resources.clone()});
    assert_eq!(
        errors_of(config),
        ["resources[0].spec.http[0].route[0].destination.subset: subset \"v9\" is not defined by the DestinationRule for reviews.bookinfo.svc.cluster.local (has: v1)"]
    );
    // A delegate named without a namespace is looked up in the root's, here bookinfo.
    let root = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "root"},
        "spec": {"hosts": ["reviews"], "http": [{"delegate": {"name": "leaf"}}]}});
    let leaf = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "leaf", "namespace": "bookinfo"},
        "spec": {"http": [{"route": route_to("reviews")}]}});
    let policy = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny"}, "spec": {"action": "DENY", "rules": [{}]}});
    let l = loaded(&json!({"defaultNamespace": "bookinfo", "resources": [root, leaf, policy]}));
    assert_eq!(
        clusters(&l),
        ["outbound|||reviews.bookinfo.svc.cluster.local"]
    );
    assert_eq!(l.rules.authz.deny[0].id, "bookinfo/deny");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn an_empty_default_namespace_keeps_short_hosts_as_written() {
    let l = loaded(&json!({"defaultNamespace": "", "resources": pasted_reviews()}));
    assert_eq!(clusters(&l), ["outbound||v1|reviews"]);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn a_default_namespace_that_is_no_dns_label_is_refused() {
    assert_refused(
        json!({"defaultNamespace": "Book_Info", "resources": []}),
        "defaultNamespace: \"Book_Info\" is not a DNS-1123 label (lower-case letters, digits and '-', at most 63), nor \"\" for none",
    );
}

fn deny_when_header(values: Value) -> Value {
    json!({"resources": [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "ua", "namespace": "app"},
        "spec": {"action": "DENY", "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/*/sa/a*"], "namespaces": ["*-prod*"]}}],
            "to": [{"operation": {"paths": ["/x/*", "/{*}/a*"], "methods": ["G*T"]}}],
            "when": [{"key": "request.headers[user-agent]", "values": values},
                     {"key": "source.ip", "values": ["10.0.0.0/8"]}]}]}}]})
}

/// istiod's StringMatcherWithPrefix: only a leading or trailing `*` is a wildcard.
#[test]
fn an_authz_value_with_an_inner_or_second_star_warns_with_what_istio_matches() {
    let w = warnings_of(&deny_when_header(json!([
        "*Mozilla*",
        "*Mozilla",
        "curl*",
        "*"
    ])));
    assert_eq!(
        w,
        [
            "resources[0].spec.rules[0].from[0].source.principals[0]: Istio reads `*` only as the whole value or its first or last character: \"cluster.local/ns/*/sa/a*\" matches values starting with \"cluster.local/ns/*/sa/a\", with a literal `*`. AuthorizationPolicy has no contains or glob match: list prefix (x*) or suffix (*x) values",
            "resources[0].spec.rules[0].to[0].operation.methods[0]: Istio reads `*` only as the whole value or its first or last character: \"G*T\" matches only the value \"G*T\", with a literal `*`. AuthorizationPolicy has no contains or glob match: list prefix (x*) or suffix (*x) values, or match \"G.*T\" as a regex in a VirtualService route",
            "resources[0].spec.rules[0].when[0].values[0]: Istio reads `*` only as the whole value or its first or last character: \"*Mozilla*\" matches values ending in \"Mozilla*\", with a literal `*`. AuthorizationPolicy has no contains or glob match: list prefix (x*) or suffix (*x) values, or match \".*Mozilla.*\" as a regex in a VirtualService route",
        ]
    );
}

fn vs_routes(http: Value) -> Vec<String> {
    warnings_of(&json!({"resources": [vs(http)]}))
}

fn routed(m: Value) -> Value {
    json!({"match": m, "route": route_to("demoapp")})
}

/// istiod's analyzeUnreachableHTTPRules: "route without matches defined before" and "all
/// matches used by prior rules"; a `prefix: "/"` uri is as wide as no match.
#[test]
fn a_route_after_a_catch_all_or_a_wider_route_warns_that_it_never_matches() {
    let catch_all = |first: Value| {
        vs_routes(json!([
            first,
            routed(json!([{"headers": {"x-canary": {"exact": "true"}}}]))
        ]))
    };
    let expected = "resources[0].spec.http[1]: never matches: http[0] before it matches every request (it has no match, or only uri prefix \"/\"); Istio warns \"route without matches defined before\". Put the catch-all route last";
    assert_eq!(catch_all(json!({"route": route_to("demoapp")})), [expected]);
    assert_eq!(
        catch_all(routed(json!([{"uri": {"prefix": "/"}}]))),
        [expected]
    );
    assert_eq!(catch_all(routed(json!([{}]))), [expected]);

    let covered = vs_routes(json!([
        {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": route_to("demoapp")},
        routed(json!([{"uri": {"exact": "/api"}}, {"uri": {"prefix": "/api/v1"}, "headers": {"x": {"exact": "1"}}}])),
        routed(json!([{"uri": {"prefix": "/api"}, "method": {"exact": "GET"}}])),
    ]));
    assert_eq!(
        covered,
        [1, 2].map(|n| format!("resources[0].spec.http[{n}]: never matches: http[0] (\"api\") before it matches every request this route matches (the same or wider match blocks); Istio warns \"all matches used by prior rules\". Put the narrower route first"))
    );
}

#[test]
fn routes_an_earlier_route_may_not_cover_do_not_warn() {
    for (first, later) in [
        // narrower first, wider later: the usual order
        (
            json!([{"uri": {"prefix": "/api/v1"}}]),
            json!([{"uri": {"prefix": "/api"}}]),
        ),
        (
            json!([{"headers": {"x": {"exact": "1"}}}]),
            json!([{"headers": {"x": {"exact": "2"}}}]),
        ),
        // one of the later route's blocks is not covered
        (
            json!([{"uri": {"prefix": "/a"}}]),
            json!([{"uri": {"prefix": "/a"}}, {"uri": {"prefix": "/b"}}]),
        ),
        // a regex is never reasoned about, only compared
        (
            json!([{"uri": {"regex": "/a.*"}}]),
            json!([{"uri": {"prefix": "/a"}}]),
        ),
        // case-insensitive later route matches /API, which the first does not
        (
            json!([{"uri": {"prefix": "/a"}}]),
            json!([{"uri": {"prefix": "/a"}, "ignoreUriCase": true}]),
        ),
        (
            json!([{"withoutHeaders": {"x": {"exact": "1"}}}]),
            json!([{"withoutHeaders": {"x": {"prefix": "1"}}}]),
        ),
        (json!([{"port": 8080}]), json!([{"uri": {"prefix": "/a"}}])),
    ] {
        assert_eq!(
            vs_routes(json!([routed(first.clone()), routed(later.clone())])),
            Vec::<String>::new(),
            "{first} then {later}"
        );
    }
}

#[test]
fn a_delegating_route_does_not_hide_later_routes() {
    // A request none of the delegate's routes matches goes on to the next root route.
    let leaf = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "leaf", "namespace": "app"},
        "spec": {"http": [routed(json!([{"uri": {"prefix": "/a"}}]))]}});
    let root = vs(json!([{"delegate": {"name": "leaf"}}, {"route": route_to("demoapp")}]));
    assert_eq!(
        warnings_of(&json!({"resources": [root, leaf]})),
        Vec::<String>::new()
    );
}

#[test]
fn two_virtual_services_for_one_host_warn_once_naming_both() {
    let second = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "demoapp-v2", "namespace": "app"},
        "spec": {"hosts": ["demoapp.app.svc.cluster.local"], "http": [{"route": route_to("demoapp")}]}});
    let first = vs(json!([{"route": route_to("demoapp")}]));
    assert_eq!(
        warnings_of(&json!({"resources": [first, second]})),
        ["resources[1].spec.hosts[0]: VirtualService app/demoapp, listed first, already serves demoapp.app.svc.cluster.local, demoapp, demoapp.app, demoapp.app.svc: requests for it never reach VirtualService app/demoapp-v2 (istiod too uses one VirtualService per host on a sidecar); merge the two"]
    );
}

/// Istio accepts it (istioctl analyze: IST0101); the route 503s as istiod makes no cluster.
#[test]
fn a_subset_of_a_host_without_destination_rule_loads_with_a_warning() {
    let config = json!({"resources": [vs(json!([{"route": [{"destination": {"host": "demoapp", "subset": "v1"}}]}]))]});
    let l = loaded(&config);
    assert_eq!(clusters(&l), ["outbound||v1|demoapp.app.svc.cluster.local"]);
    assert_eq!(
        warnings_of(&config),
        ["resources[0].spec.http[0].route[0].destination.subset: no DestinationRule for demoapp.app.svc.cluster.local in the configuration defines subset \"v1\": Istio accepts the route, but istiod creates cluster outbound||v1|demoapp.app.svc.cluster.local only for a subset a DestinationRule defines, so requests here get 503 until one is applied (a plain Envoy needs that cluster in its config)"]
    );
}

#[test]
fn fields_the_filter_ignores_warn_naming_their_path() {
    let dr = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "d", "namespace": "app"},
        "spec": {"host": "demoapp", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}},
                 "subsets": [{"name": "v1", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}], "exportTo": ["."],
                 "workloadSelector": {"matchLabels": {"app": "x"}}}});
    let mut v = vs(
        json!([{"match": [{"uri": {"prefix": "/a"}, "statPrefix": "a"}],
        "route": route_to("demoapp"), "retries": {"attempts": 2, "retryIgnorePreviousHosts": true}}]),
    );
    v["spec"]["tcp"] = json!([{"route": [{"destination": {"host": "demoapp"}}]}]);
    v["spec"]["tls"] = json!([{"match": [{"sniHosts": ["demoapp"]}]}]);
    v["spec"]["exportTo"] = json!(["*"]);
    let paths: Vec<String> = warnings_of(&json!({"resources": [dr, v]}))
        .iter()
        .map(|w| w.split(": ").next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "resources[0].spec.trafficPolicy",
            "resources[0].spec.subsets[0].trafficPolicy",
            "resources[0].spec.workloadSelector",
            "resources[0].spec.exportTo",
            "resources[1].spec.tcp",
            "resources[1].spec.tls",
            "resources[1].spec.http[0].match[0].statPrefix",
            "resources[1].spec.http[0].retries.retryIgnorePreviousHosts",
        ]
    );
}

// ---- security.signatureVerifier ----

#[test]
fn signature_verifier_is_envoy_unless_wasm_is_asked_for() {
    use crate::authn::Verifier;
    let with = |security: Value| loaded(&json!({"resources": [], "security": security}));
    let verifier = |security| with(security).rules.authn.signature_verifier;
    assert_eq!(verifier(json!({})), Verifier::Envoy);
    assert_eq!(
        verifier(json!({"signatureVerifier": "envoy"})),
        Verifier::Envoy
    );
    assert_eq!(
        verifier(json!({"signatureVerifier": "wasm"})),
        Verifier::Wasm
    );
    assert_refused(
        json!({"resources": [], "security": {"signatureVerifier": "boringssl"}}),
        r#"security.signatureVerifier: "boringssl" is not one of "envoy", "wasm""#,
    );
}
