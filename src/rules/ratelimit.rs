//! Compiled `rateLimits`: Envoy's LocalRateLimit per route, with the descriptor actions of
//! its `rate_limits` and the buckets of its `descriptors`.

use super::matchers::HeaderCondition;

/// A token bucket's shape (its arithmetic is in `ratelimit::bucket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval_ms: u64,
}

#[derive(Debug, Default)]
pub struct RateLimits {
    pub limits: Vec<Limit>,
    /// The limit of each route (index into `limits`), by `RouteId`.
    pub by_route: Vec<Option<usize>>,
}

#[derive(Debug)]
pub struct Limit {
    /// The `name` of the limit, in metrics, logs and shared-data keys.
    pub name: String,
    /// Status of the refusal (Envoy: 429, or `status` when it is at least 400).
    pub status: u32,
    /// `token_bucket`: the route's bucket.
    pub default_bucket: Option<Bucket>,
    pub descriptors: Vec<Descriptor>,
    /// `rate_limits`: each entry's actions make one request descriptor.
    pub rate_limits: Vec<Vec<DescriptorAction>>,
    /// `filter_enabled` / `filter_enforced`, in parts per million (Envoy's default: 0).
    pub enabled_ppm: u32,
    pub enforced_ppm: u32,
    pub always_consume_default: bool,
    /// Slots per dynamic descriptor (Envoy's `max_dynamic_descriptors`, default 20).
    pub max_dynamic: u32,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
    /// `response_headers_to_add`, on refusals.
    pub response_headers: Vec<(String, String, AppendAction)>,
    /// Some action reads `remote_address`.
    pub needs_remote_address: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    Append,
    AddIfAbsent,
    Overwrite,
    OverwriteIfExists,
}

/// A configured descriptor: its entries (`None` value: one bucket per distinct request
/// value, a dynamic descriptor) and its bucket.
#[derive(Debug)]
pub struct Descriptor {
    pub entries: Vec<(String, Option<String>)>,
    pub bucket: Bucket,
}

impl Descriptor {
    pub fn is_dynamic(&self) -> bool {
        self.entries.iter().any(|(_, v)| v.is_none())
    }
}

/// One `RateLimit.Action`.
#[derive(Debug)]
pub enum DescriptorAction {
    RequestHeader {
        header: String,
        key: String,
        skip_if_absent: bool,
    },
    /// `remote_address`: the client address Envoy derived.
    RemoteAddress,
    Generic {
        key: String,
        value: String,
    },
    HeaderValueMatch {
        key: String,
        value: String,
        expect_match: bool,
        headers: Vec<HeaderCondition>,
    },
    /// `metadata` from `envoy.filters.http.jwt_authn`: a claim of the verified token issued
    /// by `issuer` (the payload's name in the metadata, as istiod writes it).
    JwtClaim {
        key: String,
        issuer: String,
        claim: Vec<String>,
        default_value: Option<String>,
        skip_if_absent: bool,
    },
}
