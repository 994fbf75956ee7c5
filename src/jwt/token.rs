//! Splitting and decoding a compact JWS, in the order and with the checks of Envoy's
//! `Jwt::parseFromString` (`source/common/jwt/jwt.cc`).

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{Map, Value};

use super::JwtError;

/// Base64url as absl's `WebSafeBase64Unescape` reads it: padding may be there or not, and the
/// unused low bits of the last character need not be zero (Envoy reads the JWK `x`
/// `...5k111` of jwt_verify_lib's JwksECWrongXY as 34 bytes, not as bad base64).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub(super) fn b64url(s: &str) -> Option<Vec<u8>> {
    B64URL.decode(s).ok()
}

/// The algorithms we verify: Envoy's list (`Jwt::parseFromString`); any other `alg` is
/// refused as not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }
}

/// A token split and decoded, not yet checked.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub(super) alg: Alg,
    /// Empty when the header has none (Envoy's convention: an empty kid matches every key).
    pub(super) kid: String,
    /// `header.payload` as sent: the bytes the signature covers.
    pub(super) signing_input: String,
    /// Where the payload starts in `signing_input`.
    pub(super) payload_at: usize,
    pub(super) signature: Vec<u8>,
    pub(super) claims: Map<String, Value>,
    pub(super) iss: Option<String>,
    pub(super) sub: Option<String>,
    /// 0 when absent, as in Envoy.
    pub(super) nbf: u64,
    /// 0 when absent, as in Envoy (a token with `exp: 0` never expires there either).
    pub(super) exp: u64,
    pub(super) audiences: Vec<String>,
}

impl Decoded {
    /// The `iss` claim, which picks the provider.
    pub fn issuer(&self) -> Option<&str> {
        self.iss.as_deref()
    }

    /// The header's `alg`.
    pub fn alg(&self) -> &'static str {
        self.alg.name()
    }

    /// The header's `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        (!self.kid.is_empty()).then_some(self.kid.as_str())
    }

    /// Every claim of the payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    pub(super) fn payload_b64(&self) -> &str {
        self.signing_input
            .get(self.payload_at..)
            .unwrap_or_default()
    }
}

/// Splits and decodes a compact JWS without verifying it (Envoy parses first, then checks).
/// All the work is linear in the token's length; JSON nesting is bounded by serde_json's
/// recursion limit.
pub fn decode(token: &str) -> Result<Decoded, JwtError> {
    // Envoy splits on '.' skipping empty pieces and wants exactly three.
    let mut parts = token.split('.').filter(|p| !p.is_empty());
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };

    let header = b64url(header_b64).ok_or(JwtError::HeaderBadBase64)?;
    let Some(header) = json_object(&header) else {
        return Err(JwtError::HeaderBadJson);
    };
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => Alg::parse(alg).ok_or(JwtError::AlgNotSupported)?,
        _ => return Err(JwtError::HeaderBadAlg),
    };
    let kid = optional_string(&header, "kid", JwtError::HeaderBadKid)?.unwrap_or_default();

    let payload = b64url(payload_b64).ok_or(JwtError::PayloadBadBase64)?;
    let Some(claims) = json_object(&payload) else {
        return Err(JwtError::PayloadBadJson);
    };
    let iss = optional_string(&claims, "iss", JwtError::IssNotString)?;
    let sub = optional_string(&claims, "sub", JwtError::SubNotString)?;
    time_claim(
        &claims,
        "iat",
        JwtError::IatNotInteger,
        JwtError::IatOutOfRange,
    )?;
    let nbf = time_claim(
        &claims,
        "nbf",
        JwtError::NbfNotInteger,
        JwtError::NbfOutOfRange,
    )?;
    let exp = time_claim(
        &claims,
        "exp",
        JwtError::ExpNotInteger,
        JwtError::ExpOutOfRange,
    )?;
    optional_string(&claims, "jti", JwtError::JtiNotString)?;
    let audiences = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(JwtError::AudNotString)?,
        Some(_) => return Err(JwtError::AudNotString),
    };

    let signature = b64url(signature_b64).ok_or(JwtError::SignatureBadBase64)?;

    let mut signing_input = String::with_capacity(header_b64.len() + 1 + payload_b64.len());
    signing_input.push_str(header_b64);
    signing_input.push('.');
    let payload_at = signing_input.len();
    signing_input.push_str(payload_b64);
    Ok(Decoded {
        alg,
        kid,
        signing_input,
        payload_at,
        signature,
        claims,
        iss,
        sub,
        nbf,
        exp,
        audiences,
    })
}

