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
        .starts_with("$: configuration is not valid JSON"));
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
    let picked: Vec<&str> = split
        .destinations
        .iter()
        .map(|d| d.cluster.as_str())
        .collect();
    assert_eq!(
        picked,
        [
            cluster_name(template, "demoapp.app.svc.cluster.local", "v1", "8080"),
            cluster_name(template, "other.example", "", ""),
        ]
    );
}
