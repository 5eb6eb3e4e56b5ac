//! Requests per second: one token bucket per user (every transport) and one per API key, so
//! no caller — a script gone wrong, a leaked key — can take the gateway away from everyone
//! else. Per replica and in memory (stated in docs/SPEC.md §10): a caller spread over `n`
//! replicas gets up to `n` times the rate, which the per-replica CPU it costs pays for.
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`; each request takes one.
//! A refused request is told how long until a token is there (`Failure::RateLimited`:
//! `RESOURCE_EXHAUSTED` with a `RetryInfo` over gRPC, 429 with `Retry-After` over HTTP).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strife_common::limits::{
    MAX_RATE_BUCKETS, RATE_PER_KEY_BURST, RATE_PER_KEY_PER_SECOND, RATE_PER_USER_BURST,
    RATE_PER_USER_PER_SECOND,
};
use strife_common::Failure;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A rate and how far it may be exceeded at once.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Token buckets by name (`user:alice`, `key:0123…`).
#[derive(Debug)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    per_user: Rate,
    per_key: Rate,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(
            Rate {
                per_second: RATE_PER_USER_PER_SECOND,
                burst: RATE_PER_USER_BURST,
            },
            Rate {
                per_second: RATE_PER_KEY_PER_SECOND,
                burst: RATE_PER_KEY_BURST,
            },
        )
    }
}

impl RateLimiter {
    pub fn new(per_user: Rate, per_key: Rate) -> Self {
        RateLimiter {
            buckets: Mutex::default(),
            per_user,
            per_key,
        }
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one token from `username`'s bucket and, for a key's caller, from the key's;
    /// refuses with the wait until both have one. A refusal takes nothing.
    pub fn admit(&self, username: &str, key_id: Option<&str>, now: Instant) -> Result<(), Failure> {
        let mut buckets = self.buckets();
        if buckets.len() >= MAX_RATE_BUCKETS {
            // Full buckets carry no state worth keeping: a forgotten caller starts full again.
            let (per_user, per_key) = (self.per_user, self.per_key);
            buckets.retain(|name, bucket| {
                let rate = if name.starts_with("key:") {
                    per_key
                } else {
                    per_user
                };
                refilled(*bucket, rate, now) < f64::from(rate.burst)
            });
        }
        let user_name = format!("user:{username}");
        let key_name = key_id.map(|key_id| format!("key:{key_id}"));
        let mut checks = vec![(user_name, self.per_user, "user")];
        if let Some(key_name) = key_name {
            checks.push((key_name, self.per_key, "API key"));
        }
        let mut wait = Duration::ZERO;
        let mut limited_by = None;
        for (name, rate, what) in &checks {
            let tokens = buckets.get(name).map_or(f64::from(rate.burst), |bucket| {
                refilled(*bucket, *rate, now)
            });
            if tokens < 1.0 {
                let missing = (1.0 - tokens) / f64::from(rate.per_second.max(1));
                let this_wait = Duration::from_secs_f64(missing);
                if this_wait >= wait {
                    wait = this_wait;
                    limited_by = Some((*what, rate.per_second));
                }
            }
        }
        if let Some((what, per_second)) = limited_by {
            // Whole milliseconds, at least one: what a client can sleep.
            let retry_after = Duration::from_millis(wait.as_millis().max(1) as u64);
            return Err(Failure::RateLimited {
                message: format!(
                    "rate limit of {per_second} requests per second per {what} reached; retry in {} ms",
                    retry_after.as_millis()
                ),
                retry_after,
            });
        }
        for (name, rate, _) in checks {
            let tokens = buckets
                .get(&name)
                .map_or(f64::from(rate.burst), |bucket| refilled(*bucket, rate, now));
            buckets.insert(
                name,
                Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                },
            );
        }
        Ok(())
    }
}

fn refilled(bucket: Bucket, rate: Rate, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter {
        RateLimiter::new(
            Rate {
                per_second: 10,
                burst: 5,
            },
            Rate {
                per_second: 2,
                burst: 2,
            },
        )
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_the_wait_is_told() {
        let limiter = limiter();
        let start = Instant::now();
        for _ in 0..5 {
            assert!(limiter.admit("alice", None, start).is_ok());
        }
        match limiter.admit("alice", None, start) {
            Err(Failure::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
        // A tenth of a second later one more token is there.
        assert!(limiter
            .admit("alice", None, start + Duration::from_millis(100))
            .is_ok());
        // Another user has a bucket of their own.
        assert!(limiter.admit("bob", None, start).is_ok());
    }

    #[test]
    fn a_key_is_held_to_its_own_rate_within_its_owners() {
        let limiter = limiter();
        let start = Instant::now();
        assert!(limiter.admit("alice", Some("k1"), start).is_ok());
        assert!(limiter.admit("alice", Some("k1"), start).is_ok());
        let refused = limiter.admit("alice", Some("k1"), start);
        assert!(
            matches!(&refused, Err(Failure::RateLimited { message, .. }) if message.contains("API key")),
            "{refused:?}"
        );
        // The refusal took nothing: alice still has 3 of her 5 without the key.
        for _ in 0..3 {
            assert!(limiter.admit("alice", None, start).is_ok());
        }
        assert!(limiter.admit("alice", None, start).is_err());
        // Another key of hers is limited by her bucket, which is empty.
        assert!(limiter.admit("alice", Some("k2"), start).is_err());
    }
}
