//! Why a token was refused, as Envoy's jwt_authn says it.

use std::fmt;

/// One variant per Envoy status a request can end with. The texts are Envoy's own
/// (`source/common/jwt/status.cc` in Envoy 1.40, formerly google/jwt_verify_lib), since Envoy
/// sends them as the body of its 401/403 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtError {
    Missing,
    MultipleTokens,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    /// `alg` is a string but not one we verify (`none` among them).
    AlgNotSupported,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    IatNotInteger,
    IatOutOfRange,
    NbfNotInteger,
    NbfOutOfRange,
    ExpNotInteger,
    ExpOutOfRange,
    JtiNotString,
    AudNotString,
    SignatureBadBase64,
    Ed25519SignatureWrongLength,
    UnknownIssuer,
    NotYetValid,
    Expired,
    /// The only one answered with 403.
    AudienceNotAllowed,
    VerificationFails,
    /// No key of the JWKS has the token's `kid` and `alg`.
    NoMatchingKey,
    /// The provider has no usable key (its inline JWKS did not parse).
    NoValidKeys,
    /// The provider's `jwksUri` could not be fetched.
    JwksFetchFailed,
}

impl JwtError {
    /// Envoy's status text, sent as the reply body.
    pub fn message(&self) -> &'static str {
        use JwtError::*;
        match self {
            Missing => "Jwt is missing",
            MultipleTokens => "Found multiple Jwt tokens",
            BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderBadJson => "Jwt header is an invalid JSON",
            HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            AlgNotSupported => "Jwt header [alg] is not supported",
            HeaderBadKid => "Jwt header [kid] field is not a string",
            PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadBadJson => "Jwt payload is an invalid JSON",
            IssNotString => "Jwt payload [iss] field is not a string",
            SubNotString => "Jwt payload [sub] field is not a string",
            IatNotInteger => "Jwt payload [iat] field is not an integer",
            IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            ExpNotInteger => "Jwt payload [exp] field is not an integer",
            ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            JtiNotString => "Jwt payload [jti] field is not a string",
            AudNotString => "Jwt payload [aud] field is not a string or string list",
            SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Ed25519SignatureWrongLength => "Jwt ED25519 signature is wrong length",
            UnknownIssuer => "Jwt issuer is not configured",
            NotYetValid => "Jwt not yet valid",
            Expired => "Jwt is expired",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            VerificationFails => "Jwt verification fails",
            NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            NoValidKeys => "Jwks doesn't have any valid public key",
            JwksFetchFailed => "Jwks remote fetch is failed",
        }
    }

    /// The reply status: 403 for a disallowed audience, 401 for everything else (Envoy's
    /// `Filter::onComplete`).
    pub fn status(&self) -> u16 {
        match self {
            JwtError::AudienceNotAllowed => 403,
            _ => 401,
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for JwtError {}
