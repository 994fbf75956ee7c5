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

/// `ignore_case` applies to exact and prefix only, as in Istio (`ignoreUriCase`).
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
    if let Some(r) = &m.regex {
        return full_match_regex(r, &format!("{path}.regex"), diags).map(StrMatcher::Regex);
    }
    None
}

/// A `StringMatch` that must say something: `{}` is refused where it cannot mean "present".
fn required_matcher(
    m: &Option<StringMatch>,
    ignore_case: bool,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    let m = m.as_ref()?;
    let compiled = string_matcher(m, ignore_case, path, diags);
    if m.exact.is_none() && m.prefix.is_none() && m.regex.is_none() {
        diags.error(path, "empty match: set one of exact, prefix or regex");
    }
    compiled
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
        uri: required_matcher(&m.uri, m.ignore_uri_case, &format!("{path}.uri"), diags),
        scheme: required_matcher(&m.scheme, false, &format!("{path}.scheme"), diags),
        method: required_matcher(&m.method, false, &format!("{path}.method"), diags),
        authority: required_matcher(&m.authority, false, &format!("{path}.authority"), diags),
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
            // istiod's `canBeConvertedToPresentMatch`: regex `*` is not RE2, it means present.
            let matcher =
                if sm.regex.as_deref() == Some("*") && sm.exact.is_none() && sm.prefix.is_none() {
                    None
                } else {
                    string_matcher(sm, false, &hpath, diags)
                };
            block.headers.push(HeaderCondition {
                name: name.to_ascii_lowercase(),
                matcher,
                without,
            });
        }
    }
    for (name, sm) in &m.query_params {
        block.query.push(QueryCondition {
            name: name.clone(),
            matcher: string_matcher(sm, false, &format!("{path}.queryParams.{name}"), diags),
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
    let gateways = if m.gateways.is_empty() {
        scope.gateways
    } else {
        &m.gateways
    };
    if !gateways.is_empty() {
        match id.kind() {
            ProxyKind::Sidecar => applies &= gateways.iter().any(|g| g == "mesh"),
            ProxyKind::Gateway => {
                applies &= gateways.iter().any(|g| g != "mesh");
            }
            ProxyKind::Unknown => diags.warn(
                format!("{path}.gateways"),
                "ignored: the proxy has no Istio node metadata to tell sidecar from gateway",
            ),
        }
    }
    applies
}
