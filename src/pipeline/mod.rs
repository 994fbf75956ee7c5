//! One request's whole decision, in the order of the Envoy filters istiod configures for the
//! same policy: jwt_authn (RequestAuthentication), the connection manager's path
//! normalization and RBAC (AuthorizationPolicy), then the router with the VirtualService's
//! route, CORS and faults. Pure: the host hands over the headers, the connection facts, the
//! keys, the token cache, the clock and the random source, and gets a [`Plan`] back, which
//! the filter applies and `meshrules explain` prints.
//!
//! Each step sees the request as the steps before it left it, as Envoy's filters do: the
//! client's cluster and JWT output headers are gone, the token is out of the query, the
//! claim headers are set (routes may match them), and authorization and routing see the
//! normalized path, which the upstream gets.

mod event;
mod facts;

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use crate::authn::{self, KeyState};
use crate::authz::{path, peer, Facts, JwtFacts, Peer, Verdict};
use crate::engine::{self, Decision, Forward};
use crate::http::{Edit, LocalReply, ReplyKind, Request};
use crate::jwt::{SignatureVerifier, TokenCache, Verified};
use crate::ratelimit::{self, Store};
use crate::rules::ratelimit::AppendAction;
use crate::rules::RuleSet;

pub use event::Event;
pub use facts::{Address, Connection, NoConnection, PeerCertificate};

/// What the pipeline needs beside the rules and the headers.
pub struct Env<'e, 'k> {
    pub connection: &'e dyn Connection,
    /// Unix milliseconds.
    pub now_ms: u64,
    /// Where each `jwksUri` key set stands (index into `authn.remote`).
    pub keys: &'k dyn Fn(usize) -> KeyState<'k>,
    pub token_cache: &'e mut TokenCache,
    /// Checks the signatures of tokens not in the cache.
    pub signatures: &'e dyn SignatureVerifier,
    /// Fault, split and rate limit samples.
    pub rng: &'e mut fastrand::Rng,
    /// The rate limits' token buckets.
    pub buckets: &'e mut dyn Store,
}

/// What happens to the request once the plan's edits are applied.
#[derive(Debug)]
pub enum Outcome {
    /// No VirtualService for the host: Envoy's own routes take the request.
    Pass,
    /// Forward through the route's cluster, after `delay` when a fault delays it; the
    /// response gets `response_headers` too (a rate limit's `x-ratelimit-*`).
    Forward {
        forward: Forward,
        delay: Option<Duration>,
        response_headers: Vec<(&'static str, String)>,
    },
    /// The filter answers, after `delay` when a fault delays it.
    Reply {
        reply: LocalReply,
        delay: Option<Duration>,
    },
    /// Hold the request until key set `.0` is fetched (or fails), then run it again.
    WaitForKeys(usize),
}

/// A request edit made before routing, owned: it came from the request or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Remove(String),
    Set(String, String),
    Add(String, String),
}

impl Change {
    fn of(e: Edit<'_>) -> Change {
        match e {
            Edit::Remove(name) => Change::Remove(name.into()),
            Edit::Set(name, value) => Change::Set(name.into(), value.into()),
            Edit::Add(name, value) => Change::Add(name.into(), value.into()),
        }
    }

    fn edit(&self) -> Edit<'_> {
        match self {
            Change::Remove(name) => Edit::Remove(name),
            Change::Set(name, value) => Edit::Set(name, value),
            Change::Add(name, value) => Edit::Add(name, value),
        }
    }
}

/// The decision for one request: its edits, its outcome and the events that explain it.
#[derive(Debug)]
pub struct Plan<'r> {
    rules: &'r RuleSet,
    /// The request as the last step saw it.
    headers: Vec<(String, String)>,
    listener_port: Option<u16>,
    changes: Vec<Change>,
    pub outcome: Outcome,
    pub events: Vec<Event<'r>>,
}

