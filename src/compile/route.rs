//! Compiles one `http` route: its matches, its action (route, redirect, direct response or
//! delegate) and its policies (fault, timeout, retries, rewrite, CORS, header edits).

use base64::Engine as _;

use crate::config::{
    self, Diagnostics, HeaderOperations, Headers, HttpFaultInjection, HttpRetry, HttpRoute,
};
use crate::rules::ClusterName;
use crate::rules::{
    Abort, Action, Cors, DirectResponse, Fault, HeaderOps, PathRewrite, Redirect, RedirectPort,
    Route, RouterHeader, SparseHeaderOps, Split, StrMatcher, WeightedDestination,
};

use super::matching::{applies_to_proxy, compile_regex, match_block, string_matcher};
use super::path::Path;
use super::{whole_number, Portless, Scope};

/// Istio's retry policy when a route says nothing about retries (`retry.DefaultPolicy()`).
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: &str = "2";
const DEFAULT_RETRIABLE_CODES: &str = "503";

/// Retry conditions of Envoy's router, read from `x-envoy-retry-on`.
const HTTP_RETRY_ON: [&str; 11] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// gRPC retry conditions: Envoy reads them only from `x-envoy-retry-grpc-on`.
const GRPC_RETRY_ON: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names, in code order.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(crate) fn compile_route(
    http: &HttpRoute,
    index: usize,
    vs: usize,
    path: &Path<'_>,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Route> {
    let errors_before = diags.errors.len();
    let name = if http.name.is_empty() {
        format!("route-{index}")
    } else {
        http.name.clone()
    };

    let matches: Vec<_> = http
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match_block(m, &path.index("match", i), scope, diags))
        .collect();
    // Blocks ruled out for this proxy leave the route out; a route with no blocks left never
    // matches here.
    let excluded = if http.matches.is_empty() {
        !applies_to_proxy(&config::HttpMatchRequest::default(), path, scope, diags)
    } else {
        matches.is_empty()
    };

    let actions = [
        !http.route.is_empty(),
        http.redirect.is_some(),
        http.direct_response.is_some(),
    ];
    let action = match actions.iter().filter(|a| **a).count() {
        0 => {
            diags.error(
                path,
                "route has none of route, redirect, directResponse or delegate",
            );
            None
        }
        1 => compile_action(http, path, scope, diags),
        _ => {
            diags.error(
                path,
                "only one of route, redirect, directResponse or delegate may be set",
            );
            None
        }
    };
    for (field, v) in [
        ("mirror", &http.mirror),
        ("mirrors", &http.mirrors),
        ("mirrorPercent", &http.mirror_percent),
        ("mirrorPercentage", &http.mirror_percentage),
    ] {
        if v.is_some() {
            diags.error(
                path.field(field),
                "mirroring is not supported by meshrules (a filter cannot copy a request cleanly); \
                 use Envoy's route request_mirror_policies or a native Istio VirtualService mirror",
            );
        }
    }

    let fault = http
        .fault
        .as_ref()
        .and_then(|f| compile_fault(f, &path.field("fault"), diags));
    // istiod writes a 0s (disabled) route timeout when the VirtualService sets none. Each
    // header costs a host call per request, so defaults the Envoy route already has are skipped.
    let defaults_in_route = scope.route_has_istio_defaults;
    let timeout = match &http.timeout {
        Some(t) => millis(t, &path.field("timeout"), diags),
        None if defaults_in_route => None,
        None => Some("0".to_string()),
    };
    let mut router_headers = Vec::new();
    if let Some(ms) = timeout {
        router_headers.push(("x-envoy-upstream-rq-timeout-ms", ms.into()));
    }
    if http.retries.is_some() || !defaults_in_route {
        retry_headers(
            http.retries.as_ref(),
            &path.field("retries"),
            &mut router_headers,
            diags,
        );
    }
    let path_rewrite = http.rewrite.as_ref().and_then(|rw| {
        let rpath = path.field("rewrite");
        match (
            rw.uri.as_deref().filter(|u| !u.is_empty()),
            &rw.uri_regex_rewrite,
        ) {
            (Some(_), Some(_)) => {
                diags.error(rpath, "only one of uri or uriRegexRewrite may be set");
                None
            }
            (Some(uri), None) => Some(PathRewrite::Prefix(uri.to_string())),
            (None, Some(rr)) => {
                if rr.pattern.is_empty() || rr.rewrite.is_empty() {
                    diags.error(
                        rpath.field("uriRegexRewrite"),
                        "match and rewrite are both required",
                    );
                    return None;
                }
                compile_regex(
                    &rr.pattern,
                    &rr.pattern,
                    &rpath.field("uriRegexRewrite.match"),
                    diags,
                )
                .map(|pattern| PathRewrite::Regex {
                    pattern,
                    replacement: re2_substitution(&rr.rewrite),
                })
            }
            (None, None) => None,
        }
    });
    let cors = http
        .cors_policy
        .as_ref()
        .and_then(|c| compile_cors(c, &path.field("corsPolicy"), diags));
    let (request_headers, response_headers) =
        header_ops(http.headers.as_ref(), &path.field("headers"), diags);
    let authority_rewrite = http
        .rewrite
        .as_ref()
        .and_then(|rw| rw.authority.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| request_headers.authority.clone());
    // Istio's validation: these act on a forwarded request only.
    if http.redirect.is_some() || http.direct_response.is_some() {
        for (field, set) in [
            ("fault", http.fault.is_some()),
            ("rewrite", http.rewrite.is_some()),
        ] {
            if set {
                diags.error(
                    path.field(field),
                    format!("{field} cannot be combined with redirect or directResponse"),
                );
            }
        }
    }

    if diags.errors.len() > errors_before || excluded {
        return None;
    }
    // A compiled route lives as long as the VM: its lists hold what they hold, no more
    // (collecting or pushing leaves room for four).
    let mut matches = matches;
    matches.shrink_to_fit();
    router_headers.shrink_to_fit();
    Some(Route {
        virtual_service: vs,
        name,
        matches,
        action: action?,
        fault,
        cors,
        path_rewrite,
        authority_rewrite,
        request_headers,
        response_headers,
        router_headers,
    })
}

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn compile_action(
    http: &HttpRoute,
    path: &Path<'_>,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Action> {
    if !http.route.is_empty() {
        return compile_split(http, path, scope, diags).map(Action::Forward);
    }
    if let Some(r) = &http.redirect {
        let rpath = path.field("redirect");
        let code = match r.redirect_code {
            None => 301,
            Some(c) => {
                let c = whole_number(c, 0, 999, &rpath.field("redirectCode"), diags)? as u32;
                if ![301, 302, 303, 307, 308].contains(&c) {
                    diags.error(
                        rpath.field("redirectCode"),
                        format!("{c} is not a redirect code (301, 302, 303, 307 or 308)"),
                    );
                    return None;
                }
                c
            }
        };
        let port = match (r.port, r.derive_port.as_deref()) {
            (Some(_), Some(_)) => {
                diags.error(rpath, "only one of port or derivePort may be set");
                return None;
            }
            (Some(p), None) => {
                RedirectPort::Fixed(whole_number(p, 1, 65535, &rpath.field("port"), diags)? as u16)
            }
            (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::FromProtocolDefault,
            (None, Some("FROM_REQUEST_PORT")) => RedirectPort::FromRequestPort,
            (None, Some(other)) => {
                diags.error(
                    rpath.field("derivePort"),
                    format!("{other:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
                );
                return None;
            }
            (None, None) => RedirectPort::Keep,
        };
        if let Some(scheme) = r.scheme.as_deref().filter(|s| !s.is_empty()) {
            if scheme != "http" && scheme != "https" {
                diags.error(
                    rpath.field("scheme"),
                    format!("{scheme:?} is not http or https"),
                );
                return None;
            }
        }
        let says_something = [&r.uri, &r.authority, &r.scheme]
            .iter()
            .any(|f| f.as_deref().is_some_and(|v| !v.is_empty()))
            || !matches!(port, RedirectPort::Keep);
        if !says_something {
            diags.error(
                rpath,
                "redirect needs one of uri, authority, scheme, port or derivePort",
            );
            return None;
        }
        return Some(Action::Redirect(Redirect {
            uri: r.uri.clone().filter(|u| !u.is_empty()),
            authority: r.authority.clone().filter(|a| !a.is_empty()),
            port,
            scheme: r.scheme.clone().filter(|s| !s.is_empty()),
            code,
        }));
    }
    let d = http.direct_response.as_ref()?;
    let dpath = path.field("directResponse");
    let Some(status) = d.status else {
        diags.error(dpath.field("status"), "status is required");
        return None;
    };
    let status = whole_number(status, 200, 599, &dpath.field("status"), diags)? as u32;
    let body = match &d.body {
        None => Vec::new(),
        Some(b) => match (&b.string, &b.bytes) {
            (Some(s), None) => s.as_bytes().to_vec(),
            (None, Some(encoded)) => {
                match base64::engine::general_purpose::STANDARD.decode(encoded) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        diags.error(dpath.field("body.bytes"), format!("not base64: {e}"));
                        return None;
                    }
                }
            }
            _ => {
                diags.error(dpath.field("body"), "set exactly one of string or bytes");
                return None;
            }
        },
    };
    Some(Action::Respond(DirectResponse { status, body }))
}

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn compile_split(
    http: &HttpRoute,
    path: &Path<'_>,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Split> {
    let single = http.route.len() == 1;
    let mut destinations = Vec::new();
    let mut total: u64 = 0;
    let errors_before = diags.errors.len();
    for (i, rd) in http.route.iter().enumerate() {
        let dpath = path.index("route", i);
        let weight = match rd.weight {
            Some(w) => whole_number(w, 0, i64::from(i32::MAX), &dpath.field("weight"), diags)
                .unwrap_or(0) as u32,
            None => 0,
        };
        // A lone destination takes all traffic whatever its weight, as in istiod.
        let weight = if single { 1 } else { weight };
        total += u64::from(weight);
        let Some(dest) = &rd.destination else {
            diags.error(dpath.field("destination"), "destination is required");
            continue;
        };
        // istiod's validateDestination: `*` is no destination; otherwise ValidateWildcardDomain.
        let valid = match dest.host.as_str() {
            "*" => Err("\"*\" is not a destination host".to_string()),
            host => super::wildcard_domain(host),
        };
        if let Err(e) = valid {
            diags.error(dpath.field("destination.host"), e);
            continue;
        }
        let host = scope.fqdn(&dest.host);
        let subset = dest.subset.clone().unwrap_or_default();
        // istiod's GetDestinationCluster: the destination's port, else the service's only
        // port, else the listener's.
        let port = match dest.port.as_ref().and_then(|p| p.number) {
            Some(n) => whole_number(n, 1, 65535, &dpath.field("destination.port.number"), diags)
                .map(|p| p as u16),
            None => scope.only_ports.get(&host).copied(),
        };
        let cluster = match (port, scope.portless) {
            (Some(p), _) => ClusterName::Fixed(super::cluster_name(
                scope.cluster_name,
                &host,
                &subset,
                &p.to_string(),
            )),
            (None, Portless::Listener) => match scope.cluster_name.split_once("{port}") {
                Some((before, after)) => ClusterName::ListenerPort {
                    before: super::cluster_name(before, &host, &subset, ""),
                    after: super::cluster_name(after, &host, &subset, ""),
                },
                // The template names no port.
                None => {
                    ClusterName::Fixed(super::cluster_name(scope.cluster_name, &host, &subset, ""))
                }
            },
            (None, Portless::Empty) => {
                ClusterName::Fixed(super::cluster_name(scope.cluster_name, &host, &subset, ""))
            }
            (None, Portless::Refuse) => {
                diags.error(
                    dpath.field("destination.port"),
                    format!(
                        "needed on a gateway: istiod names the cluster with the service's port, \
                         which the gateway's listener port is not; give destination.port, or \
                         routing.servicePorts with the only port of {host}"
                    ),
                );
                continue;
            }
        };
        if !subset.is_empty() {
            let spath = dpath.field("destination.subset");
            match scope.subsets.get(&host) {
                Some(known) if !known.contains(&subset) => diags.error(
                    spath,
                    format!(
                        "subset {subset:?} is not defined by the DestinationRule for {host} (has: {})",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ),
                Some(_) => {}
                // Istio accepts it; istioctl analyze reports IST0101 ReferencedResourceNotFound.
                None => diags.warn(
                    spath,
                    format!(
                        "no DestinationRule for {host} in the configuration defines subset {subset:?}: \
                         Istio accepts the route, but istiod creates cluster {cluster} only for a \
                         subset a DestinationRule defines, so requests here get 503 until one is \
                         applied (a plain Envoy needs that cluster in its config)"
                    ),
                ),
            }
        }
        let (request_headers, response_headers) =
            header_ops(rd.headers.as_ref(), &dpath.field("headers"), diags);
        destinations.push(WeightedDestination {
            cluster,
            weight,
            request_headers,
            response_headers,
        });
    }
    if diags.errors.len() > errors_before {
        return None;
    }
    if total == 0 {
        diags.error(path.field("route"), "all destination weights are zero");
        return None;
    }
    let Ok(total_weight) = u32::try_from(total) else {
        diags.error(
            path.field("route"),
            "destination weights add up to more than 2^32",
        );
        return None;
    };
    destinations.shrink_to_fit();
    Some(Split {
        destinations,
        total_weight,
    })
}

/// Percentages become parts per million, truncated like istiod's
/// `translatePercentToFractionalPercent`.
fn percent(value: Option<f64>, path: &Path<'_>, diags: &mut Diagnostics) -> u32 {
    match value {
        None => 0,
        Some(v) if (0.0..=100.0).contains(&v) => (v * 10_000.0) as u32,
        Some(v) => {
            diags.error(path, format!("{} is not in 0..=100", config::number(v)));
            0
        }
    }
}

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn compile_fault(
    f: &HttpFaultInjection,
    path: &Path<'_>,
    diags: &mut Diagnostics,
) -> Option<Fault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let dpath = path.field("delay");
        if d.exponential_delay.is_some() {
            diags.error(
                dpath.field("exponentialDelay"),
                "exponentialDelay is not supported (Istio does not implement it either)",
            );
            return None;
        }
        let Some(fixed) = &d.fixed_delay else {
            diags.error(dpath.field("fixedDelay"), "fixedDelay is required");
            return None;
        };
        let duration = match config::duration::parse(fixed) {
            Ok(d) => d,
            Err(e) => {
                diags.error(dpath.field("fixedDelay"), e);
                return None;
            }
        };
        let ppm = match (&d.percentage, d.percent) {
            (Some(p), _) => percent(Some(p.value), &dpath.field("percentage.value"), diags),
            (None, Some(p)) => whole_number(p, 0, 100, &dpath.field("percent"), diags)
                .map_or(0, |p| p as u32 * 10_000),
            // No percentage: Envoy's fault filter reads an unset fraction as 0%.
            (None, None) => 0,
        };
        Some((duration, ppm))
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let apath = path.field("abort");
        let ppm = percent(
            a.percentage.as_ref().map(|p| p.value),
            &apath.field("percentage.value"),
            diags,
        );
        if a.http2_error.is_some() {
            diags.error(
                apath.field("http2Error"),
                "http2Error aborts are not supported; use httpStatus or grpcStatus",
            );
            return None;
        }
        match (a.http_status, &a.grpc_status) {
            (Some(s), None) => whole_number(s, 200, 599, &apath.field("httpStatus"), diags)
                .map(|s| (Abort::Http(s as u32), ppm)),
            (None, Some(name)) => match GRPC_CODES.iter().position(|c| c == name) {
                Some(code) => Some((Abort::Grpc(code as u32), ppm)),
                None => {
                    diags.error(
                        apath.field("grpcStatus"),
                        format!("{name:?} is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND)"),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                diags.error(apath, "only one of httpStatus or grpcStatus may be set");
                None
            }
            (None, None) => {
                diags.error(apath, "abort needs httpStatus or grpcStatus");
                None
            }
        }
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

/// A duration in whole milliseconds (rounded up, so `0.5ms` is not "no timeout").
fn millis(text: &str, path: &Path<'_>, diags: &mut Diagnostics) -> Option<String> {
    match config::duration::parse(text) {
        Ok(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            Some(ms.to_string())
        }
        Err(e) => {
            diags.error(path, e);
            None
        }
    }
}

/// Router headers for a retry policy, following istiod's `retry.ConvertPolicy`: no `retries`
/// means Istio's default policy; `attempts: 0` disables retries; numbers in `retryOn` are
/// retriable status codes. gRPC conditions go to `x-envoy-retry-grpc-on`, the only header
/// Envoy reads them from.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn retry_headers(
    r: Option<&HttpRetry>,
    path: &Path<'_>,
    out: &mut Vec<RouterHeader>,
    diags: &mut Diagnostics,
) {
    let Some(r) = r else {
        out.push(("x-envoy-max-retries", DEFAULT_RETRY_ATTEMPTS.into()));
        push_retry_on(DEFAULT_RETRY_ON, path, out, diags);
        out.push((
            "x-envoy-retriable-status-codes",
            DEFAULT_RETRIABLE_CODES.into(),
        ));
        return;
    };
    let attempts = match r.attempts {
        Some(a) => match whole_number(a, 0, i64::from(i32::MAX), &path.field("attempts"), diags) {
            Some(a) => a,
            None => return,
        },
        None => 0,
    };
    if r.retry_remote_localities == Some(true) {
        diags.warn(
            path.field("retryRemoteLocalities"),
            "ignored: needs Envoy's retry priority, which headers cannot set",
        );
    }
    if r.backoff.is_some() {
        diags.warn(
            path.field("backoff"),
            "ignored: Envoy's retry backoff cannot be set by request headers (Envoy's 25ms base applies)",
        );
    }
    if attempts == 0 {
        if r.retry_on.is_some() || r.per_try_timeout.is_some() {
            diags.error(
                path,
                "retryOn and perTryTimeout need attempts > 0 (attempts: 0 disables retries)",
            );
        }
        out.push(("x-envoy-max-retries", "0".into()));
        return;
    }
    out.push(("x-envoy-max-retries", attempts.to_string().into()));
    let spec = r
        .retry_on
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_RETRY_ON);
    push_retry_on(spec, &path.field("retryOn"), out, diags);
    if r.retry_on.as_deref().is_none_or(str::is_empty) {
        // istiod's default policy carries its 503 even when only attempts is given.
        out.push((
            "x-envoy-retriable-status-codes",
            DEFAULT_RETRIABLE_CODES.into(),
        ));
    }
    if let Some(t) = &r.per_try_timeout {
        if let Some(ms) = millis(t, &path.field("perTryTimeout"), diags) {
            out.push(("x-envoy-upstream-rq-per-try-timeout-ms", ms.into()));
        }
    }
}

/// Splits a `retryOn` list into Envoy's HTTP and gRPC retry headers and status codes.
fn push_retry_on(
    spec: &str,
    path: &Path<'_>,
    out: &mut Vec<RouterHeader>,
    diags: &mut Diagnostics,
) {
    let mut http = Vec::new();
    let mut grpc = Vec::new();
    let mut codes = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(code) = item.parse::<u32>() {
            if !(100..=599).contains(&code) {
                diags.error(path, format!("{code} is not an HTTP status code"));
            }
            codes.push(item);
        } else if HTTP_RETRY_ON.contains(&item) {
            http.push(item);
        } else if GRPC_RETRY_ON.contains(&item) {
            grpc.push(item);
        } else {
            diags.error(
                path,
                format!("{item:?} is not a retry condition Envoy knows"),
            );
        }
    }
    if !codes.is_empty() && !http.contains(&"retriable-status-codes") {
        http.push("retriable-status-codes");
    }
    if !http.is_empty() {
        out.push(("x-envoy-retry-on", http.join(",").into()));
    }
    if !grpc.is_empty() {
        out.push(("x-envoy-retry-grpc-on", grpc.join(",").into()));
    }
    if !codes.is_empty() {
        out.push(("x-envoy-retriable-status-codes", codes.join(",").into()));
    }
}

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
fn compile_cors(c: &config::CorsPolicy, path: &Path<'_>, diags: &mut Diagnostics) -> Option<Cors> {
    // istiod reads the deprecated `allowOrigin` only when `allowOrigins` is empty.
    let mut origins = Vec::new();
    if c.allow_origins.is_empty() {
        origins.extend(c.allow_origin.iter().map(|o| StrMatcher::Exact(o.clone())));
    }
    for (i, o) in c.allow_origins.iter().enumerate() {
        let opath = path.index("allowOrigins", i);
        match string_matcher(o, false, &opath, diags) {
            Some(m) => origins.push(m),
            None => diags.error(opath, "empty match: set one of exact, prefix or regex"),
        }
    }
    let max_age = match &c.max_age {
        Some(t) => match config::duration::parse(t) {
            Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
            Ok(_) => {
                diags.error(path.field("maxAge"), "must be whole seconds");
                return None;
            }
            Err(e) => {
                diags.error(path.field("maxAge"), e);
                return None;
            }
        },
        None => String::new(),
    };
    let forward_unmatched_preflights = match c.unmatched_preflights.as_deref() {
        None | Some("FORWARD") | Some("UNSPECIFIED") => true,
        Some("IGNORE") => false,
        Some(other) => {
            diags.error(
                path.field("unmatchedPreflights"),
                format!("{other:?} is not FORWARD or IGNORE"),
            );
            return None;
        }
    };
    Some(Cors {
        origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_unmatched_preflights,
    })
}

