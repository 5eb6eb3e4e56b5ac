//! The keyed hash API key secrets are stored as, and when a key's use is next written. Apart
//! from `api_keys.rs` so the service's root can hold one without importing the handlers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use blake2::Blake2bMac;

/// Keys whose last write of "last used" this replica remembers; beyond it, it forgets all
/// (and writes again once per key), so the map stays bounded.
const MAX_TOUCHES_REMEMBERED: usize = 10_000;
/// "Last used" is written at most this often per key and replica.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
type KeyMac = Blake2bMac<blake2::digest::consts::U32>;

/// Hashes key secrets and remembers when each key's use was last written.
pub struct ApiKeyHasher {
    key: [u8; 32],
    touched: Mutex<HashMap<String, Instant>>,
}

impl ApiKeyHasher {
    /// From the store's shared secret (`GatewayStore::secret(API_KEY_SECRET)`).
    pub fn new(secret: &[u8; 32]) -> Self {
        ApiKeyHasher {
            key: *secret,
            touched: Mutex::default(),
        }
    }

    pub(super) fn hash(&self, key_id: &str, secret: &str) -> Vec<u8> {
        match <KeyMac as KeyInit>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                // The id is hashed too, so a secret is worth nothing under another id.
                Mac::update(&mut mac, key_id.as_bytes());
                Mac::update(&mut mac, b"/");
                Mac::update(&mut mac, secret.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            // A 32-byte key is always valid for BLAKE2b; an empty hash matches no stored one.
            Err(_) => Vec::new(),
        }
    }

    /// Whether this replica should write `key_id`'s use now.
    pub(super) fn due_for_touch(&self, key_id: &str, now: Instant) -> bool {
        let mut touched = self
            .touched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match touched.get(key_id) {
            Some(last) if now.duration_since(*last) < TOUCH_INTERVAL => false,
            _ => {
                if touched.len() >= MAX_TOUCHES_REMEMBERED {
                    touched.clear();
                }
                touched.insert(key_id.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_depends_on_the_secret_the_id_and_the_server_key() {
        let hasher = ApiKeyHasher::new(&[7; 32]);
        let base = hasher.hash("0123456789abcdef", "secret");
        assert_eq!(base.len(), 32);
        assert_eq!(base, hasher.hash("0123456789abcdef", "secret"));
        assert_ne!(base, hasher.hash("0123456789abcdef", "secreT"));
        assert_ne!(base, hasher.hash("0123456789abcdee", "secret"));
        assert_ne!(
            base,
            ApiKeyHasher::new(&[8; 32]).hash("0123456789abcdef", "secret")
        );
    }

    #[test]
    fn use_is_written_once_per_interval() {
        let hasher = ApiKeyHasher::new(&[0; 32]);
        let start = Instant::now();
        assert!(hasher.due_for_touch("a", start));
        assert!(!hasher.due_for_touch("a", start + Duration::from_secs(59)));
        assert!(hasher.due_for_touch("b", start));
        assert!(hasher.due_for_touch("a", start + TOUCH_INTERVAL));
    }
}
