//! RequestAuthentication → [`Authn`]: istiod's jwt_authn providers
//! (pilot/pkg/security/authn/policy_applier.go), one per jwtRule.

use std::time::Duration;

use crate::authn::{Authn, Keys, Location, Provider, RemoteJwks, Verifier};
use crate::config::{self, Diagnostics, JwtRule, ObjectMeta, RequestAuthenticationSpec, Security};
use crate::jwt::Jwks;

/// Envoy's remote_jwks fetch timeout when the rule sets none (istiod uses 5 s).
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

fn duration(text: &str, path: &str, diags: &mut Diagnostics) -> Duration {
    config::duration::parse(text).unwrap_or_else(|e| {
        diags.error(path, e);
        Duration::ZERO
    })
}

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn settings(sec: &Security, diags: &mut Diagnostics) -> Authn {
    let size = super::whole_number(
        sec.token_cache_size,
        0,
        1_000_000,
        &"security.tokenCacheSize",
        diags,
    );
    let signature_verifier = match sec.signature_verifier.as_str() {
        "envoy" => Verifier::Envoy,
        "wasm" => Verifier::Wasm,
        other => {
            diags.error(
                "security.signatureVerifier",
                format!("{other:?} is not one of \"envoy\", \"wasm\""),
            );
            Verifier::default()
        }
    };
    Authn {
        clock_skew: duration(&sec.clock_skew, "security.clockSkew", diags).as_secs(),
        token_cache_size: size.unwrap_or(0) as usize,
        signature_verifier,
        ..Authn::default()
    }
}

#[inline(never)] // run once per load: kept out of its caller (see compile/mod.rs)
pub(super) fn compile_request_authentication(
    spec: &RequestAuthenticationSpec,
    meta: &ObjectMeta,
    path: &str,
    applies: bool,
    sec: &Security,
    authn: &mut Authn,
    diags: &mut Diagnostics,
) {
    let spath = format!("{path}.spec");
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        diags.error(
            format!("{spath}.selector"),
            "only one of selector, targetRef or targetRefs may be set",
        );
    }
    let cache_duration = duration(
        &sec.jwks_cache_duration,
        "security.jwksCacheDuration",
        diags,
    );
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let rpath = format!("{spath}.jwtRules[{i}]");
        let Some(provider) = provider(rule, meta, &rpath, sec, cache_duration, authn, diags) else {
            continue;
        };
        if !applies {
            continue;
        }
        let index = authn.providers.len();
        for loc in locations(rule, &rpath, diags) {
            match authn.locations.iter_mut().find(|(l, _)| *l == loc) {
                Some((_, providers)) => providers.push(index),
                None => authn.locations.push((loc, vec![index])),
            }
        }
        for h in provider
            .payload_header
            .iter()
            .chain(provider.claim_headers.iter().map(|(h, _)| h))
        {
            if !authn.output_headers.contains(h) {
                authn.output_headers.push(h.clone());
            }
        }
        authn.providers.push(provider);
    }
}

fn provider(
    rule: &JwtRule,
    meta: &ObjectMeta,
    path: &str,
    sec: &Security,
    cache_duration: Duration,
    authn: &mut Authn,
    diags: &mut Diagnostics,
) -> Option<Provider> {
    if rule.issuer.is_empty() {
        diags.error(format!("{path}.issuer"), "issuer is required");
        return None;
    }
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        if c.header.is_empty() || c.claim.is_empty() {
            diags.error(
                format!("{path}.outputClaimToHeaders[{i}]"),
                "header and claim are required",
            );
        }
    }
    let timeout = match &rule.timeout {
        Some(t) => duration(t, &format!("{path}.timeout"), diags),
        None => DEFAULT_FETCH_TIMEOUT,
    };
    // Istio: inline `jwks` wins over `jwksUri`. A key set Envoy's jwt_authn refuses
    // ("Provider ... has invalid local jwks: <status>") is refused here too, with the same
    // status (and, for text that is not JSON, where it goes wrong).
    let keys = if !rule.jwks.is_empty() {
        match Jwks::read(&rule.jwks, true) {
            Ok(jwks) => Keys::Inline(jwks),
            Err(e) => {
                diags.error(format!("{path}.jwks"), e.to_string());
                return None;
            }
        }
    } else if !rule.jwks_uri.is_empty() {
        let remote = remote(&rule.jwks_uri, &format!("{path}.jwksUri"), sec, diags)?;
        let remote = RemoteJwks {
            timeout,
            cache_duration,
            ..remote
        };
        match authn.remote.iter().position(|r| r.uri == remote.uri) {
            Some(i) => Keys::Remote(i),
            None => {
                authn.remote.push(remote);
                Keys::Remote(authn.remote.len() - 1)
            }
        }
    } else {
        // `jwks: ""` (or none) and no jwksUri. Envoy loads an empty inline JWKS and answers
        // every token of the issuer "Jwks doesn't have any valid public key"; so do we.
        // Istio would look the keys up by OpenID discovery, which the filter does not do.
        diags.warn(
            path,
            "neither jwks nor jwksUri (OpenID discovery is not supported): every token of this \
             issuer is refused with \"Jwks doesn't have any valid public key\", as Envoy does \
             for an empty inline JWKS",
        );
        Keys::Inline(Jwks::default())
    };
    Some(Provider {
        id: format!("{}/{}", meta.namespace, meta.name),
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        keys,
        payload_header: (!rule.output_payload_to_header.is_empty())
            .then(|| rule.output_payload_to_header.to_ascii_lowercase()),
        forward_token: rule.forward_original_token,
        claim_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| (c.header.to_ascii_lowercase(), c.claim.clone()))
            .collect(),
    })
}

