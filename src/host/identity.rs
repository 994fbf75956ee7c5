//! The proxy's own identity from Istio node metadata, read through proxy-wasm properties.

use proxy_wasm::hostcalls;

use crate::compile::{Identity, ProxyKind};

pub struct NodeMetadata;

fn property(path: Vec<&str>) -> Option<String> {
    let bytes = hostcalls::get_property(path).ok()??;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

impl Identity for NodeMetadata {
    fn known(&self) -> bool {
        self.namespace().is_some()
    }

    fn namespace(&self) -> Option<String> {
        property(vec!["node", "metadata", "NAMESPACE"])
    }

    fn label(&self, key: &str) -> Option<String> {
        property(vec!["node", "metadata", "LABELS", key])
    }

    /// Istio node ids start with the proxy type: `sidecar~...` or `router~...`.
    fn kind(&self) -> ProxyKind {
        match property(vec!["node", "id"]) {
            Some(id) if id.starts_with("sidecar~") => ProxyKind::Sidecar,
            Some(id) if id.starts_with("router~") => ProxyKind::Gateway,
            _ => ProxyKind::Unknown,
        }
    }
}
