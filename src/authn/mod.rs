//! RequestAuthentication: which token a request carries, which provider checks it, and what
//! a verified token adds to the request (pure: keys and the clock come from the caller).
//!
//! Follows Envoy's jwt_authn as istiod configures it: every jwtRule is a provider, the
//! requirement is "any provider, or no token at all" (`requires_any` + `allow_missing`), so a
//! missing token passes and a present but invalid one is refused.

use std::rc::Rc;
use std::time::Duration;

use crate::http::{Edit, LocalReply, Request};
use crate::jwt::{self, Expectation, Jwks, JwtError, SignatureVerifier, TokenCache, Verified};

#[derive(Debug, Default)]
pub struct Authn {
    pub providers: Vec<Provider>,
    /// Token places, each with the providers that read it, in the order Envoy tries them.
    pub locations: Vec<(Location, Vec<usize>)>,
    /// JWKS fetched from a `jwksUri`, shared by the providers that name the same URI.
    pub remote: Vec<RemoteJwks>,
    pub clock_skew: u64,
    pub token_cache_size: usize,
    /// Who checks signatures Envoy can check (`security.signatureVerifier`).
    pub signature_verifier: Verifier,
    /// Every provider's output headers: removed from requests before checking, so a client
    /// cannot send them (Envoy's jwt_authn does the same).
    pub output_headers: Vec<String>,
}

/// `security.signatureVerifier`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verifier {
    /// Envoy's `verify_signature` (BoringSSL) for RS* and ES*, where Envoy has it; the
    /// filter's own verifiers for the rest.
    #[default]
    Envoy,
    /// The filter's own verifiers for every algorithm.
    Wasm,
}

