//! Responses the filter sends itself, shaped like the Envoy filters that would send them in
//! Istio: the fault filter's abort, the router's redirect, direct response and 404, and the
//! CORS filter's preflight answer.

use crate::rules::{Cors, DirectResponse, Redirect, RedirectPort};

use super::edits::Edit;
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
    /// Set for gRPC aborts: Envoy answers a gRPC request trailers-only with this status and a
    /// plain HTTP request with `status` and the body, as its fault filter does.
    pub grpc_status: Option<u32>,
    /// Envoy's response code details, for access logs.
    pub details: &'static str,
}

/// Body of Envoy's fault filter abort (`fault_filter_abort`).
pub const ABORT_BODY: &str = "fault filter abort";

impl LocalReply {
    fn new(kind: ReplyKind, status: u32, details: &'static str) -> Self {
        LocalReply {
            kind,
            status,
            headers: Vec::new(),
            body: Vec::new(),
            grpc_status: None,
            details,
        }
    }

    /// Envoy's router answers 404 with no body when no route matches.
    pub fn no_route() -> Self {
        Self::new(ReplyKind::NoRoute, 404, "route_not_found")
    }

    /// Envoy's RBAC filter: 403 `RBAC: access denied`.
    pub fn rbac_denied() -> Self {
        Self::text(403, "rbac_access_denied", "RBAC: access denied")
    }

    /// A path that could be read two ways (see `authz::path`): 400, as Envoy's connection
    /// manager answers a path it cannot normalize.
    pub fn bad_path(detail: &str) -> Self {
        Self::text(
            400,
            "path_normalization_failed",
            &format!("Bad Request: {detail}"),
        )
    }

    /// A plain-text reply, as Envoy's own filters send.
    pub fn text(status: u32, details: &'static str, body: &str) -> Self {
        let mut r = Self::new(ReplyKind::Direct, status, details);
        r.headers.push(("content-type".into(), "text/plain".into()));
        r.body = body.as_bytes().to_vec();
        r
    }

    pub fn abort(status: u32) -> Self {
        let mut r = Self::new(ReplyKind::Abort, status, "fault_filter_abort");
        r.headers.push(("content-type".into(), "text/plain".into()));
        r.body = ABORT_BODY.as_bytes().to_vec();
        r
    }

    pub fn grpc_abort(code: u32) -> Self {
        let mut r = Self::new(ReplyKind::Abort, 200, "fault_filter_abort");
        r.body = ABORT_BODY.as_bytes().to_vec();
        r.grpc_status = Some(code);
        r
    }

    pub fn direct(d: &DirectResponse) -> Self {
        let mut r = Self::new(ReplyKind::Direct, d.status, "direct_response");
        if !d.body.is_empty() {
            r.headers.push(("content-type".into(), "text/plain".into()));
        }
        r.body = d.body.clone();
        r
    }

    /// Envoy's CORS filter preflight answer. `origin` is the allowed origin, or `None` for an
    /// unmatched preflight answered under `unmatchedPreflights: IGNORE`.
    pub fn preflight(cors: &Cors, origin: Option<&str>, req: &Request<'_>) -> Self {
        let mut r = Self::new(ReplyKind::Preflight, 200, "cors_preflight");
        if let Some(o) = origin {
            r.headers
                .push(("access-control-allow-origin".into(), o.to_string()));
        }
        if cors.allow_credentials {
            r.headers
                .push(("access-control-allow-credentials".into(), "true".into()));
        }
        // `*` echoes what the browser asked for, as Envoy does.
        let methods = match cors.allow_methods.as_str() {
            "*" => req.header("access-control-request-method").unwrap_or("*"),
            m => m,
        };
        let headers = match cors.allow_headers.as_str() {
            "*" => req.header("access-control-request-headers").unwrap_or("*"),
            h => h,
        };
        for (name, value) in [
            ("access-control-allow-methods", methods),
            ("access-control-allow-headers", headers),
            ("access-control-max-age", cors.max_age.as_str()),
        ] {
            if !value.is_empty() {
                r.headers.push((name.into(), value.to_string()));
            }
        }
        r
    }

    /// The router's redirect. istiod's translation (`ApplyRedirect`): `FROM_REQUEST_PORT` is the
    /// request's port, `FROM_PROTOCOL_DEFAULT` sets no port, and a port that is the default of
    /// the redirect's scheme is dropped. Then Envoy's `newUri`: a new port replaces the request's;
    /// without one, the request's port is kept unless the scheme changes away from the scheme
    /// that port is the default of.
    pub fn redirect(r: &Redirect, req: &Request<'_>) -> Self {
        let forwarded_proto = req.header("x-forwarded-proto").unwrap_or(req.scheme);
        let scheme = r.scheme.as_deref().unwrap_or(forwarded_proto);
        let port = match &r.port {
            RedirectPort::Fixed(p) => Some(*p),
            RedirectPort::FromRequestPort => req.port(),
            RedirectPort::FromProtocolDefault | RedirectPort::Keep => None,
        }
        .filter(|p| !((*p == 80 && scheme == "http") || (*p == 443 && scheme == "https")));
        let host = match &r.authority {
            Some(a) => a.as_str(),
            None => {
                let (host, request_port) = split_host_port(req.authority);
                let strip = port.is_some()
                    || (scheme != forwarded_proto
                        && matches!(
                            (forwarded_proto, request_port),
                            ("https", Some("443")) | ("http", Some("80"))
                        ));
                if strip {
                    host
                } else {
                    req.authority
                }
            }
        };
        let mut path = match &r.uri {
            Some(uri) if uri.contains('?') => uri.clone(),
            Some(uri) => match req.query() {
                Some(q) => format!("{uri}?{q}"),
                None => uri.clone(),
            },
            None => req.path.to_string(),
        };
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let location = match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}"),
            None => format!("{scheme}://{host}{path}"),
        };
        let mut reply = Self::new(ReplyKind::Redirect, r.code, "redirect");
        reply.headers.push(("location".into(), location));
        reply
    }

    /// Applies a response header edit to this reply.
    pub fn edit(&mut self, e: Edit<'_>) {
        match e {
            Edit::Remove(name) => self.headers.retain(|(k, _)| k != name),
            Edit::Set(name, value) => {
                self.headers.retain(|(k, _)| k != name);
                self.headers.push((name.to_string(), value.to_string()));
            }
            Edit::Add(name, value) => self.headers.push((name.to_string(), value.to_string())),
        }
    }
}
