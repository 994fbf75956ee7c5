//! The proxy's own identity from Istio node metadata, read through proxy-wasm properties.

use super::abi;

use crate::compile::{Identity, ProxyKind};

pub struct NodeMetadata;

/// A node property: Envoy 1.40 serves the node as the `xds.node` attribute; older Envoys (and
/// Istio's proxies of their time) as `node`.
fn property(path: &[&str]) -> Option<String> {
    let xds: Vec<&str> = ["xds"].iter().chain(path).copied().collect();
    [xds, path.to_vec()].into_iter().find_map(|p| {
        let bytes = abi::property(&p).ok()??;
        String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
    })
}

impl Identity for NodeMetadata {
    fn known(&self) -> bool {
        self.namespace().is_some()
    }

    fn namespace(&self) -> Option<String> {
        property(&["node", "metadata", "NAMESPACE"])
    }

    fn label(&self, key: &str) -> Option<String> {
        property(&["node", "metadata", "LABELS", key])
    }

    /// Istio node ids start with the proxy type: `sidecar~...` or `router~...`.
    fn kind(&self) -> ProxyKind {
        match property(&["node", "id"]) {
            Some(id) if id.starts_with("sidecar~") => ProxyKind::Sidecar,
            Some(id) if id.starts_with("router~") => ProxyKind::Gateway,
            _ => ProxyKind::Unknown,
        }
    }
}