#[derive(Debug)]
pub struct Provider {
    /// `namespace/name` of the RequestAuthentication, for logs.
    pub id: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: Keys,
    pub payload_header: Option<String>,
    pub forward_token: bool,
    /// `(header, claim)` pairs of `outputClaimToHeaders`.
    pub claim_headers: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum Keys {
    Inline(Jwks),
    /// Index into [`Authn::remote`].
    Remote(usize),
}

#[derive(Debug)]
pub struct RemoteJwks {
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub cache_duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Header (lower case) and the prefix before the token (`Bearer `).
    Header(String, String),
    Param(String),
    Cookie(String),
}

/// Where the keys of a remote JWKS stand, as the host knows it.
pub enum KeyState<'a> {
    Ready(&'a Jwks),
    /// Not fetched yet: the request waits for the first fetch.
    Pending,
    Failed,
}

#[derive(Debug)]
pub enum Outcome {
    /// No token anywhere: the request goes on with no request principal.
    Missing,
    Verified {
        token: Rc<Verified>,
        provider: usize,
        location: usize,
    },
    Rejected(JwtError),
    /// The provider's remote JWKS is not there yet; ask again once it is.
    NeedKeys(usize),
}

impl Authn {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The first token the request carries, in the order Envoy looks (for reviews: `meshrules
    /// explain` shows a token whose keys it cannot fetch).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn first_token<'a>(&self, req: &Request<'a>) -> Option<&'a str> {
        self.locations.iter().find_map(|(loc, _)| extract(req, loc))
    }

    pub fn new_cache(&self) -> TokenCache {
        TokenCache::new(self.token_cache_size)
    }

    /// Finds and checks the request's token. `now` is unix seconds.
    pub fn authenticate<'k>(
        &self,
        req: &Request<'_>,
        now: u64,
        keys: &'k dyn Fn(usize) -> KeyState<'k>,
        cache: &mut TokenCache,
        signatures: &dyn SignatureVerifier,
    ) -> Outcome {
        // Envoy's jwt_authn checks every token the request carries; any failure refuses it.
        let mut verified = None;
        for (li, (loc, providers)) in self.locations.iter().enumerate() {
            let Some(token) = extract(req, loc) else {
                continue;
            };
            match self.check(token, providers, now, keys, cache, signatures) {
                Ok((provider, token)) => {
                    verified.get_or_insert(Outcome::Verified {
                        token,
                        provider,
                        location: li,
                    });
                }
                Err(outcome) => return outcome,
            }
        }
        verified.unwrap_or(Outcome::Missing)
    }

    /// Checks `token` with the providers reading this location. Several jwtRules may name the
    /// same issuer; like Envoy's `requires_any`, the token passes if any of them accepts it,
    /// and is refused with the first one's error otherwise.
    fn check<'k>(
        &self,
        token: &str,
        providers: &[usize],
        now: u64,
        keys: &'k dyn Fn(usize) -> KeyState<'k>,
        cache: &mut TokenCache,
        signatures: &dyn SignatureVerifier,
    ) -> Result<(usize, Rc<Verified>), Outcome> {
        let of_issuer = |iss: &str| {
            providers
                .iter()
                .copied()
                .filter(|&p| self.providers[p].issuer == iss)
                .collect::<Vec<_>>()
        };
        let expect = |p: usize| Expectation {
            issuer: &self.providers[p].issuer,
            audiences: &self.providers[p].audiences,
            now,
            clock_skew: self.clock_skew,
        };
        let mut first_error = None;
        // A cached token skips the signature, never the issuer, time and audience checks:
        // the same token may reach a location whose provider wants other audiences.
        if let Some(v) = cache.get(token, now) {
            for p in of_issuer(&v.issuer) {
                match v.check(&expect(p)) {
                    Ok(()) => return Ok((p, v)),
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            if let Some(e) = first_error {
                return Err(Outcome::Rejected(e));
            }
        }
        let decoded = jwt::decode(token).map_err(Outcome::Rejected)?;
        for p in of_issuer(decoded.issuer().unwrap_or_default()) {
            let jwks = match &self.providers[p].keys {
                Keys::Inline(jwks) => jwks,
                Keys::Remote(i) => match keys(*i) {
                    KeyState::Ready(jwks) => jwks,
                    KeyState::Pending => return Err(Outcome::NeedKeys(*i)),
                    KeyState::Failed => {
                        first_error = first_error.or(Some(JwtError::JwksFetchFailed));
                        continue;
                    }
                },
            };
            match jwt::verify(decoded.clone(), &expect(p), jwks, signatures) {
                Ok(verified) => {
                    let verified = Rc::new(verified);
                    cache.insert(token, Rc::clone(&verified), now);
                    return Ok((p, verified));
                }
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        Err(Outcome::Rejected(
            first_error.unwrap_or(JwtError::UnknownIssuer),
        ))
    }

    /// Header edits for a verified token: the token dropped unless forwarded, the payload and
    /// claims copied into headers (Envoy's forward, forward_payload_header, claim_to_headers).
    /// Returns the new `:path` when the token came in a query parameter that must go.
    pub fn apply_edits<E>(
        &self,
        req: &Request<'_>,
        token: &Verified,
        provider: usize,
        location: usize,
        apply: &mut impl FnMut(Edit<'_>) -> Result<(), E>,
    ) -> Result<Option<String>, E> {
        let p = &self.providers[provider];
        let mut new_path = None;
        if !p.forward_token {
            match self.locations.get(location) {
                Some((Location::Header(name, _), _)) => apply(Edit::Remove(name))?,
                Some((Location::Param(name), _)) => new_path = Some(without_param(req.path, name)),
                _ => {}
            }
        }
        if let Some(h) = &p.payload_header {
            apply(Edit::Set(h, &token.payload_b64))?;
        }
        for (header, claim) in &p.claim_headers {
            let text = match token.claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                _ => continue,
            };
            apply(Edit::Set(header, &text))?;
        }
        Ok(new_path)
    }
}

/// `path` without query parameter `name` (every occurrence), as Envoy's jwt_authn removes a
/// token it read from the query when it is not forwarded.
fn without_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The token at `loc`, if the request carries one there.
fn extract<'a>(req: &Request<'a>, loc: &Location) -> Option<&'a str> {
    let token = match loc {
        Location::Header(name, prefix) => req
            .header_values(name)
            .find_map(|v| v.strip_prefix(prefix.as_str()))?,
        Location::Param(name) => req.query_param(name)?,
        Location::Cookie(name) => req.cookie(name)?,
    };
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Envoy jwt_authn's answer to a refused token: 401 (403 for a wrong audience) with the
/// status text as body and a `www-authenticate` challenge naming the request URL.
pub fn rejection(req: &Request<'_>, error: &JwtError) -> LocalReply {
    // Envoy's buildOriginalUri, cut like jwt_authn's kMaxPathLength.
    let path = req.path.get(..256).unwrap_or(req.path);
    let challenge = format!(
        "Bearer realm=\"{}://{}{}\", error=\"invalid_token\"",
        req.scheme, req.authority, path
    );
    let mut reply = LocalReply::text(
        u32::from(error.status()),
        "jwt_authn_access_denied",
        error.message(),
    );
    reply.headers.push(("www-authenticate".into(), challenge));
    reply
}
