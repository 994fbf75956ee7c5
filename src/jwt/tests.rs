//! Tokens signed here with the committed test keys (`testdata/`, see its README) by the
//! signing side of the same RustCrypto crates, then checked as a request would be.

use std::rc::Rc;
use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use rsa::rand_core::SeedableRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};

use super::*;

const JWKS: &str = include_str!("testdata/jwks.json");
const ISS: &str = "https://issuer.example.com";
const AUD: &str = "api.example.com";
const NOW: u64 = 1_700_000_000;
const SKEW: u64 = 60;

const ALL_ALGS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

// ---- signing side (test only) ----

/// The DER inside a PEM block.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_der(&der(include_str!("testdata/rsa2048.pem"))).unwrap()
    })
}

fn p256_key(name: &str) -> p256::ecdsa::SigningKey {
    use p256::pkcs8::DecodePrivateKey;
    let pem = match name {
        "ec256" => include_str!("testdata/ec256.pem"),
        "ec256b" => include_str!("testdata/ec256b.pem"),
        _ => panic!("no P-256 key {name}"),
    };
    p256::ecdsa::SigningKey::from_pkcs8_der(&der(pem)).unwrap()
}

fn hmac_secret() -> Vec<u8> {
    let hex = include_str!("testdata/hmac.hex").trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hmac_sign<M: Mac + KeyInit>(msg: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(&hmac_secret()).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Signs `msg` for `alg` with the test key named `key` (a kid of testdata/jwks.json).
fn sign(alg: &str, key: &str, msg: &[u8]) -> Vec<u8> {
    let mut rng = chacha20::ChaCha8Rng::seed_from_u64(7);
    match (alg, key) {
        ("RS256", "rsa") => rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key().clone())
            .sign(msg)
            .to_vec(),
        ("RS384", "rsa") => rsa::pkcs1v15::SigningKey::<Sha384>::new(rsa_key().clone())
            .sign(msg)
            .to_vec(),
        ("RS512", "rsa") => rsa::pkcs1v15::SigningKey::<Sha512>::new(rsa_key().clone())
            .sign(msg)
            .to_vec(),
        ("PS256", "rsa") => rsa::pss::SigningKey::<Sha256>::new(rsa_key().clone())
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        ("PS384", "rsa") => rsa::pss::SigningKey::<Sha384>::new(rsa_key().clone())
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        ("PS512", "rsa") => rsa::pss::SigningKey::<Sha512>::new(rsa_key().clone())
            .sign_with_rng(&mut rng, msg)
            .to_vec(),
        ("ES256", "ec256" | "ec256b") => {
            let sig: p256::ecdsa::Signature = p256_key(key).sign(msg);
            sig.to_vec()
        }
        ("ES384", "ec384") => {
            use p384::pkcs8::DecodePrivateKey;
            let k =
                p384::ecdsa::SigningKey::from_pkcs8_der(&der(include_str!("testdata/ec384.pem")))
                    .unwrap();
            let sig: p384::ecdsa::Signature = k.sign(msg);
            sig.to_vec()
        }
        ("EdDSA", "ed25519") => {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let k = ed25519_dalek::SigningKey::from_pkcs8_der(&der(include_str!(
                "testdata/ed25519.pem"
            )))
            .unwrap();
            k.sign(msg).to_bytes().to_vec()
        }
        ("HS256", "hmac") => hmac_sign::<Hmac<Sha256>>(msg),
        ("HS384", "hmac") => hmac_sign::<Hmac<Sha384>>(msg),
        ("HS512", "hmac") => hmac_sign::<Hmac<Sha512>>(msg),
        _ => panic!("no test signer for {alg} with {key}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The test key that signs `alg` by default.
fn key_for(alg: &str) -> &'static str {
    match alg {
        a if a.starts_with("RS") || a.starts_with("PS") => "rsa",
        "ES256" => "ec256",
        "ES384" => "ec384",
        "EdDSA" => "ed25519",
        _ => "hmac",
    }
}

/// A token with this header and payload, signed with `key`.
fn make(header: &Value, claims: &Value, key: &str) -> String {
    let alg = header["alg"].as_str().unwrap_or("RS256");
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(alg, key, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "user-1", "aud": AUD, "iat": NOW, "exp": NOW + 3600})
}

/// A token for `alg`, signed with its default key, with that key's kid.
fn token(alg: &str, claims: &Value) -> String {
    let key = key_for(alg);
    make(&json!({"alg": alg, "typ": "JWT", "kid": key}), claims, key)
}

fn jwks() -> Jwks {
    Jwks::parse(JWKS, true).unwrap()
}

/// The test JWKS with only the keys `keep` says, each possibly rewritten.
fn jwks_with(keep: impl Fn(&mut serde_json::Map<String, Value>) -> bool, inline: bool) -> Jwks {
    let mut set: Value = serde_json::from_str(JWKS).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.retain_mut(|k| keep(k.as_object_mut().unwrap()));
    Jwks::parse(&set.to_string(), inline).unwrap()
}

fn expect(audiences: &[String]) -> Expectation<'_> {
    Expectation {
        issuer: ISS,
        audiences,
        now: NOW,
        clock_skew: SKEW,
    }
}

fn check(token: &str, expect: &Expectation, jwks: &Jwks) -> Result<Verified, JwtError> {
    verify(decode(token)?, expect, jwks, &InModule)
}

fn auds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---- algorithms ----

#[test]
fn every_algorithm_verifies_with_its_key() {
    let jwks = jwks();
    let audiences = auds(&[AUD]);
    for alg in ALL_ALGS {
        let t = token(alg, &claims());
        let v = check(&t, &expect(&audiences), &jwks).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.issuer, ISS, "{alg}");
        assert_eq!(v.subject, "user-1", "{alg}");
    }
}

/// The token with one bit of its signature changed.
fn flip_signature_byte(t: &str) -> String {
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 0x01;
    format!("{input}.{}", b64(&sig))
}

#[test]
fn every_algorithm_refuses_a_flipped_signature_byte() {
    let jwks = jwks();
    for alg in ALL_ALGS {
        let bad = flip_signature_byte(&token(alg, &claims()));
        assert_eq!(
            check(&bad, &expect(&[]), &jwks),
            Err(JwtError::VerificationFails),
            "{alg}"
        );
    }
}

