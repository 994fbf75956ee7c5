//! The filter's metrics, defined through proxy-wasm (`wasmcustom.` in Envoy's stats).
//! Per-route names carry their labels as segments that Envoy's `stats_tags` turn into
//! Prometheus labels (see `crate::stat_names` and `envoy/envoy.yaml`).

use std::cell::RefCell;

use super::abi;
use proxy_wasm::types::MetricType;

use crate::engine::Forward;
use crate::rules::RuleSet;
use crate::stat_names;

pub const CONFIG_ACCEPTED: &str = "meshrules_config_loads_accepted";
pub const CONFIG_REJECTED: &str = "meshrules_config_loads_rejected";
pub const DELAYS_INJECTED: &str = "meshrules_fault_delays_injected";
pub const ABORTS_INJECTED: &str = "meshrules_fault_aborts_injected";
pub const REQUESTS_DELAYED: &str = "meshrules_requests_delayed";
pub const ROUTE_REQUESTS: &str = "meshrules_route_requests";
pub const UNROUTED_REQUESTS: &str = "meshrules_unrouted_requests";
pub const VM_MEMORY: &str = "meshrules_vm_memory_bytes";
pub const AUTHZ_ALLOWED: &str = "meshrules_authz_allowed";
pub const AUTHZ_DENIED: &str = "meshrules_authz_denied";
pub const AUTHZ_DRY_RUN_WOULD_DENY: &str = "meshrules_authz_dry_run_would_deny";
pub const AUTHZ_AUDIT: &str = "meshrules_authz_audit";
pub const PATH_REJECTED: &str = "meshrules_path_rejected";
pub const JWT_VALID: &str = "meshrules_jwt_valid";
pub const JWT_INVALID: &str = "meshrules_jwt_invalid";
pub const JWT_MISSING: &str = "meshrules_jwt_missing";
pub const JWT_SIGNATURES_ENVOY: &str = "meshrules_jwt_signatures_envoy";
pub const JWT_SIGNATURES_WASM: &str = "meshrules_jwt_signatures_wasm";
pub const JWKS_FETCH_OK: &str = "meshrules_jwks_fetch_ok";
pub const JWKS_FETCH_FAILED: &str = "meshrules_jwks_fetch_failed";
pub const RATELIMIT_ALLOWED: &str = "meshrules_ratelimit_allowed";
pub const RATELIMIT_LIMITED: &str = "meshrules_ratelimit_limited";
pub const RATELIMIT_SHADOWED: &str = "meshrules_ratelimit_shadow_limited";
pub const RATELIMIT_STATE_FAILED: &str = "meshrules_ratelimit_state_failed";
pub const RESPONSES: &str = "meshrules_responses";
pub const REQUEST_DURATION: &str = "meshrules_request_duration_milliseconds";
pub const LOCAL_REPLIES: &str = "meshrules_local_replies";
/// Set to `off` in the VM's `environment_variables` to leave out the per-destination response
/// and latency metrics (their cardinality, or their cost: `make bench`).
pub const DESTINATION_METRICS_ENV: &str = "MESHRULES_DESTINATION_METRICS";

/// How often (in requests) the VM memory gauge is refreshed: often enough to see growth,
/// rare enough to cost nothing.
pub const MEMORY_SAMPLE_EVERY: u32 = 1024;

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match abi::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            log::error!("meshrules: cannot define metric {name}: {e:?}");
            None
        }
    }
}

/// The Wasm VM's linear memory, in bytes.
pub fn record_vm_memory(id: Option<u32>) {
    if let Some(id) = id {
        let bytes = core::arch::wasm32::memory_size(0) as u64 * 65_536;
        let _ = abi::record_metric(id, bytes);
    }
}

/// A histogram sample.
pub fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = abi::record_metric(id, value);
    }
}

/// Counters defined on their key's first use, for labels whose values only traffic tells
/// (a response's status, a reply's reason). A handful of keys each: a scan finds them, and
/// the name is formatted once, not per request.
struct LazyCounters<K>(RefCell<Vec<(K, Option<u32>)>>);

