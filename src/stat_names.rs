//! The names of the filter's per-route metrics. Envoy stat names are dot-separated; the labels
//! ride in them as `.label.value` segments that the `stats_tags` of `envoy/envoy.yaml` turn
//! into Prometheus labels, e.g. `meshrules_responses.namespace.app.virtual_service.demoapp.
//! route.split.subset.v2.cluster.outbound|8080|v2|demoapp_app_svc_cluster_local.code.503.
//! code_class.5xx` becomes `meshrules_responses{namespace="app",...,code="503",code_class="5xx"}`.

use crate::rules::{Action, RuleSet, WeightedDestination};

/// What a label value says when there is nothing to say: a cluster name that is not Istio's
/// `outbound|port|subset|host`, or one without a subset.
pub const NONE: &str = "none";

/// A dot inside a Kubernetes, route or cluster name would split a label: it becomes `_`.
pub fn segment(s: &str) -> String {
    s.replace('.', "_")
}

/// `namespace.<ns>.virtual_service.<name>` of a VirtualService id (`ns/name`).
pub fn virtual_service(id: &str) -> String {
    let (ns, name) = id.split_once('/').unwrap_or(("", id));
    format!(
        "namespace.{}.virtual_service.{}",
        segment(ns),
        segment(name)
    )
}

/// `namespace.<ns>.virtual_service.<vs>.route.<route>` of a route.
pub fn route(rules: &RuleSet, route: usize) -> Option<String> {
    let r = rules.routes.get(route)?;
    let vs = &rules.virtual_services.get(r.virtual_service)?.id;
    Some(format!(
        "{}.route.{}",
        virtual_service(vs),
        segment(&r.name)
    ))
}

/// The subset of an Istio cluster name (`outbound|8080|v2|reviews.ns.svc.cluster.local`).
pub fn subset(cluster: &str) -> &str {
    let mut parts = cluster.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(subset), Some(_)) if !subset.is_empty() => subset,
        _ => NONE,
    }
}

/// `<route labels>.subset.<s>.cluster.<c>` of each destination of a route's split, in split
/// order (empty for a redirect or direct response). A cluster named per request (by the
/// listener port) is labelled with `<port>` in place of the port.
pub fn destinations(rules: &RuleSet, route: usize) -> Vec<String> {
    let (Some(labels), Some(r)) = (self::route(rules, route), rules.routes.get(route)) else {
        return Vec::new();
    };
    let Action::Forward(split) = &r.action else {
        return Vec::new();
    };
    split
        .destinations
        .iter()
        .map(|d: &WeightedDestination| {
            let cluster = d.cluster.to_string();
            format!(
                "{labels}.subset.{}.cluster.{}",
                segment(subset(&cluster)),
                segment(&cluster)
            )
        })
        .collect()
}

/// `.code.<nnn>.code_class.<n>xx` of a response status.
pub fn code(status: u32) -> String {
    format!("code.{status}.code_class.{}xx", status / 100)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::compile::{load, Anonymous};

    fn rules(http: serde_json::Value) -> RuleSet {
        let config = json!({"resources": [{"apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService", "metadata": {"name": "demo.app", "namespace": "app"},
            "spec": {"hosts": ["demoapp"], "http": http}}]});
        match load(config.to_string().as_bytes(), &Anonymous) {
            Ok(l) => l.rules,
            Err(e) => panic!("config refused: {e:?}"),
        }
    }

    #[test]
    fn each_destination_of_a_split_is_labelled_with_its_subset_and_cluster() {
        let r = rules(json!([
            {"name": "split", "route": [
                {"destination": {"host": "demoapp", "subset": "v1", "port": {"number": 8080}}, "weight": 90},
                {"destination": {"host": "demoapp", "port": {"number": 8080}}, "weight": 10}]},
        ]));
        assert_eq!(
            destinations(&r, 0),
            [
                "namespace.app.virtual_service.demo_app.route.split.subset.v1\
                 .cluster.outbound|8080|v1|demoapp_app_svc_cluster_local",
                "namespace.app.virtual_service.demo_app.route.split.subset.none\
                 .cluster.outbound|8080||demoapp_app_svc_cluster_local",
            ]
        );
    }

    #[test]
    fn a_route_that_forwards_nowhere_has_no_destinations() {
        let r = rules(json!([
            {"name": "moved", "redirect": {"uri": "/new"}},
        ]));
        assert!(destinations(&r, 0).is_empty());
        assert!(destinations(&r, 7).is_empty());
    }

    #[test]
    fn subset_is_the_third_field_of_an_istio_cluster_name() {
        assert_eq!(
            subset("outbound|8080|v2|reviews.app.svc.cluster.local"),
            "v2"
        );
        assert_eq!(subset("outbound|8080||reviews.app.svc.cluster.local"), NONE);
        assert_eq!(subset("passthrough"), NONE);
        assert_eq!(subset("a|b|c"), NONE);
    }

    #[test]
    fn dots_in_names_become_underscores_so_labels_stay_whole() {
        assert_eq!(
            virtual_service("app/reviews.main"),
            "namespace.app.virtual_service.reviews_main"
        );
    }

    #[test]
    fn code_carries_its_class() {
        assert_eq!(code(503), "code.503.code_class.5xx");
        assert_eq!(code(200), "code.200.code_class.2xx");
    }
}
