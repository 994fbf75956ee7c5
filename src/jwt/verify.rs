//! Checking a decoded token against a provider, in Envoy jwt_authn's order
//! (`AuthenticatorImpl::startVerify`): issuer -> time -> audiences -> key and signature
//! (`verifyJwtWithoutTimeChecking` in `source/common/jwt/verify.cc`).

use ed25519_dalek::Verifier;
use hmac::{Hmac, KeyInit, Mac};
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pss::Pss;
use rsa::RsaPublicKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::jwks::{EcKey, Jwks, Key};
use super::signature::{DigestVerify, Hash, SignatureVerifier};
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
/// key by kid/alg -> signature, each signature by `signatures` (see [`SignatureVerifier`]).
pub fn verify(
    decoded: Decoded,
    expect: &Expectation,
    jwks: &Jwks,
    signatures: &dyn SignatureVerifier,
) -> Result<Verified, JwtError> {
    let issuer = decoded.iss.as_deref().unwrap_or_default();
    check_claims(issuer, decoded.nbf, decoded.exp, &decoded.audiences, expect)?;
    check_signature(&decoded, jwks, signatures)?;
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
/// either side matches), and answers "no key" only when there was none such
/// (`verifyJwtWithoutTimeChecking`). The key's type picks the check and the token's alg the
/// digest, as there: an EC key is tried with ECDSA over the alg's digest whatever its curve
/// (SHA-256 unless ES384/ES512), an RSA key with PKCS #1 v1.5 for RS* and PSS for PS*, an
/// HMAC key with the HS* digest (SHA-256 unless HS384/HS512), an Ed25519 key with Ed25519.
/// An RSA public key is never an HMAC secret: no alg confusion.
fn check_signature(
    token: &Decoded,
    jwks: &Jwks,
    signatures: &dyn SignatureVerifier,
) -> Result<(), JwtError> {
    // Envoy has no key set for the provider (its inline JWKS did not load).
    if jwks.keys.is_empty() {
        return Err(JwtError::NoValidKeys);
    }
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
        let ok = match &jwk.key {
            Key::Rsa { key, spki } => {
                // PKCS #1 v1.5 only: Envoy's verify_signature sets no PSS padding.
                let hash = match alg {
                    Alg::Rs256 => Some(Hash::Sha256),
                    Alg::Rs384 => Some(Hash::Sha384),
                    Alg::Rs512 => Some(Hash::Sha512),
                    _ => None,
                };
                let envoy = hash.map(|hash| digest_verify(hash, spki, false, token));
                signatures.verify(envoy.as_ref(), &|| rsa_verify(key, alg, token))
            }
            Key::Ec { key, spki } => {
                let envoy = digest_verify(ec_hash(alg), spki, true, token);
                signatures.verify(Some(&envoy), &|| ec_verify(key, alg, token))
            }
            Key::Ed25519(key) => {
                // Envoy gives up on the whole set for a signature of the wrong size.
                let sig = ed25519_dalek::Signature::from_slice(&token.signature)
                    .map_err(|_| JwtError::Ed25519SignatureWrongLength)?;
                // `verify`, not `verify_strict`: BoringSSL's ED25519_verify semantics.
                signatures.verify(None, &|| {
                    key.is_some_and(|k| k.verify(token.signing_input.as_bytes(), &sig).is_ok())
                })
            }
            Key::Hmac(secret) => signatures.verify(None, &|| match alg {
                Alg::Hs384 => hmac_verify::<Hmac<Sha384>>(secret, token),
                Alg::Hs512 => hmac_verify::<Hmac<Sha512>>(secret, token),
                _ => hmac_verify::<Hmac<Sha256>>(secret, token),
            }),
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

fn digest_verify<'a>(
    hash: Hash,
    spki: &'a [u8],
    ecdsa: bool,
    token: &'a Decoded,
) -> DigestVerify<'a> {
    DigestVerify {
        hash,
        public_key: spki,
        signature: &token.signature,
        ecdsa,
        text: token.signing_input.as_bytes(),
    }
}

/// An EC key is checked over the alg's digest whatever its curve: SHA-256 unless ES384/ES512.
fn ec_hash(alg: Alg) -> Hash {
    match alg {
        Alg::Es384 => Hash::Sha384,
        Alg::Es512 => Hash::Sha512,
        _ => Hash::Sha256,
    }
}

/// BoringSSL's `ECDSA_do_verify` as Envoy calls it: `r` and `s` are the two halves of the
/// signature read as big-endian numbers (an odd last byte is left out), the digest is the
/// alg's, cut or zero-extended to the curve.
fn ec_verify(key: &EcKey, alg: Alg, token: &Decoded) -> bool {
    let msg = token.signing_input.as_bytes();
    let digest = match ec_hash(alg) {
        Hash::Sha384 => Sha384::digest(msg).to_vec(),
        Hash::Sha512 => Sha512::digest(msg).to_vec(),
        Hash::Sha256 => Sha256::digest(msg).to_vec(),
    };
    let sig = token.signature.as_slice();
    let half = sig.len() / 2;
    let (r, s) = (&sig[..half], &sig[half..2 * half]);
    macro_rules! ecdsa {
        ($curve:ident, $key:expr, $size:literal) => {{
            use $curve::ecdsa::signature::hazmat::PrehashVerifier;
            let (Some(r), Some(s)) = (fixed::<$size>(r), fixed::<$size>(s)) else {
                return false;
            };
            $curve::ecdsa::Signature::from_scalars(r, s)
                .is_ok_and(|sig| $key.verify_prehash(&widened(&digest, $size), &sig).is_ok())
        }};
    }
    match key {
        EcKey::P256(k) => ecdsa!(p256, k, 32),
        EcKey::P384(k) => ecdsa!(p384, k, 48),
        EcKey::P521(k) => ecdsa!(p521, k, 66),
    }
}

/// A big-endian number in `N` bytes, if it fits.
fn fixed<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let mut out = [0u8; N];
    out.get_mut(N.checked_sub(bytes.len())?..)?
        .copy_from_slice(bytes);
    Some(out)
}

/// A digest shorter than the curve's field, zero-extended on the left (the same number);
/// RustCrypto cuts a longer one to the field as ECDSA does.
fn widened(digest: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size.saturating_sub(digest.len())];
    out.extend_from_slice(digest);
    out
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
