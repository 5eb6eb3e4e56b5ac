//! Authentication and authorization as one tower layer around every gateway service.
//!
//! For each request: the TLS layer already verified the client certificate against our CA;
//! here the certificate's role and CN are read, users must also send `x-strife-user` (equal
//! to the CN) and `x-strife-password` (checked against an argon2id hash), repeated failures
//! lock the name for a while, and the method → roles table ([`crate::roles`]) decides. The
//! verified [`Caller`] goes into the request's extensions for the handlers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use futures::future::BoxFuture;
use strife_common::listener::ConnectionInfo;
use strife_common::metadata::{PASSWORD_KEY, USER_KEY};
use strife_common::tls::{connection_identity, PeerIdentity, PeerRole};
use strife_common::Failure;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::TlsConnectInfo;

use crate::metrics::GatewayMetrics;
use crate::request::{Caller, RequestLogSlot};
use crate::roles::{allowed_roles, Role};
use strife_common::time::now_unix_ms;

use strife_ledger::lockout::{self, LockoutPolicy, SharedLogin, MAX_LOCKOUT};
use strife_ledger::store::{GatewayStore, LoginChange};

/// Most names tracked for failed logins; past it, unlocked entries are forgotten first.
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

/// The login state of one name.
#[derive(Debug)]
struct LoginState {
    /// When the current counting window began.
    window_start: Instant,
    /// Failed checks in the current window.
    failures: u32,
    /// Checks reserved and not finished yet. They count against the threshold, so a burst of
    /// concurrent guesses cannot all be checked before the first one fails.
    in_flight: u32,
    locked_until: Option<Instant>,
    /// Lockouts in a row without a success in between (drives the back-off).
    lockouts: u32,
    /// When the latest lock ended (or ends): a lock more than [`MAX_LOCKOUT`] in the past no
    /// longer counts towards the back-off, so one bad day does not double a lock weeks later.
    last_lock_end: Option<Instant>,
}

impl LoginState {
    fn new(now: Instant) -> Self {
        LoginState {
            window_start: now,
            failures: 0,
            in_flight: 0,
            locked_until: None,
            lockouts: 0,
            last_lock_end: None,
        }
    }

    fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.locked_until.is_none_or(|until| until <= now)
    }
}

/// Why a name may not have a password checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Locked after too many failures; for this long still.
    Locked(Duration),
    /// Failures plus checks in flight already reach the threshold in this window.
    TooManyTries,
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Locked(left) => Failure::ResourceExhausted(format!(
                "too many failed logins for this name; locked, try again in {} s",
                left.as_secs().max(1)
            )),
            Refusal::TooManyTries => Failure::ResourceExhausted(
                "too many login attempts for this name right now; try again later".into(),
            ),
        }
    }
}

/// Failed-login counting and lockout, as a pure structure (time is passed in), so it can be
/// tested without clocks. A password check must first [`reserve`](Self::reserve) a try; the
/// reservation is taken under one lock before argon2id runs, so at most `threshold` checks
/// per name per window ever run, however many requests arrive at once.
#[derive(Debug)]
struct Throttle {
    policy: LockoutPolicy,
    names: HashMap<String, LoginState>,
}

impl Throttle {
    fn new(policy: LockoutPolicy) -> Self {
        Throttle {
            policy,
            names: HashMap::new(),
        }
    }

