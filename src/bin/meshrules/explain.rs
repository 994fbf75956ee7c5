//! `meshrules explain`: one request through the filter's own pipeline (`meshrules::pipeline`),
//! with the connection, proxy and key facts given as flags, and its events, edits and outcome
//! printed. Faults are shown with their percentages instead of sampled, and a weighted split
//! with its weights instead of one pick.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use clap::{Args, ValueEnum};
use meshrules::authn::KeyState;
use meshrules::compile::{Identity, ProxyKind};
use meshrules::engine::Forward;
use meshrules::http::{Edit, LocalReply, ReplyKind, Request};
use meshrules::jwt::{Jwks, TokenCache};
use meshrules::pipeline::{self, Address, Connection, Env, Event, Outcome, PeerCertificate};
use meshrules::ratelimit::LocalBuckets;
use meshrules::rules::{Abort, Action, Fault, RuleSet, StickyKey};

use crate::{validated_as, Failure};

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
    /// The connection's local address, `IP:PORT` (`destination.ip`, `destination.port`, and
    /// on a sidecar the service port of port-less destinations); without it, only the port,
    /// the URL's.
    #[arg(long, value_name = "IP:PORT")]
    pub destination: Option<SocketAddr>,
    /// The TLS server name the client sent (`connection.sni`).
    #[arg(long)]
    pub sni: Option<String>,
    /// The peer certificate of an mTLS connection, a PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "peer_principal")]
    pub peer_cert: Option<String>,
    /// A name of the peer certificate instead of the file (repeatable, in Envoy's order: URI
    /// SANs, DNS SANs, subject), e.g. spiffe://cluster.local/ns/app/sa/client.
    #[arg(long)]
    pub peer_principal: Vec<String>,
    /// The keys a `jwksUri` serves, `URI=FILE` (repeatable); without them the filter would
    /// wait for its fetch, and explain stops there.
    #[arg(long, value_name = "URI=FILE")]
    pub jwks: Vec<String>,
    /// The proxy the filter runs in (Istio node metadata): for `gateways`, `sourceLabels`,
    /// `sourceNamespace`, workload selectors and port-less destinations.
    #[arg(long, value_enum, default_value = "none")]
    pub proxy: Proxy,
    /// The proxy's namespace (its node metadata `NAMESPACE`).
    #[arg(long)]
    pub proxy_namespace: Option<String>,
    /// A label of the proxy's workload, `KEY=VALUE` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub proxy_label: Vec<String>,
}

/// What node metadata the filter finds: none in a plain Envoy.
#[derive(Clone, Copy, ValueEnum)]
pub enum Proxy {
    /// A plain Envoy (no Istio node metadata).
    None,
    /// An Istio sidecar (`sidecar~...` node id).
    Sidecar,
    /// An Istio gateway (`router~...` node id).
    Gateway,
}

/// The proxy as the flags describe it (the filter reads it from node metadata).
struct Node {
    kind: Proxy,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Identity for Node {
    fn known(&self) -> bool {
        self.namespace.is_some()
    }
    fn namespace(&self) -> Option<String> {
        self.namespace.clone()
    }
    fn label(&self, key: &str) -> Option<String> {
        self.labels.get(key).cloned()
    }
    fn kind(&self) -> ProxyKind {
        match self.kind {
            Proxy::None => ProxyKind::Unknown,
            Proxy::Sidecar => ProxyKind::Sidecar,
            Proxy::Gateway => ProxyKind::Gateway,
        }
    }
}

/// The connection as the flags describe it, with what Envoy's connection manager derives from
/// it before filters run (`source.address` from X-Forwarded-For with trusted hops).
struct Flags {
    source_address: Option<String>,
    destination: Address,
    sni: Option<String>,
    peer: Option<PeerCertificate>,
}

impl Connection for Flags {
    fn source_address(&self) -> Option<String> {
        self.source_address.clone()
    }
    fn destination_address(&self) -> Option<Address> {
        Some(self.destination)
    }
    fn requested_server_name(&self) -> Option<String> {
        self.sni.clone()
    }
    fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.peer.clone()
    }
}

fn split_pair<'a>(text: &'a str, flag: &str, what: &str) -> Result<(&'a str, &'a str), Failure> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Failure::from(format!("{flag} {text:?} is not `{what}`")))
}

