//! JSON Web Key Sets, read as Envoy's `Jwks::createFromJwksCore` reads them
//! (`source/common/jwt/jwks.cc`): a key that does not parse is skipped; the set fails only
//! when no key is left, with the first key's error.

use std::fmt;

use rsa::{BoxedUint, RsaPublicKey};
use serde_json::{Map, Value};

use super::token::{b64url, json_object};

/// A parsed key set.
#[derive(Clone, Default)]
pub struct Jwks {
    pub(super) keys: Vec<Jwk>,
}

#[derive(Clone)]
pub(super) struct Jwk {
    /// Empty when the key has none: it then matches every token kid (Envoy).
    pub(super) kid: String,
    /// Empty when the key has none: it then matches every token alg (Envoy).
    pub(super) alg: String,
    pub(super) key: Key,
}

#[derive(Clone)]
pub(super) enum Key {
    Rsa(Box<RsaPublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    /// `None` for 32 bytes that are no curve point: BoringSSL keeps such a key and every
    /// signature then fails, so we keep it too.
    Ed25519(Option<ed25519_dalek::VerifyingKey>),
    Hmac(Vec<u8>),
}

impl Key {
    fn kty(&self) -> &'static str {
        match self {
            Key::Rsa(_) => "RSA",
            Key::P256(_) | Key::P384(_) => "EC",
            Key::Ed25519(_) => "OKP",
            Key::Hmac(_) => "oct",
        }
    }
}

// By hand, so that an HMAC secret never reaches a log.
impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (k.key.kty(), &k.kid, &k.alg)))
            .finish()
    }
}

/// RSA moduli we accept, in bits: BoringSSL's upper bound; the `rsa` crate's lower one.
const RSA_BITS: std::ops::RangeInclusive<usize> = 1024..=16384;

