//! `meshrules explain`: one request through the filter's steps on the host, in the filter's
//! order (JWT, path normalization and authorization, then routing), with the same pure
//! functions the filter calls. Faults are shown with their percentages instead of sampled,
//! and a weighted split with its weights instead of one pick.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use meshrules::authn::{self, KeyState, Keys};
use meshrules::authz::{path, Facts, JwtFacts, Peer, Verdict};
use meshrules::engine::{Decision, Edit, Forward, LocalReply, Outcome, ReplyKind, Request};
use meshrules::rules::{Abort, Action, Fault, RuleSet, StickyKey};
use serde_json::{Map, Value};

use crate::{validated, Failure};

#[derive(Args)]
pub struct ExplainArgs {
    /// The configuration: Istio YAML, pluginConfig JSON or a WasmPlugin (repeatable).
    #[arg(long = "config", value_name = "FILE", required = true)]
    pub config: Vec<String>,
    /// The request: `METHOD URL` or just `URL` (GET), e.g. 'GET http://demoapp/api?x=1'. The
    /// path is taken as written, like `curl --path-as-is`.
    pub request: String,
    /// A request header, `NAME: VALUE` (repeatable); `Host:` replaces the URL's authority.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The connection's peer address (`source.ip` in AuthorizationPolicies).
    #[arg(long)]
    pub source_ip: Option<IpAddr>,
    /// A name of the peer certificate for an mTLS connection (repeatable, in Envoy's order:
    /// URI SANs, DNS SANs, subject), e.g. spiffe://cluster.local/ns/app/sa/client.
    #[arg(long)]
    pub peer_principal: Vec<String>,
}

