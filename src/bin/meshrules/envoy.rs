//! `meshrules bundle --output envoy`: a complete Envoy bootstrap around the configuration,
//! shaped like envoy/envoy.yaml (listener, the filter, the cluster_header routes, one cluster
//! per destination the rules can pick with its DestinationRule's traffic policy, and the
//! clusters remote JWKS are fetched through).

use std::collections::BTreeMap;
use std::net::IpAddr;

use meshrules::compile;
use meshrules::config::{self, Diagnostics, Spec};
use meshrules::http::split_host_port;
use meshrules::rules::{Action, ClusterName};
use serde_json::{json, Map, Value};

use crate::bundle::BundleArgs;
use crate::cluster_policy::{Destination, Policies};
use crate::input::Validated;
use crate::Failure;

/// Envoy's name for the cluster of hosts without a VirtualService.
const PASSTHROUGH: &str = "passthrough";

pub fn bootstrap(v: &Validated, args: &BundleArgs) -> Result<Value, Failure> {
    let rules = &v.loaded.rules;
    let header = &rules.cluster_header;
    let mut endpoints: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &args.endpoints {
        let Some((cluster, address)) = e.rsplit_once('=') else {
            return Err(format!("--endpoint {e:?} is not CLUSTER=HOST:PORT").into());
        };
        endpoints
            .entry(cluster.to_string())
            .or_default()
            .push(address.to_string());
    }
    let config = config::parse(
        v.inputs.config_json().as_bytes(),
        &mut Diagnostics::default(),
    );
    let destinations = destinations(&config);
    let (policies, refused) = Policies::read(&config);
    if !refused.is_empty() {
        return Err(Failure::Problems(
            refused.iter().map(|e| v.inputs.locate(e)).collect(),
        ));
    }

    let mut clusters: BTreeMap<String, Value> = BTreeMap::new();
    // The route hash policy of each cluster with a consistent hash.
    let mut hashed: BTreeMap<String, Value> = BTreeMap::new();
    for route in &rules.routes {
        if let Action::Forward(split) = &route.action {
            for d in &split.destinations {
                let ClusterName::Fixed(name) = &d.cluster else {
                    return Err(format!(
                        "cluster {} is named by the port each request arrives on: give the \
                         destination a port, or routing.servicePorts",
                        d.cluster
                    )
                    .into());
                };
                let dest = destinations.get(name);
                let addresses = match (endpoints.get(name), dest) {
                    (Some(given), _) => given.clone(),
                    (None, Some(dest)) => vec![default_address(dest)],
                    (None, None) => {
                        return Err(format!("no address for cluster {name}: give --endpoint").into())
                    }
                };
                let mut c = cluster(name, &addresses, None)?;
                if let Some(dest) = dest {
                    if let Some(hash) = policies.apply(&mut c, dest) {
                        hashed.insert(name.clone(), hash);
                    }
                }
                clusters.insert(name.clone(), Value::Object(c));
            }
        }
    }
    for remote in &rules.authn.remote {
        let tls = remote.uri.starts_with("https://");
        let address = match split_host_port(&remote.authority) {
            (_, Some(_)) => remote.authority.clone(),
            (host, None) => format!("{host}:{}", if tls { 443 } else { 80 }),
        };
        let addresses = endpoints
            .get(&remote.cluster)
            .cloned()
            .unwrap_or_else(|| vec![address]);
        let sni = split_host_port(&remote.authority).0;
        clusters.insert(
            remote.cluster.clone(),
            Value::Object(cluster(&remote.cluster, &addresses, tls.then_some(sni))?),
        );
    }
    // A consistent hash needs its hash policy on the route that picks the cluster, as istiod
    // writes it. One route picks every cluster here, so each hashed cluster gets a route of
    // its own before it, for the same cluster header with its name: another cluster's hash
    // policy must not apply (a cookie policy with a ttl would set cookies for it).
    let mut routes: Vec<Value> = hashed
        .into_iter()
        .map(|(name, hash)| {
            json!({
                "match": { "prefix": "/", "headers": [{ "name": header, "string_match": { "exact": name } }] },
                "route": { "cluster_header": header, "timeout": "0s", "hash_policy": [hash] },
                "request_headers_to_remove": [header],
            })
        })
        .collect();
    routes.push(json!({
        "match": { "prefix": "/", "headers": [{ "name": header, "present_match": true }] },
        // Istio's routes have no default timeout: the filter's router headers set it.
        "route": { "cluster_header": header, "timeout": "0s" },
        // The router has read it; the application need not see it.
        "request_headers_to_remove": [header],
    }));
    if let Some(address) = &args.passthrough {
        routes.push(json!({ "match": { "prefix": "/" }, "route": { "cluster": PASSTHROUGH, "timeout": "0s" } }));
        clusters.insert(
            PASSTHROUGH.into(),
            Value::Object(cluster(PASSTHROUGH, std::slice::from_ref(address), None)?),
        );
    }

    let filter = json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meshrules",
                "root_id": "meshrules",
                "vm_config": {
                    "vm_id": "meshrules",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": args.wasm.display().to_string() } },
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": v.inputs.config_json(),
                },
            },
        },
    });
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "codec_type": "AUTO",
            // source.ip is the connection's peer; the filter reads X-Forwarded-For for remote.ip.
            "use_remote_address": true,
            "route_config": {
                "name": "meshrules",
                "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }],
            },
            "http_filters": [
                filter,
                { "name": "envoy.filters.http.router",
                  "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } },
            ],
        },
    });
    Ok(json!({
        "node": { "id": "meshrules", "cluster": "meshrules" },
        "admin": { "address": socket_address(&args.admin)? },
        "stats_config": { "stats_tags": stats_tags() },
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": socket_address(&args.listen)?,
                "filter_chains": [{ "filters": [hcm] }],
            }],
            "clusters": clusters.into_values().collect::<Vec<_>>(),
        },
    }))
}

