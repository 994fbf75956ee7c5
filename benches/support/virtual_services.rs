//! The generated VirtualServices the decision benchmark and `examples/load_profile.rs` use:
//! `hosts` VirtualServices `svc<h>` of `routes` routes each. Each route matches a path prefix
//! and a header and splits 90/10 between subsets v1 and v2, with a timeout and a 0% delay.

use serde_json::{json, Value};

pub fn virtual_services(hosts: usize, routes: usize) -> Vec<Value> {
    (0..hosts)
        .map(|h| {
            let http: Vec<_> = (0..routes)
                .map(|r| {
                    json!({"name": format!("r{r}"),
                        "match": [{"uri": {"prefix": format!("/r{r}/")}, "headers": {"x-tier": {"exact": "gold"}}}],
                        "route": [
                            {"destination": {"host": format!("svc{h}"), "subset": "v1", "port": {"number": 8080}}, "weight": 90},
                            {"destination": {"host": format!("svc{h}"), "subset": "v2", "port": {"number": 8080}}, "weight": 10}],
                        "timeout": "5s",
                        "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 0}}}})
                })
                .collect();
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": format!("svc{h}"), "namespace": "bench"},
                "spec": {"hosts": [format!("svc{h}")], "http": http}})
        })
        .collect()
}

/// The DestinationRules that define the subsets the routes of [`virtual_services`] name.
pub fn destination_rules(hosts: usize) -> Vec<Value> {
    (0..hosts)
        .map(|h| {
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": format!("svc{h}"), "namespace": "bench"},
                "spec": {"host": format!("svc{h}"), "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}})
        })
        .collect()
}
