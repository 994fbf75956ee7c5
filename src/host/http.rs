//! The HTTP context: reads the request, asks the rule set, applies the decision.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status};

use super::abi;
use super::delay::{AfterDelay, Held};
use super::metrics;
use super::root::{now_ms, Active, Shared};
use crate::authn::{self, KeyState};
use crate::authz::{path, peer, Facts, JwtFacts, Peer, Verdict};
use crate::engine::{Decision, Edit, Forward, LocalReply, Outcome, ReplyKind, Request};
use crate::jwt::Verified;

/// What one request's processing remembers, shared with the root while it waits for keys.
pub struct Stream {
    pub context_id: u32,
    /// The rule set and forward decision the response phase needs.
    forwarded: Option<(Rc<Active>, Forward)>,
    held: bool,
}

pub struct Filter {
    shared: Rc<Shared>,
    stream: Rc<RefCell<Stream>>,
}

fn apply(map: MapType, e: Edit<'_>) -> Result<(), Status> {
    match e {
        Edit::Remove(name) => abi::remove_header(map, name),
        Edit::Set(name, value) => abi::set_header(map, name, value),
        Edit::Add(name, value) => abi::add_header(map, name, value),
    }
}

fn request_edit(e: Edit<'_>) -> Result<(), Status> {
    apply(MapType::HttpRequestHeaders, e)
}

/// The decision could not be applied: answer clearly instead of routing wrongly.
fn fail(shared: &Shared, what: &'static str, e: Status) -> Action {
    shared.log_once(what, &format!("{e:?}"));
    let reply = LocalReply::text(
        500,
        "meshrules_error",
        "meshrules: could not apply the routing decision",
    );
    let _ = abi::send_local_reply(&reply);
    Action::Pause
}

fn reply(shared: &Shared, reply: &LocalReply) -> Action {
    if let Err(e) = abi::send_local_reply(reply) {
        shared.log_once("cannot send a local reply", &format!("{e:?}"));
    }
    Action::Pause
}

fn hold(shared: &Shared, stream: &mut Stream, delay_ms: u64, then: AfterDelay) -> Action {
    let now = now_ms();
    let rearm = shared.delays.borrow_mut().hold(
        now,
        Held {
            deadline_ms: now + delay_ms,
            context_id: stream.context_id,
            then,
        },
    );
    if let Some(period) = rearm {
        if let Err(e) = abi::set_tick_period(period) {
            shared.delays.borrow_mut().release(stream.context_id);
            return fail(shared, "cannot set the delay timer", e);
        }
    }
    stream.held = true;
    metrics::add(shared.globals.delayed_now, 1);
    metrics::add(shared.globals.delays, 1);
    Action::Pause
}