#[test]
fn a_changed_payload_fails_the_signature() {
    let t = token("ES256", &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let mut other = claims();
    other["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(other.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        check(&forged, &expect(&[]), &jwks()),
        Err(JwtError::VerificationFails)
    );
}

#[test]
fn verified_token_exposes_claims_expiry_audiences_and_payload_as_sent() {
    let mut c = claims();
    c["aud"] = json!([AUD, "other"]);
    c["groups"] = json!(["a", "b"]);
    c["nbf"] = json!(NOW - 10);
    let t = token("EdDSA", &c);
    let v = check(&t, &expect(&[]), &jwks()).unwrap();
    assert_eq!(v.expires_at, Some(NOW + 3600));
    assert_eq!(v.not_before, Some(NOW - 10));
    assert_eq!(v.audiences, auds(&[AUD, "other"]));
    assert_eq!(v.claims["groups"], json!(["a", "b"]));
    assert_eq!(v.payload_b64, t.split('.').nth(1).unwrap());
}

#[test]
fn ps256_with_a_salt_other_than_the_digest_length_verifies_like_boringssl() {
    let header = json!({"alg": "PS256"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let mut rng = chacha20::ChaCha8Rng::seed_from_u64(9);
    let sig = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(rsa_key().clone(), 0)
        .sign_with_rng(&mut rng, input.as_bytes())
        .to_vec();
    let t = format!("{input}.{}", b64(&sig));
    assert!(check(&t, &expect(&[]), &jwks()).is_ok());
}

#[test]
fn es256_high_s_signature_verifies_like_boringssl() {
    let t = token("ES256", &claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let (r, s) = sig.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    let t = format!("{input}.{}", b64(&high.to_vec()));
    assert!(check(&t, &expect(&[]), &jwks()).is_ok());
}

#[test]
fn ed25519_signature_of_the_wrong_length_is_refused_with_envoys_status() {
    let t = token("EdDSA", &claims());
    let (input, _) = t.rsplit_once('.').unwrap();
    let t = format!("{input}.{}", b64(&[7u8; 63]));
    assert_eq!(
        check(&t, &expect(&[]), &jwks()),
        Err(JwtError::Ed25519SignatureWrongLength)
    );
}

#[test]
fn alg_none_is_not_supported() {
    let header = b64(br#"{"alg":"none"}"#);
    let payload = b64(claims().to_string().as_bytes());
    // With an empty signature the token has two sections only.
    assert_eq!(
        decode(&format!("{header}.{payload}.")).unwrap_err(),
        JwtError::BadFormat
    );
    assert_eq!(
        decode(&format!("{header}.{payload}.{}", b64(b"x"))).unwrap_err(),
        JwtError::AlgNotSupported
    );
    for alg in ["None", "ES521", "es512", "HS1", ""] {
        let header = b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
        let t = format!("{header}.{payload}.{}", b64(b"x"));
        assert_eq!(decode(&t).unwrap_err(), JwtError::AlgNotSupported, "{alg}");
    }
}

#[test]
fn alg_missing_or_not_a_string_is_a_bad_header() {
    let payload = b64(claims().to_string().as_bytes());
    for header in [r#"{"typ":"JWT"}"#, r#"{"alg":256}"#, r#"{"alg":null}"#] {
        let t = format!("{}.{payload}.{}", b64(header.as_bytes()), b64(b"x"));
        assert_eq!(decode(&t).unwrap_err(), JwtError::HeaderBadAlg, "{header}");
    }
}

// ---- HMAC keys ----

#[test]
fn hs256_verifies_with_an_inline_key() {
    let t = token("HS256", &claims());
    assert!(check(&t, &expect(&[]), &Jwks::parse(JWKS, true).unwrap()).is_ok());
}

#[test]
fn hs256_is_refused_with_keys_fetched_from_a_jwks_uri() {
    let fetched = Jwks::parse(JWKS, false).unwrap();
    assert_eq!(fetched.len(), jwks().len() - 1, "the oct key is dropped");
    let t = token("HS256", &claims());
    assert_eq!(
        check(&t, &expect(&[]), &fetched),
        Err(JwtError::NoMatchingKey)
    );
    let only_oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
    assert!(Jwks::parse(only_oct, true).is_ok());
    assert_eq!(
        Jwks::parse(only_oct, false).unwrap_err(),
        "Jwks doesn't have any valid public key"
    );
}

#[test]
fn an_rs256_token_is_never_checked_as_hmac_with_the_public_key() {
    // The classic confusion: HS256 "signed" with the RSA key's public modulus as secret.
    let jwk: Value = serde_json::from_str(JWKS).unwrap();
    let n = jwk["keys"][0]["n"].as_str().unwrap().to_owned();
    let header = b64(br#"{"alg":"HS256","kid":"rsa"}"#);
    let input = format!("{header}.{}", b64(claims().to_string().as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(n.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let t = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
    assert_eq!(
        check(&t, &expect(&[]), &jwks()),
        Err(JwtError::VerificationFails)
    );
}

// ---- key selection ----

#[test]
fn kid_selects_the_key() {
    let jwks = jwks();
    let signed_b = |kid: Option<&str>| {
        let mut h = json!({"alg": "ES256"});
        if let Some(kid) = kid {
            h["kid"] = json!(kid);
        }
        make(&h, &claims(), "ec256b")
    };
    assert!(check(&signed_b(Some("ec256b")), &expect(&[]), &jwks).is_ok());
    // Envoy tries every compatible key when the token names none.
    assert!(check(&signed_b(None), &expect(&[]), &jwks).is_ok());
    // The named key exists but did not sign it.
    assert_eq!(
        check(&signed_b(Some("ec256")), &expect(&[]), &jwks),
        Err(JwtError::VerificationFails)
    );
    assert_eq!(
        check(&signed_b(Some("nope")), &expect(&[]), &jwks),
        Err(JwtError::NoMatchingKey)
    );
}

#[test]
fn a_key_without_kid_matches_any_token_kid_as_in_envoy() {
    let jwks = jwks_with(
        |k| {
            k.remove("kid");
            k["kty"] == "EC"
        },
        true,
    );
    let t = make(
        &json!({"alg": "ES256", "kid": "rotated-1"}),
        &claims(),
        "ec256",
    );
    assert!(check(&t, &expect(&[]), &jwks).is_ok());
}

#[test]
fn jwk_alg_must_equal_the_token_alg() {
    let jwks = jwks_with(
        |k| {
            k.insert("alg".into(), json!("ES256"));
            k["kid"] == "ec256"
        },
        true,
    );
    assert!(check(&token("ES256", &claims()), &expect(&[]), &jwks).is_ok());
    let rs = make(&json!({"alg": "RS256"}), &claims(), "rsa");
    assert_eq!(
        check(&rs, &expect(&[]), &jwks),
        Err(JwtError::NoMatchingKey)
    );
}

#[test]
fn a_key_of_another_type_counts_as_matched_so_the_signature_fails() {
    // Envoy: the kid/alg filter passed, so the answer is "verification fails", not "no key".
    let jwks = jwks_with(|k| k["kty"] == "RSA", true);
    let t = make(&json!({"alg": "ES256"}), &claims(), "ec256");
    assert_eq!(
        check(&t, &expect(&[]), &jwks),
        Err(JwtError::VerificationFails)
    );
}

// ---- issuer, time, audiences ----

#[test]
fn wrong_issuer_is_unknown() {
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    let t = token("ES256", &c);
    let err = check(&t, &expect(&[]), &jwks()).unwrap_err();
    assert_eq!(err, JwtError::UnknownIssuer);
    assert_eq!(
        (err.status(), err.message()),
        (401, "Jwt issuer is not configured")
    );
}

#[test]
fn expired_beyond_the_skew_is_refused() {
    let mut c = claims();
    c["exp"] = json!(NOW - SKEW - 1);
    let err = check(&token("ES256", &c), &expect(&[]), &jwks()).unwrap_err();
    assert_eq!(
        (err, err.status(), err.message()),
        (JwtError::Expired, 401, "Jwt is expired")
    );
}

#[test]
fn expired_within_the_skew_is_accepted() {
    let mut c = claims();
    c["exp"] = json!(NOW - SKEW);
    assert!(check(&token("ES256", &c), &expect(&[]), &jwks()).is_ok());
}

#[test]
fn not_yet_valid_beyond_the_skew_is_refused() {
    let mut c = claims();
    c["nbf"] = json!(NOW + SKEW + 1);
    let err = check(&token("ES256", &c), &expect(&[]), &jwks()).unwrap_err();
    assert_eq!(
        (err, err.message()),
        (JwtError::NotYetValid, "Jwt not yet valid")
    );
}

#[test]
fn not_yet_valid_within_the_skew_is_accepted() {
    let mut c = claims();
    c["nbf"] = json!(NOW + SKEW);
    assert!(check(&token("ES256", &c), &expect(&[]), &jwks()).is_ok());
}

#[test]
fn time_claims_may_be_floats_and_must_be_non_negative_numbers() {
    let mut c = claims();
    c["exp"] = json!((NOW + 100) as f64 + 0.75);
    c["nbf"] = json!(NOW as f64 - 0.5);
    let v = check(&token("HS256", &c), &expect(&[]), &jwks()).unwrap();
    assert_eq!(v.expires_at, Some(NOW + 100));
    for (claim, value, err) in [
        ("exp", json!("soon"), JwtError::ExpNotInteger),
        ("exp", json!(-1), JwtError::ExpOutOfRange),
        ("nbf", json!(true), JwtError::NbfNotInteger),
        ("nbf", json!(-5.5), JwtError::NbfOutOfRange),
        ("iat", json!([1]), JwtError::IatNotInteger),
        ("iat", json!(1e20), JwtError::IatOutOfRange),
    ] {
        let mut c = claims();
        c[claim] = value;
        assert_eq!(decode(&token("HS256", &c)).unwrap_err(), err, "{claim}");
    }
}

#[test]
fn no_exp_never_expires_as_in_envoy() {
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    let v = check(&token("EdDSA", &c), &expect(&[]), &jwks()).unwrap();
    assert_eq!(v.expires_at, None);
}

#[test]
fn wrong_audience_is_forbidden() {
    let audiences = auds(&["other.example.com"]);
    let err = check(&token("ES256", &claims()), &expect(&audiences), &jwks()).unwrap_err();
    assert_eq!(err, JwtError::AudienceNotAllowed);
    assert_eq!(
        (err.status(), err.message()),
        (403, "Audiences in Jwt are not allowed")
    );
}

#[test]
fn one_matching_audience_of_a_list_is_enough() {
    let mut c = claims();
    c["aud"] = json!(["nope", AUD]);
    let audiences = auds(&["x", AUD]);
    assert!(check(&token("ES256", &c), &expect(&audiences), &jwks()).is_ok());
}

#[test]
fn audiences_compare_without_scheme_and_trailing_slash() {
    // Envoy's jwks_cache_test: config [example_service, http://example_service1,
    // https://example_service2/].
    let audiences = auds(&[
        "example_service",
        "http://example_service1",
        "https://example_service2/",
    ]);
    for (aud, ok) in [
        ("http://example_service/", true),
        ("https://example_service1/", true),
        ("http://example_service2", true),
        ("example_service3", false),
        ("ftp://example_service", false),
    ] {
        let mut c = claims();
        c["aud"] = json!(aud);
        let r = check(&token("HS256", &c), &expect(&audiences), &jwks());
        assert_eq!(r.is_ok(), ok, "{aud}: {r:?}");
    }
}

#[test]
fn a_token_without_aud_is_forbidden_when_audiences_are_required() {
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    let t = token("HS256", &c);
    assert!(check(&t, &expect(&[]), &jwks()).is_ok());
    let audiences = auds(&[AUD]);
    assert_eq!(
        check(&t, &expect(&audiences), &jwks()),
        Err(JwtError::AudienceNotAllowed)
    );
}

#[test]
fn checks_run_in_envoys_order() {
    // Expired, wrong audience and a bad signature at once: time comes first.
    let mut c = claims();
    c["exp"] = json!(NOW - 3600);
    c["aud"] = json!("elsewhere");
    let t = make(&json!({"alg": "ES256", "kid": "ec256"}), &c, "ec256b");
    let audiences = auds(&[AUD]);
    assert_eq!(
        check(&t, &expect(&audiences), &jwks()),
        Err(JwtError::Expired)
    );
    // Then audiences, then the signature.
    c["exp"] = json!(NOW + 3600);
    let t = make(&json!({"alg": "ES256", "kid": "ec256"}), &c, "ec256b");
    assert_eq!(
        check(&t, &expect(&audiences), &jwks()),
        Err(JwtError::AudienceNotAllowed)
    );
    assert_eq!(
        check(&t, &expect(&[]), &jwks()),
        Err(JwtError::VerificationFails)
    );
}

// ---- malformed tokens ----

#[test]
fn a_token_needs_exactly_three_sections() {
    let t = token("HS256", &claims());
    let parts: Vec<&str> = t.split('.').collect();
    for bad in [
        "".to_string(),
        parts[0].to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{t}.{}", parts[2]),
        format!("{}..{}", parts[0], parts[2]),
        "...".to_string(),
    ] {
        assert_eq!(decode(&bad).unwrap_err(), JwtError::BadFormat, "{bad}");
    }
    assert_eq!(
        JwtError::BadFormat.message(),
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
}

#[test]
fn bad_base64_or_json_in_each_section_is_named() {
    let t = token("HS256", &claims());
    let p: Vec<&str> = t.split('.').collect();
    let arr = b64(b"[1,2]");
    let cases = [
        (
            format!("*{}.{}.{}", p[0], p[1], p[2]),
            JwtError::HeaderBadBase64,
        ),
        (
            format!("{}.{}.{}", b64(b"{alg"), p[1], p[2]),
            JwtError::HeaderBadJson,
        ),
        (format!("{arr}.{}.{}", p[1], p[2]), JwtError::HeaderBadJson),
        (
            format!("{}.{}!.{}", p[0], p[1], p[2]),
            JwtError::PayloadBadBase64,
        ),
        (
            format!("{}.{}.{}", p[0], b64(b"not json"), p[2]),
            JwtError::PayloadBadJson,
        ),
        (format!("{}.{arr}.{}", p[0], p[2]), JwtError::PayloadBadJson),
        (
            format!("{}.{}.{}+", p[0], p[1], p[2]),
            JwtError::SignatureBadBase64,
        ),
    ];
    for (bad, err) in cases {
        assert_eq!(decode(&bad).unwrap_err(), err, "{bad}");
    }
    assert_eq!(
        JwtError::HeaderBadBase64.message(),
        "Jwt header is an invalid Base64url encoded"
    );
    assert_eq!(
        JwtError::HeaderBadJson.message(),
        "Jwt header is an invalid JSON"
    );
}

#[test]
fn padded_base64url_sections_are_read() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"hmac"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let input = format!("{header}.{payload}");
    let sig =
        base64::engine::general_purpose::URL_SAFE.encode(sign("HS256", "hmac", input.as_bytes()));
    assert!(sig.ends_with('='));
    assert!(check(&format!("{input}.{sig}"), &expect(&[]), &jwks()).is_ok());
}

#[test]
fn claims_of_the_wrong_type_are_named() {
    for (claim, value, err) in [
        ("iss", json!(1), JwtError::IssNotString),
        ("sub", json!({"id": 1}), JwtError::SubNotString),
        ("jti", json!(7), JwtError::JtiNotString),
        ("aud", json!(7), JwtError::AudNotString),
        ("aud", json!(["ok", 7]), JwtError::AudNotString),
    ] {
        let mut c = claims();
        c[claim] = value;
        assert_eq!(decode(&token("HS256", &c)).unwrap_err(), err, "{claim}");
    }
    let t = make(&json!({"alg": "HS256", "kid": 5}), &claims(), "hmac");
    assert_eq!(decode(&t).unwrap_err(), JwtError::HeaderBadKid);
}

#[test]
fn oversize_garbage_fails_cleanly() {
    let garbage: String = (0..40_000u32)
        .map(|i| char::from(b"AZaz09-_~!.%"[(i as usize * 7919) % 12]))
        .collect();
    assert!(decode(&garbage).is_err());
    assert_eq!(
        decode(&".".repeat(40_000)).unwrap_err(),
        JwtError::BadFormat
    );
    assert_eq!(
        decode(&"a.".repeat(20_000)).unwrap_err(),
        JwtError::BadFormat
    );
    // Three long, valid base64url sections that are no JSON.
    let big = "A".repeat(13_332);
    assert_eq!(
        decode(&format!("{big}.{big}.{big}")).unwrap_err(),
        JwtError::HeaderBadJson
    );
    // Nesting past serde_json's recursion limit is an error, not a stack overflow.
    let header = b64(br#"{"alg":"HS256"}"#);
    let deep = b64(format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).as_bytes());
    assert_eq!(
        decode(&format!("{header}.{deep}.{}", b64(b"x"))).unwrap_err(),
        JwtError::PayloadBadJson
    );
    // A big but well-formed token is decoded, then refused by its signature.
    let mut c = claims();
    c["pad"] = json!("x".repeat(40_000));
    let t = token("HS256", &c);
    let (input, _) = t.rsplit_once('.').unwrap();
    let bad = format!("{input}.{}", b64(&[0u8; 32]));
    assert_eq!(
        check(&bad, &expect(&[]), &jwks()),
        Err(JwtError::VerificationFails)
    );
}

// ---- JWKS ----

#[test]
fn jwks_reads_every_key_type() {
    let jwks = jwks();
    assert_eq!(jwks.len(), 6);
    assert!(!jwks.is_empty());
    let debug = format!("{jwks:?}");
    assert!(
        debug.contains("\"hmac\"") && debug.contains("RSA"),
        "{debug}"
    );
    // No key material in logs, the HMAC secret least of all.
    let set: Value = serde_json::from_str(JWKS).unwrap();
    assert!(!debug.contains(set["keys"][5]["k"].as_str().unwrap()));
}

#[test]
fn jwks_set_errors_use_envoys_text() {
    for (json, err) in [
        ("[]", "Jwks is an invalid JSON"),
        ("{}", "Jwks does not have [keys] field"),
        (r#"{"keys":{}}"#, "[keys] in Jwks is not an array"),
        (r#"{"keys":[]}"#, "Jwks doesn't have any valid public key"),
        (
            r#"{"keys":[1,"x"]}"#,
            "Jwks doesn't have any valid public key",
        ),
    ] {
        assert_eq!(Jwks::parse(json, true).unwrap_err(), err, "{json}");
    }
    // Not JSON: Envoy's text, then where (see jwks_that_protobuf_refuses_...).
    assert!(Jwks::parse("not json", true)
        .unwrap_err()
        .starts_with("Jwks is an invalid JSON: line 1 column 2: "));
}

#[test]
fn jwks_without_a_good_key_reports_the_first_keys_error() {
    let json = r#"{"keys":[{"kty":"RSA","n":"AQAB"},{"kty":"EC","crv":"P-256"}]}"#;
    assert_eq!(
        Jwks::parse(json, true).unwrap_err(),
        "[e] field is missing for a RSA key"
    );
}

#[test]
fn jwks_skips_bad_keys_and_keeps_good_ones() {
    let mut set: Value = serde_json::from_str(JWKS).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.insert(
        0,
        json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
    );
    keys.insert(0, json!({"kid": "no-kty"}));
    let jwks = Jwks::parse(&set.to_string(), true).unwrap();
    assert_eq!(jwks.len(), 6);
    assert!(check(&token("ES256", &claims()), &expect(&[]), &jwks).is_ok());
}

#[test]
fn jwk_errors_use_envoys_text() {
    let set: Value = serde_json::from_str(JWKS).unwrap();
    let key = |kid: &str| {
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    };
    let with = |kid: &str, field: &str, value: Value| {
        let mut k = key(kid);
        k[field] = value;
        k
    };
    let without = |kid: &str, field: &str| {
        let mut k = key(kid);
        k.as_object_mut().unwrap().remove(field);
        k
    };
    let cases = [
        (without("rsa", "kty"), "[kty] is missing in [keys]"),
        (with("rsa", "kty", json!(1)), "[kty] is bad in [keys]"),
        (
            with("rsa", "kty", json!("DSA")),
            "[kty] is not supported in [keys]",
        ),
        (
            with("rsa", "alg", json!("ES256")),
            "[alg] is not started with [RS] or [PS] for an RSA key",
        ),
        (without("rsa", "n"), "[n] field is missing for a RSA key"),
        (
            with("rsa", "n", json!(1)),
            "[n] field is not string for a RSA key",
        ),
        (
            with("rsa", "e", json!(1)),
            "[e] field is not string for a RSA key",
        ),
        (
            with("rsa", "e", json!("Aw!")),
            "Jwks RSA [n] or [e] field is missing or has a parse error",
        ),
        // Only e = 3 or 65537, as in Envoy.
        (
            with("rsa", "e", json!("BQ")),
            "Jwks RSA [n] or [e] field is missing or has a parse error",
        ),
        (
            with("rsa", "n", json!("AQAB")),
            "Jwks RSA [n] or [e] field is missing or has a parse error",
        ),
        (
            with("ec256", "alg", json!("RS256")),
            "[alg] is not started with [ES] for an EC key",
        ),
        (
            with("ec256", "crv", json!(1)),
            "[crv] field is not string for an EC key",
        ),
        (
            with("ec256", "alg", json!("ES384")),
            "[crv] field specified is not compatible with [alg] for an EC key",
        ),
        (
            with("ec256", "crv", json!("P-192")),
            "[crv] or [alg] field is not supported for an EC key",
        ),
        (
            // The P-256 point is not on P-521.
            with("ec256", "crv", json!("P-521")),
            "Jwks EC [x] and [y] fields have a parse error.",
        ),
        (without("ec256", "x"), "[x] field is missing for an EC key"),
        (
            with("ec256", "y", json!(2)),
            "[y] field is not string for an EC key",
        ),
        (
            with("ec256", "x", json!("%%")),
            "Jwks EC [x] or [y] field is an invalid Base64.",
        ),
        (
            with("ec256", "y", json!("AAAA")),
            "Jwks EC [x] and [y] fields have a parse error.",
        ),
        (
            with("hmac", "alg", json!("RS256")),
            "[alg] does not start with [HS] for an HMAC key",
        ),
        (without("hmac", "k"), "[k] field is missing for an HMAC key"),
        (
            with("hmac", "k", json!(1)),
            "[k] field is not string for an HMAC key",
        ),
        (
            with("hmac", "k", json!("")),
            "Jwks Oct key is an invalid Base64",
        ),
        (
            with("ed25519", "alg", json!("ES256")),
            "[alg] is not [EdDSA] for an OKP key",
        ),
        (
            without("ed25519", "crv"),
            "[crv] field is missing for an OKP key",
        ),
        (
            with("ed25519", "crv", json!(1)),
            "[crv] field is not string for an OKP key",
        ),
        (
            with("ed25519", "crv", json!("Ed448")),
            "[crv] field is not supported for an OKP key",
        ),
        (
            without("ed25519", "x"),
            "[x] field is missing for an OKP key",
        ),
        (
            with("ed25519", "x", json!(1)),
            "[x] field is not string for an OKP key",
        ),
        (
            with("ed25519", "x", json!("*")),
            "Jwks OKP [x] field is an invalid Base64.",
        ),
        (
            with("ed25519", "x", json!("AAAA")),
            "Jwks OKP [x] field is wrong length.",
        ),
    ];
    for (jwk, err) in cases {
        let json = json!({ "keys": [jwk] }).to_string();
        assert_eq!(Jwks::parse(&json, true).unwrap_err(), err, "{json}");
    }
}

#[test]
fn jwk_numbers_with_leading_zeros_and_an_ec_key_without_crv_are_read() {
    let jwks = jwks_with(
        |k| {
            if k["kty"] == "RSA" {
                let n = URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap();
                k["n"] = json!(b64(&[&[0u8][..], &n].concat()));
                k["e"] = json!(b64(&[0, 1, 0, 1]));
            }
            if k["kid"] == "ec256" {
                k.remove("crv"); // Envoy assumes P-256.
            }
            k["kty"] == "RSA" || k["kid"] == "ec256"
        },
        true,
    );
    assert!(check(&token("RS256", &claims()), &expect(&[]), &jwks).is_ok());
    assert!(check(&token("ES256", &claims()), &expect(&[]), &jwks).is_ok());
}

// ---- cache ----

fn verified(exp: Option<u64>) -> Rc<Verified> {
    Rc::new(Verified {
        issuer: ISS.into(),
        subject: "user-1".into(),
        claims: Default::default(),
        expires_at: exp,
        not_before: None,
        audiences: vec![],
        payload_b64: String::new(),
    })
}

#[test]
fn cache_hit_returns_the_verified_token() {
    let mut cache = TokenCache::new(10);
    let t = token("ES256", &claims());
    assert!(cache.get(&t, NOW).is_none());
    let v = Rc::new(check(&t, &expect(&[]), &jwks()).unwrap());
    cache.insert(&t, Rc::clone(&v), NOW);
    let hit = cache.get(&t, NOW + 1).unwrap();
    assert!(Rc::ptr_eq(&hit, &v));
    // Another token (even one differing in the signature only) is a miss.
    let other = format!("{}A", &t[..t.len() - 1]);
    assert!(cache.get(&other, NOW).is_none());
}

#[test]
fn cache_entry_expires_at_the_tokens_exp() {
    let mut cache = TokenCache::new(10);
    cache.insert("t", verified(Some(NOW + 100)), NOW);
    assert!(cache.get("t", NOW + 100).is_some());
    assert!(cache.get("t", NOW + 101).is_none());
    assert!(cache.is_empty(), "an expired entry is dropped when met");
    // Already expired: not stored.
    cache.insert("old", verified(Some(NOW - 1)), NOW);
    assert!(cache.is_empty());
}

#[test]
fn cache_keeps_tokens_without_exp_for_max_age() {
    let mut cache = TokenCache::with_max_age(10, 30);
    cache.insert("t", verified(None), NOW);
    assert!(cache.get("t", NOW + 30).is_some());
    assert!(cache.get("t", NOW + 31).is_none());
    let mut default = TokenCache::new(1);
    default.insert("t", verified(None), NOW);
    assert!(default.get("t", NOW + DEFAULT_MAX_AGE).is_some());
    assert!(default.get("t", NOW + DEFAULT_MAX_AGE + 1).is_none());
}

#[test]
fn cache_evicts_the_least_recently_used_at_capacity() {
    let mut cache = TokenCache::new(2);
    cache.insert("a", verified(None), NOW);
    cache.insert("b", verified(None), NOW);
    assert!(cache.get("a", NOW).is_some()); // b is now the least recently used
    cache.insert("c", verified(None), NOW);
    assert_eq!(cache.len(), 2);
    assert!(cache.get("b", NOW).is_none());
    assert!(cache.get("a", NOW).is_some());
    assert!(cache.get("c", NOW).is_some());
}

#[test]
fn cache_skips_long_tokens_and_zero_capacity() {
    let mut cache = TokenCache::new(2);
    let long = "x".repeat(MAX_CACHED_TOKEN_LEN + 1);
    cache.insert(&long, verified(None), NOW);
    assert!(cache.get(&long, NOW).is_none());
    let mut none = TokenCache::new(0);
    none.insert("a", verified(None), NOW);
    assert!(none.get("a", NOW).is_none());
}

#[test]
fn cache_behaves_like_a_plain_lru_under_a_long_mixed_sequence() {
    // A simple O(n) model (most recent last) against the O(1) cache.
    let mut cache = TokenCache::with_max_age(8, 50);
    let mut model: Vec<(String, u64)> = Vec::new();
    let mut seed = 1u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut now = NOW;
    for step in 0..5000 {
        now += next() % 3;
        let key = format!("tok{}", next() % 20);
        if next() % 2 == 0 {
            let exp = (next() % 4 != 0).then(|| now + next() % 40);
            cache.insert(&key, verified(exp), now);
            model.retain(|(k, _)| *k != key);
            let until = exp.unwrap_or(now + 50);
            if until >= now {
                if model.len() == 8 {
                    model.remove(0);
                }
                model.push((key, until));
            }
        } else {
            let got = cache.get(&key, now).is_some();
            let pos = model.iter().position(|(k, _)| *k == key);
            let want = match pos {
                Some(i) if model[i].1 >= now => {
                    let e = model.remove(i);
                    model.push(e);
                    true
                }
                Some(i) => {
                    model.remove(i);
                    false
                }
                None => false,
            };
            assert_eq!(got, want, "step {step} {key}");
        }
        assert_eq!(cache.len(), model.len(), "step {step}");
    }
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn a_cached_token_is_rechecked_for_another_providers_audiences() {
    let t = token("ES256", &claims());
    let v = check(&t, &expect(&[]), &jwks()).unwrap();
    assert_eq!(v.check(&expect(&[])), Ok(()));
    let audiences = auds(&["other"]);
    assert_eq!(
        v.check(&expect(&audiences)),
        Err(JwtError::AudienceNotAllowed)
    );
    let later = Expectation {
        now: NOW + 3600 + SKEW + 1,
        ..expect(&[])
    };
    assert_eq!(v.check(&later), Err(JwtError::Expired));
}

// ---- cost ----

/// Decode + verify time per algorithm (not run by default):
/// `cargo test --release --lib jwt::tests::verify_cost -- --ignored --nocapture`, natively
/// or with `--target wasm32-wasip1` for the Wasm VM's number.
#[test]
#[ignore]
fn verify_cost() {
    let jwks = jwks();
    for alg in ALL_ALGS {
        let t = token(alg, &claims());
        let rounds = if alg.starts_with("HS") { 5000 } else { 100 };
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                let d = decode(std::hint::black_box(&t)).unwrap();
                std::hint::black_box(verify(d, &expect(&[]), &jwks, &InModule).unwrap());
            }
            best = best.min(start.elapsed().as_secs_f64() / f64::from(rounds));
        }
        println!("{alg}\t{:.1} us", best * 1e6);
    }
}

// ---- ES512 (P-521) ----

fn p521_key() -> p521::ecdsa::SigningKey {
    use p521::pkcs8::DecodePrivateKey;
    p521::ecdsa::SigningKey::from_pkcs8_der(&der(include_str!("testdata/ec521.pem"))).unwrap()
}

/// The public JWK of testdata/ec521.pem.
fn p521_jwk() -> Value {
    let point = p521::ecdsa::VerifyingKey::from(&p521_key()).to_sec1_point(false);
    let bytes = point.as_bytes();
    json!({"kty": "EC", "crv": "P-521", "alg": "ES512", "kid": "ec521",
           "x": b64(&bytes[1..67]), "y": b64(&bytes[67..])})
}

fn es512_token(claims: &Value) -> String {
    let header = json!({"alg": "ES512", "typ": "JWT", "kid": "ec521"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig: p521::ecdsa::Signature = p521_key().sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

#[test]
fn es512_verifies_with_a_p521_key_as_in_envoy() {
    let jwks = Jwks::parse(&json!({"keys": [p521_jwk()]}).to_string(), false).unwrap();
    let t = es512_token(&claims());
    assert_eq!(decode(&t).unwrap().alg(), "ES512");
    assert_eq!(check(&t, &expect(&[]), &jwks).unwrap().subject, "user-1");
    // A flipped byte anywhere in the 132-byte r||s fails.
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(sig.len(), 132);
    sig[100] ^= 1;
    let forged = format!("{input}.{}", b64(&sig));
    assert_eq!(
        check(&forged, &expect(&[]), &jwks),
        Err(JwtError::VerificationFails)
    );
}

#[test]
fn p521_key_is_picked_by_crv_or_alg_alone() {
    for drop in ["crv", "alg"] {
        let mut jwk = p521_jwk();
        jwk.as_object_mut().unwrap().remove(drop);
        let jwks = Jwks::parse(&json!({"keys": [jwk]}).to_string(), false).unwrap();
        assert!(
            check(&es512_token(&claims()), &expect(&[]), &jwks).is_ok(),
            "{drop}"
        );
    }
}

#[test]
fn an_ec_key_is_checked_with_the_tokens_digest_whatever_its_curve() {
    // Envoy's verifyJwtWithoutTimeChecking: a kid-matched EC key without alg is tried with
    // the token's digest (ES384 -> SHA-384) on the key's own curve.
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use sha2::Digest;
    let header = json!({"alg": "ES384", "kid": "ec256"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let digest = Sha384::digest(input.as_bytes());
    let sig: p256::ecdsa::Signature = p256_key("ec256").sign_prehash(&digest).unwrap();
    let t = format!("{input}.{}", b64(&sig.to_bytes()));
    let no_alg = jwks_with(
        |k| {
            k.remove("alg");
            k["kid"] == "ec256"
        },
        false,
    );
    assert!(check(&t, &expect(&[]), &no_alg).is_ok());
    // With the JWK's alg ES256 the key does not match an ES384 token at all.
    let with_alg = jwks_with(
        |k| {
            k.insert("alg".into(), json!("ES256"));
            k["kid"] == "ec256"
        },
        false,
    );
    assert_eq!(
        check(&t, &expect(&[]), &with_alg),
        Err(JwtError::NoMatchingKey)
    );
}

#[test]
fn an_ecdsa_signature_is_read_as_two_halves_like_boringssl() {
    let t = token("ES256", &claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let (r, s) = sig.split_at(32);
    // Zero-padded halves are the same numbers; an odd last byte is left out.
    let padded = [&[0u8][..], r, &[0u8][..], s].concat();
    let odd = [&sig[..], &[0xff][..]].concat();
    for sig in [padded, odd] {
        let t = format!("{input}.{}", b64(&sig));
        assert!(check(&t, &expect(&[]), &jwks()).is_ok(), "{}", sig.len());
    }
    // A DER-encoded signature is not r||s.
    let der_sig = p256::ecdsa::Signature::from_slice(&sig).unwrap().to_der();
    let t = format!("{input}.{}", b64(der_sig.as_bytes()));
    assert_eq!(
        check(&t, &expect(&[]), &jwks()),
        Err(JwtError::VerificationFails)
    );
}

// ---- Google's X.509 certificate map ----

const RSA_CERT: &str = include_str!("testdata/rsa2048.crt");
const EC_CERT: &str = include_str!("testdata/ec256.crt");

fn cert_map(entries: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Value::Object(map).to_string()
}

#[test]
fn x509_certificate_map_verifies_with_each_certificates_rsa_key() {
    let jwks = Jwks::parse(&cert_map(&[("kid-a", RSA_CERT)]), false).unwrap();
    assert_eq!(jwks.len(), 1);
    // The member name is the kid; the key has no alg, so RS* and PS* both verify.
    for alg in ["RS256", "PS512"] {
        let t = make(&json!({"alg": alg, "kid": "kid-a"}), &claims(), "rsa");
        assert!(check(&t, &expect(&[]), &jwks).is_ok(), "{alg}");
    }
    let t = make(&json!({"alg": "RS256", "kid": "kid-b"}), &claims(), "rsa");
    assert_eq!(check(&t, &expect(&[]), &jwks), Err(JwtError::NoMatchingKey));
}

#[test]
fn x509_map_errors_use_envoys_text() {
    let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
    let truncated = format!(
        "{}\n-----END CERTIFICATE-----\n",
        &RSA_CERT[..RSA_CERT.len() / 2]
    );
    for (json, err) in [
        // Envoy reads only RSA keys from certificates (EVP_PKEY_get1_RSA).
        (
            cert_map(&[("k", EC_CERT)]),
            "X509 parse pubkey internal fails: get pubkey",
        ),
        (cert_map(&[("k", garbage)]), "X509 parse pubkey fails"),
        (cert_map(&[("k", &truncated)]), "X509 parse pubkey fails"),
        // One bad certificate fails the whole map.
        (
            cert_map(&[("a", RSA_CERT), ("b", garbage)]),
            "X509 parse pubkey fails",
        ),
        // Not a certificate map (Envoy's shouldCheckX509): no [keys].
        (
            cert_map(&[("k", RSA_CERT.trim_end())]),
            "Jwks does not have [keys] field",
        ),
        (
            cert_map(&[("", RSA_CERT)]),
            "Jwks does not have [keys] field",
        ),
        (
            json!({"k": RSA_CERT, "n": 1}).to_string(),
            "Jwks does not have [keys] field",
        ),
    ] {
        assert_eq!(Jwks::parse(&json, true).unwrap_err(), err, "{json}");
    }
}

// ---- JSON as protobuf reads it ----

#[test]
fn jwks_with_trailing_commas_loads_as_in_envoy() {
    let key = r#"{"kty":"oct","kid":"hmac","k":"c2VjcmV0",}"#;
    for json in [
        format!(r#"{{"keys":[{key},]}}"#),
        format!("{{\"keys\":[{key} ,\n ],\n}}"),
    ] {
        assert_eq!(Jwks::parse(&json, true).unwrap().len(), 1, "{json}");
    }
    // A comma inside a string is data.
    let k = Jwks::parse(
        r#"{"keys":[{"kty":"oct","kid":",]","k":"c2VjcmV0"}]}"#,
        true,
    )
    .unwrap();
    assert_eq!(k.keys[0].kid, ",]");
}

#[test]
fn jwks_that_protobuf_refuses_is_refused_with_line_and_column() {
    for (json, line, column) in [
        ("{\"keys\":[\n  {},,\n]}", 2, 6),
        ("{\"keys\":[,{}]}", 1, 10),
        ("{,\"keys\":[]}", 1, 2),
        ("{\"keys\":[]} x", 1, 13),
        ("not json", 1, 2),
        // protobuf's legacy syntax that serde_json does not read: we are stricter here.
        ("{'keys':[]}", 1, 2),
        ("{keys:[]}", 1, 2),
    ] {
        match Jwks::read(json, true) {
            Err(JwksError::Syntax {
                line: l, column: c, ..
            }) => assert_eq!((l, c), (line, column), "{json}"),
            other => panic!("{json}: {other:?}"),
        }
        let text = Jwks::parse(json, true).unwrap_err();
        assert!(
            text.starts_with(&format!(
                "Jwks is an invalid JSON: line {line} column {column}: "
            )),
            "{text}"
        );
    }
}

#[test]
fn jwks_null_is_an_empty_struct_as_in_protobuf() {
    assert_eq!(
        Jwks::parse("null", true).unwrap_err(),
        "Jwks does not have [keys] field"
    );
}

#[test]
fn a_provider_without_keys_refuses_tokens_after_the_claim_checks() {
    // Envoy with an empty inline JWKS: "Jwks doesn't have any valid public key", once the
    // issuer, time and audiences passed.
    let none = Jwks::default();
    let t = token("RS256", &claims());
    assert_eq!(check(&t, &expect(&[]), &none), Err(JwtError::NoValidKeys));
    let old = token("RS256", &json!({"iss": ISS, "exp": NOW - 3600}));
    assert_eq!(check(&old, &expect(&[]), &none), Err(JwtError::Expired));
}

#[test]
fn base64url_with_nonzero_unused_bits_is_read_like_absl() {
    // jwt_verify_lib's JwksECWrongXY: x decodes (to 34 bytes, too long for P-256), so Envoy
    // says the point does not parse rather than that the base64 is bad.
    let json = r#"{"keys":[{"kty":"EC","alg":"ES256",
        "x":"EB54wykhS7YJFD6RYJNnwbWEz3cI7CF5bCDTXlrwI5k111",
        "y":"92bCBTvMFQ8lKbS2MbgjT3YfmYo6HnPEE2tsAqWUJw8111"}]}"#;
    assert_eq!(
        Jwks::parse(json, true).unwrap_err(),
        "Jwks EC [x] and [y] fields have a parse error."
    );
    // The same in a token: the signature "AB" and "AF" are both the byte 0x00.
    let t = token("RS256", &claims());
    let (input, _) = t.rsplit_once('.').unwrap();
    for sig in ["AA", "AB", "AF"] {
        assert_eq!(
            decode(&format!("{input}.{sig}")).unwrap().signature,
            vec![0u8]
        );
    }
}

// ---- signatures offered to the host (Envoy's verify_signature) ----

/// Checks what would go to Envoy's `verify_signature` with RustCrypto's own readers of those
/// DER forms (SubjectPublicKeyInfo, ECDSA-Sig-Value) and the named digest, and requires the
/// same answer as the filter's own check: the forms carry the same key and the same numbers.
/// Counts the checks offered and those the filter kept.
#[derive(Default)]
struct DerReader {
    offered: std::cell::Cell<usize>,
    kept: std::cell::Cell<usize>,
}

impl SignatureVerifier for DerReader {
    fn verify(&self, envoy: Option<&DigestVerify<'_>>, in_module: &dyn Fn() -> bool) -> bool {
        let Some(check) = envoy else {
            self.kept.set(self.kept.get() + 1);
            return in_module();
        };
        self.offered.set(self.offered.get() + 1);
        let valid = der_verify(check);
        assert_eq!(valid, in_module(), "{check:?}");
        valid
    }
}

fn der_verify(c: &DigestVerify<'_>) -> bool {
    use super::signature::Hash;
    use p256::pkcs8::DecodePublicKey;
    use rsa::pkcs1v15::Pkcs1v15Sign;
    use sha2::Digest;
    let digest = match c.hash {
        Hash::Sha256 => Sha256::digest(c.text).to_vec(),
        Hash::Sha384 => Sha384::digest(c.text).to_vec(),
        Hash::Sha512 => Sha512::digest(c.text).to_vec(),
    };
    let sig = c.signature();
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(c.public_key) {
        let scheme = match c.hash {
            Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        };
        return key.verify(scheme, &digest, &sig).is_ok();
    }
    macro_rules! ecdsa {
        ($curve:ident, $size:literal) => {
            if let Ok(key) = $curve::ecdsa::VerifyingKey::from_public_key_der(c.public_key) {
                use $curve::ecdsa::signature::hazmat::PrehashVerifier;
                let mut prehash = vec![0u8; $size - digest.len().min($size)];
                prehash.extend_from_slice(&digest);
                return $curve::ecdsa::Signature::from_der(&sig)
                    .is_ok_and(|s| key.verify_prehash(&prehash, &s).is_ok());
            }
        };
    }
    ecdsa!(p256, 32);
    ecdsa!(p384, 48);
    ecdsa!(p521, 66);
    panic!("no key in {:?}", c.public_key)
}

#[test]
fn rs_and_es_signatures_are_offered_to_the_host_in_der_and_agree_with_the_filters_check() {
    let jwks = jwks();
    for alg in ALL_ALGS {
        let good = token(alg, &claims());
        let bad = flip_signature_byte(&good);
        for (t, valid) in [(&good, true), (&bad, false)] {
            let der = DerReader::default();
            let result = verify(decode(t).unwrap(), &expect(&[]), &jwks, &der);
            assert_eq!(result.is_ok(), valid, "{alg}: {result:?}");
            let by_host = alg.starts_with("RS") || alg.starts_with("ES");
            assert_eq!(der.offered.get() > 0, by_host, "{alg}");
            assert_eq!(der.kept.get() > 0, !by_host, "{alg}");
        }
    }
}

#[test]
fn es512_signatures_are_offered_with_a_p521_key_in_der() {
    let jwks = Jwks::parse(&json!({"keys": [p521_jwk()]}).to_string(), false).unwrap();
    let der = DerReader::default();
    let t = es512_token(&claims());
    assert!(verify(decode(&t).unwrap(), &expect(&[]), &jwks, &der).is_ok());
    assert_eq!(der.offered.get(), 1);
}

#[test]
fn an_rsa_key_from_an_x509_certificate_map_is_offered_in_der() {
    let jwks = Jwks::parse(&cert_map(&[("rsa", RSA_CERT)]), false).unwrap();
    let der = DerReader::default();
    let t = token("RS256", &claims());
    assert!(verify(decode(&t).unwrap(), &expect(&[]), &jwks, &der).is_ok());
    assert_eq!(der.offered.get(), 1);
}

#[test]
fn an_ec_key_checks_another_curves_digest_in_der_too() {
    // Envoy's key-type-picks-the-check rule: an ES256 token against a P-384 key without alg
    // is an ECDSA check over SHA-256 on P-384; offered like that, it fails there as here.
    let jwks = jwks_with(
        |k| {
            k.remove("alg");
            k.remove("kid");
            k["kty"] == "EC" && k["crv"] == "P-384"
        },
        false,
    );
    let der = DerReader::default();
    let t = token("ES256", &claims());
    assert_eq!(
        verify(decode(&t).unwrap(), &expect(&[]), &jwks, &der).unwrap_err(),
        JwtError::VerificationFails
    );
    assert_eq!(der.offered.get(), 1);
}

#[test]
fn ecdsa_r_and_s_become_minimal_der_integers() {
    use super::signature::ecdsa_signature_der;
    // A top bit set gets a zero byte in front; leading zeros go; zero is one zero byte.
    assert_eq!(
        ecdsa_signature_der(&[0x80, 0x01, 0x00, 0x7f]),
        [0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x7f]
    );
    assert_eq!(
        ecdsa_signature_der(&[0, 0, 0, 5]),
        [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x05]
    );
    // An odd last byte is left out, as jwt_authn splits the signature.
    assert_eq!(
        ecdsa_signature_der(&[1, 2, 9]),
        [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]
    );
    // P-521: two 66-byte numbers with the top bit set, 138 bytes of contents: a long-form length.
    let der = ecdsa_signature_der(&[0xff; 132]);
    assert_eq!(&der[..3], [0x30, 0x81, 0x8a]);
    assert_eq!(der.len(), 3 + 0x8a);
}

#[test]
fn ecdsa_der_is_what_rustcrypto_writes() {
    let input = b"header.payload";
    let sig: p256::ecdsa::Signature = p256_key("ec256").sign(input);
    let der = super::signature::ecdsa_signature_der(&sig.to_bytes());
    assert_eq!(der, sig.to_der().as_bytes());
}

#[test]
fn verify_signature_arguments_are_the_protos_four_fields() {
    let check = DigestVerify {
        hash: super::signature::Hash::Sha384,
        public_key: &[0xaa; 300],
        signature: &[1, 2],
        ecdsa: false,
        text: b"a.b",
    };
    let args = check.arguments();
    let mut want = vec![0x0a, 6];
    want.extend_from_slice(b"sha384");
    // 300 bytes: varint ac 02.
    want.extend_from_slice(&[0x12, 0xac, 0x02]);
    want.extend_from_slice(&[0xaa; 300]);
    want.extend_from_slice(&[0x1a, 2, 1, 2, 0x22, 3]);
    want.extend_from_slice(b"a.b");
    assert_eq!(args, want);
}

#[test]
fn verify_signature_results_are_read_as_proto3() {
    assert_eq!(verify_signature_result(&[0x08, 0x01]), Some(true));
    // How Envoy says no: only the error text, result absent (false).
    let mut no = vec![0x12, 5];
    no.extend_from_slice(b"Fails");
    assert_eq!(verify_signature_result(&no), Some(false));
    assert_eq!(verify_signature_result(&[]), Some(false));
    assert_eq!(
        verify_signature_result(&[0x12, 0x00, 0x08, 0x01]),
        Some(true)
    );
    // Not such a message: truncated, or a wire type it does not use.
    assert_eq!(verify_signature_result(&[0x12, 5, b'F']), None);
    assert_eq!(verify_signature_result(&[0x08]), None);
    assert_eq!(verify_signature_result(&[0x0d, 0, 0, 0, 0]), None);
}
