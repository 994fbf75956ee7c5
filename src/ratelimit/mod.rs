//! Envoy's local rate limit for one request on a limited route: the request's descriptors
//! from the `rate_limits` actions, the configured descriptor each one matches, and a token
//! from each matched bucket and from the route's own (Envoy 1.40: a descriptor's bucket
//! first, the route's `token_bucket` too unless `always_consume_default_token_bucket` is
//! false, and nothing more once one is empty). Where buckets live is the caller's
//! [`Store`]: shared data across the filter's worker VMs, a map in `explain` and tests.

pub mod bucket;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64;

use crate::http::Request;
use crate::jwt::Verified;
use crate::rules::ratelimit::{Bucket, DescriptorAction, Limit};

pub use bucket::{State, Taken};

/// Which bucket: the limit's own (`descriptor: None`) or one of its descriptors', and for a
/// dynamic descriptor the request value (`owner`) and the number of slots it may land in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<'a> {
    pub limit: &'a str,
    pub descriptor: Option<usize>,
    pub owner: u64,
    pub slots: u32,
}

impl Key<'_> {
    /// A slot's name in proxy-wasm shared data (keys there can never be deleted, so there is
    /// a fixed number of them: one per bucket, `slots` per dynamic descriptor).
    pub fn slot_name(&self, slot: u32) -> String {
        match self.descriptor {
            None => format!("meshrules.ratelimit.{}.route", self.limit),
            Some(d) => format!("meshrules.ratelimit.{}.{d}.{slot}", self.limit),
        }
    }
}

/// A stored bucket and its compare-and-swap version.
pub struct Stored {
    pub state: Option<State>,
    /// `None`: the slot does not exist yet.
    pub version: Option<u32>,
}

/// Why a write did not happen.
pub enum WriteError {
    /// Another writer came first: read again.
    Conflict,
    /// The store failed: the take refuses.
    Failed,
}

/// Where bucket states live: proxy-wasm shared data in the filter (one value per slot,
/// versioned for compare-and-swap), a map in `explain` and tests.
pub trait Store {
    /// `None` when the store failed (the take refuses).
    fn read(&mut self, name: &str) -> Option<Stored>;
    /// Writes when the version is still `version`; `None` creates the slot unconditionally.
    fn write(&mut self, name: &str, state: &State, version: Option<u32>) -> Result<(), WriteError>;
}

/// Compare-and-swap tries per take: at 4 workers on one bucket a take rarely needs a second.
const CAS_ATTEMPTS: u32 = 16;
/// Slots a dynamic value probes for its own before it shares its first slot's bucket.
const MAX_PROBES: u32 = 32;

/// Takes a token for `key`. A dynamic value probes from its hash slot for a slot that is
/// free, its own, or idle (refilled to full), as Envoy gives each of up to
/// `max_dynamic_descriptors` values its own bucket; when every probed slot is busy it shares
/// its first slot's bucket (stricter, never looser, than its own). Every write is a
/// compare-and-swap; a take that loses [`CAS_ATTEMPTS`] races, or cannot read or write,
/// refuses: a lost race never admits a request.
pub fn take(store: &mut dyn Store, key: &Key<'_>, bucket: &Bucket, now_ms: u64) -> Taken {
    let slots = key.slots.max(1);
    let home = (key.owner % u64::from(slots)) as u32;
    for _ in 0..CAS_ATTEMPTS {
        let mut chosen = None;
        let mut first = None;
        for i in 0..slots.min(MAX_PROBES) {
            let name = key.slot_name((home + i) % slots);
            let Some((state, version)) = read_or_create(store, &name, bucket, now_ms) else {
                return Taken::refused(bucket);
            };
            if bucket.claimable(state, key.owner, now_ms) {
                chosen = Some((name, state, version));
                break;
            }
            first.get_or_insert((name, state, version));
        }
        let Some((name, state, version)) = chosen.or(first) else {
            return Taken::refused(bucket);
        };
        let (next, taken) = bucket.take(state, key.owner, now_ms);
        let Some(next) = next else {
            return taken;
        };
        match store.write(&name, &next, Some(version)) {
            Ok(()) => return taken,
            Err(WriteError::Conflict) => {}
            Err(WriteError::Failed) => return Taken::refused(bucket),
        }
    }
    Taken::refused(bucket)
}

/// A slot's state and version. Slots are made full at configure time; a missing one is made
/// here (a write that takes no token) and read again.
fn read_or_create(
    store: &mut dyn Store,
    name: &str,
    bucket: &Bucket,
    now_ms: u64,
) -> Option<(Option<State>, u32)> {
    let stored = store.read(name)?;
    if let Some(v) = stored.version {
        return Some((stored.state, v));
    }
    store.write(name, &bucket.full(0, now_ms), None).ok()?;
    let stored = store.read(name)?;
    stored.version.map(|v| (stored.state, v))
}

/// Buckets in one process (for `explain` and tests; the filter shares them across VMs).
#[derive(Debug, Default)]
pub struct LocalBuckets(HashMap<String, (State, u32)>);

impl Store for LocalBuckets {
    fn read(&mut self, name: &str) -> Option<Stored> {
        Some(match self.0.get(name) {
            Some((s, v)) => Stored {
                state: Some(*s),
                version: Some(*v),
            },
            None => Stored {
                state: None,
                version: None,
            },
        })
    }

