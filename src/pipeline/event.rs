//! What the pipeline found out and decided, step by step: the host turns events into metrics
//! and log lines, `explain` prints them. Events hold indices and borrowed names; the text is
//! made only when someone reads it.

use std::rc::Rc;
use std::time::Duration;

use crate::authz::path::PathRejection;
use crate::http::Request;
use crate::jwt::{JwtError, Verified};
use crate::rules::{RouteId, RuleSet};

#[derive(Debug, Clone)]
pub enum Event<'r> {
    /// The client sent the cluster header: it is removed, only the filter picks clusters.
    ClientClusterHeaderRemoved,
    /// No token anywhere: the request goes on without a request principal.
    JwtMissing,
    JwtVerified {
        provider: usize,
        token: Rc<Verified>,
    },
    JwtRejected(JwtError),
    /// The token's provider has `jwksUri` keys not fetched yet (index into `authn.remote`).
    JwtKeysPending(usize),
    /// The path could be read two ways: refused before authorization (400).
    PathRefused(PathRejection),
    /// Authorization saw, and the upstream gets, the normalized path.
    PathNormalized,
    /// Envoy replaced the peer address with an X-Forwarded-For entry and did not append the
    /// peer: policies on `source.ip` / `ipBlocks` fail closed.
    SourceHidden,
    /// The peer certificate could not be parsed: principals match nothing on it.
    PeerCertificateUnreadable,
    DryRunWouldDeny,
    Audited(&'r str, usize),
    /// Allowed, by this ALLOW policy and rule, or because no ALLOW policy exists.
    Allowed(Option<(&'r str, usize)>),
    DeniedBy(&'r str, usize),
    /// ALLOW policies exist and none matched.
    NoAllowMatched,
    /// No VirtualService for the host: Envoy's own routes take the request.
    NoVirtualService,
    /// The VirtualService, and its route (`None`: no route matched, 404).
    Routed {
        virtual_service: usize,
        route: Option<RouteId>,
    },
    FaultDelay(Duration),
    FaultAbort,
    /// The rate limit (by name) had tokens.
    RateLimitAllowed(&'r str),
    /// Refused by the rate limit.
    RateLimited(&'r str),
    /// Over the rate limit, but `filter_enforced` let the request through (shadow mode).
    RateLimitShadowed(&'r str),
}

impl Event<'_> {
    /// One line for a reader: `explain`'s output and the filter's log, in the same words.
    /// `req` is the request as the pipeline left it (see [`super::Plan::request`]).
    pub fn describe(&self, rules: &RuleSet, req: &Request<'_>) -> String {
        match self {
            Event::ClientClusterHeaderRemoved => format!(
                "cluster header: the client's {} is removed: only the filter picks clusters",
                rules.cluster_header
            ),
            Event::JwtMissing => {
                "jwt: no token: the request goes on without a request principal".into()
            }
            Event::JwtVerified { provider, token } => format!(
                "jwt: token verified by RequestAuthentication {} (issuer {:?}, subject {:?})",
                rules
                    .authn
                    .providers
                    .get(*provider)
                    .map_or("", |p| p.id.as_str()),
                token.issuer,
                token.subject
            ),
            Event::JwtRejected(e) => format!("jwt: token refused: {}", e.message()),
            Event::JwtKeysPending(i) => format!(
                "jwt: the token's keys come from {}, not fetched yet: the request waits for them",
                rules.authn.remote.get(*i).map_or("", |r| r.uri.as_str())
            ),
            Event::PathRefused(why) => {
                format!("authz: the path could be read two ways: {}", why.detail())
            }
            Event::PathNormalized => {
                format!("authz: the upstream gets the normalized path {}", req.path)
            }
            Event::SourceHidden => "authz: source.ip unknown: Envoy took the client address \
                from X-Forwarded-For without appending the connection's peer \
                (use_remote_address is off): policies on ipBlocks / source.ip fail closed"
                .into(),
            Event::PeerCertificateUnreadable => "authz: the peer certificate could not be \
                parsed: principals match nothing on this connection"
                .into(),
            Event::DryRunWouldDeny => {
                "authz: dry-run policies would deny this request (not enforced)".into()
            }
            Event::Audited(policy, rule) => format!(
                "authz: AUDIT policy {policy} rules[{rule}] matches (logged, decides nothing)"
            ),
            Event::Allowed(Some((policy, rule))) => {
                format!("authz: allowed by ALLOW policy {policy} rules[{rule}]")
            }
            Event::Allowed(None) => {
                "authz: allowed: no DENY policy matches and there is no ALLOW policy".into()
            }
            Event::DeniedBy(policy, rule) => {
                format!("authz: denied by DENY policy {policy} rules[{rule}]")
            }
            Event::NoAllowMatched => "authz: denied: no ALLOW policy matches".into(),
            Event::NoVirtualService => format!(
                "virtual service: none for host {:?}: the filter leaves the request to \
                 Envoy's other routes",
                req.host()
            ),
            Event::Routed {
                virtual_service,
                route,
            } => {
                let vs = rules
                    .virtual_services
                    .get(*virtual_service)
                    .map_or("", |v| v.id.as_str());
                match route.and_then(|r| rules.routes.get(r)) {
                    Some(r) if r.virtual_service == *virtual_service => {
                        format!("virtual service: {vs}, route: {}", r.name)
                    }
                    Some(r) => format!(
                        "virtual service: {vs}, route: {} (delegated to {})",
                        r.name,
                        rules
                            .virtual_services
                            .get(r.virtual_service)
                            .map_or("", |v| v.id.as_str())
                    ),
                    None => format!("virtual service: {vs}, route: none matches"),
                }
            }
            Event::FaultDelay(d) => format!("fault: delay {} ms injected", d.as_millis()),
            Event::FaultAbort => "fault: abort injected".into(),
            Event::RateLimitAllowed(name) => format!("rate limit: {name}: a token was taken"),
            Event::RateLimited(name) => format!("rate limit: {name}: no token left: refused"),
            Event::RateLimitShadowed(name) => format!(
                "rate limit: {name}: no token left, not enforced (filterEnforced): let through"
            ),
        }
    }
}
