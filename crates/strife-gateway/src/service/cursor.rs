//! Cursors and page tokens that tell a user nothing about anyone else's payments.
//!
//! A watch cursor is a position in the gateway's decision order, and a history page token a
//! position in its payment log; both orders are shared by every user. Handed out as plain
//! numbers, the distance between two of one user's cursors would count the payments other
//! users made in between: an oracle on the network's activity. So a cursor leaves the
//! gateway sealed: the position and a tag of its owner (and its kind) are encrypted as one
//! AES-128 block under a key every replica shares (the store's `cursor` secret), so a cursor
//! looks random, is resumable on any replica, and is refused when another user, or another
//! kind of cursor, presents it.
//!
//! Plain numbers are still accepted as input (what gateways before this one gave out, so a
//! client resumes across an upgrade): a position a user chooses reveals nothing, since a
//! watch or page only ever yields the caller's own payments.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use blake2::digest::{Mac, Update, VariableOutput};
use blake2::{Blake2bMac512, Blake2bVar};
use strife_common::Failure;
use subtle::ConstantTimeEq;

/// Name of the store secret the cursor keys are derived from.
pub const CURSOR_SECRET: &str = "cursor";

/// What a cursor points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// A position in the decision order (`WatchPayments`' `since`, an event's `cursor`).
    Event,
    /// A position in one user's history (`ListHistory`'s `page_token`).
    HistoryPage,
    /// A position in a payment's refunds (`ListRefunds`' `page_token`), sealed to the user.
    RefundsPage,
}

impl CursorKind {
    fn label(self) -> &'static [u8] {
        match self {
            CursorKind::Event => b"event",
            CursorKind::HistoryPage => b"history",
            CursorKind::RefundsPage => b"refunds",
        }
    }
}

/// Seals and opens cursors with keys derived from one secret.
pub struct CursorSeal {
    cipher: Aes128,
    owner_key: [u8; 32],
}

/// `BLAKE2b(secret, label)`, `N` bytes: independent keys from one secret.
fn derive<const N: usize>(secret: &[u8; 32], label: &[u8]) -> [u8; N] {
    let mut output = [0u8; N];
    // N is 16 or 32 here, both valid BLAKE2b output sizes.
    if let Ok(mut hasher) = Blake2bVar::new(N) {
        hasher.update(secret);
        hasher.update(label);
        let _ = hasher.finalize_variable(&mut output);
    }
    output
}

impl CursorSeal {
    /// Keys from the store's shared secret (`GatewayStore::secret(CURSOR_SECRET)`).
    pub fn new(secret: &[u8; 32]) -> Self {
        let cipher_key: [u8; 16] = derive(secret, b"strife cursor cipher v1");
        CursorSeal {
            cipher: Aes128::new(&cipher_key.into()),
            owner_key: derive(secret, b"strife cursor owner v1"),
        }
    }

    /// Eight bytes that bind a cursor to its owner and kind.
    fn owner_tag(&self, kind: CursorKind, owner: &str) -> [u8; 8] {
        let mut tag = [0u8; 8];
        if let Ok(mut mac) = <Blake2bMac512 as KeyInit>::new_from_slice(&self.owner_key) {
            Mac::update(&mut mac, kind.label());
            Mac::update(&mut mac, &(owner.len() as u64).to_le_bytes());
            Mac::update(&mut mac, owner.as_bytes());
            tag.copy_from_slice(&mac.finalize().into_bytes()[..8]);
        }
        tag
    }

    /// The cursor `owner` is given for `position`: 32 hex digits.
    pub fn seal(&self, kind: CursorKind, owner: &str, position: i64) -> String {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&position.to_be_bytes());
        block[8..].copy_from_slice(&self.owner_tag(kind, owner));
        let mut block = block.into();
        self.cipher.encrypt_block(&mut block);
        block.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The position in `token`, if it is a cursor of this kind given to `owner` (or a plain
    /// non-negative number). `field` names the request field in the refusal.
    pub fn open(
        &self,
        kind: CursorKind,
        owner: &str,
        token: &str,
        field: &str,
    ) -> Result<i64, Failure> {
        let refused = || {
            Failure::invalid_field(
                field,
                format!("{field} is not one this server gave out to this user"),
            )
        };
        if !token.is_empty() && token.len() <= 19 && token.bytes().all(|b| b.is_ascii_digit()) {
            return token.parse::<i64>().map_err(|_| refused());
        }
        let bytes = decode_hex(token).ok_or_else(refused)?;
        let mut block = bytes.into();
        self.cipher.decrypt_block(&mut block);
        let tag: bool = block[8..].ct_eq(&self.owner_tag(kind, owner)).into();
        if !tag {
            return Err(refused());
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&block[..8]);
        let position = i64::from_be_bytes(position);
        if position < 0 {
            return Err(refused());
        }
        Ok(position)
    }
}

/// 32 hex digits → 16 bytes.
fn decode_hex(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 32 {
        return None;
    }
    let digit = |byte: u8| (byte as char).to_digit(16).map(|value| value as u8);
    let mut bytes = [0u8; 16];
    for (index, pair) in text.chunks_exact(2).enumerate() {
        bytes[index] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> CursorSeal {
        CursorSeal::new(&[7u8; 32])
    }

    #[test]
    fn a_cursor_opens_for_its_owner_and_kind_only() {
        let seal = seal();
        let token = seal.seal(CursorKind::Event, "alice", 42);
        assert_eq!(token.len(), 32);
        assert_eq!(
            seal.open(CursorKind::Event, "alice", &token, "since"),
            Ok(42)
        );
        for (kind, owner) in [
            (CursorKind::Event, "bob"),
            (CursorKind::HistoryPage, "alice"),
        ] {
            let refused = seal.open(kind, owner, &token, "since").unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        }
        // Another network's (another secret's) cursor is refused too.
        let other = CursorSeal::new(&[8u8; 32]);
        assert!(other
            .open(CursorKind::Event, "alice", &token, "since")
            .is_err());
    }

    #[test]
    fn neighbouring_positions_give_unrelated_cursors() {
        let seal = seal();
        let one = seal.seal(CursorKind::Event, "alice", 1000);
        let next = seal.seal(CursorKind::Event, "alice", 1001);
        let differing = one
            .bytes()
            .zip(next.bytes())
            .filter(|(a, b)| a != b)
            .count();
        // A block cipher changes about 15/16 of the hex digits; an encoding of the number
        // would change one or two.
        assert!(differing > 16, "{one} vs {next}");
    }

    #[test]
    fn plain_numbers_are_accepted_and_junk_is_refused() {
        let seal = seal();
        assert_eq!(seal.open(CursorKind::Event, "alice", "0", "since"), Ok(0));
        assert_eq!(seal.open(CursorKind::Event, "alice", "77", "since"), Ok(77));
        let token = seal.seal(CursorKind::Event, "alice", 5);
        let mut flipped = token.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        for junk in [
            "-1",
            "abc",
            " 3",
            "99999999999999999999",
            &token[..31],
            &flipped,
            "zz".repeat(16).as_str(),
        ] {
            let refused = seal
                .open(CursorKind::Event, "alice", junk, "since")
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{junk}");
        }
    }
}
