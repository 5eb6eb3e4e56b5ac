//! The lockout rule, in one place: how a failed password check moves a login record (failures
//! in a window, a lock that doubles per consecutive lockout up to [`MAX_LOCKOUT`]), used for
//! every kind of record there is:
//!
//! - the **shared** records in the store's `logins` table, so every replica counts the same
//!   failures and honours the same lock (spreading guesses over replicas does not multiply an
//!   attacker's tries, and a restart does not forget a lock): the store applies
//!   [`after_failure`] / [`after_success`] inside one write to the row it read;
//! - the per-process throttle in `auth.rs`, which also bounds the checks *in flight* per key
//!   (names and client addresses), on a clock of its own.
//!
//! A name has two **scopes**, each its own record ([`Scope::key`]): the certificate scope
//! (gRPC: certificate + password; keyed by the user name) and the console scope (browser
//! logins; keyed `console:<name>` — `:` cannot occur in a user name, so the two never meet).
//! Which scope a login counts in and which locks refuse it is [`Scope`]'s to say:
//!
//! | login | refused while locked | a failure counts in |
//! |---|---|---|
//! | console | console **or** certificate scope | console scope |
//! | gRPC | certificate scope; the console scope too unless the user is spared (`--console-lockout-spares`) | certificate **and** console scope |
//!
//! So someone who can only reach the console (no certificate) can lock a name's console logins
//! but never the admin's certificate + password, and a certificate holder guessing also uses
//! up the console budget (the console attacker is never stronger than before the split).
//!
//! Pure: time is passed in, as milliseconds on whatever clock the caller keeps.

use std::time::Duration;

/// The longest a name (or a client address) is ever locked, however many lockouts in a row.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Whose gRPC logins a lock of their console scope leaves alone (`--console-lockout-spares`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleSpares {
    /// Only the admin: anyone who reaches the console can lock the admin's console logins, but
    /// never the admin's certificate + password. Every other user's console lock also blocks
    /// their gRPC logins.
    #[default]
    Admin,
    /// Every user: a console lock never blocks a gRPC login.
    All,
}

/// Login throttling policy.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Password checks per name per window; the failure that reaches it locks the name.
    pub threshold: u32,
    /// The window, and how long the first lockout lasts; each consecutive lockout doubles
    /// it, up to [`MAX_LOCKOUT`].
    pub duration: Duration,
    /// Whose gRPC logins ignore a lock of their console scope.
    pub console_spares: ConsoleSpares,
}

impl LockoutPolicy {
    /// Failed console logins one client address may make per window across all names: one
    /// fewer than a name's threshold, so no single address can lock a name's console scope by
    /// itself (at least one, so a threshold of 1 still lets an address try).
    pub fn address_budget(&self) -> u32 {
        self.threshold.saturating_sub(1).max(1)
    }

    /// The same rule for client addresses: [`Self::address_budget`] failures per window.
    pub fn for_addresses(&self) -> LockoutPolicy {
        LockoutPolicy {
            threshold: self.address_budget(),
            ..*self
        }
    }

    /// Whether `username`'s gRPC logins ignore a lock of its console scope.
    pub fn spares(&self, username: &str) -> bool {
        match self.console_spares {
            ConsoleSpares::All => true,
            ConsoleSpares::Admin => username == strife_common::admin::ADMIN_USER,
        }
    }
}

/// Which record of a name a login reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// gRPC logins (certificate + password): the record keyed by the user name.
    Certificate,
    /// Console logins (name + password in a browser): the record keyed `console:<name>`.
    Console,
}

impl Scope {
    /// The key of `username`'s record in this scope (the store's `logins.username`).
    pub fn key(self, username: &str) -> String {
        match self {
            Scope::Certificate => username.to_owned(),
            Scope::Console => format!("console:{username}"),
        }
    }
}

/// The scopes whose lock refuses a login made in `scope` (see the module table).
pub fn refusing_scopes(scope: Scope, policy: &LockoutPolicy, username: &str) -> &'static [Scope] {
    match scope {
        Scope::Console => &[Scope::Console, Scope::Certificate],
        Scope::Certificate if policy.spares(username) => &[Scope::Certificate],
        Scope::Certificate => &[Scope::Certificate, Scope::Console],
    }
}