/// Runs the request through every step and returns what to do with it.
pub fn run<'r>(rules: &'r RuleSet, headers: Vec<(String, String)>, env: Env<'_, '_>) -> Plan<'r> {
    let mut plan = Plan {
        rules,
        headers,
        listener_port: None,
        changes: Vec::new(),
        outcome: Outcome::Pass,
        events: Vec::new(),
    };
    plan.outcome = plan.decide(env);
    plan
}

/// The connection's local address, read once.
struct Destination<'e> {
    connection: &'e dyn Connection,
    read: Option<Address>,
}

impl Destination<'_> {
    fn get(&mut self) -> Address {
        *self
            .read
            .get_or_insert_with(|| self.connection.destination_address().unwrap_or_default())
    }
}

fn view(headers: &[(String, String)], listener_port: Option<u16>) -> Request<'_> {
    let mut req = Request::from_headers(headers);
    req.listener_port = listener_port;
    req
}

impl<'r> Plan<'r> {
    /// The request as the pipeline left it (before the route's own edits).
    pub fn request(&self) -> Request<'_> {
        view(&self.headers, self.listener_port)
    }

    /// Every request edit, in order: those made before routing, then the route's (header
    /// edits, router headers, rewrites and the cluster header, set last).
    pub fn request_edits<E>(
        &self,
        mut apply: impl FnMut(Edit<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        for e in self.edits_before_routing() {
            apply(e)?;
        }
        if let Outcome::Forward { forward, .. } = &self.outcome {
            let path = self.request().path;
            self.rules.request_edits(forward, path, &mut apply)?;
        }
        Ok(())
    }

    /// The edits authentication and authorization made (the client's cluster and JWT output
    /// headers removed, the token's headers, the path without the token, the normalized path).
    pub fn edits_before_routing(&self) -> impl Iterator<Item = Edit<'_>> {
        self.changes.iter().map(Change::edit)
    }

    /// One line per event, in `explain`'s and the log's words.
    pub fn describe(&self, event: &Event<'_>) -> String {
        event.describe(self.rules, &self.request())
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }

    /// Makes an edit and lets the later steps see it.
    fn change(&mut self, c: Change) {
        c.edit().apply_to(&mut self.headers);
        self.changes.push(c);
    }

    fn decide(&mut self, mut env: Env<'_, '_>) -> Outcome {
        let rules = self.rules;
        if self.has(&rules.cluster_header) {
            self.events.push(Event::ClientClusterHeaderRemoved);
            self.change(Change::Remove(rules.cluster_header.clone()));
        }
        let mut destination = Destination {
            connection: env.connection,
            read: None,
        };
        if rules.needs_listener_port {
            self.listener_port = destination.get().port;
        }
        let mut jwt = None;
        if !rules.authn.is_empty() {
            match self.authenticate(env.now_ms / 1000, env.keys, env.token_cache, env.signatures) {
                Ok(token) => jwt = token,
                Err(outcome) => return *outcome,
            }
        }
        if !rules.authz.is_empty() {
            if let Err(reply) = self.authorize(env.connection, &mut destination, jwt.as_deref()) {
                return Outcome::Reply { reply, delay: None };
            }
        }
        self.route(&mut env, jwt.as_deref())
    }

    /// RequestAuthentication: the verified token, if any, once its edits are made.
    fn authenticate<'k>(
        &mut self,
        now: u64,
        keys: &'k dyn Fn(usize) -> KeyState<'k>,
        cache: &mut TokenCache,
        signatures: &dyn SignatureVerifier,
    ) -> Result<Option<Rc<Verified>>, Box<Outcome>> {
        let authn = &self.rules.authn;
        // A client cannot send what a verified token would set (Envoy's jwt_authn).
        for name in &authn.output_headers {
            if self.has(name) {
                self.change(Change::Remove(name.clone()));
            }
        }
        let req = view(&self.headers, self.listener_port);
        match authn.authenticate(&req, now, keys, cache, signatures) {
            authn::Outcome::Missing => {
                self.events.push(Event::JwtMissing);
                Ok(None)
            }
            authn::Outcome::Verified {
                token,
                provider,
                location,
            } => {
                let mut changes = Vec::new();
                let new_path = authn.apply_edits(&req, &token, provider, location, &mut |e| {
                    changes.push(Change::of(e));
                    Ok::<(), Infallible>(())
                });
                let Ok(new_path) = new_path;
                for c in changes {
                    self.change(c);
                }
                if let Some(p) = new_path {
                    self.change(Change::Set(":path".into(), p));
                }
                self.events.push(Event::JwtVerified {
                    provider,
                    token: Rc::clone(&token),
                });
                Ok(Some(token))
            }
            authn::Outcome::Rejected(error) => {
                let reply = authn::rejection(&req, &error);
                self.events.push(Event::JwtRejected(error));
                Err(Box::new(Outcome::Reply { reply, delay: None }))
            }
            authn::Outcome::NeedKeys(i) => {
                self.events.push(Event::JwtKeysPending(i));
                Err(Box::new(Outcome::WaitForKeys(i)))
            }
        }
    }

    /// AuthorizationPolicy on the normalized path; the upstream then gets that path.
    fn authorize(
        &mut self,
        connection: &dyn Connection,
        destination: &mut Destination<'_>,
        jwt: Option<&Verified>,
    ) -> Result<(), LocalReply> {
        let authz = &self.rules.authz;
        let req = view(&self.headers, self.listener_port);
        let n = match path::normalize(req.path, authz.escaped_slashes) {
            Ok(n) => n,
            Err(why) => {
                self.events.push(Event::PathRefused(why));
                return Err(LocalReply::bad_path(why.detail()));
            }
        };
        let needs = authz.needs;
        let (source_ip, remote_ip) = if needs.source_ip {
            authz.peers(connection.source_address().as_deref(), &req)
        } else {
            (Peer::None, None)
        };
        if source_ip == Peer::Hidden {
            self.events.push(Event::SourceHidden);
        }
        let dest = if needs.destination {
            destination.get()
        } else {
            Address::default()
        };
        let sni = needs
            .sni
            .then(|| connection.requested_server_name())
            .flatten();
        let peer_names = match needs.peer.then(|| connection.peer_certificate()).flatten() {
            Some(PeerCertificate::UrlEncodedPem(pem)) => {
                peer::peer_names(&pem).unwrap_or_else(|| {
                    self.events.push(Event::PeerCertificateUnreadable);
                    Vec::new()
                })
            }
            Some(PeerCertificate::Names(names)) => names,
            None => Vec::new(),
        };
        let facts = Facts {
            req: &req,
            path: &n.path,
            source_ip,
            remote_ip,
            destination_ip: dest.ip,
            destination_port: dest.port,
            sni: sni.as_deref(),
            peer_names: &peer_names,
            jwt: jwt.map(JwtFacts::of),
        };
        let eval = authz.evaluate(&facts);
        if eval.dry_run_would_deny {
            self.events.push(Event::DryRunWouldDeny);
        }
        if let Some((policy, rule)) = eval.audited {
            self.events.push(Event::Audited(policy, rule));
        }
        match eval.verdict {
            Verdict::Allow => self.events.push(Event::Allowed(eval.allowed_by)),
            Verdict::DeniedBy(policy, rule) => {
                self.events.push(Event::DeniedBy(policy, rule));
                return Err(LocalReply::rbac_denied());
            }
            Verdict::NoAllowMatched => {
                self.events.push(Event::NoAllowMatched);
                return Err(LocalReply::rbac_denied());
            }
        }
        // The upstream gets the path that was authorized (Envoy's normalize_path).
        let normalized = n.changed().then(|| format!("{}{}", n.path, n.query));
        if let Some(p) = normalized {
            self.change(Change::Set(":path".into(), p));
            self.events.push(Event::PathNormalized);
        }
        Ok(())
    }

    /// The VirtualService's route, its CORS and its faults, then its rate limit.
    fn route(&mut self, env: &mut Env<'_, '_>, jwt: Option<&Verified>) -> Outcome {
        let req = view(&self.headers, self.listener_port);
        let Decision::Act(v) = self.rules.decide(&req, env.rng) else {
            self.events.push(Event::NoVirtualService);
            return Outcome::Pass;
        };
        self.events.push(Event::Routed {
            virtual_service: v.virtual_service,
            route: v.route,
        });
        if let Some(d) = v.delay {
            self.events.push(Event::FaultDelay(d));
        }
        let mut outcome = match v.outcome {
            engine::Outcome::Reply(reply) => {
                if reply.kind == ReplyKind::Abort {
                    self.events.push(Event::FaultAbort);
                }
                Outcome::Reply {
                    reply,
                    delay: v.delay,
                }
            }
            engine::Outcome::Forward(forward) => Outcome::Forward {
                forward,
                delay: v.delay,
                response_headers: Vec::new(),
            },
        };
        if let Some(route) = v.route {
            self.rate_limit(route, &mut outcome, env, jwt);
        }
        outcome
    }

    /// Envoy's local rate limit runs after the fault and CORS filters, before the router: a
    /// fault abort or a preflight answer takes no token, a forward, redirect or direct
    /// response does.
    fn rate_limit(
        &mut self,
        route: usize,
        outcome: &mut Outcome,
        env: &mut Env<'_, '_>,
        jwt: Option<&Verified>,
    ) {
        let rules = self.rules;
        let Some(limit) = rules
            .rate_limits
            .by_route
            .get(route)
            .copied()
            .flatten()
            .and_then(|i| rules.rate_limits.limits.get(i))
        else {
            return;
        };
        let cors_origin = match outcome {
            Outcome::Forward { forward, .. } => forward.cors_origin.clone(),
            Outcome::Reply { reply, .. }
                if matches!(reply.kind, ReplyKind::Redirect | ReplyKind::Direct) =>
            {
                None
            }
            _ => return,
        };
        if !engine::sample(env.rng, limit.enabled_ppm) {
            return;
        }
        let remote_ip = limit
            .needs_remote_address
            .then(|| env.connection.source_address())
            .flatten()
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        let req = view(&self.headers, self.listener_port);
        let inputs = ratelimit::Inputs { remote_ip, jwt };
        let check = ratelimit::check(limit, &req, &inputs, env.buckets, env.now_ms);
        let headers = check
            .headers
            .filter(|_| limit.x_ratelimit_headers)
            .map(|h| h.pairs());
        if !check.limited {
            self.events.push(Event::RateLimitAllowed(&limit.name));
        } else if !engine::sample(env.rng, limit.enforced_ppm) {
            self.events.push(Event::RateLimitShadowed(&limit.name));
        } else {
            self.events.push(Event::RateLimited(&limit.name));
            let mut reply = LocalReply::rate_limited(limit.status);
            for (k, v) in headers.iter().flatten() {
                reply.edit(Edit::Set(k, v));
            }
            // Beyond Envoy: when to come back, in seconds, as RFC 9110 says a 429 may.
            let retry = check.headers.map_or(1, |h| h.reset_s.max(1)).to_string();
            reply.edit(Edit::Set("retry-after", &retry));
            for (k, v, how) in &limit.response_headers {
                match how {
                    AppendAction::Append => reply.edit(Edit::Add(k, v)),
                    AppendAction::Overwrite => reply.edit(Edit::Set(k, v)),
                    AppendAction::AddIfAbsent if !reply.headers.iter().any(|(n, _)| n == k) => {
                        reply.edit(Edit::Add(k, v))
                    }
                    AppendAction::OverwriteIfExists
                        if reply.headers.iter().any(|(n, _)| n == k) =>
                    {
                        reply.edit(Edit::Set(k, v))
                    }
                    _ => {}
                }
            }
            let reply = rules.finish(reply, route, cors_origin.as_deref());
            let delay = match outcome {
                Outcome::Forward { delay, .. } | Outcome::Reply { delay, .. } => *delay,
                _ => None,
            };
            *outcome = Outcome::Reply { reply, delay };
            return;
        }
        let Some(pairs) = headers else {
            return;
        };
        match outcome {
            Outcome::Forward {
                response_headers, ..
            } => response_headers.extend(pairs),
            Outcome::Reply { reply, .. } => {
                for (k, v) in &pairs {
                    reply.edit(Edit::Set(k, v));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
