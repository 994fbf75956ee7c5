//! `meshrules bundle --output envoy`: a complete Envoy bootstrap around the configuration,
//! shaped like envoy/envoy.yaml (listener, the filter, the cluster_header routes, one cluster
//! per destination the rules can pick, and the clusters remote JWKS are fetched through).

use std::collections::BTreeMap;
use std::net::IpAddr;

use meshrules::compile;
use meshrules::config::{self, Diagnostics, Spec};
use meshrules::http::split_host_port;
use meshrules::rules::{Action, ClusterName};
use serde_json::{json, Value};

use crate::bundle::BundleArgs;
use crate::input::Validated;

/// Envoy's name for the cluster of hosts without a VirtualService.
const PASSTHROUGH: &str = "passthrough";

pub fn bootstrap(v: &Validated, args: &BundleArgs) -> Result<Value, String> {
    let rules = &v.loaded.rules;
    let header = &rules.cluster_header;
    let mut overrides: BTreeMap<String, String> = BTreeMap::new();
    for e in &args.endpoints {
        let Some((cluster, address)) = e.rsplit_once('=') else {
            return Err(format!("--endpoint {e:?} is not CLUSTER=HOST:PORT"));
        };
        overrides.insert(cluster.to_string(), address.to_string());
    }
    let defaults = destination_addresses(&v.inputs.config_json());

    let mut clusters: BTreeMap<String, Value> = BTreeMap::new();
    for route in &rules.routes {
        if let Action::Forward(split) = &route.action {
            for d in &split.destinations {
                let ClusterName::Fixed(name) = &d.cluster else {
                    return Err(format!(
                        "cluster {} is named by the port each request arrives on: give the \
                         destination a port, or routing.servicePorts",
                        d.cluster
                    ));
                };
                let address = overrides
                    .get(name)
                    .or_else(|| defaults.get(name))
                    .ok_or_else(|| format!("no address for cluster {name}: give --endpoint"))?;
                clusters.insert(name.clone(), cluster(name, address, None)?);
            }
        }
    }
    for remote in &rules.authn.remote {
        let tls = remote.uri.starts_with("https://");
        let address = match split_host_port(&remote.authority) {
            (_, Some(_)) => remote.authority.clone(),
            (host, None) => format!("{host}:{}", if tls { 443 } else { 80 }),
        };
        let address = overrides.get(&remote.cluster).unwrap_or(&address);
        let sni = split_host_port(&remote.authority).0;
        clusters.insert(
            remote.cluster.clone(),
            cluster(&remote.cluster, address, tls.then_some(sni))?,
        );
    }
    let mut routes = vec![json!({
        "match": { "prefix": "/", "headers": [{ "name": header, "present_match": true }] },
        // Istio's routes have no default timeout: the filter's router headers set it.
        "route": { "cluster_header": header, "timeout": "0s" },
        // The router has read it; the application need not see it.
        "request_headers_to_remove": [header],
    })];
    if let Some(address) = &args.passthrough {
        routes.push(json!({ "match": { "prefix": "/" }, "route": { "cluster": PASSTHROUGH, "timeout": "0s" } }));
        clusters.insert(PASSTHROUGH.into(), cluster(PASSTHROUGH, address, None)?);
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

/// The default address of each destination cluster: the destination's host (its FQDN, as the
/// cluster name has it) and port (80 when the destination names none), resolved by DNS.
fn destination_addresses(config_json: &str) -> BTreeMap<String, String> {
    let mut diags = Diagnostics::default();
    let pc = config::parse(config_json.as_bytes(), &mut diags);
    let routing = &pc.routing;
    let mut out = BTreeMap::new();
    for res in &pc.resources {
        let Spec::VirtualService(vs) = &res.spec else {
            continue;
        };
        for raw in &vs.http {
            let Some(http) = diags.parse_http_route(raw.clone(), "") else {
                continue;
            };
            for dest in http.route.iter().filter_map(|rd| rd.destination.as_ref()) {
                let host = compile::expand_host(
                    &dest.host,
                    &res.metadata.namespace,
                    &routing.cluster_domain,
                );
                let port = dest.port.as_ref().and_then(|p| p.number).map(|n| n as u16);
                let name = compile::cluster_name(
                    &routing.cluster_name,
                    &host,
                    dest.subset.as_deref().unwrap_or_default(),
                    &port.map(|p| p.to_string()).unwrap_or_default(),
                );
                out.insert(name, format!("{host}:{}", port.unwrap_or(80)));
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

/// A cluster with one endpoint: STATIC for an IP address, STRICT_DNS for a name; TLS with
/// `sni` when given.
fn cluster(name: &str, address: &str, sni: Option<&str>) -> Result<Value, String> {
    let endpoint = socket_address(address)?;
    let is_ip = endpoint["socket_address"]["address"]
        .as_str()
        .is_some_and(|h| h.parse::<IpAddr>().is_ok());
    let mut c = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": endpoint } }] }],
        },
    });
    if let Some(sni) = sni {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sni,
            },
        });
    }
    Ok(c)
}

/// The label segments of the filter's per-route and per-limit counters as Prometheus labels (the same tags
/// as envoy/envoy.yaml).
fn stats_tags() -> Value {
    let prefix = r"^wasmcustom\.meshrules_";
    json!([
        { "tag_name": "namespace",
          "regex": format!(r"{prefix}(?:route|unrouted)_requests(\.namespace\.([^.]*))") },
        { "tag_name": "virtual_service",
          "regex": format!(r"{prefix}(?:route|unrouted)_requests(?:\.namespace\.[^.]*)?(\.virtual_service\.([^.]*))") },
        { "tag_name": "route",
          "regex": format!(r"{prefix}route_requests(?:\.namespace\.[^.]*)?(?:\.virtual_service\.[^.]*)?(\.route\.([^.]*))") },
        { "tag_name": "limit",
          "regex": format!(r"{prefix}ratelimit_[a-z_]+(\.limit\.([^.]*))") },
    ])
}
