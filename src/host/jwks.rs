//! Remote JWKS (`jwksUri`): fetched by the root context through an Envoy cluster with
//! `dispatch_http_call`, kept for `jwksCacheDuration`, shared with the other workers' VMs
//! through proxy-wasm shared data, and waited for by requests that need them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::abi;
use proxy_wasm::types::{BufferType, MapType, Status};

use crate::authn::{KeyState, RemoteJwks};
use crate::jwt::Jwks;

/// A failed fetch is tried again this soon.
const RETRY_MS: u64 = 1_000;
/// While requests wait for keys another worker may fetch, shared data is read this often.
const WAITING_POLL_MS: u64 = 50;

/// A request paused until a JWKS arrives.
pub type Waiter = Rc<RefCell<super::http::Stream>>;

#[derive(Default)]
pub struct Slot {
    keys: Option<Jwks>,
    /// The last fetch failed and there are no keys to fall back on.
    failed: bool,
    fetched_at_ms: u64,
    next_fetch_ms: u64,
    in_flight: Option<u32>,
    /// Shared-data version last adopted.
    cas: Option<u32>,
    pub waiters: Vec<Waiter>,
}

impl Slot {
    pub fn state(&self) -> KeyState<'_> {
        match (&self.keys, self.failed) {
            (Some(k), _) => KeyState::Ready(k),
            (None, true) => KeyState::Failed,
            (None, false) => KeyState::Pending,
        }
    }
}

fn shared_key(uri: &str) -> String {
    format!("meshrules.jwks.{uri}")
}

/// What a tick or a fetch result did: requests to wake, and whether counters move.
#[derive(Default)]
pub struct Progress {
    pub wake: Vec<Waiter>,
    pub fetched_ok: u32,
    pub fetch_failed: u32,
    /// A key set was replaced: tokens verified with a withdrawn key must not stay trusted.
    pub keys_replaced: bool,
}

/// Adopts keys another VM stored, starts due fetches; returns waiters to wake.
pub fn tick(remote: &[RemoteJwks], slots: &mut [Slot], now_ms: u64) -> Progress {
    let mut progress = Progress::default();
    for (r, slot) in remote.iter().zip(slots.iter_mut()) {
        progress.keys_replaced |= adopt_shared(r, slot, now_ms);
        let stale = slot.keys.is_none()
            || now_ms >= slot.fetched_at_ms + r.cache_duration.as_millis() as u64;
        if stale && slot.in_flight.is_none() && now_ms >= slot.next_fetch_ms {
            if let Err(e) = start_fetch(r, slot) {
                log::warn!(
                    "meshrules: cannot fetch JWKS {} through cluster {}: {e:?}",
                    r.uri,
                    r.cluster
                );
                fail(slot, now_ms, &mut progress);
            }
        }
        if slot.keys.is_some() || slot.failed {
            progress.wake.append(&mut slot.waiters);
        }
    }
    progress
}

/// When the root should tick again for JWKS work.
pub fn next_tick(remote: &[RemoteJwks], slots: &[Slot], now_ms: u64) -> Option<Duration> {
    remote
        .iter()
        .zip(slots)
        .map(|(r, s)| {
            if !s.waiters.is_empty() {
                WAITING_POLL_MS
            } else if s.keys.is_none() {
                s.next_fetch_ms.saturating_sub(now_ms).max(WAITING_POLL_MS)
            } else {
                (s.fetched_at_ms + r.cache_duration.as_millis() as u64)
                    .max(s.next_fetch_ms)
                    .saturating_sub(now_ms)
                    .max(WAITING_POLL_MS)
            }
        })
        .min()
        .map(Duration::from_millis)
}

/// Returns whether the slot took new keys.
fn adopt_shared(r: &RemoteJwks, slot: &mut Slot, now_ms: u64) -> bool {
    let Ok((Some(bytes), Some(cas))) = abi::shared_data(&shared_key(&r.uri)) else {
        return false;
    };
    if slot.cas == Some(cas) {
        return false;
    }
    slot.cas = Some(cas);
    let text = String::from_utf8_lossy(&bytes);
    let Some((stamp, json)) = text.split_once('\n') else {
        return false;
    };
    let fetched_at = stamp.parse::<u64>().unwrap_or(0);
    if fetched_at <= slot.fetched_at_ms
        || now_ms >= fetched_at + r.cache_duration.as_millis() as u64
    {
        return false;
    }
    let Ok(keys) = Jwks::parse(json, false) else {
        return false;
    };
    slot.keys = Some(keys);
    slot.failed = false;
    slot.fetched_at_ms = fetched_at;
    true
}

fn start_fetch(r: &RemoteJwks, slot: &mut Slot) -> Result<(), Status> {
    let headers = [
        (":method", "GET"),
        (":path", r.path.as_str()),
        (":authority", r.authority.as_str()),
        (":scheme", "http"),
        ("accept", "application/json"),
    ];
    let token = abi::http_call(&r.cluster, &headers, r.timeout)?;
    slot.in_flight = Some(token);
    Ok(())
}

fn fail(slot: &mut Slot, now_ms: u64, progress: &mut Progress) {
    slot.in_flight = None;
    slot.next_fetch_ms = now_ms + RETRY_MS;
    progress.fetch_failed += 1;
    // Keys already held keep serving; only a first fetch that fails fails the requests.
    if slot.keys.is_none() {
        slot.failed = true;
        progress.wake.append(&mut slot.waiters);
    }
}

/// A fetch answered (or timed out: Envoy then calls back with no headers).
pub fn on_response(
    remote: &[RemoteJwks],
    slots: &mut [Slot],
    token: u32,
    body_size: usize,
    now_ms: u64,
) -> Option<Progress> {
    let i = slots.iter().position(|s| s.in_flight == Some(token))?;
    let (r, slot) = (&remote[i], &mut slots[i]);
    let mut progress = Progress::default();
    let status = abi::header(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    let body = abi::buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    let json = String::from_utf8_lossy(&body);
    let parsed = match status.as_deref() {
        Some("200") => Jwks::parse(&json, false).and_then(|k| {
            if k.is_empty() {
                Err("no usable keys".to_string())
            } else {
                Ok(k)
            }
        }),
        other => Err(format!(
            "status {}",
            other.unwrap_or("none (timeout or connection failure)")
        )),
    };
    match parsed {
        Ok(keys) => {
            slot.in_flight = None;
            slot.keys = Some(keys);
            slot.failed = false;
            slot.fetched_at_ms = now_ms;
            slot.next_fetch_ms = now_ms;
            progress.fetched_ok += 1;
            progress.keys_replaced = true;
            let value = format!("{now_ms}\n{json}");
            if abi::set_shared_data(&shared_key(&r.uri), value.as_bytes(), None).is_ok() {
                slot.cas = abi::shared_data(&shared_key(&r.uri))
                    .ok()
                    .and_then(|(_, c)| c);
            }
            progress.wake.append(&mut slot.waiters);
        }
        Err(e) => {
            log::warn!("meshrules: JWKS fetch from {} failed: {e}", r.uri);
            fail(slot, now_ms, &mut progress);
        }
    }
    Some(progress)
}
