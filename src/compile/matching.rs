//! Compiles `match` blocks and `StringMatch`es into matchers, the way istiod translates them
//! to Envoy route matches.

use regex::{Regex, RegexBuilder};

use crate::config::{Diagnostics, HttpMatchRequest, StringMatch};
use crate::rules::{HeaderCondition, MatchBlock, QueryCondition, StrMatcher};

use std::fmt;

use super::path::Path;
use super::{whole_number, Identity, ProxyKind, Scope};

/// istiod refuses longer regexes (`validateStringRegexp`: "regex is too large, max length
/// allowed is 1024").
pub const MAX_REGEX_LEN: usize = 1024;
/// The largest counted repetition (`{n}`, `{n,m}`) RE2 and Go's regexp (istiod's check) take.
pub const MAX_REPEAT: u64 = 1000;
/// Compiled size of one regex. regex-lite's NFA takes about 32 bytes a state, so this is about
/// RE2's program size 32768, which istiod gives Envoy as `re2.max_program_size.error_level`.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Compiled size of all the regexes of the routes together.
pub const MAX_TOTAL_REGEX_BYTES: usize = 64 << 20;

/// Compiles an RE2-style pattern that must match the whole value (Envoy `safe_regex`).
pub fn full_match_regex(
    pattern: &str,
    path: &dyn fmt::Display,
    diags: &mut Diagnostics,
) -> Option<Regex> {
    compile_regex(&format!("^(?:{pattern})$"), pattern, path, diags)
}

/// Compiles `anchored` (the user's `shown` with anchors), charging its size to the total.
pub fn compile_regex(
    anchored: &str,
    shown: &str,
    path: &dyn fmt::Display,
    diags: &mut Diagnostics,
) -> Option<Regex> {
    let refused = if shown.len() > MAX_REGEX_LEN {
        Err(format!(
            "{} bytes, over the limit of {MAX_REGEX_LEN} (istiod's)",
            shown.len()
        ))
    } else if largest_repeat(shown) > MAX_REPEAT {
        Err(format!(
            "repetition count {} is over the limit of {MAX_REPEAT} (RE2's)",
            largest_repeat(shown)
        ))
    } else if let Err(reason) = syntax(shown) {
        // On its own, not only inside the anchors: `/x)|(.*` would close the group and
        // match every path, where RE2 (and istiod) refuse the unbalanced parenthesis.
        Err(reason)
    } else {
        let left = MAX_TOTAL_REGEX_BYTES.saturating_sub(diags.regex_bytes);
        bounded_regex(anchored, left)
    };
    match refused {
        Ok((r, size)) => {
            diags.regex_bytes += size;
            Some(r)
        }
        Err(reason) => {
            diags.error(path.to_string(), format!("bad regex {shown:?}: {reason}"));
            None
        }
    }
}

/// Builds a regex of at most [`MAX_REGEX_BYTES`], returning it with the size charged for it:
/// the smallest of 4 KiB, 32 KiB, ... that it fits (regex-lite does not tell its size; a
/// failed try stops at its limit, so trying costs at most a seventh more). Refused when the
/// charge is over `left`.
/// Whether `pattern` parses as a regex: a size limit of 0 stops regex-lite right after its
/// parser, so only parsing is paid for.
fn syntax(pattern: &str) -> Result<(), String> {
    match RegexBuilder::new(pattern).size_limit(0).build() {
        Err(e) if !e.to_string().contains("exceeded size limit") => Err(last_line(&e.to_string())),
        _ => Ok(()),
    }
}

fn last_line(reason: &str) -> String {
    reason
        .lines()
        .last()
        .unwrap_or("invalid regex")
        .trim()
        .to_string()
}

pub fn bounded_regex(pattern: &str, left: usize) -> Result<(Regex, usize), String> {
    let mut limit = 4096;
    loop {
        match RegexBuilder::new(pattern).size_limit(limit).build() {
            Ok(r) if limit <= left => return Ok((r, limit)),
            Ok(_) => {
                return Err(format!(
                    "the routes' regexes together compile to over {} MiB",
                    MAX_TOTAL_REGEX_BYTES >> 20
                ))
            }
            Err(e) if e.to_string().contains("exceeded size limit") => {
                if limit >= MAX_REGEX_BYTES {
                    return Err(format!(
                        "compiles to over {} MiB (about RE2's program size 32768, istiod's limit in Envoy)",
                        MAX_REGEX_BYTES >> 20
                    ));
                }
                limit = (limit * 8).min(MAX_REGEX_BYTES);
            }
            Err(e) => return Err(last_line(&e.to_string())),
        }
    }
}

