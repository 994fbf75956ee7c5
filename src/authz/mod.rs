//! AuthorizationPolicy: compiled policies and their evaluation (pure: no host calls).
//!
//! The shape follows istiod's translation to Envoy's RBAC filter
//! (pilot/pkg/security/authz/model): a rule is an OR of sources, an OR of operations and an
//! AND of conditions; each field is "any value matches, and no not-value matches".

pub mod path;

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

use crate::engine::Request;

pub use path::EscapedSlashes;

/// Every policy that applies to this proxy, by action.
#[derive(Debug)]
pub struct Authz {
    pub deny: Vec<Policy>,
    pub allow: Vec<Policy>,
    pub audit: Vec<Policy>,
    /// `istio.io/dry-run: "true"` policies: evaluated and counted, never enforced.
    pub dry_run_deny: Vec<Policy>,
    pub dry_run_allow: Vec<Policy>,
    pub escaped_slashes: EscapedSlashes,
    /// Envoy's `xff_num_trusted_hops`, for `remote.ip`.
    pub xff_trusted_hops: usize,
    /// Which connection facts the policies read, so the host fetches only those.
    pub needs: Needs,
}

impl Default for Authz {
    fn default() -> Self {
        Authz {
            deny: Vec::new(),
            allow: Vec::new(),
            audit: Vec::new(),
            dry_run_deny: Vec::new(),
            dry_run_allow: Vec::new(),
            escaped_slashes: EscapedSlashes::Reject,
            xff_trusted_hops: 0,
            needs: Needs::default(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Needs {
    pub peer: bool,
    pub source_ip: bool,
    pub destination: bool,
    pub sni: bool,
}

impl Needs {
    pub fn add(&mut self, attr: &Attr) {
        match attr {
            Attr::Principal | Attr::Namespace | Attr::ServiceAccount | Attr::TrustDomain => {
                self.peer = true
            }
            Attr::SourceIp | Attr::RemoteIp => self.source_ip = true,
            Attr::DestinationIp | Attr::DestinationPort => self.destination = true,
            Attr::Sni => self.sni = true,
            _ => {}
        }
    }
}

#[derive(Debug)]
pub struct Policy {
    /// `namespace/name`, for logs.
    pub id: String,
    pub rules: Vec<Rule>,
}

/// One rule: empty `from`/`to` match every request.
#[derive(Debug, Default)]
pub struct Rule {
    pub from: Vec<Vec<Check>>,
    pub to: Vec<Vec<Check>>,
    pub when: Vec<Check>,
}

/// One attribute with its `values` (any must match, when given) and `notValues` (none may).
#[derive(Debug)]
pub struct Check {
    pub attr: Attr,
    pub values: Vec<Pattern>,
    pub not_values: Vec<Pattern>,
}

/// A request attribute a policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Host,
    Method,
    Path,
    DestinationPort,
    DestinationIp,
    SourceIp,
    RemoteIp,
    Sni,
    Header(String),
    /// The peer certificate's URI SAN (`spiffe://...`).
    Principal,
    Namespace,
    ServiceAccount,
    TrustDomain,
    RequestPrincipal,
    Audiences,
    Presenter,
    Claim(Vec<String>),
}

/// Istio's string match (matcher.StringMatcher): `*` is "non-empty", `x*` a prefix, `*x` a
/// suffix, else exact. `prefix` is text every value must start with (`spiffe://` for
/// principals, as istiod's StringMatcherWithPrefix adds it).
#[derive(Debug, Clone)]
pub enum StrPattern {
    NonEmpty,
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `spiffe://` + `*x`: istiod's regex `spiffe://.*x`.
    PrefixSuffix(String, String),
}

impl StrPattern {
    pub fn istio(v: &str, prefix: &str) -> StrPattern {
        if v == "*" {
            StrPattern::NonEmpty
        } else if let Some(s) = v.strip_prefix('*') {
            if prefix.is_empty() {
                StrPattern::Suffix(s.to_string())
            } else {
                StrPattern::PrefixSuffix(prefix.to_string(), s.to_string())
            }
        } else if let Some(p) = v.strip_suffix('*') {
            StrPattern::Prefix(format!("{prefix}{p}"))
        } else {
            StrPattern::Exact(format!("{prefix}{v}"))
        }
    }

    fn matches(&self, v: &str, ignore_case: bool) -> bool {
        let eq = |a: &str, b: &str| {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            StrPattern::NonEmpty => !v.is_empty(),
            StrPattern::Exact(s) => eq(v, s),
            StrPattern::Prefix(p) => v.get(..p.len()).is_some_and(|h| eq(h, p)),
            StrPattern::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .and_then(|i| v.get(i..))
                .is_some_and(|t| eq(t, s)),
            StrPattern::PrefixSuffix(p, s) => {
                v.len() >= p.len() + s.len() && v.starts_with(p.as_str()) && v.ends_with(s.as_str())
            }
        }
    }
}

#[derive(Debug)]
pub enum Pattern {
    /// Header present (istiod's HeaderMatcher for `*`).
    Present,
    Str(StrPattern),
    Cidr(IpNet),
    Port(u16),
    /// Anchored regex, where istiod generates one (namespaces, service accounts, templates).
    Regex(Regex),
    /// `request.auth.principal`: issuer and subject matched separately (`None`: any non-empty).
    IssuerSubject(Option<StrPattern>, Option<StrPattern>),
}

/// What the policies can know about one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub req: &'a Request<'a>,
    /// The normalized path without query.
    pub path: &'a str,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<u16>,
    pub sni: Option<&'a str>,
    /// The peer certificate's URI SAN, when the connection is mTLS.
    pub peer_principal: Option<&'a str>,
    pub jwt: Option<JwtFacts<'a>>,
}

/// What a verified JWT tells the policies.
#[derive(Debug, Clone, Copy)]
pub struct JwtFacts<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
}

/// The outcome of authorization for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'p> {
    Allow,
    /// Denied by a DENY policy's rule.
    DeniedBy(&'p str, usize),
    /// ALLOW policies exist and none matched.
    NoAllowMatched,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Evaluation<'p> {
    pub verdict: Verdict<'p>,
    /// The dry-run policies would have denied the request.
    pub dry_run_would_deny: bool,
    /// The AUDIT policy and rule that matched, if one did.
    pub audited: Option<(&'p str, usize)>,
}

impl Authz {
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.dry_run_deny.is_empty()
            && self.dry_run_allow.is_empty()
    }

    /// Istio's order: a matching DENY denies; otherwise with no ALLOW policy the request is
    /// allowed; otherwise a matching ALLOW allows and anything else is denied.
    pub fn evaluate(&self, f: &Facts<'_>) -> Evaluation<'_> {
        let verdict = match first_match(&self.deny, f) {
            Some((id, rule)) => Verdict::DeniedBy(id, rule),
            None if self.allow.is_empty() || first_match(&self.allow, f).is_some() => {
                Verdict::Allow
            }
            None => Verdict::NoAllowMatched,
        };
        // Istio's shadow rules: dry-run DENY and dry-run ALLOW policies each decide alone.
        let dry_run_would_deny = first_match(&self.dry_run_deny, f).is_some()
            || (!self.dry_run_allow.is_empty() && first_match(&self.dry_run_allow, f).is_none());
        Evaluation {
            verdict,
            dry_run_would_deny,
            audited: first_match(&self.audit, f),
        }
    }

    /// The first ALLOW policy and rule matching the request: what allowed it, for reviews
    /// (`meshrules explain`); `evaluate` decides.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn allowed_by(&self, f: &Facts<'_>) -> Option<(&str, usize)> {
        first_match(&self.allow, f)
    }

    /// `remote.ip`: the client address as Envoy computes it with `use_remote_address: true`
    /// and `xff_num_trusted_hops: n` — the n-th address from the right of X-Forwarded-For as
    /// the client sent it, or the connection peer when n is 0 or the header is shorter. Envoy
    /// has appended the peer to X-Forwarded-For before filters run, hence `n + 1` here.
    pub fn remote_ip(&self, req: &Request<'_>, peer: Option<IpAddr>) -> Option<IpAddr> {
        if self.xff_trusted_hops == 0 {
            return peer;
        }
        // Counted from the right across repeated headers, without collecting them.
        let mut from_right = req
            .header_values("x-forwarded-for")
            .rev()
            .flat_map(|v| v.rsplit(',').map(str::trim));
        match from_right.nth(self.xff_trusted_hops) {
            Some(entry) => entry.parse().ok(),
            None => peer,
        }
    }
}

fn first_match<'p>(policies: &'p [Policy], f: &Facts<'_>) -> Option<(&'p str, usize)> {
    policies.iter().find_map(|p| {
        p.rules
            .iter()
            .position(|r| r.matches(f))
            .map(|i| (p.id.as_str(), i))
    })
}

