//! How many refused payments one user can make the gateway store.
//!
//! A payment refused for a business reason (insufficient funds, a currency or owner mismatch,
//! …) is refused by a bank's vote, after the gateway recorded it; its ABORTED record must stay
//! (a retry with the same key must get the same answer), so every refusal costs a row in the
//! log and a leg at each bank. Counting refusals only once they happen is not enough: a
//! client sending many at once has them all in flight before the first is counted (an outside
//! test stored 3,936 in one second with 16 threads).
//!
//! So each user has one budget of [`MAX_REFUSALS_PER_WINDOW`] attempts that are either **in
//! flight** or were **refused within the last [`REFUSAL_WINDOW`]**. An attempt takes a place
//! before anything is written ([`RefusalLimiter::admit`]); it gives the place back when it
//! ends, unless it was refused, in which case the place stays taken until the refusal is a
//! window old. Hence at most [`MAX_REFUSALS_PER_WINDOW`] refusals per user per window are
//! ever stored, however many requests arrive at once, and a user who pays successfully can
//! have that many payments in flight. Per replica and in memory: a restart forgets it, which
//! lets one more window's worth through.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strife_common::Failure;

/// Attempts one user may have in flight or refused within [`REFUSAL_WINDOW`].
pub const MAX_REFUSALS_PER_WINDOW: usize = 60;
/// The sliding window of [`MAX_REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// One user's places.
#[derive(Debug, Default)]
struct Budget {
    /// When each refusal still inside the window happened, oldest first.
    refused: VecDeque<Instant>,
    in_flight: usize,
}

impl Budget {
    fn forget_before(&mut self, now: Instant) {
        while self
            .refused
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= REFUSAL_WINDOW)
        {
            self.refused.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.in_flight == 0
    }
}

/// Every user's budget (see the module docs).
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    users: Mutex<HashMap<String, Budget>>,
}

impl RefusalLimiter {
    fn users(&self) -> MutexGuard<'_, HashMap<String, Budget>> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for one attempt by `username`, or refuses (`RESOURCE_EXHAUSTED`) when
    /// its attempts in flight and recent refusals fill the budget. Nothing is written before.
    pub fn admit(self: &Arc<Self>, username: &str, now: Instant) -> Result<Attempt, Failure> {
        let mut users = self.users();
        let budget = users.entry(username.to_owned()).or_default();
        budget.forget_before(now);
        if budget.refused.len() + budget.in_flight >= MAX_REFUSALS_PER_WINDOW {
            let message = if budget.refused.is_empty() {
                format!(
                    "at most {MAX_REFUSALS_PER_WINDOW} payments of one user in flight at once; \
                     retry when one has finished"
                )
            } else {
                format!(
                    "too many refused payments: at most {MAX_REFUSALS_PER_WINDOW} payments in \
                     flight or refused in {} s; try again later",
                    REFUSAL_WINDOW.as_secs()
                )
            };
            if budget.is_empty() {
                users.remove(username);
            }
            return Err(Failure::ResourceExhausted(message));
        }
        budget.in_flight += 1;
        Ok(Attempt {
            limiter: Arc::clone(self),
            username: username.to_owned(),
            refused_at: None,
        })
    }

    /// Attempts in flight and refusals in the window, for `username` (tests, metrics).
    pub fn taken(&self, username: &str, now: Instant) -> usize {
        let mut users = self.users();
        users.get_mut(username).map_or(0, |budget| {
            budget.forget_before(now);
            budget.refused.len() + budget.in_flight
        })
    }
}

/// One admitted attempt's place; given back when dropped, unless [`Attempt::refused`] was
/// called, in which case the place is held for [`REFUSAL_WINDOW`] from the refusal.
#[derive(Debug)]
pub struct Attempt {
    limiter: Arc<RefusalLimiter>,
    username: String,
    refused_at: Option<Instant>,
}

impl Attempt {
    /// The attempt was stored as refused for a business reason at `now`.
    pub fn refused(mut self, now: Instant) {
        self.refused_at = Some(now);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut users = self.limiter.users();
        let Some(budget) = users.get_mut(&self.username) else {
            return;
        };
        budget.in_flight = budget.in_flight.saturating_sub(1);
        if let Some(at) = self.refused_at {
            budget.refused.push_back(at);
        }
        if budget.is_empty() {
            users.remove(&self.username);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fill_the_budget_for_a_sliding_window() {
        let limiter = Arc::new(RefusalLimiter::default());
        let start = Instant::now();
        for second in 0..MAX_REFUSALS_PER_WINDOW {
            let at = start + Duration::from_millis(second as u64 * 500);
            limiter.admit("alice", at).unwrap().refused(at);
        }
        let full = start + Duration::from_secs(30);
        assert!(matches!(
            limiter.admit("alice", full),
            Err(Failure::ResourceExhausted(_))
        ));
        assert!(limiter.admit("bob", full).is_ok(), "per user");
        // The oldest refusal leaves the window a minute after it happened.
        assert!(limiter.admit("alice", start + REFUSAL_WINDOW).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_so_a_burst_cannot_overshoot() {
        let limiter = Arc::new(RefusalLimiter::default());
        let now = Instant::now();
        // A burst far larger than the budget arrives before any of it is decided.
        let admitted: Vec<Attempt> = (0..MAX_REFUSALS_PER_WINDOW * 10)
            .filter_map(|_| limiter.admit("mallory", now).ok())
            .collect();
        assert_eq!(admitted.len(), MAX_REFUSALS_PER_WINDOW);
        // Every one of them is refused: exactly the budget is stored, and it stays full.
        for attempt in admitted {
            attempt.refused(now);
        }
        assert_eq!(limiter.taken("mallory", now), MAX_REFUSALS_PER_WINDOW);
        assert!(limiter.admit("mallory", now).is_err());
    }

    #[test]
    fn attempts_that_succeed_give_their_place_back() {
        let limiter = Arc::new(RefusalLimiter::default());
        let now = Instant::now();
        for _ in 0..MAX_REFUSALS_PER_WINDOW * 3 {
            drop(limiter.admit("alice", now).unwrap());
        }
        assert_eq!(limiter.taken("alice", now), 0);
        assert!(limiter.users().is_empty(), "no entry left for an idle user");
    }
}
