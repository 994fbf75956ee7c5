//! Responses the filter sends itself, shaped like the Envoy filters that would send them in
//! Istio. Those built from route rules (redirect, direct response, CORS preflight) are in
//! `engine::reply`.

use super::edit::Edit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    NoRoute,
    Abort,
    Redirect,
    Direct,
    Preflight,
    RateLimited,
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
    pub(crate) fn new(kind: ReplyKind, status: u32, details: &'static str) -> Self {
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

    /// Envoy's local rate limit: `local_rate_limited` (429 unless configured otherwise).
    pub fn rate_limited(status: u32) -> Self {
        let mut r = Self::text(status, "local_rate_limited", "local_rate_limited");
        r.kind = ReplyKind::RateLimited;
        r
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

    /// Applies a response header edit to this reply.
    pub fn edit(&mut self, e: Edit<'_>) {
        e.apply_to(&mut self.headers);
    }
}
