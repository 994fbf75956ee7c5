//! Reading a DestinationRule `trafficPolicy` with every problem reported, each unknown field
//! with the field probably meant.
//!
//! serde stops at the first problem. A policy is small, so it is read again after each one
//! with the offending member removed, until it reads: a tutorial policy with two misspelt
//! fields gets two lines, not one per attempt.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

use crate::path_de::{self, Segment};
use crate::{
    BackendUtilization, ClientTlsSettings, ConnectionPoolSettings, ConsistentHash, CookieAttribute,
    Diagnostics, Http2KeepAlive, HttpCookie, HttpSettings, LoadBalancerSettings,
    LocalityDistribute, LocalityFailover, LocalityLbSetting, Maglev, OutlierDetection,
    PortSelector, PortTrafficPolicy, ProxyProtocol, RetryBudget, RingHash, TcpKeepalive,
    TcpSettings, TrafficPolicy, TunnelSettings, Warmup, ZoneAwareLbSetting,
};

/// Most problems listed for one policy; a policy with more is not a misspelling.
const MAX_PROBLEMS: usize = 20;

impl Diagnostics {
    /// Reads a `trafficPolicy` at `path`. Every problem is reported; the policy is returned
    /// without the members that had one, so the caller can check the rest. `None` when the
    /// policy is not an object at all.
    pub fn parse_traffic_policy(&mut self, value: &Value, path: &str) -> Option<TrafficPolicy> {
        let mut value = value.clone();
        for _ in 0..MAX_PROBLEMS {
            let e = match path_de::from_value::<TrafficPolicy>(value.clone()) {
                Ok(policy) => return Some(policy),
                Err(e) => e,
            };
            let full = crate::join_path(path, &e.path());
            let message = match unknown_field(&e) {
                Some((key, Some(meant))) => {
                    format!("unknown field `{key}`: did you mean {meant}?")
                }
                _ => e.message().to_string(),
            };
            self.error(full, message);
            if !e.prune(&mut value) {
                return None;
            }
        }
        self.error(
            path,
            format!("more than {MAX_PROBLEMS} problems; the others are not listed"),
        );
        None
    }
}

/// The unknown field a failure names, with the fields probably meant (`None`: no guess).
fn unknown_field(e: &path_de::PathError) -> Option<(String, Option<String>)> {
    if !e.message().starts_with("unknown field `") {
        return None;
    }
    let keys: Vec<&str> = e
        .segments()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    let (key, parents) = keys.split_last()?;
    // A port's entry, written `portLevelSettings[i]` in suggestions.
    let port_entry = (parents.first() == Some(&"portLevelSettings")).then(|| {
        let index = e.segments().find_map(|s| match s {
            Segment::Index(i) => Some(*i),
            Segment::Key(_) => None,
        });
        format!("portLevelSettings[{}]", index.unwrap_or_default())
    });
    // A port's four settings are the top level's structs, one level down.
    let mut within: Vec<&str> = parents.to_vec();
    let in_port_settings = within.len() > 1 && port_entry.is_some() && within[1] != "port";
    if in_port_settings {
        within.remove(0);
    }
    let meant = did_you_mean(&within.join("."), key)
        .iter()
        .map(|p| match &port_entry {
            // Top-level-only settings are meant at the top, whatever the port.
            Some(entry) if in_port_settings && PORT_LEVEL.iter().any(|s| p.starts_with(s)) => {
                format!("`{entry}.{p}`")
            }
            Some(entry) => match p.strip_prefix("portLevelSettings") {
                Some(rest) => format!("`{entry}{rest}`"),
                None => format!("`{p}`"),
            },
            None => format!("`{p}`"),
        })
        .collect::<Vec<_>>();
    let meant = (!meant.is_empty()).then(|| meant.join(" or "));
    Some((key.to_string(), meant))
}

/// The settings a port-level entry has too.
const PORT_LEVEL: [&str; 4] = ["loadBalancer", "connectionPool", "outlierDetection", "tls"];

