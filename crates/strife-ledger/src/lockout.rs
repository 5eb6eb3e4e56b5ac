//! Failed logins shared through the store, so every replica counts the same failures and
//! honours the same lock: spreading guesses over replicas does not multiply an attacker's
//! tries (and a restart does not forget a lock).
//!
//! This sits behind the per-process throttle in `auth.rs`, which bounds the checks *in flight*
//! on one replica; this module counts *finished* failures across all of them. Pure: the store
//! applies [`after_failure`] / [`after_success`] inside one write to the row it read.

use std::time::Duration;

/// Login throttling policy.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Password checks per name per window; the failure that reaches it locks the name.
    pub threshold: u32,
    /// The window, and how long the first lockout lasts; each consecutive lockout doubles
    /// it, up to [`MAX_LOCKOUT`].
    pub duration: Duration,
}

/// The longest a name is ever locked, however many lockouts in a row.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// One name's shared login record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SharedLogin {
    /// Failed checks in the current window.
    pub failures: u32,
    pub window_start_unix_ms: i64,
    /// 0 when not locked.
    pub locked_until_unix_ms: i64,
    /// Lockouts in a row without a success in between (drives the doubling).
    pub lockouts: u32,
}

impl SharedLogin {
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

/// The record after one more failed check at `now`.
pub fn after_failure(
    previous: Option<SharedLogin>,
    policy: LockoutPolicy,
    now_unix_ms: i64,
) -> SharedLogin {
    let mut login = previous.unwrap_or(SharedLogin {
        window_start_unix_ms: now_unix_ms,
        ..SharedLogin::default()
    });
    let window = millis(policy.duration);
    if login.locked_until_unix_ms != 0 && login.locked_until_unix_ms <= now_unix_ms {
        // A lock that ended long ago no longer counts towards the doubling.
        if now_unix_ms.saturating_sub(login.locked_until_unix_ms) > millis(MAX_LOCKOUT) {
            login.lockouts = 0;
        }
        login.locked_until_unix_ms = 0;
        login.failures = 0;
        login.window_start_unix_ms = now_unix_ms;
    }
    if now_unix_ms.saturating_sub(login.window_start_unix_ms) >= window {
        login.failures = 0;
        login.window_start_unix_ms = now_unix_ms;
    }
    login.failures = login.failures.saturating_add(1);
    if login.failures >= policy.threshold {
        let lock = policy
            .duration
            .saturating_mul(1u32.checked_shl(login.lockouts).unwrap_or(u32::MAX))
            .min(MAX_LOCKOUT.max(policy.duration));
        login.locked_until_unix_ms = now_unix_ms.saturating_add(millis(lock));
        login.lockouts = login.lockouts.saturating_add(1);
        login.failures = 0;
        login.window_start_unix_ms = now_unix_ms;
    }
    login
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
    };

    fn fail(times: u32, start: Option<SharedLogin>, now: i64) -> SharedLogin {
        (0..times)
            .fold(start, |login, _| Some(after_failure(login, POLICY, now)))
            .unwrap_or_default()
    }

    #[test]
    fn the_threshold_th_failure_locks_for_the_policy_duration() {
        let login = fail(2, None, 1_000);
        assert_eq!(login.locked_for(1_000), None);
        let login = after_failure(Some(login), POLICY, 1_000);
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
        let first = fail(3, None, 0);
        let second = fail(3, Some(first), 30_000);
        assert_eq!(second.locked_for(30_000), Some(Duration::from_secs(60)));
        let many = (0..20).fold(second, |login, round| {
            fail(3, Some(login), login.locked_until_unix_ms.max(round))
        });
        assert_eq!(
            many.locked_for(many.locked_until_unix_ms - millis(MAX_LOCKOUT)),
            Some(MAX_LOCKOUT)
        );
        // Failures outside the window do not accumulate.
        let spread = fail(2, None, 0);
        let later = after_failure(Some(spread), POLICY, 31_000);
        assert_eq!((later.failures, later.locked_for(31_000)), (1, None));
    }
}
