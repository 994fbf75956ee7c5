//! AuthorizationPolicy: compiled policies and their evaluation (pure: no host calls).

pub mod path;
