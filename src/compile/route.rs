//! Compiles one `http` route: its matches, its action (route, redirect, direct response or
//! delegate) and its policies (fault, timeout, retries, rewrite, CORS, header edits).

use base64::Engine as _;

use crate::config::{
    self, Diagnostics, HeaderOperations, Headers, HttpFaultInjection, HttpRetry, HttpRoute,
};
use crate::rules::{
    Abort, Action, Cors, DirectResponse, Fault, HeaderOps, Redirect, RedirectPort, Rewrite, Route,
    Split, StrMatcher, WeightedDestination,
};

use super::matching::{applies_to_proxy, compile_regex, match_block, string_matcher};
use super::{whole_number, Scope};

/// Istio's retry policy when a route says nothing about retries (`retry.DefaultPolicy()`).
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRY_ATTEMPTS: &str = "2";
const DEFAULT_RETRIABLE_CODES: &str = "503";

/// Retry conditions Envoy's router knows (HTTP and gRPC); numbers are status codes.
const RETRY_ON: [&str; 16] = [
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
    path: &str,
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
        .filter_map(|(i, m)| match_block(m, &format!("{path}.match[{i}]"), scope, diags))
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
        http.delegate.is_some(),
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
                format!("{path}.{field}"),
                "mirroring is not supported by meshrules (a filter cannot copy a request cleanly); \
                 use Envoy's route request_mirror_policies or a native Istio VirtualService mirror",
            );
        }
    }

    let fault = http
        .fault
        .as_ref()
        .and_then(|f| compile_fault(f, &format!("{path}.fault"), diags));
    let mut router_headers = Vec::new();
    if let Some(t) = &http.timeout {
        if let Some(ms) = millis(t, &format!("{path}.timeout"), diags) {
            router_headers.push(("x-envoy-upstream-rq-timeout-ms".to_string(), ms));
        }
    }
    retry_headers(
        http.retries.as_ref(),
        &format!("{path}.retries"),
        &mut router_headers,
        diags,
    );
    let rewrite = http.rewrite.as_ref().and_then(|rw| {
        let rpath = format!("{path}.rewrite");
        let authority = rw.authority.clone().filter(|a| !a.is_empty());
        match (&rw.uri, &rw.uri_regex_rewrite) {
            (Some(_), Some(_)) => {
                diags.error(rpath, "only one of uri or uriRegexRewrite may be set");
                None
            }
            (Some(uri), None) => Some(Rewrite::Prefix {
                uri: uri.clone(),
                authority,
            }),
            (None, Some(rr)) => compile_regex(
                &rr.pattern,
                &rr.pattern,
                &format!("{rpath}.uriRegexRewrite.match"),
                diags,
            )
            .map(|pattern| Rewrite::Regex {
                pattern,
                replacement: re2_substitution(&rr.rewrite),
                authority,
            }),
            (None, None) => authority.map(Rewrite::Authority),
        }
    });
    let cors = http
        .cors_policy
        .as_ref()
        .and_then(|c| compile_cors(c, &format!("{path}.corsPolicy"), diags));
    let (request_headers, response_headers) =
        header_ops(http.headers.as_ref(), &format!("{path}.headers"), diags);

    if diags.errors.len() > errors_before || excluded {
        return None;
    }
    Some(Route {
        virtual_service: vs,
        name,
        matches,
        action: action?,
        fault,
        cors,
        rewrite,
        request_headers,
        response_headers,
        router_headers,
    })
}

