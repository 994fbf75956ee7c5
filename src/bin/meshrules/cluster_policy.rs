//! `bundle --output envoy`: each DestinationRule's traffic policy written into the clusters
//! of its host as istiod's cluster builder writes it (pilot/pkg/networking/core:
//! cluster_traffic_policy.go `applyTrafficPolicy`, `applyConnectionPool`, `applyH2Upgrade`,
//! `applyOutlierDetection`, `applyLoadBalancer`, `ApplyRingHashLoadBalancer`, `setWarmup`,
//! `applyRetryBudget`, `applyUpstreamProxyProtocol`; cluster_tls.go `constructUpstreamTLS`,
//! `setAutoSniAndAutoSanValidation`; networking/util `MergeSubsetTrafficPolicy`), and each
//! consistent hash as the hash policy istiod puts on the route (route/route.go
//! `hashForHTTPDestination`, `consistentHashToHashPolicy`). A setting that has no Envoy
//! counterpart outside Istio, or that istiod itself does not translate, is refused with its
//! path and the reason: nothing is dropped silently.

use std::time::Duration;

use meshrules::compile::expand_host;
use meshrules::config::{
    self, ClientTlsSettings, ConfigError, ConnectionPoolSettings, ConsistentHash, Diagnostics,
    HttpSettings, LoadBalancerSettings, OutlierDetection, PluginConfig, PortTrafficPolicy,
    ProxyProtocol, RetryBudget, Spec, TrafficPolicy,
};
use serde_json::{json, Map, Value};

/// Where a destination cluster sends: the destination's host (FQDN), subset (empty for none)
/// and port (`None` when the destination names none: no port-level setting applies).
#[derive(Debug, Clone)]
pub struct Destination {
    pub host: String,
    pub subset: String,
    pub port: Option<u16>,
}

/// The DestinationRules of a configuration, their policies read.
pub struct Policies {
    rules: Vec<Rule>,
}

struct Rule {
    /// `resources[N].spec`.
    path: String,
    host: String,
    policy: Option<TrafficPolicy>,
    subsets: Vec<(String, Option<TrafficPolicy>)>,
}

/// The policy a cluster gets once destination, port and subset levels are merged.
#[derive(Clone, Copy, Default)]
struct Effective<'a> {
    load_balancer: Option<&'a LoadBalancerSettings>,
    connection_pool: Option<&'a ConnectionPoolSettings>,
    outlier_detection: Option<&'a OutlierDetection>,
    tls: Option<&'a ClientTlsSettings>,
    proxy_protocol: Option<&'a ProxyProtocol>,
    retry_budget: Option<&'a RetryBudget>,
}

/// The entry of `policy`'s `portLevelSettings` for `port`, if any.
fn port_entry(policy: &TrafficPolicy, port: Option<u16>) -> Option<&PortTrafficPolicy> {
    let port = f64::from(port?);
    policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port))
}

/// istiod's `GetPortLevelTrafficPolicy`: the policy's entry for `port` replaces the four
/// settings a port has (unset ones are defaults, not inherited) and, as its
/// `shadowCopyPortTrafficPolicy` does, leaves out proxyProtocol and retryBudget; `true` when
/// there was such an entry.
fn for_port(policy: &TrafficPolicy, port: Option<u16>) -> (Effective<'_>, bool) {
    match port_entry(policy, port) {
        Some(p) => (
            Effective {
                load_balancer: p.load_balancer.as_ref(),
                connection_pool: p.connection_pool.as_ref(),
                outlier_detection: p.outlier_detection.as_ref(),
                tls: p.tls.as_ref(),
                ..Effective::default()
            },
            true,
        ),
        None => (
            Effective {
                load_balancer: policy.load_balancer.as_ref(),
                connection_pool: policy.connection_pool.as_ref(),
                outlier_detection: policy.outlier_detection.as_ref(),
                tls: policy.tls.as_ref(),
                proxy_protocol: policy.proxy_protocol.as_ref(),
                retry_budget: policy.retry_budget.as_ref(),
            },
            false,
        ),
    }
}

