//! The request as the core sees it and what the core can do to it: the header view, header
//! edits and the filter's own replies. The bottom layer: it knows no rules, policies or host.

mod edit;
pub mod header_map;
mod reply;
mod request;

pub use edit::Edit;
pub use reply::{LocalReply, ReplyKind, ABORT_BODY};
pub use request::{split_host_port, Request};
