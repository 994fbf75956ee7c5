//! Arbitrary request headers through the whole per-request decision, in the order
//! `src/host/http.rs::process` runs it, over one rule set compiled once
//! (`fixtures/request_pipeline.json`: VirtualService matches, rewrites, faults, splits, CORS,
//! redirects, AuthorizationPolicies and a RequestAuthentication with inline JWKS).
//!
//! Input: byte 0 picks `security.escapedSlashes`, byte 1 the clock; the rest, split on NUL,
//! is header name, value, name, value, ... (any bytes, read lossily as UTF-8 as the host reads
//! them). Names starting with `@` give the connection facts the host reads from properties:
//! `@source` and `@destination` (`ip:port` or `ip`), `@sni`, `@peer`.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use meshrules::authn::{self, KeyState};
use meshrules::authz::{path, Facts, JwtFacts, Verdict};
use meshrules::compile::{self, Anonymous};
use meshrules::engine::{Decision, Edit, LocalReply, Outcome, Request};
use meshrules::jwt::Verified;
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

#[derive(Default)]
struct Connection {
    source: Option<String>,
    destination: Option<String>,
    sni: Option<String>,
    peer: Option<String>,
}

/// `ip:port` or a bare IP, as the host reads Envoy's address attributes.
fn address(text: Option<&str>) -> (Option<IpAddr>, Option<u16>) {
    let Some(text) = text else {
        return (None, None);
    };
    match text.parse::<SocketAddr>() {
        Ok(sa) => (Some(sa.ip()), Some(sa.port())),
        Err(_) => (text.parse().ok(), None),
    }
}

fn no_remote_keys(_: usize) -> KeyState<'static> {
    // The fixture's keys are all inline.
    panic!("asked for a remote JWKS")
}

/// How an authentication outcome compares across two runs (the second one from the cache).
fn outcome_key(o: &authn::Outcome) -> String {
    match o {
        authn::Outcome::Verified {
            token,
            provider,
            location,
        } => format!("verified {provider} {location} {token:?}"),
        other => format!("{other:?}"),
    }
}

fn check_reply(r: &LocalReply) {
    assert!((200..600).contains(&r.status), "{r:?}");
}

fn pipeline(rules: &RuleSet, headers: &[(String, String)], conn: &Connection, now: u64, seed: u64) {
    let mut req = Request::from_headers(headers);

    let mut jwt: Option<Rc<Verified>> = None;
    let authn_path;
    if !rules.authn.is_empty() {
        let mut cache = rules.authn.new_cache();
        let outcome = rules
            .authn
            .authenticate(&req, now, &no_remote_keys, &mut cache);
        // A repeated token comes from the cache: it must be judged the same.
        let again = rules
            .authn
            .authenticate(&req, now, &no_remote_keys, &mut cache);
        assert_eq!(outcome_key(&outcome), outcome_key(&again));
        match outcome {
            authn::Outcome::Missing => {}
            authn::Outcome::Verified {
                token,
                provider,
                location,
            } => {
                let edits = rules.authn.apply_edits(
                    &req,
                    &token,
                    provider,
                    location,
                    &mut |_: Edit<'_>| Ok::<(), ()>(()),
                );
                if let Ok(Some(p)) = edits {
                    authn_path = p;
                    req.path = &authn_path;
                }
                jwt = Some(token);
            }
            authn::Outcome::Rejected(error) => {
                return check_reply(&authn::rejection(&req, &error));
            }
            authn::Outcome::NeedKeys(i) => panic!("keys {i} are inline"),
        }
    }

    let normalized_path;
    if !rules.authz.is_empty() {
        let authz = &rules.authz;
        let n = match path::normalize(req.path, authz.escaped_slashes) {
            Ok(n) => n,
            Err(why) => return check_reply(&LocalReply::bad_path(why.detail())),
        };
        let (source_ip, remote_ip) = authz.peers(conn.source.as_deref(), &req);
        let (destination_ip, destination_port) = address(conn.destination.as_deref());
        // The peer as the certificate's names (here one, as the fuzz input gives it).
        let peer_names: Vec<String> = conn.peer.iter().cloned().collect();
        let facts = Facts {
            req: &req,
            path: &n.path,
            source_ip,
            remote_ip,
            destination_ip,
            destination_port,
            sni: conn.sni.as_deref(),
            peer_names: &peer_names,
            jwt: jwt.as_deref().map(JwtFacts::of),
        };
        let eval = authz.evaluate(&facts);
        // The fixture's DENY on /admin and /admin/* holds for every spelling that normalizes
        // to them (`/a/../admin`, `//admin`, `/%61dmin`, ...).
        if n.path == "/admin" || n.path.starts_with("/admin/") {
            assert!(
                matches!(eval.verdict, Verdict::DeniedBy("app/deny-admin", 0)),
                "{:?} -> {:?}: {:?}",
                req.path,
                n.path,
                eval.verdict
            );
        }
        if eval.verdict != Verdict::Allow {
            return check_reply(&LocalReply::rbac_denied());
        }
        if n.changed() {
            normalized_path = format!("{}{}", n.path, n.query);
            req.path = &normalized_path;
        }
    }

    let mut rng = fastrand::Rng::with_seed(seed);
    let Decision::Act(verdict) = rules.decide(&req, &mut rng) else {
        return;
    };
    match verdict.outcome {
        Outcome::Reply(r) => check_reply(&r),
        Outcome::Forward(f) => {
            let mut last = None;
            rules
                .request_edits(&f, req.path, |e| {
                    last = Some(e);
                    Ok::<(), ()>(())
                })
                .unwrap();
            // The cluster header is set last, so no edit overrides the filter's choice.
            match last {
                Some(Edit::Set(name, _)) => assert_eq!(name, rules.cluster_header),
                other => panic!("last request edit {other:?}"),
            }
            rules.response_edits(&f, |_| Ok::<(), ()>(())).unwrap();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, clock, rest @ ..] = data else {
        return;
    };
    let mut headers = Vec::new();
    let mut conn = Connection::default();
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
        pipeline(rules, &headers, &conn, now, seed);
    });
});