impl Policies {
    /// Reads every DestinationRule's policies. The problems are what `bundle --output envoy`
    /// refuses wherever it is written, whether or not a route reaches it.
    pub fn read(config: &PluginConfig) -> (Policies, Vec<ConfigError>) {
        // `check` has reported the policies' problems already (bundle runs it first).
        let mut diags = Diagnostics::default();
        let mut rules: Vec<Rule> = Vec::new();
        let mut refused = Vec::new();
        for res in &config.resources {
            let Spec::DestinationRule(dr) = &res.spec else {
                continue;
            };
            let path = format!("{}.spec", res.path);
            let mut read = |value: &Option<meshrules_config::Raw>, at: String| {
                let policy = value
                    .as_ref()
                    .and_then(|v| diags.parse_traffic_policy(v, &at))?;
                refusals(&policy, &at, &mut refused);
                Some(policy)
            };
            let policy = read(&dr.traffic_policy, format!("{path}.trafficPolicy"));
            let subsets = dr
                .subsets
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let at = format!("{path}.subsets[{i}].trafficPolicy");
                    (s.name.clone(), read(&s.traffic_policy, at))
                })
                .collect();
            let host = expand_host(
                &dr.host,
                &res.metadata.namespace,
                &config.routing.cluster_domain,
            );
            // istiod merges the DestinationRules of one host, keeping the first one's policy.
            if policy.is_some() {
                if let Some(first) = rules.iter().find(|r| r.host == host && r.policy.is_some()) {
                    refused.push(ConfigError::new(
                        format!("{path}.trafficPolicy"),
                        format!(
                            "{} already sets the traffic policy of {host}: istiod would use only \
                             the first DestinationRule's; merge the two",
                            first.path
                        ),
                    ));
                }
            }
            rules.push(Rule {
                path,
                host,
                policy,
                subsets,
            });
        }
        (Policies { rules }, refused)
    }

    /// The DestinationRules for `host`: its own, else those of the longest wildcard host
    /// covering it (`*.example.com`, `*`), as istiod picks them.
    fn rules_for<'a>(&'a self, host: &str) -> Vec<&'a Rule> {
        let exact: Vec<&Rule> = self.rules.iter().filter(|r| r.host == host).collect();
        if !exact.is_empty() {
            return exact;
        }
        let covers = |r: &&Rule| {
            r.host == "*"
                || r.host
                    .strip_prefix('*')
                    .is_some_and(|suffix| host.ends_with(suffix))
        };
        let best = self.rules.iter().filter(covers).map(|r| r.host.len()).max();
        self.rules
            .iter()
            .filter(covers)
            .filter(|r| Some(r.host.len()) == best)
            .collect()
    }

    /// Writes the policy of `dest` into `cluster` (a cluster with its name, type, endpoints
    /// and connect timeout, which stands for the mesh's default) and returns the route hash
    /// policy its consistent hash needs, if any. Every cluster gets istiod's defaults (its
    /// circuit breaker thresholds, LEAST_REQUEST), DestinationRule or not.
    pub fn apply(&self, cluster: &mut Map<String, Value>, dest: &Destination) -> Option<Value> {
        let rules = self.rules_for(&dest.host);
        let top = rules.iter().find_map(|r| r.policy.as_ref());
        let subset = rules.iter().find_map(|r| {
            r.subsets
                .iter()
                .find(|(name, _)| *name == dest.subset && !name.is_empty())
                .and_then(|(_, p)| p.as_ref())
        });
        write_cluster(cluster, merge(top, subset, dest.port));
        hash_policy(top, subset, dest.port).and_then(route_hash_policy)
    }
}

/// istiod's `MergeSubsetTrafficPolicy`: the destination level (or its port's entry), with
/// each setting the subset (or the subset's port entry) sets put over it; a subset port entry
/// replaces all four port settings.
fn merge<'a>(
    top: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: Option<u16>,
) -> Effective<'a> {
    let original = top.map(|p| for_port(p, port).0);
    let Some(subset) = subset else {
        return original.unwrap_or_default();
    };
    let (sub, port_level) = for_port(subset, port);
    let Some(mut merged) = original else {
        return sub;
    };
    if sub.connection_pool.is_some() || port_level {
        merged.connection_pool = sub.connection_pool;
    }
    if sub.outlier_detection.is_some() || port_level {
        merged.outlier_detection = sub.outlier_detection;
    }
    if sub.load_balancer.is_some() || port_level {
        merged.load_balancer = sub.load_balancer;
    }
    if sub.tls.is_some() || port_level {
        merged.tls = sub.tls;
    }
    if sub.proxy_protocol.is_some() {
        merged.proxy_protocol = sub.proxy_protocol;
    }
    if sub.retry_budget.is_some() {
        merged.retry_budget = sub.retry_budget;
    }
    merged
}

