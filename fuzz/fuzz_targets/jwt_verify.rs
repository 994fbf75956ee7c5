//! A JWKS and a token, as RequestAuthentication reads them: `Jwks::parse` (inline or fetched),
//! `decode`, `verify`, and the verified-token cache.
//!
//! Input: `flags`, `clock`, then the JWKS text, a 0xFF byte (never in UTF-8 text), the token.
//! `flags` bit 0: inline keys; bit 1: expect the token's own issuer (else any issuer); bit 2:
//! require the audience `aud.example`. `clock` picks `now`.
#![no_main]

use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use meshrules::jwt::{decode, verify, Expectation, InModule, Jwks, TokenCache};

const NOWS: [u64; 4] = [1, 1_700_000_000, 4_102_444_800, u64::MAX];

fuzz_target!(|data: &[u8]| {
    let [flags, clock, rest @ ..] = data else {
        return;
    };
    let (jwks, token) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let jwks = String::from_utf8_lossy(jwks);
    let token = String::from_utf8_lossy(token);
    let inline = flags & 1 != 0;
    let now = NOWS[usize::from(*clock) % NOWS.len()];

    let parsed = Jwks::parse(&jwks, inline);
    if !inline && parsed.is_ok() {
        // Inline keys are a superset of fetched ones (which drop HMAC secrets).
        assert!(Jwks::parse(&jwks, true).is_ok(), "{jwks:?}");
    }
    let decoded = match decode(&token) {
        Ok(d) => d,
        Err(e) => {
            assert!(!e.message().is_empty());
            return;
        }
    };
    // What the getters show must not panic, whatever the header held.
    let _ = (decoded.alg(), decoded.kid(), decoded.claims().len());
    let Ok(jwks) = parsed else {
        return;
    };
    let issuer = if flags & 2 != 0 {
        decoded.issuer().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    let audiences = if flags & 4 != 0 {
        vec!["aud.example".to_owned()]
    } else {
        Vec::new()
    };
    let expect = Expectation {
        issuer: &issuer,
        audiences: &audiences,
        now,
        clock_skew: 60,
    };
    let Ok(verified) = verify(decoded, &expect, &jwks, &InModule) else {
        return;
    };
    // The checks repeated on a cache hit agree with the ones verify made.
    assert_eq!(verified.check(&expect), Ok(()), "{token:?}");
    let verified = Rc::new(verified);
    let mut cache = TokenCache::new(2);
    cache.insert(&token, Rc::clone(&verified), now);
    if token.len() <= meshrules::jwt::MAX_CACHED_TOKEN_LEN
        && verified.expires_at.is_none_or(|e| e >= now)
    {
        assert_eq!(cache.get(&token, now).as_deref(), Some(&*verified));
    }
    assert!(cache.get(&format!("{token}x"), now).is_none());
});