/// A destination cluster's default endpoint: the destination's host (its FQDN, as the cluster
/// name has it) and port (80 when the destination names none), resolved by DNS.
fn default_address(dest: &Destination) -> String {
    format!("{}:{}", dest.host, dest.port.unwrap_or(80))
}

/// Each destination cluster the configuration names, by cluster name. A destination without
/// a port takes its service's only port from `routing.servicePorts`, as the filter does.
fn destinations(pc: &config::PluginConfig) -> BTreeMap<String, Destination> {
    let mut diags = Diagnostics::default();
    let routing = &pc.routing;
    let only_ports = compile::only_ports(routing, &mut diags);
    let mut out = BTreeMap::new();
    for res in &pc.resources {
        let Spec::VirtualService(vs) = &res.spec else {
            continue;
        };
        for raw in &vs.http {
            let Some(http) = diags.http_route(raw.clone(), "") else {
                continue;
            };
            for dest in http.route.iter().filter_map(|rd| rd.destination.as_ref()) {
                let host = compile::expand_host(
                    &dest.host,
                    &res.metadata.namespace,
                    &routing.cluster_domain,
                );
                let port = match dest.port.as_ref().and_then(|p| p.number) {
                    Some(n) => Some(n as u16),
                    None => only_ports.get(&host).copied(),
                };
                let subset = dest.subset.clone().unwrap_or_default();
                let name = compile::cluster_name(
                    &routing.cluster_name,
                    &host,
                    &subset,
                    &port.map(|p| p.to_string()).unwrap_or_default(),
                );
                out.insert(name, Destination { host, subset, port });
            }
        }
    }
    out
}

/// `HOST:PORT` as an Envoy socket address.
fn socket_address(address: &str) -> Result<Value, String> {
    let (host, port) = split_host_port(address);
    let port: u16 = port
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(json!({ "socket_address": { "address": host, "port_value": port } }))
}

/// A cluster with its endpoints: STATIC when they are all IP addresses, STRICT_DNS
/// otherwise; TLS with `sni` when given.
fn cluster(
    name: &str,
    addresses: &[String],
    sni: Option<&str>,
) -> Result<Map<String, Value>, String> {
    let endpoints = addresses
        .iter()
        .map(|a| socket_address(a))
        .collect::<Result<Vec<_>, _>>()?;
    let all_ip = endpoints.iter().all(|e| {
        e["socket_address"]["address"]
            .as_str()
            .is_some_and(|h| h.parse::<IpAddr>().is_ok())
    });
    let lb_endpoints: Vec<Value> = endpoints
        .into_iter()
        .map(|address| json!({ "endpoint": { "address": address } }))
        .collect();
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    c.insert(
        "type".into(),
        json!(if all_ip { "STATIC" } else { "STRICT_DNS" }),
    );
    // The bootstrap's default connect timeout (istiod's is the mesh's connectTimeout).
    c.insert("connect_timeout".into(), json!("1s"));
    c.insert(
        "load_assignment".into(),
        json!({ "cluster_name": name, "endpoints": [{ "lb_endpoints": lb_endpoints }] }),
    );
    if let Some(sni) = sni {
        c.insert(
            "transport_socket".into(),
            json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": sni,
                },
            }),
        );
    }
    Ok(c)
}

/// The `stats_tags` that turn the label segments of the filter's metric names (see the
/// filter's `stat_names`) into Prometheus labels: envoy/envoy.yaml and envoy/envoy-ecds.yaml
/// carry the same (tests/cli.rs checks). Envoy matches every tag against the whole name, so
/// each regex skips the labels before its own.
fn stats_tags() -> Value {
    const NAMED: &str = "route_requests|unrouted_requests|responses|request_duration_milliseconds";
    const ROUTED: &str = "route_requests|responses|request_duration_milliseconds";
    const PER_DESTINATION: &str = "responses|request_duration_milliseconds";
    // Each label, in name order, and the metrics that carry it.
    let chain = [
        ("namespace", NAMED),
        ("virtual_service", NAMED),
        ("route", ROUTED),
        ("subset", PER_DESTINATION),
        ("cluster", PER_DESTINATION),
        ("code", "responses"),
        ("code_class", "responses"),
    ];
    let mut before = String::new();
    let mut tags: Vec<Value> = chain
        .iter()
        .map(|(label, metrics)| {
            let regex =
                format!(r"^wasmcustom\.meshrules_(?:{metrics}){before}(\.{label}\.([^.]*))");
            before.push_str(&format!(r"(?:\.{label}\.[^.]*)?"));
            json!({ "tag_name": label, "regex": regex })
        })
        .collect();
    tags.push(json!({ "tag_name": "limit",
        "regex": r"^wasmcustom\.meshrules_ratelimit_[a-z_]+(\.limit\.([^.]*))" }));
    tags.push(json!({ "tag_name": "reason",
        "regex": r"^wasmcustom\.meshrules_local_replies(\.reason\.([^.]*))" }));
    Value::Array(tags)
}
