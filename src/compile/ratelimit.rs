//! `rateLimits`: Envoy's LocalRateLimit per route, checked as Envoy's config validation and
//! filter factory check it, and attached to the routes of the named VirtualService.

use crate::config::ratelimit::{
    Action, EnvoyStringMatcher, FractionalPercent, HeaderMatcher, LocalRateLimit, RateLimitSpec,
    RuntimeFractionalPercent, TokenBucket,
};
use crate::config::{duration, Diagnostics};
use crate::rules::ratelimit::{
    AppendAction, Bucket, Descriptor, DescriptorAction, Limit, RateLimits,
};
use crate::rules::{HeaderCondition, RuleSet, StrMatcher};

use super::matching::compile_regex;
use super::whole_number;

/// Envoy refuses a shorter `fill_interval` ("must be >= 50ms").
const MIN_FILL_INTERVAL_MS: u64 = 50;
/// Envoy's default `max_dynamic_descriptors` (measured on Envoy 1.40: the 21st distinct value
/// evicts the first).
const DEFAULT_MAX_DYNAMIC: u32 = 20;
/// Shared-data keys cannot be deleted: the slots of one dynamic descriptor are bounded.
const MAX_DYNAMIC: i64 = 10_000;

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn compile(
    specs: &[RateLimitSpec],
    rules: &RuleSet,
    diags: &mut Diagnostics,
) -> RateLimits {
    let mut out = RateLimits {
        limits: Vec::new(),
        by_route: vec![None; rules.routes.len()],
    };
    let mut names = std::collections::HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("rateLimits[{i}]");
        let name_ok = !spec.name.is_empty()
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            diags.error(
                format!("{path}.name"),
                format!(
                    "{:?} must be letters, digits, '-' and '_' (it names metrics)",
                    spec.name
                ),
            );
        } else if !names.insert(spec.name.clone()) {
            diags.error(
                format!("{path}.name"),
                format!("duplicate rate limit {:?}", spec.name),
            );
        }
        let Some(limit) = limit(spec, &format!("{path}.localRateLimit"), diags) else {
            continue;
        };
        let index = out.limits.len();
        for route in routes(spec, rules, &path, diags) {
            match out.by_route[route] {
                Some(other) => diags.error(
                    format!("{path}.routes"),
                    format!(
                        "route {} already has rate limit {:?}: Envoy takes one LocalRateLimit per route",
                        rules.routes[route].name, out.limits[other].name
                    ),
                ),
                None => out.by_route[route] = Some(index),
            }
        }
        out.limits.push(limit);
    }
    out
}

/// The routes a limit covers: the VirtualService's, by name when `routes` names them.
fn routes(
    spec: &RateLimitSpec,
    rules: &RuleSet,
    path: &str,
    diags: &mut Diagnostics,
) -> Vec<usize> {
    let Some(vs) = rules
        .virtual_services
        .iter()
        .position(|v| v.id == spec.virtual_service)
    else {
        diags.error(
            format!("{path}.virtualService"),
            format!(
                "VirtualService {:?} (namespace/name) is not in resources",
                spec.virtual_service
            ),
        );
        return Vec::new();
    };
    // Its routes as requests take them, delegated routes merged in.
    let own = &rules.virtual_services[vs].routes;
    let Some(wanted) = &spec.routes else {
        return own.clone();
    };
    let mut ids = Vec::new();
    for (j, name) in wanted.iter().enumerate() {
        let found: Vec<usize> = own
            .iter()
            .copied()
            .filter(|&r| rules.routes[r].name == *name)
            .collect();
        if found.is_empty() {
            let known: Vec<&str> = own.iter().map(|&r| rules.routes[r].name.as_str()).collect();
            diags.error(
                format!("{path}.routes[{j}]"),
                format!(
                    "VirtualService {} has no route {name:?} (it has {}; unnamed routes are route-<index>)",
                    spec.virtual_service,
                    known.join(", ")
                ),
            );
        }
        ids.extend(found);
    }
    ids
}

