//! JSON Web Key Sets, read as Envoy's `Jwks::createFromJwksCore` reads them
//! (`source/common/jwt/jwks.cc`): JSON as protobuf's parser takes it (trailing commas too), a
//! `{"keys": [...]}` set or Google's `{kid: "-----BEGIN CERTIFICATE-----..."}` map; a key that
//! does not parse is skipped; the set fails only when no key is left, with the first key's
//! error.

use std::fmt;

use der::asn1::{ObjectIdentifier, UintRef};
use der::{Decode, Reader, SliceReader};
use rsa::{BoxedUint, RsaPublicKey};
use serde_json::{Map, Value};

use super::json::protobuf_json;
use super::signature::{ec_spki, rsa_spki, Curve};
use super::token::b64url;
use crate::x509;

/// Why a key set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON, even as protobuf's parser reads it. Line and column (from 1) of the first
    /// character that is wrong.
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    /// JSON, but Envoy would find no usable key in it: Envoy's status text for the set.
    Unusable(&'static str),
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::Syntax {
                line,
                column,
                reason,
            } => write!(
                f,
                "Jwks is an invalid JSON: line {line} column {column}: {reason}"
            ),
            JwksError::Unusable(status) => f.write_str(status),
        }
    }
}

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

/// RSA and EC keys carry their DER `SubjectPublicKeyInfo` too, made once here: the form
/// Envoy's `verify_signature` takes (see `signature.rs`).
#[derive(Clone)]
pub(super) enum Key {
    Rsa {
        key: Box<RsaPublicKey>,
        spki: Vec<u8>,
    },
    Ec {
        key: EcKey,
        spki: Vec<u8>,
    },
    /// `None` for 32 bytes that are no curve point: BoringSSL keeps such a key and every
    /// signature then fails, so we keep it too.
    Ed25519(Option<ed25519_dalek::VerifyingKey>),
    Hmac(Vec<u8>),
}

#[derive(Clone)]
pub(super) enum EcKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

