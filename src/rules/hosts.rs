//! Which VirtualService a request authority selects, as Envoy picks a virtual host from the
//! domains istiod writes: exact names first, then the longest `*.suffix`, then `*`.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct HostIndex {
    exact: HashMap<String, usize>,
    /// `(".suffix", vs)`, longest suffix first.
    suffixes: Vec<(String, usize)>,
    any: Option<usize>,
}

impl HostIndex {
    /// Registers `domain` (lower case) for VirtualService `vs`; returns the VirtualService that
    /// already owns the domain, if any (the first one keeps it).
    pub fn insert(&mut self, domain: &str, vs: usize) -> Option<usize> {
        if domain == "*" {
            return match self.any {
                Some(owner) if owner != vs => Some(owner),
                Some(_) => None,
                None => {
                    self.any = Some(vs);
                    None
                }
            };
        }
        if let Some(suffix) = domain.strip_prefix('*') {
            if let Some((_, owner)) = self.suffixes.iter().find(|(s, _)| s == suffix) {
                return (*owner != vs).then_some(*owner);
            }
            self.suffixes.push((suffix.to_string(), vs));
            self.suffixes
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
            return None;
        }
        match self.exact.get(domain) {
            Some(owner) => (*owner != vs).then_some(*owner),
            None => {
                self.exact.insert(domain.to_string(), vs);
                None
            }
        }
    }

    /// Looks up a host name that is already lower case and without port.
    pub fn lookup(&self, host: &str) -> Option<usize> {
        if let Some(vs) = self.exact.get(host) {
            return Some(*vs);
        }
        // Envoy's suffix wildcard needs at least one character before the suffix.
        self.suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, vs)| *vs)
            .or(self.any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_longest_suffix_beats_catch_all() {
        let mut idx = HostIndex::default();
        idx.insert("*", 0);
        idx.insert("*.example.com", 1);
        idx.insert("*.api.example.com", 2);
        idx.insert("www.example.com", 3);
        assert_eq!(idx.lookup("www.example.com"), Some(3));
        assert_eq!(idx.lookup("v1.api.example.com"), Some(2));
        assert_eq!(idx.lookup("shop.example.com"), Some(1));
        assert_eq!(idx.lookup("example.com"), Some(0));
        assert_eq!(idx.lookup("other.org"), Some(0));
    }

    #[test]
    fn first_owner_of_a_domain_keeps_it() {
        let mut idx = HostIndex::default();
        assert_eq!(idx.insert("a.b", 0), None);
        assert_eq!(idx.insert("a.b", 1), Some(0));
        assert_eq!(idx.insert("a.b", 0), None);
        assert_eq!(idx.lookup("a.b"), Some(0));
        assert_eq!(idx.lookup("c.d"), None);
    }
}