fn bucket(b: &TokenBucket, path: &str, diags: &mut Diagnostics) -> Option<Bucket> {
    let max = whole_number(
        b.max_tokens,
        1,
        i64::from(u32::MAX),
        &format!("{path}.maxTokens"),
        diags,
    );
    let per_fill = match b.tokens_per_fill {
        Some(n) => whole_number(
            n,
            1,
            i64::from(u32::MAX),
            &format!("{path}.tokensPerFill"),
            diags,
        ),
        None => Some(1),
    };
    let interval = match duration::parse(&b.fill_interval) {
        Ok(d) if d.as_millis() < u128::from(MIN_FILL_INTERVAL_MS) => {
            diags.error(
                format!("{path}.fillInterval"),
                format!("{:?} is under 50ms, which Envoy refuses", b.fill_interval),
            );
            None
        }
        Ok(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Err(e) => {
            diags.error(format!("{path}.fillInterval"), e);
            None
        }
    };
    Some(Bucket {
        max_tokens: u64::try_from(max?).ok()?,
        tokens_per_fill: u64::try_from(per_fill?).ok()?,
        fill_interval_ms: interval?,
    })
}

fn percent(p: Option<&RuntimeFractionalPercent>, path: &str, diags: &mut Diagnostics) -> u32 {
    let Some(RuntimeFractionalPercent {
        default_value: FractionalPercent {
            numerator,
            denominator,
        },
        ..
    }) = p
    else {
        return 0;
    };
    let scale = match denominator.as_deref().unwrap_or("HUNDRED") {
        "HUNDRED" => 10_000,
        "TEN_THOUSAND" => 100,
        "MILLION" => 1,
        other => {
            diags.error(
                format!("{path}.defaultValue.denominator"),
                format!("{other:?} is not HUNDRED, TEN_THOUSAND or MILLION"),
            );
            return 0;
        }
    };
    let n = whole_number(
        *numerator,
        0,
        i64::from(u32::MAX),
        &format!("{path}.defaultValue.numerator"),
        diags,
    )
    .unwrap_or(0);
    // Envoy caps a fraction over its denominator at 100%.
    u32::try_from((n.saturating_mul(scale)).min(1_000_000)).unwrap_or(1_000_000)
}

fn limit(spec: &RateLimitSpec, path: &str, diags: &mut Diagnostics) -> Option<Limit> {
    let l: &LocalRateLimit = &spec.local_rate_limit;
    let errors = diags.errors.len();
    // Envoy refuses a per-route LocalRateLimit without a token bucket.
    let default_bucket = match &l.token_bucket {
        Some(b) => bucket(b, &format!("{path}.tokenBucket"), diags),
        None => {
            diags.error(
                format!("{path}.tokenBucket"),
                "is required for a route's limit (as in Envoy)",
            );
            None
        }
    };
    let status = match &l.status {
        Some(s) => whole_number(s.code, 100, 599, &format!("{path}.status.code"), diags)
            .and_then(|c| u32::try_from(c).ok())
            .map_or(429, |c| if c < 400 { 429 } else { c }),
        None => 429,
    };
    let enabled_ppm = percent(
        l.filter_enabled.as_ref(),
        &format!("{path}.filterEnabled"),
        diags,
    );
    let enforced_ppm = percent(
        l.filter_enforced.as_ref(),
        &format!("{path}.filterEnforced"),
        diags,
    );
    if l.filter_enabled.is_none() {
        diags.warn(
            format!("{path}.filterEnabled"),
            "not set: Envoy's default is 0%, so this limit is never checked; set it (and filterEnforced) to {defaultValue: {numerator: 100}}",
        );
    } else if l.filter_enforced.is_none() {
        diags.warn(
            format!("{path}.filterEnforced"),
            "not set: Envoy's default is 0%, so this limit only counts (shadow mode); set it to {defaultValue: {numerator: 100}} to refuse",
        );
    }
    let mut descriptors = Vec::new();
    for (i, d) in l.descriptors.iter().enumerate() {
        let dpath = format!("{path}.descriptors[{i}]");
        if d.entries.is_empty() {
            diags.error(
                format!("{dpath}.entries"),
                "a descriptor needs at least one entry",
            );
        }
        for (j, e) in d.entries.iter().enumerate() {
            if e.key.is_empty() {
                diags.error(format!("{dpath}.entries[{j}].key"), "must not be empty");
            }
        }
        if let Some(b) = bucket(&d.token_bucket, &format!("{dpath}.tokenBucket"), diags) {
            descriptors.push(Descriptor {
                entries: d
                    .entries
                    .iter()
                    .map(|e| {
                        (
                            e.key.clone(),
                            (!e.value.is_empty()).then(|| e.value.clone()),
                        )
                    })
                    .collect(),
                bucket: b,
            });
        }
    }
    let mut rate_limits = Vec::new();
    for (i, rl) in l.rate_limits.iter().enumerate() {
        let rpath = format!("{path}.rateLimits[{i}].actions");
        if rl.actions.is_empty() {
            diags.error(rpath.clone(), "a rate limit needs at least one action");
        }
        let actions: Vec<DescriptorAction> = rl
            .actions
            .iter()
            .enumerate()
            .filter_map(|(j, a)| action(a, &format!("{rpath}[{j}]"), diags))
            .collect();
        rate_limits.push(actions);
    }
    if !l.descriptors.is_empty() && l.rate_limits.is_empty() {
        diags.warn(
            format!("{path}.descriptors"),
            "match no request: there are no rateLimits actions to make request descriptors",
        );
    }
    let max_dynamic = match l.max_dynamic_descriptors {
        Some(n) => whole_number(
            n,
            1,
            MAX_DYNAMIC,
            &format!("{path}.maxDynamicDescriptors"),
            diags,
        )
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(DEFAULT_MAX_DYNAMIC),
        None => DEFAULT_MAX_DYNAMIC,
    };
    let x_ratelimit_headers = match l.enable_x_ratelimit_headers.as_deref() {
        None | Some("OFF") => false,
        Some("DRAFT_VERSION_03") => true,
        Some(other) => {
            diags.error(
                format!("{path}.enableXRatelimitHeaders"),
                format!("{other:?} is not OFF or DRAFT_VERSION_03"),
            );
            false
        }
    };
    let mut response_headers = Vec::new();
    for (i, h) in l.response_headers_to_add.iter().enumerate() {
        let hpath = format!("{path}.responseHeadersToAdd[{i}]");
        if h.header.key.is_empty() {
            diags.error(format!("{hpath}.header.key"), "must not be empty");
            continue;
        }
        let append = match (h.append_action.as_deref(), h.append) {
            (Some("APPEND_IF_EXISTS_OR_ADD"), _) | (None, None | Some(true)) => {
                AppendAction::Append
            }
            (Some("ADD_IF_ABSENT"), _) => AppendAction::AddIfAbsent,
            (Some("OVERWRITE_IF_EXISTS_OR_ADD"), _) | (None, Some(false)) => {
                AppendAction::Overwrite
            }
            (Some("OVERWRITE_IF_EXISTS"), _) => AppendAction::OverwriteIfExists,
            (Some(other), _) => {
                diags.error(
                    format!("{hpath}.appendAction"),
                    format!("{other:?} is not APPEND_IF_EXISTS_OR_ADD, ADD_IF_ABSENT, OVERWRITE_IF_EXISTS_OR_ADD or OVERWRITE_IF_EXISTS"),
                );
                continue;
            }
        };
        response_headers.push((
            h.header.key.to_ascii_lowercase(),
            h.header.value.clone(),
            append,
        ));
    }
    let needs_remote_address = rate_limits
        .iter()
        .flatten()
        .any(|a| matches!(a, DescriptorAction::RemoteAddress));
    (diags.errors.len() == errors).then(|| Limit {
        name: spec.name.clone(),
        status,
        default_bucket,
        descriptors,
        rate_limits,
        enabled_ppm,
        enforced_ppm,
        always_consume_default: l.always_consume_default_token_bucket.unwrap_or(true),
        max_dynamic,
        x_ratelimit_headers,
        response_headers,
        needs_remote_address,
    })
}

/// A protobuf oneof: exactly one of the fields `names` lists is set.
fn exactly_one(set: &[bool], names: &str, path: &str, diags: &mut Diagnostics) -> bool {
    let ok = set.iter().filter(|b| **b).count() == 1;
    if !ok {
        diags.error(path, format!("set exactly one of {names}"));
    }
    ok
}

fn action(a: &Action, path: &str, diags: &mut Diagnostics) -> Option<DescriptorAction> {
    let set = [
        a.request_headers.is_some(),
        a.remote_address.is_some(),
        a.generic_key.is_some(),
        a.header_value_match.is_some(),
        a.metadata.is_some(),
    ];
    if !exactly_one(
        &set,
        "requestHeaders, remoteAddress, genericKey, headerValueMatch or metadata",
        path,
        diags,
    ) {
        return None;
    }
    if let Some(h) = &a.request_headers {
        if h.header_name.is_empty() || h.descriptor_key.is_empty() {
            diags.error(
                format!("{path}.requestHeaders"),
                "headerName and descriptorKey must not be empty",
            );
            return None;
        }
        return Some(DescriptorAction::RequestHeader {
            header: h.header_name.to_ascii_lowercase(),
            key: h.descriptor_key.clone(),
            skip_if_absent: h.skip_if_absent,
        });
    }
    if a.remote_address.is_some() {
        return Some(DescriptorAction::RemoteAddress);
    }
    if let Some(g) = &a.generic_key {
        return Some(DescriptorAction::Generic {
            key: g
                .descriptor_key
                .clone()
                .unwrap_or_else(|| "generic_key".into()),
            value: g.descriptor_value.clone(),
        });
    }
    if let Some(m) = &a.header_value_match {
        let mpath = format!("{path}.headerValueMatch");
        if m.headers.is_empty() {
            diags.error(
                format!("{mpath}.headers"),
                "needs at least one header matcher",
            );
        }
        let headers: Vec<HeaderCondition> = m
            .headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| header_matcher(h, &format!("{mpath}.headers[{i}]"), diags))
            .collect();
        if headers.len() != m.headers.len() {
            return None;
        }
        return Some(DescriptorAction::HeaderValueMatch {
            key: m
                .descriptor_key
                .clone()
                .unwrap_or_else(|| "header_match".into()),
            value: m.descriptor_value.clone(),
            expect_match: m.expect_match.unwrap_or(true),
            headers,
        });
    }
    let md = a.metadata.as_ref()?;
    let mpath = format!("{path}.metadata");
    if md.metadata_key.key != "envoy.filters.http.jwt_authn" {
        diags.error(
            format!("{mpath}.metadataKey.key"),
            format!(
                "{:?}: the only dynamic metadata here is the verified JWT's (envoy.filters.http.jwt_authn)",
                md.metadata_key.key
            ),
        );
        return None;
    }
    if !matches!(md.source.as_deref(), None | Some("DYNAMIC")) {
        diags.error(
            format!("{mpath}.source"),
            "only DYNAMIC metadata (the verified JWT) exists here",
        );
        return None;
    }
    let keys: Vec<String> = md.metadata_key.path.iter().map(|p| p.key.clone()).collect();
    let Some((issuer, claim)) = keys.split_first().filter(|(_, c)| !c.is_empty()) else {
        diags.error(
            format!("{mpath}.metadataKey.path"),
            "give the issuer (the payload's name, as istiod writes payload_in_metadata), then the claim",
        );
        return None;
    };
    Some(DescriptorAction::JwtClaim {
        key: md.descriptor_key.clone(),
        issuer: issuer.clone(),
        claim: claim.to_vec(),
        default_value: md.default_value.clone(),
        skip_if_absent: md.skip_if_absent,
    })
}