/// Where tokens are looked for: the rule's places, or Istio's defaults
/// (`Authorization: Bearer <token>`, then the `access_token` query parameter).
fn locations(rule: &JwtRule, path: &str, diags: &mut Diagnostics) -> Vec<Location> {
    let mut out = Vec::new();
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            diags.error(format!("{path}.fromHeaders[{i}].name"), "name is required");
            continue;
        }
        out.push(Location::Header(
            h.name.to_ascii_lowercase(),
            h.prefix.clone(),
        ));
    }
    out.extend(rule.from_params.iter().map(|p| Location::Param(p.clone())));
    out.extend(
        rule.from_cookies
            .iter()
            .map(|c| Location::Cookie(c.clone())),
    );
    if out.is_empty() {
        out.push(Location::Header("authorization".into(), "Bearer ".into()));
        out.push(Location::Param("access_token".into()));
    }
    out
}

/// Splits a `jwksUri` into the cluster, authority and path the host fetches it with.
fn remote(uri: &str, path: &str, sec: &Security, diags: &mut Diagnostics) -> Option<RemoteJwks> {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => {
            diags.error(path, format!("{uri:?} is not an http:// or https:// URL"));
            return None;
        }
    };
    let (authority, fetch_path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = crate::http::split_host_port(authority);
    let port = match port.map(str::parse::<u16>) {
        None => default_port,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            diags.error(path, format!("{uri:?} has an invalid port"));
            return None;
        }
    };
    if host.is_empty() {
        diags.error(path, format!("{uri:?} has no host"));
        return None;
    }
    let cluster = sec
        .jwks_cluster
        .replace("{host}", host)
        .replace("{port}", &port.to_string());
    Some(RemoteJwks {
        uri: uri.to_string(),
        cluster,
        authority: authority.to_string(),
        path: fetch_path.to_string(),
        timeout: DEFAULT_FETCH_TIMEOUT,
        cache_duration: Duration::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::{load, Anonymous};

    fn config(rule: Value) -> Vec<u8> {
        json!({"resources": [{
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "app"},
            "spec": {"jwtRules": [rule]}}]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn empty_jwks_without_jwks_uri_loads_with_a_warning_and_no_keys() {
        let loaded = load(
            &config(json!({"issuer": "https://a", "jwks": ""})),
            &Anonymous,
        )
        .unwrap();
        let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("resources[0].spec.jwtRules[0]: neither jwks nor jwksUri")),
            "{warnings:?}"
        );
        let p = &loaded.rules.authn.providers[0];
        assert!(matches!(&p.keys, crate::authn::Keys::Inline(k) if k.is_empty()));
    }

    #[test]
    fn jwks_envoy_refuses_is_refused_with_envoys_status_and_position() {
        for (jwks, expected) in [
            (
                "{\"keys\":[\n ,{}]}",
                "resources[0].spec.jwtRules[0].jwks: Jwks is an invalid JSON: line 2 column 2: ",
            ),
            (
                "{}",
                "resources[0].spec.jwtRules[0].jwks: Jwks does not have [keys] field",
            ),
        ] {
            let errors = load(
                &config(json!({"issuer": "https://a", "jwks": jwks})),
                &Anonymous,
            )
            .unwrap_err();
            assert!(
                errors.iter().any(|e| e.to_string().starts_with(expected)),
                "{errors:?}"
            );
        }
    }
}
