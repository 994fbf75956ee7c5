//! JWT signatures checked by Envoy's BoringSSL through its `verify_signature` foreign function
//! where the algorithm fits and the setting asks for it; the filter's own verifiers do the
//! rest, and everything on a host without that function.

use std::sync::OnceLock;

use proxy_wasm::types::Status;

use super::abi;
use super::metrics;
use super::root::Shared;
use crate::authn::Verifier;
use crate::jwt::{verify_signature_result, DigestVerify, SignatureVerifier};

const VERIFY_SIGNATURE: &str = "verify_signature";

/// Whether this host has `verify_signature`: asked once per VM. Empty arguments parse as a
/// message without a key, which Envoy refuses with `BadArgument`; a host without the function
/// says `NotFound`.
pub fn envoy_verifies() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let available = !matches!(
            abi::call_foreign_function(VERIFY_SIGNATURE, &[]),
            Err(Status::NotFound)
        );
        log::info!(
            "meshrules: JWT signatures: {}",
            if available {
                "RS*/ES* by Envoy's verify_signature, the rest in the filter"
            } else {
                "all in the filter (this Envoy has no verify_signature)"
            }
        );
        available
    })
}

/// One request's verifier: counts which side checked each signature.
pub struct Signatures<'s> {
    shared: &'s Shared,
    envoy: bool,
}

impl<'s> Signatures<'s> {
    pub fn new(shared: &'s Shared, setting: Verifier) -> Self {
        Signatures {
            shared,
            envoy: setting == Verifier::Envoy && envoy_verifies(),
        }
    }

    /// Envoy's answer, `None` when it gave none (then the filter checks).
    fn ask_envoy(&self, check: &DigestVerify<'_>) -> Option<bool> {
        match abi::call_foreign_function(VERIFY_SIGNATURE, &check.arguments()) {
            Ok(result) => verify_signature_result(&result.unwrap_or_default()),
            Err(e) => {
                // BadArgument: BoringSSL did not take the key (or the arguments).
                self.shared.log_once(
                    "verify_signature failed",
                    &format!("{e:?}; the filter checks such signatures itself"),
                );
                None
            }
        }
    }
}

impl SignatureVerifier for Signatures<'_> {
    fn verify(&self, envoy: Option<&DigestVerify<'_>>, in_module: &dyn Fn() -> bool) -> bool {
        let g = &self.shared.globals;
        if let Some(valid) = envoy.filter(|_| self.envoy).and_then(|c| self.ask_envoy(c)) {
            metrics::add(g.jwt_signatures_envoy, 1);
            return valid;
        }
        metrics::add(g.jwt_signatures_wasm, 1);
        in_module()
    }
}
