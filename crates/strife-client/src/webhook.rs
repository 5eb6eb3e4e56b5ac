//! Webhook signatures: how Strife signs an event it pushes over HTTP, and how a receiver
//! written in Rust checks one (docs/SPEC.md, "Webhook signatures"). The header is
//!
//! ```text
//! Strife-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//! ```
//!
//! with one `v1=` per signing secret in force. A receiver verifies the **raw bytes** it
//! received (never a re-serialized body: whitespace and key order would change), with any
//! of its secrets, and refuses a timestamp outside its tolerance, so a captured delivery
//! cannot be replayed later.

use ring::hmac;

/// The header a signed delivery carries.
pub const SIGNATURE_HEADER: &str = "Strife-Signature";
/// How a signing secret starts (what `whsec_` says to a person reading a config file).
pub const SECRET_PREFIX: &str = "whsec_";
/// How far a delivery's timestamp may be from the receiver's clock by default.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", hex(&bytes))
}

/// The `Strife-Signature` value for `body` sent at `timestamp_secs`, one `v1=` per secret.
pub fn signature_header(secrets: &[&str], timestamp_secs: u64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp_secs}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex(sign(secret, timestamp_secs, body).as_ref()));
    }
    header
}

fn sign(secret: &str, timestamp_secs: u64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp_secs.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `t=` or no `v1=` in the header, or one that does not parse.
    Malformed,
    /// The timestamp is further than the tolerance from now (a replay, or a clock far off).
    OutsideTolerance { timestamp_secs: u64, now_secs: u64 },
    /// No `v1=` matches the body under the secret.
    NoMatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Malformed => {
                write!(formatter, "the {SIGNATURE_HEADER} header is malformed")
            }
            SignatureError::OutsideTolerance {
                timestamp_secs,
                now_secs,
            } => write!(
                formatter,
                "the signature's time {timestamp_secs} is too far from now ({now_secs})"
            ),
            SignatureError::NoMatch => write!(formatter, "no signature matches the body"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// Checks `header` (the `Strife-Signature` value) against the raw `body` with `secret`, at
/// `now_secs`, accepting timestamps within `tolerance_secs` either way. Comparison is in
/// constant time.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            Some(("v1", value)) => signatures.push(unhex(value).ok_or(SignatureError::Malformed)?),
            // Other schemes (a later `v2`) are for other receivers.
            _ => {}
        }
    }
    let timestamp_secs = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if timestamp_secs.abs_diff(now_secs) > tolerance_secs {
        return Err(SignatureError::OutsideTolerance {
            timestamp_secs,
            now_secs,
        });
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = timestamp_secs.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    if signatures
        .iter()
        .any(|signature| hmac::verify(&key, &signed, signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment.committed"}"#;

    #[test]
    fn a_known_vector_matches_an_independent_hmac() {
        // printf '1700000000.{"id":"evt_1","type":"payment.committed"}' |
        //   openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature_header(&[SECRET], 1_700_000_000, BODY),
            "t=1700000000,v1=2a28e9a93d17066fb78bf8c69b1bd8bb1799625486bd68075ccb013f4e60b5bd"
        );
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_is_refused() {
        let header = signature_header(&[SECRET], 1_700_000_000, BODY);
        assert_eq!(verify(SECRET, &header, BODY, 1_700_000_100, 300), Ok(()));
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify(SECRET, &header, &tampered, 1_700_000_100, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify("whsec_other", &header, BODY, 1_700_000_100, 300),
            Err(SignatureError::NoMatch)
        );
        let later = header.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(SECRET, &later, BODY, 1_700_000_100, 300),
            Err(SignatureError::NoMatch),
            "the time is signed too"
        );
    }

    #[test]
    fn old_or_future_timestamps_are_refused() {
        let header = signature_header(&[SECRET], 1_700_000_000, BODY);
        for now in [1_700_000_301, 1_699_999_699] {
            assert!(matches!(
                verify(SECRET, &header, BODY, now, 300),
                Err(SignatureError::OutsideTolerance { .. })
            ));
        }
    }

    #[test]
    fn any_of_several_secrets_verifies_and_junk_is_malformed() {
        let header = signature_header(&["whsec_old", SECRET], 1_700_000_000, BODY);
        assert_eq!(verify(SECRET, &header, BODY, 1_700_000_000, 300), Ok(()));
        assert_eq!(
            verify("whsec_old", &header, BODY, 1_700_000_000, 300),
            Ok(())
        );
        for junk in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=0g", "t=1,v1=abc"] {
            assert_eq!(
                verify(SECRET, junk, BODY, 1, 300),
                Err(SignatureError::Malformed),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn secrets_are_new_each_time() {
        let (one, two) = (new_secret(), new_secret());
        assert!(one.starts_with(SECRET_PREFIX) && one.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(one, two);
    }
}
