//! JWT verification for RequestAuthentication (pure: no host calls).
