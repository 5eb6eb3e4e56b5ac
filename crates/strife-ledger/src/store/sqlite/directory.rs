//! In-memory copies of the users and linked accounts a payment reads (its payer's and its
//! payee's), so `Pay` does not query SQLite for them every time.
//!
//! Coherent because this process is the only one writing its SQLite database (the state
//! directory's lock keeps a second one out), and every write to `users` or `accounts` goes
//! through [`super::SqliteGatewayStore`], which calls [`Directory::changed`] once the write
//! has committed. A read that raced such a write must not put the old rows back: copies are
//! only kept when no change happened between the read's start and its end (the generation).
//! Missing users are not kept (a user created later must be found at once).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::records::{LinkedAccount, UserRecord};

/// Most users (and, separately, account lists) kept; all are dropped when it is reached.
const MAX_KEPT: usize = 65_536;

#[derive(Default)]
pub(super) struct Directory {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    generation: u64,
    users: HashMap<String, UserRecord>,
    accounts: HashMap<String, Vec<LinkedAccount>>,
}

impl Directory {
    /// The current generation, to pass back with what a read then found.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(super) fn user(&self, username: &str) -> Option<UserRecord> {
        self.lock().users.get(username).cloned()
    }

    pub(super) fn keep_user(&self, generation: u64, user: &UserRecord) {
        let mut kept = self.lock();
        if kept.generation != generation {
            return;
        }
        if kept.users.len() >= MAX_KEPT {
            kept.users.clear();
        }
        kept.users.insert(user.username.clone(), user.clone());
    }

    pub(super) fn accounts(&self, username: &str) -> Option<Vec<LinkedAccount>> {
        self.lock().accounts.get(username).cloned()
    }

    pub(super) fn keep_accounts(
        &self,
        generation: u64,
        username: &str,
        accounts: &[LinkedAccount],
    ) {
        let mut kept = self.lock();
        if kept.generation != generation {
            return;
        }
        if kept.accounts.len() >= MAX_KEPT {
            kept.accounts.clear();
        }
        kept.accounts.insert(username.to_owned(), accounts.to_vec());
    }

    /// After a committed write to `users` or `accounts`: forget everything (such writes are
    /// rare: a user created, an account linked).
    pub(super) fn changed(&self) {
        let mut kept = self.lock();
        kept.generation = kept.generation.wrapping_add(1);
        kept.users.clear();
        kept.accounts.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Every change under the lock is a single insert or clear: never half done.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(username: &str, number: &str) -> LinkedAccount {
        LinkedAccount {
            username: username.into(),
            bank_id: "bank0".into(),
            account_number: number.into(),
            currency: "USD".into(),
            holder_name: username.into(),
        }
    }

    #[test]
    fn what_was_read_is_kept_until_a_change() {
        let directory = Directory::default();
        let generation = directory.generation();
        directory.keep_accounts(generation, "alice", &[account("alice", "1")]);
        assert_eq!(
            directory.accounts("alice"),
            Some(vec![account("alice", "1")])
        );
        directory.changed();
        assert_eq!(directory.accounts("alice"), None);
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let directory = Directory::default();
        let before = directory.generation();
        directory.changed();
        directory.keep_accounts(before, "alice", &[account("alice", "old")]);
        assert_eq!(directory.accounts("alice"), None);
        let user = UserRecord {
            username: "alice".into(),
            role: "client".into(),
            password_hash: "hash".into(),
        };
        directory.keep_user(before, &user);
        assert_eq!(directory.user("alice"), None);
        directory.keep_user(directory.generation(), &user);
        assert_eq!(directory.user("alice"), Some(user));
    }
}
