//! Console sessions, held on the server: the cookie carries only a random 256-bit id; the
//! name, role, CSRF token and expiry stay here. Bounded in number; a restart logs everyone
//! out (sessions are not shared between replicas — a browser talks to one console).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strife_common::Failure;
use subtle::ConstantTimeEq;

use crate::roles::Role;

/// How long a session lasts from login (absolute, not sliding: a stolen cookie dies anyway).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Most sessions held at once; past it expired ones go first, then logins are refused.
const MAX_SESSIONS: usize = 10_000;
/// The session cookie. `__Host-`: the browser only accepts it `Secure`, for `/`, without a
/// `Domain`, so no sibling host can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-strife-session";
/// The login form's double-submit CSRF cookie (there is no session yet to hold a token).
pub const LOGIN_COOKIE: &str = "__Host-strife-login";

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub role: Role,
    /// Every form carries it; a POST without it (or with another) is refused.
    pub csrf: String,
    expires: Instant,
}

/// The session table.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Constant-time equality of two tokens (a CSRF token is compared against the session's).
pub fn tokens_match(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

impl Sessions {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session; returns its id (for the cookie only: never logged).
    pub fn open(&self, username: &str, role: Role) -> Result<(String, Session), Failure> {
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, session| session.expires > now);
            if table.len() >= MAX_SESSIONS {
                return Err(Failure::ResourceExhausted(
                    "too many console sessions open; try again later".into(),
                ));
            }
        }
        let session = Session {
            username: username.to_owned(),
            role,
            csrf: random_token(),
            expires: now + SESSION_LIFETIME,
        };
        let id = random_token();
        table.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session with this id (an expired one is dropped).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut table = self.table();
        let session = table.get(id)?;
        if session.expires <= Instant::now() {
            table.remove(id);
            return None;
        }
        Some(session.clone())
    }

    pub fn close(&self, id: &str) {
        self.table().remove(id);
    }

    #[cfg(test)]
    fn expire_all(&self) {
        let past = Instant::now();
        for session in self.table().values_mut() {
            session.expires = past;
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// A `Set-Cookie` value with the flags every console cookie carries.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_closes() {
        let sessions = Sessions::default();
        let (id, session) = sessions.open("alice", Role::Client).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf);
        assert_eq!(sessions.get(&id).unwrap().username, "alice");
        assert!(sessions.get("nope").is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        let (id, _) = sessions.open("bob", Role::Admin).unwrap();
        sessions.expire_all();
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn tokens_compare_exactly_and_an_empty_expected_token_never_matches() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abd", "abc"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn cookies_are_read_by_name_and_written_with_every_flag() {
        let header = "a=1; __Host-strife-session=xyz; b=2";
        assert_eq!(cookie_value(header, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie_value(header, "c"), None);
        let cookie = set_cookie(SESSION_COOKIE, "v", SESSION_LIFETIME);
        for flag in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Max-Age=1800",
            "Path=/",
        ] {
            assert!(cookie.contains(flag), "{cookie}");
        }
    }
}