/// istiod's `hashForHTTPDestination`: the subset's port entry, the subset, the destination
/// level's port entry, the destination level, first one with a consistent hash.
fn hash_policy<'a>(
    top: Option<&'a TrafficPolicy>,
    subset: Option<&'a TrafficPolicy>,
    port: Option<u16>,
) -> Option<&'a ConsistentHash> {
    let port_hash = |p: &'a TrafficPolicy| {
        port_entry(p, port)?
            .load_balancer
            .as_ref()?
            .consistent_hash
            .as_ref()
    };
    let own_hash = |p: &'a TrafficPolicy| p.load_balancer.as_ref()?.consistent_hash.as_ref();
    subset
        .and_then(port_hash)
        .or_else(|| subset.and_then(own_hash))
        .or_else(|| top.and_then(port_hash))
        .or_else(|| top.and_then(own_hash))
}

/// istiod's `consistentHashToHashPolicy`: `None` for a consistent hash with no key.
fn route_hash_policy(ch: &ConsistentHash) -> Option<Value> {
    if let Some(name) = &ch.http_header_name {
        return Some(json!({ "header": { "header_name": name } }));
    }
    if let Some(cookie) = &ch.http_cookie {
        let mut c = Map::new();
        c.insert("name".into(), json!(cookie.name));
        if let Some(ttl) = cookie.ttl.as_deref().and_then(duration) {
            c.insert("ttl".into(), json!(ttl));
        }
        if let Some(path) = &cookie.path {
            c.insert("path".into(), json!(path));
        }
        if !cookie.attributes.is_empty() {
            let attributes: Vec<Value> = cookie
                .attributes
                .iter()
                .map(|a| json!({ "name": a.name, "value": a.value.clone().unwrap_or_default() }))
                .collect();
            c.insert("attributes".into(), json!(attributes));
        }
        return Some(json!({ "cookie": c }));
    }
    if let Some(source_ip) = ch.use_source_ip {
        return Some(json!({ "connection_properties": { "source_ip": source_ip } }));
    }
    ch.http_query_parameter_name
        .as_ref()
        .map(|name| json!({ "query_parameter": { "name": name } }))
}

// ------------------------------------------------------------------------------------------
// The cluster
// ------------------------------------------------------------------------------------------

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// What goes into the cluster's `HttpProtocolOptions`, which several settings share.
#[derive(Default)]
struct HttpOptions {
    common: Map<String, Value>,
    upstream: Map<String, Value>,
    http2: Map<String, Value>,
}

/// istiod's `applyTrafficPolicy` for an outbound cluster, in its order.
fn write_cluster(c: &mut Map<String, Value>, p: Effective) {
    let http_settings = p.connection_pool.and_then(|cp| cp.http.as_ref());
    let client_protocol = http_settings.is_some_and(|h| h.use_client_protocol == Some(true));
    let h2 = http_settings.is_some_and(upgrades_to_h2);
    let mut http = HttpOptions::default();
    connection_pool(c, p, h2, &mut http);
    if let Some(od) = p.outlier_detection {
        outlier_detection(c, od);
    }
    load_balancer(c, p.load_balancer);
    if let Some(tls) = p.tls {
        if let Some(socket) = tls_socket(tls, h2, &mut http) {
            c.insert("transport_socket".into(), socket);
        }
    }
    if let Some(pp) = p.proxy_protocol {
        // applyUpstreamProxyProtocol: around the TLS socket, or a raw one.
        let inner = c.remove("transport_socket").unwrap_or_else(|| {
            json!({
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" },
            })
        });
        c.insert(
            "transport_socket".into(),
            json!({
                "name": "envoy.transport_sockets.upstream_proxy_protocol",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
                    "config": { "version": pp.version.as_deref().unwrap_or("V1") },
                    "transport_socket": inner,
                },
            }),
        );
    }
    if http.common.is_empty() && http.upstream.is_empty() && !h2 && !client_protocol {
        return;
    }
    let mut options = Map::new();
    options.insert(
        "@type".into(),
        json!(format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}")),
    );
    if !http.common.is_empty() {
        options.insert(
            "common_http_protocol_options".into(),
            Value::Object(http.common),
        );
    }
    if !http.upstream.is_empty() {
        options.insert(
            "upstream_http_protocol_options".into(),
            Value::Object(http.upstream),
        );
    }
    // Envoy requires an upstream protocol whenever these options are given.
    let protocol = if client_protocol {
        // setUseDownstreamProtocol
        (
            "use_downstream_protocol_config",
            json!({ "http_protocol_options": {}, "http2_protocol_options": {} }),
        )
    } else if h2 {
        (
            "explicit_http_config",
            json!({ "http2_protocol_options": http.http2 }),
        )
    } else {
        (
            "explicit_http_config",
            json!({ "http_protocol_options": {} }),
        )
    };
    options.insert(protocol.0.into(), protocol.1);
    c.insert(
        "typed_extension_protocol_options".into(),
        json!({ HTTP_PROTOCOL_OPTIONS: options }),
    );
}

