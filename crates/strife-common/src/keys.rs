//! The one way Strife draws an idempotency key or a request id: [`new_key`].

/// A fresh key: a UUID v7 in its usual text form (36 bytes, within `limits::MAX_ID_BYTES`).
///
/// Time-ordered, not random: the gateway's idempotency-key index and the banks' `legs`
/// primary key are B-trees, and keys that grow with time are inserted at their right edge,
/// where the pages are already in memory. A random (v4) key lands on a random leaf page, one
/// more page read and written per payment (docs/BENCHMARKS.md). The gateway accepts any key;
/// this is only what Strife's own clients choose. Its 74 random bits still make two keys
/// drawn in the same millisecond distinct.
pub fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_ids_distinct_and_ordered_by_time() {
        let first = new_key();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_key();
        assert_ne!(first, second);
        // Text order follows time order (the millisecond timestamp leads).
        assert!(first < second, "{first} !< {second}");
        assert_eq!(
            crate::limits::validate_id("idempotency_key", &first),
            Ok(())
        );
        let parsed = uuid::Uuid::parse_str(&first).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
    }
}
