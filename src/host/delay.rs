//! Requests held by a fault delay. One root-context timer serves every held request of a
//! worker: it is armed for the earliest deadline and switched off when nothing is held, so an
//! idle filter has no tick.

use std::time::Duration;

use crate::http::LocalReply;

/// What to do with a held request when its delay is over.
pub enum AfterDelay {
    Resume,
    Reply(LocalReply),
}

pub struct Held {
    pub deadline_ms: u64,
    pub context_id: u32,
    pub then: AfterDelay,
}

#[derive(Default)]
pub struct DelayQueue {
    held: Vec<Held>,
    /// Deadline the timer is armed for, if armed.
    armed_for: Option<u64>,
}

impl DelayQueue {
    /// Holds a request; returns the tick period to arm when the timer must fire sooner.
    pub fn hold(&mut self, now_ms: u64, held: Held) -> Option<Duration> {
        let deadline = held.deadline_ms;
        self.held.push(held);
        match self.armed_for {
            Some(armed) if armed <= deadline => None,
            _ => {
                self.armed_for = Some(deadline);
                Some(Duration::from_millis(
                    deadline.saturating_sub(now_ms).max(1),
                ))
            }
        }
    }

    /// Forgets a request whose stream ended while held; true when it was held.
    pub fn release(&mut self, context_id: u32) -> bool {
        let before = self.held.len();
        self.held.retain(|h| h.context_id != context_id);
        self.held.len() != before
    }

    /// Takes the requests due at `now_ms`, and the next tick period (zero: switch off).
    pub fn due(&mut self, now_ms: u64) -> (Vec<Held>, Duration) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.deadline_ms <= now_ms);
        self.held = rest;
        self.armed_for = self.held.iter().map(|h| h.deadline_ms).min();
        let next = match self.armed_for {
            Some(d) => Duration::from_millis(d.saturating_sub(now_ms).max(1)),
            None => Duration::ZERO,
        };
        (due, next)
    }
}
