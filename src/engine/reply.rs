//! Responses the filter sends itself, shaped like the Envoy filters that would send them in
//! Istio: the fault filter's abort, the router's redirect, direct response and 404, and the
//! CORS filter's preflight answer.

use crate::rules::{Cors, DirectResponse, HeaderOps, Redirect, RedirectPort};

use super::request::{split_host_port, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    NoRoute,
    Abort,
    Redirect,
    Direct,
    Preflight,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub kind: ReplyKind,
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Body of Envoy's fault filter abort (`fault_filter_abort`).
pub const ABORT_BODY: &str = "fault filter abort";

impl LocalReply {
    fn new(kind: ReplyKind, status: u32) -> Self {
        LocalReply {
            kind,
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Envoy's router answers 404 with no body when no route matches.
    pub fn no_route() -> Self {
        Self::new(ReplyKind::NoRoute, 404)
    }

    pub fn abort(status: u32) -> Self {
        let mut r = Self::new(ReplyKind::Abort, status);
        r.headers.push(("content-type".into(), "text/plain".into()));
        r.body = ABORT_BODY.as_bytes().to_vec();
        r
    }

    /// A gRPC abort is a trailers-only gRPC response: HTTP 200 carrying `grpc-status`.
    pub fn grpc_abort(code: u32) -> Self {
        let mut r = Self::new(ReplyKind::Abort, 200);
        r.headers
            .push(("content-type".into(), "application/grpc".into()));
        r.headers.push(("grpc-status".into(), code.to_string()));
        r.headers.push(("grpc-message".into(), ABORT_BODY.into()));
        r
    }

    pub fn direct(d: &DirectResponse, response_headers: &HeaderOps) -> Self {
        let mut r = Self::new(ReplyKind::Direct, d.status);
        if !d.body.is_empty() {
            r.headers.push(("content-type".into(), "text/plain".into()));
        }
        r.body = d.body.clone();
        // Route response headers apply to direct responses too, as in Envoy.
        for (k, v) in response_headers.set.iter().chain(&response_headers.add) {
            r.headers.push((k.clone(), v.clone()));
        }
        r
    }

    /// Envoy's CORS filter preflight answer for an allowed origin.
    pub fn preflight(cors: &Cors, origin: &str) -> Self {
        let mut r = Self::new(ReplyKind::Preflight, 200);
        r.headers
            .push(("access-control-allow-origin".into(), origin.to_string()));
        if cors.allow_credentials {
            r.headers
                .push(("access-control-allow-credentials".into(), "true".into()));
        }
        for (name, value) in [
            ("access-control-allow-methods", &cors.allow_methods),
            ("access-control-allow-headers", &cors.allow_headers),
            ("access-control-max-age", &cors.max_age),
        ] {
            if !value.is_empty() {
                r.headers.push((name.into(), value.clone()));
            }
        }
        r
    }

    /// `unmatchedPreflights: IGNORE`: a preflight from another origin is answered without
    /// any CORS header, so the browser refuses the real request.
    pub fn bare_preflight() -> Self {
        Self::new(ReplyKind::Preflight, 200)
    }

    /// The router's redirect: `Location` built like Envoy's `RouteEntryImplBase::newUri`.
    pub fn redirect(r: &Redirect, req: &Request<'_>) -> Self {
        let scheme = r.scheme.as_deref().unwrap_or(req.scheme);
        let authority = r.authority.as_deref().unwrap_or(req.authority);
        let (host, given_port) = split_host_port(authority);
        let (_, request_port) = split_host_port(req.authority);
        let port = match &r.port {
            RedirectPort::Fixed(p) => Some(p.to_string()),
            RedirectPort::FromProtocolDefault => None,
            RedirectPort::FromRequestPort => request_port.map(str::to_string),
            RedirectPort::Keep => given_port.map(str::to_string),
        };
        // A port that is the scheme's default is left out of the URL.
        let port = port
            .filter(|p| !((scheme == "http" && p == "80") || (scheme == "https" && p == "443")));
        let path = match &r.uri {
            Some(uri) if uri.contains('?') => uri.clone(),
            Some(uri) => match req.query() {
                Some(q) => format!("{uri}?{q}"),
                None => uri.clone(),
            },
            None => req.path.to_string(),
        };
        let location = match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}"),
            None => format!("{scheme}://{host}{path}"),
        };
        let mut reply = Self::new(ReplyKind::Redirect, r.code);
        reply.headers.push(("location".into(), location));
        reply
    }
}
