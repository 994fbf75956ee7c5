//! The HTTP context: reads the request, asks the rule set, applies the decision.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status};

use super::delay::{AfterDelay, Held};
use super::metrics;
use super::root::{now_ms, Active, Shared};
use crate::engine::{Decision, Forward, LocalReply, Outcome, ReplyKind, Request};
use crate::rules::HeaderOps;

pub struct Filter {
    context_id: u32,
    shared: Rc<Shared>,
    /// The rule set and forward decision the response phase needs.
    forwarded: Option<(Rc<Active>, Forward)>,
    held: bool,
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

    fn fail(&self, what: &'static str, e: Status) -> Action {
        self.shared.log_once(what, &format!("{e:?}"));
        // The decision could not be applied: answer clearly instead of routing wrongly.
        let reply = LocalReply {
            kind: ReplyKind::Direct,
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"meshrules: could not apply the routing decision".to_vec(),
        };
        let _ = send_reply(&reply);
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

    fn apply_forward(&self, active: &Active, f: &Forward) -> Result<(), Status> {
        let route = &active.rules.routes[f.route];
        let dest = match &route.action {
            crate::rules::Action::Forward(split) => split.destinations.get(f.destination),
            _ => None,
        };
        apply_ops(MapType::HttpRequestHeaders, &route.request_headers)?;
        if let Some(d) = dest {
            apply_ops(MapType::HttpRequestHeaders, &d.request_headers)?;
        }
        for (k, v) in &route.router_headers {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, k, Some(v))?;
        }
        if let Some(path) = &f.path {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path))?;
        }
        if let Some(authority) = route.rewrite.as_ref().and_then(|r| r.authority()) {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, ":authority", Some(authority))?;
        }
        if let Some(d) = dest {
            hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                &active.rules.cluster_header,
                Some(&d.cluster),
            )?;
        }
        Ok(())
    }
}

fn apply_ops(map: MapType, ops: &HeaderOps) -> Result<(), Status> {
    for name in &ops.remove {
        hostcalls::remove_map_value(map, name)?;
    }
    for (k, v) in &ops.set {
        hostcalls::set_map_value(map, k, Some(v))?;
    }
    for (k, v) in &ops.add {
        hostcalls::add_map_value(map, k, v)?;
    }
    Ok(())
}

pub fn send_reply(r: &LocalReply) -> Result<(), Status> {
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = (!r.body.is_empty()).then_some(r.body.as_slice());
    hostcalls::send_http_response(r.status, headers, body)
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
        if headers
            .iter()
            .any(|(k, _)| *k == active.rules.cluster_header)
        {
            if let Err(e) = hostcalls::remove_map_value(
                MapType::HttpRequestHeaders,
                &active.rules.cluster_header,
            ) {
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
                    None => match send_reply(&reply) {
                        Ok(()) => Action::Pause,
                        Err(e) => {
                            self.shared
                                .log_once("cannot send a local reply", &format!("{e:?}"));
                            Action::Pause
                        }
                    },
                }
            }
            Outcome::Forward(f) => {
                if let Err(e) = self.apply_forward(&active, &f) {
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
        let Some((active, f)) = &self.forwarded else {
            return Action::Continue;
        };
        let route = &active.rules.routes[f.route];
        let result = (|| {
            apply_ops(MapType::HttpResponseHeaders, &route.response_headers)?;
            if let crate::rules::Action::Forward(split) = &route.action {
                if let Some(d) = split.destinations.get(f.destination) {
                    apply_ops(MapType::HttpResponseHeaders, &d.response_headers)?;
                }
            }
            if let (Some(origin), Some(cors)) = (&f.cors_origin, &route.cors) {
                let map = MapType::HttpResponseHeaders;
                hostcalls::set_map_value(map, "access-control-allow-origin", Some(origin))?;
                if cors.allow_credentials {
                    hostcalls::set_map_value(
                        map,
                        "access-control-allow-credentials",
                        Some("true"),
                    )?;
                }
                if !cors.expose_headers.is_empty() {
                    hostcalls::set_map_value(
                        map,
                        "access-control-expose-headers",
                        Some(&cors.expose_headers),
                    )?;
                }
            }
            Ok::<(), Status>(())
        })();
        if let Err(e) = result {
            self.shared
                .log_once("cannot set response headers", &format!("{e:?}"));
        }
        Action::Continue
    }
}
