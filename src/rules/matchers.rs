//! Compiled request matchers: Istio's `StringMatch` and `HTTPMatchRequest`, as istiod hands
//! them to Envoy's route matching (header matchers, path matchers, query parameter matchers).

use regex::Regex;

use crate::http::Request;

#[derive(Debug, Clone)]
pub enum StrMatcher {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends: Envoy's `safe_regex` matches the whole value (RE2 FullMatch).
    Regex(Box<Regex>),
    ExactIgnoreCase(String),
    PrefixIgnoreCase(String),
}

impl StrMatcher {
    /// Boxed: a regex is rare and a `Regex` is 56 bytes, the other matchers 24.
    pub fn regex(r: Regex) -> Self {
        StrMatcher::Regex(Box::new(r))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(s) => value == s,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Regex(r) => r.is_match(value),
            StrMatcher::ExactIgnoreCase(s) => value.eq_ignore_ascii_case(s),
            StrMatcher::PrefixIgnoreCase(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        }
    }

    /// Length of the matched prefix when the matcher is a prefix matcher (for `rewrite.uri`).
    pub fn prefix_len(&self) -> Option<usize> {
        match self {
            StrMatcher::Prefix(p) | StrMatcher::PrefixIgnoreCase(p) => Some(p.len()),
            _ => None,
        }
    }
}

/// A header condition. `matcher: None` is Istio's `{}`: the header is present.
/// `without` is `withoutHeaders`: istiod sets `invert_match` and `treat_missing_header_as_empty`,
/// so a missing header is matched as "" and the result inverted.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: String,
    pub matcher: Option<StrMatcher>,
    pub without: bool,
}

impl HeaderCondition {
    /// A repeated header matches when any of its values does, as Envoy 1.40's route header
    /// matcher decides.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let mut values = req.header_values(&self.name).peekable();
        let present = values.peek().is_some();
        let hit = match &self.matcher {
            None => present,
            Some(m) if present => values.any(|v| m.matches(v)),
            Some(m) => self.without && m.matches(""),
        };
        hit != self.without
    }
}

#[derive(Debug, Clone)]
pub struct QueryCondition {
    pub name: String,
    /// `None`: the parameter is present.
    pub matcher: Option<StrMatcher>,
}

/// One `match` entry of an HTTP route: every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct MatchBlock {
    pub uri: Option<StrMatcher>,
    pub scheme: Option<StrMatcher>,
    pub method: Option<StrMatcher>,
    pub authority: Option<StrMatcher>,
    pub headers: Vec<HeaderCondition>,
    pub query: Vec<QueryCondition>,
    pub port: Option<u16>,
}

impl MatchBlock {
    pub fn matches(&self, req: &Request<'_>) -> bool {
        if let Some(m) = &self.uri {
            if !m.matches(req.path_only()) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return false;
            }
        }
        if let Some(port) = self.port {
            if req.port() != Some(port) {
                return false;
            }
        }
        if !self.headers.iter().all(|h| h.matches(req)) {
            return false;
        }
        self.query.iter().all(|q| match req.query_param(&q.name) {
            None => false,
            Some(v) => q.matcher.as_ref().is_none_or(|m| m.matches(v)),
        })
    }
}