/// istiod's `shouldH2Upgrade` with the mesh's default (DO_NOT_UPGRADE): only an explicit
/// `h2UpgradePolicy: UPGRADE`, and never with `useClientProtocol`.
fn upgrades_to_h2(h: &HttpSettings) -> bool {
    h.use_client_protocol != Some(true) && h.h2_upgrade_policy.as_deref() == Some("UPGRADE")
}

/// A whole number the policy check has already bounded.
fn uint(v: Option<f64>) -> u64 {
    v.map_or(0, |v| v as u64)
}

/// A checked duration in protobuf JSON (`"30s"`, `"0.500s"`).
fn duration(text: &str) -> Option<String> {
    config::duration::parse(text).ok().map(proto_duration)
}

fn proto_duration(d: Duration) -> String {
    match d.subsec_nanos() {
        0 => format!("{}s", d.as_secs()),
        n => format!(
            "{}.{}s",
            d.as_secs(),
            format!("{n:09}").trim_end_matches('0')
        ),
    }
}

/// `applyConnectionPool` (applied to every cluster, with empty settings when there are none)
/// and `applyRetryBudget`.
fn connection_pool(c: &mut Map<String, Value>, p: Effective, h2: bool, http: &mut HttpOptions) {
    // getDefaultCircuitBreakerThresholds: Envoy's own defaults (1024, 3 retries) made 503s
    // during pod churn, istiod says; it lifts them all.
    let mut threshold = json!({
        "max_connections": u32::MAX,
        "max_pending_requests": u32::MAX,
        "max_requests": u32::MAX,
        "max_retries": u32::MAX,
        "track_remaining": true,
    });
    let cp = p.connection_pool;
    let mut idle_timeout = None;
    if let Some(h) = cp.and_then(|cp| cp.http.as_ref()) {
        for (field, v) in [
            ("max_requests", h.http2_max_requests),
            ("max_pending_requests", h.http1_max_pending_requests),
            ("max_retries", h.max_retries),
        ] {
            // istiod cannot tell 0 from unset: 0 keeps the default.
            if uint(v) > 0 {
                threshold[field] = json!(uint(v));
            }
        }
        idle_timeout = h.idle_timeout.clone();
        if uint(h.max_requests_per_connection) > 0 {
            http.common.insert(
                "max_requests_per_connection".into(),
                json!(uint(h.max_requests_per_connection)),
            );
        }
        if h2 {
            if uint(h.max_concurrent_streams) > 0 {
                http.http2.insert(
                    "max_concurrent_streams".into(),
                    json!(uint(h.max_concurrent_streams)),
                );
            }
            if let Some(ka) = &h.http2_keep_alive {
                let mut keepalive = Map::new();
                for (field, v) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                    if let Some(d) = v.as_deref().and_then(duration) {
                        keepalive.insert(field.into(), json!(d));
                    }
                }
                http.http2
                    .insert("connection_keepalive".into(), Value::Object(keepalive));
            }
        }
    }
    if let Some(t) = cp.and_then(|cp| cp.tcp.as_ref()) {
        if let Some(d) = t.connect_timeout.as_deref().and_then(duration) {
            c.insert("connect_timeout".into(), json!(d));
        }
        if uint(t.max_connections) > 0 {
            threshold["max_connections"] = json!(uint(t.max_connections));
        }
        if let Some(d) = t.max_connection_duration.as_deref().and_then(duration) {
            http.common
                .insert("max_connection_duration".into(), json!(d));
        }
        if idle_timeout.is_none() {
            idle_timeout = t.idle_timeout.clone();
        }
        // applyTCPKeepalive: SO_KEEPALIVE with the OS defaults, then each value given (times
        // in whole seconds, as istiod truncates them).
        if let Some(ka) = &t.tcp_keepalive {
            let mut keepalive = Map::new();
            if uint(ka.probes) > 0 {
                keepalive.insert("keepalive_probes".into(), json!(uint(ka.probes)));
            }
            for (field, v) in [
                ("keepalive_time", &ka.time),
                ("keepalive_interval", &ka.interval),
            ] {
                if let Some(d) = v.as_deref().and_then(|t| config::duration::parse(t).ok()) {
                    keepalive.insert(field.into(), json!(d.as_secs()));
                }
            }
            c.insert(
                "upstream_connection_options".into(),
                json!({ "tcp_keepalive": keepalive }),
            );
        }
    }
    if let Some(d) = idle_timeout.as_deref().and_then(duration) {
        http.common.insert("idle_timeout".into(), json!(d));
    }
    if let Some(rb) = p.retry_budget {
        // Without a percent istiod writes 0.2 (meaning 0.2%) against its API's documented
        // 20%; leaving it out gives Envoy's default, the documented 20%.
        let mut budget = Map::new();
        if let Some(percent) = rb.percent {
            budget.insert("budget_percent".into(), json!({ "value": percent }));
        }
        let min = match uint(rb.min_retry_concurrency) {
            0 => 3,
            n => n,
        };
        budget.insert("min_retry_concurrency".into(), json!(min));
        threshold["retry_budget"] = Value::Object(budget);
    }
    c.insert(
        "circuit_breakers".into(),
        json!({ "thresholds": [threshold] }),
    );
}