/// The largest count of a counted repetition in an RE2 pattern, 0 for none. Braces that are
/// escaped, in a class, or not `{n}`, `{n,}` or `{n,m}` are literals in RE2 and not counted.
fn largest_repeat(pattern: &str) -> u64 {
    let b = pattern.as_bytes();
    let (mut i, mut in_class, mut largest) = (0, false, 0);
    while i < b.len() {
        match b[i] {
            b'\\' => {
                // `\x{...}`, `\p{...}` and `\P{...}` carry braces of their own.
                if matches!(b.get(i + 1), Some(b'x' | b'p' | b'P')) && b.get(i + 2) == Some(&b'{') {
                    i += b[i..]
                        .iter()
                        .position(|&c| c == b'}')
                        .unwrap_or(b.len() - i);
                }
                i += 1;
            }
            b'[' if !in_class => {
                in_class = true;
                // A `]` first in a class (after an optional `^`) is a literal.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'{' if !in_class => {
                let end = b[i..].iter().position(|&c| c == b'}').map(|e| i + e);
                if let Some(body) = end.and_then(|e| pattern.get(i + 1..e)) {
                    let counts = body.split_once(',').unwrap_or((body, ""));
                    let is_count = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
                    if !counts.0.is_empty() && is_count(counts.0) && is_count(counts.1) {
                        for n in [counts.0, counts.1].into_iter().filter(|n| !n.is_empty()) {
                            // Too many digits for u64 is over any limit.
                            largest = largest.max(n.parse().unwrap_or(u64::MAX));
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    largest
}

/// `ignore_case` applies to exact and prefix only, as in Istio (`ignoreUriCase`). `{}` (no
/// match type) compiles to `None`: istiod leaves such a condition out, so it matches anything.
pub fn string_matcher(
    m: &StringMatch,
    ignore_case: bool,
    path: &Path<'_>,
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
                path.field("regex"),
                "empty match: the regex is empty (Istio refuses it)",
            );
            None
        }
        Some(r) => full_match_regex(r, &path.field("regex"), diags).map(StrMatcher::regex),
        None => None,
    }
}

/// A header or query parameter condition; `None` means "present". istiod turns `{}` and the
/// non-RE2 regex `*` into `present_match` (`canBeConvertedToPresentMatch`) and refuses an empty
/// prefix (`validateStringMatch`).
pub fn presence_or_matcher(
    m: &StringMatch,
    path: &Path<'_>,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    if m.exact.is_none() && m.prefix.is_none() && m.regex.as_deref() == Some("*") {
        return None;
    }
    if m.prefix.as_deref() == Some("") {
        diags.error(
            path.field("prefix"),
            "empty match: the prefix is empty (use {} to match presence)",
        );
        return None;
    }
    string_matcher(m, false, path, diags)
}

fn request_field(
    m: &Option<StringMatch>,
    ignore_case: bool,
    path: &Path<'_>,
    diags: &mut Diagnostics,
) -> Option<StrMatcher> {
    string_matcher(m.as_ref()?, ignore_case, path, diags)
}

/// Compiles one match block. Returns `None` when it has errors, or when a condition on the
/// proxy itself (`sourceLabels`, `sourceNamespace`, `gateways`) rules it out for this proxy.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub fn match_block(
    m: &HttpMatchRequest,
    path: &Path<'_>,
    scope: &Scope<'_>,
    diags: &mut Diagnostics,
) -> Option<MatchBlock> {
    let errors_before = diags.errors.len();
    let mut block = MatchBlock {
        uri: request_field(&m.uri, m.ignore_uri_case, &path.field("uri"), diags),
        scheme: request_field(&m.scheme, false, &path.field("scheme"), diags),
        method: request_field(&m.method, false, &path.field("method"), diags),
        authority: request_field(&m.authority, false, &path.field("authority"), diags),
        ..MatchBlock::default()
    };
    if m.ignore_uri_case && matches!(block.uri, Some(StrMatcher::Regex(_))) {
        diags.warn(
            path.field("ignoreUriCase"),
            "ignoreUriCase applies to exact and prefix only (as in Istio); the regex stays case-sensitive",
        );
    }
    for (without, map, field) in [
        (false, &m.headers, "headers"),
        (true, &m.without_headers, "withoutHeaders"),
    ] {
        let fpath = path.field(field);
        for (name, sm) in map {
            let hpath = fpath.field(name);
            if name.is_empty() {
                diags.error(hpath, "header name is empty");
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
    let qpath = path.field("queryParams");
    for (name, sm) in &m.query_params {
        block.query.push(QueryCondition {
            name: name.clone(),
            matcher: presence_or_matcher(sm, &qpath.field(name), diags),
        });
    }
    if let Some(p) = m.port {
        block.port = whole_number(p, 1, 65535, &path.field("port"), diags).map(|p| p as u16);
    }
    if diags.errors.len() > errors_before {
        return None;
    }
    // Kept for the VM's life: no room for more (a push leaves room for four).
    block.headers.shrink_to_fit();
    block.query.shrink_to_fit();
    applies_to_proxy(m, path, scope, diags).then_some(block)
}

/// Conditions on the proxy running the filter are settled once, at configure time.
pub(super) fn applies_to_proxy(
    m: &HttpMatchRequest,
    path: &Path<'_>,
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
                path.field("sourceLabels"),
                "ignored: the proxy has no Istio node metadata to match against",
            );
        }
    }
    if let Some(ns) = &m.source_namespace {
        match id.namespace() {
            Some(own) => applies &= &own == ns,
            None => diags.warn(
                path.field("sourceNamespace"),
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
            path.field("gateways"),
            "ignored: the proxy has no Istio node metadata to tell sidecar from gateway",
        ),
        ProxyKind::Unknown => {}
    }
    applies
}
