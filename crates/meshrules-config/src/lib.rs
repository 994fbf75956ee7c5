//! The plugin configuration: Istio resources as `kubectl apply` takes them, plus meshrules'
//! own `routing` settings. Parsing here is structural (serde); meaning is checked in `compile`.
//! A crate of its own so the release build can optimise it for size (see Cargo.toml).

pub mod duration;
pub mod istio;
pub mod json;
mod path_de;
pub mod ratelimit;
pub mod security;
mod traffic_policy;

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub use istio::*;
pub use path_de::Raw;
use path_de::Tree;
pub use security::*;

/// One problem with the configuration, named by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    /// Every problem and warning is made here, so this is where long values are cut: a refused
    /// 10 MB value must not become a 10 MB log line.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: cut(path.into(), PATH_MAX),
            message: cut_quoted(message.into()),
        }
    }
}

/// Longest quoted value (`"..."` or `` `...` ``) a message shows in full.
const QUOTED_MAX: usize = 100;
/// Longest path shown in full (paths carry map keys such as header names).
const PATH_MAX: usize = 300;

/// `text` cut to `max` bytes (at a character boundary) plus `…(N bytes)`, when longer.
fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let head = &text[..text.floor_char_boundary(max)];
    format!("{head}…({} bytes)", text.len())
}

/// Cuts each quoted value of `message` longer than [`QUOTED_MAX`].
fn cut_quoted(message: String) -> String {
    if message.len() <= QUOTED_MAX {
        return message;
    }
    let mut out = String::new();
    let mut rest = message.as_str();
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open];
        out.push_str(&rest[..=open]);
        let body = &rest[open + 1..];
        let end = closing_quote(body, quote).unwrap_or(body.len());
        let value = &body[..end];
        if value.len() > QUOTED_MAX {
            // Not inside an escape sequence: a cut `\"` would read as an escaped quote.
            let head = value[..value.floor_char_boundary(QUOTED_MAX)].trim_end_matches('\\');
            out.push_str(head);
            out.push(char::from(quote));
            out.push_str(&format!("…({} bytes)", value.len()));
        } else {
            out.push_str(value);
            out.push(char::from(quote));
        }
        rest = body.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// Where a quoted value ends: Debug-formatted strings escape `"` with `\`; backticks do not nest.
fn closing_quote(body: &str, quote: u8) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in body.bytes().enumerate() {
        match b {
            b'\\' if quote == b'"' && !escaped => escaped = true,
            b if b == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Problems and warnings found while reading a configuration; every problem is kept, so the
/// user sees all of them at once.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// Compiled size of the regexes so far, which compile bounds as a whole.
    pub regex_bytes: usize,
}

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError::new(path, message));
    }

    /// Reads one `http` route of a VirtualService; routes are parsed one by one so that a bad
    /// route drops only itself. Not generic, so its serde code is built in this crate, for size.
    pub fn http_route(&mut self, entry: HttpRouteEntry, path: &str) -> Option<HttpRoute> {
        self.found(entry.0, path)
    }

    /// Deserializes `value` as `T`, reporting a failure at `path` plus the path inside `value`.
    fn parse<T: DeserializeOwned>(&mut self, value: Raw, path: &str) -> Option<T> {
        self.found(path_de::from_value::<T>(value.0), path)
    }

    /// [`Diagnostics::parse`] for a value as the configuration reader read it.
    fn parse_tree<T: DeserializeOwned>(&mut self, tree: Tree<'_>, path: &str) -> Option<T> {
        self.found(path_de::from_tree::<T>(tree), path)
    }

    /// The value read, or its failure reported at `path` plus the path inside the value.
    fn found<T>(&mut self, read: Result<T, path_de::PathError>, path: &str) -> Option<T> {
        match read {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(join_path(path, &e.path()), e.message());
                None
            }
        }
    }
}

