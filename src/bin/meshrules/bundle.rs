//! `meshrules bundle`: the validated configuration as the filter's pluginConfig JSON, as an
//! Istio WasmPlugin, or inside a complete Envoy bootstrap.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::input::Validated;
use crate::{envoy, validated, ConfigFiles, Failure, Output};

#[derive(Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub config: ConfigFiles,
    /// What to print.
    #[arg(long, value_enum, default_value = "pluginconfig")]
    pub output: Output,
    /// The filter module: its sha256 goes into the WasmPlugin, its path into the Envoy config.
    #[arg(long, default_value = "wasm/meshrules.wasm")]
    pub wasm: PathBuf,

    /// WasmPlugin: `metadata.name`.
    #[arg(long, default_value = "meshrules", help_heading = "WasmPlugin")]
    pub name: String,
    /// WasmPlugin: `metadata.namespace` [default: the resources' namespace when they share
    /// one, else istio-system].
    #[arg(long, help_heading = "WasmPlugin")]
    pub namespace: Option<String>,
    /// WasmPlugin: `spec.url`, the OCI image (`oci://`), or an `http(s)://` / `file://` URL.
    #[arg(long, default_value = concat!("oci://localhost:5000/meshrules:", env!("CARGO_PKG_VERSION")), help_heading = "WasmPlugin")]
    pub image: String,
    /// WasmPlugin: `spec.sha256`. For an `oci://` image Istio's agent compares it with the
    /// image's manifest digest (the one `make image` prints) [default: none]; for an
    /// `http(s)://` or `file://` URL with the module's own sha256 [default: computed from --wasm].
    #[arg(long, help_heading = "WasmPlugin")]
    pub sha256: Option<String>,
    /// WasmPlugin: `spec.phase` (AUTHN, AUTHZ, STATS or UNSPECIFIED_PHASE); AUTHN, as in
    /// istio/wasmplugin.yaml: the filter checks JWTs and policies itself, before Istio's filters.
    #[arg(long, default_value = "AUTHN", help_heading = "WasmPlugin")]
    pub phase: String,
    /// WasmPlugin: `spec.priority` within the phase.
    #[arg(long, help_heading = "WasmPlugin")]
    pub priority: Option<i64>,
    /// WasmPlugin: `spec.failStrategy` (FAIL_CLOSE or FAIL_OPEN).
    #[arg(long, default_value = "FAIL_CLOSE", help_heading = "WasmPlugin")]
    pub fail_strategy: String,
    /// WasmPlugin: `spec.selector.matchLabels` entries, `key=value` (repeatable).
    #[arg(
        long = "selector",
        value_name = "KEY=VALUE",
        help_heading = "WasmPlugin"
    )]
    pub selector: Vec<String>,

    /// Envoy: the listener's address.
    #[arg(long, default_value = "127.0.0.1:10000", help_heading = "Envoy")]
    pub listen: String,
    /// Envoy: the admin interface's address.
    #[arg(long, default_value = "127.0.0.1:9901", help_heading = "Envoy")]
    pub admin: String,
    /// Envoy: where a cluster's endpoint is, `CLUSTER=HOST:PORT`; repeatable, and a cluster
    /// given several times has several endpoints [default: the destination's host and port,
    /// resolved by DNS].
    #[arg(
        long = "endpoint",
        value_name = "CLUSTER=HOST:PORT",
        help_heading = "Envoy"
    )]
    pub endpoints: Vec<String>,
    /// Envoy: where requests for hosts without a VirtualService go, `HOST:PORT` [default: no
    /// such route; Envoy answers 404].
    #[arg(long, value_name = "HOST:PORT", help_heading = "Envoy")]
    pub passthrough: Option<String>,
}

pub fn run(args: &BundleArgs) -> Result<(), Failure> {
    let v = validated(&args.config.files)?;
    let text = match args.output {
        Output::Pluginconfig => pretty_json(&Value::Object(v.inputs.config.clone()))?,
        Output::Wasmplugin => yaml(&wasm_plugin(&v, args)?)?,
        Output::Envoy => yaml(&envoy::bootstrap(&v, args)?)?,
    };
    crate::output::write(format_args!("{text}"));
    Ok(())
}

fn pretty_json(v: &Value) -> Result<String, String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| format!("cannot write JSON: {e}"))
}

fn yaml(v: &Value) -> Result<String, String> {
    serde_saphyr::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))
}

/// The module's sha256 in hex, as Istio's WasmPlugin `sha256` takes it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `key=value` flags as a map.
fn pairs(flags: &[String], what: &str) -> Result<Map<String, Value>, String> {
    flags
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Value::String(v.to_string()))),
            _ => Err(format!("{what} {f:?} is not KEY=VALUE")),
        })
        .collect()
}

/// Istio's WasmPlugin carrying the configuration as `pluginConfig`.
fn wasm_plugin(v: &Validated, args: &BundleArgs) -> Result<Value, String> {
    let sha256 = match &args.sha256 {
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(s.to_ascii_lowercase())
        }
        Some(s) => return Err(format!("--sha256 {s:?} is not 64 hex digits")),
        // Istio's pkg/wasm/cache.go checks an OCI image's manifest digest, which the module's
        // bytes do not give: the module's sha256 there would make the agent refuse the image.
        None if args.image.starts_with("oci://") => {
            err!(
                "meshrules: no sha256 in the WasmPlugin: for an oci:// image give --sha256 \
                 with the manifest digest `make image` prints, or pin the URL with @sha256:"
            );
            None
        }
        None => match std::fs::read(&args.wasm) {
            Ok(bytes) => Some(sha256_hex(&bytes)),
            Err(e) => {
                err!(
                    "meshrules: no sha256 in the WasmPlugin ({}: {e}); give --sha256 or --wasm",
                    args.wasm.display()
                );
                None
            }
        },
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| shared_namespace(v).unwrap_or_else(|| "istio-system".into()));
    let mut spec = Map::new();
    if !args.selector.is_empty() {
        spec.insert(
            "selector".into(),
            json!({ "matchLabels": pairs(&args.selector, "--selector")? }),
        );
    }
    spec.insert("url".into(), json!(args.image));
    if let Some(s) = sha256 {
        spec.insert("sha256".into(), json!(s));
    }
    spec.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    spec.insert("pluginName".into(), json!("meshrules"));
    spec.insert("phase".into(), json!(args.phase));
    if let Some(p) = args.priority {
        spec.insert("priority".into(), json!(p));
    }
    spec.insert("failStrategy".into(), json!(args.fail_strategy));
    spec.insert("type".into(), json!("HTTP"));
    spec.insert(
        "pluginConfig".into(),
        Value::Object(v.inputs.config.clone()),
    );
    Ok(json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": { "name": args.name, "namespace": namespace },
        "spec": spec,
    }))
}

/// The namespace every resource is in, if they agree.
fn shared_namespace(v: &Validated) -> Option<String> {
    let list = v.inputs.config.get("resources")?.as_array()?;
    let namespaces: BTreeSet<&str> = list.iter().map(|r| v.inputs.namespace_of(r)).collect();
    match (namespaces.len(), namespaces.first()) {
        (1, Some(ns)) => Some((*ns).to_string()),
        _ => None,
    }
}