    /// The lock still running on `username`, if any.
    fn locked(&self, username: &str, now: Instant) -> Option<Duration> {
        self.names
            .get(username)
            .and_then(|state| state.locked_until)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Takes one try for `username`, or says why not.
    fn reserve(&mut self, username: &str, now: Instant) -> Result<(), Refusal> {
        if let Some(left) = self.locked(username, now) {
            return Err(Refusal::Locked(left));
        }
        if !self.names.contains_key(username) && self.names.len() >= MAX_TRACKED_NAMES {
            // Only holders of one of our user certificates get here (the CN was checked), so
            // the map is bounded by the certificates issued; idle names go first anyway.
            self.names.retain(|_, state| !state.idle(now));
        }
        let window = self.policy.duration;
        let state = self
            .names
            .entry(username.to_owned())
            .or_insert_with(|| LoginState::new(now));
        if state.locked_until.is_some_and(|until| until <= now) {
            state.locked_until = None;
            state.failures = 0;
            state.window_start = now;
        }
        if now.saturating_duration_since(state.window_start) >= window {
            state.failures = 0;
            state.window_start = now;
        }
        if state.failures.saturating_add(state.in_flight) >= self.policy.threshold {
            return Err(Refusal::TooManyTries);
        }
        state.in_flight += 1;
        Ok(())
    }

    /// Gives back a reserved try whose check never ran (the request went away first).
    fn release(&mut self, username: &str) {
        if let Some(state) = self.names.get_mut(username) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// Ends a reserved try with its result. Returns the lock this failure started, if any.
    fn finish(&mut self, username: &str, success: bool, now: Instant) -> Option<Duration> {
        let policy = self.policy;
        let state = self
            .names
            .entry(username.to_owned())
            .or_insert_with(|| LoginState::new(now));
        state.in_flight = state.in_flight.saturating_sub(1);
        if success {
            state.failures = 0;
            state.lockouts = 0;
            state.locked_until = None;
            state.window_start = now;
            if state.in_flight == 0 {
                self.names.remove(username);
            }
            return None;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures < policy.threshold {
            return None;
        }
        if state
            .last_lock_end
            .is_some_and(|end| now.saturating_duration_since(end) > MAX_LOCKOUT)
        {
            state.lockouts = 0;
        }
        let lock = policy
            .duration
            .saturating_mul(1u32.checked_shl(state.lockouts).unwrap_or(u32::MAX))
            .min(MAX_LOCKOUT.max(policy.duration));
        state.lockouts = state.lockouts.saturating_add(1);
        state.locked_until = Some(now + lock);
        state.last_lock_end = Some(now + lock);
        state.failures = 0;
        state.window_start = now;
        Some(lock)
    }
}

/// Most argon2id checks (19 MiB each) waiting for a CPU; past it a login is refused at once
/// instead of queueing memory and threads without bound.
const MAX_WAITING_CHECKS: usize = 64;

/// Runs argon2id checks on at most one thread per CPU, with a bounded queue in front.
struct VerifyPool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Leaves the wait queue when the waiter gets a permit or goes away.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
            waiting: AtomicUsize::new(0),
        }
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, Failure> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(permit);
        }
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |waiting| {
                (waiting < MAX_WAITING_CHECKS).then_some(waiting + 1)
            })
            .map_err(|_| {
                Failure::ResourceExhausted(
                    "the gateway is busy checking passwords; try again shortly".into(),
                )
            })?;
        let _waiting = Waiting(&self.waiting);
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|error| Failure::internal("password check pool", error))
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

/// A reserved try; released unless [`Authenticator::finish`] consumed it.
struct Reservation {
    authenticator: Arc<Authenticator>,
    username: String,
    finished: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.finished {
            self.authenticator.throttle().release(&self.username);
        }
    }
}

/// Checks credentials and keeps the failed-login counters.
pub struct Authenticator {
    store: Arc<dyn GatewayStore>,
    throttle: Mutex<Throttle>,
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
            throttle: Mutex::new(Throttle::new(policy)),
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