/// Where in a policy each struct is, by its fields (serde's own list), so that a field put
/// in the wrong place can be found where it belongs.
fn structs() -> [(&'static str, &'static [&'static str]); 26] {
    [
        ("", fields::<TrafficPolicy>()),
        ("portLevelSettings", fields::<PortTrafficPolicy>()),
        ("portLevelSettings.port", fields::<PortSelector>()),
        ("loadBalancer", fields::<LoadBalancerSettings>()),
        ("loadBalancer.consistentHash", fields::<ConsistentHash>()),
        (
            "loadBalancer.consistentHash.httpCookie",
            fields::<HttpCookie>(),
        ),
        (
            "loadBalancer.consistentHash.httpCookie.attributes",
            fields::<CookieAttribute>(),
        ),
        ("loadBalancer.consistentHash.ringHash", fields::<RingHash>()),
        ("loadBalancer.consistentHash.maglev", fields::<Maglev>()),
        (
            "loadBalancer.backendUtilization",
            fields::<BackendUtilization>(),
        ),
        (
            "loadBalancer.localityLbSetting",
            fields::<LocalityLbSetting>(),
        ),
        (
            "loadBalancer.localityLbSetting.distribute",
            fields::<LocalityDistribute>(),
        ),
        (
            "loadBalancer.localityLbSetting.failover",
            fields::<LocalityFailover>(),
        ),
        (
            "loadBalancer.zoneAwareLbSetting",
            fields::<ZoneAwareLbSetting>(),
        ),
        (
            "loadBalancer.zoneAwareLbSetting.failover",
            fields::<LocalityFailover>(),
        ),
        ("loadBalancer.warmup", fields::<Warmup>()),
        ("connectionPool", fields::<ConnectionPoolSettings>()),
        ("connectionPool.tcp", fields::<TcpSettings>()),
        ("connectionPool.tcp.tcpKeepalive", fields::<TcpKeepalive>()),
        ("connectionPool.http", fields::<HttpSettings>()),
        (
            "connectionPool.http.http2KeepAlive",
            fields::<Http2KeepAlive>(),
        ),
        ("outlierDetection", fields::<OutlierDetection>()),
        ("tls", fields::<ClientTlsSettings>()),
        ("tunnel", fields::<TunnelSettings>()),
        ("proxyProtocol", fields::<ProxyProtocol>()),
        ("retryBudget", fields::<RetryBudget>()),
    ]
}

/// The fields meant by `key` in the struct at `within` (a path like `connectionPool.http`):
/// the same name in another case; else the same name elsewhere in the policy (nearest
/// first); else a sibling that contains it or is contained in it, or is a typo away
/// (`maxPendingRequests` → `http1MaxPendingRequests`); else such a field elsewhere.
pub(crate) fn did_you_mean(within: &str, key: &str) -> Vec<String> {
    let structs = structs();
    let here: &[&str] = structs
        .iter()
        .find(|(p, _)| *p == within)
        .map_or(&[], |(_, f)| f);
    let join = |p: &str, f: &str| {
        if p.is_empty() {
            f.to_string()
        } else {
            format!("{p}.{f}")
        }
    };
    if let Some(f) = here.iter().find(|f| f.eq_ignore_ascii_case(key)) {
        return vec![join(within, f)];
    }
    let nearest = |matches: &dyn Fn(&str) -> bool| -> Vec<String> {
        let found: Vec<(usize, String)> = structs
            .iter()
            .filter(|(p, _)| *p != within)
            .flat_map(|(p, fields)| {
                fields
                    .iter()
                    .filter(|f| matches(f))
                    .map(move |f| (shared_prefix(p, within), join(p, f)))
            })
            .collect();
        let best = found.iter().map(|(n, _)| *n).max();
        found
            .into_iter()
            .filter(|(n, _)| Some(*n) == best)
            .map(|(_, p)| p)
            .collect()
    };
    let elsewhere = nearest(&|f: &str| f.eq_ignore_ascii_case(key));
    if !elsewhere.is_empty() {
        return elsewhere;
    }
    let siblings: Vec<String> = here
        .iter()
        .filter(|f| resembles(f, key))
        .map(|f| join(within, f))
        .collect();
    if !siblings.is_empty() {
        return siblings;
    }
    nearest(&|f: &str| resembles(f, key))
}

/// How many leading path segments two struct paths share.
fn shared_prefix(a: &str, b: &str) -> usize {
    a.split('.')
        .zip(b.split('.'))
        .take_while(|(x, y)| x == y && !x.is_empty())
        .count()
}

/// Whether `field` is probably what `key` meant: ignoring case and separators, one contains
/// the other (at least 4 letters), or they are at most 2 edits apart.
fn resembles(field: &str, key: &str) -> bool {
    let norm = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| b.to_ascii_lowercase())
            .collect()
    };
    let (f, k) = (norm(field), norm(key));
    let contains = |a: &[u8], b: &[u8]| b.len() >= 4 && a.windows(b.len()).any(|w| w == b);
    contains(&f, &k) || contains(&k, &f) || (k.len() >= 5 && edit_distance(&f, &k) <= 2)
}

/// Levenshtein distance.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(x != y));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A struct's field names as serde reads them (after `rename_all`): its derived
/// `Deserialize` hands them to `deserialize_struct`, which this deserializer only records.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut seen = None;
    let _ = T::deserialize(FieldsProbe(&mut seen));
    seen.unwrap_or(&[])
}

