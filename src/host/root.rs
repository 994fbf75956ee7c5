//! The root context: loads the configuration, owns the metrics, the randomness and the timer
//! that ends fault delays.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

use super::abi;
use super::delay::{AfterDelay, DelayQueue};
use super::http::{self, Filter};
use super::identity::NodeMetadata;
use super::jwks;
use super::metrics::{self, Globals, RuleMetrics};
use crate::compile;
use crate::jwt::TokenCache;
use crate::rules::RuleSet;

/// A loaded rule set with its metrics; requests keep the one they started with.
pub struct Active {
    pub rules: RuleSet,
    pub metrics: RuleMetrics,
    /// Verified JWTs of this configuration, so repeated tokens skip the signature math.
    pub token_cache: RefCell<TokenCache>,
    /// One slot per `rules.authn.remote` JWKS.
    pub jwks: RefCell<Vec<jwks::Slot>>,
}

/// State shared by the root context and the HTTP contexts of one worker.
pub struct Shared {
    pub active: RefCell<Option<Rc<Active>>>,
    pub globals: Globals,
    pub delays: RefCell<DelayQueue>,
    pub rng: RefCell<fastrand::Rng>,
    /// Requests seen, for sampling the VM memory gauge.
    pub requests: Cell<u32>,
    logged: RefCell<HashSet<&'static str>>,
}

impl Shared {
    /// Logs a host failure the first time it happens, so a broken host does not flood the log.
    pub fn log_once(&self, what: &'static str, detail: &str) {
        if self.logged.borrow_mut().insert(what) {
            log::error!("meshrules: {what}: {detail}");
        }
    }
}

pub use abi::now_ms;

fn seed() -> u64 {
    let mut buf = [0u8; 8];
    match getrandom::fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        // Only the spread of weights and percentages depends on it: the clock will do.
        Err(_) => now_ms() ^ 0x9e37_79b9_7f4a_7c15,
    }
}

pub struct Root {
    shared: Rc<Shared>,
}

impl Root {
    pub fn new() -> Self {
        // Asked (and logged) when the VM starts, not on its first token.
        super::signature::envoy_verifies();
        Root {
            shared: Rc::new(Shared {
                active: RefCell::new(None),
                globals: Globals::define(),
                delays: RefCell::new(DelayQueue::default()),
                rng: RefCell::new(fastrand::Rng::with_seed(seed())),
                requests: Cell::new(0),
                logged: RefCell::new(HashSet::new()),
            }),
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(active) = self.shared.active.borrow().clone() else {
            return;
        };
        let progress = jwks::on_response(
            &active.rules.authn.remote,
            &mut active.jwks.borrow_mut(),
            token,
            body_size,
            now_ms(),
        );
        if let Some(progress) = progress {
            self.resume_waiters(&active, progress);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = match abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            // An empty configuration is refused by `compile::load`: dropping every rule and
            // policy must be asked for (`"resources": []`), never the result of a blank field.
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log::error!("meshrules: config rejected: cannot read the configuration: {e:?}");
                metrics::add(self.shared.globals.config_rejected, 1);
                return false;
            }
        };
        // Each VM compiles on its own thread, blocking it: the time is logged per load.
        let started = now_ms();
        match compile::load(&config, &NodeMetadata) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    log::warn!("meshrules: config warning: {w}");
                }
                let metrics = RuleMetrics::define(&loaded.rules);
                log::info!(
                    "meshrules: config accepted: {} VirtualService(s), {} route(s) in {} ms",
                    loaded.rules.virtual_services.len(),
                    loaded.rules.routes.len(),
                    now_ms().saturating_sub(started)
                );
                let slots = loaded
                    .rules
                    .authn
                    .remote
                    .iter()
                    .map(|_| jwks::Slot::default());
                let active = Active {
                    token_cache: RefCell::new(loaded.rules.authn.new_cache()),
                    jwks: RefCell::new(slots.collect()),
                    rules: loaded.rules,
                    metrics,
                };
                super::ratelimit::prepare(&active.rules.rate_limits, now_ms());
                if !active.rules.authn.remote.is_empty() {
                    // The first JWKS fetch starts on the first tick, outside configuration.
                    self.arm(Duration::from_millis(1));
                }
                *self.shared.active.borrow_mut() = Some(Rc::new(active));
                metrics::add(self.shared.globals.config_accepted, 1);
                metrics::record_vm_memory(self.shared.globals.vm_memory);
                true
            }
            Err(errors) => {
                for e in &errors {
                    log::error!("meshrules: config rejected: {e}");
                }
                metrics::add(self.shared.globals.config_rejected, 1);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        let (due, next) = self.shared.delays.borrow_mut().due(now);
        for held in due {
            metrics::add(self.shared.globals.delayed_now, -1);
            if let Err(e) = abi::set_effective_context(held.context_id) {
                self.shared
                    .log_once("cannot switch to a delayed request", &format!("{e:?}"));
                continue;
            }
            let result = match held.then {
                AfterDelay::Resume => abi::resume_http_request(),
                AfterDelay::Reply(r) => http::send_reply(&self.shared, &r),
            };
            if let Err(e) = result {
                self.shared
                    .log_once("cannot resume a delayed request", &format!("{e:?}"));
            }
        }
        let active = self.shared.active.borrow().clone();
        let mut next = (next > Duration::ZERO).then_some(next);
        if let Some(active) = active.filter(|a| !a.rules.authn.remote.is_empty()) {
            let progress = jwks::tick(
                &active.rules.authn.remote,
                &mut active.jwks.borrow_mut(),
                now,
            );
            self.resume_waiters(&active, progress);
            let jwks_next = jwks::next_tick(&active.rules.authn.remote, &active.jwks.borrow(), now);
            next = match (next, jwks_next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.arm(next.unwrap_or(Duration::ZERO));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter::new(context_id, Rc::clone(&self.shared))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Counts a fetch's outcome, forgets tokens verified with the old keys and runs the
    /// requests that waited for the new ones.
    fn resume_waiters(&self, active: &Rc<Active>, progress: jwks::Progress) {
        if progress.keys_replaced {
            active.token_cache.borrow_mut().clear();
        }
        let globals = &self.shared.globals;
        metrics::add(globals.jwks_fetch_ok, i64::from(progress.fetched_ok));
        metrics::add(globals.jwks_fetch_failed, i64::from(progress.fetch_failed));
        for waiter in progress.wake {
            let context_id = waiter.borrow().context_id;
            if let Err(e) = abi::set_effective_context(context_id) {
                // The client has gone.
                log::debug!("meshrules: request {context_id} waiting for JWKS is gone: {e:?}");
                continue;
            }
            if let Action::Continue = http::process(&self.shared, active, &waiter, now_ms()) {
                if let Err(e) = abi::resume_http_request() {
                    self.shared
                        .log_once("cannot resume a request after JWKS", &format!("{e:?}"));
                }
            }
        }
    }

    fn arm(&self, period: Duration) {
        if let Err(e) = abi::set_tick_period(period) {
            self.shared
                .log_once("cannot set the delay timer", &format!("{e:?}"));
        }
    }
}
