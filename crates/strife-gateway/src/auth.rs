//! Authentication and authorization as one tower layer around every gateway service.
//!
//! For each request: the TLS layer already verified the client certificate against our CA;
//! here the certificate's role and CN are read, users must also send `x-strife-user` (equal
//! to the CN) and `x-strife-password` (checked against an argon2id hash), repeated failures
//! lock the name for a while, and the method → roles table ([`crate::roles`]) decides. The
//! verified [`Caller`] goes into the request's extensions for the handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use futures::future::BoxFuture;
use strife_common::metadata::{PASSWORD_KEY, USER_KEY};
use strife_common::runtime::on_blocking_pool;
use strife_common::tls::{identity_from_der, PeerIdentity, PeerRole};
use strife_common::Failure;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::request_log::RequestLogSlot;
use crate::roles::{allowed_roles, Role};
use crate::store::GatewayStore;

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

/// Who made a request, as the auth layer verified it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    pub peer: PeerIdentity,
}

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

#[derive(Debug, Default)]
struct FailedLogins {
    count: u32,
    locked_until: Option<Instant>,
}

/// Login throttling policy.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failed logins in a row that lock the name.
    pub threshold: u32,
    /// How long a locked name stays locked.
    pub duration: Duration,
}

/// Checks credentials and keeps the failed-login counters.
pub struct Authenticator {
    store: Arc<GatewayStore>,
    policy: LockoutPolicy,
    failures: Mutex<HashMap<String, FailedLogins>>,
    sessions: Mutex<HashMap<String, VerifiedSession>>,
    session_key: [u8; 32],
    /// Verified against when the user does not exist, so timing does not reveal which names do.
    decoy_hash: String,
}

impl Authenticator {
    pub fn new(store: Arc<GatewayStore>, policy: LockoutPolicy) -> Result<Self, Failure> {
        Ok(Authenticator {
            store,
            policy,
            failures: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            session_key: rand::random(),
            decoy_hash: hash_password("decoy password never matches")?,
        })
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

    fn is_locked(&self, username: &str) -> bool {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match failures.get(username).and_then(|entry| entry.locked_until) {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                failures.remove(username);
                false
            }
            None => false,
        }
    }

    fn record(&self, username: &str, success: bool) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if success {
            failures.remove(username);
            return;
        }
        if failures.len() >= MAX_TRACKED_NAMES {
            failures.retain(|_, entry| entry.locked_until.is_some());
        }
        let entry = failures.entry(username.to_owned()).or_default();
        entry.count += 1;
        if entry.count >= self.policy.threshold {
            entry.count = 0;
            entry.locked_until = Some(Instant::now() + self.policy.duration);
            tracing::warn!(username, "too many failed logins; locked");
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
        if self.is_locked(&username) {
            return Err(Failure::Unauthenticated);
        }
        if let Some(role) = self.remembered(&username, &password) {
            return Ok(Caller {
                username,
                role,
                peer,
            });
        }
        let this = Arc::clone(self);
        let name = username.clone();
        let typed = password.clone();
        let role = on_blocking_pool(&this, move |auth| {
            let user = auth.store.user(&name)?;
            let hash = user
                .as_ref()
                .map_or(auth.decoy_hash.as_str(), |user| user.password_hash.as_str());
            let verified = verify_password(&password, hash);
            Ok(user
                .filter(|_| verified)
                .and_then(|user| Role::from_stored(&user.role)))
        })
        .await?;
        self.record(&username, role.is_some());
        let role = role.ok_or(Failure::Unauthenticated)?;
        self.remember(&username, &typed, role);
        Ok(Caller {
            username,
            role,
            peer,
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
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .ok_or(Failure::Unauthenticated)?;
    let leaf = certificates.first().ok_or(Failure::Unauthenticated)?;
    identity_from_der(leaf.as_ref())
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