/// `applyOutlierDetection`.
fn outlier_detection(c: &mut Map<String, Value>, od: &OutlierDetection) {
    // Success-rate ejection stays off, as istiod keeps it.
    let mut out = json!({ "enforcing_success_rate": 0 });
    for (count, enforcing, v) in [
        (
            "consecutive_5xx",
            "enforcing_consecutive_5xx",
            od.consecutive_5xx_errors,
        ),
        (
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            od.consecutive_gateway_errors,
        ),
    ] {
        if let Some(v) = v {
            let v = v as u64;
            out[count] = json!(v);
            out[enforcing] = json!(if v > 0 { 100 } else { 0 });
        }
    }
    for (field, v) in [
        ("interval", &od.interval),
        ("base_ejection_time", &od.base_ejection_time),
    ] {
        if let Some(d) = v.as_deref().and_then(duration) {
            out[field] = json!(d);
        }
    }
    if uint(od.max_ejection_percent) > 0 {
        out["max_ejection_percent"] = json!(uint(od.max_ejection_percent));
    }
    if od.split_external_local_origin_errors == Some(true) {
        out["split_external_local_origin_errors"] = json!(true);
        if uint(od.consecutive_local_origin_failures) > 0 {
            out["consecutive_local_origin_failure"] =
                json!(uint(od.consecutive_local_origin_failures));
            out["enforcing_consecutive_local_origin_failure"] = json!(100);
        }
        out["enforcing_local_origin_success_rate"] = json!(0);
    }
    c.insert("outlier_detection".into(), out);
    // The panic threshold is set even when 0 (Envoy's default is 50): with few endpoints a
    // panicking Envoy would send to ejected ones.
    c.insert(
        "common_lb_config".into(),
        json!({ "healthy_panic_threshold": { "value": uint(od.min_health_percent) } }),
    );
}

