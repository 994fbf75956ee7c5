//! `rateLimits`: Envoy's local rate limit (`envoy.extensions.filters.http.local_ratelimit.v3.
//! LocalRateLimit`, the per-route config Istio users attach with an EnvoyFilter), attached to
//! VirtualService routes by name. Field names are protobuf JSON's: lowerCamelCase, and the
//! proto's snake_case as Envoy's own parser also accepts, so an EnvoyFilter's `value` pastes in.

use serde::Deserialize;

/// One limit: which routes it covers and Envoy's LocalRateLimit for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Names the limit in metrics and logs.
    pub name: String,
    /// `namespace/name` of a VirtualService in `resources`.
    #[serde(alias = "virtual_service")]
    pub virtual_service: String,
    /// Route names of that VirtualService; every route when absent.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    #[serde(alias = "local_rate_limit")]
    pub local_rate_limit: LocalRateLimit,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalRateLimit {
    /// Accepted for pasted configs; metrics are named by the limit's `name`.
    #[serde(default, alias = "stat_prefix")]
    pub stat_prefix: Option<String>,
    #[serde(default)]
    pub status: Option<HttpStatus>,
    #[serde(default, alias = "token_bucket")]
    pub token_bucket: Option<TokenBucket>,
    #[serde(default, alias = "filter_enabled")]
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    #[serde(default, alias = "filter_enforced")]
    pub filter_enforced: Option<RuntimeFractionalPercent>,
    #[serde(default, alias = "response_headers_to_add")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub descriptors: Vec<LocalRateLimitDescriptor>,
    #[serde(default, alias = "rate_limits")]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default, alias = "always_consume_default_token_bucket")]
    pub always_consume_default_token_bucket: Option<bool>,
    #[serde(default, alias = "max_dynamic_descriptors")]
    pub max_dynamic_descriptors: Option<f64>,
    #[serde(default, alias = "enable_x_ratelimit_headers")]
    pub enable_x_ratelimit_headers: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStatus {
    pub code: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenBucket {
    #[serde(alias = "max_tokens")]
    pub max_tokens: f64,
    /// Default 1.
    #[serde(default, alias = "tokens_per_fill")]
    pub tokens_per_fill: Option<f64>,
    #[serde(alias = "fill_interval")]
    pub fill_interval: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeFractionalPercent {
    #[serde(alias = "default_value")]
    pub default_value: FractionalPercent,
    /// Accepted; there is no Envoy runtime to read it from.
    #[serde(default, alias = "runtime_key")]
    pub runtime_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FractionalPercent {
    #[serde(default)]
    pub numerator: f64,
    /// `HUNDRED` (default), `TEN_THOUSAND` or `MILLION`.
    #[serde(default)]
    pub denominator: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderValueOption {
    pub header: HeaderValue,
    /// `APPEND_IF_EXISTS_OR_ADD` (default), `ADD_IF_ABSENT`, `OVERWRITE_IF_EXISTS_OR_ADD`,
    /// `OVERWRITE_IF_EXISTS`.
    #[serde(default, alias = "append_action")]
    pub append_action: Option<String>,
    /// Deprecated in Envoy; `false` is `OVERWRITE_IF_EXISTS_OR_ADD`.
    #[serde(default)]
    pub append: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalRateLimitDescriptor {
    pub entries: Vec<DescriptorEntry>,
    #[serde(alias = "token_bucket")]
    pub token_bucket: TokenBucket,
}

/// An empty `value` gives each distinct request value its own bucket (Envoy's dynamic
/// descriptors, at most `maxDynamicDescriptors`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorEntry {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// Envoy's `config.route.v3.RateLimit`: the actions that make one descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub actions: Vec<Action>,
}

/// One `RateLimit.Action` (a oneof: exactly one field set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Action {
    #[serde(default, alias = "request_headers")]
    pub request_headers: Option<RequestHeaders>,
    #[serde(default, alias = "remote_address")]
    pub remote_address: Option<Empty>,
    #[serde(default, alias = "generic_key")]
    pub generic_key: Option<GenericKey>,
    #[serde(default, alias = "header_value_match")]
    pub header_value_match: Option<HeaderValueMatch>,
    #[serde(default)]
    pub metadata: Option<MetadataAction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestHeaders {
    #[serde(alias = "header_name")]
    pub header_name: String,
    #[serde(alias = "descriptor_key")]
    pub descriptor_key: String,
    #[serde(default, alias = "skip_if_absent")]
    pub skip_if_absent: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GenericKey {
    #[serde(alias = "descriptor_value")]
    pub descriptor_value: String,
    #[serde(default, alias = "descriptor_key")]
    pub descriptor_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderValueMatch {
    #[serde(default, alias = "descriptor_key")]
    pub descriptor_key: Option<String>,
    #[serde(alias = "descriptor_value")]
    pub descriptor_value: String,
    #[serde(default, alias = "expect_match")]
    pub expect_match: Option<bool>,
    pub headers: Vec<HeaderMatcher>,
}

/// Envoy's `config.route.v3.HeaderMatcher`, with `stringMatch` or `presentMatch`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderMatcher {
    pub name: String,
    #[serde(default, alias = "string_match")]
    pub string_match: Option<EnvoyStringMatcher>,
    #[serde(default, alias = "present_match")]
    pub present_match: Option<bool>,
    #[serde(default, alias = "invert_match")]
    pub invert_match: bool,
}

/// Envoy's `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvoyStringMatcher {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default, alias = "safe_regex")]
    pub safe_regex: Option<SafeRegex>,
    #[serde(default, alias = "ignore_case")]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeRegex {
    pub regex: String,
}

/// The metadata action for a JWT claim: `metadataKey.key` is `envoy.filters.http.jwt_authn`
/// and `path` is the payload's name (istiod writes `payload_in_metadata` as the issuer), then
/// the claim, nested claims after it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataAction {
    #[serde(alias = "descriptor_key")]
    pub descriptor_key: String,
    #[serde(alias = "metadata_key")]
    pub metadata_key: MetadataKey,
    #[serde(default, alias = "default_value")]
    pub default_value: Option<String>,
    /// `DYNAMIC` (default); `ROUTE_ENTRY` metadata does not exist here.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, alias = "skip_if_absent")]
    pub skip_if_absent: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataKey {
    pub key: String,
    pub path: Vec<PathSegment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSegment {
    pub key: String,
}
