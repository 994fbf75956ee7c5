//! Header edits the host applies, in the order Envoy would apply the same route config.

use crate::http::Edit;
use crate::rules::{Action, ClusterName, Cors, HeaderOps, Route, RuleSet};

use super::Forward;

pub fn apply_ops<'a, E>(
    o: &'a HeaderOps,
    apply: &mut impl FnMut(Edit<'a>) -> Result<(), E>,
) -> Result<(), E> {
    for name in &o.remove {
        apply(Edit::Remove(name))?;
    }
    set_add(o, apply)
}

fn set_add<'a, E>(
    o: &'a HeaderOps,
    apply: &mut impl FnMut(Edit<'a>) -> Result<(), E>,
) -> Result<(), E> {
    for (k, v) in &o.set {
        apply(Edit::Set(k, v))?;
    }
    for (k, v) in &o.add {
        apply(Edit::Add(k, v))?;
    }
    Ok(())
}

/// Route and destination edits with Envoy's precedence for what istiod writes: a lone
/// destination's edits are merged into the route's lists (all removals first, the destination
/// applied last, so it wins); a weighted cluster's edits run before the route's (the route wins).
fn layered<'a, E>(
    route: &'a HeaderOps,
    dest: Option<&'a HeaderOps>,
    single: bool,
    apply: &mut impl FnMut(Edit<'a>) -> Result<(), E>,
) -> Result<(), E> {
    match dest {
        None => apply_ops(route, apply),
        Some(d) if single => {
            for name in route.remove.iter().chain(&d.remove) {
                apply(Edit::Remove(name))?;
            }
            set_add(route, apply)?;
            set_add(d, apply)
        }
        Some(d) => {
            apply_ops(d, apply)?;
            apply_ops(route, apply)
        }
    }
}

/// The authority a forward ends up with: the same precedence as header edits.
fn authority<'a>(route: &'a Route, dest: Option<&'a HeaderOps>, single: bool) -> Option<&'a str> {
    let from_dest = dest.and_then(|d| d.authority.as_deref());
    let from_route = route.authority_rewrite.as_deref();
    if single {
        from_dest.or(from_route)
    } else {
        from_route.or(from_dest)
    }
}

/// CORS headers on a response to an allowed origin (Envoy's CORS filter `encodeHeaders`).
pub fn cors_response<'a, E>(
    cors: &'a Cors,
    origin: &'a str,
    apply: &mut impl FnMut(Edit<'a>) -> Result<(), E>,
) -> Result<(), E> {
    apply(Edit::Set("access-control-allow-origin", origin))?;
    if cors.allow_credentials {
        apply(Edit::Set("access-control-allow-credentials", "true"))?;
    }
    if !cors.expose_headers.is_empty() {
        apply(Edit::Set(
            "access-control-expose-headers",
            &cors.expose_headers,
        ))?;
    }
    Ok(())
}

impl RuleSet {
    fn forward_parts(
        &self,
        f: &Forward,
    ) -> (&Route, Option<&crate::rules::WeightedDestination>, bool) {
        let route = &self.routes[f.route];
        match &route.action {
            Action::Forward(split) => (
                route,
                split.destinations.get(f.destination),
                split.destinations.len() == 1,
            ),
            _ => (route, None, true),
        }
    }

    /// Every request edit for a forward: header edits, router headers, rewrites and the
    /// cluster header, which is set last so nothing overrides it.
    pub fn request_edits<'a, E>(
        &'a self,
        f: &'a Forward,
        original_path: &'a str,
        mut apply: impl FnMut(Edit<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (route, dest, single) = self.forward_parts(f);
        layered(
            &route.request_headers,
            dest.map(|d| &*d.request_headers),
            single,
            &mut apply,
        )?;
        for (k, v) in &route.router_headers {
            apply(Edit::Set(k, v))?;
        }
        if let Some(path) = &f.path {
            // Envoy keeps the path it rewrote, for logs and the upstream.
            apply(Edit::Set("x-envoy-original-path", original_path))?;
            apply(Edit::Set(":path", path))?;
        }
        if let Some(a) = authority(route, dest.map(|d| &*d.request_headers), single) {
            apply(Edit::Set(":authority", a))?;
        }
        if let Some(d) = dest {
            let cluster = match (&f.cluster, &d.cluster) {
                (Some(rendered), _) => rendered.as_str(),
                (None, ClusterName::Fixed(name)) => name.as_str(),
                // decide() renders every per-request name; an empty one routes nowhere.
                (None, ClusterName::ListenerPort { .. }) => "",
            };
            apply(Edit::Set(&self.cluster_header, cluster))?;
        }
        Ok(())
    }

    /// Every response edit for a forward: header edits, then CORS.
    pub fn response_edits<'a, E>(
        &'a self,
        f: &'a Forward,
        mut apply: impl FnMut(Edit<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (route, dest, single) = self.forward_parts(f);
        layered(
            &route.response_headers,
            dest.map(|d| &*d.response_headers),
            single,
            &mut apply,
        )?;
        if let (Some(cors), Some(origin)) = (&route.cors, &f.cors_origin) {
            cors_response(cors, origin, &mut apply)?;
        }
        Ok(())
    }
}