/// `applyLoadBalancer` and `ApplyRingHashLoadBalancer`.
fn load_balancer(c: &mut Map<String, Value>, lb: Option<&LoadBalancerSettings>) {
    let simple = lb.and_then(|lb| lb.simple.as_deref());
    // Neither simple nor a known value: istiod's default, LEAST_REQUEST (LEAST_CONN is its
    // deprecated name).
    let (policy, slow_start) = match simple {
        Some("ROUND_ROBIN") => ("ROUND_ROBIN", Some("round_robin_lb_config")),
        Some("RANDOM") => ("RANDOM", None),
        _ => ("LEAST_REQUEST", Some("least_request_lb_config")),
    };
    c.insert("lb_policy".into(), json!(policy));
    if let (Some(lb), Some(config)) = (lb, slow_start) {
        let window = if let Some(w) = &lb.warmup {
            // setWarmup: istiod's defaults, aggression 1 (linear) and 10% (Envoy's); the
            // runtime key is a fixed one nothing sets, as istiod writes it.
            w.duration.as_deref().and_then(duration).map(|d| {
                json!({
                    "slow_start_window": d,
                    "aggression": { "default_value": w.aggression.unwrap_or(1.0), "runtime_key": "(" },
                    "min_weight_percent": { "value": w.minimum_percent.unwrap_or(10.0) },
                })
            })
        } else {
            lb.warmup_duration_secs
                .as_deref()
                .and_then(duration)
                .map(|d| json!({ "slow_start_window": d }))
        };
        if let Some(window) = window {
            c.insert(config.into(), json!({ "slow_start_config": window }));
        }
    }
    let Some(ch) = lb.and_then(|lb| lb.consistent_hash.as_ref()) else {
        return;
    };
    if let Some(m) = &ch.maglev {
        c.insert("lb_policy".into(), json!("MAGLEV"));
        if uint(m.table_size) != 0 {
            c.insert(
                "maglev_lb_config".into(),
                json!({ "table_size": uint(m.table_size) }),
            );
        }
    } else if let Some(r) = &ch.ring_hash {
        c.insert("lb_policy".into(), json!("RING_HASH"));
        if uint(r.minimum_ring_size) != 0 {
            c.insert(
                "ring_hash_lb_config".into(),
                json!({ "minimum_ring_size": uint(r.minimum_ring_size) }),
            );
        }
    } else {
        // Envoy's default ring size, or the deprecated field's.
        let size = match uint(ch.minimum_ring_size) {
            0 => 1024,
            n => n,
        };
        c.insert("lb_policy".into(), json!("RING_HASH"));
        c.insert(
            "ring_hash_lb_config".into(),
            json!({ "minimum_ring_size": size }),
        );
    }
}

/// `constructUpstreamTLS` with certificate files (istiod serves them over SDS from the files;
/// a plain Envoy reads the files), and `setAutoSniAndAutoSanValidation`.
fn tls_socket(tls: &ClientTlsSettings, h2: bool, http: &mut HttpOptions) -> Option<Value> {
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    if !matches!(mode, "SIMPLE" | "MUTUAL") {
        return None;
    }
    let insecure = tls.insecure_skip_verify == Some(true);
    let file = |v: &Option<String>| json!({ "filename": v.clone().unwrap_or_default() });
    let mut common = Map::new();
    if mode == "MUTUAL" {
        common.insert(
            "tls_certificates".into(),
            json!([{ "certificate_chain": file(&tls.client_certificate), "private_key": file(&tls.private_key) }]),
        );
    }
    if !insecure {
        let mut validation = Map::new();
        validation.insert("trusted_ca".into(), file(&tls.ca_certificates));
        if !tls.subject_alt_names.is_empty() {
            // istiod's exact matchers, which Envoy compares with the DNS and URI names.
            let matchers: Vec<Value> = tls
                .subject_alt_names
                .iter()
                .flat_map(|san| {
                    ["DNS", "URI"]
                        .map(|kind| json!({ "san_type": kind, "matcher": { "exact": san } }))
                })
                .collect();
            validation.insert("match_typed_subject_alt_names".into(), json!(matchers));
        }
        if tls.ca_crl.is_some() {
            validation.insert("crl".into(), file(&tls.ca_crl));
        }
        common.insert("validation_context".into(), Value::Object(validation));
    }
    if h2 {
        common.insert("alpn_protocols".into(), json!(["h2"]));
    }
    let mut context = Map::new();
    context.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
    );
    context.insert("common_tls_context".into(), Value::Object(common));
    match tls.sni.as_deref().filter(|s| !s.is_empty()) {
        Some(sni) => {
            context.insert("sni".into(), json!(sni));
        }
        // The request's authority names the server, and its certificate is checked for it.
        None => {
            http.upstream.insert("auto_sni".into(), json!(true));
            if tls.subject_alt_names.is_empty() && !insecure {
                http.upstream
                    .insert("auto_san_validation".into(), json!(true));
            }
        }
    }
    Some(json!({ "name": "envoy.transport_sockets.tls", "typed_config": context }))
}

