//! The token bucket of Envoy 1.40's local rate limit: it starts full and refills continuously
//! at `tokens_per_fill / fill_interval` up to `max_tokens` (a bucket of 2 per 60 s has its next
//! token 30 s after it ran dry, and says so in `x-ratelimit-reset`). Pure: the state lives
//! wherever the caller keeps it (proxy-wasm shared data in the filter), as 24 bytes.

use crate::rules::ratelimit::Bucket;

/// Tokens are counted in millionths, so slow refills are not rounded away between takes.
const SCALE: u64 = 1_000_000;

/// A bucket's state. `owner` tells apart the request values that share a dynamic slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    micro_tokens: u64,
    at_ms: u64,
    owner: u64,
}

/// What one take did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub allowed: bool,
    /// Whole tokens left after the take.
    pub remaining: u64,
    /// Seconds until the next token when none is left (Envoy's `x-ratelimit-reset`), else 0.
    pub reset_s: u64,
}

impl Taken {
    /// The answer when the state could not be read or written: never an admission.
    pub fn refused(bucket: &Bucket) -> Taken {
        Taken {
            allowed: false,
            remaining: 0,
            reset_s: bucket.seconds_per_token(),
        }
    }
}

impl Bucket {
    fn capacity(&self) -> u64 {
        self.max_tokens.saturating_mul(SCALE)
    }

    /// A full bucket for `owner`, as Envoy makes one on first use.
    pub fn full(&self, owner: u64, now_ms: u64) -> State {
        State {
            micro_tokens: self.capacity(),
            at_ms: now_ms,
            owner,
        }
    }

    fn refilled(&self, s: State, now_ms: u64) -> u64 {
        let elapsed = u128::from(now_ms.saturating_sub(s.at_ms));
        let added = elapsed
            .saturating_mul(u128::from(self.tokens_per_fill))
            .saturating_mul(u128::from(SCALE))
            / u128::from(self.fill_interval_ms.max(1));
        let total = u128::from(s.micro_tokens).saturating_add(added);
        u64::try_from(total.min(u128::from(self.capacity()))).unwrap_or(u64::MAX)
    }

    fn seconds_per_token(&self) -> u64 {
        self.reset_after(0)
    }

    /// Whole seconds (rounded up) until `micro_tokens` grow to one token.
    fn reset_after(&self, micro_tokens: u64) -> u64 {
        if micro_tokens >= SCALE {
            return 0;
        }
        let missing = u128::from(SCALE - micro_tokens);
        let per_ms_scaled = u128::from(self.tokens_per_fill.max(1)) * u128::from(SCALE);
        let ms = (missing * u128::from(self.fill_interval_ms)).div_ceil(per_ms_scaled);
        u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX)
    }

    /// Whether `owner` may use a slot holding `stored`: it is empty, its own, or its holder's
    /// bucket has refilled to full (the holder has been idle, so nothing is lost by evicting).
    pub fn claimable(&self, stored: Option<State>, owner: u64, now_ms: u64) -> bool {
        stored.is_none_or(|s| s.owner == owner || self.refilled(s, now_ms) >= self.capacity())
    }

    /// Takes one token for `owner` at `now_ms` from a slot holding `stored` (a slot another
    /// value holds is shared, or taken over once [`Bucket::claimable`]). Returns the state to
    /// store (`None`: nothing changed, the request is refused) and what the take did.
    pub fn take(&self, stored: Option<State>, owner: u64, now_ms: u64) -> (Option<State>, Taken) {
        let mut s = stored.unwrap_or_else(|| self.full(owner, now_ms));
        let tokens = self.refilled(s, now_ms);
        if s.owner != owner && tokens >= self.capacity() {
            s.owner = owner;
        }
        if tokens < SCALE {
            let taken = Taken {
                allowed: false,
                remaining: 0,
                reset_s: self.reset_after(tokens),
            };
            return (None, taken);
        }
        let left = tokens - SCALE;
        let next = State {
            micro_tokens: left,
            at_ms: now_ms.max(s.at_ms),
            owner: s.owner,
        };
        let taken = Taken {
            allowed: true,
            remaining: left / SCALE,
            reset_s: self.reset_after(left),
        };
        (Some(next), taken)
    }
}