fn compile_action(
    http: &HttpRoute,
    path: &str,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Action> {
    if !http.route.is_empty() {
        return compile_split(http, path, scope, diags).map(Action::Forward);
    }
    if let Some(r) = &http.redirect {
        let rpath = format!("{path}.redirect");
        let code = match r.redirect_code {
            None => 301,
            Some(c) => {
                let c = whole_number(c, 0, 999, &format!("{rpath}.redirectCode"), diags)? as u32;
                if ![301, 302, 303, 307, 308].contains(&c) {
                    diags.error(
                        format!("{rpath}.redirectCode"),
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
                RedirectPort::Fixed(
                    whole_number(p, 1, 65535, &format!("{rpath}.port"), diags)? as u16
                )
            }
            (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::FromProtocolDefault,
            (None, Some("FROM_REQUEST_PORT")) => RedirectPort::FromRequestPort,
            (None, Some(other)) => {
                diags.error(
                    format!("{rpath}.derivePort"),
                    format!("{other:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
                );
                return None;
            }
            (None, None) => RedirectPort::Keep,
        };
        return Some(Action::Redirect(Redirect {
            uri: r.uri.clone().filter(|u| !u.is_empty()),
            authority: r.authority.clone().filter(|a| !a.is_empty()),
            port,
            scheme: r.scheme.clone().filter(|s| !s.is_empty()),
            code,
        }));
    }
    if let Some(d) = &http.direct_response {
        let dpath = format!("{path}.directResponse");
        let Some(status) = d.status else {
            diags.error(format!("{dpath}.status"), "status is required");
            return None;
        };
        let status = whole_number(status, 200, 599, &format!("{dpath}.status"), diags)? as u32;
        let body = match &d.body {
            None => Vec::new(),
            Some(b) => match (&b.string, &b.bytes) {
                (Some(s), None) => s.as_bytes().to_vec(),
                (None, Some(encoded)) => {
                    match base64::engine::general_purpose::STANDARD.decode(encoded) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            diags.error(format!("{dpath}.body.bytes"), format!("not base64: {e}"));
                            return None;
                        }
                    }
                }
                _ => {
                    diags.error(
                        format!("{dpath}.body"),
                        "set exactly one of string or bytes",
                    );
                    return None;
                }
            },
        };
        return Some(Action::Respond(DirectResponse { status, body }));
    }
    // Filled in once every VirtualService is known.
    Some(Action::Delegate(Vec::new()))
}

fn compile_split(
    http: &HttpRoute,
    path: &str,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<Split> {
    let single = http.route.len() == 1;
    let mut destinations = Vec::new();
    let mut total: u64 = 0;
    let errors_before = diags.errors.len();
    for (i, rd) in http.route.iter().enumerate() {
        let dpath = format!("{path}.route[{i}]");
        let weight = match rd.weight {
            Some(w) => whole_number(w, 0, i64::from(i32::MAX), &format!("{dpath}.weight"), diags)
                .unwrap_or(0) as u32,
            None => 0,
        };
        // A lone destination takes all traffic whatever its weight, as in istiod.
        let weight = if single { 1 } else { weight };
        total += u64::from(weight);
        let Some(dest) = &rd.destination else {
            diags.error(format!("{dpath}.destination"), "destination is required");
            continue;
        };
        if dest.host.is_empty() {
            diags.error(format!("{dpath}.destination.host"), "host is required");
            continue;
        }
        let host = scope.fqdn(&dest.host);
        let subset = dest.subset.clone().unwrap_or_default();
        if !subset.is_empty() {
            if let Some(known) = scope.subsets.get(&host) {
                if !known.contains(&subset) {
                    diags.error(
                        format!("{dpath}.destination.subset"),
                        format!(
                            "subset {subset:?} is not defined by the DestinationRule for {host} (has: {})",
                            known.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
        }
        let port = match dest.port.as_ref().and_then(|p| p.number) {
            Some(n) => whole_number(
                n,
                1,
                65535,
                &format!("{dpath}.destination.port.number"),
                diags,
            )
            .map(|p| p.to_string())
            .unwrap_or_default(),
            None => String::new(),
        };
        let cluster = scope
            .cluster_name
            .replace("{host}", &host)
            .replace("{subset}", &subset)
            .replace("{port}", &port);
        let (request_headers, response_headers) =
            header_ops(rd.headers.as_ref(), &format!("{dpath}.headers"), diags);
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
        diags.error(format!("{path}.route"), "all destination weights are zero");
        return None;
    }
    let Ok(total_weight) = u32::try_from(total) else {
        diags.error(
            format!("{path}.route"),
            "destination weights add up to more than 2^32",
        );
        return None;
    };
    Some(Split {
        destinations,
        total_weight,
    })
}

/// Percentages become parts per million, truncated like istiod's
/// `translatePercentToFractionalPercent`.
fn percent(value: Option<f64>, path: &str, diags: &mut Diagnostics) -> u32 {
    match value {
        None => 0,
        Some(v) if (0.0..=100.0).contains(&v) => (v * 10_000.0) as u32,
        Some(v) => {
            diags.error(path, format!("{v} is not in 0..=100"));
            0
        }
    }
}

fn compile_fault(f: &HttpFaultInjection, path: &str, diags: &mut Diagnostics) -> Option<Fault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let dpath = format!("{path}.delay");
        if d.exponential_delay.is_some() {
            diags.error(
                format!("{dpath}.exponentialDelay"),
                "exponentialDelay is not supported (Istio does not implement it either)",
            );
            return None;
        }
        let Some(fixed) = &d.fixed_delay else {
            diags.error(format!("{dpath}.fixedDelay"), "fixedDelay is required");
            return None;
        };
        let duration = match config::duration::parse(fixed) {
            Ok(d) => d,
            Err(e) => {
                diags.error(format!("{dpath}.fixedDelay"), e);
                return None;
            }
        };
        let ppm = match (&d.percentage, d.percent) {
            (Some(p), _) => percent(Some(p.value), &format!("{dpath}.percentage.value"), diags),
            (None, Some(p)) => percent(Some(p), &format!("{dpath}.percent"), diags),
            // No percentage: Envoy's fault filter reads an unset fraction as 0%.
            (None, None) => 0,
        };
        Some((duration, ppm))
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let apath = format!("{path}.abort");
        let ppm = percent(
            a.percentage.as_ref().map(|p| p.value),
            &format!("{apath}.percentage.value"),
            diags,
        );
        if a.http2_error.is_some() {
            diags.error(
                format!("{apath}.http2Error"),
                "http2Error aborts are not supported; use httpStatus or grpcStatus",
            );
            return None;
        }
        match (a.http_status, &a.grpc_status) {
            (Some(s), None) => whole_number(s, 200, 599, &format!("{apath}.httpStatus"), diags)
                .map(|s| (Abort::Http(s as u32), ppm)),
            (None, Some(name)) => match GRPC_CODES.iter().position(|c| c == name) {
                Some(code) => Some((Abort::Grpc(code as u32), ppm)),
                None => {
                    diags.error(
                        format!("{apath}.grpcStatus"),
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
fn millis(text: &str, path: &str, diags: &mut Diagnostics) -> Option<String> {
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
/// retriable status codes.
fn retry_headers(
    r: Option<&HttpRetry>,
    path: &str,
    out: &mut Vec<(String, String)>,
    diags: &mut Diagnostics,
) {
    let mut push = |k: &str, v: &str| out.push((k.to_string(), v.to_string()));
    let Some(r) = r else {
        push("x-envoy-max-retries", DEFAULT_RETRY_ATTEMPTS);
        push("x-envoy-retry-on", DEFAULT_RETRY_ON);
        push("x-envoy-retriable-status-codes", DEFAULT_RETRIABLE_CODES);
        return;
    };
    let attempts = match r.attempts {
        Some(a) => match whole_number(
            a,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            &format!("{path}.attempts"),
            diags,
        ) {
            Some(a) => a,
            None => return,
        },
        None => 0,
    };
    if r.retry_remote_localities == Some(true) {
        diags.warn(
            format!("{path}.retryRemoteLocalities"),
            "ignored: needs Envoy's retry priority, which headers cannot set",
        );
    }
    if attempts <= 0 {
        push("x-envoy-max-retries", "0");
        return;
    }
    push("x-envoy-max-retries", &attempts.to_string());
    match r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        None => {
            push("x-envoy-retry-on", DEFAULT_RETRY_ON);
            push("x-envoy-retriable-status-codes", DEFAULT_RETRIABLE_CODES);
        }
        Some(spec) => {
            let mut policies = Vec::new();
            let mut codes = Vec::new();
            for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if let Ok(code) = item.parse::<u32>() {
                    if !(100..=599).contains(&code) {
                        diags.error(
                            format!("{path}.retryOn"),
                            format!("{code} is not an HTTP status code"),
                        );
                    }
                    codes.push(item);
                } else if RETRY_ON.contains(&item) {
                    policies.push(item);
                } else {
                    diags.error(
                        format!("{path}.retryOn"),
                        format!("{item:?} is not a retry condition Envoy knows"),
                    );
                }
            }
            if !codes.is_empty() && !policies.contains(&"retriable-status-codes") {
                policies.push("retriable-status-codes");
            }
            push("x-envoy-retry-on", &policies.join(","));
            if !codes.is_empty() {
                push("x-envoy-retriable-status-codes", &codes.join(","));
            }
        }
    }
    if let Some(t) = &r.per_try_timeout {
        if let Some(ms) = millis(t, &format!("{path}.perTryTimeout"), diags) {
            push("x-envoy-upstream-rq-per-try-timeout-ms", &ms);
        }
    }
}

fn compile_cors(c: &config::CorsPolicy, path: &str, diags: &mut Diagnostics) -> Option<Cors> {
    let mut origins = Vec::new();
    for o in &c.allow_origin {
        origins.push(if o == "*" {
            StrMatcher::Prefix(String::new())
        } else {
            StrMatcher::Exact(o.clone())
        });
    }
    for (i, o) in c.allow_origins.iter().enumerate() {
        let opath = format!("{path}.allowOrigins[{i}]");
        match string_matcher(o, false, &opath, diags) {
            Some(m) => origins.push(m),
            None => diags.error(opath, "empty match: set one of exact, prefix or regex"),
        }
    }
    let max_age = match &c.max_age {
        Some(t) => match config::duration::parse(t) {
            Ok(d) => d.as_secs().to_string(),
            Err(e) => {
                diags.error(format!("{path}.maxAge"), e);
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
                format!("{path}.unmatchedPreflights"),
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

fn header_ops(h: Option<&Headers>, path: &str, diags: &mut Diagnostics) -> (HeaderOps, HeaderOps) {
    let Some(h) = h else {
        return Default::default();
    };
    (
        one_side(h.request.as_ref(), &format!("{path}.request"), diags),
        one_side(h.response.as_ref(), &format!("{path}.response"), diags),
    )
}

fn one_side(ops: Option<&HeaderOperations>, path: &str, diags: &mut Diagnostics) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    let mut check = |name: &str, field: &str| {
        if name.is_empty() || name.starts_with(':') || name.eq_ignore_ascii_case("host") {
            diags.error(
                format!("{path}.{field}"),
                format!("{name:?} cannot be edited (pseudo-header or host); use rewrite.authority"),
            );
        }
        name.to_ascii_lowercase()
    };
    HeaderOps {
        remove: ops.remove.iter().map(|n| check(n, "remove")).collect(),
        set: ops
            .set
            .iter()
            .map(|(k, v)| (check(k, "set"), v.clone()))
            .collect(),
        add: ops
            .add
            .iter()
            .map(|(k, v)| (check(k, "add"), v.clone()))
            .collect(),
    }
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
