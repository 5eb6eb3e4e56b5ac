//! The client's durable offline outbox (SPEC §5). A payment is written here, with its
//! idempotency key, *before* it is first sent; so a crash at any moment leaves either a queued
//! entry (retried with the same key, which the gateway deduplicates) or a finished one. Nothing
//! is lost and nothing is paid twice.
//!
//! States: `queued → succeeded | declined | gave_up`. Transport failures keep an entry queued
//! and schedule the next try with exponential backoff and jitter; a business refusal is final.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use strife_common::time::now_unix_ms;
use tonic::Code;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key      TEXT NOT NULL UNIQUE,
    to_username          TEXT NOT NULL,
    amount_minor         INTEGER NOT NULL CHECK (amount_minor > 0),
    currency             TEXT NOT NULL,
    from_bank            TEXT NOT NULL,
    to_bank              TEXT NOT NULL,
    memo                 TEXT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('queued', 'succeeded', 'declined', 'gave_up')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_unix_ms INTEGER NOT NULL,
    last_error           TEXT,
    payment_id           TEXT,
    created_unix_ms      INTEGER NOT NULL,
    finished_unix_ms     INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_queued ON outbox (next_attempt_unix_ms) WHERE state = 'queued';
";

/// First retry delay; doubles per attempt up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest delay between two tries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// A payment as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub idempotency_key: String,
    pub to_username: String,
    pub amount_minor: i64,
    pub currency: String,
    pub from_bank: String,
    pub to_bank: String,
    pub memo: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_unix_ms: i64,
    pub last_error: Option<String>,
    pub payment_id: Option<String>,
    pub created_unix_ms: i64,
}

/// What one try of a payment amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryOutcome {
    Succeeded {
        payment_id: String,
    },
    /// Refused for a reason retrying cannot fix (insufficient funds, unknown user, …).
    Declined {
        message: String,
    },
    /// The gateway could not be reached or asked us to come back.
    Retry {
        message: String,
    },
}

/// Whether a gRPC failure is worth retrying with the same key: only transport trouble and
/// "still in progress" are; everything else is the gateway's final word.
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// Delay before try number `attempts + 1`: exponential from [`BACKOFF_BASE`], capped, plus up
/// to 50 % random jitter so many clients coming back online do not retry in lockstep.
pub fn backoff(attempts: u32, jitter_source: impl FnOnce(u64) -> u64) -> Duration {
    let exponent = attempts.min(16);
    let base_ms = BACKOFF_BASE.as_millis() as u64;
    let delay_ms = base_ms
        .saturating_mul(1u64 << exponent)
        .min(BACKOFF_CAP.as_millis() as u64);
    let jitter_ms = jitter_source(delay_ms / 2 + 1);
    Duration::from_millis(delay_ms + jitter_ms)
}

/// The outbox database of one user.
pub struct Outbox {
    connection: Connection,
}

