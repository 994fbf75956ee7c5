//! Warnings for rules that load but do not do what they seem to, as istiod's validation
//! warnings and `istioctl analyze` point them out. All of it runs once, at load.

use crate::config::{
    AuthorizationPolicySpec, Condition, Diagnostics, HttpMatchRequest, HttpRoute, Operation,
    Source, StringMatch,
};

/// Fields that select nothing here: `exportTo` narrows which namespaces see a resource, and
/// the filter uses every resource it is given.
fn export_to(list: &[String], path: &str, diags: &mut Diagnostics) {
    if !(list.is_empty() || list == ["*"]) {
        diags.warn(
            format!("{path}.exportTo"),
            "ignored: the filter uses every resource in its configuration, whichever namespaces \
             it is exported to",
        );
    }
}

/// A DestinationRule's fields other than `host` and the subset names are Envoy cluster
/// settings, which istiod writes into clusters and the filter cannot apply.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn destination_rule(
    dr: &crate::config::DestinationRuleSpec,
    path: &str,
    diags: &mut Diagnostics,
) {
    const CLUSTER: &str = "not applied by the filter: traffic policies (load balancer, \
        connection pool, outlier detection, TLS) are Envoy cluster settings; in Istio, istiod \
        writes them into the clusters when the DestinationRule is applied to the mesh; for a \
        plain Envoy, `meshrules bundle --output envoy` writes them into its clusters";
    if dr.traffic_policy.is_some() {
        diags.warn(format!("{path}.trafficPolicy"), CLUSTER);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.traffic_policy.is_some() {
            diags.warn(format!("{path}.subsets[{i}].trafficPolicy"), CLUSTER);
        }
    }
    if dr.workload_selector.is_some() {
        diags.warn(
            format!("{path}.workloadSelector"),
            "ignored: the filter checks subsets against this DestinationRule whichever workload \
             it runs in",
        );
    }
    export_to(&dr.export_to, path, diags);
}

/// A VirtualService's non-HTTP routes and `exportTo`.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn virtual_service(
    vs: &crate::config::VirtualServiceSpec,
    path: &str,
    diags: &mut Diagnostics,
) {
    for (field, set) in [("tcp", !vs.tcp.is_empty()), ("tls", !vs.tls.is_empty())] {
        if set {
            diags.warn(
                format!("{path}.{field}"),
                format!("ignored: meshrules is an HTTP filter; {field} routes need Istio's own (native) VirtualService"),
            );
        }
    }
    export_to(&vs.export_to, path, diags);
}

/// One `http` route's fields that have no effect in the filter.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn http_route(http: &HttpRoute, path: &str, diags: &mut Diagnostics) {
    for (i, m) in http.matches.iter().enumerate() {
        if m.stat_prefix.is_some() {
            diags.warn(
                format!("{path}.match[{i}].statPrefix"),
                "ignored: the filter counts routes in meshrules_route_requests by name",
            );
        }
    }
    if http
        .retries
        .as_ref()
        .is_some_and(|r| r.retry_ignore_previous_hosts == Some(true))
    {
        diags.warn(
            format!("{path}.retries.retryIgnorePreviousHosts"),
            "ignored: Envoy's previous-hosts retry predicate cannot be set by request headers",
        );
    }
}

