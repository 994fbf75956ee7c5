//! Verified tokens per worker, so a repeated token skips the signature math (Envoy's
//! `JwtCache`: 100 entries by default, tokens up to 4 KiB, dropped once expired).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use super::Verified;

/// Tokens longer than this are not cached (Envoy's `kMaxJwtSizeForCache`).
pub const MAX_CACHED_TOKEN_LEN: usize = 4096;

/// How long a token without `exp` may stay, in seconds.
pub const DEFAULT_MAX_AGE: u64 = 300;

const NIL: usize = usize::MAX;

/// A bounded LRU of verified tokens keyed by the xxh3 of the token. A hit also compares the
/// whole token, so a hash collision is only a miss. An entry expires at the token's `exp`
/// (tokens without one: `max_age` after insertion). Insert, hit and eviction are O(1).
///
/// A cached token was verified against one provider's issuer and audiences: keep one cache
/// per provider (as Envoy does) or re-check a hit with [`Verified::check`].
pub struct TokenCache {
    capacity: usize,
    max_age: u64,
    index: HashMap<u64, usize, BuildHasherDefault<Xxh3Key>>,
    /// The entries; a doubly linked list through `prev`/`next` orders them by last use.
    slots: Vec<Slot>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next one evicted.
    tail: usize,
}

struct Slot {
    hash: u64,
    token: Box<str>,
    verified: Rc<Verified>,
    /// Last unix second the entry may be returned.
    expires_at: u64,
    prev: usize,
    next: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self::with_max_age(capacity, DEFAULT_MAX_AGE)
    }

    pub fn with_max_age(capacity: usize, max_age: u64) -> Self {
        TokenCache {
            capacity,
            max_age,
            index: HashMap::default(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Forgets every token (say, when the keys they were checked with change).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.head = NIL;
        self.tail = NIL;
    }

    pub fn get(&mut self, token: &str, now: u64) -> Option<Rc<Verified>> {
        let hash = xxhash_rust::xxh3::xxh3_64(token.as_bytes());
        let i = *self.index.get(&hash)?;
        let slot = self.slots.get(i)?;
        if &*slot.token != token {
            return None;
        }
        if now > slot.expires_at {
            self.remove(i);
            return None;
        }
        let verified = Rc::clone(&slot.verified);
        self.unlink(i);
        self.push_front(i);
        Some(verified)
    }

    pub fn insert(&mut self, token: &str, verified: Rc<Verified>, now: u64) {
        if self.capacity == 0 || token.len() > MAX_CACHED_TOKEN_LEN {
            return;
        }
        let expires_at = verified
            .expires_at
            .unwrap_or_else(|| now.saturating_add(self.max_age));
        if now > expires_at {
            return;
        }
        let hash = xxhash_rust::xxh3::xxh3_64(token.as_bytes());
        if let Some(&i) = self.index.get(&hash) {
            // The same token again, or another with the same hash: the newer one stays.
            if let Some(slot) = self.slots.get_mut(i) {
                slot.token = token.into();
                slot.verified = verified;
                slot.expires_at = expires_at;
                self.unlink(i);
                self.push_front(i);
            }
            return;
        }
        if self.slots.len() >= self.capacity {
            self.remove(self.tail);
        }
        let i = self.slots.len();
        self.slots.push(Slot {
            hash,
            token: token.into(),
            verified,
            expires_at,
            prev: NIL,
            next: NIL,
        });
        self.index.insert(hash, i);
        self.push_front(i);
    }

    /// Takes slot `i` out of the use order.
    fn unlink(&mut self, i: usize) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let (prev, next) = (slot.prev, slot.next);
        match self.slots.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    /// Makes slot `i` (unlinked) the most recently used.
    fn push_front(&mut self, i: usize) {
        let old_head = self.head;
        if let Some(slot) = self.slots.get_mut(i) {
            slot.prev = NIL;
            slot.next = old_head;
        }
        match self.slots.get_mut(old_head) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// Drops slot `i`; the last slot moves into its place so the vector stays dense.
    fn remove(&mut self, i: usize) {
        let Some(hash) = self.slots.get(i).map(|s| s.hash) else {
            return;
        };
        self.unlink(i);
        self.index.remove(&hash);
        let last = self.slots.len() - 1;
        self.slots.swap_remove(i);
        if i == last {
            return;
        }
        // The slot that was `last` is now at `i`: repoint whatever pointed at it.
        let (moved_hash, prev, next) = match self.slots.get(i) {
            Some(s) => (s.hash, s.prev, s.next),
            None => return,
        };
        self.index.insert(moved_hash, i);
        match self.slots.get_mut(prev) {
            Some(p) => p.next = i,
            None => self.head = i,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = i,
            None => self.tail = i,
        }
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.slots.len())
            .finish()
    }
}

/// The keys are already xxh3 hashes: use them as they are.
#[derive(Default)]
struct Xxh3Key(u64);

impl Hasher for Xxh3Key {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in case that changes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
