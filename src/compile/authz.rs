//! AuthorizationPolicy → [`Authz`]: istiod's validation and its translation to RBAC
//! (pilot/pkg/security/authz/model/{model,generator}.go), kept as tables the engine evaluates.

use std::net::IpAddr;

use super::matching::bounded_regex;
use ipnet::IpNet;

use super::{whole_number, Identity, ProxyKind};
use crate::authz::{Attr, Authz, Check, EscapedSlashes, Pattern, Policy, Rule, StrPattern};
use crate::config::{
    AuthorizationPolicySpec, Condition, Diagnostics, ObjectMeta, Operation, PolicyTargetReference,
    Security, Source, WorkloadSelector,
};

/// Istio's annotation for a policy that is evaluated but not enforced.
const DRY_RUN: &str = "istio.io/dry-run";

/// Whether a security policy written in `meta.namespace` applies to this proxy: policies in
/// the root namespace apply to every workload, others to their own namespace; a selector or
/// target must also match. A proxy without Istio metadata takes every policy.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn policy_applies(
    meta: &ObjectMeta,
    selector: Option<&WorkloadSelector>,
    targets: &[&PolicyTargetReference],
    root_namespace: &str,
    identity: &dyn Identity,
) -> bool {
    if !identity.known() {
        return true;
    }
    let own = identity.namespace();
    if meta.namespace != root_namespace && own.as_deref() != Some(meta.namespace.as_str()) {
        return false;
    }
    if let Some(sel) = selector {
        return sel
            .match_labels
            .iter()
            .all(|(k, v)| identity.label(k).as_deref() == Some(v.as_str()));
    }
    if !targets.is_empty() {
        // Gateways carry their Gateway's name as a label (Gateway API and Istio gateways).
        let name = identity
            .label("gateway.networking.k8s.io/gateway-name")
            .or_else(|| identity.label("istio.io/gateway-name"));
        return targets
            .iter()
            .any(|t| t.kind == "Gateway" && name.as_deref() == Some(t.name.as_str()));
    }
    true
}

/// Compiles the plugin's `security` settings shared by every policy.
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn settings(sec: &Security, identity: &dyn Identity, diags: &mut Diagnostics) -> Authz {
    let escaped_slashes = match sec.escaped_slashes.to_ascii_uppercase().as_str() {
        "REJECT" => EscapedSlashes::Reject,
        "KEEP" => EscapedSlashes::Keep,
        "UNESCAPE" => EscapedSlashes::Unescape,
        other => {
            diags.error(
                "security.escapedSlashes",
                format!("{other:?} is not one of REJECT, KEEP, UNESCAPE"),
            );
            EscapedSlashes::Reject
        }
    };
    let hops = whole_number(
        sec.xff_num_trusted_hops,
        0,
        64,
        &"security.xffNumTrustedHops",
        diags,
    );
    if sec.trust_domain.is_empty() {
        diags.error("security.trustDomain", "must not be empty");
    }
    // istiod's trustdomain.NewBundle: the trust domain first, then its aliases.
    let mut trust_domains = vec![sec.trust_domain.clone()];
    for alias in &sec.trust_domain_aliases {
        if !trust_domains.contains(alias) {
            trust_domains.push(alias.clone());
        }
    }
    Authz {
        escaped_slashes,
        trust_domains,
        xff_trusted_hops: hops.unwrap_or(0) as usize,
        use_remote_address: sec
            .use_remote_address
            .unwrap_or(identity.kind() == ProxyKind::Gateway),
        ..Authz::default()
    }
}