    fn write(&mut self, name: &str, state: &State, version: Option<u32>) -> Result<(), WriteError> {
        let current = self.0.get(name).map(|(_, v)| *v);
        if version.is_some() && version != current {
            return Err(WriteError::Conflict);
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        self.0.insert(name.to_string(), (*state, next));
        Ok(())
    }
}

/// What the descriptor actions may read beyond the headers.
pub struct Inputs<'a> {
    /// Envoy's downstream remote address (`remote_address` action).
    pub remote_ip: Option<IpAddr>,
    pub jwt: Option<&'a Verified>,
}

/// The IETF draft 03 headers Envoy's `enable_x_ratelimit_headers` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub limit: u64,
    pub remaining: u64,
    pub reset_s: u64,
}

impl Headers {
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_s.to_string()),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub limited: bool,
    /// The bucket that speaks for the request: the first matched descriptor's, else the
    /// route's; `None` when no bucket applied.
    pub headers: Option<Headers>,
}

/// One descriptor of the request: `(key, value)` entries in action order.
type RequestDescriptor<'a> = Vec<(&'a str, Cow<'a, str>)>;

fn claim_text(token: &Verified, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut v = token.claims.get(first)?;
    for key in rest {
        v = v.get(key)?;
    }
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

/// The descriptor one `rate_limits` entry makes, or `None` when an action cannot produce its
/// entry (Envoy then sends no descriptor for the entry).
fn descriptor<'a>(
    actions: &'a [DescriptorAction],
    req: &Request<'a>,
    inputs: &Inputs<'_>,
) -> Option<RequestDescriptor<'a>> {
    let mut entries = Vec::with_capacity(actions.len());
    for a in actions {
        match a {
            DescriptorAction::RequestHeader {
                header,
                key,
                skip_if_absent,
            } => match req.header(header) {
                Some(v) => entries.push((key.as_str(), Cow::Borrowed(v))),
                None if *skip_if_absent => {}
                None => return None,
            },
            DescriptorAction::RemoteAddress => {
                entries.push(("remote_address", Cow::Owned(inputs.remote_ip?.to_string())));
            }
            DescriptorAction::Generic { key, value } => {
                entries.push((key.as_str(), Cow::Borrowed(value.as_str())));
            }
            DescriptorAction::HeaderValueMatch {
                key,
                value,
                expect_match,
                headers,
            } => {
                if headers.iter().all(|h| h.matches(req)) != *expect_match {
                    return None;
                }
                entries.push((key.as_str(), Cow::Borrowed(value.as_str())));
            }
            DescriptorAction::JwtClaim {
                key,
                issuer,
                claim,
                default_value,
                skip_if_absent,
            } => {
                let found = inputs
                    .jwt
                    .filter(|t| t.issuer == *issuer)
                    .and_then(|t| claim_text(t, claim));
                match (found, default_value) {
                    (Some(v), _) => entries.push((key.as_str(), Cow::Owned(v))),
                    (None, Some(d)) => entries.push((key.as_str(), Cow::Borrowed(d.as_str()))),
                    (None, None) if *skip_if_absent => {}
                    (None, None) => return None,
                }
            }
        }
    }
    (!entries.is_empty()).then_some(entries)
}

/// Takes the request's tokens under `limit`.
pub fn check(
    limit: &Limit,
    req: &Request<'_>,
    inputs: &Inputs<'_>,
    store: &mut dyn Store,
    now_ms: u64,
) -> Check {
    let mut headers = None;
    let mut matched_any = false;
    for actions in &limit.rate_limits {
        let Some(desc) = descriptor(actions, req, inputs) else {
            continue;
        };
        let found = limit.descriptors.iter().enumerate().find(|(_, d)| {
            d.entries.len() == desc.len()
                && d.entries.iter().zip(&desc).all(|((k, v), (rk, rv))| {
                    k == rk && v.as_deref().is_none_or(|v| v == rv.as_ref())
                })
        });
        let Some((i, d)) = found else {
            continue;
        };
        matched_any = true;
        let (slots, owner) = if d.is_dynamic() {
            let values: Vec<&str> = desc.iter().map(|(_, v)| v.as_ref()).collect();
            (limit.max_dynamic, xxh3_64(values.join("\u{0}").as_bytes()))
        } else {
            (1, 0)
        };
        let key = Key {
            limit: &limit.name,
            descriptor: Some(i),
            owner,
            slots,
        };
        let taken = take(store, &key, &d.bucket, now_ms);
        let h = headers.get_or_insert(Headers {
            limit: d.bucket.max_tokens,
            remaining: taken.remaining,
            reset_s: taken.reset_s,
        });
        if !taken.allowed {
            h.remaining = 0;
            return Check {
                limited: true,
                headers,
            };
        }
    }
    if let Some(b) = &limit.default_bucket {
        if !matched_any || limit.always_consume_default {
            let key = Key {
                limit: &limit.name,
                descriptor: None,
                owner: 0,
                slots: 1,
            };
            let taken = take(store, &key, b, now_ms);
            headers.get_or_insert(Headers {
                limit: b.max_tokens,
                remaining: taken.remaining,
                reset_s: taken.reset_s,
            });
            if !taken.allowed {
                return Check {
                    limited: true,
                    headers,
                };
            }
        }
    }
    Check {
        limited: false,
        headers,
    }
}

#[cfg(test)]
mod tests;
