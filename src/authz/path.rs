//! Request path normalization for authorization matching.
