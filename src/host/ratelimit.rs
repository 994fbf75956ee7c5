//! Rate-limit buckets in proxy-wasm shared data, so that a limit holds for the whole Envoy
//! across its worker VMs: the store under `ratelimit::take`'s compare-and-swap loop.

use proxy_wasm::types::Status;

use super::abi;
use crate::ratelimit::{Key, State, Store, Stored, WriteError};
use crate::rules::ratelimit::{Bucket, RateLimits};

/// The filter's buckets; counts the reads and writes that failed (each refuses its request).
#[derive(Default)]
pub struct SharedBuckets {
    pub failed: u32,
}

impl Store for SharedBuckets {
    fn read(&mut self, name: &str) -> Option<Stored> {
        match abi::shared_data(name) {
            Ok((bytes, version)) => Some(Stored {
                state: bytes.as_deref().and_then(State::decode),
                version,
            }),
            Err(_) => {
                self.failed += 1;
                None
            }
        }
    }

    fn write(&mut self, name: &str, state: &State, version: Option<u32>) -> Result<(), WriteError> {
        match abi::set_shared_data(name, &state.encode(), version) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(WriteError::Conflict),
            Err(_) => {
                self.failed += 1;
                Err(WriteError::Failed)
            }
        }
    }
}

/// Makes every bucket of `limits` that does not exist yet, full, before requests take from
/// them: then every take is a compare-and-swap on an existing value.
pub fn prepare(limits: &RateLimits, now_ms: u64) {
    for l in &limits.limits {
        let make = |key: Key<'_>, bucket: &Bucket| {
            for slot in 0..key.slots {
                let name = key.slot_name(slot);
                if let Ok((None, _)) = abi::shared_data(&name) {
                    let _ = abi::set_shared_data(&name, &bucket.full(0, now_ms).encode(), None);
                }
            }
        };
        let route = Key {
            limit: &l.name,
            descriptor: None,
            owner: 0,
            slots: 1,
        };
        if let Some(b) = &l.default_bucket {
            make(route, b);
        }
        for (i, d) in l.descriptors.iter().enumerate() {
            let slots = if d.is_dynamic() { l.max_dynamic } else { 1 };
            make(
                Key {
                    descriptor: Some(i),
                    slots,
                    ..route
                },
                &d.bucket,
            );
        }
    }
}
