//! What every page works with: the [`Console`] (the gateway's service, the authenticator,
//! the sessions), the logged-in user as an extractor ([`LoggedIn`], [`Operator`]), the
//! [`Call`] a page makes into the service in its user's name, and the CSRF check every form
//! passes first.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use strife_common::net::connection::{PeerIdentity, PeerRole};
use strife_gateway::auth::Authenticator;
use strife_gateway::request::{Call, Caller};
use strife_gateway::roles::Role;
use strife_gateway::service::Service;

use crate::html;
use crate::session::{self, cookie_value, Session, Sessions, SESSION_COOKIE};

/// What the console pages need from the gateway: its service (every page calls it, as gRPC
/// does, so validation, scoping, refusals and the role table are gRPC's), its authenticator
/// (logins), and this console's sessions.
pub struct Console {
    pub(crate) service: Arc<Service>,
    pub(crate) authenticator: Arc<Authenticator>,
    pub(crate) sessions: Sessions,
}

impl Console {
    pub fn new(service: Arc<Service>, authenticator: Arc<Authenticator>) -> Self {
        Console {
            service,
            authenticator,
            sessions: Sessions::default(),
        }
    }
}

/// The call a page makes in its session user's name. Browsers have no certificate: the
/// caller is the session's user with the role of their record; the service checks the role
/// table as for any caller. The console logs its own requests (`routes.rs`), so the call's
/// gRPC log slot is left empty.
pub fn call(session: &Session) -> Call {
    Call::unlogged(Caller {
        username: session.username.clone(),
        role: session.role,
        peer: PeerIdentity {
            role: PeerRole::User,
            name: session.username.clone(),
        },
        key: None,
    })
}

/// A logged-in user (any role). Without a live session: a redirect to the login page.
pub struct LoggedIn {
    pub session: Session,
}

impl<S> FromRequestParts<S> for LoggedIn
where
    Arc<Console>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let console = Arc::<Console>::from_ref(state);
        let session = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|cookies| cookie_value(cookies, SESSION_COOKIE))
            .and_then(|id| console.sessions.get(id));
        match session {
            Some(session) => Ok(LoggedIn { session }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// A logged-in admin; anyone else gets 403.
pub struct Operator {
    pub session: Session,
}

impl<S> FromRequestParts<S> for Operator
where
    Arc<Console>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let LoggedIn { session } = LoggedIn::from_request_parts(parts, state).await?;
        if session.role != Role::Admin {
            return Err(html::Page::new(
                "Forbidden",
                Some(&session),
                html::notice("error", "Operator pages are for the admin only."),
            )
            .with_status(StatusCode::FORBIDDEN)
            .into_response());
        }
        Ok(Operator { session })
    }
}

/// The CSRF check every POST makes before anything else: the 403 page when the form's token
/// is not the session's.
pub fn csrf_refusal(session: &Session, given: &str) -> Option<Response> {
    (!session::tokens_match(given, &session.csrf)).then(|| forbidden_form(Some(session)))
}

fn forbidden_form(session: Option<&Session>) -> Response {
    html::Page::new(
        "Forbidden",
        session,
        html::notice(
            "error",
            "This form is stale or did not come from this console (CSRF check failed). Reload the page and try again.",
        ),
    )
    .with_status(StatusCode::FORBIDDEN)
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(role: Role) -> Session {
        Sessions::default()
            .open("alice", role)
            .map(|(_, session)| session)
            .unwrap()
    }

    #[test]
    fn a_page_calls_the_service_as_its_session_user_with_their_role() {
        let call = call(&session(Role::Client));
        assert_eq!(call.caller.username, "alice");
        assert_eq!(call.caller.role, Role::Client);
        assert_eq!(call.caller.peer.name, "alice");
        assert_eq!(call.caller.peer.role, PeerRole::User);
    }

    #[test]
    fn a_stale_or_missing_csrf_token_is_refused() {
        let payer = session(Role::Client);
        assert!(csrf_refusal(&payer, &payer.csrf).is_none());
        let refused = csrf_refusal(&payer, "").unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(csrf_refusal(&payer, "0000").is_some());
    }
}