/// A string property of the stream (`source.address`, ...).
fn property(path: &[&str]) -> Option<String> {
    let bytes = abi::property(path).ok()??;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// `ip:port` (or a bare IP) as Envoy's address attributes give it.
fn address(path: &[&str]) -> (Option<IpAddr>, Option<u16>) {
    let Some(text) = property(path) else {
        return (None, None);
    };
    match text.parse::<SocketAddr>() {
        Ok(sa) => (Some(sa.ip()), Some(sa.port())),
        Err(_) => (text.parse().ok(), None),
    }
}

/// Runs the request through authentication, authorization and routing, and applies the
/// outcome. Called from the request's own context, or from the root once JWKS it waited for
/// have arrived (the root then resumes it on `Continue`).
pub fn process(shared: &Rc<Shared>, active: &Rc<Active>, stream: &Rc<RefCell<Stream>>) -> Action {
    let headers = match abi::headers(MapType::HttpRequestHeaders) {
        Ok(h) => h,
        Err(e) => return fail(shared, "cannot read request headers", e),
    };
    let rules = &active.rules;
    // Only the filter chooses clusters: a client-sent cluster header is dropped.
    let cluster_header = rules.cluster_header.as_str();
    if headers.iter().any(|(k, _)| k == cluster_header) {
        if let Err(e) = abi::remove_header(MapType::HttpRequestHeaders, cluster_header) {
            return fail(shared, "cannot remove the client's cluster header", e);
        }
    }
    let mut req = Request::from_headers(&headers);
    if rules.needs_listener_port {
        // The local address of the connection: on a sidecar, the service port the
        // application called (the original destination), which istiod names clusters with.
        req.listener_port = address(&["destination", "address"]).1;
    }

    let mut jwt: Option<Rc<Verified>> = None;
    let authn_path;
    if !rules.authn.is_empty() {
        for name in &rules.authn.output_headers {
            if headers.iter().any(|(k, _)| k == name) {
                if let Err(e) = request_edit(Edit::Remove(name)) {
                    return fail(shared, "cannot remove a client-sent JWT output header", e);
                }
            }
        }
        let now = now_ms() / 1000;
        let outcome = {
            let slots = active.jwks.borrow();
            let keys = |i: usize| match slots.get(i) {
                Some(slot) => slot.state(),
                None => KeyState::Failed,
            };
            rules
                .authn
                .authenticate(&req, now, &keys, &mut active.token_cache.borrow_mut())
        };
        match outcome {
            authn::Outcome::Missing => metrics::add(shared.globals.jwt_missing, 1),
            authn::Outcome::Verified {
                token,
                provider,
                location,
            } => {
                metrics::add(shared.globals.jwt_valid, 1);
                let edits =
                    rules
                        .authn
                        .apply_edits(&req, &token, provider, location, &mut request_edit);
                match edits {
                    Ok(Some(path)) => {
                        authn_path = path;
                        if let Err(e) = request_edit(Edit::Set(":path", &authn_path)) {
                            return fail(shared, "cannot remove the token from the path", e);
                        }
                        req.path = &authn_path;
                    }
                    Ok(None) => {}
                    Err(e) => return fail(shared, "cannot set JWT headers", e),
                }
                jwt = Some(token);
            }
            authn::Outcome::Rejected(error) => {
                metrics::add(shared.globals.jwt_invalid, 1);
                log::debug!("meshrules: JWT refused: {}", error.message());
                return reply(shared, &authn::rejection(&req, &error));
            }
            authn::Outcome::NeedKeys(i) => {
                if let Some(slot) = active.jwks.borrow_mut().get_mut(i) {
                    slot.waiters.push(Rc::clone(stream));
                }
                if let Err(e) = abi::set_tick_period(std::time::Duration::from_millis(1)) {
                    return fail(shared, "cannot start the JWKS fetch", e);
                }
                return Action::Pause;
            }
        }
    }

    let normalized_path;
    if !rules.authz.is_empty() {
        let authz = &rules.authz;
        let n = match path::normalize(req.path, authz.escaped_slashes) {
            Ok(n) => n,
            Err(why) => {
                metrics::add(shared.globals.path_rejected, 1);
                return reply(shared, &LocalReply::bad_path(why.detail()));
            }
        };
        let needs = authz.needs;
        let (source_ip, remote_ip) = if needs.source_ip {
            authz.peers(property(&["source", "address"]).as_deref(), &req)
        } else {
            (Peer::None, None)
        };
        if source_ip == Peer::Hidden {
            shared.log_once(
                "source.ip unknown",
                "Envoy took the client address from X-Forwarded-For without appending the \
                 connection's peer (use_remote_address is off): policies on ipBlocks / source.ip \
                 fail closed",
            );
        }
        let (destination_ip, destination_port) = if needs.destination {
            address(&["destination", "address"])
        } else {
            (None, None)
        };
        let sni = needs
            .sni
            .then(|| property(&["connection", "requested_server_name"]))
            .flatten();
        // The whole certificate: `connection.uri_san_peer_certificate` has only the first SAN.
        let peer_names = match needs
            .peer
            .then(|| property(&["connection", "peer_certificate"]))
            .flatten()
        {
            Some(pem) => peer::peer_names(&pem).unwrap_or_else(|| {
                shared.log_once(
                    "peer certificate unreadable",
                    "the peer certificate Envoy gave could not be parsed: \
                     principals match nothing on such connections",
                );
                Vec::new()
            }),
            None => Vec::new(),
        };
        let facts = Facts {
            req: &req,
            path: &n.path,
            source_ip,
            remote_ip,
            destination_ip,
            destination_port,
            sni: sni.as_deref(),
            peer_names: &peer_names,
            jwt: jwt.as_deref().map(JwtFacts::of),
        };
        let eval = authz.evaluate(&facts);
        if eval.dry_run_would_deny {
            metrics::add(shared.globals.authz_dry_run_would_deny, 1);
            log::info!(
                "meshrules: dry-run policies would deny {} {}",
                req.method,
                req.path
            );
        }
        if let Some((policy, rule)) = eval.audited {
            metrics::add(shared.globals.authz_audit, 1);
            log::info!(
                "meshrules: AUDIT {} {}: policy {policy} rules[{rule}] matched",
                req.method,
                req.path
            );
        }
        match eval.verdict {
            Verdict::Allow => metrics::add(shared.globals.authz_allowed, 1),
            denied => {
                metrics::add(shared.globals.authz_denied, 1);
                match denied {
                    Verdict::DeniedBy(policy, rule) => log::info!(
                        "meshrules: RBAC denied {} {}: DENY policy {policy} rules[{rule}] matched",
                        req.method,
                        req.path
                    ),
                    _ => log::info!(
                        "meshrules: RBAC denied {} {}: no ALLOW policy matched",
                        req.method,
                        req.path
                    ),
                }
                return reply(shared, &LocalReply::rbac_denied());
            }
        }
        if n.changed() {
            // The upstream gets the path that was authorized (Envoy's normalize_path).
            normalized_path = format!("{}{}", n.path, n.query);
            if let Err(e) = request_edit(Edit::Set(":path", &normalized_path)) {
                return fail(shared, "cannot set the normalized path", e);
            }
            req.path = &normalized_path;
        }
    }

    let decision = rules.decide(&req, &mut shared.rng.borrow_mut());
    let Decision::Act(verdict) = decision else {
        return Action::Continue;
    };
    match verdict.route {
        Some(r) => metrics::add(active.metrics.routes[r], 1),
        None => metrics::add(active.metrics.unrouted[verdict.virtual_service], 1),
    }
    let delay_ms = verdict.delay.map(|d| d.as_millis() as u64);
    let mut stream = stream.borrow_mut();
    match verdict.outcome {
        Outcome::Reply(r) => {
            if r.kind == ReplyKind::Abort {
                metrics::add(shared.globals.aborts, 1);
            }
            match delay_ms {
                Some(ms) => hold(shared, &mut stream, ms, AfterDelay::Reply(r)),
                None => reply(shared, &r),
            }
        }
        Outcome::Forward(f) => {
            if let Err(e) = rules.request_edits(&f, req.path, request_edit) {
                return fail(shared, "cannot set request headers", e);
            }
            stream.forwarded = Some((Rc::clone(active), f));
            match delay_ms {
                Some(ms) => hold(shared, &mut stream, ms, AfterDelay::Resume),
                None => Action::Continue,
            }
        }
    }
}

impl Filter {
    pub fn new(context_id: u32, shared: Rc<Shared>) -> Self {
        Filter {
            shared,
            stream: Rc::new(RefCell::new(Stream {
                context_id,
                forwarded: None,
                held: false,
            })),
        }
    }
}

impl Context for Filter {
    fn on_done(&mut self) -> bool {
        let stream = self.stream.borrow();
        // A client that left while its request was held leaves nothing behind.
        if stream.held && self.shared.delays.borrow_mut().release(stream.context_id) {
            metrics::add(self.shared.globals.delayed_now, -1);
        }
        true
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.shared.active.borrow().clone() else {
            return Action::Continue;
        };
        let seen = self.shared.requests.get().wrapping_add(1);
        self.shared.requests.set(seen);
        if seen.is_multiple_of(metrics::MEMORY_SAMPLE_EVERY) {
            metrics::record_vm_memory(self.shared.globals.vm_memory);
        }
        process(&self.shared, &active, &self.stream)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some((active, f)) = &self.stream.borrow().forwarded {
            let result = active
                .rules
                .response_edits(f, |e| apply(MapType::HttpResponseHeaders, e));
            if let Err(e) = result {
                self.shared
                    .log_once("cannot set response headers", &format!("{e:?}"));
            }
        }
        Action::Continue
    }
}