impl Jwks {
    /// `inline`: true for RequestAuthentication `jwks` (inline); false for keys fetched from
    /// jwksUri. HS256/384/512 (`kty: oct`) keys are accepted only when inline (dropped
    /// otherwise): a shared secret has no business in a published key set.
    ///
    /// The error is Envoy's status text for the set.
    pub fn parse(json: &str, inline: bool) -> Result<Jwks, String> {
        let Some(set) = json_object(json.as_bytes()) else {
            return Err("Jwks is an invalid JSON".into());
        };
        // Envoy also reads a `{kid: x509 PEM}` map (Google's old format); Istio's inline
        // jwks and jwksUri documents are JWKS, so we do not.
        let list = match set.get("keys") {
            None => return Err("Jwks does not have [keys] field".into()),
            Some(Value::Array(list)) => list,
            Some(_) => return Err("[keys] in Jwks is not an array".into()),
        };
        let mut keys = Vec::with_capacity(list.len());
        let mut first_error = None;
        for jwk in list {
            let Value::Object(jwk) = jwk else {
                continue;
            };
            match parse_jwk(jwk) {
                Ok(jwk) if !inline && matches!(jwk.key, Key::Hmac(_)) => {}
                Ok(jwk) => keys.push(jwk),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if keys.is_empty() {
            let error = first_error.unwrap_or("Jwks doesn't have any valid public key");
            return Err(error.into());
        }
        Ok(Jwks { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Envoy's `StructUtils::GetString`: absent, a string, or the wrong type.
enum Field<'a> {
    Missing,
    Str(&'a str),
    WrongType,
}

fn field<'a>(jwk: &'a Map<String, Value>, name: &str) -> Field<'a> {
    match jwk.get(name) {
        None => Field::Missing,
        Some(Value::String(s)) => Field::Str(s),
        Some(_) => Field::WrongType,
    }
}

/// A required string member, with Envoy's texts for absent and not-a-string.
fn required<'a>(
    jwk: &'a Map<String, Value>,
    name: &str,
    missing: &'static str,
    wrong_type: &'static str,
) -> Result<&'a str, &'static str> {
    match field(jwk, name) {
        Field::Str(s) => Ok(s),
        Field::Missing => Err(missing),
        Field::WrongType => Err(wrong_type),
    }
}

fn parse_jwk(jwk: &Map<String, Value>) -> Result<Jwk, &'static str> {
    let kty = required(
        jwk,
        "kty",
        "[kty] is missing in [keys]",
        "[kty] is bad in [keys]",
    )?;
    // Optional; a non-string is ignored like an absent one.
    let opt = |name| match field(jwk, name) {
        Field::Str(s) => s.to_owned(),
        _ => String::new(),
    };
    let (kid, alg) = (opt("kid"), opt("alg"));
    let key = match kty {
        "RSA" => rsa_key(jwk, &alg)?,
        "EC" => ec_key(jwk, &alg)?,
        "oct" => hmac_key(jwk, &alg)?,
        "OKP" => okp_key(jwk, &alg)?,
        _ => return Err("[kty] is not supported in [keys]"),
    };
    Ok(Jwk { kid, alg, key })
}

fn rsa_key(jwk: &Map<String, Value>, alg: &str) -> Result<Key, &'static str> {
    if !alg.is_empty() && !alg.starts_with("RS") && !alg.starts_with("PS") {
        return Err("[alg] is not started with [RS] or [PS] for an RSA key");
    }
    let n = required(
        jwk,
        "n",
        "[n] field is missing for a RSA key",
        "[n] field is not string for a RSA key",
    )?;
    let e = required(
        jwk,
        "e",
        "[e] field is missing for a RSA key",
        "[e] field is not string for a RSA key",
    )?;
    const PARSE_ERROR: &str = "Jwks RSA [n] or [e] field is missing or has a parse error";
    let (Some(n), Some(e)) = (b64url(n), b64url(e)) else {
        return Err(PARSE_ERROR);
    };
    // Envoy takes only the two standard exponents.
    let e = match strip_zeros(&e) {
        [3] => 3u32,
        [1, 0, 1] => 65537,
        _ => return Err(PARSE_ERROR),
    };
    let n = strip_zeros(&n);
    if n.is_empty() {
        return Err(PARSE_ERROR);
    }
    let n = BoxedUint::from_be_slice_vartime(n);
    let key = RsaPublicKey::new_with_size_limits(n, BoxedUint::from(e), RSA_BITS)
        .map_err(|_| PARSE_ERROR)?;
    Ok(Key::Rsa(Box::new(key)))
}

#[derive(Clone, Copy)]
enum Curve {
    P256,
    P384,
}

fn ec_key(jwk: &Map<String, Value>, alg: &str) -> Result<Key, &'static str> {
    if !alg.is_empty() && !alg.starts_with("ES") {
        return Err("[alg] is not started with [ES] for an EC key");
    }
    let crv = match field(jwk, "crv") {
        Field::Str(crv) => crv,
        Field::Missing => "",
        Field::WrongType => return Err("[crv] field is not string for an EC key"),
    };
    if !alg.is_empty()
        && !crv.is_empty()
        && !matches!(
            (alg, crv),
            ("ES256", "P-256") | ("ES384", "P-384") | ("ES512", "P-521")
        )
    {
        return Err("[crv] field specified is not compatible with [alg] for an EC key");
    }
    // With neither alg nor crv, Envoy assumes P-256. P-521 (ES512) is Envoy's and not ours.
    let curve = if alg == "ES256" || crv == "P-256" || (alg.is_empty() && crv.is_empty()) {
        Curve::P256
    } else if alg == "ES384" || crv == "P-384" {
        Curve::P384
    } else {
        return Err("[crv] or [alg] field is not supported for an EC key");
    };
    let x = required(
        jwk,
        "x",
        "[x] field is missing for an EC key",
        "[x] field is not string for an EC key",
    )?;
    let y = required(
        jwk,
        "y",
        "[y] field is missing for an EC key",
        "[y] field is not string for an EC key",
    )?;
    let (Some(x), Some(y)) = (b64url(x), b64url(y)) else {
        return Err("Jwks EC [x] or [y] field is an invalid Base64.");
    };
    const PARSE_ERROR: &str = "Jwks EC [x] and [y] fields have a parse error.";
    // An uncompressed SEC1 point; BoringSSL reads the coordinates as big numbers, so shorter
    // (leading zeros dropped) or zero-padded ones are fine too.
    let size = match curve {
        Curve::P256 => 32,
        Curve::P384 => 48,
    };
    let mut point = vec![0u8; 1 + 2 * size];
    point[0] = 4;
    for (coordinate, at) in [(&x, 1), (&y, 1 + size)] {
        let c = strip_zeros(coordinate);
        if c.len() > size {
            return Err(PARSE_ERROR);
        }
        let end = at + size;
        point[end - c.len()..end].copy_from_slice(c);
    }
    Ok(match curve {
        Curve::P256 => {
            Key::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| PARSE_ERROR)?)
        }
        Curve::P384 => {
            Key::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| PARSE_ERROR)?)
        }
    })
}

fn hmac_key(jwk: &Map<String, Value>, alg: &str) -> Result<Key, &'static str> {
    if !alg.is_empty() && !matches!(alg, "HS256" | "HS384" | "HS512") {
        return Err("[alg] does not start with [HS] for an HMAC key");
    }
    let k = required(
        jwk,
        "k",
        "[k] field is missing for an HMAC key",
        "[k] field is not string for an HMAC key",
    )?;
    match b64url(k) {
        Some(k) if !k.is_empty() => Ok(Key::Hmac(k)),
        _ => Err("Jwks Oct key is an invalid Base64"),
    }
}

fn okp_key(jwk: &Map<String, Value>, alg: &str) -> Result<Key, &'static str> {
    if !alg.is_empty() && alg != "EdDSA" {
        return Err("[alg] is not [EdDSA] for an OKP key");
    }
    let crv = required(
        jwk,
        "crv",
        "[crv] field is missing for an OKP key",
        "[crv] field is not string for an OKP key",
    )?;
    if crv != "Ed25519" {
        return Err("[crv] field is not supported for an OKP key");
    }
    let x = required(
        jwk,
        "x",
        "[x] field is missing for an OKP key",
        "[x] field is not string for an OKP key",
    )?;
    let x = b64url(x).ok_or("Jwks OKP [x] field is an invalid Base64.")?;
    let x: [u8; 32] = x
        .as_slice()
        .try_into()
        .map_err(|_| "Jwks OKP [x] field is wrong length.")?;
    Ok(Key::Ed25519(
        ed25519_dalek::VerifyingKey::from_bytes(&x).ok(),
    ))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
