//! Turns the parsed configuration into [`RuleSet`] tables, checking every field on the way.
//! All problems are collected, each with its JSON path; any problem refuses the whole config.
//! It runs once per load, so its bigger steps are `#[inline(never)]`: inlined into their one
//! caller they made `compile` a 60 KB function, and V8 compiles each function whole
//! (bench/size.py lists the largest).

mod authn;
mod authz;
mod delegate;
mod lint;
mod matching;
mod path;
mod ratelimit;
mod route;
mod traffic_policy;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::{
    self, dns1123_label, ConfigError, Diagnostics, PluginConfig, Routing, Spec, StickySplit,
};
use crate::rules::{Action, ClusterName, RuleSet, StickyKey, VirtualService};
use path::Path;

/// What kind of Envoy the filter runs in, from Istio's node metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    Gateway,
    Unknown,
}

/// Facts about the proxy itself, for `sourceLabels`, `sourceNamespace` and `gateways`.
pub trait Identity {
    /// Whether the proxy carries Istio node metadata at all.
    fn known(&self) -> bool;
    fn namespace(&self) -> Option<String>;
    fn label(&self, key: &str) -> Option<String>;
    fn kind(&self) -> ProxyKind;
}

/// A proxy without Istio metadata (plain Envoy).
pub struct Anonymous;

impl Identity for Anonymous {
    fn known(&self) -> bool {
        false
    }
    fn namespace(&self) -> Option<String> {
        None
    }
    fn label(&self, _key: &str) -> Option<String> {
        None
    }
    fn kind(&self) -> ProxyKind {
        ProxyKind::Unknown
    }
}

/// The outcome of loading a configuration.
#[derive(Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    pub warnings: Vec<ConfigError>,
}

/// Parses and compiles a plugin configuration; `Err` lists every problem found.
pub fn load(json: &[u8], identity: &dyn Identity) -> Result<Loaded, Vec<ConfigError>> {
    let mut diags = Diagnostics::default();
    let config = config::parse(json, &mut diags);
    let rules = compile(config, identity, &mut diags);
    // A delegate's problem shows once however many roots merge it.
    let mut seen = std::collections::HashSet::new();
    diags.errors.retain(|e| seen.insert(e.to_string()));
    diags.warnings.retain(|w| seen.insert(w.to_string()));
    if diags.errors.is_empty() {
        Ok(Loaded {
            rules,
            warnings: diags.warnings,
        })
    } else {
        Err(diags.errors)
    }
}

/// The DestinationRule traffic policies of a configuration, checked as Istio checks them on
/// `kubectl apply` (see `traffic_policy`): `meshrules check` and `bundle` refuse what Istio
/// refuses. Not part of [`load`]: the filter applies no traffic policy (Envoy's clusters do),
/// and checking them would add 120 KB to the module for settings it never reads. Problems of
/// the configuration itself are `load`'s to report.
pub fn check_traffic_policies(json: &[u8]) -> Diagnostics {
    let config = config::parse(json, &mut Diagnostics::default());
    let mut diags = Diagnostics::default();
    for res in &config.resources {
        let Spec::DestinationRule(dr) = &res.spec else {
            continue;
        };
        let path = format!("{}.spec", res.path);
        let namespace = &res.metadata.namespace;
        if let Some(tp) = &dr.traffic_policy {
            traffic_policy::check(tp, namespace, &format!("{path}.trafficPolicy"), &mut diags);
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            if let Some(tp) = &s.traffic_policy {
                let tpath = format!("{path}.subsets[{i}].trafficPolicy");
                traffic_policy::check(tp, namespace, &tpath, &mut diags);
            }
        }
    }
    diags
}

