//! The proxy-wasm shell: owns the host contexts, reads requests, applies decisions.
//! Host calls go through `proxy_wasm::hostcalls` (which return errors) rather than the SDK's
//! trait helpers (which panic on a host error).

mod delay;
mod http;
mod identity;
mod jwks;
mod local_reply;
mod metrics;
mod root;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::new()) });
}}