/// `inner` (a path in serde_path_to_error's notation, `.` for the value itself) inside `path`.
fn join_path(path: &str, inner: &str) -> String {
    if inner == "." {
        path.to_string()
    } else if path.is_empty() {
        inner.to_string()
    } else if inner.starts_with('[') {
        format!("{path}{inner}")
    } else {
        format!("{path}.{inner}")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPluginConfig {
    /// Required: a configuration that lost its rules on the way must not pass as "no rules".
    resources: Option<Vec<Raw>>,
    #[serde(default)]
    routing: Option<Raw>,
    #[serde(default)]
    security: Option<Raw>,
    /// The namespace of resources without `metadata.namespace`.
    #[serde(default, rename = "defaultNamespace")]
    default_namespace: Option<Raw>,
    #[serde(default, rename = "rateLimits")]
    rate_limits: Option<Vec<Raw>>,
}

/// meshrules' own settings: how a routing decision is handed to Envoy's router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Routing {
    /// Request header carrying the chosen cluster; Envoy's route uses `cluster_header`.
    pub cluster_header: String,
    /// Cluster name template with `{host}`, `{subset}` and `{port}`.
    pub cluster_name: String,
    /// Kubernetes cluster domain used to expand short host names.
    pub cluster_domain: String,
    /// Beyond Istio: keep a user on one side of a weighted split.
    pub sticky_split: Option<StickySplit>,
    /// `true` when the Envoy route that forwards on the cluster header already carries Istio's
    /// route defaults (`timeout: 0s` and Istio's default retry policy): the filter then sends
    /// router headers only where a VirtualService route differs from them.
    pub route_has_istio_defaults: bool,
    /// The ports of Kubernetes Services by FQDN (`reviews.bookinfo.svc.cluster.local:
    /// [9080]`): a destination without a port whose service has exactly one takes it, as
    /// istiod's `GetDestinationCluster` does.
    pub service_ports: BTreeMap<String, Vec<f64>>,
    /// The port in the cluster name of a destination without one (and not settled by
    /// `servicePorts`): `LISTENER`, the port the request arrived on (Envoy's
    /// `destination.port`: istiod's listener port on a sidecar), `EMPTY` (rendered as empty
    /// text), or `REFUSE` (a load error). Default: `LISTENER` on an Istio sidecar, `REFUSE` on
    /// an Istio gateway, `EMPTY` on a plain Envoy.
    pub portless_destinations: Option<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            cluster_header: "x-meshrules-cluster".to_string(),
            cluster_name: "outbound|{port}|{subset}|{host}".to_string(),
            cluster_domain: "cluster.local".to_string(),
            sticky_split: None,
            route_has_istio_defaults: false,
            service_ports: BTreeMap::new(),
            portless_destinations: None,
        }
    }
}

/// meshrules' own settings for AuthorizationPolicy and RequestAuthentication: the facts a
/// sidecar learns from istiod's mesh config, which a plain Envoy does not have.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Security {
    /// Istio's root namespace: policies there apply to every workload.
    pub root_namespace: String,
    /// Proxies in front of this Envoy whose `X-Forwarded-For` entries are trusted, for
    /// `remote.ip` / `remoteIpBlocks` (Envoy's `xff_num_trusted_hops`).
    pub xff_num_trusted_hops: f64,
    /// Envoy's `use_remote_address` on this listener. When Envoy took the client address from
    /// X-Forwarded-For, `ipBlocks` / `source.ip` (the direct peer) are read from the entry
    /// Envoy appended, which it does only with `use_remote_address: true`. Default: `true` on
    /// an Istio gateway (istiod sets it there), `false` elsewhere (then such a peer is
    /// unknown and policies that read it fail closed).
    pub use_remote_address: Option<bool>,
    /// What a path containing `%2F` or `%5C` (either case) gets: `REJECT` (400, the default),
    /// `KEEP` (matched and forwarded encoded) or `UNESCAPE` (decoded to `/` before matching).
    /// A raw `\` is always read as `/`, as Envoy's `normalize_path` does.
    pub escaped_slashes: String,
    /// Envoy cluster that fetches a `jwksUri`, a template of `{host}` and `{port}`.
    pub jwks_cluster: String,
    /// How long fetched JWKS are used before they are fetched again.
    pub jwks_cache_duration: String,
    /// Allowed clock difference for `exp` and `nbf` (Envoy's default is 60 s).
    pub clock_skew: String,
    /// Verified tokens remembered per worker, so repeated tokens skip signature checks.
    pub token_cache_size: f64,
    /// Who checks JWT signatures: `envoy` (Envoy's `verify_signature` foreign function for
    /// RS* and ES* where Envoy has it, the filter for the rest) or `wasm` (the filter alone).
    pub signature_verifier: String,
    /// The mesh's trust domain (meshConfig `trustDomain`): principals in `cluster.local`
    /// stand for it, as in istiod.
    pub trust_domain: String,
    /// meshConfig `trustDomainAliases`: principals naming the trust domain or an alias are
    /// matched in every one of them, as istiod expands them.
    pub trust_domain_aliases: Vec<String>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            root_namespace: "istio-system".to_string(),
            xff_num_trusted_hops: 0.0,
            use_remote_address: None,
            escaped_slashes: "REJECT".to_string(),
            jwks_cluster: "outbound|{port}||{host}".to_string(),
            jwks_cache_duration: "300s".to_string(),
            clock_skew: "60s".to_string(),
            token_cache_size: 1000.0,
            signature_verifier: "envoy".to_string(),
            trust_domain: "cluster.local".to_string(),
            trust_domain_aliases: Vec::new(),
        }
    }
}

