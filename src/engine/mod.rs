//! The per-request decision: which VirtualService and route a request takes and what happens
//! to it. Pure: no host calls; randomness comes from the caller's generator.

mod edits;
mod reply;

use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::http::{LocalReply, Request};
use crate::rules::{
    Abort, Action, MatchBlock, PathRewrite, RouteId, RuleSet, StickyKey, StrMatcher,
};

/// Parts per million: the denominator istiod gives Envoy's fault percentages.
const MILLION: u32 = 1_000_000;

#[derive(Debug)]
pub enum Decision {
    /// No VirtualService for this host: the request passes untouched.
    Pass,
    Act(Verdict),
}

#[derive(Debug)]
pub struct Verdict {
    pub virtual_service: usize,
    /// `None` when the VirtualService had no route for the request (Envoy answers 404).
    pub route: Option<RouteId>,
    /// Hold the request this long before the outcome (fault delay).
    pub delay: Option<Duration>,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    Reply(LocalReply),
    Forward(Forward),
}

/// Forward to an upstream cluster with the route's edits.
#[derive(Debug, PartialEq, Eq)]
pub struct Forward {
    pub route: RouteId,
    /// Index into the route's split.
    pub destination: usize,
    /// New `:path` when the route rewrites the URI.
    pub path: Option<String>,
    /// The allowed CORS origin to echo in the response.
    pub cors_origin: Option<String>,
    /// The cluster, when it is named per request (`ClusterName::ListenerPort`).
    pub cluster: Option<String>,
}

/// How much of the path a route's URI match covers, for `rewrite.uri`.
#[derive(Debug, Clone, Copy)]
enum MatchedPath {
    Prefix(usize),
    Whole,
}

impl RuleSet {
    /// Decides what happens to `req`. `rng` supplies the fault and split samples.
    pub fn decide(&self, req: &Request<'_>, rng: &mut fastrand::Rng) -> Decision {
        let host = req.host();
        let vs_index = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.lookup(&host.to_ascii_lowercase())
        } else {
            self.hosts.lookup(host)
        };
        let Some(vs_index) = vs_index else {
            return Decision::Pass;
        };
        let vs = &self.virtual_services[vs_index];
        let Some((route_id, matched)) = self.find_route(&vs.routes, req) else {
            return Decision::Act(Verdict {
                virtual_service: vs_index,
                route: None,
                delay: None,
                outcome: Outcome::Reply(LocalReply::no_route()),
            });
        };
        let route = &self.routes[route_id];
        let verdict = |delay, outcome| {
            Decision::Act(Verdict {
                virtual_service: vs_index,
                route: Some(route_id),
                delay,
                outcome,
            })
        };

        // Envoy's filter order in Istio: CORS answers preflights before faults apply.
        let origin = req.header("origin").filter(|o| !o.is_empty());
        let mut cors_origin = None;
        if let (Some(cors), Some(origin)) = (&route.cors, origin) {
            let preflight = req.method == "OPTIONS"
                && req
                    .header("access-control-request-method")
                    .is_some_and(|m| !m.is_empty());
            let allowed = cors.allows(origin);
            if preflight && (allowed || !cors.forward_unmatched_preflights) {
                let reply = LocalReply::preflight(cors, allowed.then_some(origin), req);
                return verdict(None, Outcome::Reply(self.finish(reply, route_id, None)));
            }
            if allowed {
                cors_origin = Some(origin.to_string());
            }
        }