/// Adds one AuthorizationPolicy to `authz`; problems are reported at `path` (`resources[i]`).
#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn compile_policy(
    spec: &AuthorizationPolicySpec,
    meta: &ObjectMeta,
    path: &str,
    applies: bool,
    authz: &mut Authz,
    diags: &mut Diagnostics,
) {
    let spath = format!("{path}.spec");
    let action = spec.action.as_deref().unwrap_or("ALLOW");
    match (action, &spec.provider) {
        ("CUSTOM", _) => {
            diags.error(
                format!("{spath}.action"),
                "CUSTOM needs an external authorizer (an extension provider with ext_authz), \
                 which meshrules does not run; use ALLOW, DENY or AUDIT",
            );
            return;
        }
        ("ALLOW" | "DENY" | "AUDIT", Some(_)) => {
            diags.error(
                format!("{spath}.provider"),
                "provider is only for action CUSTOM",
            );
            return;
        }
        ("ALLOW" | "DENY" | "AUDIT", None) => {}
        (other, _) => {
            diags.error(
                format!("{spath}.action"),
                format!("{other:?} is not one of ALLOW, DENY, AUDIT, CUSTOM"),
            );
            return;
        }
    }
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        diags.error(
            format!("{spath}.selector"),
            "only one of selector, targetRef or targetRefs may be set",
        );
    }
    let ns = meta.namespace.as_str();
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().flatten().enumerate() {
        let rpath = format!("{spath}.rules[{i}]");
        let mut rule = Rule::default();
        for (j, from) in r.from.iter().enumerate() {
            let fpath = format!("{rpath}.from[{j}].source");
            match &from.source {
                Some(s) => rule
                    .from
                    .push(source(s, ns, &authz.trust_domains, &fpath, diags)),
                None => diags.error(fpath, "source is required"),
            }
        }
        for (j, to) in r.to.iter().enumerate() {
            let opath = format!("{rpath}.to[{j}].operation");
            match &to.operation {
                Some(o) => rule.to.push(operation(o, &opath, diags)),
                None => diags.error(opath, "operation is required"),
            }
        }
        for (j, c) in r.when.iter().enumerate() {
            let cpath = format!("{rpath}.when[{j}]");
            if let Some(check) = condition(c, ns, &authz.trust_domains, &cpath, diags) {
                rule.when.push(check);
            }
        }
        rules.push(rule);
    }
    if !applies {
        return;
    }
    for check in rules
        .iter()
        .flat_map(|r| r.from.iter().chain(&r.to).flatten().chain(&r.when))
    {
        authz.needs.add(&check.attr);
    }
    let policy = Policy {
        id: format!("{ns}/{}", meta.name),
        rules,
    };
    let dry_run = meta
        .annotations
        .get(DRY_RUN)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let list = match (action, dry_run) {
        ("DENY", false) => &mut authz.deny,
        ("DENY", true) => &mut authz.dry_run_deny,
        ("ALLOW", false) => &mut authz.allow,
        ("ALLOW", true) => &mut authz.dry_run_allow,
        _ => &mut authz.audit,
    };
    list.push(policy);
}