impl<K: PartialEq + Copy> LazyCounters<K> {
    fn new() -> Self {
        LazyCounters(RefCell::new(Vec::new()))
    }

    fn add(&self, key: K, name: impl FnOnce() -> String) {
        let mut known = self.0.borrow_mut();
        let id = match known.iter().find(|(k, _)| *k == key) {
            Some((_, id)) => *id,
            None => {
                let id = define(MetricType::Counter, &name());
                known.push((key, id));
                id
            }
        };
        add(id, 1);
    }
}

pub fn add(id: Option<u32>, delta: i64) {
    if let Some(id) = id {
        // A failed metric update is not worth failing or logging the request for.
        let _ = abi::increment_metric(id, delta);
    }
}

/// Process-wide metrics of one filter instance.
pub struct Globals {
    pub config_accepted: Option<u32>,
    pub config_rejected: Option<u32>,
    pub delays: Option<u32>,
    pub aborts: Option<u32>,
    pub delayed_now: Option<u32>,
    pub vm_memory: Option<u32>,
    pub authz_allowed: Option<u32>,
    pub authz_denied: Option<u32>,
    pub authz_dry_run_would_deny: Option<u32>,
    pub authz_audit: Option<u32>,
    pub path_rejected: Option<u32>,
    pub jwt_valid: Option<u32>,
    pub jwt_invalid: Option<u32>,
    pub jwt_missing: Option<u32>,
    /// Signatures checked by Envoy's `verify_signature`, and by the filter itself.
    pub jwt_signatures_envoy: Option<u32>,
    pub jwt_signatures_wasm: Option<u32>,
    pub jwks_fetch_ok: Option<u32>,
    pub jwks_fetch_failed: Option<u32>,
    pub ratelimit_state_failed: Option<u32>,
    /// `meshrules_local_replies.reason.<details>`, defined on a reason's first reply.
    local_replies: LazyCounters<&'static str>,
}

impl Globals {
    pub fn define() -> Self {
        Globals {
            config_accepted: define(MetricType::Counter, CONFIG_ACCEPTED),
            config_rejected: define(MetricType::Counter, CONFIG_REJECTED),
            delays: define(MetricType::Counter, DELAYS_INJECTED),
            aborts: define(MetricType::Counter, ABORTS_INJECTED),
            delayed_now: define(MetricType::Gauge, REQUESTS_DELAYED),
            vm_memory: define(MetricType::Gauge, VM_MEMORY),
            authz_allowed: define(MetricType::Counter, AUTHZ_ALLOWED),
            authz_denied: define(MetricType::Counter, AUTHZ_DENIED),
            authz_dry_run_would_deny: define(MetricType::Counter, AUTHZ_DRY_RUN_WOULD_DENY),
            authz_audit: define(MetricType::Counter, AUTHZ_AUDIT),
            path_rejected: define(MetricType::Counter, PATH_REJECTED),
            jwt_valid: define(MetricType::Counter, JWT_VALID),
            jwt_invalid: define(MetricType::Counter, JWT_INVALID),
            jwt_missing: define(MetricType::Counter, JWT_MISSING),
            jwt_signatures_envoy: define(MetricType::Counter, JWT_SIGNATURES_ENVOY),
            jwt_signatures_wasm: define(MetricType::Counter, JWT_SIGNATURES_WASM),
            jwks_fetch_ok: define(MetricType::Counter, JWKS_FETCH_OK),
            jwks_fetch_failed: define(MetricType::Counter, JWKS_FETCH_FAILED),
            ratelimit_state_failed: define(MetricType::Counter, RATELIMIT_STATE_FAILED),
            local_replies: LazyCounters::new(),
        }
    }

    /// Counts one of the filter's own replies under its reason: Envoy's response code details
    /// (`fault_filter_abort`, `rbac_access_denied`, `local_rate_limited`, ...).
    pub fn local_reply(&self, details: &'static str) {
        self.local_replies.add(details, || {
            format!("{LOCAL_REPLIES}.reason.{}", stat_names::segment(details))
        });
    }
}