impl Outbox {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let connection = strife_common::sqlite::open_connection(path, "outbox")?;
        connection.execute_batch(SCHEMA)?;
        Ok(Outbox { connection })
    }

    /// Records a payment before its first try. The same key with the same parameters is the
    /// same payment (returned as is); with other parameters it is an error.
    pub fn enqueue(&self, entry: &OutboxEntry) -> anyhow::Result<OutboxEntry> {
        if let Some(existing) = self.entry(&entry.idempotency_key)? {
            let same = existing.to_username == entry.to_username
                && existing.amount_minor == entry.amount_minor
                && existing.currency == entry.currency
                && existing.from_bank == entry.from_bank
                && existing.to_bank == entry.to_bank
                && existing.memo == entry.memo;
            anyhow::ensure!(
                same,
                "key {:?} was already used for a different payment",
                entry.idempotency_key
            );
            return Ok(existing);
        }
        self.connection.execute(
            "INSERT INTO outbox (idempotency_key, to_username, amount_minor, currency, from_bank,
                 to_bank, memo, state, next_attempt_unix_ms, created_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8)",
            params![
                entry.idempotency_key,
                entry.to_username,
                entry.amount_minor,
                entry.currency,
                entry.from_bank,
                entry.to_bank,
                entry.memo,
                now_unix_ms()
            ],
        )?;
        self.entry(&entry.idempotency_key)?
            .context("queued entry vanished")
    }

    /// Records the outcome of one try; returns the entry as it now stands.
    pub fn record(
        &self,
        key: &str,
        outcome: &TryOutcome,
        max_attempts: u32,
    ) -> anyhow::Result<OutboxEntry> {
        let now = now_unix_ms();
        match outcome {
            TryOutcome::Succeeded { payment_id } => self.connection.execute(
                "UPDATE outbox SET state = 'succeeded', attempts = attempts + 1, payment_id = ?2,
                     last_error = NULL, finished_unix_ms = ?3 WHERE idempotency_key = ?1",
                params![key, payment_id, now],
            )?,
            TryOutcome::Declined { message } => self.connection.execute(
                "UPDATE outbox SET state = 'declined', attempts = attempts + 1, last_error = ?2,
                     finished_unix_ms = ?3 WHERE idempotency_key = ?1",
                params![key, message, now],
            )?,
            TryOutcome::Retry { message } => {
                let current = self.entry(key)?.context("no such outbox entry")?;
                let attempts = current.attempts + 1;
                if attempts >= max_attempts {
                    self.connection.execute(
                        "UPDATE outbox SET state = 'gave_up', attempts = ?2, last_error = ?3,
                             finished_unix_ms = ?4 WHERE idempotency_key = ?1",
                        params![key, attempts, message, now],
                    )?
                } else {
                    let delay = backoff(attempts, |bound| rand::random_range(0..bound));
                    let next = now.saturating_add(delay.as_millis() as i64);
                    self.connection.execute(
                        "UPDATE outbox SET attempts = ?2, last_error = ?3, next_attempt_unix_ms = ?4
                         WHERE idempotency_key = ?1",
                        params![key, attempts, message, next],
                    )?
                }
            }
        };
        self.entry(key)?.context("no such outbox entry")
    }

    pub fn entry(&self, key: &str) -> anyhow::Result<Option<OutboxEntry>> {
        Ok(self
            .connection
            .query_row(
                &format!("{COLUMNS} WHERE idempotency_key = ?1"),
                [key],
                entry_from_row,
            )
            .optional()?)
    }

    /// Queued entries, oldest first; with `due_at`, only those whose next try is due.
    pub fn queued(&self, due_at: Option<i64>) -> anyhow::Result<Vec<OutboxEntry>> {
        let mut statement = self.connection.prepare(&format!(
            "{COLUMNS} WHERE state = 'queued' AND next_attempt_unix_ms <= ?1 ORDER BY seq"
        ))?;
        let rows = statement.query_map([due_at.unwrap_or(i64::MAX)], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every entry, newest first (at most `limit`).
    pub fn all(&self, limit: u32) -> anyhow::Result<Vec<OutboxEntry>> {
        let mut statement = self
            .connection
            .prepare(&format!("{COLUMNS} ORDER BY seq DESC LIMIT ?1"))?;
        let rows = statement.query_map([limit], entry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next queued entry is due, if any.
    pub fn next_due_unix_ms(&self) -> anyhow::Result<Option<i64>> {
        Ok(self.connection.query_row(
            "SELECT MIN(next_attempt_unix_ms) FROM outbox WHERE state = 'queued'",
            [],
            |row| row.get(0),
        )?)
    }
}

const COLUMNS: &str = "SELECT idempotency_key, to_username, amount_minor, currency, from_bank, to_bank,
    memo, state, attempts, next_attempt_unix_ms, last_error, payment_id, created_unix_ms FROM outbox";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        idempotency_key: row.get(0)?,
        to_username: row.get(1)?,
        amount_minor: row.get(2)?,
        currency: row.get(3)?,
        from_bank: row.get(4)?,
        to_bank: row.get(5)?,
        memo: row.get(6)?,
        state: row.get(7)?,
        attempts: row.get(8)?,
        next_attempt_unix_ms: row.get(9)?,
        last_error: row.get(10)?,
        payment_id: row.get(11)?,
        created_unix_ms: row.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, amount_minor: i64) -> OutboxEntry {
        OutboxEntry {
            idempotency_key: key.into(),
            to_username: "bob".into(),
            amount_minor,
            currency: "USD".into(),
            from_bank: String::new(),
            to_bank: String::new(),
            memo: String::new(),
            state: "queued".into(),
            attempts: 0,
            next_attempt_unix_ms: 0,
            last_error: None,
            payment_id: None,
            created_unix_ms: 0,
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        assert_eq!(backoff(0, |_| 0), Duration::from_millis(200));
        assert_eq!(backoff(1, |_| 0), Duration::from_millis(400));
        assert_eq!(backoff(3, |_| 0), Duration::from_millis(1_600));
        assert_eq!(backoff(30, |_| 0), BACKOFF_CAP);
        assert_eq!(backoff(0, |bound| bound - 1), Duration::from_millis(300));
    }

    #[test]
    fn only_transport_trouble_is_retried() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Aborted] {
            assert!(is_retryable(code), "{code:?}");
        }
        for code in [
            Code::FailedPrecondition,
            Code::NotFound,
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }

    #[test]
    fn entries_survive_reopen_and_keep_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        Outbox::open(&path)
            .unwrap()
            .enqueue(&entry("k1", 500))
            .unwrap();
        let outbox = Outbox::open(&path).unwrap();
        let queued = outbox.queued(None).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].idempotency_key, "k1");
        assert!(
            outbox.enqueue(&entry("k1", 501)).is_err(),
            "same key, other amount"
        );
        assert_eq!(
            outbox.enqueue(&entry("k1", 500)).unwrap().idempotency_key,
            "k1"
        );
    }

    #[test]
    fn retries_back_off_then_give_up_and_refusals_are_final() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox.enqueue(&entry("k1", 500)).unwrap();
        let retry = TryOutcome::Retry {
            message: "down".into(),
        };
        let after_one = outbox.record("k1", &retry, 3).unwrap();
        assert_eq!(
            (after_one.state.as_str(), after_one.attempts),
            ("queued", 1)
        );
        assert!(after_one.next_attempt_unix_ms > now_unix_ms());
        assert!(
            outbox.queued(Some(now_unix_ms())).unwrap().is_empty(),
            "not due yet"
        );
        outbox.record("k1", &retry, 3).unwrap();
        let gave_up = outbox.record("k1", &retry, 3).unwrap();
        assert_eq!(gave_up.state, "gave_up");

        outbox.enqueue(&entry("k2", 500)).unwrap();
        let declined = outbox
            .record(
                "k2",
                &TryOutcome::Declined {
                    message: "poor".into(),
                },
                3,
            )
            .unwrap();
        assert_eq!(declined.state, "declined");
        assert!(outbox.queued(None).unwrap().is_empty());
    }
}