/// One field: its values and not-values compiled with the field's pattern; `None` when both
/// are empty (istiod skips the field).
fn field(
    spec: FieldSpec<'_>,
    not_name: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<Check> {
    let (attr, values, not_values, name, pattern) = spec;
    if values.is_empty() && not_values.is_empty() {
        return None;
    }
    let mut compile = |list: &[String], key: &str| {
        let mut out = Vec::new();
        for (i, v) in list.iter().enumerate() {
            match pattern(v) {
                Ok(p) => out.push(p),
                Err(e) => diags.error(format!("{path}.{key}[{i}]"), e),
            }
        }
        out
    };
    let values = compile(values, name);
    let not_values = compile(not_values, not_name);
    Some(Check {
        attr,
        values,
        not_values,
    })
}

fn source(
    s: &Source,
    ns: &str,
    trust_domains: &[String],
    path: &str,
    diags: &mut Diagnostics,
) -> Vec<Check> {
    if (!s.service_accounts.is_empty() || !s.not_service_accounts.is_empty())
        && (!s.principals.is_empty()
            || !s.not_principals.is_empty()
            || !s.namespaces.is_empty()
            || !s.not_namespaces.is_empty())
    {
        diags.error(
            path,
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    let namespace = |v: &str| namespace_regex(v);
    let account = |v: &str| service_account_regex(ns, v);
    let principals = with_aliases(&s.principals, trust_domains);
    let not_principals = with_aliases(&s.not_principals, trust_domains);
    let fields: [FieldSpec<'_>; 7] = [
        (
            Attr::Principal,
            &principals,
            &not_principals,
            "principals",
            &principal,
        ),
        (
            Attr::RequestPrincipal,
            &s.request_principals,
            &s.not_request_principals,
            "requestPrincipals",
            &request_principal,
        ),
        (
            Attr::Namespace,
            &s.namespaces,
            &s.not_namespaces,
            "namespaces",
            &namespace,
        ),
        (
            Attr::ServiceAccount,
            &s.service_accounts,
            &s.not_service_accounts,
            "serviceAccounts",
            &account,
        ),
        (
            Attr::SourceIp,
            &s.ip_blocks,
            &s.not_ip_blocks,
            "ipBlocks",
            &cidr,
        ),
        (
            Attr::RemoteIp,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            "remoteIpBlocks",
            &cidr,
        ),
        (
            Attr::Principal,
            &s.trust_domains,
            &s.not_trust_domains,
            "trustDomains",
            &trust_domain,
        ),
    ];
    let checks = fields_to_checks(fields, path, diags);
    if checks.is_empty() {
        diags.error(path, "source must set at least one field");
    }
    checks
}

fn operation(o: &Operation, path: &str, diags: &mut Diagnostics) -> Vec<Check> {
    let host = |v: &str| Ok(header_pattern(v));
    let method = |v: &str| Ok(header_pattern(v));
    let fields: [FieldSpec<'_>; 4] = [
        (Attr::Host, &o.hosts, &o.not_hosts, "hosts", &host),
        (Attr::Method, &o.methods, &o.not_methods, "methods", &method),
        (Attr::Path, &o.paths, &o.not_paths, "paths", &path_pattern),
        (
            Attr::DestinationPort,
            &o.ports,
            &o.not_ports,
            "ports",
            &port,
        ),
    ];
    let checks = fields_to_checks(fields, path, diags);
    if checks.is_empty() {
        diags.error(path, "operation must set at least one field");
    }
    checks
}

type FieldSpec<'a> = (
    Attr,
    &'a [String],
    &'a [String],
    &'a str,
    &'a dyn Fn(&str) -> Result<Pattern, String>,
);

fn fields_to_checks<const N: usize>(
    fields: [FieldSpec<'_>; N],
    path: &str,
    diags: &mut Diagnostics,
) -> Vec<Check> {
    fields
        .into_iter()
        .filter_map(|(attr, values, not_values, name, pattern)| {
            let not_name = format!("not{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
            field(
                (attr, values, not_values, name, pattern),
                &not_name,
                path,
                diags,
            )
        })
        .collect()
}

/// Turns one condition value into the pattern it matches with.
type ValueParser<'a> = dyn Fn(&str) -> Result<Pattern, String> + 'a;

/// A `when` condition; istiod's attribute list (pilot/pkg/security/authz/model/model.go).
fn condition(
    c: &Condition,
    ns: &str,
    trust_domains: &[String],
    path: &str,
    diags: &mut Diagnostics,
) -> Option<Check> {
    let key = c.key.as_str();
    let plain = |v: &str| Ok(Pattern::Str(StrPattern::istio(v, "")));
    let header = |v: &str| Ok(header_pattern(v));
    let namespace = |v: &str| namespace_regex(v);
    let account = |v: &str| service_account_regex(ns, v);
    let (attr, pattern): (Attr, &ValueParser) = match key {
        "source.ip" => (Attr::SourceIp, &cidr),
        "remote.ip" => (Attr::RemoteIp, &cidr),
        "destination.ip" => (Attr::DestinationIp, &cidr),
        "destination.port" => (Attr::DestinationPort, &port),
        "connection.sni" => (Attr::Sni, &plain),
        "source.namespace" => (Attr::Namespace, &namespace),
        "source.principal" => (Attr::Principal, &principal),
        "source.serviceAccount" => (Attr::ServiceAccount, &account),
        "source.trustDomain" => (Attr::Principal, &trust_domain),
        "request.auth.principal" => (Attr::RequestPrincipal, &request_principal),
        "request.auth.audiences" => (Attr::Audiences, &plain),
        "request.auth.presenter" => (Attr::Presenter, &plain),
        _ if key.starts_with("request.headers") => {
            match bracketed(&key["request.headers".len()..]) {
                Some(names) if names.len() == 1 && !names[0].is_empty() => {
                    (Attr::Header(names[0].to_ascii_lowercase()), &header)
                }
                _ => {
                    diags.error(
                        format!("{path}.key"),
                        format!("{key:?} must name one header: request.headers[<name>]"),
                    );
                    return None;
                }
            }
        }
        _ if key.starts_with("request.auth.claims") => {
            match bracketed(&key["request.auth.claims".len()..]) {
                Some(names) if !names.is_empty() && names.iter().all(|n| !n.is_empty()) => {
                    (Attr::Claim(names), &plain)
                }
                _ => {
                    diags.error(
                        format!("{path}.key"),
                        format!(
                            "{key:?} must name a claim: request.auth.claims[<name>] (nested: [a][b])"
                        ),
                    );
                    return None;
                }
            }
        }
        _ if key.starts_with("experimental.envoy.filters.") => {
            diags.error(
                format!("{path}.key"),
                format!(
                    "{key:?}: istiod matches this on Envoy's dynamic metadata, which meshrules \
                     does not evaluate: the Wasm property API gives a metadata value's bytes \
                     without its type, so a number or boolean could not be told from the \
                     string Envoy's metadata matcher requires"
                ),
            );
            return None;
        }
        _ => {
            diags.error(
                format!("{path}.key"),
                format!("unknown attribute {key:?} (see Istio's authorization policy conditions)"),
            );
            return None;
        }
    };
    let (values, not_values) = if key == "source.principal" {
        (
            with_aliases(&c.values, trust_domains),
            with_aliases(&c.not_values, trust_domains),
        )
    } else {
        (c.values.clone(), c.not_values.clone())
    };
    let check = field(
        (attr, &values, &not_values, "values", pattern),
        "notValues",
        path,
        diags,
    );
    if check.is_none() {
        diags.error(path, "at least one of values or notValues must be set");
    }
    check
}

/// `[a][b]` → `["a", "b"]`.
fn bracketed(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        out.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    Some(out)
}

/// istiod's HeaderMatcher / HostMatcher: `*` is "present", else Istio's string match.
fn header_pattern(v: &str) -> Pattern {
    if v == "*" {
        Pattern::Present
    } else {
        Pattern::Str(StrPattern::istio(v, ""))
    }
}

fn cidr(v: &str) -> Result<Pattern, String> {
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(Pattern::Cidr(net));
    }
    match v.parse::<IpAddr>() {
        Ok(ip) => Ok(Pattern::Cidr(IpNet::from(ip))),
        Err(_) => Err(format!("{v:?} is not an IP address or CIDR block")),
    }
}

fn port(v: &str) -> Result<Pattern, String> {
    v.parse::<u16>()
        .map(Pattern::Port)
        .map_err(|_| format!("{v:?} is not a port (0-65535)"))
}

/// istiod's requestPrincipalGenerator: `iss/sub` split at the last `/`, each side matched
/// on its own, `*` forms as in its code.
fn request_principal(v: &str) -> Result<Pattern, String> {
    let (iss, sub) = match v.rfind('/') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let exact = |s: &str| Some(StrPattern::Exact(s.to_string()));
    let (mi, ms) = if v == "*" {
        (None, None)
    } else if let Some(rest) = v.strip_prefix('*') {
        match sub {
            Some(sub) => (
                if iss == "*" {
                    None
                } else {
                    Some(StrPattern::Suffix(iss[1..].to_string()))
                },
                exact(sub),
            ),
            None => (None, Some(StrPattern::Suffix(rest.to_string()))),
        }
    } else if let Some(stripped) = v.strip_suffix('*') {
        match sub {
            Some(sub) => (
                exact(iss),
                if sub == "*" {
                    None
                } else {
                    Some(StrPattern::Prefix(sub[..sub.len() - 1].to_string()))
                },
            ),
            None => (Some(StrPattern::Prefix(stripped.to_string())), None),
        }
    } else {
        (
            exact(iss),
            Some(StrPattern::Exact(sub.unwrap_or("").to_string())),
        )
    };
    Ok(Pattern::IssuerSubject(mi, ms))
}

/// Bounded in size like the routes' regexes; a policy's are not charged to their total,
/// which bounds the regexes users write.
fn anchored(re: &str) -> Result<Pattern, String> {
    bounded_regex(&format!("^(?:{re})$"), usize::MAX)
        .map(|(r, _)| Pattern::Regex(r))
        .map_err(|e| format!("cannot be matched: {e}"))
}

fn principal(v: &str) -> Result<Pattern, String> {
    Ok(Pattern::Str(StrPattern::istio(v, "spiffe://")))
}

/// istiod's trust domain matcher on the principal: the prefix `spiffe://<td>/` (so a
/// path-less `spiffe://td` SAN has no trust domain), `*` forms as regexes within one segment.
fn trust_domain(v: &str) -> Result<Pattern, String> {
    if v.contains('/') {
        return Err(format!("{v:?} is not a trust domain (it contains '/')"));
    }
    if v == "*" {
        anchored("spiffe://[^/]+/.*")
    } else if let Some(s) = v.strip_prefix('*') {
        anchored(&format!("spiffe://[^/]*{}/.*", regex::escape(s)))
    } else if let Some(p) = v.strip_suffix('*') {
        anchored(&format!("spiffe://{}[^/]*/.*", regex::escape(p)))
    } else {
        Ok(Pattern::Str(StrPattern::Prefix(format!("spiffe://{v}/"))))
    }
}

/// istiod's Bundle.ReplaceTrustDomainAliases (pilot/pkg/security/trustdomain): a principal
/// `<td>/ns/<ns>/sa/<sa>` whose trust domain is one of `trust_domains` (or `cluster.local`,
/// which stands for the local one; `*x` matches by suffix) is expanded to the same principal
/// in each of them, in their order, kept as written where its trust domain matches. Others
/// (`*`, `*/ns/..`, foreign trust domains, not five segments) stay as they are.
fn with_aliases(principals: &[String], trust_domains: &[String]) -> Vec<String> {
    let matches = |td: &str, pattern: &str| match pattern.strip_prefix('*') {
        Some(suffix) => td.ends_with(suffix),
        None => td == pattern,
    };
    let mut out = Vec::new();
    for p in principals {
        let parts: Vec<&str> = p.split('/').collect();
        let td = parts[0];
        let enforced = parts.len() == 5 && td != "*";
        if !enforced || !(td == "cluster.local" || trust_domains.iter().any(|t| matches(t, td))) {
            out.push(p.clone());
            continue;
        }
        let mut expanded: Vec<String> = Vec::new();
        for t in trust_domains {
            let principal = if matches(t, td) {
                p.clone()
            } else {
                format!("{t}/{}", parts[1..].join("/"))
            };
            if !expanded.contains(&principal) {
                expanded.push(principal);
            }
        }
        out.extend(expanded);
    }
    out
}

/// istiod's srcNamespaceGenerator: regex `.*/ns/<ns>/.*` over the principal, `*` as `.*`,
/// the rest quoted (`rule[0]` is literal: golden simple-policy-td-aliases-out.yaml).
fn namespace_regex(v: &str) -> Result<Pattern, String> {
    let quoted: Vec<String> = v.split('*').map(regex::escape).collect();
    anchored(&format!(".*/ns/{}/.*", quoted.join(".*")))
}

/// istiod's serviceAccountRegex: `<ns>/<sa>` or `<sa>` in the policy's namespace.
fn service_account_regex(policy_ns: &str, v: &str) -> Result<Pattern, String> {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    // Quoted: a name is literal, and `x)|(.*` must not close the anchoring group.
    let (ns, sa) = (regex::escape(ns), regex::escape(sa));
    anchored(&format!("spiffe://.+/ns/{ns}/(.+/|)sa/{sa}(/.+)?"))
}

/// Envoy's uri_template characters: `{*}` one segment, `{**}` any rest (may be empty).
const SEGMENT: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]+";
const SEGMENTS: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*";

/// A path: Istio's string match, or a `{*}`/`{**}` template (istiod's PathTemplateMatcher).
fn path_pattern(v: &str) -> Result<Pattern, String> {
    if !v.contains("{*}") && !v.contains("{**}") {
        return Ok(Pattern::Str(StrPattern::istio(v, "")));
    }
    if !v.starts_with('/') {
        return Err(format!("{v:?}: a path template must start with '/'"));
    }
    let mut re = String::new();
    let mut rest = v;
    while let Some(open) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..open]));
        let after = &rest[open..];
        if let Some(r) = after.strip_prefix("{**}") {
            if r.contains('{') {
                return Err(format!("{v:?}: {{**}} must be the last operator"));
            }
            re.push_str(SEGMENTS);
            rest = r;
        } else if let Some(r) = after.strip_prefix("{*}") {
            re.push_str(SEGMENT);
            rest = r;
        } else {
            return Err(format!(
                "{v:?}: only {{*}} and {{**}} are allowed in a path template"
            ));
        }
    }
    re.push_str(&regex::escape(rest));
    anchored(&re)
}