pub fn run(args: &ExplainArgs) -> Result<(), Failure> {
    let mut v = validated(&args.config)?;
    // Faults are reported as configured rather than sampled: take them out of the rules
    // before deciding.
    let faults: Vec<Option<Fault>> = v
        .loaded
        .rules
        .routes
        .iter_mut()
        .map(|r| r.fault.take())
        .collect();
    let headers = request_headers(args)?;
    let rules = &v.loaded.rules;
    let mut req = Request::from_headers(&headers);
    out!(
        "request: {} {}://{}{}",
        req.method,
        req.scheme,
        req.authority,
        req.path
    );
    if headers.iter().any(|(k, _)| k == &rules.cluster_header) {
        out!(
            "cluster header: the client's {} is removed: only the filter picks clusters",
            rules.cluster_header
        );
    }

    // JWT (RequestAuthentication), as the filter checks it first.
    let jwt_path;
    let assumed_claims: Map<String, Value>;
    let verified;
    let mut jwt: Option<JwtFacts<'_>> = None;
    if rules.authn.is_empty() {
        out!("jwt: no RequestAuthentication: tokens are not checked");
    } else {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let remote_not_fetched = |_: usize| KeyState::Pending;
        let outcome =
            rules
                .authn
                .authenticate(&req, now, &remote_not_fetched, &mut rules.authn.new_cache());
        match outcome {
            authn::Outcome::Missing => {
                out!("jwt: no token: the request goes on without a request principal")
            }
            authn::Outcome::Verified {
                token,
                provider,
                location,
            } => {
                out!(
                    "jwt: token verified by RequestAuthentication {} (issuer {:?}, subject {:?})",
                    rules.authn.providers[provider].id,
                    token.issuer,
                    token.subject
                );
                let mut edits = Vec::new();
                let new_path =
                    rules
                        .authn
                        .apply_edits(&req, &token, provider, location, &mut |e| {
                            edits.push(describe(e));
                            Ok::<(), ()>(())
                        });
                for e in edits {
                    out!("jwt: request header {e}");
                }
                if let Ok(Some(p)) = new_path {
                    out!("jwt: token removed from the query: :path {p}");
                    jwt_path = p;
                    req.path = &jwt_path;
                }
                verified = token;
                jwt = Some(JwtFacts::of(&verified));
            }
            authn::Outcome::Rejected(error) => {
                out!("jwt: token refused: {}", error.message());
                return answer(&authn::rejection(&req, &error));
            }
            authn::Outcome::NeedKeys(i) => {
                // The filter fetches jwksUri keys at run time; explain does not fetch.
                let token = rules.authn.first_token(&req);
                let decoded = token.map(meshrules::jwt::decode);
                let uri = rules.authn.remote.get(i).map_or("", |r| r.uri.as_str());
                match decoded {
                    Some(Ok(d)) => {
                        out!(
                            "jwt: token present (issuer {:?}); its keys come from {uri} at run time, \
                             which explain does not fetch: the checks below assume it verifies",
                            d.issuer().unwrap_or_default()
                        );
                        assumed_claims = d.claims().clone();
                        jwt = Some(JwtFacts::from_claims(
                            claim(&assumed_claims, "iss"),
                            &assumed_claims,
                        ));
                    }
                    Some(Err(e)) => {
                        out!("jwt: token refused: {}", e.message());
                        return answer(&authn::rejection(&req, &e));
                    }
                    None => out!("jwt: token present; keys from {uri} are not fetched"),
                }
            }
        }
        let inline = rules
            .authn
            .providers
            .iter()
            .filter(|p| matches!(p.keys, Keys::Inline(_)))
            .count();
        if inline < rules.authn.providers.len() {
            out!("jwt: providers with jwksUri keys are fetched by the filter; explain verifies only inline keys");
        }
    }

    // AuthorizationPolicy, on the normalized path.
    let normalized_path;
    if rules.authz.is_empty() {
        out!("authz: no AuthorizationPolicy: allowed");
    } else {
        let authz = &rules.authz;
        let n = match path::normalize(req.path, authz.escaped_slashes) {
            Ok(n) => n,
            Err(why) => {
                out!("authz: the path could be read two ways: {}", why.detail());
                return answer(&LocalReply::bad_path(why.detail()));
            }
        };
        let facts = Facts {
            req: &req,
            path: &n.path,
            source_ip: args.source_ip.map_or(Peer::None, Peer::Known),
            remote_ip: authz.remote_ip(&req, args.source_ip),
            destination_ip: None,
            // A plain Envoy's listener port is the port the client called.
            destination_port: req.port(),
            sni: None,
            peer_names: &args.peer_principal,
            jwt,
        };
        let eval = authz.evaluate(&facts);
        if eval.dry_run_would_deny {
            out!("authz: dry-run policies would deny this request (not enforced)");
        }
        if let Some((policy, rule)) = eval.audited {
            out!("authz: AUDIT policy {policy} rules[{rule}] matches (logged, decides nothing)");
        }
        match eval.verdict {
            Verdict::Allow => match authz.allowed_by(&facts) {
                Some((policy, rule)) => {
                    out!("authz: allowed by ALLOW policy {policy} rules[{rule}]")
                }
                None => {
                    out!("authz: allowed: no DENY policy matches and there is no ALLOW policy")
                }
            },
            Verdict::DeniedBy(policy, rule) => {
                out!("authz: denied by DENY policy {policy} rules[{rule}]");
                return answer(&LocalReply::rbac_denied());
            }
            Verdict::NoAllowMatched => {
                out!("authz: denied: no ALLOW policy matches");
                return answer(&LocalReply::rbac_denied());
            }
        }
        if n.changed() {
            normalized_path = format!("{}{}", n.path, n.query);
            out!("authz: the upstream gets the normalized path {normalized_path}");
            req.path = &normalized_path;
        }
    }

    route(rules, &faults, &req, &v.inputs)
}

