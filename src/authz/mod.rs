//! AuthorizationPolicy: compiled policies and their evaluation (pure: no host calls).
//!
//! The shape follows istiod's translation to Envoy's RBAC filter
//! (pilot/pkg/security/authz/model): a rule is an OR of sources, an OR of operations and an
//! AND of conditions; each field is "any value matches, and no not-value matches".

pub(crate) mod index;
pub mod path;
pub mod peer;

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

use crate::http::Request;

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
    /// Envoy's `xff_num_trusted_hops`: how `explain` computes `remote.ip` (the filter reads
    /// the address Envoy computed).
    pub xff_trusted_hops: usize,
    /// Envoy's `use_remote_address`: whether it appended the direct peer to X-Forwarded-For.
    pub use_remote_address: bool,
    /// Which connection facts the policies read, so the host fetches only those.
    pub needs: Needs,
    /// The mesh's trust domain, then its aliases (istiod's trustdomain.Bundle): principals
    /// naming one of them (or `cluster.local`) are compiled for each of them.
    pub trust_domains: Vec<String>,
    /// Path indexes of the lists above, in their order (see [`Authz::index`]).
    pub(crate) indexes: [Option<index::PathIndex>; 5],
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
            use_remote_address: false,
            needs: Needs::default(),
            trust_domains: vec!["cluster.local".to_string()],
            indexes: Default::default(),
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
            Attr::Principal | Attr::Namespace | Attr::ServiceAccount => self.peer = true,
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
    /// The peer certificate's names (`spiffe://...` URI SANs first): principals, and also
    /// `trustDomains`, which istiod compiles to matchers on the principal.
    Principal,
    Namespace,
    ServiceAccount,
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

/// The connection's direct peer: `source.ip` and `ipBlocks`, Envoy RBAC's `direct_remote_ip`
/// (istiod's translation), never an address taken from X-Forwarded-For.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Known(IpAddr),
    /// Not an IP connection (a Unix socket): no `ipBlocks` matches, as in Envoy.
    None,
    /// Envoy replaced the peer with an X-Forwarded-For address and did not append the real
    /// one: nothing may rely on it, so DENY rules that read it match and ALLOW rules do not.
    Hidden,
}

/// What the policies can know about one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub req: &'a Request<'a>,
    /// The normalized path without query.
    pub path: &'a str,
    pub source_ip: Peer,
    /// The client address Envoy derived (`remote.ip`, `remoteIpBlocks`: RBAC's `remote_ip`).
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: Option<u16>,
    pub sni: Option<&'a str>,
    /// The peer certificate's names in Envoy's order ([`peer::peer_names`]), when the
    /// connection is mTLS; a principal matcher matches when one of them does.
    pub peer_names: &'a [String],
    pub jwt: Option<JwtFacts<'a>>,
}

/// What a verified JWT tells the policies.
#[derive(Debug, Clone, Copy)]
pub struct JwtFacts<'a> {
    pub issuer: &'a str,
    /// `sub`; `None` when the token has none, which matches no request principal (Envoy's
    /// metadata matcher on an absent claim), not even istiod's `sub` exact `""`.
    pub subject: Option<&'a str>,
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> JwtFacts<'a> {
    pub fn of(v: &'a crate::jwt::Verified) -> Self {
        Self::from_claims(&v.issuer, &v.claims)
    }

    pub fn from_claims(
        issuer: &'a str,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        JwtFacts {
            issuer,
            subject: claims.get("sub").and_then(serde_json::Value::as_str),
            claims,
        }
    }
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
    /// The ALLOW policy and rule that allowed the request, when one did.
    pub allowed_by: Option<(&'p str, usize)>,
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
        let [deny, allow, audit, dry_deny, dry_allow] = &self.indexes;
        let denied = first_match(&self.deny, deny, f, FAIL_CLOSED_DENY);
        let allowed_by = match denied {
            Some(_) => None,
            None => first_match(&self.allow, allow, f, FAIL_CLOSED_ALLOW),
        };
        let verdict = match denied {
            Some((id, rule)) => Verdict::DeniedBy(id, rule),
            None if self.allow.is_empty() || allowed_by.is_some() => Verdict::Allow,
            None => Verdict::NoAllowMatched,
        };
        // Istio's shadow rules: dry-run DENY and dry-run ALLOW policies each decide alone.
        let dry_run_would_deny = first_match(&self.dry_run_deny, dry_deny, f, FAIL_CLOSED_DENY)
            .is_some()
            || (!self.dry_run_allow.is_empty()
                && first_match(&self.dry_run_allow, dry_allow, f, FAIL_CLOSED_ALLOW).is_none());
        Evaluation {
            verdict,
            allowed_by,
            dry_run_would_deny,
            audited: first_match(&self.audit, audit, f, FAIL_CLOSED_ALLOW),
        }
    }

    /// Indexes the policy lists by the paths their rules name, once every policy is in.
    pub fn index(&mut self) {
        self.indexes = [
            index::PathIndex::build(&self.deny),
            index::PathIndex::build(&self.allow),
            index::PathIndex::build(&self.audit),
            index::PathIndex::build(&self.dry_run_deny),
            index::PathIndex::build(&self.dry_run_allow),
        ];
    }

    /// `source.ip` and `remote.ip` from Envoy's `source.address` (`ip:port`), which is the
    /// address Envoy derived: the direct peer, or with `use_remote_address` and trusted hops
    /// (or without `use_remote_address`) an X-Forwarded-For entry, which Envoy builds with
    /// port 0. Then the direct peer is the entry Envoy appended with `use_remote_address`
    /// (the rightmost; Envoy appends its own address for a loopback peer), and unknown
    /// otherwise.
    pub fn peers(&self, source_address: Option<&str>, req: &Request<'_>) -> (Peer, Option<IpAddr>) {
        let Some(addr) = source_address.and_then(|a| a.parse::<std::net::SocketAddr>().ok()) else {
            return (Peer::None, None);
        };
        if addr.port() != 0 {
            return (Peer::Known(addr.ip()), Some(addr.ip()));
        }
        let appended = self.use_remote_address.then(|| {
            req.header_values("x-forwarded-for")
                .next_back()
                .and_then(|v| v.rsplit(',').next())
                .and_then(|e| e.trim().parse().ok())
        });
        match appended.flatten() {
            Some(ip) => (Peer::Known(ip), Some(addr.ip())),
            None => (Peer::Hidden, Some(addr.ip())),
        }
    }

    /// `remote.ip` as Envoy computes it with `use_remote_address: true` and
    /// `xff_num_trusted_hops: n`, for `explain`, which has no Envoy to ask: the n-th address
    /// from the right of X-Forwarded-For as the client sent it, or the connection peer when n
    /// is 0 or the header is shorter. Envoy has appended the peer to X-Forwarded-For before
    /// filters run, hence `n + 1` here.
    #[cfg(any(test, not(target_arch = "wasm32")))]
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

