//! DestinationRule traffic policies, checked as Istio checks them on `kubectl apply`: the CRD
//! schema (types and unknown fields are read by `Diagnostics::parse_traffic_policy`; ranges,
//! enumerations, one-ofs and CEL rules are here) and istiod's validating webhook
//! (`ValidateDestinationRule` in pkg/config/validation/validation.go: `validateTrafficPolicy`,
//! `validateConnectionPool`, `validateOutlierDetection`, `validateLoadBalancer`,
//! `validatePortTrafficPolicies`, `validateTunnelSettings`, and `agent.ValidateTLS` /
//! `agent.ValidateLocalityLbSetting`). The filter applies none of it (Envoy's clusters do:
//! istiod writes them in a mesh, `meshrules bundle --output envoy` for a plain Envoy); it is
//! checked so that what loads here is what Istio accepts.

use std::time::Duration;

use serde_json::Value;

use super::whole_number;
use crate::config::{
    ClientTlsSettings, ConnectionPoolSettings, ConsistentHash, Diagnostics, LoadBalancerSettings,
    LocalityLbSetting, OutlierDetection, PortTrafficPolicy, TrafficPolicy,
};

const INT32: i64 = i32::MAX as i64;
const UINT32: i64 = u32::MAX as i64;
/// Protobuf's uint64 read from a JSON number: beyond 2^53 a double no longer holds every whole
/// number, so that is as far as a whole number can be checked.
const UINT64: i64 = 1 << 53;

/// istiod's `isPrime` bound for Maglev tables (Envoy's own limit).
const MAGLEV_TABLE_LIMIT: u64 = 5_000_011;

/// Checks the `trafficPolicy` at `path` of a DestinationRule in `namespace`.
pub(super) fn check(value: &Value, namespace: &str, path: &str, diags: &mut Diagnostics) {
    if let Some(policy) = diags.parse_traffic_policy(value, path) {
        traffic_policy(&policy, namespace, path, diags);
    }
}

fn traffic_policy(p: &TrafficPolicy, namespace: &str, path: &str, diags: &mut Diagnostics) {
    if p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
        && p.port_level_settings.is_empty()
        && p.tunnel.is_none()
        && p.proxy_protocol.is_none()
        && p.retry_budget.is_none()
    {
        diags.error(path, "traffic policy must have at least one field (istiod)");
        return;
    }
    if p.tunnel.is_some() && p.proxy_protocol.is_some() {
        diags.error(
            path,
            "tunnel and proxyProtocol must not be set together (istiod)",
        );
    }
    settings(
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
        namespace,
        path,
        diags,
    );
    // The CRD's maxItems.
    if p.port_level_settings.len() > 4096 {
        diags.error(
            format!("{path}.portLevelSettings"),
            format!(
                "{} entries, over the CRD's limit of 4096",
                p.port_level_settings.len()
            ),
        );
    }
    for (i, port) in p.port_level_settings.iter().enumerate() {
        port_policy(
            port,
            namespace,
            &format!("{path}.portLevelSettings[{i}]"),
            diags,
        );
    }
    if let Some(t) = &p.tunnel {
        let tpath = format!("{path}.tunnel");
        if let Some(protocol) = &t.protocol {
            if !["", "CONNECT", "POST"].contains(&protocol.as_str()) {
                diags.error(
                    format!("{tpath}.protocol"),
                    format!("{protocol:?}: tunnel protocol must be \"CONNECT\" or \"POST\""),
                );
            }
        }
        match &t.target_host {
            None => diags.error(format!("{tpath}.targetHost"), "is required"),
            Some(host) => {
                if !fqdn(host) && host.parse::<std::net::IpAddr>().is_err() {
                    diags.error(
                        format!("{tpath}.targetHost"),
                        format!("{host:?}: tunnel target host must be a valid FQDN or IP address"),
                    );
                }
            }
        }
        match t.target_port {
            None => diags.error(format!("{tpath}.targetPort"), "is required"),
            Some(port) => {
                whole_number(port, 1, 65535, &format!("{tpath}.targetPort"), diags);
            }
        }
    }
    if let Some(pp) = &p.proxy_protocol {
        one_of(
            &pp.version,
            &["V1", "V2"],
            &format!("{path}.proxyProtocol.version"),
            diags,
        );
    }
    if let Some(rb) = &p.retry_budget {
        let rpath = format!("{path}.retryBudget");
        percent(rb.percent, &format!("{rpath}.percent"), diags);
        number(
            rb.min_retry_concurrency,
            0,
            UINT32,
            &format!("{rpath}.minRetryConcurrency"),
            diags,
        );
        duration(
            &rb.budget_interval,
            Rule::Any,
            &format!("{rpath}.budgetInterval"),
            diags,
        );
    }
}

