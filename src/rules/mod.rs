//! The compiled rule tables: everything a request decision needs, built once at configure
//! time. Nothing here is parsed or allocated per request.

pub mod hosts;
pub mod matchers;
pub mod ratelimit;

use std::time::Duration;

use regex::Regex;

pub use hosts::HostIndex;
pub use matchers::{HeaderCondition, MatchBlock, QueryCondition, StrMatcher};

/// Index of a route in [`RuleSet::routes`].
pub type RouteId = usize;

#[derive(Debug, Default)]
pub struct RuleSet {
    pub cluster_header: String,
    /// Some destination's cluster carries the port the request arrived on.
    pub needs_listener_port: bool,
    pub sticky: Option<StickyKey>,
    pub hosts: HostIndex,
    pub virtual_services: Vec<VirtualService>,
    pub routes: Vec<Route>,
    pub authz: crate::authz::Authz,
    pub authn: crate::authn::Authn,
    pub rate_limits: ratelimit::RateLimits,
}

#[derive(Debug, Clone)]
pub enum StickyKey {
    Header(String),
    Cookie(String),
}

#[derive(Debug)]
pub struct VirtualService {
    /// `namespace/name`, as shown in logs.
    pub id: String,
    /// Routes in order, delegated routes merged in where their root route stood.
    pub routes: Vec<RouteId>,
}

#[derive(Debug)]
pub struct Route {
    /// Index of the VirtualService that wrote this route (the delegate for delegated routes).
    pub virtual_service: usize,
    /// Route name, or `route-<index>` when the route has none; used in metrics and logs.
    pub name: String,
    /// Empty: matches every request.
    pub matches: Vec<MatchBlock>,
    pub action: Action,
    pub fault: Option<Fault>,
    pub cors: Option<Cors>,
    pub path_rewrite: Option<PathRewrite>,
    /// `rewrite.authority`, or a `host` / `:authority` header set (istiod turns both into
    /// Envoy's `host_rewrite_literal`).
    pub authority_rewrite: Option<String>,
    pub request_headers: SparseHeaderOps,
    pub response_headers: SparseHeaderOps,
    /// Envoy router headers carrying timeout and retry policy.
    pub router_headers: Vec<RouterHeader>,
}

/// An Envoy router header: its name is always one of Envoy's, and Istio's defaults are
/// constants too, so neither costs an allocation per route.
pub type RouterHeader = (&'static str, std::borrow::Cow<'static, str>);

#[derive(Debug)]
pub enum Action {
    Forward(Split),
    Redirect(Redirect),
    Respond(DirectResponse),
}

#[derive(Debug)]
pub struct Split {
    pub destinations: Vec<WeightedDestination>,
    pub total_weight: u32,
}

/// The Envoy cluster a destination names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterName {
    Fixed(String),
    /// A destination without a port on a sidecar: the cluster carries the port the request
    /// arrived on (istiod's listener port), between these two texts.
    ListenerPort {
        before: String,
        after: String,
    },
}

impl ClusterName {
    /// The name for one request, when it is made per request (what `Forward` carries).
    pub fn per_request(&self, listener_port: Option<u16>) -> Option<String> {
        match self {
            ClusterName::Fixed(_) => None,
            ClusterName::ListenerPort { .. } => Some(self.render(listener_port).into_owned()),
        }
    }

    pub fn render(&self, listener_port: Option<u16>) -> std::borrow::Cow<'_, str> {
        match self {
            ClusterName::Fixed(name) => name.into(),
            ClusterName::ListenerPort { before, after } => {
                let port = listener_port.map(|p| p.to_string()).unwrap_or_default();
                format!("{before}{port}{after}").into()
            }
        }
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterName::Fixed(name) => f.write_str(name),
            ClusterName::ListenerPort { before, after } => write!(f, "{before}<port>{after}"),
        }
    }
}

#[derive(Debug)]
pub struct WeightedDestination {
    pub cluster: ClusterName,
    pub weight: u32,
    pub request_headers: SparseHeaderOps,
    pub response_headers: SparseHeaderOps,
}

impl Split {
    /// Picks the destination for a point in `0..total_weight`, as Envoy's weighted clusters do.
    pub fn pick(&self, point: u32) -> usize {
        let mut acc = 0u32;
        for (i, d) in self.destinations.iter().enumerate() {
            acc += d.weight;
            if point < acc {
                return i;
            }
        }
        self.destinations.len().saturating_sub(1)
    }
}

#[derive(Debug)]
pub enum RedirectPort {
    /// Keep the request's port, dropping it when it is the old scheme's default.
    Keep,
    Fixed(u16),
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Debug)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: RedirectPort,
    pub scheme: Option<String>,
    pub code: u32,
}

#[derive(Debug)]
pub struct DirectResponse {
    pub status: u32,
    pub body: Vec<u8>,
}

/// Percentages are parts per million, as istiod sends them to Envoy's fault filter.
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, u32)>,
    pub abort: Option<(Abort, u32)>,
}

#[derive(Debug, Clone, Copy)]
pub enum Abort {
    Http(u32),
    Grpc(u32),
}

#[derive(Debug)]
pub enum PathRewrite {
    /// `rewrite.uri`: replaces the matched prefix (the whole path for exact/regex matches).
    Prefix(String),
    /// `rewrite.uriRegexRewrite`: every match of the pattern is replaced.
    Regex { pattern: Regex, replacement: String },
}

#[derive(Debug)]
pub struct Cors {
    pub origins: Vec<StrMatcher>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: String,
    pub allow_credentials: bool,
    /// `unmatchedPreflights: FORWARD` (the default) sends preflights from other origins upstream.
    pub forward_unmatched_preflights: bool,
}

impl Cors {
    /// Envoy's `isOriginAllowed`: a matcher that matches `*` allows every origin.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }
}

/// Header edits in Envoy's order: removals first, then `set` (overwrite), then `add` (append).
#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    pub remove: Vec<String>,
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    /// A `host` / `:authority` set or add: an authority rewrite, as istiod translates it.
    pub authority: Option<String>,
}

/// [`HeaderOps`] boxed only when there are any: most routes and destinations edit no headers,
/// and four inline `HeaderOps` (96 bytes each) were a quarter of a split route's memory. Reads
/// as a `HeaderOps` (empty when there are none).
#[derive(Debug, Default)]
pub struct SparseHeaderOps(Option<Box<HeaderOps>>);

static NO_HEADER_OPS: HeaderOps = HeaderOps {
    remove: Vec::new(),
    set: Vec::new(),
    add: Vec::new(),
    authority: None,
};

impl From<HeaderOps> for SparseHeaderOps {
    fn from(ops: HeaderOps) -> Self {
        let empty = ops.remove.is_empty()
            && ops.set.is_empty()
            && ops.add.is_empty()
            && ops.authority.is_none();
        SparseHeaderOps((!empty).then(|| Box::new(ops)))
    }
}

impl std::ops::Deref for SparseHeaderOps {
    type Target = HeaderOps;

    fn deref(&self) -> &HeaderOps {
        self.0.as_deref().unwrap_or(&NO_HEADER_OPS)
    }
}