/// Counters per route and per VirtualService, indexed like the rule set, and per rate limit.
pub struct RuleMetrics {
    pub routes: Vec<Option<u32>>,
    pub unrouted: Vec<Option<u32>>,
    pub limits: Vec<(String, LimitMetrics)>,
    /// Per route, per destination of its split (empty when left out, see
    /// [`DESTINATION_METRICS_ENV`]).
    destinations: Vec<Vec<DestinationMetrics>>,
}

/// What came back from one destination of one route.
struct DestinationMetrics {
    /// The name's label segments, up to the cluster.
    labels: String,
    duration: Option<u32>,
    /// `meshrules_responses` per status, defined on the status's first response.
    codes: LazyCounters<u32>,
}

impl DestinationMetrics {
    fn new(labels: String) -> Self {
        DestinationMetrics {
            duration: define(
                MetricType::Histogram,
                &format!("{REQUEST_DURATION}.{labels}"),
            ),
            labels,
            codes: LazyCounters::new(),
        }
    }

    fn response(&self, status: u32, elapsed_ms: u64) {
        self.codes.add(status, || {
            format!("{RESPONSES}.{}.{}", self.labels, stat_names::code(status))
        });
        record(self.duration, elapsed_ms);
    }
}

/// One rate limit's counters (`.limit.<name>` in the stat name).
pub struct LimitMetrics {
    pub allowed: Option<u32>,
    pub limited: Option<u32>,
    pub shadowed: Option<u32>,
}

impl RuleMetrics {
    pub fn define(rules: &RuleSet) -> Self {
        let routes = (0..rules.routes.len())
            .map(|r| {
                let labels = stat_names::route(rules, r)?;
                define(MetricType::Counter, &format!("{ROUTE_REQUESTS}.{labels}"))
            })
            .collect();
        let unrouted = rules
            .virtual_services
            .iter()
            .map(|vs| {
                define(
                    MetricType::Counter,
                    &format!(
                        "{UNROUTED_REQUESTS}.{}",
                        stat_names::virtual_service(&vs.id)
                    ),
                )
            })
            .collect();
        let limits = rules
            .rate_limits
            .limits
            .iter()
            .map(|l| {
                let name =
                    |metric: &str| format!("{metric}.limit.{}", stat_names::segment(&l.name));
                let m = LimitMetrics {
                    allowed: define(MetricType::Counter, &name(RATELIMIT_ALLOWED)),
                    limited: define(MetricType::Counter, &name(RATELIMIT_LIMITED)),
                    shadowed: define(MetricType::Counter, &name(RATELIMIT_SHADOWED)),
                };
                (l.name.clone(), m)
            })
            .collect();
        let per_destination = std::env::var(DESTINATION_METRICS_ENV).map_or(true, |v| v != "off");
        let destinations = if per_destination {
            (0..rules.routes.len())
                .map(|r| {
                    let labels = stat_names::destinations(rules, r);
                    labels.into_iter().map(DestinationMetrics::new).collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        RuleMetrics {
            routes,
            unrouted,
            limits,
            destinations,
        }
    }

    /// Whether responses are counted per destination: when not, the request's clock and the
    /// response's status are not read either.
    pub fn per_destination(&self) -> bool {
        !self.destinations.is_empty()
    }

    /// Counts a forwarded request's response and how long it took.
    pub fn response(&self, forward: &Forward, status: u32, elapsed_ms: u64) {
        if let Some(d) = self
            .destinations
            .get(forward.route)
            .and_then(|r| r.get(forward.destination))
        {
            d.response(status, elapsed_ms);
        }
    }

    /// Counts one request for the rate limit `name`.
    pub fn limit(&self, name: &str, which: impl Fn(&LimitMetrics) -> Option<u32>) {
        if let Some((_, m)) = self.limits.iter().find(|(n, _)| n == name) {
            add(which(m), 1);
        }
    }
}
