//! Checking a decoded token against a provider, in Envoy jwt_authn's order
//! (`AuthenticatorImpl::startVerify`): issuer -> time -> audiences -> key and signature
//! (`verifyJwtWithoutTimeChecking` in `source/common/jwt/verify.cc`).

use hmac::{Hmac, KeyInit, Mac};
use p256::ecdsa::signature::Verifier;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pss::Pss;
use rsa::RsaPublicKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::jwks::{Jwks, Key};
use super::token::{Alg, Decoded};
use super::JwtError;

/// What the provider expects of a token.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    /// Empty: any issuer (an Envoy provider without `issuer`).
    pub issuer: &'a str,
    /// Empty: any audience, or none.
    pub audiences: &'a [String],
    /// Unix seconds.
    pub now: u64,
    /// Seconds of leeway on `exp` and `nbf` (Envoy's default is 60).
    pub clock_skew: u64,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `iss`, empty when absent.
    pub issuer: String,
    /// `sub`, empty when absent.
    pub subject: String,
    pub claims: Map<String, Value>,
    /// `exp`; `None` when absent (or 0, which Envoy reads as absent).
    pub expires_at: Option<u64>,
    /// `nbf`; `None` when absent.
    pub not_before: Option<u64>,
    /// `aud`, a list even when the token has one string.
    pub audiences: Vec<String>,
    /// The token's payload segment as sent (base64url), for outputPayloadToHeader.
    pub payload_b64: String,
}

impl Verified {
    /// The checks Envoy repeats on a token found in its cache: issuer, time, audiences.
    /// A cached token was verified for one provider; use this before trusting it for
    /// another one, or with a later clock.
    pub fn check(&self, expect: &Expectation) -> Result<(), JwtError> {
        check_claims(
            &self.issuer,
            self.not_before.unwrap_or(0),
            self.expires_at.unwrap_or(0),
            &self.audiences,
            expect,
        )
    }
}

/// Checks in Envoy jwt_authn's order: issuer -> time (exp/nbf with skew) -> audiences ->
/// key by kid/alg -> signature.
pub fn verify(decoded: Decoded, expect: &Expectation, jwks: &Jwks) -> Result<Verified, JwtError> {
    let issuer = decoded.iss.as_deref().unwrap_or_default();
    check_claims(issuer, decoded.nbf, decoded.exp, &decoded.audiences, expect)?;
    check_signature(&decoded, jwks)?;
    let payload_b64 = decoded.payload_b64().to_owned();
    Ok(Verified {
        issuer: decoded.iss.unwrap_or_default(),
        subject: decoded.sub.unwrap_or_default(),
        claims: decoded.claims,
        expires_at: (decoded.exp != 0).then_some(decoded.exp),
        not_before: (decoded.nbf != 0).then_some(decoded.nbf),
        audiences: decoded.audiences,
        payload_b64,
    })
}

fn check_claims(
    issuer: &str,
    nbf: u64,
    exp: u64,
    audiences: &[String],
    expect: &Expectation,
) -> Result<(), JwtError> {
    if !expect.issuer.is_empty() && issuer != expect.issuer {
        return Err(JwtError::UnknownIssuer);
    }
    // Envoy's Jwt::verifyTimeConstraint; 0 means absent.
    if expect.now.saturating_add(expect.clock_skew) < nbf {
        return Err(JwtError::NotYetValid);
    }
    if exp != 0 && expect.now > exp.saturating_add(expect.clock_skew) {
        return Err(JwtError::Expired);
    }
    if !audience_allowed(expect.audiences, audiences) {
        return Err(JwtError::AudienceNotAllowed);
    }
    Ok(())
}

/// Envoy's `CheckAudience`: with audiences configured, one of the token's must be among them,
/// both sides compared without an `http://` or `https://` prefix and a trailing slash.
fn audience_allowed(allowed: &[String], token: &[String]) -> bool {
    allowed.is_empty()
        || token
            .iter()
            .any(|t| allowed.iter().any(|a| sanitize(a) == sanitize(t)))
}