/// The four settings a policy and each of its ports have.
fn settings(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    namespace: &str,
    path: &str,
    diags: &mut Diagnostics,
) {
    if let Some(od) = outlier {
        outlier_detection(od, &format!("{path}.outlierDetection"), diags);
    }
    if let Some(cp) = pool {
        connection_pool(cp, &format!("{path}.connectionPool"), diags);
    }
    if let Some(lb) = lb {
        load_balancer(
            lb,
            outlier.is_some(),
            &format!("{path}.loadBalancer"),
            diags,
        );
    }
    if let Some(tls) = tls {
        client_tls(tls, namespace, &format!("{path}.tls"), diags);
    }
}

fn port_policy(p: &PortTrafficPolicy, namespace: &str, path: &str, diags: &mut Diagnostics) {
    match p.port.as_ref().and_then(|s| s.number) {
        None => diags.error(
            format!("{path}.port"),
            "portTrafficPolicy must have valid port (istiod)",
        ),
        Some(n) => {
            number(Some(n), 0, UINT32, &format!("{path}.port.number"), diags);
        }
    }
    if p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
    {
        diags.error(
            path,
            "port traffic policy must have at least one field (istiod)",
        );
        return;
    }
    settings(
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
        namespace,
        path,
        diags,
    );
}

fn outlier_detection(od: &OutlierDetection, path: &str, diags: &mut Diagnostics) {
    let field = |f: &str| format!("{path}.{f}");
    if let Some(n) = number(
        od.consecutive_errors,
        0,
        INT32,
        &field("consecutiveErrors"),
        diags,
    ) {
        if n != 0 {
            diags.warn(
                field("consecutiveErrors"),
                "deprecated: istiod ignores it (outlier detection consecutive errors is \
                 deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead)",
            );
        }
    }
    for (f, v) in [
        ("consecutive5xxErrors", od.consecutive_5xx_errors),
        ("consecutiveGatewayErrors", od.consecutive_gateway_errors),
    ] {
        number(v, 0, UINT32, &field(f), diags);
    }
    let local = number(
        od.consecutive_local_origin_failures,
        0,
        UINT32,
        &field("consecutiveLocalOriginFailures"),
        diags,
    );
    if local.unwrap_or(0) > 0 && od.split_external_local_origin_errors != Some(true) {
        diags.error(
            field("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split \
             external local origin errors is set to false (istiod)",
        );
    }
    duration(&od.interval, Rule::Istiod, &field("interval"), diags);
    duration(
        &od.base_ejection_time,
        Rule::Istiod,
        &field("baseEjectionTime"),
        diags,
    );
    // istiod's ValidatePercent on the int32 fields.
    number(
        od.max_ejection_percent,
        0,
        100,
        &field("maxEjectionPercent"),
        diags,
    );
    number(
        od.min_health_percent,
        0,
        100,
        &field("minHealthPercent"),
        diags,
    );
    for (i, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        whole_number(
            *code,
            100,
            599,
            &format!("{path}.outlierDetectionHttpErrorCodes[{i}]"),
            diags,
        );
    }
}

fn connection_pool(cp: &ConnectionPoolSettings, path: &str, diags: &mut Diagnostics) {
    if cp.http.is_none() && cp.tcp.is_none() {
        diags.error(
            path,
            "connection pool must have at least one field (istiod): tcp or http",
        );
        return;
    }
    if let Some(h) = &cp.http {
        let field = |f: &str| format!("{path}.http.{f}");
        // int32 in the API; istiod refuses negative values.
        for (f, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            number(v, 0, INT32, &field(f), diags);
        }
        duration(&h.idle_timeout, Rule::Istiod, &field("idleTimeout"), diags);
        let upgrade = one_of(
            &h.h2_upgrade_policy,
            &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            &field("h2UpgradePolicy"),
            diags,
        );
        if upgrade == Some("UPGRADE") && h.use_client_protocol == Some(true) {
            diags.error(
                field("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE (istiod)",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            let kpath = field("http2KeepAlive");
            duration(&ka.interval, Rule::Cel, &format!("{kpath}.interval"), diags);
            duration(&ka.timeout, Rule::Cel, &format!("{kpath}.timeout"), diags);
        }
    }
    if let Some(t) = &cp.tcp {
        let field = |f: &str| format!("{path}.tcp.{f}");
        number(t.max_connections, 0, INT32, &field("maxConnections"), diags);
        duration(
            &t.connect_timeout,
            Rule::Istiod,
            &field("connectTimeout"),
            diags,
        );
        duration(
            &t.max_connection_duration,
            Rule::Istiod,
            &field("maxConnectionDuration"),
            diags,
        );
        // istiod skips 0s: it turns the idle timeout off.
        duration(
            &t.idle_timeout,
            Rule::IstiodOrZero,
            &field("idleTimeout"),
            diags,
        );
        if let Some(ka) = &t.tcp_keepalive {
            let kpath = field("tcpKeepalive");
            number(ka.probes, 0, UINT32, &format!("{kpath}.probes"), diags);
            duration(&ka.time, Rule::Istiod, &format!("{kpath}.time"), diags);
            duration(
                &ka.interval,
                Rule::Istiod,
                &format!("{kpath}.interval"),
                diags,
            );
        }
    }
}

fn load_balancer(
    lb: &LoadBalancerSettings,
    has_outlier_detection: bool,
    path: &str,
    diags: &mut Diagnostics,
) {
    let field = |f: &str| format!("{path}.{f}");
    // The CRD's oneOf.
    at_most_one(
        &[
            ("simple", lb.simple.is_some()),
            ("consistentHash", lb.consistent_hash.is_some()),
            ("backendUtilization", lb.backend_utilization.is_some()),
        ],
        path,
        diags,
    );
    one_of(
        &lb.simple,
        &[
            "UNSPECIFIED",
            "LEAST_CONN",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
        ],
        &field("simple"),
        diags,
    );
    if let Some(ch) = &lb.consistent_hash {
        consistent_hash(ch, &field("consistentHash"), diags);
    }
    if let Some(bu) = &lb.backend_utilization {
        let bpath = field("backendUtilization");
        number(
            bu.error_utilization_penalty_percent,
            0,
            UINT32,
            &format!("{bpath}.errorUtilizationPenaltyPercent"),
            diags,
        );
        for f in [
            ("weightExpirationPeriod", &bu.weight_expiration_period),
            ("weightStabilizationPeriod", &bu.weight_stabilization_period),
            ("weightUpdatePeriod", &bu.weight_update_period),
        ] {
            duration(f.1, Rule::Any, &format!("{bpath}.{}", f.0), diags);
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality(l, has_outlier_detection, &field("localityLbSetting"), diags);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        number(
            z.min_cluster_size,
            1,
            UINT32,
            &field("zoneAwareLbSetting.minClusterSize"),
            diags,
        );
    }
    duration(
        &lb.warmup_duration_secs,
        Rule::Cel,
        &field("warmupDurationSecs"),
        diags,
    );
    if let Some(w) = &lb.warmup {
        let wpath = field("warmup");
        match &w.duration {
            None => diags.error(format!("{wpath}.duration"), "is required"),
            d => {
                duration(d, Rule::Istiod, &format!("{wpath}.duration"), diags);
            }
        }
        percent(w.minimum_percent, &format!("{wpath}.minimumPercent"), diags);
        if let Some(a) = w.aggression {
            // istiod's rule; the CRD copied into tests/fixtures says only "minimum 0".
            if !a.is_finite() || a < 1.0 {
                diags.error(
                    format!("{wpath}.aggression"),
                    format!("{a}: aggression should be greater than or equal to 1 (istiod)"),
                );
            }
        }
    }
}

fn consistent_hash(ch: &ConsistentHash, path: &str, diags: &mut Diagnostics) {
    let field = |f: &str| format!("{path}.{f}");
    at_most_one(
        &[
            ("httpHeaderName", ch.http_header_name.is_some()),
            ("httpCookie", ch.http_cookie.is_some()),
            ("useSourceIp", ch.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                ch.http_query_parameter_name.is_some(),
            ),
        ],
        path,
        diags,
    );
    at_most_one(
        &[
            ("ringHash", ch.ring_hash.is_some()),
            ("maglev", ch.maglev.is_some()),
        ],
        path,
        diags,
    );
    if let Some(c) = &ch.http_cookie {
        if c.name.as_deref().is_none_or(str::is_empty) {
            diags.error(field("httpCookie.name"), "name required for HttpCookie");
        }
        duration(&c.ttl, Rule::Any, &field("httpCookie.ttl"), diags);
        for (i, a) in c.attributes.iter().enumerate() {
            if a.name.is_none() {
                diags.error(
                    format!("{path}.httpCookie.attributes[{i}].name"),
                    "is required",
                );
            }
        }
    }
    let legacy = number(
        ch.minimum_ring_size,
        0,
        UINT64,
        &field("minimumRingSize"),
        diags,
    );
    if legacy.unwrap_or(0) != 0 {
        diags.warn(
            field("minimumRingSize"),
            "deprecated: consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's \
             RingHash configuration instead (istiod)",
        );
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            diags.error(
                field("minimumRingSize"),
                "only one of MinimumRingSize or Maglev/Ringhash can be specified (istiod)",
            );
        }
    }
    if let Some(r) = &ch.ring_hash {
        number(
            r.minimum_ring_size,
            0,
            UINT64,
            &field("ringHash.minimumRingSize"),
            diags,
        );
    }
    if let Some(m) = &ch.maglev {
        let tpath = field("maglev.tableSize");
        match number(m.table_size, 0, UINT64, &tpath, diags).unwrap_or(0) as u64 {
            0 => diags.error(tpath, "tableSize must be set for maglev (istiod)"),
            n if n >= MAGLEV_TABLE_LIMIT => diags.error(
                tpath,
                format!(
                    "{n}: tableSize must be less than {MAGLEV_TABLE_LIMIT} for maglev (istiod)"
                ),
            ),
            n if !is_prime(n) => diags.error(
                tpath,
                format!("{n}: tableSize must be a prime number for maglev (istiod)"),
            ),
            _ => {}
        }
    }
}

/// istiod's `isPrime`, copied there from Envoy's.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut factor = 3;
    while factor * factor <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

/// `agent.ValidateLocalityLbSetting`.
fn locality(l: &LocalityLbSetting, has_outlier_detection: bool, path: &str, d: &mut Diagnostics) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        d.error(
            path,
            "can not simultaneously specify 'distribute' and 'failover' (istiod)",
        );
        return;
    }
    if !l.failover.is_empty() {
        let topology = [
            "topology.kubernetes.io/region",
            "topology.kubernetes.io/zone",
            "topology.istio.io/subzone",
        ];
        if let Some(label) = l
            .failover_priority
            .iter()
            .find(|p| topology.contains(&p.as_str()))
        {
            d.error(
                format!("{path}.failoverPriority"),
                format!(
                    "can not simultaneously set 'failover' and topology label '{label}' in \
                     'failover_priority' (istiod)"
                ),
            );
            return;
        }
    }
    for (i, dist) in l.distribute.iter().enumerate() {
        let dpath = format!("{path}.distribute[{i}]");
        let mut total = 0.0;
        for (loc, w) in &dist.to {
            if !(w.fract() == 0.0 && (1.0..=100.0).contains(w)) {
                d.error(
                    format!("{dpath}.to.{loc}"),
                    format!("{w}: locality weight must be in range [1, 100] (istiod)"),
                );
                return;
            }
            total += w;
        }
        if total != 100.0 {
            d.error(
                format!("{dpath}.to"),
                format!("total locality weight {total} != 100 (istiod)"),
            );
            return;
        }
        if let Err(e) = localities(dist.to.keys().map(String::as_str)) {
            d.error(format!("{dpath}.to"), e);
        }
    }
    if let Err(e) = localities(l.distribute.iter().map(|x| x.from.as_str())) {
        d.error(format!("{path}.distribute"), e);
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier_detection {
        d.warn(
            path,
            "outlier detection policy must be provided for failover (istiod)",
        );
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fpath = format!("{path}.failover[{i}]");
        if f.from == f.to {
            d.error(
                &fpath,
                "locality lb failover settings must specify different regions (istiod)",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            d.error(&fpath, "locality lb failover only specify region (istiod)");
        }
        if f.from.contains('*') || f.to.contains('*') {
            d.error(
                &fpath,
                "locality lb failover region should not contain '*' wildcard (istiod)",
            );
        }
    }
}

/// istiod's `validateLocalities`: `region[/zone[/subzone]]`, a `*` only as the last character,
/// and no locality inside one listed before it.
fn localities<'a>(list: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for locality in list {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end \
                 (istiod)"
            ));
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info (istiod)"
            ));
        }
        // A `*` part covers everything below it, as istiod's nested maps do.
        let covers = |wide: &[&str], narrow: &[&str]| {
            wide.iter().zip(narrow).all(|(w, n)| w == n || *w == "*")
                && (wide.len() <= narrow.len() || wide.get(narrow.len()) == Some(&"*"))
        };
        if seen
            .iter()
            .any(|s| s == &["*"] || covers(s, &parts) || covers(&parts, s))
        {
            return Err(format!(
                "locality {locality} overlap with previous specified ones (istiod)"
            ));
        }
        seen.push(parts);
    }
    Ok(())
}