// ------------------------------------------------------------------------------------------
// What is refused
// ------------------------------------------------------------------------------------------

/// Every setting of `policy` (at `path`) that `bundle --output envoy` cannot write, with why.
fn refusals(policy: &TrafficPolicy, path: &str, out: &mut Vec<ConfigError>) {
    let mut refuse = |field: String, reason: &str| out.push(ConfigError::new(field, reason));
    settings_refusals(
        policy.load_balancer.as_ref(),
        policy.connection_pool.as_ref(),
        policy.outlier_detection.as_ref(),
        policy.tls.as_ref(),
        path,
        &mut refuse,
    );
    for (i, p) in policy.port_level_settings.iter().enumerate() {
        settings_refusals(
            p.load_balancer.as_ref(),
            p.connection_pool.as_ref(),
            p.outlier_detection.as_ref(),
            p.tls.as_ref(),
            &format!("{path}.portLevelSettings[{i}]"),
            &mut refuse,
        );
    }
    if policy.tunnel.is_some() {
        refuse(
            format!("{path}.tunnel"),
            "not translated: a tunnel carries TCP connections through an HTTP CONNECT or POST \
             proxy, and Istio applies it to TCP and TLS routes only; meshrules routes HTTP",
        );
    }
    if policy
        .retry_budget
        .as_ref()
        .is_some_and(|rb| rb.budget_interval.is_some())
    {
        refuse(
            format!("{path}.retryBudget.budgetInterval"),
            "not translated: Envoy's retry budget (circuit_breakers.thresholds.retry_budget) \
             counts active requests and has no interval; istiod does not write it either",
        );
    }
}

