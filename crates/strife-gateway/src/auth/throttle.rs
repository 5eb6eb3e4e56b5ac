//! Failed-login counting on one replica, as pure structures (time is passed in, so they are
//! tested without clocks): [`Throttle`] per lockout key (a name in a scope), with tries
//! reserved before argon2id runs, and [`AddressLimits`] per client address for console
//! logins. The rule itself is the ledger's (`strife_ledger::lockout`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strife_common::limits::MAX_TRACKED_ADDRESSES;
use strife_common::Failure;
use strife_ledger::lockout::{self, LockoutPolicy, SharedLogin};

/// The throttle state of one key: its lockout record ([`lockout`]'s rule, on the throttle's
/// own clock) and the checks reserved and not finished yet.
#[derive(Debug)]
pub(super) struct LoginState {
    record: SharedLogin,
    /// Checks reserved and not finished yet. They count against the threshold, so a burst of
    /// concurrent guesses cannot all be checked before the first one fails.
    in_flight: u32,
}

impl LoginState {
    /// Nothing to remember: no check in flight, no lock running, no failure in the window.
    pub(super) fn idle(&self, policy: LockoutPolicy, now_ms: i64) -> bool {
        self.in_flight == 0
            && self.record.locked_for(now_ms).is_none()
            && lockout::current(self.record, policy, now_ms).failures == 0
    }
}

/// Why a password may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The name is locked after too many failures; for this long still.
    Locked(Duration),
    /// Failures plus checks in flight already reach the name's threshold in this window.
    TooManyTries,
    /// The client address is locked after too many failed console logins; for this long.
    AddressLocked(Duration),
    /// The address's failures plus checks in flight reach its budget in this window.
    AddressBusy,
    /// The address made its share of console login attempts; the next one in this long.
    AddressRate(Duration),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        let seconds = |left: Duration| left.as_secs_f64().ceil().max(1.0) as u64;
        Failure::ResourceExhausted(match refusal {
            Refusal::Locked(left) => format!(
                "too many failed logins for this name; locked, try again in {} s",
                seconds(left)
            ),
            Refusal::TooManyTries => {
                "too many login attempts for this name right now; try again later".into()
            }
            Refusal::AddressLocked(left) => format!(
                "too many failed logins from your address; try again in {} s",
                seconds(left)
            ),
            Refusal::AddressBusy => {
                "too many login attempts from your address right now; try again later".into()
            }
            Refusal::AddressRate(left) => format!(
                "too many logins from your address; try again in {} s",
                seconds(left)
            ),
        })
    }
}

/// Failed-login counting and lockout per key, in memory (time is passed in, so it is tested
/// without clocks); the rule itself is [`lockout`]'s. A password check must first
/// [`reserve`](Self::reserve) a try; the reservation is taken under one lock before argon2id
/// runs, so at most `threshold` checks per key per window ever run, however many requests
/// arrive at once. Keys are lockout scope keys ([`Scope::key`]) or client address groups.
#[derive(Debug)]
pub(super) struct Throttle {
    policy: LockoutPolicy,
    /// The zero of this throttle's millisecond clock (monotonic, unlike the store's).
    epoch: Instant,
    max_tracked: usize,
    keys: HashMap<String, LoginState>,
}

impl Throttle {
    pub(super) fn new(policy: LockoutPolicy, max_tracked: usize) -> Self {
        Throttle {
            policy,
            epoch: Instant::now(),
            max_tracked,
            keys: HashMap::new(),
        }
    }

    pub(super) fn at(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(i64::MAX)
    }