/// `agent.ValidateTLS`.
fn client_tls(tls: &ClientTlsSettings, namespace: &str, path: &str, diags: &mut Diagnostics) {
    let mode = one_of(
        &tls.mode,
        &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"],
        &format!("{path}.mode"),
        diags,
    );
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if let Some(name) = tls.credential_name.as_deref() {
        if let Some(resource) = name.strip_prefix("configmap://") {
            let ns = resource.split_once('/').map_or(namespace, |(ns, _)| ns);
            if ns != namespace || namespace.is_empty() {
                diags.error(
                    format!("{path}.credentialName"),
                    format!(
                        "invalid configmap:// credentialName: namespace must match the \
                         configuration namespace {namespace:?} (istiod)"
                    ),
                );
            }
        }
    }
    if tls.insecure_skip_verify == Some(true) {
        if mode == Some("SIMPLE")
            && (set(&tls.ca_certificates)
                || set(&tls.credential_name)
                || !tls.subject_alt_names.is_empty())
        {
            diags.error(
                path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when \
                 InsecureSkipVerify is set true (istiod)",
            );
        }
        if mode == Some("MUTUAL")
            && (set(&tls.ca_certificates) || !tls.subject_alt_names.is_empty())
        {
            diags.error(
                path,
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set \
                 true (istiod)",
            );
        }
    }
    if matches!(mode, Some("SIMPLE" | "MUTUAL")) && set(&tls.credential_name) {
        if set(&tls.client_certificate)
            || set(&tls.ca_certificates)
            || set(&tls.private_key)
            || set(&tls.ca_crl)
        {
            diags.error(
                path,
                "cannot specify client certificates or CA certificate or CA CRL If \
                 credentialName is set (istiod)",
            );
        }
        return;
    }
    if mode == Some("MUTUAL") {
        if !set(&tls.client_certificate) {
            diags.error(
                format!("{path}.clientCertificate"),
                "client certificate required for mutual tls (istiod)",
            );
        }
        if !set(&tls.private_key) {
            diags.error(
                format!("{path}.privateKey"),
                "private key required for mutual tls (istiod)",
            );
        }
    }
}