fn read(file: &str) -> Result<String, Failure> {
    std::fs::read_to_string(file).map_err(|e| Failure::from(format!("cannot read {file}: {e}")))
}

fn node(args: &ExplainArgs) -> Result<Node, Failure> {
    let mut labels = BTreeMap::new();
    for l in &args.proxy_label {
        let (k, v) = split_pair(l, "--proxy-label", "KEY=VALUE")?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(Node {
        kind: args.proxy,
        namespace: args.proxy_namespace.clone(),
        labels,
    })
}

/// `--jwks` key sets, by index into `authn.remote`.
fn key_sets(rules: &RuleSet, args: &ExplainArgs) -> Result<Vec<Option<Jwks>>, Failure> {
    let mut sets: Vec<Option<Jwks>> = rules.authn.remote.iter().map(|_| None).collect();
    for given in &args.jwks {
        let (uri, file) = split_pair(given, "--jwks", "URI=FILE")?;
        let Some(i) = rules.authn.remote.iter().position(|r| r.uri == uri) else {
            return Err(
                format!("--jwks {uri}: no RequestAuthentication names this jwksUri").into(),
            );
        };
        // Read as the filter reads a fetched set.
        let jwks = Jwks::parse(&read(file)?, false).map_err(|e| format!("--jwks {file}: {e}"))?;
        sets[i] = Some(jwks);
    }
    Ok(sets)
}

pub fn run(args: &ExplainArgs) -> Result<(), Failure> {
    let mut v = validated_as(&args.config, &node(args)?)?;
    // Faults are reported as configured rather than sampled: take them out of the rules
    // before deciding.
    let faults: Vec<Option<Fault>> = v
        .loaded
        .rules
        .routes
        .iter_mut()
        .map(|r| r.fault.take())
        .collect();
    let rules = &v.loaded.rules;
    let mut headers = request_headers(args)?;
    let connection = connection(args, rules, &mut headers)?;
    let sets = key_sets(rules, args)?;
    let keys = |i: usize| match sets.get(i) {
        Some(Some(jwks)) => KeyState::Ready(jwks),
        _ => KeyState::Pending,
    };
    {
        let req = Request::from_headers(&headers);
        out!(
            "request: {} {}://{}{}",
            req.method,
            req.scheme,
            req.authority,
            req.path
        );
    }
    let plan = pipeline::run(
        rules,
        headers,
        Env {
            connection: &connection,
            now_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            keys: &keys,
            token_cache: &mut TokenCache::new(0),
            signatures: &meshrules::jwt::InModule,
            rng: &mut fastrand::Rng::with_seed(0),
            // Every bucket full: explain shows one request on its own.
            buckets: &mut LocalBuckets::default(),
        },
    );
    let mut routed = None;
    for event in &plan.events {
        match event {
            Event::Routed {
                virtual_service,
                route,
            } => {
                routed = *route;
                routing(rules, *virtual_service, *route, &v.inputs);
            }
            other => out!("{}", plan.describe(other)),
        }
    }
    let req = plan.request();
    match &plan.outcome {
        Outcome::Pass => {
            for e in plan.edits_before_routing() {
                out!("request header: {e}");
            }
            Ok(())
        }
        Outcome::WaitForKeys(i) => {
            let uri = rules.authn.remote.get(*i).map_or("", |r| r.uri.as_str());
            out!("outcome: the filter holds the request until {uri} is fetched; give its keys with --jwks {uri}=FILE to see the rest");
            Ok(())
        }
        Outcome::Reply { reply, .. } => {
            let preflight = reply.kind == ReplyKind::Preflight;
            if !faults_answer(routed.and_then(|r| faults[r].as_ref()), preflight)? {
                answer(reply)?;
            }
            Ok(())
        }
        Outcome::Forward { forward, .. } => {
            if !faults_answer(faults[forward.route].as_ref(), false)? {
                let before: Vec<String> =
                    plan.edits_before_routing().map(|e| e.to_string()).collect();
                print_forward(rules, forward, &req, &before);
            }
            Ok(())
        }
    }
}

/// The connection facts the flags give, and what Envoy would have done to the headers with
/// them: with `use_remote_address` it appends the peer to X-Forwarded-For, and with trusted
/// hops `source.address` is an X-Forwarded-For entry (port 0).
fn connection(
    args: &ExplainArgs,
    rules: &RuleSet,
    headers: &mut Vec<(String, String)>,
) -> Result<Flags, Failure> {
    let authz = &rules.authz;
    let remote = {
        let req = Request::from_headers(headers);
        authz.remote_ip(&req, args.source_ip)
    };
    let source_address = args.source_ip.map(|peer| match remote {
        Some(ip) if ip != peer => SocketAddr::new(ip, 0).to_string(),
        _ => SocketAddr::new(peer, 1).to_string(),
    });
    if let (Some(peer), true) = (args.source_ip, authz.use_remote_address) {
        Edit::Add("x-forwarded-for", &peer.to_string()).apply_to(headers);
    }
    let destination = match args.destination {
        Some(sa) => Address::parse(&sa.to_string()),
        // A plain Envoy's listener port is the port the client called.
        None => Address {
            ip: None,
            port: Request::from_headers(headers).port(),
        },
    };
    let peer = match (&args.peer_cert, args.peer_principal.is_empty()) {
        (Some(file), _) => {
            let pem = read(file)?;
            let encoded =
                percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC);
            Some(PeerCertificate::UrlEncodedPem(encoded.to_string()))
        }
        (None, false) => Some(PeerCertificate::Names(args.peer_principal.clone())),
        (None, true) => None,
    };
    Ok(Flags {
        source_address,
        destination,
        sni: args.sni.clone(),
        peer,
    })
}

