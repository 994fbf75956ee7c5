//! Compiles `match` blocks and `StringMatch`es into matchers, the way istiod translates them
//! to Envoy route matches.

use regex::Regex;

use crate::config::{Diagnostics, HttpMatchRequest, StringMatch};
use crate::rules::{HeaderCondition, MatchBlock, QueryCondition, StrMatcher};

use super::{whole_number, Identity, ProxyKind, Scope};

/// Compiles an RE2-style pattern that must match the whole value (Envoy `safe_regex`).
pub fn full_match_regex(pattern: &str, path: &str, diags: &mut Diagnostics) -> Option<Regex> {
    compile_regex(&format!("^(?:{pattern})$"), pattern, path, diags)
}

pub fn compile_regex(
    anchored: &str,
    shown: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<Regex> {
    match Regex::new(anchored) {
        Ok(r) => Some(r),
        Err(e) => {
            let reason = e.to_string();
            let last = reason.lines().last().unwrap_or("invalid regex").trim();
            diags.error(path, format!("bad regex {shown:?}: {last}"));
            None
        }
    }
}

/// `ignore_case` applies to exact and prefix only, as in Istio (`ignoreUriCase`). `{}` (no
/// match type) compiles to `None`: istiod leaves such a condition out, so it matches anything.
pub fn string_matcher(
    m: &StringMatch,
    ignore_case: bool,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        diags.error(path, "only one of exact, prefix or regex may be set");
        return None;
    }
    if let Some(e) = &m.exact {
        return Some(if ignore_case {
            StrMatcher::ExactIgnoreCase(e.clone())
        } else {
            StrMatcher::Exact(e.clone())
        });
    }
    if let Some(p) = &m.prefix {
        return Some(if ignore_case {
            StrMatcher::PrefixIgnoreCase(p.clone())
        } else {
            StrMatcher::Prefix(p.clone())
        });
    }
    match m.regex.as_deref() {
        Some("") => {
            diags.error(
                format!("{path}.regex"),
                "empty match: the regex is empty (Istio refuses it)",
            );
            None
        }
        Some(r) => full_match_regex(r, &format!("{path}.regex"), diags).map(StrMatcher::Regex),
        None => None,
    }
}

/// A header or query parameter condition; `None` means "present". istiod turns `{}` and the
/// non-RE2 regex `*` into `present_match` (`canBeConvertedToPresentMatch`) and refuses an empty
/// prefix (`validateStringMatch`).
pub fn presence_or_matcher(
    m: &StringMatch,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    if m.exact.is_none() && m.prefix.is_none() && m.regex.as_deref() == Some("*") {
        return None;
    }
    if m.prefix.as_deref() == Some("") {
        diags.error(
            format!("{path}.prefix"),
            "empty match: the prefix is empty (use {} to match presence)",
        );
        return None;
    }
    string_matcher(m, false, path, diags)
}

fn request_field(
    m: &Option<StringMatch>,
    ignore_case: bool,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    string_matcher(m.as_ref()?, ignore_case, path, diags)
}

/// Compiles one match block. Returns `None` when it has errors, or when a condition on the
/// proxy itself (`sourceLabels`, `sourceNamespace`, `gateways`) rules it out for this proxy.
pub fn match_block(
    m: &HttpMatchRequest,
    path: &str,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<MatchBlock> {
    let errors_before = diags.errors.len();
    let mut block = MatchBlock {
        uri: request_field(&m.uri, m.ignore_uri_case, &format!("{path}.uri"), diags),
        scheme: request_field(&m.scheme, false, &format!("{path}.scheme"), diags),
        method: request_field(&m.method, false, &format!("{path}.method"), diags),
        authority: request_field(&m.authority, false, &format!("{path}.authority"), diags),
        ..MatchBlock::default()
    };
    if m.ignore_uri_case && matches!(block.uri, Some(StrMatcher::Regex(_))) {
        diags.warn(
            format!("{path}.ignoreUriCase"),
            "ignoreUriCase applies to exact and prefix only (as in Istio); the regex stays case-sensitive",
        );
    }
    for (without, map, field) in [
        (false, &m.headers, "headers"),
        (true, &m.without_headers, "withoutHeaders"),
    ] {
        for (name, sm) in map {
            let hpath = format!("{path}.{field}.{name}");
            if name.is_empty() {
                diags.error(hpath.clone(), "header name is empty");
            }
            // Envoy's header map answers `host` with the authority.
            let name = match name.to_ascii_lowercase() {
                n if n == "host" => ":authority".to_string(),
                n => n,
            };
            block.headers.push(HeaderCondition {
                name,
                matcher: presence_or_matcher(sm, &hpath, diags),
                without,
            });
        }
    }
    for (name, sm) in &m.query_params {
        block.query.push(QueryCondition {
            name: name.clone(),
            matcher: presence_or_matcher(sm, &format!("{path}.queryParams.{name}"), diags),
        });
    }
    if let Some(p) = m.port {
        block.port = whole_number(p, 1, 65535, &format!("{path}.port"), diags).map(|p| p as u16);
    }
    if diags.errors.len() > errors_before {
        return None;
    }
    applies_to_proxy(m, path, scope, diags).then_some(block)
}

/// Conditions on the proxy running the filter are settled once, at configure time.
pub(super) fn applies_to_proxy(
    m: &HttpMatchRequest,
    path: &str,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> bool {
    let id: &dyn Identity = scope.identity;
    let mut applies = true;
    if !m.source_labels.is_empty() {
        if id.known() {
            applies &= m
                .source_labels
                .iter()
                .all(|(k, v)| id.label(k).as_deref() == Some(v.as_str()));
        } else {
            diags.warn(
                format!("{path}.sourceLabels"),
                "ignored: the proxy has no Istio node metadata to match against",
            );
        }
    }
    if let Some(ns) = &m.source_namespace {
        match id.namespace() {
            Some(own) => applies &= &own == ns,
            None => diags.warn(
                format!("{path}.sourceNamespace"),
                "ignored: the proxy has no Istio node metadata to match against",
            ),
        }
    }
    // No gateways anywhere means `mesh`: the rules are for sidecars only (Istio's default).
    let gateways = if !m.gateways.is_empty() {
        &m.gateways[..]
    } else {
        scope.gateways
    };
    let for_mesh = gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    match id.kind() {
        ProxyKind::Sidecar => applies &= for_mesh,
        ProxyKind::Gateway => applies &= gateways.iter().any(|g| g != "mesh"),
        ProxyKind::Unknown if !gateways.is_empty() => diags.warn(
            format!("{path}.gateways"),
            "ignored: the proxy has no Istio node metadata to tell sidecar from gateway",
        ),
        ProxyKind::Unknown => {}
    }
    applies
}