/// istiod's `agent.ValidateFQDN`: a domain name without wildcards whose top-level label is not
/// all digits.
fn fqdn(host: &str) -> bool {
    let top = host.rsplit('.').find(|l| !l.is_empty()).unwrap_or_default();
    super::wildcard_domain(host).is_ok()
        && !host.contains('*')
        && !top.bytes().all(|b| b.is_ascii_digit())
}

/// How a duration field is checked.
#[derive(Clone, Copy)]
enum Rule {
    /// A protobuf Duration, no more.
    Any,
    /// The CRD's CEL rule `duration(self) >= duration('1ms')`.
    Cel,
    /// The CEL rule and istiod's `ValidateDuration` (whole milliseconds).
    Istiod,
    /// As `Istiod`, except that 0 is allowed (it turns the setting off).
    IstiodOrZero,
}

fn duration(v: &Option<String>, rule: Rule, path: &str, diags: &mut Diagnostics) {
    let Some(text) = v else {
        return;
    };
    let d = match crate::config::duration::parse(text) {
        Ok(d) => d,
        Err(e) => return diags.error(path, e),
    };
    let checked = match rule {
        Rule::Any => false,
        Rule::IstiodOrZero => !d.is_zero(),
        Rule::Cel | Rule::Istiod => true,
    };
    if checked && d < Duration::from_millis(1) {
        diags.error(
            path,
            format!("{text:?}: must be a valid duration greater than 1ms"),
        );
    } else if checked && !matches!(rule, Rule::Cel) && d.subsec_nanos() % 1_000_000 != 0 {
        diags.error(
            path,
            format!("{text:?}: only durations to ms precision are supported (istiod)"),
        );
    }
}