/// What a check on a hidden peer (`Peer::Hidden`) yields: DENY rules match, so the request
/// is denied; ALLOW rules (and AUDIT, which only logs) do not.
const FAIL_CLOSED_DENY: bool = true;
const FAIL_CLOSED_ALLOW: bool = false;

/// The first policy of `policies` (tried in order, or only those `index` says the path may
/// reach) with a rule matching the request, and that rule.
fn first_match<'p>(
    policies: &'p [Policy],
    index: &Option<index::PathIndex>,
    f: &Facts<'_>,
    hidden_peer_matches: bool,
) -> Option<(&'p str, usize)> {
    let matched = |p: &'p Policy| {
        p.rules
            .iter()
            .position(|r| r.matches(f, hidden_peer_matches))
            .map(|i| (p.id.as_str(), i))
    };
    match index {
        None => policies.iter().find_map(matched),
        Some(ix) => ix
            .candidates(f.path)
            .into_iter()
            .find_map(|i| policies.get(i).and_then(matched)),
    }
}

impl Rule {
    fn matches(&self, f: &Facts<'_>, hidden_peer_matches: bool) -> bool {
        let check = |c: &Check| c.matches(f, hidden_peer_matches);
        let any_of =
            |groups: &[Vec<Check>]| groups.is_empty() || groups.iter().any(|g| g.iter().all(check));
        any_of(&self.from) && any_of(&self.to) && self.when.iter().all(check)
    }
}

impl Check {
    fn matches(&self, f: &Facts<'_>, hidden_peer_matches: bool) -> bool {
        if self.attr == Attr::SourceIp && f.source_ip == Peer::Hidden {
            return hidden_peer_matches;
        }
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
            // Envoy 1.40's RBAC header matcher tries each value of a repeated header on its
            // own (a DENY on `x-role: guest` catches `guest` sent twice, or next to `admin`),
            // and never splits one value at commas.
            Attr::Header(name) => f
                .req
                .header_values(name)
                .any(|v| str_or_present(p, Some(v), false)),
            Attr::Sni => str_or_present(p, f.sni, false),
            Attr::SourceIp => match f.source_ip {
                Peer::Known(ip) => ip_in(p, Some(ip)),
                Peer::None | Peer::Hidden => false,
            },
            Attr::RemoteIp => ip_in(p, f.remote_ip),
            Attr::DestinationIp => ip_in(p, f.destination_ip),
            Attr::DestinationPort => {
                matches!(p, Pattern::Port(port) if f.destination_port == Some(*port))
            }
            // Envoy's `authenticated.principal_name` tries every URI SAN, every DNS SAN and
            // the subject; without a certificate nothing matches.
            Attr::Principal | Attr::Namespace | Attr::ServiceAccount => f
                .peer_names
                .iter()
                .any(|v| str_or_present(p, Some(v), false)),
            Attr::RequestPrincipal => match (p, f.jwt) {
                (Pattern::IssuerSubject(iss, sub), Some(jwt)) => {
                    // An unset side is istiod's `.+`: any non-empty value.
                    let side = |m: &Option<StrPattern>, v: &str| match m {
                        Some(m) => m.matches(v, false),
                        None => !v.is_empty(),
                    };
                    side(iss, jwt.issuer) && jwt.subject.is_some_and(|s| side(sub, s))
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
