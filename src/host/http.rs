//! The HTTP context: reads the request, asks the rule set, applies the decision.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status};

use super::delay::{AfterDelay, Held};
use super::local_reply;
use super::metrics;
use super::root::{now_ms, Active, Shared};
use crate::engine::{Decision, Edit, Forward, LocalReply, Outcome, ReplyKind, Request};

pub struct Filter {
    context_id: u32,
    shared: Rc<Shared>,
    /// The rule set and forward decision the response phase needs.
    forwarded: Option<(Rc<Active>, Forward)>,
    held: bool,
}

fn apply(map: MapType, e: Edit<'_>) -> Result<(), Status> {
    match e {
        Edit::Remove(name) => hostcalls::remove_map_value(map, name),
        Edit::Set(name, value) => hostcalls::set_map_value(map, name, Some(value)),
        Edit::Add(name, value) => hostcalls::add_map_value(map, name, value),
    }
}

impl Filter {
    pub fn new(context_id: u32, shared: Rc<Shared>) -> Self {
        Filter {
            context_id,
            shared,
            forwarded: None,
            held: false,
        }
    }

    /// The decision could not be applied: answer clearly instead of routing wrongly.
    fn fail(&self, what: &'static str, e: Status) -> Action {
        self.shared.log_once(what, &format!("{e:?}"));
        let reply = LocalReply {
            kind: ReplyKind::Direct,
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"meshrules: could not apply the routing decision".to_vec(),
            grpc_status: None,
            details: "meshrules_error",
        };
        let _ = local_reply::send(&reply);
        Action::Pause
    }

    fn reply(&self, reply: &LocalReply) -> Action {
        if let Err(e) = local_reply::send(reply) {
            self.shared
                .log_once("cannot send a local reply", &format!("{e:?}"));
        }
        Action::Pause
    }

    fn hold(&mut self, delay_ms: u64, then: AfterDelay) -> Action {
        let now = now_ms();
        let rearm = self.shared.delays.borrow_mut().hold(
            now,
            Held {
                deadline_ms: now + delay_ms,
                context_id: self.context_id,
                then,
            },
        );
        if let Some(period) = rearm {
            if let Err(e) = hostcalls::set_tick_period(period) {
                self.shared.delays.borrow_mut().release(self.context_id);
                return self.fail("cannot set the delay timer", e);
            }
        }
        self.held = true;
        metrics::add(self.shared.globals.delayed_now, 1);
        metrics::add(self.shared.globals.delays, 1);
        Action::Pause
    }
}

impl Context for Filter {
    fn on_done(&mut self) -> bool {
        // A client that left while its request was held leaves nothing behind.
        if self.held && self.shared.delays.borrow_mut().release(self.context_id) {
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
        let headers = match hostcalls::get_map(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(e) => return self.fail("cannot read request headers", e),
        };
        // Only the filter chooses clusters: a client-sent cluster header is dropped.
        let cluster_header = active.rules.cluster_header.as_str();
        if headers.iter().any(|(k, _)| k == cluster_header) {
            if let Err(e) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, cluster_header)
            {
                return self.fail("cannot remove the client's cluster header", e);
            }
        }
        let req = Request::from_headers(&headers);
        let decision = active.rules.decide(&req, &mut self.shared.rng.borrow_mut());
        let Decision::Act(verdict) = decision else {
            return Action::Continue;
        };
        match verdict.route {
            Some(r) => metrics::add(active.metrics.routes[r], 1),
            None => metrics::add(active.metrics.unrouted[verdict.virtual_service], 1),
        }
        let delay_ms = verdict.delay.map(|d| d.as_millis() as u64);
        match verdict.outcome {
            Outcome::Reply(reply) => {
                if reply.kind == ReplyKind::Abort {
                    metrics::add(self.shared.globals.aborts, 1);
                }
                match delay_ms {
                    Some(ms) => self.hold(ms, AfterDelay::Reply(reply)),
                    None => self.reply(&reply),
                }
            }
            Outcome::Forward(f) => {
                let edits = active
                    .rules
                    .request_edits(&f, req.path, |e| apply(MapType::HttpRequestHeaders, e));
                if let Err(e) = edits {
                    return self.fail("cannot set request headers", e);
                }
                self.forwarded = Some((active, f));
                match delay_ms {
                    Some(ms) => self.hold(ms, AfterDelay::Resume),
                    None => Action::Continue,
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some((active, f)) = &self.forwarded {
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