impl Rule {
    fn matches(&self, f: &Facts<'_>) -> bool {
        let any_of = |groups: &[Vec<Check>]| {
            groups.is_empty() || groups.iter().any(|g| g.iter().all(|c| c.matches(f)))
        };
        any_of(&self.from) && any_of(&self.to) && self.when.iter().all(|c| c.matches(f))
    }
}

impl Check {
    fn matches(&self, f: &Facts<'_>) -> bool {
        (self.values.is_empty() || self.values.iter().any(|p| self.attr.matches(p, f)))
            && !self.not_values.iter().any(|p| self.attr.matches(p, f))
    }
}

impl Attr {
    fn matches(&self, p: &Pattern, f: &Facts<'_>) -> bool {
        match self {
            Attr::Host => str_or_present(p, Some(f.req.authority), true),
            Attr::Method => str_or_present(p, Some(f.req.method), false),
            Attr::Path => match p {
                Pattern::Regex(r) => r.is_match(f.path),
                _ => str_or_present(p, Some(f.path), false),
            },
            Attr::Header(name) => {
                // Envoy's RBAC header matcher sees repeated values joined with ",".
                let mut values = f.req.header_values(name);
                let Some(first) = values.next() else {
                    return false;
                };
                match values.next() {
                    None => str_or_present(p, Some(first), false),
                    Some(second) => {
                        let mut joined = format!("{first},{second}");
                        for v in values {
                            joined.push(',');
                            joined.push_str(v);
                        }
                        str_or_present(p, Some(&joined), false)
                    }
                }
            }
            Attr::Sni => str_or_present(p, f.sni, false),
            Attr::SourceIp => ip_in(p, f.source_ip),
            Attr::RemoteIp => ip_in(p, f.remote_ip),
            Attr::DestinationIp => ip_in(p, f.destination_ip),
            Attr::DestinationPort => {
                matches!(p, Pattern::Port(port) if f.destination_port == Some(*port))
            }
            Attr::Principal | Attr::Namespace | Attr::ServiceAccount => match (p, f.peer_principal)
            {
                (Pattern::Regex(r), Some(v)) => r.is_match(v),
                (_, v) => str_or_present(p, v, false),
            },
            Attr::TrustDomain => {
                let td = f
                    .peer_principal
                    .and_then(|v| v.strip_prefix("spiffe://"))
                    .map(|rest| rest.split('/').next().unwrap_or(rest));
                str_or_present(p, td, false)
            }
            Attr::RequestPrincipal => match (p, f.jwt) {
                (Pattern::IssuerSubject(iss, sub), Some(jwt)) => {
                    // An unset side is istiod's `.+`: any non-empty value.
                    let side = |m: &Option<StrPattern>, v: &str| match m {
                        Some(m) => m.matches(v, false),
                        None => !v.is_empty(),
                    };
                    side(iss, jwt.issuer) && side(sub, jwt.subject)
                }
                _ => false,
            },
            Attr::Audiences => claim_matches(p, f.jwt, &["aud"]),
            Attr::Presenter => claim_matches(p, f.jwt, &["azp"]),
            Attr::Claim(path) => claim_matches(p, f.jwt, path),
        }
    }
}