/// A whole number in `lo..=hi`, when given.
fn number(v: Option<f64>, lo: i64, hi: i64, path: &str, diags: &mut Diagnostics) -> Option<i64> {
    whole_number(v?, lo, hi, &path, diags)
}

/// The CRD's `minimum: 0, maximum: 100` on a double.
fn percent(v: Option<f64>, path: &str, diags: &mut Diagnostics) {
    if let Some(p) = v {
        if !(0.0..=100.0).contains(&p) {
            diags.error(path, format!("{p} is not in 0..=100"));
        }
    }
}

/// An enumeration value, as the CRD lists it (case matters, as it does for `kubectl apply`).
fn one_of<'a>(
    v: &'a Option<String>,
    allowed: &[&str],
    path: &str,
    diags: &mut Diagnostics,
) -> Option<&'a str> {
    let v = v.as_deref()?;
    if allowed.contains(&v) {
        return Some(v);
    }
    let hint = allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(v))
        .map(|a| format!("; did you mean {a}?"))
        .unwrap_or_default();
    diags.error(
        path,
        format!("{v:?} is not one of {}{hint}", allowed.join(", ")),
    );
    None
}

/// The CRD's `oneOf` over optional fields: at most one of them set.
fn at_most_one(fields: &[(&str, bool)], path: &str, diags: &mut Diagnostics) {
    let set: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
    if set.len() > 1 {
        diags.error(
            path,
            format!(
                "{} are set: only one of {} may be",
                set.join(" and "),
                fields.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(policy: Value) -> Vec<String> {
        let mut diags = Diagnostics::default();
        check(&policy, "app", "tp", &mut diags);
        diags
            .errors
            .iter()
            .chain(&diags.warnings)
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_policy_of_every_kind_has_no_problems() {
        let p = problems(json!({
            "loadBalancer": {"consistentHash": {"httpCookie": {"name": "u", "ttl": "0s",
                "attributes": [{"name": "SameSite", "value": "Lax"}]}, "maglev": {"tableSize": 65537}}},
            "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "30ms",
                "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"}, "idleTimeout": "0s"},
                "http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 5, "idleTimeout": "1h",
                    "h2UpgradePolicy": "UPGRADE", "http2KeepAlive": {"interval": "15s", "timeout": "5s"}}},
            "outlierDetection": {"consecutive5xxErrors": 7, "interval": "5m", "baseEjectionTime": "15m",
                "maxEjectionPercent": 100, "splitExternalLocalOriginErrors": true,
                "consecutiveLocalOriginFailures": 2},
            "tls": {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem",
                "caCertificates": "/ca.pem", "subjectAltNames": ["a"], "sni": "a"},
            "portLevelSettings": [{"port": {"number": 80}, "loadBalancer": {"simple": "LEAST_REQUEST",
                "localityLbSetting": {"distribute": [{"from": "us-west/zone1/*",
                    "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]}}}],
            "proxyProtocol": {"version": "V2"},
            "retryBudget": {"percent": 20, "minRetryConcurrency": 3}
        }));
        assert_eq!(p, Vec::<String>::new());
    }

    #[test]
    fn istiods_webhook_rules_are_refused_with_its_words() {
        for (policy, expected) in [
            (json!({}), "tp: traffic policy must have at least one field (istiod)"),
            (json!({"connectionPool": {}}), "tp.connectionPool: connection pool must have at least one field (istiod): tcp or http"),
            (json!({"connectionPool": {"tcp": {"maxConnections": -1}}}), "tp.connectionPool.tcp.maxConnections: -1 is not in 0..=2147483647"),
            (json!({"connectionPool": {"http": {"idleTimeout": "1.5ms"}}}), "tp.connectionPool.http.idleTimeout: \"1.5ms\": only durations to ms precision are supported (istiod)"),
            (json!({"outlierDetection": {"baseEjectionTime": "100us"}}), "tp.outlierDetection.baseEjectionTime: \"100us\": must be a valid duration greater than 1ms"),
            (json!({"outlierDetection": {"maxEjectionPercent": 101}}), "tp.outlierDetection.maxEjectionPercent: 101 is not in 0..=100"),
            (json!({"outlierDetection": {"consecutiveLocalOriginFailures": 3}}), "tp.outlierDetection.consecutiveLocalOriginFailures: outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false (istiod)"),
            (json!({"loadBalancer": {"simple": "LEAST_CONNECTIONS"}}), "tp.loadBalancer.simple: \"LEAST_CONNECTIONS\" is not one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST"),
            (json!({"loadBalancer": {"simple": "round_robin"}}), "tp.loadBalancer.simple: \"round_robin\" is not one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST; did you mean ROUND_ROBIN?"),
            (json!({"loadBalancer": {"simple": "RANDOM", "consistentHash": {}}}), "tp.loadBalancer: simple and consistentHash are set: only one of simple, consistentHash, backendUtilization may be"),
            (json!({"loadBalancer": {"consistentHash": {"httpHeaderName": "a", "useSourceIp": true}}}), "tp.loadBalancer.consistentHash: httpHeaderName and useSourceIp are set: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName may be"),
            (json!({"loadBalancer": {"consistentHash": {"httpCookie": {"ttl": "0s"}}}}), "tp.loadBalancer.consistentHash.httpCookie.name: name required for HttpCookie"),
            (json!({"loadBalancer": {"consistentHash": {"maglev": {"tableSize": 1000}}}}), "tp.loadBalancer.consistentHash.maglev.tableSize: 1000: tableSize must be a prime number for maglev (istiod)"),
            (json!({"loadBalancer": {"consistentHash": {"maglev": {}}}}), "tp.loadBalancer.consistentHash.maglev.tableSize: tableSize must be set for maglev (istiod)"),
            (json!({"loadBalancer": {"consistentHash": {"minimumRingSize": 8, "ringHash": {}}}}), "tp.loadBalancer.consistentHash.minimumRingSize: only one of MinimumRingSize or Maglev/Ringhash can be specified (istiod)"),
            (json!({"loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "a"}]}}}), "tp.loadBalancer.localityLbSetting.failover[0]: locality lb failover settings must specify different regions (istiod)"),
            (json!({"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"b": 60}}]}}}), "tp.loadBalancer.localityLbSetting.distribute[0].to: total locality weight 60 != 100 (istiod)"),
            (json!({"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "a/*", "to": {"b": 100}}, {"from": "a/z", "to": {"b": 100}}]}}}), "tp.loadBalancer.localityLbSetting.distribute: locality a/z overlap with previous specified ones (istiod)"),
            (json!({"tls": {"mode": "MUTUAL"}}), "tp.tls.clientCertificate: client certificate required for mutual tls (istiod)"),
            (json!({"tls": {"mode": "SIMPLE", "insecureSkipVerify": true, "caCertificates": "/ca"}}), "tp.tls: cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true (istiod)"),
            (json!({"tls": {"mode": "SIMPLE", "credentialName": "c", "caCertificates": "/ca"}}), "tp.tls: cannot specify client certificates or CA certificate or CA CRL If credentialName is set (istiod)"),
            (json!({"tls": {"mode": "SIMPLE", "credentialName": "configmap://other/ca"}}), "tp.tls.credentialName: invalid configmap:// credentialName: namespace must match the configuration namespace \"app\" (istiod)"),
            (json!({"portLevelSettings": [{"loadBalancer": {"simple": "RANDOM"}}]}), "tp.portLevelSettings[0].port: portTrafficPolicy must have valid port (istiod)"),
            (json!({"portLevelSettings": [{"port": {"number": 80}}]}), "tp.portLevelSettings[0]: port traffic policy must have at least one field (istiod)"),
            (json!({"tunnel": {"targetHost": "bad_host", "targetPort": 0}}), "tp.tunnel.targetHost: \"bad_host\": tunnel target host must be a valid FQDN or IP address"),
            (json!({"tunnel": {"targetHost": "a.b", "targetPort": 0}}), "tp.tunnel.targetPort: 0 is not in 1..=65535"),
            (json!({"tunnel": {"targetHost": "a.b", "targetPort": 80}, "proxyProtocol": {}}), "tp: tunnel and proxyProtocol must not be set together (istiod)"),
            (json!({"loadBalancer": {"warmup": {"duration": "1s", "aggression": 0.3}}}), "tp.loadBalancer.warmup.aggression: 0.3: aggression should be greater than or equal to 1 (istiod)"),
            (json!({"outlierDetection": {"consecutiveErrors": 5}}), "tp.outlierDetection.consecutiveErrors: deprecated: istiod ignores it (outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead)"),
        ] {
            let p = problems(policy.clone());
            assert!(p.iter().any(|e| e == expected), "{policy}: expected {expected:?} among {p:?}");
        }
    }

    #[test]
    fn maglev_primes_are_envoys() {
        assert!(is_prime(65537) && is_prime(2) && is_prime(3) && !is_prime(1000) && !is_prime(9));
    }
}