/// istiod's `analyzeUnreachableHTTPRules` (pkg/config/validation) warns for a route after one
/// without matches and for a route whose every match an earlier route has. This also counts a
/// `uri: {prefix: "/"}` block as matching everything and an exact or prefix string as covered
/// by a shorter prefix; only what is certain warns. A delegating route does not cover later
/// ones: a request none of the delegate's routes matches goes on to them.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn unreachable_routes(routes: &[(usize, String, HttpRoute)], diags: &mut Diagnostics) {
    let any = [HttpMatchRequest::default()];
    fn blocks<'a>(h: &'a HttpRoute, any: &'a [HttpMatchRequest]) -> &'a [HttpMatchRequest] {
        if h.matches.is_empty() {
            any
        } else {
            &h.matches
        }
    }
    for (k, (_, path, later)) in routes.iter().enumerate() {
        let earlier = routes[..k].iter().find(|(_, _, first)| {
            first.delegate.is_none()
                && blocks(later, &any)
                    .iter()
                    .all(|b| blocks(first, &any).iter().any(|a| covers(a, b)))
        });
        let Some((i, _, first)) = earlier else {
            continue;
        };
        let name = if first.name.is_empty() {
            String::new()
        } else {
            format!(" ({:?})", first.name)
        };
        let message = if blocks(first, &any).iter().any(|a| covers(a, &any[0])) {
            format!(
                "never matches: http[{i}]{name} before it matches every request (it has no match, \
                 or only uri prefix \"/\"); Istio warns \"route without matches defined before\". \
                 Put the catch-all route last"
            )
        } else {
            format!(
                "never matches: http[{i}]{name} before it matches every request this route \
                 matches (the same or wider match blocks); Istio warns \"all matches used by \
                 prior rules\". Put the narrower route first"
            )
        };
        diags.warn(path.clone(), message);
    }
}

/// Whether every request block `b` matches is matched by block `a`: each condition of `a` is
/// implied by one of `b`'s.
fn covers(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    let uri_case = a.ignore_uri_case == b.ignore_uri_case;
    let ignore = a.ignore_uri_case;
    let uri_a = a
        .uri
        .as_ref()
        .filter(|u| !(is_empty(u) || u.prefix.as_deref() == Some("/")));
    let uri_b = b
        .uri
        .as_ref()
        .filter(|u| !(is_empty(u) || u.prefix.as_deref() == Some("/")));
    // Borrowed, not cloned: this runs for every pair of routes of a VirtualService.
    fn anything(m: &Option<StringMatch>) -> Option<&StringMatch> {
        m.as_ref().filter(|m| !is_empty(m))
    }
    let strings = [
        (uri_a, uri_b, ignore && uri_case),
        (anything(&a.scheme), anything(&b.scheme), false),
        (anything(&a.method), anything(&b.method), false),
        (anything(&a.authority), anything(&b.authority), false),
    ];
    let uri_ok = uri_a.is_none() || uri_case;
    uri_ok
        && strings.iter().all(|(a, b, lower)| match a {
            None => true,
            Some(a) => b.is_some_and(|b| implies(b, a, *lower)),
        })
        && a.headers
            .iter()
            .all(|(k, m)| b.headers.get(k).is_some_and(|n| implies(n, m, false)))
        && a.query_params
            .iter()
            .all(|(k, m)| b.query_params.get(k).is_some_and(|n| implies(n, m, false)))
        && a.without_headers
            .iter()
            .all(|(k, m)| b.without_headers.get(k) == Some(m))
        && a.source_labels
            .iter()
            .all(|(k, v)| b.source_labels.get(k) == Some(v))
        && (a.port.is_none() || a.port == b.port)
        && (a.source_namespace.is_none() || a.source_namespace == b.source_namespace)
        && (a.gateways.is_empty()
            || !b.gateways.is_empty() && b.gateways.iter().all(|g| a.gateways.contains(g)))
}

/// `{}`: on uri, scheme, method and authority istiod matches anything with it.
fn is_empty(m: &StringMatch) -> bool {
    m.exact.is_none() && m.prefix.is_none() && m.regex.is_none()
}

/// Whether a value matching `b` always matches `a`: the same matcher, or `a` a prefix of
/// `b`'s exact value or prefix (`lower`: both compared ignoring case).
fn implies(b: &StringMatch, a: &StringMatch, lower: bool) -> bool {
    let starts_with = |v: &str, p: &str| match v.as_bytes().get(..p.len()) {
        Some(head) if lower => head.eq_ignore_ascii_case(p.as_bytes()),
        Some(head) => head == p.as_bytes(),
        None => false,
    };
    match (a, b) {
        (
            StringMatch {
                exact: None,
                prefix: Some(p),
                regex: None,
            },
            StringMatch {
                exact: Some(v),
                prefix: None,
                regex: None,
            }
            | StringMatch {
                exact: None,
                prefix: Some(v),
                regex: None,
            },
        ) => starts_with(v, p),
        _ => a == b,
    }
}

