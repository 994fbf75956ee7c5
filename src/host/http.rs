//! The HTTP context: reads the request and its connection facts, runs the pipeline, applies
//! its plan and counts its events.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status};

use super::abi;
use super::delay::{AfterDelay, Held};
use super::metrics;
use super::ratelimit::SharedBuckets;
use super::root::{now_ms, Active, Shared};
use super::signature::Signatures;
use crate::authn::KeyState;
use crate::engine::Forward;
use crate::http::{Edit, LocalReply};
use crate::pipeline::{self, Address, Connection, Env, Event, Outcome, PeerCertificate, Plan};

/// What one request's processing remembers, shared with the root while it waits for keys.
pub struct Stream {
    pub context_id: u32,
    forwarded: Option<Forwarded>,
    held: bool,
    /// When the request's headers reached the filter (Unix ms): its duration runs from here
    /// to the response headers, fault delays and JWKS waits included, as the client sees it.
    started_ms: u64,
}

/// What the response phase of a forwarded request needs: the rule set it was decided with,
/// the decision, and headers the plan added (a rate limit's `x-ratelimit-*`).
struct Forwarded {
    active: Rc<Active>,
    forward: Forward,
    headers: Vec<(&'static str, String)>,
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
    let _ = send_reply(shared, &reply);
    Action::Pause
}

/// Sends one of the filter's own replies and counts it under its reason.
pub fn send_reply(shared: &Shared, reply: &LocalReply) -> Result<(), Status> {
    shared.globals.local_reply(reply.details);
    abi::send_local_reply(reply)
}

fn reply(shared: &Shared, reply: &LocalReply) -> Action {
    if let Err(e) = send_reply(shared, reply) {
        shared.log_once("cannot send a local reply", &format!("{e:?}"));
    }
    Action::Pause
}

fn hold(shared: &Shared, stream: &mut Stream, delay: Duration, then: AfterDelay) -> Action {
    let now = now_ms();
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    let rearm = shared.delays.borrow_mut().hold(
        now,
        Held {
            deadline_ms: now.saturating_add(delay_ms),
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
    Action::Pause
}

/// A string property of the stream (`source.address`, ...).
fn property(path: &[&str]) -> Option<String> {
    let bytes = abi::property(path).ok()??;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// The connection facts, read from Envoy's attributes when the pipeline asks.
struct Attributes;

impl Connection for Attributes {
    fn source_address(&self) -> Option<String> {
        property(&["source", "address"])
    }
    fn destination_address(&self) -> Option<Address> {
        property(&["destination", "address"]).map(|a| Address::parse(&a))
    }
    fn requested_server_name(&self) -> Option<String> {
        property(&["connection", "requested_server_name"])
    }
    fn peer_certificate(&self) -> Option<PeerCertificate> {
        property(&["connection", "peer_certificate"]).map(PeerCertificate::UrlEncodedPem)
    }
}

/// Counts and logs what the pipeline reports.
fn record(shared: &Shared, active: &Active, plan: &Plan<'_>) {
    let g = &shared.globals;
    for event in &plan.events {
        match event {
            Event::JwtMissing => metrics::add(g.jwt_missing, 1),
            Event::JwtVerified { .. } => metrics::add(g.jwt_valid, 1),
            Event::JwtRejected(_) => {
                metrics::add(g.jwt_invalid, 1);
                log::debug!("meshrules: {}", plan.describe(event));
            }
            Event::PathRefused(_) => metrics::add(g.path_rejected, 1),
            Event::SourceHidden => shared.log_once("source.ip unknown", &plan.describe(event)),
            Event::PeerCertificateUnreadable => {
                shared.log_once("peer certificate unreadable", &plan.describe(event))
            }
            Event::DryRunWouldDeny => {
                metrics::add(g.authz_dry_run_would_deny, 1);
                log_request(plan, event);
            }
            Event::Audited(..) => {
                metrics::add(g.authz_audit, 1);
                log_request(plan, event);
            }
            Event::Allowed(_) => metrics::add(g.authz_allowed, 1),
            Event::DeniedBy(..) | Event::NoAllowMatched => {
                metrics::add(g.authz_denied, 1);
                log_request(plan, event);
            }
            Event::Routed {
                virtual_service,
                route,
            } => match route {
                Some(r) => metrics::add(active.metrics.routes.get(*r).copied().flatten(), 1),
                None => metrics::add(
                    active
                        .metrics
                        .unrouted
                        .get(*virtual_service)
                        .copied()
                        .flatten(),
                    1,
                ),
            },
            Event::FaultDelay(_) => metrics::add(g.delays, 1),
            Event::FaultAbort => metrics::add(g.aborts, 1),
            Event::RateLimitAllowed(name) => active.metrics.limit(name, |m| m.allowed),
            Event::RateLimited(name) => active.metrics.limit(name, |m| m.limited),
            Event::RateLimitShadowed(name) => active.metrics.limit(name, |m| m.shadowed),
            Event::ClientClusterHeaderRemoved
            | Event::JwtKeysPending(_)
            | Event::PathNormalized
            | Event::NoVirtualService => {}
        }
    }
}

fn log_request(plan: &Plan<'_>, event: &Event<'_>) {
    let req = plan.request();
    log::info!(
        "meshrules: {} {}: {}",
        req.method,
        req.path,
        plan.describe(event)
    );
}

/// Runs the request through the pipeline and applies its plan. Called from the request's
/// own context, or from the root once JWKS it waited for have arrived (the root then
/// resumes it on `Continue`). `now_ms` is the caller's reading of the clock: one host call
/// per request instead of two when the request's start is also recorded.
pub fn process(
    shared: &Rc<Shared>,
    active: &Rc<Active>,
    stream_rc: &Rc<RefCell<Stream>>,
    now_ms: u64,
) -> Action {
    let headers = match abi::headers(MapType::HttpRequestHeaders) {
        Ok(h) => h,
        Err(e) => return fail(shared, "cannot read request headers", e),
    };
    let mut buckets = SharedBuckets::default();
    let plan = {
        let slots = active.jwks.borrow();
        let keys = |i: usize| match slots.get(i) {
            Some(slot) => slot.state(),
            None => KeyState::Failed,
        };
        pipeline::run(
            &active.rules,
            headers,
            Env {
                connection: &Attributes,
                now_ms,
                keys: &keys,
                token_cache: &mut active.token_cache.borrow_mut(),
                signatures: &Signatures::new(shared, active.rules.authn.signature_verifier),
                rng: &mut shared.rng.borrow_mut(),
                buckets: &mut buckets,
            },
        )
    };
    if buckets.failed > 0 {
        metrics::add(
            shared.globals.ratelimit_state_failed,
            i64::from(buckets.failed),
        );
        shared.log_once(
            "rate limit bucket unavailable",
            "a rate limit bucket in shared data could not be updated: the request was refused",
        );
    }
    record(shared, active, &plan);
    if let Err(e) = plan.request_edits(request_edit) {
        return fail(shared, "cannot edit the request headers", e);
    }
    let mut stream = stream_rc.borrow_mut();
    match plan.outcome {
        Outcome::Pass => Action::Continue,
        Outcome::Reply { reply: r, delay } => match delay {
            Some(d) => hold(shared, &mut stream, d, AfterDelay::Reply(r)),
            None => reply(shared, &r),
        },
        Outcome::Forward {
            forward,
            delay,
            response_headers,
        } => {
            stream.forwarded = Some(Forwarded {
                active: Rc::clone(active),
                forward,
                headers: response_headers,
            });
            match delay {
                Some(d) => hold(shared, &mut stream, d, AfterDelay::Resume),
                None => Action::Continue,
            }
        }
        Outcome::WaitForKeys(i) => {
            if let Some(slot) = active.jwks.borrow_mut().get_mut(i) {
                slot.waiters.push(Rc::clone(stream_rc));
            }
            if let Err(e) = abi::set_tick_period(std::time::Duration::from_millis(1)) {
                return fail(shared, "cannot start the JWKS fetch", e);
            }
            Action::Pause
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
                started_ms: 0,
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
        let now = now_ms();
        if active.metrics.per_destination() {
            self.stream.borrow_mut().started_ms = now;
        }
        process(&self.shared, &active, &self.stream, now)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let stream = self.stream.borrow();
        if let Some(fw) = &stream.forwarded {
            // The upstream's status, or the router's own (503 when no upstream answered).
            let status = fw.active.metrics.per_destination().then(|| {
                abi::header(MapType::HttpResponseHeaders, ":status")
                    .ok()
                    .flatten()
                    .and_then(|s| s.parse::<u32>().ok())
            });
            if let Some(status) = status.flatten() {
                let elapsed = now_ms().saturating_sub(stream.started_ms);
                fw.active.metrics.response(&fw.forward, status, elapsed);
            }
            let response = |e| apply(MapType::HttpResponseHeaders, e);
            let result = fw
                .active
                .rules
                .response_edits(&fw.forward, response)
                .and_then(|()| {
                    fw.headers
                        .iter()
                        .try_for_each(|(k, v)| response(Edit::Set(k, v)))
                });
            if let Err(e) = result {
                self.shared
                    .log_once("cannot set response headers", &format!("{e:?}"));
            }
        }
        Action::Continue
    }
}