/// A JSON object, as a protobuf `Struct` takes it (see `super::json`).
pub(super) fn json_object(json: &[u8]) -> Option<Map<String, Value>> {
    match super::json::protobuf_json(json) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// A string member that may be absent but must be a string when present.
fn optional_string(
    map: &Map<String, Value>,
    key: &str,
    wrong_type: JwtError,
) -> Result<Option<String>, JwtError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type),
    }
}

/// A NumericDate as Envoy's `StructUtils::GetUInt64` reads it: any JSON number (so floats
/// too, truncated) in [0, 2^64); 0 when absent.
fn time_claim(
    map: &Map<String, Value>,
    key: &str,
    not_integer: JwtError,
    out_of_range: JwtError,
) -> Result<u64, JwtError> {
    match map.get(key) {
        None => Ok(0),
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_u64() {
                return Ok(n);
            }
            let f = n.as_f64().ok_or(out_of_range)?;
            if !(0.0..18_446_744_073_709_551_616.0).contains(&f) {
                return Err(out_of_range);
            }
            // In range: the cast truncates toward zero, as the C++ static_cast does.
            Ok(f as u64)
        }
        Some(_) => Err(not_integer),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn token(header: &str, payload: &str) -> String {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.{}", b64(header), b64(payload), b64("sig"))
    }

    const PAYLOAD: &str = r#"{"iss":"https://issuer","exp":4102444800}"#;

    #[test]
    fn a_header_with_two_algs_is_invalid_json_as_envoy_says() {
        let dup = r#"{"alg":"none","kid":"r1","alg":"RS256"}"#;
        assert_eq!(
            decode(&token(dup, PAYLOAD)).map(|d| d.alg()),
            Err(JwtError::HeaderBadJson)
        );
        let single = r#"{"kid":"r1","alg":"RS256"}"#;
        assert_eq!(
            decode(&token(single, PAYLOAD)).map(|d| d.alg()),
            Ok("RS256")
        );
    }

    #[test]
    fn a_trailing_comma_in_header_or_payload_is_read_as_protobuf_reads_it() {
        let header = r#"{"alg":"RS256","kid":"r1",}"#;
        let payload = r#"{"iss":"https://issuer","aud":["a","b",],"exp":4102444800,}"#;
        let d = decode(&token(header, payload)).unwrap();
        assert_eq!((d.alg(), d.issuer()), ("RS256", Some("https://issuer")));
        // One comma only, and never where no value was.
        for bad in [r#"{"alg":"RS256",,}"#, r#"{,"alg":"RS256"}"#] {
            assert_eq!(
                decode(&token(bad, PAYLOAD)).map(|d| d.alg()),
                Err(JwtError::HeaderBadJson)
            );
        }
    }

    #[test]
    fn a_payload_with_two_exps_is_invalid_json_as_envoy_says() {
        let header = r#"{"alg":"RS256"}"#;
        let dup = r#"{"iss":"https://issuer","exp":1,"exp":4102444800}"#;
        assert_eq!(
            decode(&token(header, dup)).map(|d| d.exp),
            Err(JwtError::PayloadBadJson)
        );
        assert_eq!(
            decode(&token(header, PAYLOAD)).map(|d| d.exp),
            Ok(4102444800)
        );
    }
}