struct FieldsProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(policy: Value) -> Vec<String> {
        let mut diags = Diagnostics::default();
        diags.parse_traffic_policy(&policy, "spec.trafficPolicy");
        diags.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_tutorials_two_mistakes_are_both_reported_with_the_fields_meant() {
        let p = problems(json!({"connectionPool": {"http": {
            "maxConnections": 100, "maxPendingRequests": 10, "maxRequestsPerConnection": 2}}}));
        assert_eq!(
            p,
            [
                "spec.trafficPolicy.connectionPool.http.maxConnections: unknown field `maxConnections`: did you mean `connectionPool.tcp.maxConnections`?",
                "spec.trafficPolicy.connectionPool.http.maxPendingRequests: unknown field `maxPendingRequests`: did you mean `connectionPool.http.http1MaxPendingRequests`?",
            ]
        );
    }

    #[test]
    fn a_port_level_mistake_is_answered_inside_that_port() {
        let p = problems(json!({"portLevelSettings": [{"port": {"number": 80}},
            {"port": {"number": 9080}, "outlierDetection": {"consecutive5XXErrors": 1}}]}));
        assert_eq!(
            p,
            ["spec.trafficPolicy.portLevelSettings[1].outlierDetection.consecutive5XXErrors: unknown field `consecutive5XXErrors`: did you mean `portLevelSettings[1].outlierDetection.consecutive5xxErrors`?"]
        );
        // A setting only the top level has is meant there.
        let p = problems(json!({"portLevelSettings": [{"port": {"number": 80}, "tunnel": {}}]}));
        assert_eq!(
            p,
            ["spec.trafficPolicy.portLevelSettings[0].tunnel: unknown field `tunnel`: did you mean `tunnel`?"]
        );
        // The entry's own fields keep its index.
        let p = problems(json!({"portLevelSettings": [{"port": {"number": 80}},
            {"port": {"nummber": 81}, "loadbalancer": {}}]}));
        assert_eq!(
            p,
            [
                "spec.trafficPolicy.portLevelSettings[1].loadbalancer: unknown field `loadbalancer`: did you mean `portLevelSettings[1].loadBalancer`?",
                "spec.trafficPolicy.portLevelSettings[1].port.nummber: unknown field `nummber`: did you mean `portLevelSettings[1].port.number`?",
            ]
        );
    }

    #[test]
    fn typos_and_ambiguous_names_list_every_candidate() {
        assert_eq!(
            did_you_mean("outlierDetection", "baseEjectionTimeout"),
            ["outlierDetection.baseEjectionTime"]
        );
        assert_eq!(
            did_you_mean("connectionPool", "idleTimeout"),
            [
                "connectionPool.tcp.idleTimeout",
                "connectionPool.http.idleTimeout"
            ]
        );
        assert_eq!(did_you_mean("", "loadBalance"), ["loadBalancer"]);
        assert_eq!(
            did_you_mean("connectionPool.tcp", "maxRetries"),
            ["connectionPool.http.maxRetries"]
        );
        assert!(did_you_mean("tls", "xyz").is_empty());
    }

    #[test]
    fn a_field_without_a_guess_keeps_serdes_list_and_wrong_types_are_reported_too() {
        let p = problems(json!({"tls": {"mode": "SIMPLE", "qqq": 1},
            "connectionPool": {"tcp": {"maxConnections": "ten"}}}));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter().any(|e| e.starts_with(
                "spec.trafficPolicy.tls.qqq: unknown field `qqq`, expected one of `mode`"
            )),
            "{p:?}"
        );
        assert!(
            p.iter().any(|e| e.starts_with("spec.trafficPolicy.connectionPool.tcp.maxConnections: invalid type: string \"ten\"")),
            "{p:?}"
        );
    }

    #[test]
    fn every_struct_path_is_a_field_of_its_parent() {
        for (path, _) in structs() {
            if let Some((parent, field)) = path.rsplit_once('.') {
                let parent_fields = structs().iter().find(|(p, _)| *p == parent).unwrap().1;
                assert!(parent_fields.contains(&field), "{path}");
            } else if !path.is_empty() {
                assert!(fields::<TrafficPolicy>().contains(&path), "{path}");
            }
        }
        assert!(fields::<OutlierDetection>().contains(&"consecutive5xxErrors"));
    }

    #[test]
    fn a_policy_that_is_not_an_object_is_one_problem() {
        assert_eq!(
            problems(json!("x")),
            ["spec.trafficPolicy: invalid type: string \"x\", expected struct TrafficPolicy"]
        );
    }
}
