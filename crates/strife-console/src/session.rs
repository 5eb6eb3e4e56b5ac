//! Console sessions, held on the server: the cookie carries only a random 256-bit id; the
//! name, role, CSRF token and expiry stay here. Bounded in number, per user
//! ([`MAX_CONSOLE_SESSIONS_PER_USER`]: one more closes that user's oldest) and in all
//! ([`MAX_CONSOLE_SESSIONS`], which no single user can fill); a restart logs everyone out
//! (sessions are not shared between replicas — a browser talks to one console).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strife_common::limits::{MAX_CONSOLE_SESSIONS, MAX_CONSOLE_SESSIONS_PER_USER};
use strife_common::Failure;
use subtle::ConstantTimeEq;

use strife_gateway::roles::Role;

/// How long a session lasts from login (absolute, not sliding: a stolen cookie dies anyway).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);
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
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Session>,
    /// Each user's session ids, oldest first (at most [`MAX_CONSOLE_SESSIONS_PER_USER`]).
    by_user: HashMap<String, VecDeque<String>>,
}

impl Table {
    fn remove(&mut self, id: &str) {
        let Some(session) = self.by_id.remove(id) else {
            return;
        };
        if let Some(ids) = self.by_user.get_mut(&session.username) {
            ids.retain(|held| held != id);
            if ids.is_empty() {
                self.by_user.remove(&session.username);
            }
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, session)| session.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
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
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a session; returns its id (for the cookie only: never logged). A user already
    /// holding [`MAX_CONSOLE_SESSIONS_PER_USER`] loses their oldest (logging in again from
    /// the same browser should always work); a full table drops expired sessions, then
    /// refuses.
    pub fn open(&self, username: &str, role: Role) -> Result<(String, Session), Failure> {
        let now = Instant::now();
        let mut table = self.table();
        let held: Vec<String> = table
            .by_user
            .get(username)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        for id in held {
            if table
                .by_id
                .get(&id)
                .is_none_or(|session| session.expires <= now)
            {
                table.remove(&id);
            }
        }
        while table
            .by_user
            .get(username)
            .is_some_and(|ids| ids.len() >= MAX_CONSOLE_SESSIONS_PER_USER)
        {
            let oldest = table
                .by_user
                .get(username)
                .and_then(|ids| ids.front())
                .cloned();
            match oldest {
                Some(oldest) => table.remove(&oldest),
                None => break,
            }
        }
        if table.by_id.len() >= MAX_CONSOLE_SESSIONS {
            table.drop_expired(now);
            if table.by_id.len() >= MAX_CONSOLE_SESSIONS {
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
        table.by_id.insert(id.clone(), session.clone());
        table
            .by_user
            .entry(username.to_owned())
            .or_default()
            .push_back(id.clone());
        Ok((id, session))
    }

    /// The live session with this id (an expired one is dropped).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut table = self.table();
        let session = table.by_id.get(id)?;
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
        for session in self.table().by_id.values_mut() {
            session.expires = past;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().by_id.len()
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
    fn a_user_holds_at_most_the_per_user_cap_and_loses_the_oldest_first() {
        let sessions = Sessions::default();
        let ids: Vec<String> = (0..MAX_CONSOLE_SESSIONS_PER_USER + 3)
            .map(|_| sessions.open("mallory", Role::Client).unwrap().0)
            .collect();
        let live: Vec<bool> = ids.iter().map(|id| sessions.get(id).is_some()).collect();
        assert_eq!(
            live.iter().filter(|live| **live).count(),
            MAX_CONSOLE_SESSIONS_PER_USER
        );
        assert!(!live[0] && !live[2], "the oldest went first: {live:?}");
        assert!(live[3..].iter().all(|live| *live), "{live:?}");
        // Others are untouched, and closing frees a place.
        let (alice, _) = sessions.open("alice", Role::Client).unwrap();
        assert!(sessions.get(&alice).is_some());
        sessions.close(&ids[5]);
        assert!(sessions.get(&ids[5]).is_none());
        assert_eq!(sessions.len(), MAX_CONSOLE_SESSIONS_PER_USER - 1 + 1);
    }

    #[test]
    fn one_user_cannot_fill_the_table_and_a_full_table_refuses_others() {
        let sessions = Sessions::default();
        for _ in 0..MAX_CONSOLE_SESSIONS {
            sessions.open("mallory", Role::Client).unwrap();
        }
        assert_eq!(sessions.len(), MAX_CONSOLE_SESSIONS_PER_USER);
        // Filling it takes many users; then new ones are refused until sessions expire.
        let others =
            (MAX_CONSOLE_SESSIONS - MAX_CONSOLE_SESSIONS_PER_USER) / MAX_CONSOLE_SESSIONS_PER_USER;
        for user in 0..others {
            for _ in 0..MAX_CONSOLE_SESSIONS_PER_USER {
                sessions.open(&format!("user{user}"), Role::Client).unwrap();
            }
        }
        assert!(matches!(
            sessions.open("alice", Role::Client),
            Err(Failure::ResourceExhausted(_))
        ));
        // A user at the table's limit still logs in again: their own oldest gives way.
        assert!(sessions.open("user0", Role::Client).is_ok());
        sessions.expire_all();
        assert!(sessions.open("alice", Role::Client).is_ok());
        assert_eq!(sessions.len(), 1);
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
