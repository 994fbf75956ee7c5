//! One header edit, as the host applies it to Envoy's header map.

/// `Set` replaces every value, `Add` appends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    Remove(&'a str),
    Set(&'a str, &'a str),
    Add(&'a str, &'a str),
}

impl Edit<'_> {
    /// The header the edit touches.
    pub fn name(&self) -> &str {
        match self {
            Edit::Remove(n) | Edit::Set(n, _) | Edit::Add(n, _) => n,
        }
    }

    /// Applies the edit to a header list like the one the host hands over (names lower case).
    pub fn apply_to(&self, headers: &mut Vec<(String, String)>) {
        match *self {
            Edit::Remove(name) => headers.retain(|(k, _)| k != name),
            Edit::Set(name, value) => {
                headers.retain(|(k, _)| k != name);
                headers.push((name.to_string(), value.to_string()));
            }
            Edit::Add(name, value) => headers.push((name.to_string(), value.to_string())),
        }
    }
}

impl std::fmt::Display for Edit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Edit::Remove(name) => write!(f, "remove {name}"),
            Edit::Set(name, value) => write!(f, "set {name}: {value}"),
            Edit::Add(name, value) => write!(f, "add {name}: {value}"),
        }
    }
}