fn sanitize(aud: &str) -> &str {
    let aud = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    aud.strip_suffix('/').unwrap_or(aud)
}

/// Envoy tries every key whose kid and alg do not contradict the token's (an absent one on
/// either side matches), and answers "no key" only when there was none such.
fn check_signature(token: &Decoded, jwks: &Jwks) -> Result<(), JwtError> {
    let alg = token.alg;
    let mut kid_alg_matched = false;
    for jwk in &jwks.keys {
        if !token.kid.is_empty() && !jwk.kid.is_empty() && jwk.kid != token.kid {
            continue;
        }
        if !jwk.alg.is_empty() && jwk.alg != alg.name() {
            continue;
        }
        kid_alg_matched = true;
        // A key of another type than the alg's is counted as matched (as in Envoy) but
        // never used: no alg confusion.
        let ok = match (&jwk.key, alg) {
            (Key::Rsa(key), _) => rsa_verify(key, alg, token),
            (Key::P256(key), Alg::Es256) => p256::ecdsa::Signature::from_slice(&token.signature)
                .is_ok_and(|sig| key.verify(token.signing_input.as_bytes(), &sig).is_ok()),
            (Key::P384(key), Alg::Es384) => p384::ecdsa::Signature::from_slice(&token.signature)
                .is_ok_and(|sig| key.verify(token.signing_input.as_bytes(), &sig).is_ok()),
            (Key::Ed25519(key), Alg::EdDsa) => {
                // Envoy gives up on the whole set for a signature of the wrong size.
                let sig = ed25519_dalek::Signature::from_slice(&token.signature)
                    .map_err(|_| JwtError::Ed25519SignatureWrongLength)?;
                // `verify`, not `verify_strict`: BoringSSL's ED25519_verify semantics.
                key.is_some_and(|k| k.verify(token.signing_input.as_bytes(), &sig).is_ok())
            }
            (Key::Hmac(secret), Alg::Hs256) => hmac_verify::<Hmac<Sha256>>(secret, token),
            (Key::Hmac(secret), Alg::Hs384) => hmac_verify::<Hmac<Sha384>>(secret, token),
            (Key::Hmac(secret), Alg::Hs512) => hmac_verify::<Hmac<Sha512>>(secret, token),
            _ => false,
        };
        if ok {
            return Ok(());
        }
    }
    Err(if kid_alg_matched {
        JwtError::VerificationFails
    } else {
        JwtError::NoMatchingKey
    })
}

fn rsa_verify(key: &RsaPublicKey, alg: Alg, token: &Decoded) -> bool {
    let msg = token.signing_input.as_bytes();
    let sig = token.signature.as_slice();
    match alg {
        Alg::Rs256 => key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig),
        Alg::Rs384 => key.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg), sig),
        Alg::Rs512 => key.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(msg), sig),
        Alg::Ps256 => key.verify(pss::<Sha256>(), &Sha256::digest(msg), sig),
        Alg::Ps384 => key.verify(pss::<Sha384>(), &Sha384::digest(msg), sig),
        Alg::Ps512 => key.verify(pss::<Sha512>(), &Sha512::digest(msg), sig),
        _ => return false,
    }
    .is_ok()
}

/// PSS with MGF1 over the same digest and the salt length read from the signature, like
/// BoringSSL's default for verifying (JWA signers use the digest's length).
fn pss<D: Digest>() -> Pss<D> {
    Pss {
        blinded: false,
        digest: D::new(),
        salt_len: None,
    }
}

fn hmac_verify<M: Mac + KeyInit>(secret: &[u8], token: &Decoded) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(token.signing_input.as_bytes());
    // Constant time, and a signature of another length fails.
    mac.verify_slice(&token.signature).is_ok()
}