/// A string claim of an unverified token ("" when absent).
fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> &'c str {
    claims.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn route(
    rules: &RuleSet,
    faults: &[Option<Fault>],
    req: &Request<'_>,
    inputs: &crate::input::Inputs,
) -> Result<(), Failure> {
    let mut rng = fastrand::Rng::with_seed(0);
    let Decision::Act(verdict) = rules.decide(req, &mut rng) else {
        out!(
            "virtual service: none for host {:?}: the filter leaves the request to Envoy's other routes",
            req.host()
        );
        return Ok(());
    };
    let vs = &rules.virtual_services[verdict.virtual_service];
    match inputs.origin_of("VirtualService", &vs.id) {
        Some(o) => out!(
            "virtual service: {} ({}, document {})",
            vs.id,
            o.file,
            o.document
        ),
        None => out!("virtual service: {}", vs.id),
    }
    let Some(route_id) = verdict.route else {
        out!("route: none matches");
        return match verdict.outcome {
            Outcome::Reply(r) => answer(&r),
            Outcome::Forward(_) => Ok(()),
        };
    };
    let route = &rules.routes[route_id];
    if route.virtual_service == verdict.virtual_service {
        out!("route: {}", route.name);
    } else {
        out!(
            "route: {} (delegated to {})",
            route.name,
            rules.virtual_services[route.virtual_service].id
        );
    }
    let preflight = matches!(&verdict.outcome, Outcome::Reply(r) if r.kind == ReplyKind::Preflight);
    if let (Some(fault), false) = (faults.get(route_id).and_then(Option::as_ref), preflight) {
        if let Some((d, ppm)) = fault.delay {
            out!(
                "fault: delay {} ms for {} of requests",
                d.as_millis(),
                percent(ppm)
            );
        }
        if let Some((a, ppm)) = fault.abort {
            let reply = match a {
                Abort::Http(status) => LocalReply::abort(status),
                Abort::Grpc(code) => LocalReply::grpc_abort(code),
            };
            let what = match a {
                Abort::Http(status) => format!("HTTP {status}"),
                Abort::Grpc(code) => format!("grpc-status {code}"),
            };
            out!("fault: abort with {what} for {} of requests", percent(ppm));
            if ppm >= 1_000_000 {
                return answer(&reply);
            }
            out!("fault: the other requests go on:");
        }
    }
    match verdict.outcome {
        Outcome::Reply(r) => answer(&r),
        Outcome::Forward(f) => forward(rules, route_id, &f, req),
    }
}

fn percent(ppm: u32) -> String {
    format!("{}%", f64::from(ppm) / 10_000.0)
}

fn forward(
    rules: &RuleSet,
    route_id: usize,
    f: &Forward,
    req: &Request<'_>,
) -> Result<(), Failure> {
    let route = &rules.routes[route_id];
    let Action::Forward(split) = &route.action else {
        return Ok(());
    };
    // A plain Envoy's listener port is the port the client called.
    let port = req.port();
    if let [one] = split.destinations.as_slice() {
        out!("destination: {}", one.cluster.render(port));
    } else {
        for d in &split.destinations {
            let share = f64::from(d.weight) * 100.0 / f64::from(split.total_weight);
            out!(
                "destination: {} weight {} ({share:.1}%)",
                d.cluster.render(port),
                d.weight
            );
        }
    }
    if split.destinations.len() > 1 {
        // The engine hashes a non-empty sticky key; otherwise it samples.
        let sticky = match &rules.sticky {
            Some(StickyKey::Header(h)) => req
                .header(h)
                .filter(|v| !v.is_empty())
                .map(|v| format!("header {h}: {v}")),
            Some(StickyKey::Cookie(c)) => req
                .cookie(c)
                .filter(|v| !v.is_empty())
                .map(|v| format!("cookie {c}={v}")),
            None => None,
        };
        match sticky {
            Some(key) => out!(
                "split: {key} always goes to {}",
                split.destinations[f.destination].cluster.render(port)
            ),
            None => out!("split: each request picks a destination at random, by weight"),
        }
    }
    for (name, value) in &route.router_headers {
        let text = match name.as_str() {
            "x-envoy-upstream-rq-timeout-ms" if value == "0" => "timeout: none".to_string(),
            "x-envoy-upstream-rq-timeout-ms" => format!("timeout: {value} ms"),
            "x-envoy-upstream-rq-per-try-timeout-ms" => {
                format!("retries: per try timeout {value} ms")
            }
            "x-envoy-max-retries" => format!("retries: at most {value}"),
            "x-envoy-retry-on" => format!("retries: on {value}"),
            "x-envoy-retry-grpc-on" => format!("retries: on gRPC {value}"),
            "x-envoy-retriable-status-codes" => format!("retries: on status {value}"),
            _ => continue,
        };
        out!("{text}");
    }
    if let Some(p) = &f.path {
        out!("rewrite: :path {} -> {p}", req.path);
    }
    if let Some(a) = &route.authority_rewrite {
        out!("rewrite: :authority {} -> {a}", req.authority);
    }
    if let Some(origin) = &f.cors_origin {
        out!("cors: origin {origin} is allowed");
    }
    // Every header edit the filter makes: those of every destination once, then each
    // destination's own (a destination may set headers, and names its cluster).
    let edits: Vec<(Vec<String>, Vec<String>)> = (0..split.destinations.len())
        .map(|i| {
            let each = Forward {
                route: f.route,
                destination: i,
                path: f.path.clone(),
                cors_origin: f.cors_origin.clone(),
                cluster: split.destinations[i].cluster.per_request(port),
            };
            let mut request = Vec::new();
            let _ = rules.request_edits(&each, req.path, |e| {
                request.push(describe(e));
                Ok::<(), ()>(())
            });
            let mut response = Vec::new();
            let _ = rules.response_edits(&each, |e| {
                response.push(describe(e));
                Ok::<(), ()>(())
            });
            (request, response)
        })
        .collect();
    let names: Vec<String> = split
        .destinations
        .iter()
        .map(|d| d.cluster.render(port).into_owned())
        .collect();
    let clusters: Vec<&str> = names.iter().map(String::as_str).collect();
    let (request, response): (Vec<_>, Vec<_>) = edits.into_iter().unzip();
    print_edits("request", &request, &clusters);
    print_edits("response", &response, &clusters);
    match split.destinations.as_slice() {
        [one] => out!("outcome: forward to {}", one.cluster.render(port)),
        many => out!("outcome: forward to one of {} clusters", many.len()),
    }
    Ok(())
}