    fn finish(&self, mut reservation: Reservation, success: bool) {
        reservation.finished = true;
        let lock = self
            .throttle()
            .finish(&reservation.username, success, Instant::now());
        if !success {
            self.metrics.login_failed();
        }
        if let Some(lock) = lock {
            self.metrics.locked_out();
            // The name comes from a verified certificate CN, but is still escaped: a CN is
            // whatever the CA signed, and a log line must stay one line.
            tracing::warn!(
                username = %reservation.username.escape_debug(),
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

    /// One argon2id check: reserves a try for the name, waits for a slot on the bounded pool,
    /// verifies and counts the result. `Ok(None)`: wrong password or unknown name.
    async fn check_password(
        self: &Arc<Self>,
        username: &str,
        password: &str,
    ) -> Result<Option<Role>, Failure> {
        // The lock every replica shares (and a restart keeps) comes first.
        let shared = self.store.login(username).await?;
        if let Some(left) = shared.and_then(|login| login.locked_for(now_unix_ms())) {
            return Err(Refusal::Locked(left).into());
        }
        self.throttle()
            .reserve(username, Instant::now())
            .map_err(Failure::from)?;
        let reservation = Reservation {
            authenticator: Arc::clone(self),
            username: username.to_owned(),
            finished: false,
        };
        // Dropping the reservation (queue full, or the request went away while waiting)
        // gives the try back: no password was checked.
        let permit = self.verify_pool.acquire().await?;
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
            self.share_outcome(username, role.is_some(), shared).await;
        }
        Ok(role)
    }

    /// Reports a finished check to the shared record: a failure counts for every replica; a
    /// success clears what was held against the name (written only if there was something).
    async fn share_outcome(&self, username: &str, success: bool, shared: Option<SharedLogin>) {
        let change: LoginChange = if success {
            if shared.is_none_or(|login| login.is_clean()) {
                return;
            }
            Box::new(|_| lockout::after_success())
        } else {
            let policy = self.throttle().policy;
            Box::new(move |current| Some(lockout::after_failure(current, policy, now_unix_ms())))
        };
        if let Err(failure) = self.store.update_login(username, change).await {
            // The local throttle still counted it; only the other replicas miss this one.
            tracing::warn!(%failure, "could not share a login outcome");
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
        // anyone out. A locked name fails even with a remembered password.
        if let Some(left) = self.throttle().locked(&username, Instant::now()) {
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
            .get_or_try_init(|| self.check_password(&username, &password))
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
}

impl Authenticator {
    /// Checks a web console login. Browsers have no client certificate, so the name typed is
    /// the identity; from there it is the very path a gRPC request takes (remembered
    /// passwords, the per-process throttle, the shared lockout, argon2id), so a failure on
    /// either side counts for both and a locked name is locked on both. The role comes from
    /// the user's record in the store.
    pub async fn authenticate_password(
        self: &Arc<Self>,
        username: &str,
        password: &str,
    ) -> Result<Caller, Failure> {
        let peer = PeerIdentity {
            role: PeerRole::User,
            name: username.to_owned(),
        };
        self.authenticate(peer, Some(username.to_owned()), Some(password.to_owned()))
            .await
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
            if !strife_common::listener::attach_peer(connection, &peer.to_string()) {
                let failure = Failure::ResourceExhausted(format!(
                    "too many connections with this certificate (at most {}); reuse one",
                    strife_common::listener::max_connections_per_peer()
                ));
                return Box::pin(async move { Ok(tonic::Status::from(failure).into_http()) });
            }
        }
        // Health and reflection need only a certificate from our CA (TLS checked the chain;
        // a revoked or unreadable one is refused here), no password, no role.
        if strife_common::operations::is_operations_path(&credentials.path) {
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

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            threshold: 3,
            duration: Duration::from_secs(30),
        }
    }

    #[test]
    fn concurrent_tries_count_before_they_finish() {
        let mut throttle = Throttle::new(policy());
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
        let mut throttle = Throttle::new(policy());
        let now = Instant::now();
        for _ in 0..3 {
            throttle.reserve("alice", now).unwrap();
        }
        throttle.release("alice");
        assert!(throttle.reserve("alice", now).is_ok());
    }

    #[test]
    fn consecutive_lockouts_double_up_to_the_cap_and_a_success_resets() {
        let mut throttle = Throttle::new(policy());
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
        let mut throttle = Throttle::new(policy());
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
        let mut throttle = Throttle::new(policy());
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
        let mut throttle = Throttle::new(policy());
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
        let held = pool.acquire().await.unwrap();
        let waiters: Vec<_> = (0..MAX_WAITING_CHECKS)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.acquire().await.map(drop) })
            })
            .collect();
        let queued = tokio::time::timeout(Duration::from_secs(5), async {
            while pool.waiting.load(Ordering::SeqCst) < MAX_WAITING_CHECKS {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(queued.is_ok(), "the waiters never queued");
        let refused = tokio::time::timeout(Duration::from_secs(1), pool.acquire())
            .await
            .expect("refused at once, not queued");
        assert!(matches!(refused, Err(Failure::ResourceExhausted(_))));
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 0, "the queue drains");
    }

    #[tokio::test]
    async fn only_names_that_exist_leave_a_shared_login_record() {
        let dir = tempfile::tempdir().unwrap();
        let identity = strife_common::store_identity::StoreIdentity::gateway(
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
        store
            .insert_user(
                "alice",
                Role::Client.as_str(),
                &hash_password("right horse battery").unwrap(),
            )
            .await
            .unwrap();
        let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), policy()).unwrap());
        for name in ["alice", "ghost"] {
            let refused = authenticator
                .authenticate_password(name, "wrong guess")
                .await
                .unwrap_err();
            assert_eq!(refused, Failure::Unauthenticated, "{name}");
        }
        assert!(store.login("alice").await.unwrap().is_some());
        assert!(store.login("ghost").await.unwrap().is_none());
        // The made-up name is still locked by this replica after the threshold.
        for _ in 1..policy().threshold {
            let _ = authenticator.authenticate_password("ghost", "wrong").await;
        }
        let locked = authenticator
            .authenticate_password("ghost", "wrong")
            .await
            .unwrap_err();
        assert!(
            matches!(locked, Failure::ResourceExhausted(_)),
            "{locked:?}"
        );
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