fn header_ops(
    h: Option<&Headers>,
    path: &Path<'_>,
    diags: &mut Diagnostics,
) -> (SparseHeaderOps, SparseHeaderOps) {
    let Some(h) = h else {
        return Default::default();
    };
    (
        one_side(h.request.as_ref(), true, &path.field("request"), diags).into(),
        one_side(h.response.as_ref(), false, &path.field("response"), diags).into(),
    )
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name == ":authority"
}

/// istiod's `translateAppendHeaders`: on requests, setting or adding `host` / `:authority`
/// rewrites the authority (a set wins over an add); other pseudo-headers cannot be edited.
fn one_side(
    ops: Option<&HeaderOperations>,
    request: bool,
    path: &Path<'_>,
    diags: &mut Diagnostics,
) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    let mut out = HeaderOps::default();
    let mut check = |name: &str, field: &str| {
        let editable =
            !name.is_empty() && !name.starts_with(':') && !name.eq_ignore_ascii_case("host");
        if !editable {
            diags.error(
                path.field(field),
                format!("{name:?} cannot be edited here (pseudo-header or host)"),
            );
        }
        name.to_ascii_lowercase()
    };
    for (field, map, list) in [
        ("add", &ops.add, &mut out.add),
        ("set", &ops.set, &mut out.set),
    ] {
        for (k, v) in map {
            if request && is_authority(k) {
                out.authority = Some(v.clone());
            } else {
                list.push((check(k, field), v.clone()));
            }
        }
    }
    out.remove = ops.remove.iter().map(|n| check(n, "remove")).collect();
    out
}

/// RE2 substitutions write groups as `\1`; the regex crate writes `${1}` and treats `$` as
/// special, so literal dollars are doubled.
fn re2_substitution(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len() + 8);
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::re2_substitution;

    #[test]
    fn re2_group_references_become_regex_crate_syntax() {
        assert_eq!(re2_substitution(r"/v2/\1"), "/v2/${1}");
        assert_eq!(re2_substitution("/cost$"), "/cost$$");
        assert_eq!(re2_substitution(r"a\\b"), r"a\b");
    }
}
