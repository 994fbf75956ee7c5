//! Arbitrary bytes as the filter's pluginConfig: what `on_configure` does with them
//! (`compile::load`), for a plain Envoy and for an Istio sidecar. A configuration that loads is
//! then asked a few requests, so compiled tables nobody wrote by hand are used once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrules::compile::{self, Anonymous, Identity, ProxyKind};
use meshrules::engine::{Decision, Outcome};
use meshrules::http::Request;

/// A sidecar in namespace `app` labelled `app=demoapp` (node metadata the host would read).
struct Sidecar;

impl Identity for Sidecar {
    fn known(&self) -> bool {
        true
    }
    fn namespace(&self) -> Option<String> {
        Some("app".into())
    }
    fn label(&self, key: &str) -> Option<String> {
        (key == "app").then(|| "demoapp".into())
    }
    fn kind(&self) -> ProxyKind {
        ProxyKind::Sidecar
    }
}

const REQUESTS: &[(&str, &str, &str)] = &[
    ("GET", "demoapp", "/"),
    (
        "GET",
        "demoapp.app.svc.cluster.local:8080",
        "/api/v1/items?x=1&y",
    ),
    ("OPTIONS", "a.example.com", "/a/b/c"),
    ("POST", "demoapp.app", "/%61/../b//c;x?q#f"),
];

fn exercise(rules: &meshrules::rules::RuleSet) {
    let mut rng = fastrand::Rng::with_seed(1);
    for (method, authority, path) in REQUESTS {
        let headers: Vec<(String, String)> = [
            (":method", *method),
            (":scheme", "http"),
            (":authority", *authority),
            (":path", *path),
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
            ("x-user", "alice"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let req = Request::from_headers(&headers);
        if let Decision::Act(v) = rules.decide(&req, &mut rng) {
            if let Outcome::Forward(f) = v.outcome {
                let _ = rules.request_edits(&f, req.path, |_| Ok::<(), ()>(()));
                let _ = rules.response_edits(&f, |_| Ok::<(), ()>(()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for identity in [&Anonymous as &dyn Identity, &Sidecar] {
        match compile::load(data, identity) {
            Ok(loaded) => exercise(&loaded.rules),
            // Every refusal names where the problem is.
            Err(errors) => assert!(!errors.is_empty()),
        }
    }
});
