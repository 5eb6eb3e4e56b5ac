//! Authentication and authorization as one tower layer around every gRPC service: the TLS
//! layer already verified the client certificate against our CA; here the certificate's role
//! and CN are read, users must also send `x-strife-user` (equal to the CN) and
//! `x-strife-password` (checked by [`Authenticator`]), and the method → roles table
//! ([`crate::roles`]) decides. The verified [`Caller`] goes into the request's extensions for
//! the handlers (`super::gateway`), and one certificate's connections are counted.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use strife_common::metadata::{PASSWORD_KEY, USER_KEY};
use strife_common::net::connection::ConnectionInfo;
use strife_common::net::connection::{connection_identity, PeerIdentity};
use strife_common::Failure;
use tonic::transport::server::TlsConnectInfo;

use crate::auth::Authenticator;
use crate::request::{Caller, RequestLogSlot};
use crate::roles::allowed_roles;

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