/// Edits every destination makes once, then each destination's own, named by its cluster.
fn print_edits(kind: &str, per_destination: &[Vec<String>], clusters: &[&str]) {
    let common: Vec<&String> = per_destination.first().map_or_else(Vec::new, |first| {
        first
            .iter()
            .filter(|e| per_destination.iter().all(|l| l.contains(e)))
            .collect()
    });
    for e in &common {
        out!("{kind} header: {e}");
    }
    for (list, cluster) in per_destination.iter().zip(clusters) {
        for e in list.iter().filter(|e| !common.contains(e)) {
            out!("{kind} header ({cluster}): {e}");
        }
    }
}

fn describe(e: Edit<'_>) -> String {
    match e {
        Edit::Remove(name) => format!("remove {name}"),
        Edit::Set(name, value) => format!("set {name}: {value}"),
        Edit::Add(name, value) => format!("add {name}: {value}"),
    }
}

/// The filter answers the request itself.
fn answer(r: &LocalReply) -> Result<(), Failure> {
    for (k, v) in &r.headers {
        out!("reply header: {k}: {v}");
    }
    if !r.body.is_empty() {
        out!("reply body: {:?}", String::from_utf8_lossy(&r.body));
    }
    if let Some(code) = r.grpc_status {
        out!("reply: gRPC requests get grpc-status {code}");
    }
    out!("outcome: the filter answers {} ({})", r.status, r.details);
    Ok(())
}

/// Envoy's header list for the request: pseudo-headers from the URL, then the `-H` headers
/// with lower-case names (`Host` becomes `:authority`).
fn request_headers(args: &ExplainArgs) -> Result<Vec<(String, String)>, String> {
    let mut words = args.request.split_whitespace();
    let (method, url) = match (words.next(), words.next(), words.next()) {
        (Some(url), None, _) => ("GET", url),
        (Some(method), Some(url), None) => (method, url),
        _ => return Err(format!("{:?} is not `METHOD URL`", args.request)),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL like http://host/path"))?;
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (mut authority, path) = (rest[..cut].to_string(), &rest[cut..]);
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| format!("header {h:?} is not `NAME: VALUE`"))?;
        let name = name.trim().to_ascii_lowercase();
        if name == "host" {
            authority = value.trim().to_string();
        } else {
            headers.push((name, value.trim().to_string()));
        }
    }
    let mut all = vec![
        (":method".to_string(), method.to_ascii_uppercase()),
        (":scheme".to_string(), scheme.to_ascii_lowercase()),
        (":authority".to_string(), authority),
        (":path".to_string(), path),
    ];
    all.append(&mut headers);
    Ok(all)
}