/// What compiling one VirtualService's routes needs to know.
pub(crate) struct Scope<'a> {
    pub namespace: &'a str,
    pub gateways: &'a [String],
    pub identity: &'a dyn Identity,
    pub cluster_name: &'a str,
    pub cluster_domain: &'a str,
    /// The Envoy route already has Istio's timeout and retry defaults.
    pub route_has_istio_defaults: bool,
    /// Subset names per destination host, for hosts that have a DestinationRule.
    pub subsets: &'a HashMap<String, BTreeSet<String>>,
    /// `routing.servicePorts`: the only port of a service, by FQDN.
    pub only_ports: &'a HashMap<String, u16>,
    pub portless: Portless,
}

/// What names the cluster of a destination without a port (`routing.portlessDestinations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Portless {
    /// The port the request arrived on: istiod's listener port on a sidecar.
    Listener,
    /// Rendered as empty text (a plain Envoy's own cluster names).
    Empty,
    /// A load error (an Istio gateway: its listener port is not the service's).
    Refuse,
}

fn portless(routing: &Routing, identity: &dyn Identity, diags: &mut Diagnostics) -> Portless {
    let default = match identity.kind() {
        ProxyKind::Sidecar => Portless::Listener,
        ProxyKind::Gateway => Portless::Refuse,
        ProxyKind::Unknown => Portless::Empty,
    };
    match routing
        .portless_destinations
        .as_deref()
        .map(str::to_ascii_uppercase)
    {
        None => default,
        Some(mode) => match mode.as_str() {
            "LISTENER" => Portless::Listener,
            "EMPTY" => Portless::Empty,
            "REFUSE" => Portless::Refuse,
            _ => {
                diags.error(
                    "routing.portlessDestinations",
                    format!("{mode:?} is not one of LISTENER, EMPTY, REFUSE"),
                );
                default
            }
        },
    }
}

/// `routing.servicePorts` reduced to what istiod uses: a service's port when it has one. The
/// CLI uses it too, to find the port of a cluster named with it.
pub fn only_ports(routing: &Routing, diags: &mut Diagnostics) -> HashMap<String, u16> {
    let mut only = HashMap::new();
    for (host, ports) in &routing.service_ports {
        let path = format!("routing.servicePorts.{host}");
        let valid: Vec<u16> = ports
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| whole_number(p, 1, 65535, &format!("{path}[{i}]"), diags))
            .map(|p| p as u16)
            .collect();
        if let [port] = valid[..] {
            only.insert(host.to_ascii_lowercase(), port);
        }
    }
    only
}

impl Scope<'_> {
    /// Expands a short name (no dots) into the FQDN of the resource's namespace, as Istio does.
    pub fn fqdn(&self, host: &str) -> String {
        expand_host(host, self.namespace, self.cluster_domain)
    }
}

