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

/// Buckets of a share of the users (and their keys), behind one lock.
#[derive(Debug, Default)]
struct Shard {
    users: HashMap<String, Bucket>,
    keys: HashMap<String, Bucket>,
}

/// Lock shards: a request takes only its user's shard, so callers of different users rarely
/// wait for each other. (One lock and a bucket name built per request cost ≈ 6 % of the
/// gateway's throughput at concurrency 256, measured A/B; docs/BENCHMARKS.md.)
const SHARDS: usize = 16;

/// Token buckets per user and per API key.
#[derive(Debug)]
pub struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
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

/// A bucket's tokens at `now`, without taking one (a caller never seen has a full bucket).
fn tokens_in(buckets: &HashMap<String, Bucket>, name: &str, rate: Rate, now: Instant) -> f64 {
    buckets
        .get(name)
        .map_or(f64::from(rate.burst), |bucket| refilled(*bucket, rate, now))
}

/// Takes one token (the caller checked there is one), allocating a name only for a bucket
/// seen for the first time.
fn take(buckets: &mut HashMap<String, Bucket>, name: &str, tokens: f64, now: Instant) {
    let taken = Bucket {
        tokens: tokens - 1.0,
        at: now,
    };
    match buckets.get_mut(name) {
        Some(bucket) => *bucket = taken,
        None => {
            buckets.insert(name.to_owned(), taken);
        }
    }
}

/// How long until `tokens` reach one at `rate`.
fn wait_for_one(tokens: f64, rate: Rate) -> Duration {
    Duration::from_secs_f64((1.0 - tokens).max(0.0) / f64::from(rate.per_second.max(1)))
}

impl RateLimiter {
    pub fn new(per_user: Rate, per_key: Rate) -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_user,
            per_key,
        }
    }

    fn shard(&self, username: &str) -> MutexGuard<'_, Shard> {
        // FNV-1a: cheap, and an attacker choosing names can at worst share one shard.
        let hash = username
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        let index = (hash % SHARDS as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one token from `username`'s bucket and, for a key's caller, from the key's;
    /// refuses with the wait until both have one. A refusal takes nothing.
    pub fn admit(&self, username: &str, key_id: Option<&str>, now: Instant) -> Result<(), Failure> {
        let (per_user, per_key) = (self.per_user, self.per_key);
        let mut guard = self.shard(username);
        let shard = &mut *guard;
        if shard.users.len() + shard.keys.len() >= MAX_RATE_BUCKETS / SHARDS {
            // Full buckets carry no state worth keeping: a forgotten caller starts full again.
            let full = |rate: Rate| {
                move |_: &String, bucket: &mut Bucket| {
                    refilled(*bucket, rate, now) < f64::from(rate.burst)
                }
            };
            shard.users.retain(full(per_user));
            shard.keys.retain(full(per_key));
        }
        let user_tokens = tokens_in(&shard.users, username, per_user, now);
        let key_tokens = key_id.map(|key_id| tokens_in(&shard.keys, key_id, per_key, now));
        let user_wait = (user_tokens < 1.0).then(|| wait_for_one(user_tokens, per_user));
        let key_wait = key_tokens
            .filter(|tokens| *tokens < 1.0)
            .map(|tokens| wait_for_one(tokens, per_key));
        let limited_by = match (user_wait, key_wait) {
            (Some(user), Some(key)) if key > user => Some((key, "API key", per_key)),
            (Some(user), _) => Some((user, "user", per_user)),
            (None, Some(key)) => Some((key, "API key", per_key)),
            (None, None) => None,
        };
        if let Some((wait, what, rate)) = limited_by {
            // Whole milliseconds, at least one: what a client can sleep.
            let retry_after = Duration::from_millis(wait.as_millis().max(1) as u64);
            return Err(Failure::RateLimited {
                message: format!(
                    "rate limit of {} requests per second per {what} reached; retry in {} ms",
                    rate.per_second,
                    retry_after.as_millis()
                ),
                retry_after,
            });
        }
        take(&mut shard.users, username, user_tokens, now);
        if let (Some(key_id), Some(tokens)) = (key_id, key_tokens) {
            take(&mut shard.keys, key_id, tokens, now);
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