/// Where the key for a sticky weighted split comes from: one of a header or a cookie.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySplit {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

/// `metadata` of a Kubernetes object; fields other than these (uid, labels, ...) are accepted
/// and ignored, as output of `kubectl get -o yaml` carries them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Read only to refuse what Kubernetes refuses (labels that are not a map of strings).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawResource {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    /// Taken out of the resource's tree before the rest is read (and read into its kind's
    /// type); named here so that an unknown field's message lists it.
    #[serde(default)]
    #[allow(dead_code)]
    spec: Option<serde::de::IgnoredAny>,
    /// Accepted so that `kubectl get -o yaml` output loads; never read.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde::de::IgnoredAny>,
}

#[derive(Debug)]
pub enum Spec {
    VirtualService(VirtualServiceSpec),
    DestinationRule(DestinationRuleSpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
    RequestAuthentication(RequestAuthenticationSpec),
}

/// One Istio object from `resources`, with the JSON path it was read from.
#[derive(Debug)]
pub struct Resource {
    pub path: String,
    pub metadata: ObjectMeta,
    pub spec: Spec,
}

#[derive(Debug, Default)]
pub struct PluginConfig {
    pub resources: Vec<Resource>,
    pub routing: Routing,
    pub security: Security,
    pub rate_limits: Vec<ratelimit::RateLimitSpec>,
}

/// Where a resource without `metadata.namespace` is, unless `defaultNamespace` says otherwise:
/// where `kubectl apply` without `-n` puts it.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A configuration number in a message, as Rust prints an `f64` (`90`, `90.5`, `-0`), except
/// where JSON prints it with an exponent (`1e-7`, `1e+300`) and Rust with every digit.
/// Formatting with `{v}` links core's float printing, 20 KB of the module, for a few error
/// messages; JSON's is linked anyway.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        // Exact: a whole f64 below 2^53 is an i64, and Rust prints it so.
        let sign = if v == 0.0 && v.is_sign_negative() {
            "-"
        } else {
            ""
        };
        return format!("{sign}{}", v as i64);
    }
    match serde_json::Number::from_f64(v) {
        // Shortest digits, as Rust's; JSON marks a whole number with `.0`, Rust does not.
        Some(n) => {
            let text = n.to_string();
            match text.strip_suffix(".0") {
                Some(whole) => whole.to_string(),
                None => text,
            }
        }
        None => "NaN".to_string(),
    }
}

/// A DNS-1123 label: 1 to 63 letters, digits and `-`, starting and ending with a letter or
/// digit. Kubernetes wants lower case (namespaces); Istio's host labels take either case.
pub fn dns1123_label(label: &str, any_case: bool) -> bool {
    let alnum =
        |b: u8| b.is_ascii_digit() || b.is_ascii_lowercase() || any_case && b.is_ascii_uppercase();
    let b = label.as_bytes();
    matches!((b.first(), b.last()), (Some(&f), Some(&l)) if alnum(f) && alnum(l))
        && b.len() <= 63
        && b.iter().all(|&c| c == b'-' || alnum(c))
}

const NETWORKING_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const SECURITY_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// What to give for a filter without rules, said wherever a configuration has none.
const NO_RULES: &str = "give {\"resources\": []} to run the filter with no rules";

