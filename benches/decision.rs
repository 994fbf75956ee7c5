//! The core's per-request decision, natively: how its cost grows with routes and hosts.
//! `make bench` reads Criterion's estimates from target/criterion/decision/.

// A benchmark that cannot build its rules must stop loudly.
#![allow(clippy::panic)]

#[cfg(not(target_arch = "wasm32"))]
#[path = "support/virtual_services.rs"]
mod virtual_services;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use criterion::{black_box, criterion_group, BenchmarkId, Criterion};
    use meshrules::authz::{Facts, Peer, Verdict};
    use meshrules::compile::{load, Anonymous};
    use meshrules::engine::Decision;
    use meshrules::http::Request;
    use meshrules::rules::RuleSet;
    use serde_json::json;

    /// `routes` routes spread over `hosts` VirtualServices. Each route matches a path prefix
    /// and a header, so a request for the last route of a host is tried against all of them.
    pub fn rule_set(routes: usize, hosts: usize) -> RuleSet {
        use super::virtual_services::{destination_rules, virtual_services};
        let mut resources = virtual_services(hosts, routes / hosts);
        resources.extend(destination_rules(hosts));
        let config = json!({ "resources": resources });
        match load(config.to_string().as_bytes(), &Anonymous) {
            Ok(l) => l.rules,
            Err(e) => panic!("bench config refused: {e:?}"),
        }
    }

    pub fn headers(host: &str, path: &str) -> Vec<(String, String)> {
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", host),
            (":path", path),
            ("user-agent", "wrk"),
            ("accept", "*/*"),
            ("x-tier", "gold"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn decision(c: &mut Criterion) {
        let mut group = c.benchmark_group("decision");
        for (routes, hosts) in [
            (10, 1),
            (10, 10),
            (100, 1),
            (100, 10),
            (100, 100),
            (1000, 1),
            (1000, 10),
            (1000, 100),
        ] {
            let rules = rule_set(routes, hosts);
            let per_host = routes / hosts;
            // Worst case: the last route of the last host.
            let h = headers(
                &format!("svc{}", hosts - 1),
                &format!("/r{}/item", per_host - 1),
            );
            let mut rng = fastrand::Rng::with_seed(1);
            group.bench_with_input(
                BenchmarkId::new("last_route", format!("{routes}routes_{hosts}hosts")),
                &h,
                |b, h| {
                    b.iter(|| {
                        let req = Request::from_headers(black_box(h));
                        match rules.decide(&req, &mut rng) {
                            Decision::Act(v) => black_box(v),
                            Decision::Pass => panic!("no virtual service matched"),
                        }
                    })
                },
            );
        }
        group.finish();
    }

    /// `policies` DENY policies of 10 rules, each rule on its own exact path, and one request
    /// on a path none of them names: authorization's cost for policies that cannot match.
    pub fn authz_set(policies: usize) -> RuleSet {
        let resources: Vec<_> = (0..policies)
            .map(|p| {
                let rules: Vec<_> = (0..10)
                    .map(|r| json!({"to": [{"operation": {"paths": [format!("/p{p}/r{r}")], "methods": ["POST"]}}]}))
                    .collect();
                json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                    "metadata": {"name": format!("deny-{p}"), "namespace": "bench"},
                    "spec": {"action": "DENY", "rules": rules}})
            })
            .collect();
        match load(
            json!({ "resources": resources }).to_string().as_bytes(),
            &Anonymous,
        ) {
            Ok(l) => l.rules,
            Err(e) => panic!("bench config refused: {e:?}"),
        }
    }

    fn authz(c: &mut Criterion) {
        let mut group = c.benchmark_group("decision");
        let h = headers("svc0", "/other/path");
        for policies in [1, 10, 100, 1000] {
            let rules = authz_set(policies);
            group.bench_with_input(
                BenchmarkId::new("authz_no_match", format!("{policies}policies")),
                &h,
                |b, h| {
                    b.iter(|| {
                        let req = Request::from_headers(black_box(h));
                        let facts = Facts {
                            req: &req,
                            path: req.path_only(),
                            source_ip: Peer::None,
                            remote_ip: None,
                            destination_ip: None,
                            destination_port: None,
                            sni: None,
                            peer_names: &[],
                            jwt: None,
                        };
                        black_box(rules.authz.evaluate(&facts).verdict == Verdict::Allow)
                    })
                },
            );
        }
        group.finish();
    }

    criterion_group!(benches, decision, authz);
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(native::benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