/// istiod's `StringMatcherWithPrefix` (pilot/pkg/security/authz/matcher/string.go) reads `*`
/// only as the whole value, a leading `*` (suffix match) or a trailing one (prefix match);
/// any other `*` is a literal character. `routable`: a request attribute a VirtualService
/// route can match with a regex instead.
fn literal_star(v: &str, routable: bool) -> Option<String> {
    let (what, rest) = if let Some(s) = v.strip_prefix('*') {
        ("values ending in", s)
    } else if let Some(p) = v.strip_suffix('*') {
        ("values starting with", p)
    } else {
        ("only the value", v)
    };
    if v == "*" || !rest.contains('*') {
        return None;
    }
    let instead = if routable {
        let regex = v
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*");
        format!(", or match {regex:?} as a regex in a VirtualService route")
    } else {
        String::new()
    };
    Some(format!(
        "Istio reads `*` only as the whole value or its first or last character: {v:?} matches \
         {what} {rest:?}, with a literal `*`. AuthorizationPolicy has no contains or glob \
         match: list prefix (x*) or suffix (*x) values{instead}"
    ))
}

/// Values of an AuthorizationPolicy matched by Istio's string rules, each with its field path:
/// not namespaces (istiod turns every `*` there into `.*`), service accounts and
/// request principals (their own forms), IP blocks, ports, or `{*}` path templates.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn authorization_policy(
    spec: &AuthorizationPolicySpec,
    path: &str,
    diags: &mut Diagnostics,
) {
    let mut check = |field: String, values: &[String], routable: bool| {
        for (k, v) in values.iter().enumerate() {
            if v.contains("{*}") || v.contains("{**}") {
                continue;
            }
            if let Some(message) = literal_star(v, routable) {
                diags.warn(format!("{field}[{k}]"), message);
            }
        }
    };
    for (i, r) in spec.rules.iter().flatten().enumerate() {
        let rpath = format!("{path}.rules[{i}]");
        for (j, s) in r.from.iter().enumerate() {
            let Some(Source {
                principals,
                not_principals,
                trust_domains,
                not_trust_domains,
                ..
            }) = &s.source
            else {
                continue;
            };
            let p = format!("{rpath}.from[{j}].source");
            check(format!("{p}.principals"), principals, false);
            check(format!("{p}.notPrincipals"), not_principals, false);
            check(format!("{p}.trustDomains"), trust_domains, false);
            check(format!("{p}.notTrustDomains"), not_trust_domains, false);
        }
        for (j, o) in r.to.iter().enumerate() {
            let Some(Operation {
                hosts,
                not_hosts,
                methods,
                not_methods,
                paths,
                not_paths,
                ..
            }) = &o.operation
            else {
                continue;
            };
            let p = format!("{rpath}.to[{j}].operation");
            check(format!("{p}.hosts"), hosts, true);
            check(format!("{p}.notHosts"), not_hosts, true);
            check(format!("{p}.methods"), methods, true);
            check(format!("{p}.notMethods"), not_methods, true);
            check(format!("{p}.paths"), paths, true);
            check(format!("{p}.notPaths"), not_paths, true);
        }
        for (
            j,
            Condition {
                key,
                values,
                not_values,
            },
        ) in r.when.iter().enumerate()
        {
            let string_key = key.starts_with("request.headers[")
                || key.starts_with("request.auth.claims[")
                || [
                    "connection.sni",
                    "source.principal",
                    "source.trustDomain",
                    "request.auth.audiences",
                    "request.auth.presenter",
                ]
                .contains(&key.as_str());
            if string_key {
                let p = format!("{rpath}.when[{j}]");
                let routable = key.starts_with("request.headers[");
                check(format!("{p}.values"), values, routable);
                check(format!("{p}.notValues"), not_values, routable);
            }
        }
    }
}
