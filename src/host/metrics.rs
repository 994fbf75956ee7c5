//! The filter's metrics, defined through proxy-wasm (`wasmcustom.` in Envoy's stats).
//! Per-route names carry their labels as `.namespace.<ns>.virtual_service.<vs>.route.<r>`
//! segments that Envoy's `stats_tags` turn into Prometheus labels (see `envoy/envoy.yaml`).

use super::abi;
use proxy_wasm::types::MetricType;

use crate::rules::RuleSet;

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
        }
    }
}

/// Counters per route and per VirtualService, indexed like the rule set, and per rate limit.
pub struct RuleMetrics {
    pub routes: Vec<Option<u32>>,
    pub unrouted: Vec<Option<u32>>,
    pub limits: Vec<(String, LimitMetrics)>,
}

/// One rate limit's counters (`.limit.<name>` in the stat name).
pub struct LimitMetrics {
    pub allowed: Option<u32>,
    pub limited: Option<u32>,
    pub shadowed: Option<u32>,
}

/// Stat names are dot-separated; a dot inside a Kubernetes or route name would split a label.
fn segment(s: &str) -> String {
    s.replace('.', "_")
}

fn vs_labels(id: &str) -> String {
    let (ns, name) = id.split_once('/').unwrap_or(("", id));
    format!(
        "namespace.{}.virtual_service.{}",
        segment(ns),
        segment(name)
    )
}

impl RuleMetrics {
    pub fn define(rules: &RuleSet) -> Self {
        let routes = rules
            .routes
            .iter()
            .map(|r| {
                let vs = &rules.virtual_services[r.virtual_service].id;
                let name = format!(
                    "{ROUTE_REQUESTS}.{}.route.{}",
                    vs_labels(vs),
                    segment(&r.name)
                );
                define(MetricType::Counter, &name)
            })
            .collect();
        let unrouted = rules
            .virtual_services
            .iter()
            .map(|vs| {
                define(
                    MetricType::Counter,
                    &format!("{UNROUTED_REQUESTS}.{}", vs_labels(&vs.id)),
                )
            })
            .collect();
        let limits = rules
            .rate_limits
            .limits
            .iter()
            .map(|l| {
                let name = |metric: &str| format!("{metric}.limit.{}", segment(&l.name));
                let m = LimitMetrics {
                    allowed: define(MetricType::Counter, &name(RATELIMIT_ALLOWED)),
                    limited: define(MetricType::Counter, &name(RATELIMIT_LIMITED)),
                    shadowed: define(MetricType::Counter, &name(RATELIMIT_SHADOWED)),
                };
                (l.name.clone(), m)
            })
            .collect();
        RuleMetrics {
            routes,
            unrouted,
            limits,
        }
    }

    /// Counts one request for the rate limit `name`.
    pub fn limit(&self, name: &str, which: impl Fn(&LimitMetrics) -> Option<u32>) {
        if let Some((_, m)) = self.limits.iter().find(|(n, _)| n == name) {
            add(which(m), 1);
        }
    }
}