fn settings_refusals(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    path: &str,
    refuse: &mut dyn FnMut(String, &str),
) {
    if let Some(lb) = lb {
        let lbpath = format!("{path}.loadBalancer");
        if lb.simple.as_deref() == Some("PASSTHROUGH") {
            refuse(
                format!("{lbpath}.simple"),
                "PASSTHROUGH is not translated: istiod makes it an ORIGINAL_DST cluster, which \
                 sends each connection to the address its client dialled; clients of this Envoy \
                 dial its listener, so there is no other address to send to. Give the cluster's \
                 endpoints with --endpoint and another load balancer",
            );
        }
        const LOCALITY: &str = "not translated: locality load balancing needs each endpoint's \
            region, zone and subzone, which istiod takes from the Kubernetes nodes; the \
            endpoints of a bundled cluster (--endpoint, or DNS) have none";
        if lb.locality_lb_setting.as_ref().is_some_and(|l| {
            l.enabled != Some(false)
                || !l.distribute.is_empty()
                || !l.failover.is_empty()
                || !l.failover_priority.is_empty()
        }) {
            refuse(format!("{lbpath}.localityLbSetting"), LOCALITY);
        }
        if lb.zone_aware_lb_setting.as_ref().is_some_and(|z| {
            z.enabled != Some(false) || !z.failover.is_empty() || !z.failover_priority.is_empty()
        }) {
            refuse(format!("{lbpath}.zoneAwareLbSetting"), LOCALITY);
        }
        if lb.backend_utilization.is_some() {
            refuse(
                format!("{lbpath}.backendUtilization"),
                "not translated: it weighs endpoints by the ORCA load reports they send \
                 (Envoy's client_side_weighted_round_robin), which meshrules does not write",
            );
        }
        let slow_start = lb.simple.is_none()
            || matches!(
                lb.simple.as_deref(),
                Some("ROUND_ROBIN" | "LEAST_REQUEST" | "LEAST_CONN" | "UNSPECIFIED")
            );
        for (field, set) in [
            ("warmup", lb.warmup.is_some()),
            ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
        ] {
            if set && (!slow_start || lb.consistent_hash.is_some()) {
                refuse(
                    format!("{lbpath}.{field}"),
                    "not translated: Envoy's slow start works with ROUND_ROBIN and \
                     LEAST_REQUEST only (istiod drops it for other load balancers)",
                );
            }
        }
        if lb.warmup.is_some() && lb.warmup_duration_secs.is_some() {
            refuse(
                format!("{lbpath}.warmupDurationSecs"),
                "not translated: warmup is set too, and istiod uses warmup",
            );
        }
    }
    if let Some(h) = pool.and_then(|cp| cp.http.as_ref()) {
        let hpath = format!("{path}.connectionPool.http");
        if !upgrades_to_h2(h) {
            for (field, set) in [
                ("maxConcurrentStreams", uint(h.max_concurrent_streams) > 0),
                ("http2KeepAlive", h.http2_keep_alive.is_some()),
            ] {
                if set {
                    refuse(
                        format!("{hpath}.{field}"),
                        "not translated: it applies to HTTP/2 connections to the upstream, \
                         which this cluster does not use; set h2UpgradePolicy: UPGRADE \
                         (istiod drops it here)",
                    );
                }
            }
        }
    }
    if let Some(od) = outlier {
        let opath = format!("{path}.outlierDetection");
        if uint(od.consecutive_errors) > 0 {
            refuse(
                format!("{opath}.consecutiveErrors"),
                "not translated: deprecated, and istiod only warns about it; use \
                 consecutive5xxErrors or consecutiveGatewayErrors",
            );
        }
        if !od.outlier_detection_http_error_codes.is_empty() {
            refuse(
                format!("{opath}.outlierDetectionHttpErrorCodes"),
                "not translated: Envoy's outlier detection counts 5xx and gateway errors \
                 (consecutive5xxErrors, consecutiveGatewayErrors); counting chosen statuses \
                 needs its outlier detection monitors, which meshrules does not write",
            );
        }
    }
    if let Some(tls) = tls {
        tls_refusals(tls, &format!("{path}.tls"), refuse);
    }
}

fn tls_refusals(tls: &ClientTlsSettings, path: &str, refuse: &mut dyn FnMut(String, &str)) {
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    if mode == "ISTIO_MUTUAL" {
        refuse(
            format!("{path}.mode"),
            "ISTIO_MUTUAL is refused outside Istio: it presents the workload certificate \
             istiod's CA issues to each sidecar (over SDS), which a plain Envoy does not have. \
             Use MUTUAL with clientCertificate, privateKey and caCertificates files",
        );
        return;
    }
    if tls.credential_name.is_some() {
        refuse(
            format!("{path}.credentialName"),
            "not translated: it names a Kubernetes Secret that Istio's agent serves over SDS; \
             a plain Envoy reads files: give clientCertificate, privateKey and caCertificates",
        );
        return;
    }
    let insecure = tls.insecure_skip_verify == Some(true);
    if mode == "DISABLE" {
        let set = tls.client_certificate.is_some()
            || tls.private_key.is_some()
            || tls.ca_certificates.is_some()
            || !tls.subject_alt_names.is_empty()
            || tls.sni.is_some()
            || tls.insecure_skip_verify.is_some()
            || tls.ca_crl.is_some();
        if set {
            refuse(
                path.to_string(),
                "not translated: mode DISABLE (the default) sends plaintext, so its certificate \
                 settings do nothing; set mode SIMPLE or MUTUAL",
            );
        }
        return;
    }
    if !insecure && tls.ca_certificates.as_deref().is_none_or(str::is_empty) {
        refuse(
            format!("{path}.caCertificates"),
            "is needed outside Istio: istiod verifies the server with the system's CA bundle \
             when none is given, a plain Envoy only with a file. Give it (the system's bundle \
             is /etc/ssl/certs/ca-certificates.crt on Debian), or insecureSkipVerify: true",
        );
    }
    if insecure && tls.ca_crl.is_some() {
        refuse(
            format!("{path}.caCrl"),
            "not translated: with insecureSkipVerify the server's certificate is not verified, \
             so istiod writes no revocation list",
        );
    }
}
