//! Authentication and authorization as one tower layer around every gateway service.
//!
//! For each request: the TLS layer already verified the client certificate against our CA;
//! here the certificate's role and CN are read, users must also send `x-strife-user` (equal
//! to the CN) and `x-strife-password` (checked against an argon2id hash), repeated failures
//! lock the name for a while, and the method → roles table ([`crate::roles`]) decides. The
//! verified [`Caller`] goes into the request's extensions for the handlers.
//!
//! Web console logins ([`Authenticator::authenticate_console`]) take the same checks in their
//! own lockout scope ([`crate::lockout::Scope`]), behind a per-client-address throttle and
//! rate, without the remembered-password shortcut, in a wait queue of their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use futures::future::BoxFuture;
use strife_common::limits::{
    CONSOLE_LOGINS_PER_ADDRESS_PER_MINUTE, MAX_TRACKED_ADDRESSES,
    MAX_WAITING_CONSOLE_PASSWORD_CHECKS, MAX_WAITING_PASSWORD_CHECKS,
};
use strife_common::metadata::{PASSWORD_KEY, USER_KEY};
use strife_common::net::connection::ConnectionInfo;
use strife_common::net::connection::{connection_identity, PeerIdentity, PeerRole};
use strife_common::net::listener::AddressGroup;
use strife_common::Failure;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::TlsConnectInfo;

use crate::metrics::GatewayMetrics;
use crate::request::{Caller, RequestLogSlot};
use crate::roles::{allowed_roles, Role};
use strife_common::time::now_unix_ms;

use strife_ledger::lockout::{self, LockoutPolicy, Scope, SharedLogin};
use strife_ledger::store::{GatewayStore, LoginChange};

/// Most lockout keys (names in each scope) tracked for failed logins; past it, idle entries
/// are forgotten first.
const MAX_TRACKED_NAMES: usize = 10_000;
/// How long a verified password is remembered, so a busy client pays for argon2id once per
/// this period instead of once per request.
const SESSION_TTL: Duration = Duration::from_secs(300);
/// Most remembered sessions; past it, expired ones are dropped (and, if needed, all).
const MAX_SESSIONS: usize = 100_000;

/// A password that passed argon2id recently, remembered only as a keyed BLAKE2b digest (the
/// key is random per process), so the cache never holds a password or a reusable hash.
struct VerifiedSession {
    digest: [u8; 64],
    role: Role,
    expires: Instant,
}

