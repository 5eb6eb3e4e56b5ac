//! Who may log in: certificate + password checks (argon2id) with lockout, for the gRPC auth
//! layer (`crate::grpc::auth_layer`) and the web console alike. Users send their name (equal
//! to their certificate's CN) and password; repeated failures lock the name for a while (the
//! shared records in the store, and a per-replica [`throttle`] of tries in flight); checks run
//! on a bounded [`pool`]; a verified password is remembered for a while as a keyed digest.
//!
//! Web console logins ([`Authenticator::authenticate_console`]) take the same checks in their
//! own lockout scope ([`crate::lockout::Scope`]), behind a per-client-address throttle and
//! rate, without the remembered-password shortcut, in a wait queue of their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use strife_common::limits::CONSOLE_LOGINS_PER_ADDRESS_PER_MINUTE;
use strife_common::net::connection::{PeerIdentity, PeerRole};
use strife_common::net::listener::AddressGroup;
use strife_common::Failure;
use tokio::sync::OnceCell;

mod pool;
mod throttle;

use pool::{Queue, VerifyPool};
use throttle::{AddressLimits, Refusal, Throttle};
#[cfg(test)]
mod tests;

use crate::metrics::GatewayMetrics;
use crate::request::Caller;
use crate::roles::Role;
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
                    key: None,
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
                key: None,
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
            key: None,
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
            key: None,
        })
    }
}
