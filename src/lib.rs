//! meshrules: Istio traffic rules (VirtualService, DestinationRule) decided in a proxy-wasm
//! filter, enforced by Envoy's router.
//!
//! The core (`config`, `compile`, `rules`, `http`, `authn`, `authz`, `engine`, `pipeline`, `stat_names`)
//! makes no host calls and is tested
//! natively and inside a Wasm VM; `host` is the thin proxy-wasm shell.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod authn;
pub mod authz;
pub mod compile;
pub use meshrules_config as config;
pub mod engine;
pub mod http;
pub mod jwt;
pub mod pipeline;
pub mod ratelimit;
pub mod rules;
pub mod stat_names;
pub mod x509;

// Test builds for wasm run in a plain WASI VM, which has no proxy-wasm host to link.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod host;
