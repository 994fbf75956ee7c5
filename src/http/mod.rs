//! The request as the core sees it and what the core can do to it: the header view, header
//! edits and the filter's own replies. The bottom layer: it knows no rules, policies or host.

mod edit;
pub mod header_map;
mod reply;
mod request;

pub use edit::Edit;
pub use reply::{LocalReply, ReplyKind, ABORT_BODY};
pub use request::{split_host_port, Request};

/// Header lists for the core's tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Owned header pairs.
    pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A plain-HTTP GET of `path` on `demoapp`, then `extra`.
    pub fn get(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h = pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "demoapp"),
            (":path", path),
        ]);
        h.extend(pairs(extra));
        h
    }
}
