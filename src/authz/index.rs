//! Which policies a request can match at all, by its path: most policies name the paths they
//! cover (`to: [{operation: {paths: [...]}}]`), so a request is tried only against the
//! policies whose paths it could be on, plus those that can match any path. The cost of
//! authorization then stays flat in the number of policies for other paths.

use std::collections::HashMap;

use super::{Attr, Pattern, Policy, Rule, StrPattern};

/// Policy lists shorter than this are tried one by one: the index would cost more.
const INDEXED_FROM: usize = 8;

#[derive(Debug, Default)]
pub struct PathIndex {
    /// Policies with a rule that can match any path: always tried.
    always: Vec<usize>,
    exact: HashMap<String, Vec<usize>>,
    prefix: HashMap<String, Vec<usize>>,
    /// The lengths of the prefixes, to look each one up once.
    prefix_lens: Vec<usize>,
}

/// The exact paths and prefixes a rule requires, or `None` when it can match other paths:
/// each of its operations (they are ORed) must check the path against exact or prefix values.
fn required_paths(rule: &Rule) -> Option<Vec<&StrPattern>> {
    if rule.to.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for op in &rule.to {
        let paths = op
            .iter()
            .find(|c| c.attr == Attr::Path && !c.values.is_empty())?;
        for p in &paths.values {
            match p {
                Pattern::Str(s @ (StrPattern::Exact(_) | StrPattern::Prefix(_))) => out.push(s),
                _ => return None,
            }
        }
    }
    Some(out)
}

impl PathIndex {
    /// `None` for a list short enough to try whole.
    pub fn build(policies: &[Policy]) -> Option<PathIndex> {
        if policies.len() < INDEXED_FROM {
            return None;
        }
        let mut index = PathIndex::default();
        for (i, p) in policies.iter().enumerate() {
            let keys: Option<Vec<&StrPattern>> =
                p.rules.iter().try_fold(Vec::new(), |mut all, r| {
                    all.extend(required_paths(r)?);
                    Some(all)
                });
            let Some(keys) = keys else {
                index.always.push(i);
                continue;
            };
            // A policy without rules matches nothing and is never a candidate.
            for k in keys {
                let (map, key) = match k {
                    StrPattern::Exact(s) => (&mut index.exact, s),
                    StrPattern::Prefix(s) => (&mut index.prefix, s),
                    _ => continue,
                };
                let ids = map.entry(key.clone()).or_default();
                if ids.last() != Some(&i) {
                    ids.push(i);
                }
            }
        }
        index.prefix_lens = index.prefix.keys().map(String::len).collect();
        index.prefix_lens.sort_unstable();
        index.prefix_lens.dedup();
        Some(index)
    }

    /// The policies `path` may match, in policy order.
    pub fn candidates(&self, path: &str) -> Vec<usize> {
        let mut out = self.always.clone();
        if let Some(ids) = self.exact.get(path) {
            out.extend(ids);
        }
        for &len in &self.prefix_lens {
            let Some(head) = path.get(..len) else {
                break;
            };
            if let Some(ids) = self.prefix.get(head) {
                out.extend(ids);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