pub fn expand_host(host: &str, namespace: &str, domain: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host.contains('*') || namespace.is_empty() {
        host
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// The Envoy cluster name for a destination: `routing.clusterName` with `{host}`, `{subset}`
/// and `{port}` filled in (empty for no subset or port). Routes use it; so does the CLI.
pub fn cluster_name(template: &str, host: &str, subset: &str, port: &str) -> String {
    // One pass, one allocation: three `str::replace`s per destination were 7% of a load.
    let mut out = String::with_capacity(template.len() + host.len() + subset.len() + port.len());
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (value, len) = [("{host}", host), ("{subset}", subset), ("{port}", port)]
            .into_iter()
            .find(|(name, _)| rest.starts_with(name))
            .map_or(("{", 1), |(name, value)| (value, name.len()));
        out.push_str(value);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// istio `agent.ValidateWildcardDomain` (pkg/config/validation/agent/validation.go): at most
/// 255 bytes, a first label that is `*`, `*name`, `*-name` or a DNS-1123 label, and DNS-1123
/// labels after it, the last not all digits (it may be empty: `istio.io.`). Istio's labels
/// (pkg/config/labels) take both cases, at most 63 bytes each.
pub(crate) fn wildcard_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    let unstarred = first
        .strip_prefix("*-")
        .or_else(|| first.strip_prefix('*'))
        .unwrap_or(first);
    if first.len() > 63 || !(first == "*" || dns1123_label(unstarred, true)) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    let Some(rest) = rest else {
        return Ok(());
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if !top.is_empty()
        && top
            .trim_start_matches(['+', '-'])
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        let trailing_dot = i == labels.len() - 1 && label.is_empty();
        if !trailing_dot && !dns1123_label(label, true) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// Kubernetes' `metadata` rules: a name is a DNS-1123 subdomain (at most 253 bytes of
/// lower-case labels joined by dots, `IsDNS1123Subdomain`), a namespace a DNS-1123 label.
/// Either may be left out here, for a plain Envoy.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn check_metadata(meta: &config::ObjectMeta, path: &str, diags: &mut Diagnostics) {
    let name = &meta.name;
    if !name.is_empty() && (name.len() > 253 || !name.split('.').all(|l| dns1123_label(l, false))) {
        diags.error(
            format!("{path}.metadata.name"),
            format!("{name:?} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253)"),
        );
    }
    let ns = &meta.namespace;
    if !ns.is_empty() && !dns1123_label(ns, false) {
        diags.error(
            format!("{path}.metadata.namespace"),
            format!(
                "{ns:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63)"
            ),
        );
    }
}

/// Checks that `v` is a whole number in `lo..=hi` (protobuf Struct numbers arrive as floats).
pub(crate) fn whole_number(
    v: f64,
    lo: i64,
    hi: i64,
    path: &dyn std::fmt::Display,
    diags: &mut Diagnostics,
) -> Option<i64> {
    if !v.is_finite() || v.fract() != 0.0 {
        diags.error(
            path.to_string(),
            format!("{} is not a whole number", config::number(v)),
        );
        return None;
    }
    if v < lo as f64 || v > hi as f64 {
        diags.error(
            path.to_string(),
            format!("{} is not in {lo}..={hi}", config::number(v)),
        );
        return None;
    }
    Some(v as i64)
}

/// Most VirtualServices, `http` routes (all VirtualServices together) and policies
/// (AuthorizationPolicies and RequestAuthentications) one configuration may hold: with
/// [`config::MAX_CONFIG_BYTES`], what is accepted loads within the Wasm VM's memory
/// (README: Limits has the measurements).
pub const MAX_VIRTUAL_SERVICES: usize = 10000;
pub const MAX_ROUTES: usize = 60000;
pub const MAX_POLICIES: usize = 4000;

/// Refuses a configuration over the limits before anything is compiled.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn within_limits(config: &PluginConfig, diags: &mut Diagnostics) -> bool {
    let (mut vss, mut routes, mut policies) = (0, 0, 0);
    for res in &config.resources {
        match &res.spec {
            Spec::VirtualService(vs) => {
                vss += 1;
                routes += vs.http.len();
            }
            Spec::AuthorizationPolicy(_) | Spec::RequestAuthentication(_) => policies += 1,
            Spec::DestinationRule(_) => {}
        }
    }
    let errors = diags.errors.len();
    for (what, n, max) in [
        ("VirtualServices", vss, MAX_VIRTUAL_SERVICES),
        ("http routes", routes, MAX_ROUTES),
        (
            "AuthorizationPolicies and RequestAuthentications",
            policies,
            MAX_POLICIES,
        ),
    ] {
        if n > max {
            diags.error(
                "resources",
                format!("{n} {what}, over the limit of {max} per filter"),
            );
        }
    }
    diags.errors.len() == errors
}

fn compile(mut config: PluginConfig, identity: &dyn Identity, diags: &mut Diagnostics) -> RuleSet {
    if !within_limits(&config, diags) {
        return RuleSet::default();
    }
    // Each VirtualService's raw routes, taken out to be moved into the route parser (the rest
    // of the configuration is only read).
    let mut raw_routes: Vec<Vec<config::HttpRouteEntry>> = config
        .resources
        .iter_mut()
        .map(|res| match &mut res.spec {
            Spec::VirtualService(vs) => std::mem::take(&mut vs.http),
            _ => Vec::new(),
        })
        .collect();
    for res in &config.resources {
        check_metadata(&res.metadata, &res.path, diags);
    }
    let routing = &config.routing;
    let mut rules = RuleSet {
        cluster_header: routing.cluster_header.to_ascii_lowercase(),
        sticky: sticky_key(routing.sticky_split.as_ref(), diags),
        ..RuleSet::default()
    };
    if rules.cluster_header.is_empty() {
        diags.error("routing.clusterHeader", "must not be empty");
    }
    let portless = portless(routing, identity, diags);
    let only_ports = only_ports(routing, diags);
    let security = &config.security;
    rules.authz = authz::settings(security, identity, diags);
    rules.authn = authn::settings(security, diags);
    for res in &config.resources {
        let (selector, target_ref, target_refs) = match &res.spec {
            Spec::AuthorizationPolicy(s) => (&s.selector, &s.target_ref, &s.target_refs),
            Spec::RequestAuthentication(s) => (&s.selector, &s.target_ref, &s.target_refs),
            _ => continue,
        };
        let targets: Vec<_> = target_ref.iter().chain(target_refs).collect();
        let applies = authz::policy_applies(
            &res.metadata,
            selector.as_ref(),
            &targets,
            &security.root_namespace,
            identity,
        );
        match &res.spec {
            Spec::AuthorizationPolicy(ap) => {
                lint::authorization_policy(ap, &format!("{}.spec", res.path), diags);
                authz::compile_policy(
                    ap,
                    &res.metadata,
                    &res.path,
                    applies,
                    &mut rules.authz,
                    diags,
                )
            }
            Spec::RequestAuthentication(ra) => authn::compile_request_authentication(
                ra,
                &res.metadata,
                &res.path,
                applies,
                security,
                &mut rules.authn,
                diags,
            ),
            _ => {}
        }
    }

    rules.authz.index();

    let mut subsets: HashMap<String, BTreeSet<String>> = HashMap::new();
    for res in &config.resources {
        if let Spec::DestinationRule(dr) = &res.spec {
            let path = format!("{}.spec", res.path);
            if dr.host.is_empty() {
                diags.error(format!("{path}.host"), "host is required");
                continue;
            }
            lint::destination_rule(dr, &path, diags);
            let host = expand_host(&dr.host, &res.metadata.namespace, &routing.cluster_domain);
            let names = subsets.entry(host).or_default();
            for (i, s) in dr.subsets.iter().enumerate() {
                if s.name.is_empty() {
                    diags.error(
                        format!("{path}.subsets[{i}].name"),
                        "subset name is required",
                    );
                } else if !names.insert(s.name.clone()) {
                    diags.error(
                        format!("{path}.subsets[{i}].name"),
                        format!("duplicate subset name {:?}", s.name),
                    );
                }
            }
        }
    }

    // Pass 1: every VirtualService gets an entry and its routes parsed once; those without
    // hosts are delegates.
    let mut parsed: Vec<ParsedVs<'_>> = Vec::new();
    let mut by_name: HashMap<(String, String), usize> = HashMap::new();
    for (res, http) in config.resources.iter().zip(&mut raw_routes) {
        let Spec::VirtualService(vs) = &res.spec else {
            continue;
        };
        let vs_index = rules.virtual_services.len();
        let meta = &res.metadata;
        let path = format!("{}.spec", res.path);
        let id = format!("{}/{}", meta.namespace, meta.name);
        if !meta.name.is_empty()
            && by_name
                .insert((meta.namespace.clone(), meta.name.clone()), vs_index)
                .is_some()
        {
            diags.error(
                format!("{}.metadata.name", res.path),
                format!("duplicate VirtualService {id}"),
            );
        }
        lint::virtual_service(vs, &path, diags);
        for (i, host) in vs.hosts.iter().enumerate() {
            let hpath = format!("{path}.hosts[{i}]");
            // istiod's validateVirtualService: a wildcard domain, or else an IP address.
            if let Err(e) = wildcard_domain(host) {
                if host.parse::<std::net::IpAddr>().is_err() {
                    diags.error(hpath, e);
                    continue;
                }
            }
            let mut taken: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for domain in domains(host, &meta.namespace, &routing.cluster_domain, identity) {
                if let Some(owner) = rules.hosts.insert(&domain, vs_index) {
                    taken.entry(owner).or_default().push(domain);
                }
            }
            // Once per host and owner, not per alias; istioctl analyze's IST0109
            // (ConflictingMeshGatewayVirtualServiceHosts) names both VirtualServices too.
            for (owner, names) in taken {
                diags.warn(
                    hpath.clone(),
                    format!(
                        "VirtualService {}, listed first, already serves {}: requests for it never \
                         reach VirtualService {id} (istiod too uses one VirtualService per host on \
                         a sidecar); merge the two",
                        rules.virtual_services[owner].id,
                        names.join(", ")
                    ),
                );
            }
        }
        let mut names = HashMap::new();
        let mut routes = Vec::new();
        for (i, raw) in std::mem::take(http).into_iter().enumerate() {
            let rpath = format!("{path}.http[{i}]");
            let Some(http) = diags.http_route(raw, &rpath) else {
                continue;
            };
            if !http.name.is_empty() {
                if let Some(first) = names.insert(http.name.clone(), i) {
                    diags.error(
                        format!("{rpath}.name"),
                        format!("duplicate route name {:?} (also http[{first}])", http.name),
                    );
                }
            }
            lint::http_route(&http, &rpath, diags);
            routes.push((i, rpath, http));
        }
        if !vs.hosts.is_empty() {
            // A delegate's routes are merged under a root route, which may drop some.
            lint::unreachable_routes(&routes, diags);
        }
        rules.virtual_services.push(VirtualService {
            id,
            routes: Vec::new(),
        });
        parsed.push(ParsedVs {
            namespace: &meta.namespace,
            gateways: &vs.gateways,
            is_delegate: vs.hosts.is_empty(),
            routes,
        });
    }

    // Pass 2: compile. A delegating route is replaced by the delegate's routes merged into it.
    for vs_index in 0..parsed.len() {
        let pvs = &parsed[vs_index];
        let scope = |namespace| Scope {
            namespace,
            gateways: pvs.gateways,
            identity,
            cluster_name: &routing.cluster_name,
            cluster_domain: &routing.cluster_domain,
            route_has_istio_defaults: routing.route_has_istio_defaults,
            subsets: &subsets,
            only_ports: &only_ports,
            portless,
        };
        let mut ids = Vec::new();
        for (i, rpath, http) in &pvs.routes {
            let Some(d) = &http.delegate else {
                let compiled = route::compile_route(
                    http,
                    *i,
                    vs_index,
                    &Path::Text(rpath),
                    &scope(pvs.namespace),
                    diags,
                );
                // A delegate's own routes are checked here and run only merged into a root.
                if let (Some(r), false) = (compiled, pvs.is_delegate) {
                    ids.push(rules.routes.len());
                    rules.routes.push(r);
                }
                continue;
            };
            let dpath = format!("{rpath}.delegate");
            if pvs.is_delegate {
                diags.error(
                    dpath,
                    "a delegate VirtualService cannot delegate again; Istio supports one level",
                );
                continue;
            }
            if !http.route.is_empty() || http.redirect.is_some() || http.direct_response.is_some() {
                diags.error(
                    rpath,
                    "only one of route, redirect, directResponse or delegate may be set",
                );
                continue;
            }
            let ns = d
                .namespace
                .clone()
                .unwrap_or_else(|| pvs.namespace.to_string());
            let Some(&target) = by_name.get(&(ns.clone(), d.name.clone())) else {
                diags.error(
                    dpath,
                    format!(
                        "delegate VirtualService {ns}/{} is not in resources",
                        d.name
                    ),
                );
                continue;
            };
            let leaf_vs = &parsed[target];
            if !leaf_vs.is_delegate {
                diags.error(
                    dpath,
                    format!(
                        "delegate VirtualService {ns}/{} must not have hosts",
                        d.name
                    ),
                );
                continue;
            }
            for (j, lpath, leaf) in &leaf_vs.routes {
                if leaf.delegate.is_some() {
                    continue; // refused where the delegate itself is compiled
                }
                // Merging multiplies routes: a delegate used by many roots counts each time.
                if rules.routes.len() >= MAX_ROUTES {
                    diags.error(
                        dpath,
                        format!("merging delegates makes over {MAX_ROUTES} http routes, the limit per filter"),
                    );
                    break;
                }
                let Some(merged) = delegate::merge(http, leaf) else {
                    diags.warn(
                        lpath.clone(),
                        format!(
                            "dropped under {rpath}: its match conflicts with the root route's (as istiod does)"
                        ),
                    );
                    continue;
                };
                // Destinations resolve in the delegate's namespace; gateways are the root's.
                let leaf_scope = scope(leaf_vs.namespace);
                if let Some(r) = route::compile_route(
                    &merged,
                    *j,
                    target,
                    &Path::Text(lpath),
                    &leaf_scope,
                    diags,
                ) {
                    ids.push(rules.routes.len());
                    rules.routes.push(r);
                }
            }
        }
        rules.virtual_services[vs_index].routes = ids;
        // Linear memory never shrinks: what the typed routes of a compiled VirtualService free
        // is where later compiled routes go, instead of growing the VM. Delegates are merged
        // under later roots, so theirs stay.
        if !parsed[vs_index].is_delegate {
            parsed[vs_index].routes = Vec::new();
        }
    }
    rules.needs_listener_port = rules.routes.iter().any(|r| match &r.action {
        Action::Forward(split) => split
            .destinations
            .iter()
            .any(|d| matches!(d.cluster, ClusterName::ListenerPort { .. })),
        _ => false,
    });
    rules.rate_limits = ratelimit::compile(&config.rate_limits, &rules, diags);
    rules.routes.shrink_to_fit();
    rules.virtual_services.shrink_to_fit();
    rules
}

/// A VirtualService with its routes parsed.
struct ParsedVs<'c> {
    namespace: &'c str,
    gateways: &'c [String],
    is_delegate: bool,
    routes: Vec<(usize, String, config::HttpRoute)>,
}

/// The domains istiod writes into a virtual host for a VirtualService host
/// (`generateAltVirtualHostsForKubernetesService`): a Kubernetes service is also reachable as
/// `name.ns` and `name.ns.svc`, and as `name` from its own namespace. Gateways get the host as
/// written. Without node metadata (plain Envoy) the short name is kept too.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn domains(
    host: &str,
    namespace: &str,
    cluster_domain: &str,
    identity: &dyn Identity,
) -> Vec<String> {
    let fqdn = expand_host(host, namespace, cluster_domain);
    let mut out = vec![fqdn.clone()];
    if identity.kind() == ProxyKind::Gateway {
        return out;
    }
    if let Some(short) = fqdn.strip_suffix(&format!(".svc.{cluster_domain}")) {
        if let Some((name, ns)) = short.split_once('.') {
            if identity.namespace().is_none_or(|own| own == ns) {
                out.push(name.to_string());
            }
        }
        out.push(short.to_string());
        out.push(format!("{short}.svc"));
    }
    out
}

fn sticky_key(s: Option<&StickySplit>, diags: &mut Diagnostics) -> Option<StickyKey> {
    let s = s?;
    match (&s.header, &s.cookie) {
        (Some(h), None) if !h.is_empty() => Some(StickyKey::Header(h.to_ascii_lowercase())),
        (None, Some(c)) if !c.is_empty() => Some(StickyKey::Cookie(c.clone())),
        _ => {
            diags.error("routing.stickySplit", "set exactly one of header or cookie");
            None
        }
    }
}

#[cfg(test)]
mod tests;