        let mut delay = None;
        let mut abort = None;
        if let Some(fault) = &route.fault {
            if let Some((d, ppm)) = fault.delay {
                if sample(rng, ppm) {
                    delay = Some(d);
                }
            }
            if let Some((a, ppm)) = fault.abort {
                if sample(rng, ppm) {
                    abort = Some(a);
                }
            }
        }
        let reply = match (abort, &route.action) {
            (Some(Abort::Http(status)), _) => LocalReply::abort(status),
            (Some(Abort::Grpc(code)), _) => LocalReply::grpc_abort(code),
            (None, Action::Forward(split)) => {
                let destination = if split.destinations.len() == 1 {
                    0
                } else {
                    split.pick(self.split_point(req, route_id, split.total_weight, rng))
                };
                let cluster = split.destinations.get(destination).and_then(|d| {
                    d.cluster
                        .per_request(req.listener_port.or_else(|| req.port()))
                });
                let forward = Forward {
                    route: route_id,
                    destination,
                    path: rewrite_path(route.path_rewrite.as_ref(), req.path, matched),
                    cors_origin,
                    cluster,
                };
                return verdict(delay, Outcome::Forward(forward));
            }
            (None, Action::Redirect(r)) => LocalReply::redirect(r, req),
            (None, Action::Respond(d)) => LocalReply::direct(d),
        };
        let reply = self.finish(reply, route_id, cors_origin.as_deref());
        verdict(delay, Outcome::Reply(reply))
    }

    /// Envoy finishes a local reply on a route with the route's response headers, and its CORS
    /// filter adds the allowed origin's headers to every response.
    pub(crate) fn finish(
        &self,
        mut reply: LocalReply,
        route_id: RouteId,
        cors_origin: Option<&str>,
    ) -> LocalReply {
        let route = &self.routes[route_id];
        let _ = edits::apply_ops(&route.response_headers, &mut |e| {
            reply.edit(e);
            Ok::<(), ()>(())
        });
        if let (Some(cors), Some(origin)) = (&route.cors, cors_origin) {
            let _ = edits::cors_response(cors, origin, &mut |e| {
                reply.edit(e);
                Ok::<(), ()>(())
            });
        }
        reply
    }

    /// The first route of `ids` matching `req`, with how much of the path its match covers.
    fn find_route(
        &self,
        ids: &[RouteId],
        req: &Request<'_>,
    ) -> Option<(RouteId, Option<MatchedPath>)> {
        ids.iter().find_map(|&id| {
            let route = &self.routes[id];
            if route.matches.is_empty() {
                return Some((id, None));
            }
            let block = route.matches.iter().find(|m| m.matches(req))?;
            Some((id, matched_path(block)))
        })
    }

    fn split_point(
        &self,
        req: &Request<'_>,
        route: RouteId,
        total: u32,
        rng: &mut fastrand::Rng,
    ) -> u32 {
        let key = match &self.sticky {
            Some(StickyKey::Header(name)) => req.header(name),
            Some(StickyKey::Cookie(name)) => req.cookie(name),
            None => None,
        };
        match key {
            Some(k) if !k.is_empty() => {
                (xxh3_64_with_seed(k.as_bytes(), route as u64) % u64::from(total)) as u32
            }
            _ => rng.u32(0..total),
        }
    }
}

/// A `ppm` in a million chance (faults, and rate limits' `filter_enabled` / `filter_enforced`).
pub(crate) fn sample(rng: &mut fastrand::Rng, ppm: u32) -> bool {
    ppm > 0 && (ppm >= MILLION || rng.u32(0..MILLION) < ppm)
}

fn matched_path(block: &MatchBlock) -> Option<MatchedPath> {
    match block.uri.as_ref()? {
        m @ (StrMatcher::Prefix(_) | StrMatcher::PrefixIgnoreCase(_)) => {
            m.prefix_len().map(MatchedPath::Prefix)
        }
        _ => Some(MatchedPath::Whole),
    }
}

/// Envoy's `prefix_rewrite` replaces the matched prefix (a route without URI match is prefix
/// `/`; exact and regex matches cover the whole path); `regex_rewrite` substitutes within the
/// path and keeps the query.
fn rewrite_path(
    rewrite: Option<&PathRewrite>,
    path: &str,
    matched: Option<MatchedPath>,
) -> Option<String> {
    // Bytes: see `Request::path_only`.
    let end = path
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    match rewrite? {
        PathRewrite::Prefix(uri) => {
            let cut = match matched {
                Some(MatchedPath::Prefix(n)) => n.min(end),
                Some(MatchedPath::Whole) => end,
                None => 1.min(end),
            };
            Some(format!("{uri}{}", &path[cut..]))
        }
        PathRewrite::Regex {
            pattern,
            replacement,
        } => {
            let replaced = pattern.replace_all(&path[..end], replacement.as_str());
            Some(format!("{replaced}{}", &path[end..]))
        }
    }
}

#[cfg(test)]
mod tests;
