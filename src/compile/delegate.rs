//! VirtualService delegation, materialised the way istiod merges it (`mergeHTTPRoutes`): each
//! route of the delegate takes the place of the root route that names it, its matches merged
//! with the root's, and the root's policies filling in what the delegate leaves unset.

use crate::config::{HttpMatchRequest, HttpRoute, StringMatch};

/// The delegate route `leaf` as it runs under `root`, or `None` when one of its matches
/// conflicts with every root match (istiod drops such a route).
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub fn merge(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    Some(HttpRoute {
        name: leaf.name.clone(),
        matches: merge_matches(&root.matches, &leaf.matches)?,
        route: leaf.route.clone(),
        redirect: leaf.redirect.clone(),
        direct_response: leaf.direct_response.clone(),
        delegate: leaf.delegate.clone(),
        rewrite: inherit(&leaf.rewrite, &root.rewrite),
        timeout: inherit(&leaf.timeout, &root.timeout),
        retries: inherit(&leaf.retries, &root.retries),
        fault: inherit(&leaf.fault, &root.fault),
        mirror: inherit(&leaf.mirror, &root.mirror),
        mirrors: inherit(&leaf.mirrors, &root.mirrors),
        mirror_percent: inherit(&leaf.mirror_percent, &root.mirror_percent),
        mirror_percentage: inherit(&leaf.mirror_percentage, &root.mirror_percentage),
        cors_policy: inherit(&leaf.cors_policy, &root.cors_policy),
        headers: inherit(&leaf.headers, &root.headers),
    })
}

/// The delegate's setting, else the root's.
fn inherit<T: Clone>(leaf: &Option<T>, root: &Option<T>) -> Option<T> {
    leaf.as_ref().or(root.as_ref()).cloned()
}

fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let merged: Vec<_> = root
            .iter()
            .filter(|r| !has_conflict(r, l))
            .map(|r| merge_match(r, l))
            .collect();
        if merged.is_empty() {
            return None;
        }
        out.extend(merged);
    }
    Some(out)
}

/// The delegate's conditions win; the root's fill in the rest.
fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut headers = root.headers.clone();
    headers.extend(leaf.headers.clone());
    let mut without_headers = root.without_headers.clone();
    without_headers.extend(leaf.without_headers.clone());
    let mut query_params = root.query_params.clone();
    query_params.extend(leaf.query_params.clone());
    HttpMatchRequest {
        name: if leaf.name.is_empty() {
            root.name.clone()
        } else {
            leaf.name.clone()
        },
        uri: inherit(&leaf.uri, &root.uri),
        scheme: inherit(&leaf.scheme, &root.scheme),
        method: inherit(&leaf.method, &root.method),
        authority: inherit(&leaf.authority, &root.authority),
        headers,
        without_headers,
        port: inherit(&leaf.port, &root.port),
        source_labels: if leaf.source_labels.is_empty() {
            root.source_labels.clone()
        } else {
            leaf.source_labels.clone()
        },
        gateways: if leaf.gateways.is_empty() {
            root.gateways.clone()
        } else {
            leaf.gateways.clone()
        },
        query_params,
        ignore_uri_case: leaf.ignore_uri_case,
        source_namespace: inherit(&leaf.source_namespace, &root.source_namespace),
        stat_prefix: inherit(&leaf.stat_prefix, &root.stat_prefix),
    }
}

/// istiod's `hasConflict`: a delegate match must narrow the root match, never widen or
/// contradict it.
fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let fields = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if fields
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict =
        |r: &std::collections::BTreeMap<String, StringMatch>,
         l: &std::collections::BTreeMap<String, StringMatch>| {
            l.iter().any(|(k, lm)| string_conflict(r.get(k), Some(lm)))
        };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port) {
        if r != l {
            return true;
        }
    }
    if let (Some(r), Some(l)) = (&root.source_namespace, &leaf.source_namespace) {
        if r != l {
            return true;
        }
    }
    leaf.source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}

/// istiod's `stringMatchConflict`.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(r), Some(l)) = (root, leaf) else {
        return false;
    };
    if set(&r.regex).is_some() || set(&l.regex).is_some() {
        return true;
    }
    if let Some(exact) = set(&r.exact) {
        return set(&l.prefix).is_some() || set(&l.exact) != Some(exact);
    }
    if let Some(prefix) = set(&r.prefix) {
        if let Some(lp) = set(&l.prefix) {
            return !lp.starts_with(prefix);
        }
        if let Some(le) = set(&l.exact) {
            return !le.starts_with(prefix);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(v: serde_json::Value) -> HttpRoute {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn delegate_inherits_unset_policies_from_the_root_route() {
        let root = route(
            json!({"match": [{"uri": {"prefix": "/r"}}], "delegate": {"name": "d"},
            "timeout": "3s", "retries": {"attempts": 5}, "headers": {"request": {"set": {"x": "root"}}}}),
        );
        let leaf = route(
            json!({"name": "leaf", "match": [{"uri": {"prefix": "/r/v2"}}],
            "route": [{"destination": {"host": "a"}}], "timeout": "1s"}),
        );
        let m = merge(&root, &leaf).unwrap();
        assert_eq!(m.timeout.as_deref(), Some("1s"));
        assert!(m.retries.is_some() && m.headers.is_some());
        assert_eq!(
            m.matches[0].uri.as_ref().unwrap().prefix.as_deref(),
            Some("/r/v2")
        );
    }

    #[test]
    fn conflicting_delegate_matches_drop_the_route_as_istiod_does() {
        let root = route(json!({"match": [{"uri": {"prefix": "/a"}}], "delegate": {"name": "d"}}));
        let wider = route(
            json!({"match": [{"uri": {"prefix": "/"}}], "route": [{"destination": {"host": "a"}}]}),
        );
        assert!(merge(&root, &wider).is_none());
        let regex = route(
            json!({"match": [{"uri": {"regex": "/a.*"}}], "route": [{"destination": {"host": "a"}}]}),
        );
        assert!(merge(&root, &regex).is_none());
        let case = route(
            json!({"match": [{"uri": {"prefix": "/a/b"}, "ignoreUriCase": true}], "route": [{"destination": {"host": "a"}}]}),
        );
        assert!(merge(&root, &case).is_none());
        let header = route(
            json!({"match": [{"headers": {"x": {"exact": "1"}}}], "route": [{"destination": {"host": "a"}}]}),
        );
        let merged = merge(&root, &header).unwrap();
        assert_eq!(
            merged.matches[0].uri.as_ref().unwrap().prefix.as_deref(),
            Some("/a")
        );
        assert!(merged.matches[0].headers.contains_key("x"));
    }
}