/// Envoy's HeaderMatcher with `stringMatch` or `presentMatch` (Envoy ANDs a list of them).
fn header_matcher(
    h: &HeaderMatcher,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<HeaderCondition> {
    if h.invert_match {
        diags.error(
            format!("{path}.invertMatch"),
            "is not supported: use the action's expectMatch: false",
        );
        return None;
    }
    let matcher = match (&h.string_match, h.present_match) {
        (Some(m), None) => Some(string_matcher(m, &format!("{path}.stringMatch"), diags)?),
        (None, Some(true)) => None,
        _ => {
            diags.error(path, "set one of stringMatch or presentMatch: true");
            return None;
        }
    };
    Some(HeaderCondition {
        name: h.name.to_ascii_lowercase(),
        matcher,
        without: false,
    })
}

/// Envoy's StringMatcher: suffix, contains and case-insensitive forms become anchored regexes.
fn string_matcher(
    m: &EnvoyStringMatcher,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    let set = [
        m.exact.is_some(),
        m.prefix.is_some(),
        m.suffix.is_some(),
        m.contains.is_some(),
        m.safe_regex.is_some(),
    ];
    if !exactly_one(
        &set,
        "exact, prefix, suffix, contains or safeRegex",
        path,
        diags,
    ) {
        return None;
    }
    let flags = if m.ignore_case { "(?i)" } else { "" };
    match (&m.exact, &m.prefix, &m.suffix, &m.contains, &m.safe_regex) {
        (Some(e), ..) if m.ignore_case => Some(StrMatcher::ExactIgnoreCase(e.clone())),
        (Some(e), ..) => Some(StrMatcher::Exact(e.clone())),
        (_, Some(p), ..) if m.ignore_case => Some(StrMatcher::PrefixIgnoreCase(p.clone())),
        (_, Some(p), ..) => Some(StrMatcher::Prefix(p.clone())),
        (_, _, Some(s), ..) => {
            let anchored = format!("^{flags}(?s:.*){}$", regex::escape(s));
            compile_regex(&anchored, s, &format!("{path}.suffix"), diags).map(StrMatcher::regex)
        }
        (_, _, _, Some(c), _) => {
            let anchored = format!("^{flags}(?s:.*){}(?s:.*)$", regex::escape(c));
            compile_regex(&anchored, c, &format!("{path}.contains"), diags).map(StrMatcher::regex)
        }
        (_, _, _, _, Some(_)) if m.ignore_case => {
            diags.error(
                format!("{path}.ignoreCase"),
                "has no effect on safeRegex in Envoy; leave it out",
            );
            None
        }
        (_, _, _, _, Some(r)) => compile_regex(
            &format!("^(?:{})$", r.regex),
            &r.regex,
            &format!("{path}.safeRegex.regex"),
            diags,
        )
        .map(StrMatcher::regex),
        _ => None,
    }
}