/// The scopes a failed check made in `scope` counts in (see the module table).
pub fn counting_scopes(scope: Scope) -> &'static [Scope] {
    match scope {
        Scope::Console => &[Scope::Console],
        Scope::Certificate => &[Scope::Certificate, Scope::Console],
    }
}

/// One login record (a name's scope, or — in memory only — a client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SharedLogin {
    /// Failed checks in the current window.
    pub failures: u32,
    pub window_start_unix_ms: i64,
    /// When the latest lock ends (or ended); 0 when there was none, or it ended so long ago
    /// that it no longer counts towards the doubling.
    pub locked_until_unix_ms: i64,
    /// Lockouts in a row without a success in between (drives the doubling).
    pub lockouts: u32,
}

impl SharedLogin {
    /// A record with nothing against it, its window starting at `now_unix_ms`.
    pub fn new(now_unix_ms: i64) -> Self {
        SharedLogin {
            window_start_unix_ms: now_unix_ms,
            ..SharedLogin::default()
        }
    }

    /// How long the name stays locked, if it is locked at `now`.
    pub fn locked_for(&self, now_unix_ms: i64) -> Option<Duration> {
        let left = self.locked_until_unix_ms.saturating_sub(now_unix_ms);
        (left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }

    /// Whether a success has anything to clear.
    pub fn is_clean(&self) -> bool {
        self.failures == 0 && self.lockouts == 0 && self.locked_until_unix_ms == 0
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The record as it stands at `now`: after a lock that has ended a new window starts (once),
/// a lock that ended more than [`MAX_LOCKOUT`] ago no longer counts towards the doubling, and
/// an expired window starts again. What a check is counted against.
pub fn current(mut login: SharedLogin, policy: LockoutPolicy, now_unix_ms: i64) -> SharedLogin {
    let lock_end = login.locked_until_unix_ms;
    if lock_end != 0 && lock_end <= now_unix_ms {
        if login.window_start_unix_ms < lock_end {
            login.failures = 0;
            login.window_start_unix_ms = now_unix_ms;
        }
        if now_unix_ms.saturating_sub(lock_end) > millis(MAX_LOCKOUT) {
            login.lockouts = 0;
            login.locked_until_unix_ms = 0;
        }
    }
    if now_unix_ms.saturating_sub(login.window_start_unix_ms) >= millis(policy.duration) {
        login.failures = 0;
        login.window_start_unix_ms = now_unix_ms;
    }
    login
}

/// One more failed check at `now`: the record after it, and the lock it started, if it
/// reached the threshold (`duration` × 2^(lockouts in a row), at most [`MAX_LOCKOUT`]).
pub fn fail(
    previous: Option<SharedLogin>,
    policy: LockoutPolicy,
    now_unix_ms: i64,
) -> (SharedLogin, Option<Duration>) {
    let mut login = current(
        previous.unwrap_or(SharedLogin::new(now_unix_ms)),
        policy,
        now_unix_ms,
    );
    login.failures = login.failures.saturating_add(1);
    if login.failures < policy.threshold {
        return (login, None);
    }
    let lock = policy
        .duration
        .saturating_mul(1u32.checked_shl(login.lockouts).unwrap_or(u32::MAX))
        .min(MAX_LOCKOUT.max(policy.duration));
    login.locked_until_unix_ms = now_unix_ms.saturating_add(millis(lock));
    login.lockouts = login.lockouts.saturating_add(1);
    login.failures = 0;
    login.window_start_unix_ms = now_unix_ms;
    (login, Some(lock))
}

/// The record after one more failed check at `now` (what the store writes).
pub fn after_failure(
    previous: Option<SharedLogin>,
    policy: LockoutPolicy,
    now_unix_ms: i64,
) -> SharedLogin {
    fail(previous, policy, now_unix_ms).0
}

/// The record after a successful check: nothing left to hold against the name.
pub fn after_success() -> Option<SharedLogin> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        threshold: 3,
        duration: Duration::from_secs(30),
        console_spares: ConsoleSpares::Admin,
    };

    fn fail_times(times: u32, start: Option<SharedLogin>, now: i64) -> SharedLogin {
        (0..times)
            .fold(start, |login, _| Some(after_failure(login, POLICY, now)))
            .unwrap_or_default()
    }

    #[test]
    fn the_threshold_th_failure_locks_for_the_policy_duration() {
        let login = fail_times(2, None, 1_000);
        assert_eq!(login.locked_for(1_000), None);
        let (login, lock) = fail(Some(login), POLICY, 1_000);
        assert_eq!(lock, Some(Duration::from_secs(30)));
        assert_eq!(login.locked_for(1_000), Some(Duration::from_secs(30)));
        assert_eq!(login.locked_for(31_000), None, "the lock ends");
    }

    #[test]
    fn failures_spread_over_replicas_add_up_in_one_record() {
        // Three replicas each report one failure into the same stored record.
        let mut login = None;
        for _replica in 0..3 {
            login = Some(after_failure(login, POLICY, 5_000));
        }
        assert!(login.is_some_and(|login| login.locked_for(5_000).is_some()));
    }

    #[test]
    fn consecutive_lockouts_double_up_to_the_maximum_and_old_windows_reset() {
        let first = fail_times(3, None, 0);
        let second = fail_times(3, Some(first), 30_000);
        assert_eq!(second.locked_for(30_000), Some(Duration::from_secs(60)));
        let many = (0..20).fold(second, |login, round| {
            fail_times(3, Some(login), login.locked_until_unix_ms.max(round))
        });
        assert_eq!(
            many.locked_for(many.locked_until_unix_ms - millis(MAX_LOCKOUT)),
            Some(MAX_LOCKOUT)
        );
        // Failures outside the window do not accumulate.
        let spread = fail_times(2, None, 0);
        let later = after_failure(Some(spread), POLICY, 31_000);
        assert_eq!((later.failures, later.locked_for(31_000)), (1, None));
    }

    #[test]
    fn a_lock_long_past_stops_doubling_even_if_the_name_was_touched_soon_after_it() {
        let first = fail_times(3, None, 0); // locked 0 .. 30 s
        let touched = after_failure(Some(first), POLICY, 31_000);
        assert_eq!(touched.failures, 1, "a new window after the lock");
        let much_later = 31_000 + millis(MAX_LOCKOUT) + 1_000;
        let (_, lock) = fail(
            Some(fail_times(2, Some(touched), much_later)),
            POLICY,
            much_later,
        );
        assert_eq!(
            lock,
            Some(Duration::from_secs(30)),
            "back to the first step"
        );
    }

    #[test]
    fn scopes_have_their_own_keys_and_rules() {
        assert_eq!(Scope::Certificate.key("alice"), "alice");
        assert_eq!(Scope::Console.key("alice"), "console:alice");
        let spare_admin = POLICY;
        let spare_all = LockoutPolicy {
            console_spares: ConsoleSpares::All,
            ..POLICY
        };
        // A console login: both locks refuse it, its failures count only there.
        assert_eq!(
            refusing_scopes(Scope::Console, &spare_admin, "admin"),
            [Scope::Console, Scope::Certificate]
        );
        assert_eq!(counting_scopes(Scope::Console), [Scope::Console]);
        // A gRPC login: the console lock refuses it unless the user is spared.
        assert_eq!(
            refusing_scopes(Scope::Certificate, &spare_admin, "admin"),
            [Scope::Certificate]
        );
        assert_eq!(
            refusing_scopes(Scope::Certificate, &spare_admin, "alice"),
            [Scope::Certificate, Scope::Console]
        );
        assert_eq!(
            refusing_scopes(Scope::Certificate, &spare_all, "alice"),
            [Scope::Certificate]
        );
        assert_eq!(
            counting_scopes(Scope::Certificate),
            [Scope::Certificate, Scope::Console]
        );
    }

    #[test]
    fn an_address_may_fail_one_time_fewer_than_a_name() {
        assert_eq!(POLICY.address_budget(), 2);
        assert_eq!(POLICY.for_addresses().threshold, 2);
        let one = LockoutPolicy {
            threshold: 1,
            ..POLICY
        };
        assert_eq!(one.address_budget(), 1, "an address can always try");
    }
}