fn routing(
    rules: &RuleSet,
    virtual_service: usize,
    route: Option<usize>,
    inputs: &crate::input::Inputs,
) {
    let vs = &rules.virtual_services[virtual_service];
    match inputs.origin_of("VirtualService", &vs.id) {
        Some(o) => out!(
            "virtual service: {} ({}, document {})",
            vs.id,
            o.file,
            o.document
        ),
        None => out!("virtual service: {}", vs.id),
    }
    match route.map(|r| &rules.routes[r]) {
        None => out!("route: none matches"),
        Some(r) if r.virtual_service == virtual_service => out!("route: {}", r.name),
        Some(r) => out!(
            "route: {} (delegated to {})",
            r.name,
            rules.virtual_services[r.virtual_service].id
        ),
    }
}

/// Prints the route's faults as configured; true when an abort answers every request (then
/// that is the outcome). A CORS preflight is answered before faults apply.
fn faults_answer(fault: Option<&Fault>, preflight: bool) -> Result<bool, Failure> {
    let Some(fault) = fault.filter(|_| !preflight) else {
        return Ok(false);
    };
    if let Some((d, ppm)) = fault.delay {
        out!(
            "fault: delay {} ms for {} of requests",
            d.as_millis(),
            percent(ppm)
        );
    }
    if let Some((a, ppm)) = fault.abort {
        let (reply, what) = match a {
            Abort::Http(status) => (LocalReply::abort(status), format!("HTTP {status}")),
            Abort::Grpc(code) => (LocalReply::grpc_abort(code), format!("grpc-status {code}")),
        };
        out!("fault: abort with {what} for {} of requests", percent(ppm));
        if ppm >= 1_000_000 {
            answer(&reply)?;
            return Ok(true);
        }
        out!("fault: the other requests go on:");
    }
    Ok(false)
}

fn percent(ppm: u32) -> String {
    format!("{}%", f64::from(ppm) / 10_000.0)
}

/// The destinations (all of a split, with their weights), the route's policies and every
/// header edit: those made before routing, then the route's for each destination.
fn print_forward(rules: &RuleSet, f: &Forward, req: &Request<'_>, before_routing: &[String]) {
    let route = &rules.routes[f.route];
    let Action::Forward(split) = &route.action else {
        return;
    };
    let port = req.listener_port.or_else(|| req.port());
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
        let text = match *name {
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
            let mut request = before_routing.to_vec();
            let _ = rules.request_edits(&each, req.path, |e| {
                request.push(e.to_string());
                Ok::<(), ()>(())
            });
            let mut response = Vec::new();
            let _ = rules.response_edits(&each, |e| {
                response.push(e.to_string());
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