/// Largest configuration read, in bytes. The Wasm VM has about 1 GiB, and a parsed
/// configuration takes several times its text: beyond this it cannot be loaded safely.
pub const MAX_CONFIG_BYTES: usize = 32 * 1024 * 1024;

/// Reads the plugin configuration JSON. Resources that fail to parse are reported and skipped,
/// so that the problems of every resource are listed together.
pub fn parse(json: &[u8], diags: &mut Diagnostics) -> PluginConfig {
    if json.iter().all(u8::is_ascii_whitespace) {
        diags.error("$", format!("the configuration is empty; {NO_RULES}"));
        return PluginConfig::default();
    }
    if json.len() > MAX_CONFIG_BYTES {
        diags.error(
            "$",
            format!(
                "the configuration is {} bytes, over the limit of {MAX_CONFIG_BYTES} bytes",
                json.len()
            ),
        );
        return PluginConfig::default();
    }
    // Each resource is read into its types as soon as its text is read; its problems are
    // told after those of the top-level members, as if it had been read after them.
    let mut read = Vec::new();
    let mut resource_diags = Diagnostics::default();
    let mut each = |v: Tree<'_>| {
        let path = format!("resources[{}]", read.len());
        let res = parse_resource(v, &path, &mut resource_diags);
        read.push((path, res));
    };
    let tree = match json::parse_config(json, &mut each) {
        Ok(v) => v,
        Err(e) => {
            diags.errors.push(e);
            return PluginConfig::default();
        }
    };
    let Some(raw) = diags.parse_tree::<RawPluginConfig>(tree, "") else {
        return PluginConfig::default();
    };
    let routing = match raw.routing {
        Some(v) => diags.parse::<Routing>(v, "routing").unwrap_or_default(),
        None => Routing::default(),
    };
    let security = match raw.security {
        Some(v) => diags.parse::<Security>(v, "security").unwrap_or_default(),
        None => Security::default(),
    };
    let default_namespace = match raw.default_namespace {
        None => None,
        // Read by hand: a serde parse of a String here would cost the module kilobytes.
        Some(Raw(Value::String(ns))) if ns.is_empty() || dns1123_label(&ns, false) => Some(ns),
        Some(Raw(v)) => {
            diags.error(
                "defaultNamespace",
                format!("{v} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63), nor \"\" for none"),
            );
            None
        }
    };
    if raw.resources.is_none() {
        diags.error("resources", format!("is missing; {NO_RULES}"));
    }
    if read.is_empty() && diags.errors.is_empty() {
        diags.warn("resources", "no resources: every request passes untouched");
    }
    diags.errors.append(&mut resource_diags.errors);
    diags.warnings.append(&mut resource_diags.warnings);
    let resources = read
        .into_iter()
        .filter_map(|(path, res)| {
            let mut res = res?;
            if res.metadata.namespace.is_empty() {
                // As `kubectl apply` fills it in; said when the user did not choose it.
                match &default_namespace {
                    Some(ns) => res.metadata.namespace.clone_from(ns),
                    None => {
                        diags.warn(
                            format!("{path}.metadata.namespace"),
                            format!(
                                "not set: the resource is in namespace {DEFAULT_NAMESPACE:?}, where kubectl \
                                 apply puts it (a short host such as reviews is reviews.{DEFAULT_NAMESPACE}.svc.{}); \
                                 set it, or defaultNamespace for every resource without one",
                                routing.cluster_domain
                            ),
                        );
                        res.metadata.namespace = DEFAULT_NAMESPACE.to_string();
                    }
                }
            }
            Some(res)
        })
        .collect();
    let rate_limits = raw
        .rate_limits
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| diags.parse(v, &format!("rateLimits[{i}]")))
        .collect();
    PluginConfig {
        resources,
        routing,
        security,
        rate_limits,
    }
}