    /// The lock still running on `key`, if any.
    pub(super) fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        let now_ms = self.at(now);
        self.keys
            .get(key)
            .and_then(|state| state.record.locked_for(now_ms))
    }

    /// The state of `key`, made if needed; a full table forgets idle keys first, then the
    /// one whose lock ends soonest (keys come from certificates, names that exist, or client
    /// addresses, so this only matters under a flood of addresses).
    pub(super) fn state(&mut self, key: &str, now_ms: i64) -> &mut LoginState {
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_tracked {
            let policy = self.policy;
            self.keys.retain(|_, state| !state.idle(policy, now_ms));
            if self.keys.len() >= self.max_tracked {
                let soonest = self
                    .keys
                    .iter()
                    .filter(|(_, state)| state.in_flight == 0)
                    .min_by_key(|(_, state)| state.record.locked_until_unix_ms)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    self.keys.remove(&soonest);
                }
            }
        }
        self.keys
            .entry(key.to_owned())
            .or_insert_with(|| LoginState {
                record: SharedLogin::new(now_ms),
                in_flight: 0,
            })
    }

    /// Takes one try for `key`, or says why not.
    pub(super) fn reserve(&mut self, key: &str, now: Instant) -> Result<(), Refusal> {
        if let Some(left) = self.locked(key, now) {
            return Err(Refusal::Locked(left));
        }
        let now_ms = self.at(now);
        let policy = self.policy;
        let state = self.state(key, now_ms);
        state.record = lockout::current(state.record, policy, now_ms);
        if state.record.failures.saturating_add(state.in_flight) >= policy.threshold {
            return Err(Refusal::TooManyTries);
        }
        state.in_flight += 1;
        Ok(())
    }

    /// Gives back a reserved try whose check never ran (the request went away first), or
    /// whose success clears nothing (a client address).
    pub(super) fn release(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// Ends a reserved try with its result. Returns the lock this failure started, if any.
    pub(super) fn finish(&mut self, key: &str, success: bool, now: Instant) -> Option<Duration> {
        self.release(key);
        if success {
            if self.keys.get(key).is_some_and(|state| state.in_flight == 0) {
                self.keys.remove(key);
            } else {
                let now_ms = self.at(now);
                if let Some(state) = self.keys.get_mut(key) {
                    state.record = SharedLogin::new(now_ms);
                }
            }
            return None;
        }
        self.record_failure(key, now)
    }

    /// Counts a failed check made elsewhere (no try was reserved here: a gRPC failure in the
    /// console scope). Returns the lock it started, if any.
    pub(super) fn record_failure(&mut self, key: &str, now: Instant) -> Option<Duration> {
        let now_ms = self.at(now);
        let policy = self.policy;
        let state = self.state(key, now_ms);
        let (record, lock) = lockout::fail(Some(state.record), policy, now_ms);
        state.record = record;
        lock
    }
}

/// What one client address (group) may still do on the console: its failed logins (a
/// [`Throttle`] with one try fewer than a name, see [`LockoutPolicy::address_budget`]) and
/// its rate of login attempts (a token bucket of [`CONSOLE_LOGINS_PER_ADDRESS_PER_MINUTE`]).
/// Per replica, in memory.
#[derive(Debug)]
pub(super) struct AddressLimits {
    failures: Throttle,
    attempts: HashMap<String, Bucket>,
    per_minute: u32,
}

/// Attempts left to one address, refilled continuously.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl AddressLimits {
    pub(super) fn new(policy: LockoutPolicy, per_minute: u32) -> Self {
        AddressLimits {
            failures: Throttle::new(policy.for_addresses(), MAX_TRACKED_ADDRESSES),
            attempts: HashMap::new(),
            per_minute: per_minute.max(1),
        }
    }

    /// The bucket of `address` refilled to `now`.
    pub(super) fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + elapsed * rate).min(capacity),
            updated: now,
        }
    }

    /// Takes one console login attempt for `address` — refused while it is locked, past its
    /// rate, or with its whole failure budget in flight — and reserves a try against its
    /// failures (to be ended with [`Self::failed`] or [`Self::released`]).
    pub(super) fn admit(&mut self, address: &str, now: Instant) -> Result<(), Refusal> {
        if let Some(left) = self.failures.locked(address, now) {
            return Err(Refusal::AddressLocked(left));
        }
        let full = Bucket {
            tokens: f64::from(self.per_minute),
            updated: now,
        };
        if !self.attempts.contains_key(address) && self.attempts.len() >= MAX_TRACKED_ADDRESSES {
            // Full buckets hold nothing worth keeping; if every one is in use, the address
            // with the most attempts left is forgotten (it had the least against it).
            let capacity = f64::from(self.per_minute);
            self.attempts
                .retain(|_, bucket| bucket.tokens + 60.0 * f64::EPSILON < capacity);
            if self.attempts.len() >= MAX_TRACKED_ADDRESSES {
                let most = self
                    .attempts
                    .iter()
                    .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
                    .map(|(key, _)| key.clone());
                if let Some(most) = most {
                    self.attempts.remove(&most);
                }
            }
        }
        let bucket = self.refilled(self.attempts.get(address).copied().unwrap_or(full), now);
        if bucket.tokens < 1.0 {
            let rate = f64::from(self.per_minute) / 60.0;
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            self.attempts.insert(address.to_owned(), bucket);
            return Err(Refusal::AddressRate(wait));
        }
        self.failures
            .reserve(address, now)
            .map_err(|refusal| match refusal {
                Refusal::Locked(left) => Refusal::AddressLocked(left),
                _ => Refusal::AddressBusy,
            })?;
        self.attempts.insert(
            address.to_owned(),
            Bucket {
                tokens: bucket.tokens - 1.0,
                ..bucket
            },
        );
        Ok(())
    }

    /// The admitted attempt failed its password check. Returns the lock it started, if any.
    pub(super) fn failed(&mut self, address: &str, now: Instant) -> Option<Duration> {
        self.failures.release(address);
        self.failures.record_failure(address, now)
    }

    /// The admitted attempt ended otherwise (success, or refused before any check): a
    /// success does not clear an address's failures (one account of its own must not buy an
    /// address more guesses at others).
    pub(super) fn released(&mut self, address: &str) {
        self.failures.release(address);
    }
}