/// One password check that identical concurrent requests wait on together.
type SharedCheck = Arc<OnceCell<Option<Role>>>;

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, Failure> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|error| Failure::internal("salt", error))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Failure::internal("hashing password", error))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The throttle state of one key: its lockout record ([`lockout`]'s rule, on the throttle's
/// own clock) and the checks reserved and not finished yet.
#[derive(Debug)]
struct LoginState {
    record: SharedLogin,
    /// Checks reserved and not finished yet. They count against the threshold, so a burst of
    /// concurrent guesses cannot all be checked before the first one fails.
    in_flight: u32,
}

impl LoginState {
    /// Nothing to remember: no check in flight, no lock running, no failure in the window.
    fn idle(&self, policy: LockoutPolicy, now_ms: i64) -> bool {
        self.in_flight == 0
            && self.record.locked_for(now_ms).is_none()
            && lockout::current(self.record, policy, now_ms).failures == 0
    }
}

/// Why a password may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
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
struct Throttle {
    policy: LockoutPolicy,
    /// The zero of this throttle's millisecond clock (monotonic, unlike the store's).
    epoch: Instant,
    max_tracked: usize,
    keys: HashMap<String, LoginState>,
}

impl Throttle {
    fn new(policy: LockoutPolicy, max_tracked: usize) -> Self {
        Throttle {
            policy,
            epoch: Instant::now(),
            max_tracked,
            keys: HashMap::new(),
        }
    }

    fn at(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(i64::MAX)
    }

    /// The lock still running on `key`, if any.
    fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        let now_ms = self.at(now);
        self.keys
            .get(key)
            .and_then(|state| state.record.locked_for(now_ms))
    }

    /// The state of `key`, made if needed; a full table forgets idle keys first, then the
    /// one whose lock ends soonest (keys come from certificates, names that exist, or client
    /// addresses, so this only matters under a flood of addresses).
    fn state(&mut self, key: &str, now_ms: i64) -> &mut LoginState {
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
    fn reserve(&mut self, key: &str, now: Instant) -> Result<(), Refusal> {
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
    fn release(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// Ends a reserved try with its result. Returns the lock this failure started, if any.
    fn finish(&mut self, key: &str, success: bool, now: Instant) -> Option<Duration> {
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
    fn record_failure(&mut self, key: &str, now: Instant) -> Option<Duration> {
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
struct AddressLimits {
    failures: Throttle,
    attempts: HashMap<String, Bucket>,
    per_minute: u32,
}

/// Attempts left to one address, refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl AddressLimits {
    fn new(policy: LockoutPolicy, per_minute: u32) -> Self {
        AddressLimits {
            failures: Throttle::new(policy.for_addresses(), MAX_TRACKED_ADDRESSES),
            attempts: HashMap::new(),
            per_minute: per_minute.max(1),
        }
    }

    /// The bucket of `address` refilled to `now`.
    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
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
    fn admit(&mut self, address: &str, now: Instant) -> Result<(), Refusal> {
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
    fn failed(&mut self, address: &str, now: Instant) -> Option<Duration> {
        self.failures.release(address);
        self.failures.record_failure(address, now)
    }

    /// The admitted attempt ended otherwise (success, or refused before any check): a
    /// success does not clear an address's failures (one account of its own must not buy an
    /// address more guesses at others).
    fn released(&mut self, address: &str) {
        self.failures.release(address);
    }
}

/// Which wait queue a password check stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Grpc,
    Console,
}

/// Runs argon2id checks on at most one thread per CPU, with bounded queues in front: one for
/// gRPC logins, a much smaller one for console logins, which also run on at most half the
/// CPUs (at least one), so console logins can neither fill the gRPC queue nor take every CPU.
struct VerifyPool {
    permits: Arc<Semaphore>,
    console_permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    console_waiting: AtomicUsize,
}

/// Leaves the wait queue when the waiter gets a permit or goes away.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to run one argon2id check now (held until it is done).
struct CheckPermit {
    _cpu: OwnedSemaphorePermit,
    _console: Option<OwnedSemaphorePermit>,
}

impl VerifyPool {
    fn new() -> Self {
        Self::with_permits(
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        )
    }

    fn with_permits(permits: usize) -> Self {
        VerifyPool {
            permits: Arc::new(Semaphore::new(permits)),
            console_permits: Arc::new(Semaphore::new((permits / 2).max(1))),
            waiting: AtomicUsize::new(0),
            console_waiting: AtomicUsize::new(0),
        }
    }

    async fn acquire(&self, queue: Queue) -> Result<CheckPermit, Failure> {
        let (waiting, bound) = match queue {
            Queue::Grpc => (&self.waiting, MAX_WAITING_PASSWORD_CHECKS),
            Queue::Console => (&self.console_waiting, MAX_WAITING_CONSOLE_PASSWORD_CHECKS),
        };
        let mut console = match queue {
            Queue::Grpc => None,
            Queue::Console => Arc::clone(&self.console_permits).try_acquire_owned().ok(),
        };
        if queue == Queue::Grpc || console.is_some() {
            if let Ok(cpu) = Arc::clone(&self.permits).try_acquire_owned() {
                return Ok(CheckPermit {
                    _cpu: cpu,
                    _console: console,
                });
            }
        }
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
                (count < bound).then_some(count + 1)
            })
            .map_err(|_| {
                Failure::ResourceExhausted(
                    "the gateway is busy checking passwords; try again shortly".into(),
                )
            })?;
        let _waiting = Waiting(waiting);
        let closed = |error| Failure::internal("password check pool", error);
        if queue == Queue::Console && console.is_none() {
            console = Some(
                Arc::clone(&self.console_permits)
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
            );
        }
        let cpu = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(closed)?;
        Ok(CheckPermit {
            _cpu: cpu,
            _console: console,
        })
    }
}

/// Forgets a shared check when its request is done, also when the request goes away
/// mid-check (dropped), so the map of checks in flight never keeps stale entries.
struct CheckGuard<'a> {
    authenticator: &'a Authenticator,
    digest: [u8; 64],
    check: SharedCheck,
}

impl Drop for CheckGuard<'_> {
    fn drop(&mut self) {
        self.authenticator.check_finished(&self.digest, &self.check);
    }
}

/// A reserved try of one name in one scope (and, for the console, of the client address);
/// given back unless [`Authenticator::finish`] consumed it.
struct Reservation {
    authenticator: Arc<Authenticator>,
    username: String,
    scope: Scope,
    /// The console login's client address group, whose try is reserved too.
    address: Option<String>,
    finished: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.finished {
            self.authenticator
                .throttle()
                .release(&self.scope.key(&self.username));
            if let Some(address) = &self.address {
                self.authenticator.addresses().released(address);
            }
        }
    }
}

/// The address's try, taken before a console login's name is looked at; given back unless
/// it moves into the name's [`Reservation`].
struct AddressTry {
    authenticator: Arc<Authenticator>,
    address: Option<String>,
}

impl Drop for AddressTry {
    fn drop(&mut self) {
        if let Some(address) = self.address.take() {
            self.authenticator.addresses().released(&address);
        }
    }
}

