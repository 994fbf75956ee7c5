//! The local replies a route's rules shape: the router's redirect and direct response and the
//! CORS filter's preflight answer.

use crate::http::{split_host_port, LocalReply, ReplyKind, Request};
use crate::rules::{Cors, DirectResponse, Redirect, RedirectPort};

impl LocalReply {
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
}
