//! JWT verification for RequestAuthentication (pure: no host calls).
//!
//! Follows Envoy's jwt_authn and the JWT library it carries (`source/common/jwt/`, formerly
//! google/jwt_verify_lib): the same parse order and checks, the same key selection, the same
//! status texts. Signatures are checked with the RustCrypto crates: RS256/384/512 and
//! PS256/384/512 (`rsa`), ES256 (`p256`), ES384 (`p384`), ES512 (`p521`), EdDSA over Ed25519
//! (`ed25519-dalek`), HS256/384/512 (`hmac`, inline keys only), unless the host's
//! [`SignatureVerifier`] checks them (Envoy's BoringSSL takes RS* and ES*).
//!
//! Flow: [`decode`] the token, pick the provider by [`Decoded::issuer`], [`verify`] it against
//! the provider's [`Expectation`] and [`Jwks`]; keep the [`Verified`] in a [`TokenCache`].

mod cache;
mod error;
mod json;
mod jwks;
mod signature;
mod token;
mod verify;

pub use cache::{TokenCache, DEFAULT_MAX_AGE, MAX_CACHED_TOKEN_LEN};
pub use error::JwtError;
pub use jwks::{Jwks, JwksError};
pub use signature::{verify_signature_result, DigestVerify, InModule, SignatureVerifier};
pub use token::{decode, Decoded};
pub use verify::{verify, Expectation, Verified};

#[cfg(test)]
mod tests;
