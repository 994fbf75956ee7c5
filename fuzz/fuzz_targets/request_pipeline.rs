//! Arbitrary request headers through the whole per-request decision (`pipeline::run`, what
//! the filter and `explain` run), over one rule set compiled once
//! (`fixtures/request_pipeline.json`: VirtualService matches, rewrites, faults, splits, CORS,
//! redirects, AuthorizationPolicies and a RequestAuthentication with inline JWKS).
//!
//! Input: byte 0 picks `security.escapedSlashes`, byte 1 the clock; the rest, split on NUL,
//! is header name, value, name, value, ... (any bytes, read lossily as UTF-8 as the host reads
//! them). Names starting with `@` give the connection facts the host reads from properties:
//! `@source` and `@destination` (`ip:port` or `ip`), `@sni`, `@peer`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshrules::authn::KeyState;
use meshrules::authz::path;
use meshrules::compile::{self, Anonymous};
use meshrules::http::{Edit, Request};
use meshrules::pipeline::{self, Address, Connection, Env, Event, Outcome, PeerCertificate};
use meshrules::ratelimit::LocalBuckets;
use meshrules::rules::RuleSet;

const FIXTURE: &str = include_str!("../fixtures/request_pipeline.json");
const MODES: [&str; 3] = ["REJECT", "KEEP", "UNESCAPE"];
/// Before, within and after the fixture tokens' lifetimes.
const NOWS: [u64; 4] = [1, 1_700_000_000, 4_102_444_800 + 30, 4_102_444_800 + 3600];

thread_local! {
    static RULES: Vec<RuleSet> = MODES
        .iter()
        .map(|mode| {
            let mut config: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
            config["security"]["escapedSlashes"] = (*mode).into();
            let loaded = compile::load(config.to_string().as_bytes(), &Anonymous)
                .unwrap_or_else(|e| panic!("fixture refused: {e:?}"));
            loaded.rules
        })
        .collect();
}

/// The connection facts the input gives, as the host reads them from Envoy's attributes.
#[derive(Default)]
struct Attributes {
    source: Option<String>,
    destination: Option<String>,
    sni: Option<String>,
    peer: Option<String>,
}

impl Connection for Attributes {
    fn source_address(&self) -> Option<String> {
        self.source.clone()
    }
    fn destination_address(&self) -> Option<Address> {
        self.destination.as_deref().map(Address::parse)
    }
    fn requested_server_name(&self) -> Option<String> {
        self.sni.clone()
    }
    fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.peer.clone().map(PeerCertificate::UrlEncodedPem)
    }
}

fn no_remote_keys(_: usize) -> KeyState<'static> {
    // The fixture's keys are all inline.
    panic!("asked for a remote JWKS")
}

fn run<'r>(
    rules: &'r RuleSet,
    headers: &[(String, String)],
    conn: &Attributes,
    cache: &mut meshrules::jwt::TokenCache,
    now: u64,
    seed: u64,
) -> pipeline::Plan<'r> {
    pipeline::run(
        rules,
        headers.to_vec(),
        Env {
            connection: conn,
            now_ms: now * 1000,
            keys: &no_remote_keys,
            token_cache: cache,
            // The filter's own verifiers: what a VM without Envoy's verify_signature runs.
            signatures: &meshrules::jwt::InModule,
            rng: &mut fastrand::Rng::with_seed(seed),
            buckets: &mut LocalBuckets::default(),
        },
    )
}

fn check(rules: &RuleSet, headers: &[(String, String)], conn: &Attributes, now: u64, seed: u64) {
    let mut cache = rules.authn.new_cache();
    let plan = run(rules, headers, conn, &mut cache, now, seed);
    // A repeated token comes from the cache: it must be judged the same.
    let again = run(rules, headers, conn, &mut cache, now, seed);
    assert_eq!(
        format!("{:?}", plan.outcome),
        format!("{:?}", again.outcome)
    );
    for event in &plan.events {
        assert!(!plan.describe(event).is_empty());
        if let Event::Routed { route, .. } = event {
            // Authorization saw, and routing gets, the normalized path: what reaches the
            // router is already normal.
            let req = plan.request();
            let n = path::normalize(req.path, rules.authz.escaped_slashes).unwrap();
            assert!(
                !n.changed(),
                "{:?} routed unnormalized ({route:?})",
                req.path
            );
        }
    }
    // The fixture's DENY on /admin and /admin/* holds for every spelling that normalizes to
    // them (`/a/../admin`, `//admin`, `/%61dmin`, ...).
    let raw = Request::from_headers(headers);
    if let Ok(n) = path::normalize(raw.path, rules.authz.escaped_slashes) {
        let admin = n.path == "/admin" || n.path.starts_with("/admin/");
        let denied = plan
            .events
            .iter()
            .any(|e| matches!(e, Event::DeniedBy("app/deny-admin", 0)));
        let refused_earlier = plan
            .events
            .iter()
            .any(|e| matches!(e, Event::JwtRejected(_)));
        if admin && !refused_earlier {
            assert!(denied, "{:?} -> {:?}: {:?}", raw.path, n.path, plan.events);
        }
    }
    match &plan.outcome {
        Outcome::Reply { reply, .. } => assert!((200..600).contains(&reply.status), "{reply:?}"),
        Outcome::Forward { forward, .. } => {
            let mut last = None;
            plan.request_edits(|e| {
                last = Some(e.to_string());
                Ok::<(), ()>(())
            })
            .unwrap();
            // The cluster header is set last, so no edit overrides the filter's choice.
            let cluster = Edit::Set(&rules.cluster_header, "").to_string();
            assert!(
                last.is_some_and(|l| l.starts_with(&cluster)),
                "{:?}",
                plan.events
            );
            rules.response_edits(forward, |_| Ok::<(), ()>(())).unwrap();
        }
        Outcome::Pass => {}
        Outcome::WaitForKeys(i) => panic!("keys {i} are inline"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, clock, rest @ ..] = data else {
        return;
    };
    let mut headers = Vec::new();
    let mut conn = Attributes::default();
    let mut fields = rest.split(|&b| b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        match name.as_str() {
            "@source" => conn.source = Some(value),
            "@destination" => conn.destination = Some(value),
            "@sni" => conn.sni = Some(value),
            "@peer" => conn.peer = Some(value),
            _ => headers.push((name, value)),
        }
    }
    let now = NOWS[usize::from(*clock) % NOWS.len()];
    let seed = u64::from(*clock) << 8 | u64::from(*mode);
    RULES.with(|rules| {
        let rules = &rules[usize::from(*mode) % rules.len()];
        check(rules, &headers, &conn, now, seed);
    });
});
