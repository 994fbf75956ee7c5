//! The proxy-wasm shell: owns the host contexts, reads requests, applies decisions.
//! Every host call goes through `abi`, which returns errors where the SDK's calls and trait
//! helpers panic.

mod abi;
mod delay;
mod http;
mod identity;
mod jwks;
mod metrics;
mod ratelimit;
mod root;
mod signature;

use proxy_wasm::traits::RootContext;

proxy_wasm::main! {{
    abi::init_logging(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::new()) });
}}