impl State {
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.micro_tokens.to_le_bytes());
        out[8..16].copy_from_slice(&self.at_ms.to_le_bytes());
        out[16..].copy_from_slice(&self.owner.to_le_bytes());
        out
    }

    /// `None` for anything but 24 bytes (then the bucket starts again, full).
    pub fn decode(bytes: &[u8]) -> Option<State> {
        let word = |i: usize| {
            bytes
                .get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        (bytes.len() == 24).then_some(())?;
        Some(State {
            micro_tokens: word(0)?,
            at_ms: word(8)?,
            owner: word(16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_PER_MINUTE: Bucket = Bucket {
        max_tokens: 2,
        tokens_per_fill: 2,
        fill_interval_ms: 60_000,
    };

    fn run(b: &Bucket, state: &mut Option<State>, owner: u64, now: u64) -> Taken {
        let (next, taken) = b.take(*state, owner, now);
        if let Some(n) = next {
            *state = Some(n);
        }
        taken
    }

    #[test]
    fn a_bucket_starts_full_and_refills_continuously_like_envoy_1_40() {
        let mut s = None;
        // Envoy 1.40, max 2 / 2 per 60 s: remaining 1 reset 0, remaining 0 reset 30, 429.
        let t = run(&TWO_PER_MINUTE, &mut s, 0, 1_000);
        assert_eq!((t.allowed, t.remaining, t.reset_s), (true, 1, 0));
        let t = run(&TWO_PER_MINUTE, &mut s, 0, 1_000);
        assert_eq!((t.allowed, t.remaining, t.reset_s), (true, 0, 30));
        let t = run(&TWO_PER_MINUTE, &mut s, 0, 1_000);
        assert_eq!((t.allowed, t.reset_s), (false, 30));
        // Half the interval later, one token (continuous, not a fill at the interval's end).
        assert!(!run(&TWO_PER_MINUTE, &mut s, 0, 30_999).allowed);
        assert!(run(&TWO_PER_MINUTE, &mut s, 0, 31_000).allowed);
        assert!(!run(&TWO_PER_MINUTE, &mut s, 0, 31_000).allowed);
    }

    #[test]
    fn slow_refills_are_not_rounded_away_by_frequent_takes() {
        let one_per_3s = Bucket {
            max_tokens: 1,
            tokens_per_fill: 1,
            fill_interval_ms: 3_000,
        };
        let mut s = None;
        assert!(run(&one_per_3s, &mut s, 0, 0).allowed);
        let admitted = (1..=9_000)
            .filter(|ms| run(&one_per_3s, &mut s, 0, *ms).allowed)
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn a_busy_slot_is_shared_by_a_colliding_value_and_taken_over_once_idle() {
        let mut s = None;
        assert!(run(&TWO_PER_MINUTE, &mut s, 7, 0).allowed);
        // Another value in the same slot shares the resident's bucket: one token left.
        assert!(run(&TWO_PER_MINUTE, &mut s, 9, 0).allowed);
        assert!(!run(&TWO_PER_MINUTE, &mut s, 9, 0).allowed);
        // Once the bucket is full again the newcomer owns the slot.
        assert!(run(&TWO_PER_MINUTE, &mut s, 9, 60_000).allowed);
        assert_eq!(s.map(|s| s.owner), Some(9));
    }

    #[test]
    fn state_round_trips_and_garbage_starts_a_full_bucket() {
        let s = TWO_PER_MINUTE.full(5, 123);
        assert_eq!(State::decode(&s.encode()), Some(s));
        assert_eq!(State::decode(b"short"), None);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let b = Bucket {
            max_tokens: u64::MAX,
            tokens_per_fill: u64::MAX,
            fill_interval_ms: 1,
        };
        let (_, t) = b.take(Some(b.full(0, 0)), 0, u64::MAX);
        assert!(t.allowed);
    }
}