fn parse_resource(mut tree: Tree<'_>, path: &str, diags: &mut Diagnostics) -> Option<Resource> {
    // The spec is read by itself once the kind is known, from the tree as it is.
    let spec = match &mut tree {
        Tree::Object(members) => members
            .iter()
            .position(|(name, _)| name == "spec")
            .map(|at| members.remove(at).1),
        _ => None,
    };
    let raw: RawResource = diags.parse_tree(tree, path)?;
    let spec = spec.unwrap_or(Tree::Null);
    let spec_path = format!("{path}.spec");
    let versions: &[&str] = match raw.kind.as_str() {
        "VirtualService" | "DestinationRule" => &NETWORKING_VERSIONS,
        "AuthorizationPolicy" | "RequestAuthentication" => &SECURITY_VERSIONS,
        other => {
            diags.error(
                format!("{path}.kind"),
                format!(
                    "unknown kind {other:?} (expected VirtualService, DestinationRule, \
                     AuthorizationPolicy or RequestAuthentication)"
                ),
            );
            return None;
        }
    };
    if !versions.contains(&raw.api_version.as_str()) {
        diags.error(
            format!("{path}.apiVersion"),
            format!(
                "{:?} is not a supported apiVersion for {} (expected one of {})",
                raw.api_version,
                raw.kind,
                versions.join(", ")
            ),
        );
        return None;
    }
    let spec = match raw.kind.as_str() {
        "VirtualService" => Spec::VirtualService(diags.parse_tree(spec, &spec_path)?),
        "DestinationRule" => Spec::DestinationRule(diags.parse_tree(spec, &spec_path)?),
        "AuthorizationPolicy" => Spec::AuthorizationPolicy(diags.parse_tree(spec, &spec_path)?),
        _ => Spec::RequestAuthentication(diags.parse_tree(spec, &spec_path)?),
    };
    Some(Resource {
        path: path.to_string(),
        metadata: raw.metadata,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_quoted_value_is_cut_to_100_bytes_with_its_length() {
        // 1 MiB here; the 10 MB value is test_config_rejection.py's (real Envoy). Node 20's WASI
        // runner segfaulted at exit after this debug build formatted 10 MB.
        let huge = "a".repeat(1 << 20);
        let e = ConfigError::new("p", format!("bad regex {huge:?}: too big"));
        let expected = format!("bad regex \"{}\"…(1048576 bytes): too big", "a".repeat(100));
        assert_eq!(e.message, expected);
    }

    #[test]
    fn every_quoted_value_is_cut_and_short_ones_are_kept() {
        let long = "b".repeat(150);
        let e = ConfigError::new(
            "p",
            format!("unknown field `{long}`, expected `name` in {:?}", "x\"y"),
        );
        assert_eq!(
            e.message,
            format!(
                "unknown field `{}`…(150 bytes), expected `name` in \"x\\\"y\"",
                "b".repeat(100)
            )
        );
    }

    #[test]
    fn a_cut_never_ends_inside_an_escape_or_a_character() {
        let value = format!("{}\"{}", "c".repeat(99), "é".repeat(100));
        let e = ConfigError::new("p", format!("{value:?}"));
        assert!(
            e.message.starts_with(&format!("\"{}\"…(", "c".repeat(99))),
            "{}",
            e.message
        );
        let e = ConfigError::new("p", format!("{:?}", "é".repeat(100)));
        assert!(e
            .message
            .starts_with(&format!("\"{}\"…(200 bytes)", "é".repeat(50))));
    }

    #[test]
    fn numbers_print_as_rust_prints_them_without_an_exponent() {
        let values = [
            0.0, -0.0, 1.0, -10.0, 90.5, 700.0, 0.1, 1e-5, 123.456, 65535.0,
        ];
        let more = [
            9_007_199_254_740_993.0,
            1e15 + 0.5,
            9.999e15,
            9.5e15,
            1.0 / 3.0,
            -2.5e-3,
        ];
        for v in values.into_iter().chain(more) {
            assert_eq!(number(v), format!("{v}"), "{v:e}");
        }
        assert_eq!(number(1e16 + 2.0), "1.0000000000000002e+16");
        assert_eq!(number(1e300), "1e+300");
        assert_eq!(number(-1.5e37), "-1.5e+37");
        assert_eq!(number(1e-7), "1e-7");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn a_long_path_is_cut() {
        let e = ConfigError::new(format!("headers.{}", "h".repeat(1000)), "m");
        assert_eq!(e.path, format!("headers.{}…(1008 bytes)", "h".repeat(292)));
    }
}