fn str_or_present(p: &Pattern, v: Option<&str>, ignore_case: bool) -> bool {
    match (p, v) {
        (Pattern::Present, v) => v.is_some(),
        (Pattern::Str(s), Some(v)) => s.matches(v, ignore_case),
        (Pattern::Regex(r), Some(v)) => r.is_match(v),
        _ => false,
    }
}

fn ip_in(p: &Pattern, ip: Option<IpAddr>) -> bool {
    match (p, ip) {
        (Pattern::Cidr(net), Some(ip)) => net.contains(&ip),
        _ => false,
    }
}

/// A JWT claim at `path` (nested objects), matched as a string or as any element of a list
/// (istiod's list matcher over the claims Istio's authn filter publishes).
fn claim_matches<S: AsRef<str>>(p: &Pattern, jwt: Option<JwtFacts<'_>>, path: &[S]) -> bool {
    let Some(jwt) = jwt else {
        return false;
    };
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut value = jwt.claims.get(first.as_ref());
    for key in rest {
        value = value.and_then(|v| v.get(key.as_ref()));
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => Some(v.to_string()),
        _ => None,
    };
    match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(text)
            .any(|s| str_or_present(p, Some(&s), false)),
        Some(v) => text(v).is_some_and(|s| str_or_present(p, Some(&s), false)),
        None => false,
    }
}

#[cfg(test)]
mod tests;