impl Key {
    fn kty(&self) -> &'static str {
        match self {
            Key::Rsa { .. } => "RSA",
            Key::Ec { .. } => "EC",
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
    /// The error is Envoy's status text for the set (a syntax error adds where it is).
    pub fn parse(json: &str, inline: bool) -> Result<Jwks, String> {
        Jwks::read(json, inline).map_err(|e| e.to_string())
    }

    /// As [`Jwks::parse`], telling a text that is not JSON from a set without a usable key.
    pub fn read(json: &str, inline: bool) -> Result<Jwks, JwksError> {
        let parsed = protobuf_json(json.as_bytes()).map_err(|e| JwksError::Syntax {
            line: e.line(),
            column: e.column(),
            reason: syntax_reason(&e),
        })?;
        let set = match parsed {
            Value::Object(set) => set,
            // protobuf reads `null` as an empty Struct.
            Value::Null => Map::new(),
            // protobuf's Struct takes only an object.
            _ => return Err(JwksError::Unusable("Jwks is an invalid JSON")),
        };
        let list = match set.get("keys") {
            None if is_x509_map(&set) => return x509_set(&set),
            None => return Err(JwksError::Unusable("Jwks does not have [keys] field")),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(JwksError::Unusable("[keys] in Jwks is not an array")),
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
            let error = first_error.unwrap_or(NO_VALID_KEYS);
            return Err(JwksError::Unusable(error));
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

const NO_VALID_KEYS: &str = "Jwks doesn't have any valid public key";

/// serde_json's message without its own " at line L column C" (the caller says where).
fn syntax_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

// ---- Google's X.509 certificate map (`{kid: PEM certificate}`) ----

const X509_PREFIX: &str = "-----BEGIN CERTIFICATE-----\n";
const X509_SUFFIX: &str = "\n-----END CERTIFICATE-----\n";

/// Envoy's `shouldCheckX509`: a non-empty object whose every member has a non-empty name and a
/// string value that starts and ends like one PEM certificate.
fn is_x509_map(set: &Map<String, Value>) -> bool {
    !set.is_empty()
        && set.iter().all(|(kid, v)| {
            !kid.is_empty()
                && v.as_str()
                    .is_some_and(|pem| pem.starts_with(X509_PREFIX) && pem.ends_with(X509_SUFFIX))
        })
}

/// Envoy's `createFromX509`: each member is a key whose kid is the member's name, read from
/// the certificate's public key, which must be RSA (Envoy takes it with `EVP_PKEY_get1_RSA`).
/// One certificate that fails fails the whole set.
fn x509_set(set: &Map<String, Value>) -> Result<Jwks, JwksError> {
    let mut keys = Vec::with_capacity(set.len());
    for (kid, pem) in set {
        let key = x509_rsa_key(pem.as_str().unwrap_or_default())?;
        keys.push(Jwk {
            kid: kid.clone(),
            alg: String::new(),
            key,
        });
    }
    Ok(Jwks { keys })
}

const X509_PARSE_ERROR: &str = "X509 parse pubkey fails";
const X509_PUBKEY_ERROR: &str = "X509 parse pubkey internal fails: get pubkey";
/// rsaEncryption (PKCS #1).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The RSA public key of the first PEM certificate in `pem` (BoringSSL's `PEM_read_bio_X509`,
/// then `X509_get_pubkey`).
fn x509_rsa_key(pem: &str) -> Result<Key, JwksError> {
    let parse_error = JwksError::Unusable(X509_PARSE_ERROR);
    let der = x509::pem_certificate(pem).ok_or(parse_error.clone())?;
    let cert = x509::Certificate::from_der(&der).ok_or(parse_error)?;
    let (oid, key) = cert.public_key();
    if oid != RSA_ENCRYPTION {
        return Err(JwksError::Unusable(X509_PUBKEY_ERROR));
    }
    rsa_public_key_der(key).ok_or(JwksError::Unusable(X509_PUBKEY_ERROR))
}

/// PKCS #1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key_der(der: &[u8]) -> Option<Key> {
    let mut reader = SliceReader::new(der).ok()?;
    let (n, e) = reader
        .sequence(|r| Ok::<_, der::Error>((UintRef::decode(r)?, UintRef::decode(r)?)))
        .ok()?;
    reader.finish().ok()?;
    rsa(n.as_bytes(), e.as_bytes())
}

/// An RSA key from its big-endian modulus and exponent, if the `rsa` crate takes it.
fn rsa(n: &[u8], e: &[u8]) -> Option<Key> {
    let key = RsaPublicKey::new_with_size_limits(
        BoxedUint::from_be_slice_vartime(n),
        BoxedUint::from_be_slice_vartime(e),
        RSA_BITS,
    )
    .ok()?;
    Some(Key::Rsa {
        key: Box::new(key),
        spki: rsa_spki(n, e),
    })
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
    let e = strip_zeros(&e);
    if !matches!(e, [3] | [1, 0, 1]) {
        return Err(PARSE_ERROR);
    }
    let n = strip_zeros(&n);
    if n.is_empty() {
        return Err(PARSE_ERROR);
    }
    rsa(n, e).ok_or(PARSE_ERROR)
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
    // With neither alg nor crv, Envoy assumes P-256.
    let curve = if alg == "ES256" || crv == "P-256" || (alg.is_empty() && crv.is_empty()) {
        Curve::P256
    } else if alg == "ES384" || crv == "P-384" {
        Curve::P384
    } else if alg == "ES512" || crv == "P-521" {
        Curve::P521
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
        Curve::P521 => 66,
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
    // What `from_sec1_bytes` does with an uncompressed point (the point must be on the curve,
    // and not the identity), without linking in its decompression of compressed points: a
    // square root per curve that no JWK needs (34 KB of the module).
    let (x, y) = point[1..].split_at(size);
    macro_rules! from_coordinates {
        ($curve:ident, $variant:ident) => {{
            use $curve::elliptic_curve::point::AffineCoordinates;
            let (Ok(x), Ok(y)) = (
                $curve::FieldBytes::try_from(x),
                $curve::FieldBytes::try_from(y),
            ) else {
                return Err(PARSE_ERROR);
            };
            Option::from($curve::AffinePoint::from_coordinates(&x, &y))
                .and_then(|p| $curve::ecdsa::VerifyingKey::from_affine(p).ok())
                .map(EcKey::$variant)
        }};
    }
    let key = match curve {
        Curve::P256 => from_coordinates!(p256, P256),
        Curve::P384 => from_coordinates!(p384, P384),
        Curve::P521 => from_coordinates!(p521, P521),
    };
    let key = key.ok_or(PARSE_ERROR)?;
    Ok(Key::Ec {
        key,
        spki: ec_spki(curve, &point),
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