/// Checks credentials and keeps the failed-login counters.
pub struct Authenticator {
    store: Arc<dyn GatewayStore>,
    policy: LockoutPolicy,
    /// Keyed by lockout scope key ([`Scope::key`]).
    throttle: Mutex<Throttle>,
    addresses: Mutex<AddressLimits>,
    verify_pool: VerifyPool,
    sessions: Mutex<HashMap<String, VerifiedSession>>,
    /// Password checks running now, by (name, password) digest, shared by identical requests.
    checks: Mutex<HashMap<[u8; 64], SharedCheck>>,
    session_key: [u8; 32],
    /// Verified against when the user does not exist, so timing does not reveal which names do.
    decoy_hash: String,
    metrics: Arc<GatewayMetrics>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn GatewayStore>, policy: LockoutPolicy) -> Result<Self, Failure> {
        Ok(Authenticator {
            store,
            policy,
            throttle: Mutex::new(Throttle::new(policy, MAX_TRACKED_NAMES)),
            addresses: Mutex::new(AddressLimits::new(
                policy,
                CONSOLE_LOGINS_PER_ADDRESS_PER_MINUTE,
            )),
            verify_pool: VerifyPool::new(),
            sessions: Mutex::new(HashMap::new()),
            checks: Mutex::new(HashMap::new()),
            session_key: rand::random(),
            decoy_hash: hash_password("decoy password never matches")?,
            metrics: Arc::new(GatewayMetrics::new()),
        })
    }

    /// Counts failed logins and lockouts in `metrics` instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<GatewayMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn session_digest(&self, username: &str, password: &str) -> [u8; 64] {
        use blake2::{Blake2b512, Digest};
        let mut hasher = Blake2b512::new();
        hasher.update(self.session_key);
        hasher.update((username.len() as u64).to_le_bytes());
        hasher.update(username.as_bytes());
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// The role of a recently verified (user, password), without running argon2id again.
    fn remembered(&self, username: &str, password: &str) -> Option<Role> {
        use subtle::ConstantTimeEq;
        let digest = self.session_digest(username, password);
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let session = sessions.get(username)?;
        let matches: bool = session.digest.ct_eq(&digest).into();
        (matches && Instant::now() < session.expires).then_some(session.role)
    }

    fn remember(&self, username: &str, password: &str, role: Role) {
        let digest = self.session_digest(username, password);
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            let now = Instant::now();
            sessions.retain(|_, session| session.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
        }
        let expires = Instant::now() + SESSION_TTL;
        sessions.insert(
            username.to_owned(),
            VerifiedSession {
                digest,
                role,
                expires,
            },
        );
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn addresses(&self) -> std::sync::MutexGuard<'_, AddressLimits> {
        self.addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock (in this replica's memory) that refuses a login of `username` in `scope` now.
    fn locked_locally(&self, username: &str, scope: Scope) -> Option<Duration> {
        let now = Instant::now();
        let throttle = self.throttle();
        lockout::refusing_scopes(scope, &self.policy, username)
            .iter()
            .filter_map(|refusing| throttle.locked(&refusing.key(username), now))
            .max()
    }

    /// Ends a reserved try with its result, in every scope it counts in, and for the console
    /// login's address.
    fn finish(&self, mut reservation: Reservation, success: bool) {
        reservation.finished = true;
        let now = Instant::now();
        let username = &reservation.username;
        let lock = {
            let mut throttle = self.throttle();
            let lock = throttle.finish(&reservation.scope.key(username), success, now);
            if !success {
                // A gRPC failure also uses up the console budget (not a lock of its own here:
                // `strife_lockouts_total` counts the scope the check was made in).
                for other in lockout::counting_scopes(reservation.scope) {
                    if *other != reservation.scope {
                        throttle.record_failure(&other.key(username), now);
                    }
                }
            }
            lock
        };
        if let Some(address) = reservation.address.take() {
            let mut addresses = self.addresses();
            if success {
                addresses.released(&address);
            } else if let Some(lock) = addresses.failed(&address, now) {
                drop(addresses);
                self.metrics.console_address_locked();
                tracing::warn!(
                    address = %address,
                    lock_secs = lock.as_secs(),
                    "too many failed console logins from one address; address locked"
                );
            }
        }
        if !success {
            self.metrics.login_failed();
        }
        if let Some(lock) = lock {
            self.metrics.locked_out();
            // The name comes from a verified certificate CN (or a console form, checked
            // against the name rules), but is still escaped: a log line must stay one line.
            tracing::warn!(
                username = %username.escape_debug(),
                scope = ?reservation.scope,
                lock_secs = lock.as_secs(),
                "too many failed logins; locked"
            );
        }
    }

    /// The shared check of one (name, password) digest, joined or started.
    fn check_in_flight(&self, digest: [u8; 64]) -> SharedCheck {
        let mut checks = self
            .checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(checks.entry(digest).or_default())
    }

    /// Forgets a finished shared check (later requests look at the session cache, or check
    /// again). Only removes the very check given, not a newer one under the same digest.
    fn check_finished(&self, digest: &[u8; 64], check: &SharedCheck) {
        let mut checks = self
            .checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if checks
            .get(digest)
            .is_some_and(|current| Arc::ptr_eq(current, check))
        {
            checks.remove(digest);
        }
    }

    /// One argon2id check of a login in `scope`: refuses while a lock that applies is running
    /// (shared records first, then this replica's), reserves a try for the name, waits for a
    /// slot on the bounded pool, verifies and counts the result. `Ok(None)`: wrong password or
    /// unknown name. `address`: a console login's client address, whose try was reserved.
    async fn check_password(
        self: &Arc<Self>,
        username: &str,
        password: &str,
        scope: Scope,
        mut address: AddressTry,
    ) -> Result<Option<Role>, Failure> {
        // The locks every replica shares (and a restart keeps) come first.
        let now_ms = now_unix_ms();
        let mut shared = None;
        for refusing in lockout::refusing_scopes(scope, &self.policy, username) {
            let login = self.store.login(&refusing.key(username)).await?;
            if let Some(left) = login.and_then(|login| login.locked_for(now_ms)) {
                return Err(Refusal::Locked(left).into());
            }
            if *refusing == scope {
                shared = login;
            }
        }
        if let Some(left) = self.locked_locally(username, scope) {
            return Err(Refusal::Locked(left).into());
        }
        self.throttle()
            .reserve(&scope.key(username), Instant::now())
            .map_err(Failure::from)?;
        let reservation = Reservation {
            authenticator: Arc::clone(self),
            username: username.to_owned(),
            scope,
            address: address.address.take(),
            finished: false,
        };
        let queue = match scope {
            Scope::Certificate => Queue::Grpc,
            Scope::Console => Queue::Console,
        };
        // Dropping the reservation (queue full, or the request went away while waiting)
        // gives the try back: no password was checked.
        let permit = self.verify_pool.acquire(queue).await?;
        let this = Arc::clone(self);
        let name = username.to_owned();
        let password = password.to_owned();
        // A storage error (or the caller going away) before the check returns here and drops
        // the reservation: nothing was checked, so the try is given back.
        let user = this.store.user(&name).await?;
        let exists = user.is_some();
        // The permit and the reservation move into the blocking task, so a caller that goes
        // away mid-check neither frees the CPU slot early nor skips counting the failure.
        let role = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if scope == Scope::Console {
                this.metrics.console_password_checked();
            }
            let hash = user
                .as_ref()
                .map_or(this.decoy_hash.as_str(), |user| user.password_hash.as_str());
            let verified = verify_password(&password, hash);
            let role = user
                .filter(|_| verified)
                .and_then(|user| Role::from_stored(&user.role));
            this.finish(reservation, role.is_some());
            role
        })
        .await
        .map_err(|error| Failure::internal("password check", error))?;
        // Only names that exist get a shared record: the console takes any name typed, and
        // a row per made-up name would grow the shared table without bound. A made-up name
        // is still throttled and locked by this replica, and answered exactly as a wrong
        // password is.
        if exists {
            self.share_outcome(username, scope, role.is_some(), shared)
                .await;
        }
        Ok(role)
    }

    /// Reports a finished check to the shared records: a failure counts for every replica in
    /// every scope it counts in; a success clears what was held against the name in the scope
    /// it was made in (written only if there was something).
    async fn share_outcome(
        &self,
        username: &str,
        scope: Scope,
        success: bool,
        shared: Option<SharedLogin>,
    ) {
        let changes: Vec<(Scope, LoginChange)> = if success {
            if shared.is_none_or(|login| login.is_clean()) {
                return;
            }
            vec![(scope, Box::new(|_| lockout::after_success()))]
        } else {
            let policy = self.policy;
            lockout::counting_scopes(scope)
                .iter()
                .map(|counting| {
                    let change: LoginChange = Box::new(move |current| {
                        Some(lockout::after_failure(current, policy, now_unix_ms()))
                    });
                    (*counting, change)
                })
                .collect()
        };
        for (counting, change) in changes {
            if let Err(failure) = self
                .store
                .update_login(&counting.key(username), change)
                .await
            {
                // The local throttle still counted it; only the other replicas miss this one.
                tracing::warn!(%failure, "could not share a login outcome");
            }
        }
    }

    /// Verifies a request's peer and credentials.
    pub async fn authenticate(
        self: &Arc<Self>,
        peer: PeerIdentity,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Caller, Failure> {
        match peer.role {
            PeerRole::Bank => {
                return Ok(Caller {
                    username: peer.name.clone(),
                    role: Role::Bank,
                    peer,
                })
            }
            PeerRole::Gateway => return Err(Failure::Unauthenticated),
            PeerRole::User => {}
        }
        let (Some(username), Some(password)) = (username, password) else {
            return Err(Failure::Unauthenticated);
        };
        if username != peer.name {
            return Err(Failure::Unauthenticated);
        }
        // Only a holder of this name's certificate gets this far, so a stranger cannot lock
        // anyone's certificate scope. A locked name fails even with a remembered password.
        if let Some(left) = self.locked_locally(&username, Scope::Certificate) {
            return Err(Refusal::Locked(left).into());
        }
        if let Some(role) = self.remembered(&username, &password) {
            return Ok(Caller {
                username,
                role,
                peer,
            });
        }
        // Requests carrying the same (name, password) while it is being checked wait for
        // that one check instead of each reserving a try: a client opening with 20 requests
        // at once costs one argon2id run and one try, not 20 (which would exceed the
        // threshold). Different guesses are different checks and each reserves its own try.
        let digest = self.session_digest(&username, &password);
        let check = CheckGuard {
            authenticator: self,
            digest,
            check: self.check_in_flight(digest),
        };
        let role = check
            .check
            .get_or_try_init(|| {
                let no_address = AddressTry {
                    authenticator: Arc::clone(self),
                    address: None,
                };
                self.check_password(&username, &password, Scope::Certificate, no_address)
            })
            .await
            .copied()?;
        drop(check);
        let typed = password;
        let role = role.ok_or(Failure::Unauthenticated)?;
        self.remember(&username, &typed, role);
        Ok(Caller {
            username,
            role,
            peer,
        })
    }

    /// Checks a web console login from `client`. Browsers have no client certificate, so the
    /// name typed is the identity. In order: the client address's throttle and rate (refused
    /// before any password is checked, and without counting against the name), then the
    /// name's locks in both scopes, the console scope's throttle, and argon2id — every time:
    /// no remembered password, no check shared with identical requests. A failure counts in
    /// the console scope and for the address. The role comes from the user's record.
    pub async fn authenticate_console(
        self: &Arc<Self>,
        username: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Caller, Failure> {
        let address = AddressGroup::of(client).to_string();
        self.addresses()
            .admit(&address, Instant::now())
            .map_err(Failure::from)?;
        let address = AddressTry {
            authenticator: Arc::clone(self),
            address: Some(address),
        };
        let role = self
            .check_password(username, password, Scope::Console, address)
            .await?
            .ok_or(Failure::Unauthenticated)?;
        Ok(Caller {
            username: username.to_owned(),
            role,
            peer: PeerIdentity {
                role: PeerRole::User,
                name: username.to_owned(),
            },
        })
    }
}

/// The tower layer that authenticates and authorizes every request.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        AuthLayer { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

fn header(request: &http::Request<tonic::body::Body>, key: &str) -> Option<String> {
    request
        .headers()
        .get(key)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn peer_of(request: &http::Request<tonic::body::Body>) -> Result<PeerIdentity, Failure> {
    let info = request
        .extensions()
        .get::<TlsConnectInfo<ConnectionInfo>>()
        .ok_or(Failure::Unauthenticated)?;
    connection_identity(info)
}

/// What authorization needs from a request, taken out before any await (the body is not
/// `Sync`, so the request itself cannot be held across one).
struct Credentials {
    peer: Result<PeerIdentity, Failure>,
    username: Option<String>,
    password: Option<String>,
    path: String,
}

impl Credentials {
    fn of(request: &http::Request<tonic::body::Body>) -> Self {
        Credentials {
            peer: peer_of(request),
            username: header(request, USER_KEY),
            password: header(request, PASSWORD_KEY),
            path: request.uri().path().to_owned(),
        }
    }
}

async fn authorize(
    authenticator: &Arc<Authenticator>,
    credentials: Credentials,
) -> Result<Caller, Failure> {
    let caller = authenticator
        .authenticate(
            credentials.peer?,
            credentials.username,
            credentials.password,
        )
        .await?;
    let allowed = allowed_roles(&credentials.path).unwrap_or(&[]);
    if !allowed.contains(&caller.role) {
        return Err(Failure::PermissionDenied(format!(
            "{} may not call {}",
            caller.role.as_str(),
            credentials.path
        )));
    }
    Ok(caller)
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for AuthService<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is not ready; swap it in so the ready one handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = Arc::clone(&self.authenticator);
        let credentials = Credentials::of(&request);
        // One certificate may hold only so many connections (see `listener.rs`).
        let connection = request
            .extensions()
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .map(|info| info.get_ref().id);
        if let (Ok(peer), Some(connection)) = (&credentials.peer, connection) {
            if !strife_common::net::listener::attach_peer(connection, &peer.to_string()) {
                let failure = Failure::ResourceExhausted(format!(
                    "too many connections with this certificate (at most {}); reuse one",
                    strife_common::net::listener::max_connections_per_peer()
                ));
                return Box::pin(async move { Ok(tonic::Status::from(failure).into_http()) });
            }
        }
        // Health and reflection need only a certificate from our CA (TLS checked the chain;
        // a revoked or unreadable one is refused here), no password, no role.
        if strife_common::net::operations::is_operations_path(&credentials.path) {
            return Box::pin(async move {
                match credentials.peer {
                    Ok(_) => inner.call(request).await,
                    Err(failure) => Ok(tonic::Status::from(failure).into_http()),
                }
            });
        }
        // A method that does not exist is UNIMPLEMENTED for everyone (method names are public
        // in proto/), before any credential is looked at.
        if allowed_roles(&credentials.path).is_none() {
            let failure = Failure::Unimplemented(format!("no method {}", credentials.path));
            return Box::pin(async move { Ok(tonic::Status::from(failure).into_http()) });
        }
        let log_slot = request.extensions().get::<RequestLogSlot>().cloned();
        Box::pin(async move {
            let outcome = authorize(&authenticator, credentials).await;
            if let Some(slot) = log_slot {
                slot.set_caller(outcome.as_ref().ok());
            }
            match outcome {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(failure) => Ok(tonic::Status::from(failure).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strife_ledger::lockout::{ConsoleSpares, MAX_LOCKOUT};

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            threshold: 3,
            duration: Duration::from_secs(30),
            console_spares: ConsoleSpares::Admin,
        }
    }

    #[test]
    fn concurrent_tries_count_before_they_finish() {
        let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
        let now = Instant::now();
        for _ in 0..3 {
            throttle.reserve("alice", now).unwrap();
        }
        assert_eq!(
            throttle.reserve("alice", now),
            Err(Refusal::TooManyTries),
            "a fourth guess in flight is never checked"
        );
        assert!(
            throttle.reserve("bob", now).is_ok(),
            "other names are apart"
        );
        assert_eq!(throttle.finish("alice", false, now), None);
        assert_eq!(throttle.finish("alice", false, now), None);
        assert_eq!(
            throttle.finish("alice", false, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            throttle.reserve("alice", now + Duration::from_secs(29)),
            Err(Refusal::Locked(Duration::from_secs(1)))
        );
    }

    #[test]
    fn a_released_try_is_given_back() {
        let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
        let now = Instant::now();
        for _ in 0..3 {
            throttle.reserve("alice", now).unwrap();
        }
        throttle.release("alice");
        assert!(throttle.reserve("alice", now).is_ok());
    }

    #[test]
    fn consecutive_lockouts_double_up_to_the_cap_and_a_success_resets() {
        let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
        let mut now = Instant::now();
        let mut locks = Vec::new();
        for _ in 0..8 {
            for _ in 0..3 {
                throttle.reserve("alice", now).unwrap();
            }
            let mut lock = None;
            for _ in 0..3 {
                lock = throttle.finish("alice", false, now).or(lock);
            }
            let lock = lock.unwrap();
            locks.push(lock.as_secs());
            assert!(throttle.locked("alice", now).is_some());
            now += lock;
            assert_eq!(throttle.locked("alice", now), None, "the lock expires");
        }
        assert_eq!(locks, [30, 60, 120, 240, 480, 900, 900, 900]);
        throttle.reserve("alice", now).unwrap();
        assert_eq!(throttle.finish("alice", true, now), None);
        for _ in 0..3 {
            throttle.reserve("alice", now).unwrap();
        }
        let mut lock = None;
        for _ in 0..3 {
            lock = throttle.finish("alice", false, now).or(lock);
        }
        assert_eq!(
            lock,
            Some(Duration::from_secs(30)),
            "back to the first step"
        );
    }

    #[test]
    fn an_old_lockout_no_longer_doubles_the_next() {
        let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
        let now = Instant::now();
        let lock_out = |throttle: &mut Throttle, at: Instant| {
            for _ in 0..3 {
                throttle.reserve("alice", at).unwrap();
            }
            (0..3)
                .filter_map(|_| throttle.finish("alice", false, at))
                .last()
                .unwrap()
        };
        assert_eq!(lock_out(&mut throttle, now), Duration::from_secs(30));
        let soon = now + Duration::from_secs(40);
        assert_eq!(lock_out(&mut throttle, soon), Duration::from_secs(60));
        let much_later = soon + Duration::from_secs(60) + MAX_LOCKOUT + Duration::from_secs(1);
        assert_eq!(lock_out(&mut throttle, much_later), Duration::from_secs(30));
    }

    #[test]
    fn failures_are_counted_per_window() {
        let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
        let now = Instant::now();
        for _ in 0..2 {
            throttle.reserve("alice", now).unwrap();
            assert_eq!(throttle.finish("alice", false, now), None);
        }
        let later = now + Duration::from_secs(31);
        for _ in 0..3 {
            throttle.reserve("alice", later).unwrap();
        }
        assert_eq!(throttle.reserve("alice", later), Err(Refusal::TooManyTries));
    }

    #[test]
    fn a_success_clears_failures_but_other_tries_still_count() {
        let mut throttle = Throttle::new(policy(), MAX_TRACKED_NAMES);
        let now = Instant::now();
        throttle.reserve("alice", now).unwrap();
        throttle.finish("alice", false, now);
        throttle.reserve("alice", now).unwrap();
        throttle.reserve("alice", now).unwrap();
        assert_eq!(throttle.finish("alice", true, now), None);
        // One still in flight, none failed: two more fit.
        throttle.reserve("alice", now).unwrap();
        throttle.reserve("alice", now).unwrap();
        assert_eq!(throttle.reserve("alice", now), Err(Refusal::TooManyTries));
    }

    #[tokio::test]
    async fn the_verify_pool_queues_a_bounded_number_and_refuses_the_rest_at_once() {
        let pool = Arc::new(VerifyPool::with_permits(1));
        let held = pool.acquire(Queue::Grpc).await.unwrap();
        let waiters: Vec<_> = (0..MAX_WAITING_PASSWORD_CHECKS)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.acquire(Queue::Grpc).await.map(drop) })
            })
            .collect();
        let queued = tokio::time::timeout(Duration::from_secs(5), async {
            while pool.waiting.load(Ordering::SeqCst) < MAX_WAITING_PASSWORD_CHECKS {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(queued.is_ok(), "the waiters never queued");
        let refused = tokio::time::timeout(Duration::from_secs(1), pool.acquire(Queue::Grpc))
            .await
            .expect("refused at once, not queued");
        assert!(matches!(refused, Err(Failure::ResourceExhausted(_))));
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 0, "the queue drains");
    }

    async fn store_with(users: &[(&str, Role)]) -> (tempfile::TempDir, Arc<dyn GatewayStore>) {
        let dir = tempfile::tempdir().unwrap();
        let identity = strife_common::storage::store_identity::StoreIdentity::gateway(
            &strife_common::layout::Layout::new(dir.path()),
            "ca".into(),
            strife_ledger::store::sqlite::SCHEMA_VERSION,
            false,
        );
        let store: Arc<dyn GatewayStore> = Arc::new(
            strife_ledger::store::sqlite::SqliteGatewayStore::open(
                &dir.path().join("gateway.db"),
                &identity,
            )
            .unwrap(),
        );
        for (name, role) in users {
            store
                .insert_user(
                    name,
                    role.as_str(),
                    &hash_password(&password_of(name)).unwrap(),
                )
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn password_of(name: &str) -> String {
        format!("right horse battery {}", name.len())
    }

    /// A client address of its own for each call (127.0.0.x), so the per-address throttle
    /// stays out of the way of a test about names.
    fn address(index: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, index])
    }

    fn user_peer(name: &str) -> PeerIdentity {
        PeerIdentity {
            role: PeerRole::User,
            name: name.to_owned(),
        }
    }

    async fn grpc(
        authenticator: &Arc<Authenticator>,
        name: &str,
        password: &str,
    ) -> Result<Caller, Failure> {
        authenticator
            .authenticate(user_peer(name), Some(name.into()), Some(password.into()))
            .await
    }

    #[tokio::test]
    async fn only_names_that_exist_leave_a_shared_login_record() {
        let (_dir, store) = store_with(&[("alice", Role::Client)]).await;
        let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
        for (index, name) in ["alice", "ghost"].into_iter().enumerate() {
            let refused = authenticator
                .authenticate_console(name, "wrong guess", address(index as u8 + 2))
                .await
                .unwrap_err();
            assert_eq!(refused, Failure::Unauthenticated, "{name}");
        }
        assert!(store.login("console:alice").await.unwrap().is_some());
        assert!(
            store.login("alice").await.unwrap().is_none(),
            "a console failure counts in the console scope only"
        );
        assert!(store.login("console:ghost").await.unwrap().is_none());
        assert!(store.login("ghost").await.unwrap().is_none());
        // The made-up name is still locked by this replica after the threshold.
        for index in 1..policy().threshold {
            let _ = authenticator
                .authenticate_console("ghost", "wrong", address(10 + index as u8))
                .await;
        }
        let locked = authenticator
            .authenticate_console("ghost", "wrong", address(20))
            .await
            .unwrap_err();
        assert!(
            matches!(locked, Failure::ResourceExhausted(ref message) if message.contains("this name")),
            "{locked:?}"
        );
    }

    #[tokio::test]
    async fn console_and_certificate_scopes_lock_as_the_lockout_table_says() {
        let (_dir, store) = store_with(&[
            ("admin", Role::Admin),
            ("alice", Role::Client),
            ("bob", Role::Client),
            ("carol", Role::Client),
        ])
        .await;
        let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
        let threshold = policy().threshold;
        let is_locked = |result: &Result<Caller, Failure>| matches!(result, Err(Failure::ResourceExhausted(message)) if message.contains("locked"));
        // Console guesses at the admin and alice, each from an address of its own.
        for name in ["admin", "alice"] {
            for index in 0..threshold {
                let refused = authenticator
                    .authenticate_console(name, "wrong guess", address(30 + index as u8))
                    .await;
                assert_eq!(refused.unwrap_err(), Failure::Unauthenticated, "{name}");
            }
            let right = authenticator
                .authenticate_console(name, &password_of(name), address(40))
                .await;
            assert!(
                is_locked(&right),
                "{name}'s console scope is locked: {right:?}"
            );
        }
        // The admin's certificate + password still works; alice's gRPC is blocked by her
        // console lock (only the admin is spared by default).
        grpc(&authenticator, "admin", &password_of("admin"))
            .await
            .unwrap();
        assert!(is_locked(
            &grpc(&authenticator, "alice", &password_of("alice")).await
        ));
        // Sparing everyone: the same shared console lock no longer blocks alice's gRPC.
        let spare_all = LockoutPolicy {
            console_spares: ConsoleSpares::All,
            ..policy()
        };
        let sparing = Arc::new(Authenticator::new(Arc::clone(&store), spare_all).unwrap());
        grpc(&sparing, "alice", &password_of("alice"))
            .await
            .unwrap();
        assert!(is_locked(
            &sparing
                .authenticate_console("alice", &password_of("alice"), address(41))
                .await
        ));
        // gRPC failures lock gRPC, and count in the console scope too.
        for _ in 0..threshold {
            assert_eq!(
                grpc(&sparing, "bob", "wrong guess").await.unwrap_err(),
                Failure::Unauthenticated
            );
        }
        assert!(is_locked(&grpc(&sparing, "bob", &password_of("bob")).await));
        assert!(store
            .login("console:bob")
            .await
            .unwrap()
            .is_some_and(|login| login.locked_for(now_unix_ms()).is_some()));
        assert!(is_locked(
            &sparing
                .authenticate_console("bob", &password_of("bob"), address(42))
                .await
        ));
        // A lock of the certificate scope alone (as another replica may have stored it)
        // refuses console logins too.
        let now = now_unix_ms();
        store
            .update_login(
                "carol",
                Box::new(move |_| {
                    Some(SharedLogin {
                        failures: 0,
                        window_start_unix_ms: now,
                        locked_until_unix_ms: now + 60_000,
                        lockouts: 1,
                    })
                }),
            )
            .await
            .unwrap();
        assert!(is_locked(
            &sparing
                .authenticate_console("carol", &password_of("carol"), address(43))
                .await
        ));
    }

    #[tokio::test]
    async fn one_address_fails_one_time_fewer_than_the_threshold_and_is_refused_first() {
        let (_dir, store) = store_with(&[("alice", Role::Client), ("bob", Role::Client)]).await;
        let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
        let attacker = address(50);
        let budget = policy().address_budget();
        for index in 0..budget {
            let name = if index % 2 == 0 { "alice" } else { "bob" };
            let refused = authenticator
                .authenticate_console(name, "wrong guess", attacker)
                .await;
            assert_eq!(refused.unwrap_err(), Failure::Unauthenticated);
        }
        // Refused before any check, even with the right password, and not counted.
        let refused = authenticator
            .authenticate_console("alice", &password_of("alice"), attacker)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Failure::ResourceExhausted(ref message) if message.contains("your address")),
            "{refused:?}"
        );
        let before = store.login("console:alice").await.unwrap();
        for _ in 0..5 {
            let _ = authenticator
                .authenticate_console("alice", "wrong guess", attacker)
                .await;
        }
        assert_eq!(store.login("console:alice").await.unwrap(), before);
        // The name is not locked: alice logs in from elsewhere.
        authenticator
            .authenticate_console("alice", &password_of("alice"), address(51))
            .await
            .unwrap();
        // The same /64 is the same address.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for _ in 0..budget {
            let _ = authenticator
                .authenticate_console("bob", "wrong guess", v6(1))
                .await;
        }
        assert!(matches!(
            authenticator
                .authenticate_console("bob", &password_of("bob"), v6(2))
                .await,
            Err(Failure::ResourceExhausted(_))
        ));
    }

    #[test]
    fn an_address_gets_its_rate_of_attempts_and_its_failures_lock_it_with_doubling() {
        let policy = policy();
        let mut limits = AddressLimits::new(policy, 20);
        let now = Instant::now();
        for _ in 0..20 {
            limits.admit("10.0.0.1", now).unwrap();
            limits.released("10.0.0.1");
        }
        match limits.admit("10.0.0.1", now) {
            Err(Refusal::AddressRate(wait)) => assert_eq!(wait.as_secs_f64().round(), 3.0),
            other => panic!("{other:?}"),
        }
        assert!(
            limits.admit("10.0.0.2", now).is_ok(),
            "other addresses are apart"
        );
        limits.released("10.0.0.2");
        assert!(limits
            .admit("10.0.0.1", now + Duration::from_millis(3_100))
            .is_ok());
        limits.released("10.0.0.1");
        // Failures: the budget, then a lock that doubles like a name's.
        let mut locks = Vec::new();
        let mut at = now + Duration::from_secs(120);
        for _ in 0..3 {
            let mut lock = None;
            for _ in 0..policy.address_budget() {
                limits.admit("10.0.0.3", at).unwrap();
                lock = limits.failed("10.0.0.3", at).or(lock);
            }
            let lock = lock.unwrap();
            assert!(matches!(
                limits.admit("10.0.0.3", at),
                Err(Refusal::AddressLocked(_))
            ));
            locks.push(lock.as_secs());
            at += lock + Duration::from_secs(60);
        }
        assert_eq!(locks, [30, 60, 120]);
        // Checks in flight count against the budget.
        limits.admit("10.0.0.4", at).unwrap();
        limits.admit("10.0.0.4", at).unwrap();
        assert_eq!(limits.admit("10.0.0.4", at), Err(Refusal::AddressBusy));
    }

    #[tokio::test]
    async fn console_checks_wait_in_a_queue_of_their_own() {
        let pool = Arc::new(VerifyPool::with_permits(1));
        let held = pool.acquire(Queue::Grpc).await.unwrap();
        let console: Vec<_> = (0..MAX_WAITING_CONSOLE_PASSWORD_CHECKS)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.acquire(Queue::Console).await.map(drop) })
            })
            .collect();
        let queued = tokio::time::timeout(Duration::from_secs(5), async {
            while pool.console_waiting.load(Ordering::SeqCst) < MAX_WAITING_CONSOLE_PASSWORD_CHECKS
            {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(queued.is_ok(), "the console waiters never queued");
        let refused = tokio::time::timeout(Duration::from_secs(1), pool.acquire(Queue::Console))
            .await
            .expect("refused at once");
        assert!(matches!(refused, Err(Failure::ResourceExhausted(_))));
        // The gRPC queue is untouched: a gRPC check still waits for its turn.
        let grpc = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire(Queue::Grpc).await.map(drop) })
        };
        let waiting = tokio::time::timeout(Duration::from_secs(5), async {
            while pool.waiting.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(waiting.is_ok(), "the gRPC check was refused, not queued");
        drop(held);
        for waiter in console {
            waiter.await.unwrap().unwrap();
        }
        grpc.await.unwrap().unwrap();
    }

    #[test]
    fn refusals_are_resource_exhausted() {
        let locked = Failure::from(Refusal::Locked(Duration::from_millis(10)));
        assert!(
            matches!(locked, Failure::ResourceExhausted(ref message) if message.contains("1 s"))
        );
        assert!(matches!(
            Failure::from(Refusal::TooManyTries),
            Failure::ResourceExhausted(_)
        ));
    }
}
